//! GitLab's bulk import API (`/bulk_imports`): migrations by direct
//! transfer, for project entities. Parameters are checked as Grape checks
//! them (`400 {"error": …}`), the destination as GitLab's `CreateService`
//! does (`422 {"message": …}`); each entity then becomes a project and an
//! import job that pulls it from the source (`worker/direct_transfer.rs`).

use serde_json::{Map, Value};

use super::imports::resolve_namespace;
use super::{history, take_rate_slot};
use crate::domain::{
    is_valid_path, new_id, now, BulkEntity, BulkImport, BulkSource, BulkStatus, Job, JobKind,
    JobStatus, JobUpdate, Message, NewProject, Secret, User, When, BULK_CANCELED,
};
use crate::{App, Error, Result};

/// Entities in one request: the migration is stored as one item.
pub const MAX_ENTITIES: usize = 100;

/// GitLab's `bulk_import` rate limit: 6 a minute per user.
const RATE_LIMIT: u32 = 6;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewBulkImport {
    pub url: String,
    pub access_token: String,
    pub entities: Vec<NewEntity>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEntity {
    pub source_full_path: String,
    pub destination_slug: String,
    pub destination_namespace: String,
    pub migrate_projects: bool,
    pub migrate_memberships: bool,
}

/// GitLab's rule for a slug (`destination_slug_path`).
fn is_valid_slug(slug: &str) -> bool {
    let parts: Vec<&str> = slug.split(['.', '_', '-']).collect();
    !slug.is_empty()
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric()))
        && is_valid_path(slug)
}

/// A relative path (`source/full/path`): no scheme, host or query.
fn is_relative_path(path: &str) -> bool {
    !path.is_empty()
        && path.split('/').all(|segment| {
            !segment.is_empty()
                && segment
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        })
}

/// The request's parameters, checked as Grape checks them: every problem,
/// joined as Grape joins them.
pub fn parse_request(body: &Value) -> Result<NewBulkImport> {
    let mut problems = Vec::new();
    let text = |object: Option<&Map<String, Value>>, name: &str| -> Option<String> {
        match object?.get(name)? {
            Value::String(text) => Some(text.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    };
    let configuration = body.get("configuration").and_then(Value::as_object);
    let url = text(configuration, "url");
    let access_token = text(configuration, "access_token");
    match body.get("configuration") {
        None | Some(Value::Null) => problems.push("configuration is missing".to_owned()),
        Some(Value::Object(_)) => {
            if url.is_none() {
                problems.push("configuration[url] is missing".into());
            }
            if access_token.is_none() {
                problems.push("configuration[access_token] is missing".into());
            }
        }
        Some(_) => problems.push("configuration is invalid".into()),
    }
    let mut entities = Vec::new();
    match body.get("entities") {
        None | Some(Value::Null) => problems.push("entities is missing".into()),
        Some(Value::Array(items)) if items.is_empty() => problems.push("entities is empty".into()),
        Some(Value::Array(items)) if items.len() > MAX_ENTITIES => problems.push(format!(
            "entities has more than {MAX_ENTITIES} elements: migrate them in several requests"
        )),
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                match parse_entity(i, item.as_object()) {
                    Ok(entity) => entities.push(entity),
                    Err(mut found) => problems.append(&mut found),
                }
            }
        }
        Some(_) => problems.push("entities is invalid".into()),
    }
    if !problems.is_empty() {
        return Err(Error::InvalidParameter(problems.join(", ")));
    }
    Ok(NewBulkImport {
        url: url.unwrap_or_default(),
        access_token: access_token.unwrap_or_default(),
        entities,
    })
}

