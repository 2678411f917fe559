//! GitLab's top-level project relations, as data: the one table that export,
//! import and relation export all read. Mirrors the `tree: project:` section of
//! GitLab's `lib/gitlab/import_export/project/import_export.yml` (CE and EE).

/// One top-level project relation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Relation {
    /// The relation name, which is also the file stem: `tree/project/<name>.ndjson`.
    pub name: &'static str,
    /// `has_one` relations are a single object in the legacy `project.json`.
    pub single: bool,
}

const fn many(name: &'static str) -> Relation {
    Relation {
        name,
        single: false,
    }
}

const fn one(name: &'static str) -> Relation {
    Relation { name, single: true }
}

/// In GitLab's export order.
pub const RELATIONS: &[Relation] = &[
    many("labels"),
    many("milestones"),
    many("issues"),
    many("snippets"),
    many("releases"),
    many("project_members"),
    many("merge_requests"),
    many("external_pull_requests"),
    many("ci_pipelines"),
    many("commit_notes"),
    one("auto_devops"),
    many("triggers"),
    many("pipeline_schedules"),
    one("container_expiration_policy"),
    many("services"),
    many("protected_branches"),
    many("protected_tags"),
    many("protected_environments"),
    one("project_feature"),
    many("custom_attributes"),
    many("prometheus_metrics"),
    many("project_badges"),
    one("ci_cd_settings"),
    one("error_tracking_setting"),
    one("metrics_setting"),
    many("boards"),
    one("design_management_repository"),
    many("vulnerabilities"),
    one("service_desk_setting"),
    one("security_setting"),
    one("push_rule"),
];

/// Relations whose records GitLab identifies by `iid` within the project:
/// a relation import skips records whose `iid` is already there.
const IID_RELATIONS: &[&str] = &["issues", "merge_requests", "milestones", "ci_pipelines"];

/// The field that identifies a record of `relation`, if it has one. Records
/// of other relations (or without the field) are identified by their whole
/// canonical JSON.
pub fn natural_key_field(relation: &str) -> Option<&'static str> {
    IID_RELATIONS.contains(&relation).then_some("iid")
}

/// The relation export of the project's own attributes (`self.json.gz`).
pub const SELF_RELATION: &str = "self";

/// Relations whose content is files kept as imported, exported by the
/// relations export as `<name>.tar.gz`: a file name or a folder of the
/// archive.
pub const FILE_RELATIONS: &[(&str, &str)] = &[
    ("repository", "project.bundle"),
    ("wiki", "project.wiki.bundle"),
    ("design", "project.design.bundle"),
    ("uploads", "uploads/"),
    ("lfs_objects", "lfs-objects/"),
    ("snippet_repositories", "snippets/"),
];

/// Relations GitLab's relations export skips (`ProjectConfig`'s
/// `SKIPPED_RELATIONS`): members are not migrated by direct transfer.
pub const SKIPPED_RELATIONS: &[&str] = &["project_members", "group_members"];

/// The file relations GitLab's relations export has (`ProjectConfig`'s
/// `file_relations`), exported for every project, empty when it has none.
/// The others (the wiki, the snippets' repositories: GitLab's destinations
/// clone those over git) are this server's extension, exported only for a
/// project that has them, so that a migration between two instances of
/// this server loses nothing.
pub const PORTABLE_FILE_RELATIONS: &[&str] = &["uploads", "lfs_objects", "repository", "design"];

/// The file relation an archive file belongs to, if any.
pub fn file_relation_of(path: &str) -> Option<&'static str> {
    FILE_RELATIONS
        .iter()
        .find(|(_, at)| match at.strip_suffix('/') {
            Some(_) => path.starts_with(at),
            None => path == *at,
        })
        .map(|(name, _)| *name)
}

/// The path of an archive file in its relation's `.tar.gz`, as GitLab's
/// relations export lays it out: a folder's files relative to it
/// (`uploads/<secret>/<name>` → `<secret>/<name>`), a relation's one file
/// as `<relation>.bundle` (`repository.bundle`, `design.bundle`).
pub fn path_in_relation_file(relation: &str, archive_path: &str) -> String {
    match FILE_RELATIONS.iter().find(|(name, _)| *name == relation) {
        Some((_, folder)) if folder.ends_with('/') => archive_path
            .strip_prefix(folder)
            .unwrap_or(archive_path)
            .to_owned(),
        Some(_) => format!("{relation}.bundle"),
        None => archive_path.to_owned(),
    }
}

