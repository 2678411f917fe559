//! The use cases behind the API: find a project the caller may see, schedule
//! and follow exports, start and follow imports. No HTTP here.

pub mod bulk_imports;
pub mod history;
mod imports;
pub mod members;
pub mod overrides;
pub mod relation_export;
pub mod schedule;
pub mod statistics;

use crate::domain::UploadTarget;
use crate::domain::{Job, JobKind, JobStatus, Message, Project, User};
use crate::ports::GenerationRef;
use crate::{App, Error, Result};

pub use imports::*;

/// `:id` of a route: a numeric id or a URL-decoded full path.
pub enum ProjectRef {
    Id(u64),
    Path(String),
}

impl ProjectRef {
    pub fn parse(raw: &str) -> Self {
        match raw.parse() {
            Ok(id) => ProjectRef::Id(id),
            Err(_) => ProjectRef::Path(raw.trim_matches('/').to_owned()),
        }
    }
}

fn may_manage(user: &User, owner_id: u64) -> bool {
    user.is_admin || user.id == owner_id
}

/// The project, if the user may manage it. Someone else's project and a
/// missing one answer the same, so existence is never revealed.
pub async fn find_project(app: &App, user: &User, reference: &ProjectRef) -> Result<Project> {
    let project = match reference {
        ProjectRef::Id(id) => app.projects.project(*id).await?,
        ProjectRef::Path(path) => app.projects.project_by_full_path(path).await?,
    };
    project
        .filter(|p| may_manage(user, p.owner_id))
        .ok_or_else(Error::project_not_found)
}

/// One page of the projects the user sees: their own with `owned` (and
/// always for non-admins: every project here is private), or all.
pub async fn list_projects(
    app: &App,
    user: &User,
    owned: bool,
    search: Option<&str>,
    page: usize,
    per_page: usize,
) -> Result<(Vec<Project>, u64)> {
    let owner = (owned || !user.is_admin).then_some(user.id);
    let offset = page.saturating_sub(1).saturating_mul(per_page);
    let Some(search) = search.map(str::to_lowercase).filter(|s| !s.is_empty()) else {
        return app.projects.list_projects(owner, offset, per_page).await;
    };
    // GitLab's `search`: the name or the path holds the text, whatever the
    // case. The stores keep no index of it: the caller's projects are read
    // in pages and matched.
    let matches = |project: &Project| {
        project.name.to_lowercase().contains(&search)
            || project.full_path().to_lowercase().contains(&search)
    };
    let (mut found, mut total, mut from) = (Vec::new(), 0u64, 0usize);
    loop {
        let (batch, all) = app
            .projects
            .list_projects(owner, from, SEARCH_BATCH)
            .await?;
        let read = batch.len();
        from += read;
        for project in batch.into_iter().filter(matches) {
            if total as usize >= offset && found.len() < per_page {
                found.push(project);
            }
            total += 1;
        }
        if read == 0 || from as u64 >= all {
            return Ok((found, total));
        }
    }
}

/// Projects read at a time when a search matches them.
const SEARCH_BATCH: usize = 100;

/// Deletes the project: from now on it answers `404` and its path is free;
/// what it holds is deleted by a queued `ProjectDeletion`, which the stale
/// sweep sends again if it is lost.
pub async fn delete_project(app: &App, project: &Project) -> Result<()> {
    if app.projects.delete_project(project.id).await?.is_none() {
        // Deleted by a request at the same moment.
        return Err(Error::project_not_found());
    }
    app.queue
        .send(&[Message::project_deletion(project.id)])
        .await
}

async fn enqueue(app: &App, job: &Job) -> Result<()> {
    history::create_job(app, job).await?;
    app.queue.send(&[Message::for_job(job)]).await
}

/// GitLab's `project_export` rate limit, per user, on full exports only
/// (relations exports are not limited: direct transfer calls them once per
/// project).
pub async fn check_export_rate(app: &App, user: &User) -> Result<()> {
    let limit = app.settings.export_rate_limit;
    take_rate_slot(app, user, "project_export", limit).await
}

/// GitLab's `project_download_export` rate limit, per user and namespace,
/// counted before GitLab looks for the file.
pub async fn check_download_rate(app: &App, user: &User, project: &Project) -> Result<()> {
    let action = format!("project_download_export:{}", project.namespace_id);
    take_rate_slot(app, user, &action, app.settings.download_rate_limit).await
}

/// A fixed one-minute window per user and `action`; `limit` 0 is no limit.
/// Over it, `429` with GitLab's `Retry-After`: the limit's interval.
async fn take_rate_slot(app: &App, user: &User, action: &str, limit: u32) -> Result<()> {
    if limit == 0 {
        return Ok(());
    }
    let now = crate::domain::now().timestamp();
    let window = now - now.rem_euclid(60);
    if app
        .users
        .take_rate_slot(user.id, action, window, limit)
        .await?
    {
        Ok(())
    } else {
        Err(Error::TooManyRequests { retry_after: 60 })
    }
}