fn parse_entity(
    i: usize,
    entity: Option<&Map<String, Value>>,
) -> std::result::Result<NewEntity, Vec<String>> {
    let name = |field: &str| format!("entities[{i}][{field}]");
    let Some(entity) = entity else {
        return Err(vec![format!("entities[{i}] is invalid")]);
    };
    let text = |field: &str| match entity.get(field) {
        Some(Value::String(text)) => Some(text.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    let flag = |field: &str| -> std::result::Result<bool, String> {
        match entity.get(field) {
            None | Some(Value::Null) => Ok(true),
            Some(Value::Bool(b)) => Ok(*b),
            Some(Value::String(s)) => match s.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "t" => Ok(true),
                "false" | "0" | "no" | "f" => Ok(false),
                _ => Err(format!("{} is invalid", name(field))),
            },
            Some(_) => Err(format!("{} is invalid", name(field))),
        }
    };
    let mut problems = Vec::new();
    match text("source_type").as_deref() {
        None => problems.push(format!("{} is missing", name("source_type"))),
        Some("project_entity") => {}
        Some("group_entity") => problems.push(format!(
            "{} group_entity is not supported: this server migrates projects only (project_entity)",
            name("source_type")
        )),
        Some(_) => problems.push(format!(
            "{} does not have a valid value",
            name("source_type")
        )),
    }
    let source_full_path = text("source_full_path");
    match &source_full_path {
        None => problems.push(format!("{} is missing", name("source_full_path"))),
        Some(path) if !is_relative_path(path) => problems.push(format!(
            "{} must be a relative path and not include protocol, sub-domain, or domain information. For example, 'source/full/path' not 'https://example.com/source/full/path'",
            name("source_full_path")
        )),
        Some(_) => {}
    }
    let namespace = text("destination_namespace");
    match &namespace {
        None => problems.push(format!("{} is missing", name("destination_namespace"))),
        Some(ns) if !ns.is_empty() && !is_relative_path(ns) => problems.push(format!(
            "{} must be a relative path and not include protocol, sub-domain, or domain information. For example, 'destination/full/path' not 'https://example.com/destination/full/path'",
            name("destination_namespace")
        )),
        Some(_) => {}
    }
    let slug = match (text("destination_slug"), text("destination_name")) {
        (Some(_), Some(_)) => {
            problems.push(format!(
                "{}, {} are mutually exclusive",
                name("destination_slug"),
                name("destination_name")
            ));
            None
        }
        (None, None) => {
            problems.push(format!(
                "{}, {} are missing, at least one parameter must be provided",
                name("destination_slug"),
                name("destination_name")
            ));
            None
        }
        (Some(slug), None) | (None, Some(slug)) => Some(slug),
    };
    if slug.as_deref().is_some_and(|s| !is_valid_slug(s)) {
        problems.push(format!(
            "{} can only include non-accented letters, digits, '_', '-' and '.'. It must not start with '-', '_', or '.', nor end with '-', '_', '.', '.git', or '.atom'. For example, 'destination_namespace' not 'destination/namespace'",
            name("destination_slug")
        ));
    }
    let migrate_projects = flag("migrate_projects").unwrap_or_else(|e| {
        problems.push(e);
        true
    });
    let migrate_memberships = flag("migrate_memberships").unwrap_or_else(|e| {
        problems.push(e);
        true
    });
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(NewEntity {
        source_full_path: source_full_path.unwrap_or_default(),
        destination_slug: slug.unwrap_or_default(),
        destination_namespace: namespace.unwrap_or_default(),
        migrate_projects,
        migrate_memberships,
    })
}

/// `POST /bulk_imports`: checks the destination of every entity, then
/// creates each entity's project and import job and the migration, and
/// queues the jobs.
pub async fn create(app: &App, user: &User, request: NewBulkImport) -> Result<BulkImport> {
    take_rate_slot(app, user, "bulk_import", RATE_LIMIT).await?;
    let url = crate::remote::check_url(
        &request.url,
        "configuration[url]",
        app.settings.allow_local_requests,
    )?;
    let mut destinations = Vec::with_capacity(request.entities.len());
    for entity in &request.entities {
        let namespace = resolve_namespace(app, user, Some(&entity.destination_namespace))
            .await
            .map_err(|_| {
                Error::Unprocessable(format!(
                    "Import failed. '{}' is invalid, or you do not have permission.",
                    entity.destination_namespace
                ))
            })?;
        let full_path = format!("{}/{}", namespace.path, entity.destination_slug);
        let taken = app
            .projects
            .project_by_full_path(&full_path)
            .await?
            .is_some()
            || destinations
                .iter()
                .any(|(_, path): &(_, String)| *path == full_path);
        if taken {
            return Err(Error::Unprocessable(format!(
                "Import failed. '{full_path}' already exists. Change the destination and try again."
            )));
        }
        destinations.push((namespace, full_path));
    }

    let import_id = app.jobs.next_number("bulk_imports").await?;
    let at = now();
    let mut entities = Vec::with_capacity(request.entities.len());
    let mut jobs = Vec::with_capacity(request.entities.len());
    for (entity, (namespace, full_path)) in request.entities.iter().zip(destinations) {
        let project = app
            .projects
            .create_project(NewProject {
                namespace,
                path: entity.destination_slug.clone(),
                name: entity.destination_slug.clone(),
                description: None,
                owner_id: user.id,
            })
            .await
            .map_err(|err| match err {
                Error::Conflict(_) => Error::Unprocessable(format!(
                    "Import failed. '{full_path}' already exists. Change the destination and try again."
                )),
                other => other,
            })?;
        let entity_id = app.jobs.next_number("bulk_import_entities").await?;
        let mut job = Job::new(JobKind::Import, project.id, user.id);
        job.number = entity_id;
        job.archive_key = Some(crate::keys::upload_key(&new_id()));
        job.bulk = Some(BulkSource {
            bulk_import_id: import_id,
            entity_id,
            url: url.to_string(),
            source_full_path: entity.source_full_path.clone(),
            token: Some(Secret(request.access_token.clone())),
            source_project_id: None,
            parts: None,
            migrate_memberships: entity.migrate_memberships,
            not_migrated: Vec::new(),
        });
        history::create_job(app, &job).await?;
        entities.push(BulkEntity {
            id: entity_id,
            job_id: job.id.clone(),
            project_id: project.id,
            source_full_path: entity.source_full_path.clone(),
            destination_slug: entity.destination_slug.clone(),
            destination_namespace: entity.destination_namespace.clone(),
            migrate_projects: entity.migrate_projects,
            migrate_memberships: entity.migrate_memberships,
            created_at: at,
        });
        jobs.push(job);
    }
    let import = BulkImport {
        id: import_id,
        user_id: user.id,
        source_url: request.url.clone(),
        entities,
        canceled: false,
        created_at: at,
        updated_at: at,
    };
    app.jobs.put_bulk_import(&import).await?;
    // A message lost here is sent again by the stale-job sweep.
    let messages: Vec<Message> = jobs.iter().map(Message::for_job).collect();
    app.queue.send(&messages).await?;
    Ok(import)
}

/// A migration and where each of its entities stands.
pub struct BulkImportState {
    pub import: BulkImport,
    pub entities: Vec<EntityState>,
    pub status: BulkStatus,
}

pub struct EntityState {
    pub entity: BulkEntity,
    pub job: Option<Job>,
    pub status: BulkStatus,
    pub destination_full_path: Option<String>,
}

impl BulkImportState {
    pub fn has_failures(&self) -> bool {
        self.entities.iter().any(EntityState::has_failures)
    }
}

impl EntityState {
    /// GitLab sets it once the entity is done, if anything failed.
    pub fn has_failures(&self) -> bool {
        self.status.is_done()
            && self
                .job
                .as_ref()
                .is_some_and(|job| !job.failures.is_empty() || job.error.is_some())
    }
}

async fn state_of(app: &App, import: BulkImport) -> Result<BulkImportState> {
    let mut entities = Vec::with_capacity(import.entities.len());
    for entity in &import.entities {
        let job = app.jobs.job(&entity.job_id).await?;
        let project = app.projects.project(entity.project_id).await?;
        entities.push(EntityState {
            entity: entity.clone(),
            status: BulkStatus::of_entity(job.as_ref()),
            job,
            destination_full_path: project.map(|p| p.full_path()),
        });
    }
    let statuses: Vec<BulkStatus> = entities.iter().map(|e| e.status).collect();
    let status = BulkStatus::of_import(&import, &statuses);
    Ok(BulkImportState {
        import,
        entities,
        status,
    })
}

/// One of the user's migrations; someone else's answers as a missing one.
pub async fn find(app: &App, user: &User, id: u64) -> Result<BulkImportState> {
    let import = app
        .jobs
        .bulk_import(user.id, id)
        .await?
        .ok_or_else(|| Error::NotFound("404 Not found".into()))?;
    state_of(app, import).await
}

/// The user's migrations, oldest first (`sort=asc`) or newest first.
pub async fn list(app: &App, user: &User, newest_first: bool) -> Result<Vec<BulkImportState>> {
    let mut imports = app.jobs.bulk_imports(user.id).await?;
    if newest_first {
        imports.reverse();
    }
    let mut states = Vec::with_capacity(imports.len());
    for import in imports {
        states.push(state_of(app, import).await?);
    }
    Ok(states)
}

/// `POST /bulk_imports/:id/cancel`: every entity not done ends canceled
/// (its run, if one is at work, loses its job and publishes nothing).
pub async fn cancel(app: &App, user: &User, id: u64) -> Result<BulkImportState> {
    let Some(mut import) = app.jobs.bulk_import(user.id, id).await? else {
        return Err(Error::NotFound("404 Not Found".into()));
    };
    if !import.canceled {
        import.canceled = true;
        import.updated_at = now();
        app.jobs.put_bulk_import(&import).await?;
    }
    let not_done = When::status_in(&[JobStatus::Queued, JobStatus::Started]);
    for entity in &import.entities {
        let update = JobUpdate {
            error: Some(BULK_CANCELED.into()),
            lease: Some(crate::domain::LeaseChange::Release),
            ..JobUpdate::default()
        };
        app.jobs
            .transition(&entity.job_id, not_done, JobStatus::Failed, update)
            .await?;
    }
    state_of(app, import).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entity() -> Value {
        json!({
            "source_type": "project_entity",
            "source_full_path": "group/project",
            "destination_slug": "copy",
            "destination_namespace": "root",
        })
    }

    #[test]
    fn a_good_request_is_read_whole() {
        let body = json!({
            "configuration": {"url": "https://gitlab.example.com", "access_token": "t"},
            "entities": [entity()],
        });
        let request = parse_request(&body).unwrap();
        assert_eq!(request.entities[0].destination_slug, "copy");
        assert!(request.entities[0].migrate_projects);
    }

    #[test]
    fn grape_says_every_problem_at_once() {
        let mut both = entity();
        both["destination_name"] = json!("other");
        let mut neither = entity();
        neither.as_object_mut().unwrap().remove("destination_slug");
        let mut group = entity();
        group["source_type"] = json!("group_entity");
        let mut url = entity();
        url["source_full_path"] = json!("http://example.com/full_path");
        let body =
            json!({"configuration": {"url": "https://x"}, "entities": [both, neither, group, url]});
        let Err(Error::InvalidParameter(text)) = parse_request(&body) else {
            panic!("refused")
        };
        assert_eq!(
            text,
            "configuration[access_token] is missing, \
             entities[0][destination_slug], entities[0][destination_name] are mutually exclusive, \
             entities[1][destination_slug], entities[1][destination_name] are missing, at least one parameter must be provided, \
             entities[2][source_type] group_entity is not supported: this server migrates projects only (project_entity), \
             entities[3][source_full_path] must be a relative path and not include protocol, sub-domain, or domain information. For example, 'source/full/path' not 'https://example.com/source/full/path'"
        );
        assert!(matches!(
            parse_request(&json!({})),
            Err(Error::InvalidParameter(t)) if t == "configuration is missing, entities is missing"
        ));
    }

    #[test]
    fn slugs_follow_gitlabs_rule() {
        for good in ["copy", "a.b", "a-b_c", "A1"] {
            assert!(is_valid_slug(good), "{good}");
        }
        for bad in ["", "-a", "a-", "a..b", "a/b", "a.git", "é"] {
            assert!(!is_valid_slug(bad), "{bad}");
        }
    }
}
