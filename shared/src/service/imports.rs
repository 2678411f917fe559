//! Imports: a whole archive (uploaded, fetched from a URL or an S3 object,
//! or uploaded to a presigned URL), or one relation into an existing
//! project; and where each stands.

use super::{enqueue, find_project, history, may_manage, upload_key, ProjectRef};
use crate::domain::{
    is_valid_path, ImportFailure, Job, JobKind, JobStatus, JobUpdate, Message, Namespace,
    NewProject, Project, User, When,
};
use crate::{relations, App, Error, Result};

/// The fields of `POST /projects/import` besides the file.
#[derive(Debug, Clone, Default)]
pub struct ImportRequest {
    pub path: String,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub overwrite: bool,
    /// `override_params`, as project attributes and their JSON text.
    pub overrides: Vec<(String, String)>,
}

/// A new import of the request into `project`.
fn import_job(project: &Project, user: &User, request: &ImportRequest) -> Job {
    let mut job = Job::new(JobKind::Import, project.id, user.id);
    job.overrides = request.overrides.clone();
    job
}

pub(super) async fn resolve_namespace(
    app: &App,
    user: &User,
    namespace: Option<&str>,
) -> Result<Namespace> {
    let found = match namespace.map(str::trim).filter(|n| !n.is_empty()) {
        None => app.users.namespace(user.id).await?,
        Some(raw) => match raw.parse::<u64>() {
            Ok(id) => app.users.namespace(id).await?,
            Err(_) => app.users.namespace_by_path(raw).await?,
        },
    };
    found
        .filter(|ns| may_manage(user, ns.owner_id))
        .ok_or_else(|| Error::not_found("Namespace"))
}

/// Creates (or, with `overwrite`, reuses) the project an import goes to.
/// GitLab's rule for project names: at most 255 characters; letters,
/// digits, emoji, `_`, `.`, `+`, `-` and spaces; starting with a letter,
/// digit, emoji or `_`.
fn check_project_name(name: &str) -> Result<()> {
    if name.chars().count() > 255 {
        return Err(Error::BadRequest(
            "name is too long (maximum is 255 characters)".into(),
        ));
    }
    let allowed =
        |c: char| c.is_alphanumeric() || matches!(c, '_' | '.' | '+' | '-' | ' ') || is_emoji(c);
    let starts_well = name
        .chars()
        .next()
        .is_some_and(|c| c.is_alphanumeric() || c == '_' || is_emoji(c));
    if !starts_well || !name.chars().all(allowed) {
        return Err(Error::BadRequest(
            "name can contain only letters, digits, emojis, '_', '.', '+', dashes, or spaces. It must start with a letter, digit, emoji, or '_'.".into(),
        ));
    }
    Ok(())
}

/// Pictographs, as GitLab's name rule admits them.
fn is_emoji(c: char) -> bool {
    matches!(c as u32, 0x1F000..=0x1FAFF | 0x2600..=0x27BF | 0xFE0F | 0x200D)
}

async fn import_target(app: &App, user: &User, request: &ImportRequest) -> Result<Project> {
    if !is_valid_path(&request.path) {
        return Err(Error::BadRequest(
            "path can contain only letters, digits, '_', '-' and '.', and cannot start with '-' or '.'".into(),
        ));
    }
    if let Some(name) = &request.name {
        check_project_name(name)?;
    }
    let namespace = resolve_namespace(app, user, request.namespace.as_deref()).await?;
    let full_path = format!("{}/{}", namespace.path, request.path);
    match app.projects.project_by_full_path(&full_path).await? {
        Some(existing) if request.overwrite && may_manage(user, existing.owner_id) => Ok(existing),
        Some(_) => Err(Error::BadRequest(
            "Name has already been taken, Path has already been taken".into(),
        )),
        None => {
            app.projects
                .create_project(NewProject {
                    namespace,
                    path: request.path.clone(),
                    name: request.name.clone().unwrap_or_else(|| request.path.clone()),
                    description: None,
                    owner_id: user.id,
                })
                .await
        }
    }
}

