//! Queue workers: one handler per message kind, called by the SQS Lambda and
//! by the local server's in-process loop alike. Every handler is idempotent:
//! a message delivered twice, or retried after a crash, does no harm.

mod export;
mod import;

use tracing::Instrument;

use crate::domain::{JobKind, JobStatus, JobUpdate, Message};
use crate::{App, Error, Result};

/// Deliveries of one message before it is given up (the dead-letter rule).
pub const MAX_RECEIVES: u32 = 5;

/// Handles one message. `Ok` means done (acknowledge it, whatever the job's
/// outcome); `Err` means try again later.
pub async fn handle(app: &App, message: &Message) -> Result<()> {
    let span = tracing::info_span!(
        "job",
        job_id = %message.job_id,
        kind = message.kind.as_str(),
        project_id = message.project_id
    );
    async {
        match message.kind {
            JobKind::Export => export::run(app, &message.job_id).await,
            JobKind::Import => import::run(app, &message.job_id).await,
            JobKind::RelationExport => Err(Error::Internal(
                "relation exports are not supported yet".into(),
            )),
        }
    }
    .instrument(span)
    .await
}

/// A message failed too often: its job ends `failed` with the last error, so
/// nothing stays `started` forever.
pub async fn give_up(app: &App, message: &Message, reason: &str) -> Result<()> {
    tracing::error!(job_id = %message.job_id, reason, "giving up on job");
    app.jobs
        .transition(
            &message.job_id,
            &[JobStatus::Queued, JobStatus::Started],
            JobStatus::Failed,
            JobUpdate {
                error: Some(reason.to_owned()),
                ..JobUpdate::default()
            },
        )
        .await?;
    Ok(())
}

/// Marks a job failed for a reason retrying cannot fix.
async fn fail(app: &App, job_id: &str, reason: String) -> Result<()> {
    tracing::warn!(job_id, reason, "job failed");
    app.jobs
        .transition(
            job_id,
            &[JobStatus::Queued, JobStatus::Started],
            JobStatus::Failed,
            JobUpdate {
                error: Some(reason),
                ..JobUpdate::default()
            },
        )
        .await?;
    Ok(())
}

/// Claims a job for this worker: `None` if there is nothing to do (finished,
/// failed, or unknown).
async fn claim(app: &App, job_id: &str) -> Result<Option<crate::domain::Job>> {
    app.jobs
        .transition(
            job_id,
            // Started too: a retry after a crash takes the job over again.
            &[JobStatus::Queued, JobStatus::Started],
            JobStatus::Started,
            JobUpdate::default(),
        )
        .await
}

/// How long a received message stays hidden while a worker is on it.
pub const VISIBILITY: std::time::Duration = std::time::Duration::from_secs(15 * 60);

/// Consumes the queue until the process stops: the in-process stand-in for
/// the SQS trigger. `idle` waits (briefly) for new messages.
pub async fn poll_loop<F, Fut>(app: App, idle: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    loop {
        let deliveries = match app.queue.receive(1, VISIBILITY).await {
            Ok(deliveries) => deliveries,
            Err(err) => {
                tracing::error!(error = %err, "cannot read the queue");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                continue;
            }
        };
        if deliveries.is_empty() {
            idle().await;
            continue;
        }
        for delivery in deliveries {
            process_delivery(&app, &delivery).await;
        }
    }
}

/// Runs one delivery to its end: acknowledged when handled (or given up),
/// made visible again after a back-off when it should be retried.
pub async fn process_delivery(app: &App, delivery: &crate::ports::Delivery) {
    let outcome = handle(app, &delivery.message).await;
    let settled = match outcome {
        Ok(()) => app.queue.ack(&delivery.receipt).await,
        Err(err) if delivery.receive_count >= MAX_RECEIVES => {
            let reason = format!("gave up after {} attempts: {err}", delivery.receive_count);
            match give_up(app, &delivery.message, &reason).await {
                Ok(()) => app.queue.ack(&delivery.receipt).await,
                Err(err) => Err(err),
            }
        }
        Err(err) => {
            tracing::warn!(job_id = %delivery.message.job_id, attempt = delivery.receive_count, error = %err, "job will be retried");
            let backoff = std::time::Duration::from_secs(1 << delivery.receive_count.min(6));
            app.queue.retry(&delivery.receipt, backoff).await
        }
    };
    if let Err(err) = settled {
        tracing::error!(job_id = %delivery.message.job_id, error = %err, "cannot settle a queue message");
    }
}