/// The file GitLab's `lfs_objects.tar.gz` has besides the objects: each
/// object's repository types.
pub const LFS_OBJECTS_JSON: &str = "lfs_objects.json";

pub fn is_file_relation(name: &str) -> bool {
    FILE_RELATIONS.iter().any(|(n, _)| *n == name)
}

/// The file name of a relation's export: GitLab's names.
pub fn export_file_name(relation: &str) -> String {
    if relation == SELF_RELATION {
        format!("{relation}.json.gz")
    } else if is_file_relation(relation) {
        format!("{relation}.tar.gz")
    } else {
        format!("{relation}.ndjson.gz")
    }
}

pub fn find(name: &str) -> Option<&'static Relation> {
    RELATIONS.iter().find(|r| r.name == name)
}

/// Position of a relation in export order; relations we do not know (kept
/// from an imported archive) come after the known ones, by name.
pub fn export_rank(name: &str) -> (usize, String) {
    match RELATIONS.iter().position(|r| r.name == name) {
        Some(i) => (i, String::new()),
        None => (RELATIONS.len(), name.to_owned()),
    }
}

/// Position of a relation in a relations export: `self`, GitLab's tree in
/// order, relations GitLab's tree does not name, then file relations.
pub fn relation_export_rank(name: &str) -> (usize, usize, String) {
    if name == SELF_RELATION {
        return (0, 0, String::new());
    }
    if let Some(i) = FILE_RELATIONS.iter().position(|(n, _)| *n == name) {
        return (2, i, String::new());
    }
    let (i, unknown) = export_rank(name);
    (1, i, unknown)
}

/// A relation name read from an archive becomes a storage key and a file name
/// again on export, so it is held to a plain identifier rather than trusted.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 100
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_valid() {
        let mut seen = std::collections::HashSet::new();
        for r in RELATIONS {
            assert!(is_valid_name(r.name), "{}", r.name);
            assert!(seen.insert(r.name), "duplicate {}", r.name);
        }
    }

    #[test]
    fn file_relations_and_names() {
        assert_eq!(file_relation_of("project.bundle"), Some("repository"));
        assert_eq!(file_relation_of("uploads/ab/c.png"), Some("uploads"));
        assert_eq!(file_relation_of("project.bundle.extra"), None);
        assert_eq!(export_file_name("self"), "self.json.gz");
        assert_eq!(export_file_name("uploads"), "uploads.tar.gz");
        assert_eq!(export_file_name("labels"), "labels.ndjson.gz");
    }

    #[test]
    fn a_relation_file_lays_out_its_files_as_gitlabs() {
        assert_eq!(
            path_in_relation_file("uploads", "uploads/ab/c.png"),
            "ab/c.png"
        );
        assert_eq!(
            path_in_relation_file("lfs_objects", "lfs-objects/0a1b"),
            "0a1b"
        );
        assert_eq!(
            path_in_relation_file("repository", "project.bundle"),
            "repository.bundle"
        );
        assert_eq!(
            path_in_relation_file("design", "project.design.bundle"),
            "design.bundle"
        );
        assert_eq!(
            path_in_relation_file("wiki", "project.wiki.bundle"),
            "wiki.bundle"
        );
        assert_eq!(
            path_in_relation_file("snippet_repositories", "snippets/0f1e.bundle"),
            "0f1e.bundle"
        );
        assert_eq!(
            file_relation_of("snippets/0f1e.bundle"),
            Some("snippet_repositories")
        );
    }

    #[test]
    fn unknown_relations_sort_after_known_ones() {
        assert!(export_rank("push_rule") < export_rank("aaa_unknown"));
        assert!(export_rank("labels") < export_rank("issues"));
        assert!(!is_valid_name("../etc"));
        assert!(!is_valid_name("Issues"));
    }
}
