//! Queue workers: one handler per message kind, called by the SQS Lambda and
//! by the local server's in-process loop alike. Every handler is idempotent:
//! a message delivered twice, or retried after a crash, does no harm.

mod archive_events;
mod direct_transfer;
mod export;
mod generation;
mod import;
mod lease;
pub mod leftovers;
mod pipeline;
mod project_deletion;
mod records;
mod relation_export;
mod relation_import;
pub mod sweep;

use std::time::{Duration, Instant, SystemTime};

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

/// When a run stops at its next safe point and leaves the rest of its job to
/// a fresh message: before its invocation's deadline, rather than being
/// killed there and redone from the start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Deadline(Option<Instant>);

/// Time kept back from a Lambda invocation's deadline: enough to finish
/// the write under way and record where the job stands.
const DEADLINE_MARGIN: Duration = Duration::from_secs(60);

impl Deadline {
    /// No deadline: the run goes on until its job is done.
    pub fn none() -> Self {
        Deadline(None)
    }

    /// For an invocation that ends at `ends` (a Lambda's), or never (the
    /// local server's workers), whichever comes first of that less a
    /// margin and the configured `invocation_budget` from now.
    pub fn for_invocation(app: &App, ends: Option<SystemTime>) -> Self {
        Self::within(ends, app.settings.invocation_budget)
    }

    fn within(ends: Option<SystemTime>, budget: Option<Duration>) -> Self {
        let started = Instant::now();
        let by_end = ends.map(|ends| {
            let left = ends
                .duration_since(SystemTime::now())
                .unwrap_or_default()
                .saturating_sub(DEADLINE_MARGIN);
            started + left
        });
        let by_budget = budget.map(|budget| started + budget);
        Deadline(match (by_end, by_budget) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        })
    }

    fn passed(&self) -> bool {
        self.0.is_some_and(|at| Instant::now() >= at)
    }
}

/// Handles one message. `Ok` means done (acknowledge it, whatever the job's
/// outcome; a job that continues has sent its own message); `Err` means try
/// again later.
pub async fn handle(app: &App, message: &Message, deadline: Deadline) -> Result<()> {
    let span = tracing::info_span!(
        "job",
        job_id = %message.job_id,
        kind = message.kind.as_str(),
        project_id = message.project_id
    );
    async {
        match message.kind {
            JobKind::Export => export::run(app, &message.job_id).await,
            JobKind::Import => import::run(app, &message.job_id, deadline).await,
            JobKind::RelationExport => relation_export::run(app, message).await,
            JobKind::RelationImport => relation_import::run(app, &message.job_id).await,
            JobKind::ProjectDeletion => project_deletion::run(app, message.project_id).await,
            JobKind::DirectTransferPart => {
                direct_transfer::download_part(app, message, deadline).await
            }
            JobKind::ExportSlice => export::slices::run(app, message).await,
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
    match message.kind {
        JobKind::RelationExport => return relation_export::give_up(app, message, reason).await,
        // No job to fail: the deleted project stays listed as deleted, and
        // the sweep tries again later.
        JobKind::ProjectDeletion => return Ok(()),
        _ => {}
    }
    let from = When::Unleased(crate::domain::now());
    abandon(
        app,
        &message.job_id,
        from,
        crate::redact::text(reason).into_owned(),
    )
    .await?;
    Ok(())
}

/// Fails a job from outside its runs (they died, or stalled) if `from`
/// holds, and deletes what they wrote that no one will read (as far as the
/// stores let it now). Returns the failed job.
pub async fn abandon(
    app: &App,
    job_id: &str,
    from: When,
    reason: String,
) -> Result<Option<crate::domain::Job>> {
    let update = JobUpdate {
        error: Some(reason),
        ..JobUpdate::default()
    };
    let failed = app
        .jobs
        .transition(job_id, from, JobStatus::Failed, update)
        .await?;
    if let Some(job) = &failed {
        app.metrics.job_ended(job, None);
        // The job has ended whatever happens here: a store that fails now
        // leaves the rest to a later sweep, rather than the message retried.
        if let Err(err) = generation::discard_abandoned(app, job).await {
            tracing::warn!(job_id, error = %err, "what the failed job wrote is not all deleted");
        }
    }
    Ok(failed)
}

/// How long a received message stays hidden while a worker is on it.
pub const VISIBILITY: Duration = Duration::from_secs(15 * 60);

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
                tokio::time::sleep(Duration::from_secs(1)).await;
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
    let deadline = Deadline::for_invocation(app, None);
    attempt_until(app, message, receive_count, deadline).await
}

/// `attempt`, in an invocation that ends at `deadline`.
pub async fn attempt_until(
    app: &App,
    message: &Message,
    receive_count: u32,
    deadline: Deadline,
) -> Outcome {
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
    match handle(app, message, deadline).await {
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
            let backoff = Duration::from_secs(1 << delivery.receive_count.min(6));
            app.queue.retry(&delivery.receipt, backoff).await
        }
    };
    if let Err(err) = settled {
        tracing::error!(job_id = %delivery.message.job_id, error = %err, "cannot settle a queue message");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deadline_keeps_a_margin_before_the_invocation_ends() {
        let in_secs = |s| Some(SystemTime::now() + Duration::from_secs(s));
        assert!(!Deadline::none().passed());
        assert!(!Deadline::within(None, None).passed());
        assert!(
            Deadline::within(in_secs(30), None).passed(),
            "inside the margin"
        );
        assert!(!Deadline::within(in_secs(900), None).passed());
        assert!(Deadline::within(in_secs(900), Some(Duration::ZERO)).passed());
        assert!(!Deadline::within(None, Some(Duration::from_secs(60))).passed());
        // An invocation whose end has passed already.
        let past = Some(SystemTime::now() - Duration::from_secs(5));
        assert!(Deadline::within(past, None).passed());
    }
}
