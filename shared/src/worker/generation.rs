//! A content generation's life, for both import workers: written aside under
//! a name no other run uses (`Job::generation`), switched in by one
//! conditional write of the project, discarded when replaced or failed, and
//! never discarded while the project shows it.

use crate::domain::{Job, Project};
use crate::ports::GenerationRef;
use crate::service::content_files_prefix;
use crate::{App, Result};

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

/// Every generation any run of the job may have written: what a deleted
/// project's jobs may have left.
pub(super) fn every_generation_of(job: &Job, derived: impl Fn(&str) -> Vec<String>) -> Vec<String> {
    written_by(job, job.attempt + 1, derived)
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
