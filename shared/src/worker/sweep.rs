//! The stale-job sweep. A worker that dies mid-job leaves its message on
//! the queue, which delivers it again; but a message can also be lost (a
//! worker killed on its last allowed delivery goes to the dead-letter queue
//! without a word). The sweep finds queued or started jobs that have not
//! moved for longer than any worker runs, queues them again, and fails
//! them after a few stalls, so no job stays `started` forever. A deleted
//! project whose content is still there after as long is deleted again.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::VISIBILITY;
use crate::domain::{Job, JobKind, JobStatus, JobUpdate, Message, RelationExportPart, When};
use crate::service::relation_export;
use crate::{App, Result};

/// Twice the longest a worker may hold a message: a job this quiet has no
/// worker.
pub const STALE_AFTER: Duration = Duration::from_secs(2 * VISIBILITY.as_secs());
/// Re-queues of one job before it is failed.
pub const MAX_STALLS: u32 = 2;
/// Jobs looked at per sweep.
const BATCH: usize = 500;

#[derive(Debug, Default, PartialEq, Eq)]
pub struct SweepSummary {
    pub requeued: usize,
    pub failed: usize,
}

/// One sweep at `now`: jobs not updated for `stale_after` are queued again
/// (or failed after `MAX_STALLS`); an authorized upload that never came is
/// failed once its URL expired.
pub async fn sweep_stale_jobs(
    app: &App,
    now: DateTime<Utc>,
    stale_after: Duration,
) -> Result<SweepSummary> {
    let before = now - chrono::Duration::from_std(stale_after).unwrap_or_default();
    let mut summary = SweepSummary::default();
    for job in app.jobs.stale_jobs(before, BATCH).await? {
        if job.kind == JobKind::RelationExport {
            let swept = sweep_relation_export(app, &job, before).await?;
            summary.requeued += swept.requeued;
            summary.failed += swept.failed;
            continue;
        }
        // Never a job a live run holds: it is slow, not lost.
        let from = When::Unleased(now);
        if job.awaiting_upload {
            let expired = job.created_at
                + chrono::Duration::from_std(crate::service::UPLOAD_URL_TTL).unwrap_or_default()
                < now;
            if expired && job.status == JobStatus::Queued {
                let reason = "the archive was never uploaded to its upload URL".to_owned();
                fail(app, &job.id, from, reason).await?;
                summary.failed += 1;
            }
            continue;
        }
        if job.stalls >= MAX_STALLS {
            let reason = format!(
                "the job stalled: no progress for {} minutes, {} times",
                stale_after.as_secs() / 60,
                job.stalls + 1
            );
            fail(app, &job.id, from, reason).await?;
            summary.failed += 1;
            continue;
        }
        let touched = app
            .jobs
            .transition(
                &job.id,
                from,
                job.status,
                JobUpdate {
                    stalls: Some(job.stalls + 1),
                    ..JobUpdate::default()
                },
            )
            .await?;
        if touched.is_some() {
            tracing::warn!(
                job_id = job.id,
                stalls = job.stalls + 1,
                "stale job queued again"
            );
            app.queue.send(&[Message::for_job(&job)]).await?;
            summary.requeued += 1;
        }
    }
    summary.requeued += resend_project_deletions(app, before).await?;
    if summary != SweepSummary::default() {
        tracing::info!(
            requeued = summary.requeued,
            failed = summary.failed,
            "stale-job sweep"
        );
    }
    Ok(summary)
}

/// A relations export run nothing moved for a while: its unfinished parts
/// (a window of them) are queued again, or failed after `MAX_STALLS`; a run
/// that ended or was replaced is closed.
async fn sweep_relation_export(
    app: &App,
    run: &Job,
    before: DateTime<Utc>,
) -> Result<SweepSummary> {
    let mut summary = SweepSummary::default();
    let parts = app.jobs.relation_export_parts(run.project_id).await?;
    let current = parts.first().is_some_and(|p| p.run_id == run.id);
    let open: Vec<&RelationExportPart> = relation_export::sent_in_order(&parts)
        .filter(|p| !p.status.is_done())
        .collect();
    if !current || open.is_empty() {
        let (to, reason) = if current {
            (JobStatus::Finished, None)
        } else {
            (
                JobStatus::Failed,
                Some("replaced by a newer relations export".to_owned()),
            )
        };
        let update = JobUpdate {
            error: reason,
            ..JobUpdate::default()
        };
        app.jobs
            .transition(&run.id, When::Unleased(before), to, update)
            .await?;
        return Ok(summary);
    }
    let window = app.settings.relation_export_window.max(1);
    let stalled: Vec<&RelationExportPart> = open
        .into_iter()
        .filter(|p| p.updated_at < before)
        .take(window)
        .collect();
    if run.stalls >= MAX_STALLS {
        let reason = format!("the part stalled {} times", run.stalls + 1);
        for part in &stalled {
            let message = relation_export::message_for(part);
            super::give_up(app, &message, &reason).await?;
            summary.failed += 1;
        }
        return Ok(summary);
    }
    let touched = app
        .jobs
        .transition(
            &run.id,
            When::Unleased(before),
            JobStatus::Started,
            JobUpdate {
                stalls: Some(run.stalls + 1),
                ..JobUpdate::default()
            },
        )
        .await?;
    if touched.is_some() && !stalled.is_empty() {
        let messages: Vec<Message> = stalled
            .iter()
            .map(|p| relation_export::message_for(p))
            .collect();
        tracing::warn!(
            run = run.id,
            parts = messages.len(),
            "stale relation export parts queued again"
        );
        summary.requeued += messages.len();
        app.queue.send(&messages).await?;
    }
    Ok(summary)
}

/// Projects deleted before `before` whose content is still there: their
/// deletion message was lost, or gave up; it is sent again.
async fn resend_project_deletions(app: &App, before: DateTime<Utc>) -> Result<usize> {
    let messages: Vec<Message> = app
        .projects
        .deleted_projects(BATCH)
        .await?
        .into_iter()
        .filter(|deleted| deleted.deleted_at < before)
        .map(|deleted| Message::project_deletion(deleted.project.id))
        .collect();
    if !messages.is_empty() {
        tracing::warn!(projects = messages.len(), "project deletions queued again");
        app.queue.send(&messages).await?;
    }
    Ok(messages.len())
}

async fn fail(app: &App, job_id: &str, from: When, reason: String) -> Result<()> {
    tracing::warn!(job_id, reason, "stale job failed");
    super::abandon(app, job_id, from, reason).await?;
    Ok(())
}
