//! Queue workers: one handler per message kind, called by the SQS Lambda and
//! by the local server's in-process loop alike. Every handler is idempotent:
//! a message delivered twice, or retried after a crash, does no harm.

mod archive_events;
mod export;
mod generation;
mod import;
mod lease;
mod pipeline;
mod relation_export;
mod relation_import;

use tracing::Instrument;

use crate::domain::{JobKind, JobStatus, JobUpdate, Message, When};
use crate::{App, Result};

/// Attempts at one message before it is given up. The queue delivers it
/// once more after that (its dead-letter rule is `MAX_RECEIVES + 1`), so
/// that a message whose every attempt crashed the worker still fails its
/// job, without running it again.
pub const MAX_RECEIVES: u32 = 5;

/// Long work records its progress each time it passes a multiple of this
/// many records: often enough to watch, and each record is a store write
/// (a durable commit, or a billed DynamoDB request).
const PROGRESS_EVERY_RECORDS: u64 = 10_000;

/// Whether going from `before` to `now` records passed a progress mark.
fn progress_due(before: u64, now: u64) -> bool {
    before / PROGRESS_EVERY_RECORDS != now / PROGRESS_EVERY_RECORDS
}

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
            JobKind::RelationExport => relation_export::run(app, message).await,
            JobKind::RelationImport => relation_import::run(app, &message.job_id).await,
        }
    }
    .instrument(span)
    .await
}

/// A message failed too often: its job (or relation export part) ends
/// `failed` with the last error, so nothing stays `started` forever. A job
/// another run owns meanwhile is left to it.
pub async fn give_up(app: &App, message: &Message, reason: &str) -> Result<()> {
    tracing::error!(job_id = %message.job_id, reason = %crate::redact::text(reason), "giving up on job");
    if message.kind == JobKind::RelationExport {
        return relation_export::give_up(app, message, reason).await;
    }
    app.jobs
        .transition(
            &message.job_id,
            When::Unleased(crate::domain::now()),
            JobStatus::Failed,
            JobUpdate {
                error: Some(crate::redact::text(reason).into_owned()),
                ..JobUpdate::default()
            },
        )
        .await?;
    Ok(())
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

/// What to do with a message after one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Handled, or given up for good: remove it from the queue.
    Done,
    /// Deliver it again later.
    Retry,
}

/// One attempt at a message, deciding between done and retry. After
/// `MAX_RECEIVES` deliveries the job is failed with the last error.
pub async fn attempt(app: &App, message: &Message, receive_count: u32) -> Outcome {
    if receive_count > MAX_RECEIVES {
        // Every earlier delivery ended without a word: the worker died on it
        // (out of memory, killed). Running it again would only crash again.
        let reason = format!(
            "gave up after {} attempts: the worker stopped during each of them",
            receive_count - 1
        );
        return match give_up(app, message, &reason).await {
            Ok(()) => Outcome::Done,
            Err(_) => Outcome::Retry,
        };
    }
    match handle(app, message).await {
        Ok(()) => Outcome::Done,
        Err(err) if receive_count >= MAX_RECEIVES => {
            let reason = format!("gave up after {receive_count} attempts: {err}");
            match give_up(app, message, &reason).await {
                Ok(()) => Outcome::Done,
                Err(_) => Outcome::Retry,
            }
        }
        Err(err) => {
            tracing::warn!(job_id = %message.job_id, attempt = receive_count, error = %crate::redact::text(&err.to_string()), "job will be retried");
            Outcome::Retry
        }
    }
}

/// Runs one delivery of the in-process queue and settles it.
pub async fn process_delivery(app: &App, delivery: &crate::ports::Delivery) {
    let settled = match attempt(app, &delivery.message, delivery.receive_count).await {
        Outcome::Done => app.queue.ack(&delivery.receipt).await,
        Outcome::Retry => {
            let backoff = std::time::Duration::from_secs(1 << delivery.receive_count.min(6));
            app.queue.retry(&delivery.receipt, backoff).await
        }
    };
    if let Err(err) = settled {
        tracing::error!(job_id = %delivery.message.job_id, error = %err, "cannot settle a queue message");
    }
}
