//! A content generation's life, for both import workers: written aside under
//! a name no other run uses (`Job::generation`), switched in by one
//! conditional write of the project, discarded when replaced or failed, and
//! never discarded while the project shows it.

use crate::domain::{Job, JobKind, Project};
use crate::keys;
use crate::ports::GenerationRef;
use crate::service::content_files_prefix;
use crate::{App, Result};

/// Where a relation import's new records wait, in archive order, until the
/// merge: beside the generation they are merged into.
pub(super) fn staging(generation: &str) -> String {
    format!("{generation}-staged")
}

/// Deletes a generation's records and files, unless the project shows it:
/// what a run published is never taken back by a run that lost the job.
pub(super) async fn discard(app: &App, project_id: u64, generation: &str) -> Result<()> {
    if let Some(project) = app.projects.project(project_id).await? {
        if project.generations().iter().any(|g| g == generation) {
            tracing::warn!(generation, "not discarding a generation the project shows");
            return Ok(());
        }
    }
    app.content
        .delete_content(GenerationRef::new(project_id, generation))
        .await?;
    app.blobs
        .delete_prefix(&content_files_prefix(project_id, generation))
        .await
}

/// Deletes what earlier runs of the job left unpublished (a run that
/// crashed or lost the job), with `derived` names of each (staging areas).
pub(super) async fn discard_earlier_runs(
    app: &App,
    project: &Project,
    job: &Job,
    derived: impl Fn(&str) -> Vec<String>,
) -> Result<()> {
    for name in written_by(job, job.attempt, derived) {
        discard(app, project.id, &name).await?;
    }
    Ok(())
}

/// Every generation runs of the job before `attempt` may have written,
/// with `derived` names of each.
fn written_by(job: &Job, attempt: u32, derived: impl Fn(&str) -> Vec<String>) -> Vec<String> {
    std::iter::once(job.id.clone())
        .chain((1..attempt).map(|a| job.generation(a)))
        .flat_map(|generation| {
            let derived = derived(&generation);
            std::iter::once(generation).chain(derived)
        })
        .collect()
}

/// Every generation any run of an import job may have written, with a
/// relation import's staging areas.
fn every_generation_of(job: &Job) -> Vec<String> {
    match job.kind {
        JobKind::Import => written_by(job, job.attempt + 1, |_| vec![]),
        JobKind::RelationImport => written_by(job, job.attempt + 1, |g| vec![staging(g)]),
        _ => Vec::new(),
    }
}

/// Deletes what the runs of a job that ended without them (given up on,
/// stalled, or its project deleted) wrote and no one will read: its
/// generations (never one the project shows), its uploaded archive, an
/// unfinished export's archive.
pub async fn discard_abandoned(app: &App, job: &Job) -> Result<()> {
    for name in every_generation_of(job) {
        discard(app, job.project_id, &name).await?;
    }
    match job.kind {
        JobKind::Import | JobKind::RelationImport => {
            // A blob the last run stopped inside, stored in parts so far.
            if let Some(blob) = job.resume.as_ref().and_then(|r| r.blob.as_ref()) {
                app.blobs.abort_parts(&blob.key, &blob.upload).await?;
            }
            if let Some(upload) = job
                .archive_key
                .as_deref()
                .filter(|k| keys::is_upload_key(k))
            {
                app.blobs
                    .delete_prefix(&keys::upload_folder(upload))
                    .await?;
            }
        }
        JobKind::Export if job.status != crate::domain::JobStatus::Finished => {
            super::export::slices::abandon(app, job).await?;
            app.blobs
                .delete_prefix(&keys::export_prefix(job.project_id, &job.id))
                .await?;
        }
        _ => {}
    }
    Ok(())
}

/// Whether the project already shows what a run of this job wrote: a run
/// switched it and stopped before marking the job finished.
pub(super) fn published_by(project: &Project, job: &Job, relation: Option<&str>) -> bool {
    let shown = match relation {
        Some(relation) => project.relation_content.get(relation).map(String::as_str),
        None => project.content.as_deref(),
    };
    shown.is_some_and(|generation| job.wrote_generation(generation))
}