pub async fn schedule_export(
    app: &App,
    user: &User,
    project: &Project,
    description: Option<String>,
    upload: Option<UploadTarget>,
) -> Result<Job> {
    check_export_rate(app, user).await?;
    let mut job = Job::new(JobKind::Export, project.id, user.id);
    job.description = description;
    job.upload = upload;
    enqueue(app, &job).await?;
    Ok(job)
}

/// GitLab's `export_status` and the finished export, if any.
pub struct ExportState {
    pub status: &'static str,
    pub finished: Option<Job>,
    /// While an export runs: records written so far, of how many.
    pub progress: Option<ExportProgress>,
}

pub struct ExportProgress {
    pub records_exported: u64,
    pub records_total: u64,
}

pub async fn export_state(app: &App, project: &Project) -> Result<ExportState> {
    let latest = app.jobs.latest_job(project.id, JobKind::Export).await?;
    let finished = app
        .jobs
        .latest_finished_job(project.id, JobKind::Export)
        .await?;
    // As GitLab's `Project#export_status`: an archive that exists is
    // `finished` even when a newer export failed (it is still served).
    let status = match (&latest, &finished) {
        (None, _) => "none",
        (Some(job), Some(_)) if !job.status.is_done() => "regeneration_in_progress",
        (Some(_), Some(_)) => "finished",
        (Some(job), _) => match job.status {
            JobStatus::Queued => "queued",
            JobStatus::Started => "started",
            JobStatus::Finished => "finished",
            JobStatus::Failed => "failed",
        },
    };
    let finished = if status == "finished" { finished } else { None };
    let progress = match &latest {
        Some(job) if !job.status.is_done() => {
            let records_total = content_relations(app, project)
                .await?
                .iter()
                .map(|(_, stats)| stats.records)
                .sum();
            Some(ExportProgress {
                records_exported: job.processed,
                records_total,
            })
        }
        _ => None,
    };
    Ok(ExportState {
        status,
        finished,
        progress,
    })
}

/// A finished file a client may download.
pub struct Download {
    pub key: String,
    pub file_name: String,
}

/// The newest finished export.
pub async fn export_download(app: &App, project: &Project) -> Result<Download> {
    let not_found = || Error::NotFound("404 Not found or has expired".into());
    let job = app
        .jobs
        .latest_finished_job(project.id, JobKind::Export)
        .await?
        .ok_or_else(not_found)?;
    match (job.archive_key, job.file_name) {
        (Some(key), Some(file_name)) => Ok(Download { key, file_name }),
        _ => Err(not_found()),
    }
}

/// Page `page` (from 1) of `per_page` records of one of the project's
/// relations, as GitLab's list APIs page, and how many it has.
pub async fn relation_page(
    app: &App,
    project: &Project,
    relation: &str,
    page: usize,
    per_page: usize,
) -> Result<(Vec<bytes::Bytes>, u64)> {
    let first = (page.saturating_sub(1) as u64).saturating_mul(per_page as u64);
    relation_records(app, project, relation, first, per_page).await
}

/// The records `first..first + count` of one of the project's relations,
/// and how many it has.
pub async fn relation_records(
    app: &App,
    project: &Project,
    relation: &str,
    first: u64,
    count: usize,
) -> Result<(Vec<bytes::Bytes>, u64)> {
    let Some(generation) = project.relation_generation(relation) else {
        return Ok((Vec::new(), 0));
    };
    let at = GenerationRef::new(project.id, generation);
    let total = app
        .content
        .relations(at)
        .await?
        .into_iter()
        .find(|stats| stats.relation == relation)
        .map_or(0, |stats| stats.records);
    let mut records = Vec::with_capacity(count.min(100));
    if first < total && count > 0 {
        let mut pages = crate::ports::RecordPages::new(app.content.as_ref(), at, relation, count)
            .within(first, count as u64);
        while let Some(page) = pages.next().await? {
            records.extend(page.into_iter().map(|record| record.json));
        }
    }
    Ok((records, total))
}

/// Every stored relation of the project, with the generation holding it:
/// the main generation's, except those a relation import replaced.
pub async fn content_relations(
    app: &App,
    project: &Project,
) -> Result<Vec<(String, crate::ports::RelationStats)>> {
    let mut out = Vec::new();
    if let Some(content) = &project.content {
        for stats in app
            .content
            .relations(GenerationRef::new(project.id, content))
            .await?
        {
            if !project.relation_content.contains_key(&stats.relation) {
                out.push((content.clone(), stats));
            }
        }
    }
    for (relation, generation) in &project.relation_content {
        for stats in app
            .content
            .relations(GenerationRef::new(project.id, generation))
            .await?
        {
            if &stats.relation == relation {
                out.push((generation.clone(), stats));
            }
        }
    }
    Ok(out)
}

pub use crate::keys::{
    content_files_prefix, export_key, exports_prefix, upload_key, upload_prefix,
};
