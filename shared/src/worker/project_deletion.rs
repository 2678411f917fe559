//! Deletes what a deleted project left: its content generations (and those
//! its imports were writing), export archives, relations export runs,
//! uploads, jobs and relations export parts. Each step can run twice; the
//! deleted project is forgotten only once all of it is gone, so a run that
//! stops part way is simply run again.

use super::generation;
use crate::domain::ProjectId;
use crate::keys;
use crate::{App, Result};

pub(super) async fn run(app: &App, project_id: ProjectId) -> Result<()> {
    let Some(deleted) = app.projects.deleted_project(project_id).await? else {
        // Done already: this is a second delivery.
        return Ok(());
    };
    let jobs = app.jobs.all_project_jobs(project_id).await?;
    for job in &jobs {
        generation::discard_abandoned(app, job).await?;
    }
    let generations = deleted.project.generations();
    for name in &generations {
        generation::discard(app, project_id, name).await?;
    }
    // Every generation's files, and every export archive and relations
    // export run, by prefix.
    app.blobs
        .delete_prefix(&keys::project_prefix(project_id))
        .await?;
    app.blobs
        .delete_prefix(&keys::exports_prefix(project_id))
        .await?;
    app.jobs.delete_project_jobs(project_id).await?;
    app.projects.forget_deleted_project(project_id).await?;
    tracing::info!(
        project_id,
        generations = generations.len(),
        jobs = jobs.len(),
        "deleted project's content deleted"
    );
    Ok(())
}