/// Creates (or, with `overwrite`, reuses) the project and queues the import
/// of the archive already stored at `upload_key`.
pub async fn start_import(
    app: &App,
    user: &User,
    request: &ImportRequest,
    upload_key: &str,
) -> Result<(Project, Job)> {
    crate::crash::point("import-upload-stored");
    let project = import_target(app, user, request).await?;
    let mut job = import_job(&project, user, request);
    job.archive_key = Some(upload_key.to_owned());
    enqueue(app, &job).await?;
    Ok((project, job))
}

/// `POST /projects/remote-import`: the file at `url` is checked as GitLab
/// checks it (a `400` before any project exists), then the worker fetches
/// it (streamed into the blob store) and imports it.
pub async fn start_remote_import(
    app: &App,
    user: &User,
    request: &ImportRequest,
    url: &str,
) -> Result<(Project, Job)> {
    let settings = &app.settings;
    let url = crate::remote::check_remote_file(
        url,
        settings.max_upload_bytes,
        settings.allow_local_requests,
    )
    .await?;
    start_fetched_import(app, user, request, url.into()).await
}

/// `POST /projects/remote-import-s3`: the object is checked as GitLab
/// checks it (a `400` before any project exists), then fetched through a
/// presigned GET URL, so the secret key is used here and never stored.
pub async fn start_s3_import(
    app: &App,
    user: &User,
    request: &ImportRequest,
    object: &crate::remote::S3Object,
) -> Result<(Project, Job)> {
    let settings = &app.settings;
    let endpoint = settings.s3_endpoint.as_deref();
    crate::remote::check_s3_object(
        object,
        endpoint,
        settings.max_upload_bytes,
        settings.allow_local_requests,
    )
    .await?;
    let url = crate::remote::presign_s3_get(
        object,
        endpoint,
        crate::domain::now(),
        std::time::Duration::from_secs(7 * 24 * 3600),
    )?;
    start_fetched_import(app, user, request, url).await
}

/// `POST /projects/remote-import-s3`, and a remote import once checked: the
/// worker fetches the archive from `url`, then imports it.
pub async fn start_fetched_import(
    app: &App,
    user: &User,
    request: &ImportRequest,
    url: String,
) -> Result<(Project, Job)> {
    let project = import_target(app, user, request).await?;
    let mut job = import_job(&project, user, request);
    job.archive_key = Some(upload_key(&job.id));
    job.source_url = Some(url);
    enqueue(app, &job).await?;
    Ok((project, job))
}

/// How long a presigned upload URL of `import/upload-url` stays valid.
pub const UPLOAD_URL_TTL: std::time::Duration = std::time::Duration::from_secs(3600);

/// `POST /projects/import/upload-url`: an import waiting for its archive,
/// and the presigned URL to PUT it to. It starts when the upload lands.
pub async fn authorize_import(
    app: &App,
    user: &User,
    request: &ImportRequest,
) -> Result<(Project, Job, String)> {
    let project = import_target(app, user, request).await?;
    let mut job = import_job(&project, user, request);
    let key = upload_key(&job.id);
    job.archive_key = Some(key.clone());
    job.awaiting_upload = true;
    let url = app.blobs.upload_url(&key, UPLOAD_URL_TTL).await?;
    history::create_job(app, &job).await?;
    Ok((project, job, url))
}

/// An upload landed at `key` (an S3 event, or the local server's PUT): the
/// import waiting for it starts. Other keys, and repeats, change nothing.
pub async fn upload_landed(app: &App, key: &str) -> Result<()> {
    let Some(job_id) = awaited_job_id(key) else {
        return Ok(());
    };
    // Only the first event of an upload queues the import: S3 may send it
    // twice, and a second upload to the same URL must not start it again.
    let landed = app
        .jobs
        .transition(
            job_id,
            When::AwaitingUpload,
            JobStatus::Queued,
            JobUpdate {
                upload_landed: true,
                ..JobUpdate::default()
            },
        )
        .await?;
    if let Some(job) = landed {
        tracing::info!(job_id, "upload landed: import queued");
        app.queue.send(&[Message::for_job(&job)]).await?;
    }
    Ok(())
}

