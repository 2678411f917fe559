//! Scheduled exports, our extension of GitLab's API: a project opts in with
//! `PUT /projects/:id/export_schedule`, and every tick of the schedule
//! (EventBridge on AWS, a timer in the local server) exports it. The last
//! `keep` scheduled archives stay downloadable.

use chrono::{DateTime, Utc};

use super::relation_export;
use crate::domain::{now, ExportSchedule, Job, JobKind, JobStatus, Message, Project};
use crate::{App, Error, Result};

/// Scheduled archives a project may keep.
pub const MAX_KEEP: u32 = 100;
pub const DEFAULT_KEEP: u32 = 3;

/// What `PUT /projects/:id/export_schedule` asks for.
#[derive(Debug, Clone, Copy)]
pub struct ScheduleRequest {
    pub relations: bool,
    pub batched: bool,
    pub keep: u32,
}

fn schedule_not_found() -> Error {
    Error::not_found("Export schedule")
}

/// Creates or replaces the project's opt-in.
pub async fn set(app: &App, project: &Project, request: ScheduleRequest) -> Result<ExportSchedule> {
    if !(1..=MAX_KEEP).contains(&request.keep) {
        return Err(Error::BadRequest(format!(
            "keep must be between 1 and {MAX_KEEP}"
        )));
    }
    if request.batched && !request.relations {
        return Err(Error::BadRequest(
            "batched applies to relations exports only".into(),
        ));
    }
    let at = now();
    let previous = app.projects.export_schedule(project.id).await?;
    let schedule = ExportSchedule {
        project_id: project.id,
        relations: request.relations,
        batched: request.batched,
        keep: request.keep,
        created_at: previous.as_ref().map_or(at, |p| p.created_at),
        updated_at: at,
        last_scheduled_at: previous.and_then(|p| p.last_scheduled_at),
    };
    app.projects.put_export_schedule(&schedule).await?;
    Ok(schedule)
}

pub async fn get(app: &App, project: &Project) -> Result<ExportSchedule> {
    app.projects
        .export_schedule(project.id)
        .await?
        .ok_or_else(schedule_not_found)
}

pub async fn delete(app: &App, project: &Project) -> Result<()> {
    if app.projects.delete_export_schedule(project.id).await? {
        Ok(())
    } else {
        Err(schedule_not_found())
    }
}

/// The finished scheduled exports whose archives are kept, newest first.
pub async fn kept_archives(app: &App, project: &Project) -> Result<Vec<Job>> {
    let keep = match app.projects.export_schedule(project.id).await? {
        Some(schedule) => schedule.keep as usize,
        None => 0,
    };
    Ok(finished_exports(app, project.id)
        .await?
        .into_iter()
        .filter(|job| job.scheduled)
        .take(keep)
        .collect())
}

/// A kept scheduled archive, by its job id.
pub async fn archive_download(
    app: &App,
    project: &Project,
    job_id: &str,
) -> Result<super::Download> {
    kept_archives(app, project)
        .await?
        .into_iter()
        .find(|job| job.id == job_id)
        .and_then(|job| {
            Some(super::Download {
                key: job.archive_key?,
                file_name: job.file_name?,
            })
        })
        .ok_or_else(|| Error::NotFound("404 Not found or has expired".into()))
}

async fn finished_exports(app: &App, project_id: u64) -> Result<Vec<Job>> {
    Ok(app
        .jobs
        .project_jobs(project_id, JobKind::Export, 0, 200)
        .await?
        .into_iter()
        .filter(|job| job.status == JobStatus::Finished)
        .collect())
}

/// The export archives of a project to delete now. Kept: the one the
/// export status and download point at (the newest finished), the newest
/// `keep` scheduled ones, and any other that stopped being the newest less
/// than a download URL's lifetime ago (a client may hold a URL to it, or be
/// reading it); those go at a later prune.
pub async fn archives_to_prune(app: &App, project_id: u64) -> Result<Vec<Job>> {
    let keep = match app.projects.export_schedule(project_id).await? {
        Some(schedule) => schedule.keep as usize,
        None => 0,
    };
    let served = app
        .jobs
        .latest_finished_job(project_id, JobKind::Export)
        .await?
        .map(|job| job.id);
    let grace = chrono::Duration::from_std(app.settings.download_ttl).unwrap_or_default();
    let now = crate::domain::now();
    let mut finished = finished_exports(app, project_id).await?;
    // Newest finished first: each was superseded when the one before it finished.
    finished.sort_by_key(|job| std::cmp::Reverse(job.updated_at));
    let mut scheduled_kept = 0;
    let mut superseded_at = None;
    let mut prune = Vec::new();
    for job in finished {
        let recently_served = superseded_at.is_none_or(|at| now - at < grace);
        // Scheduled archives beyond `keep` go at once: that is what the
        // operator asked for; URLs to them come from the schedule's listing.
        let kept = if job.scheduled {
            scheduled_kept += 1;
            scheduled_kept <= keep || served.as_ref() == Some(&job.id)
        } else {
            served.as_ref() == Some(&job.id) || recently_served
        };
        superseded_at = Some(job.updated_at);
        if !kept {
            prune.push(job);
        }
    }
    Ok(prune)
}

/// What one tick did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct TickSummary {
    pub scheduled: usize,
    /// Already scheduled for this tick (a repeated or late delivery).
    pub skipped: usize,
}

/// One tick of the schedule at `tick`: queues an export of every project
/// that opted in. The tick's time makes each export's identity, so a tick
/// delivered twice schedules nothing twice.
pub async fn run_tick(app: &App, tick: DateTime<Utc>) -> Result<TickSummary> {
    let mut summary = TickSummary::default();
    for schedule in app.projects.export_schedules().await? {
        if schedule.last_scheduled_at.is_some_and(|last| last >= tick) {
            summary.skipped += 1;
            continue;
        }
        let Some(project) = app.projects.project(schedule.project_id).await? else {
            continue;
        };
        if schedule.relations {
            relation_export::start_run(app, &project, schedule.batched).await?;
        } else {
            let mut job = Job::new(JobKind::Export, project.id, project.owner_id);
            job.id = format!("scheduled-{}-{}", project.id, tick.timestamp());
            job.scheduled = true;
            match super::history::create_job(app, &job).await {
                Ok(()) => app.queue.send(&[Message::for_job(&job)]).await?,
                Err(Error::Conflict(_)) => {
                    summary.skipped += 1;
                    continue;
                }
                Err(err) => return Err(err),
            }
        }
        let mut updated = schedule.clone();
        updated.last_scheduled_at = Some(tick);
        app.projects.put_export_schedule(&updated).await?;
        summary.scheduled += 1;
    }
    tracing::info!(
        scheduled = summary.scheduled,
        skipped = summary.skipped,
        "export schedule tick"
    );
    Ok(summary)
}
