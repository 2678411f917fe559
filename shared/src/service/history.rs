//! A project's job history stays bounded: each new job forgets the done
//! jobs of its kind beyond the newest `JOB_HISTORY`, so years of scheduled
//! exports or re-imports keep a few kilobytes per project, not one record
//! per run forever.

use crate::domain::{Job, JobKind, JobStatus};
use crate::{App, Result};

/// Jobs of one kind a project keeps (GitLab lists as many relation imports).
pub const JOB_HISTORY: usize = 100;
/// Jobs looked at past the kept ones per new job: more than a new job adds,
/// so the history shrinks back to `JOB_HISTORY` whatever it held.
const FORGET_BATCH: usize = 25;

/// Creates the job and forgets what the history no longer needs.
pub async fn create_job(app: &App, job: &Job) -> Result<()> {
    app.jobs.create_job(job).await?;
    app.metrics.job_scheduled(job);
    // Forgetting is housekeeping: the job stands whether or not it works.
    if let Err(err) = forget_old_jobs(app, job.project_id, job.kind).await {
        tracing::warn!(error = %err, job_id = job.id, "job history not pruned");
    }
    Ok(())
}

/// Forgets the project's done jobs of `kind` beyond the newest
/// `JOB_HISTORY`, except those something still points at: the served
/// export, a finished export (its archive's own prune forgets it), and a
/// job whose content the project shows.
pub async fn forget_old_jobs(app: &App, project_id: u64, kind: JobKind) -> Result<usize> {
    // Only the jobs past the kept ones are read (on DynamoDB the kept ones
    // cost their small history entries, not their records).
    let old = app
        .jobs
        .project_jobs(project_id, kind, JOB_HISTORY, FORGET_BATCH)
        .await?;
    if old.is_empty() {
        return Ok(0);
    }
    // The project's content names the jobs that wrote it.
    let shown = match app.projects.project(project_id).await? {
        Some(project) => project.generations(),
        None => return Ok(0),
    };
    let old = old.into_iter().filter(|job| {
        job.status.is_done()
            && !(job.kind == JobKind::Export && job.status == JobStatus::Finished)
            && !shown.iter().any(|g| job.wrote_generation(g))
    });
    forget(app, project_id, kind, old.collect()).await
}

/// Forgets these done jobs of the project's `kind`, except one the
/// project's pointers name (its newest, its newest finished): status
/// answers read through those.
pub async fn forget(app: &App, project_id: u64, kind: JobKind, jobs: Vec<Job>) -> Result<usize> {
    // Every finished export calls this, mostly with nothing to forget.
    if jobs.is_empty() {
        return Ok(0);
    }
    let latest = app.jobs.latest_job(project_id, kind).await?;
    let served = app.jobs.latest_finished_job(project_id, kind).await?;
    let pointed = |job: &Job| {
        [&latest, &served]
            .into_iter()
            .any(|p| p.as_ref().is_some_and(|p| p.id == job.id))
    };
    let forgotten: Vec<Job> = jobs
        .into_iter()
        .filter(|job| job.status.is_done() && !pointed(job))
        .collect();
    if !forgotten.is_empty() {
        app.jobs.forget_jobs(&forgotten).await?;
    }
    Ok(forgotten.len())
}