/// Whether `key` is the upload an authorized import still waits for.
pub async fn upload_awaited(app: &App, key: &str) -> Result<bool> {
    let Some(job_id) = awaited_job_id(key) else {
        return Ok(false);
    };
    Ok(app
        .jobs
        .job(job_id)
        .await?
        .is_some_and(|job| When::AwaitingUpload.holds(&job)))
}

fn awaited_job_id(key: &str) -> Option<&str> {
    key.strip_prefix("imports/")
        .and_then(|rest| rest.strip_suffix("/archive.tar.gz"))
}

/// GitLab's `import_status`, `import_error` and `failed_relations`.
pub struct ImportState {
    pub status: &'static str,
    pub error: Option<String>,
    pub job: Option<Job>,
    pub failures: Vec<ImportFailure>,
}

/// GitLab shows at most this many `failed_relations`.
const MAX_FAILED_RELATIONS: usize = 100;

pub async fn import_state(app: &App, project: &Project) -> Result<ImportState> {
    let job = app.jobs.latest_job(project.id, JobKind::Import).await?;
    let status = match job.as_ref().map(|j| j.status) {
        None => "none",
        Some(JobStatus::Queued) => "scheduled",
        Some(JobStatus::Started) => "started",
        Some(JobStatus::Finished) => "finished",
        Some(JobStatus::Failed) => "failed",
    };
    let error = job
        .as_ref()
        .filter(|j| j.status == JobStatus::Failed)
        .and_then(|j| j.error.clone());
    // The import's own failures, then those of relation imports since.
    let mut failures: Vec<ImportFailure> = Vec::new();
    let since = job.as_ref().map(|j| j.created_at);
    for relation_import in relation_imports(app, project).await? {
        if since.is_some_and(|since| relation_import.created_at < since) {
            break;
        }
        failures.extend(relation_import.failures);
    }
    if let Some(job) = &job {
        failures.extend(job.failures.iter().cloned());
    }
    failures.truncate(MAX_FAILED_RELATIONS);
    Ok(ImportState {
        status,
        error,
        job,
        failures,
    })
}

/// Relations a relation import accepts: GitLab's four, and any other
/// relation of the relation table.
fn check_importable_relation(relation: &str) -> Result<()> {
    if relations::find(relation).is_some() {
        return Ok(());
    }
    let names: Vec<&str> = relations::RELATIONS.iter().map(|r| r.name).collect();
    Err(Error::BadRequest(format!(
        "Imported relation must be one of {}",
        names.join(", ")
    )))
}

/// `POST /projects/import-relation`: queues the import of one relation of
/// the archive stored at `upload_key` into an existing project.
pub async fn start_relation_import(
    app: &App,
    user: &User,
    path: &str,
    relation: &str,
    upload_key: &str,
) -> Result<(Project, Job)> {
    let project = find_project(app, user, &ProjectRef::Path(path.to_owned())).await?;
    check_importable_relation(relation)?;
    let busy = |what: &str| {
        Err(Error::Conflict(format!(
            "{what} is already in progress for this project"
        )))
    };
    if let Some(import) = app.jobs.latest_job(project.id, JobKind::Import).await? {
        if !import.status.is_done() {
            return busy("An import");
        }
    }
    let running = relation_imports(app, &project).await?;
    if running.iter().any(|job| !job.status.is_done()) {
        return busy("A relation import");
    }
    let mut job = Job::new(JobKind::RelationImport, project.id, user.id);
    job.relation = Some(relation.to_owned());
    job.archive_key = Some(upload_key.to_owned());
    job.number = app.jobs.next_number("relation_import").await?;
    enqueue(app, &job).await?;
    Ok((project, job))
}

/// The project's relation imports, newest first.
pub async fn relation_imports(app: &App, project: &Project) -> Result<Vec<Job>> {
    app.jobs
        .project_jobs(project.id, JobKind::RelationImport, 0, history::JOB_HISTORY)
        .await
}
