//! The domain: users, namespaces, projects, jobs and the messages that drive
//! workers. Knows nothing of HTTP or storage technology.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

mod bulk;
mod jobs;
pub mod members;

pub use bulk::*;
pub use jobs::*;

pub type UserId = u64;
pub type ProjectId = u64;
pub type NamespaceId = u64;

pub fn now() -> DateTime<Utc> {
    Utc::now()
}

/// GitLab's timestamp shape: `2017-08-29T04:36:44.383Z`.
pub fn gitlab_time(at: &DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct User {
    pub id: UserId,
    pub username: String,
    pub name: String,
    pub is_admin: bool,
    pub created_at: DateTime<Utc>,
}

/// A namespace projects live in. Every user has one with the user's id and
/// username as path.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Namespace {
    pub id: NamespaceId,
    pub path: String,
    pub name: String,
    pub owner_id: UserId,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Token {
    pub id: u64,
    pub user_id: UserId,
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked: bool,
}

impl Token {
    pub fn is_usable(&self, at: DateTime<Utc>) -> bool {
        !self.revoked && self.expires_at.is_none_or(|expiry| at < expiry)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Project {
    pub id: ProjectId,
    pub namespace_id: NamespaceId,
    pub namespace_path: String,
    pub namespace_name: String,
    pub path: String,
    pub name: String,
    pub description: Option<String>,
    pub owner_id: UserId,
    pub created_at: DateTime<Utc>,
    /// The generation of records and blobs the project shows; `None` until a
    /// first import finished. Imports write a new generation and switch this
    /// pointer only once everything is stored, so a failed import leaves the
    /// project exactly as it was.
    pub content: Option<String>,
    /// Relations replaced by a relation import since `content` was
    /// activated: relation → the generation holding it.
    #[serde(default)]
    pub relation_content: BTreeMap<String, String>,
    /// Bumped by every switch of `content` or `relation_content`: the
    /// condition of the next switch.
    #[serde(default)]
    pub content_rev: u64,
}

impl Project {
    /// The generation a relation's records are read from.
    pub fn relation_generation(&self, relation: &str) -> Option<&str> {
        self.relation_content
            .get(relation)
            .map(String::as_str)
            .or(self.content.as_deref())
    }

    /// Every generation the project's content is spread over.
    pub fn generations(&self) -> Vec<String> {
        let mut all: Vec<String> = self.content.iter().cloned().collect();
        all.extend(self.relation_content.values().cloned());
        all
    }

    pub fn full_path(&self) -> String {
        format!("{}/{}", self.namespace_path, self.path)
    }

    pub fn name_with_namespace(&self) -> String {
        format!("{} / {}", self.namespace_name, self.name)
    }
}

/// A project deleted through the API whose content is still being deleted.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DeletedProject {
    pub project: Project,
    pub deleted_at: DateTime<Utc>,
}

/// What a new project needs before the store gives it an id.
#[derive(Debug, Clone)]
pub struct NewProject {
    pub namespace: Namespace,
    pub path: String,
    pub name: String,
    pub description: Option<String>,
    pub owner_id: UserId,
}

impl NewProject {
    /// The project as created with `id`: no content yet.
    pub fn with_id(self, id: ProjectId) -> Project {
        Project {
            id,
            namespace_id: self.namespace.id,
            namespace_path: self.namespace.path,
            namespace_name: self.namespace.name,
            path: self.path,
            name: self.name,
            description: self.description,
            owner_id: self.owner_id,
            created_at: now(),
            content: None,
            relation_content: Default::default(),
            content_rev: 0,
        }
    }
}

/// A project's opt-in to scheduled exports (our extension of GitLab's API):
/// each tick of the schedule (EventBridge on AWS, a timer locally) exports
/// the project, and the last `keep` scheduled archives are kept.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ExportSchedule {
    pub project_id: ProjectId,
    /// A relations export instead of a full one.
    pub relations: bool,
    /// Relations exports only: batched.
    pub batched: bool,
    /// Full exports only: scheduled archives kept.
    pub keep: u32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub last_scheduled_at: Option<DateTime<Utc>>,
}

/// A unit of work on the queue: ids, never payloads.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Message {
    pub kind: JobKind,
    pub job_id: String,
    pub project_id: ProjectId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relation: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<u32>,
}

impl Message {
    /// Deletes what a deleted project left.
    pub fn project_deletion(project_id: ProjectId) -> Self {
        Message {
            kind: JobKind::ProjectDeletion,
            job_id: String::new(),
            project_id,
            relation: None,
            batch: None,
        }
    }

    pub fn for_job(job: &Job) -> Self {
        Message {
            kind: job.kind,
            job_id: job.id.clone(),
            project_id: job.project_id,
            relation: None,
            batch: None,
        }
    }
}

pub fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// GitLab's export file name: `2017-12-05_22-11-148_namespace_project_export.tar.gz`.
pub fn export_file_name(project: &Project, at: &DateTime<Utc>) -> String {
    format!(
        "{}_{}_export.tar.gz",
        at.format("%Y-%m-%d_%H-%M-%3f"),
        project.full_path().replace('/', "_")
    )
}

/// The key a username or namespace path is looked up by: GitLab treats
/// `Alice` and `alice` as one name.
pub fn name_key(name: &str) -> String {
    name.to_ascii_lowercase()
}

/// A GitLab path: letters, digits, `_`, `-` and `.`, not starting with `-`
/// or `.`, not ending in `.git` or `.atom`.
pub fn is_valid_path(path: &str) -> bool {
    !path.is_empty()
        && path.len() <= 255
        && path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        && !path.starts_with(['-', '.'])
        && !path.ends_with(".git")
        && !path.ends_with(".atom")
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn export_file_name_matches_gitlab() {
        let project = Project {
            id: 5,
            namespace_id: 1,
            namespace_path: "namespace".into(),
            namespace_name: "Namespace".into(),
            path: "project".into(),
            name: "Project".into(),
            description: None,
            owner_id: 1,
            created_at: now(),
            content: None,
            relation_content: BTreeMap::new(),
            content_rev: 0,
        };
        let at = Utc.with_ymd_and_hms(2017, 12, 5, 22, 11, 0).unwrap()
            + chrono::Duration::milliseconds(148);
        assert_eq!(
            export_file_name(&project, &at),
            "2017-12-05_22-11-148_namespace_project_export.tar.gz"
        );
    }

    #[test]
    fn paths() {
        assert!(is_valid_path("api-project"));
        assert!(is_valid_path("gitlab_test.2"));
        assert!(!is_valid_path("../x"));
        assert!(!is_valid_path("a/b"));
        assert!(!is_valid_path(""));
        assert!(!is_valid_path("x.git"));
    }
}
