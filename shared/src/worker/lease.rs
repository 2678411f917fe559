//! One run owns a job at a time. SQS may deliver a message twice at the same
//! moment, an S3 event may arrive twice, the stale-job sweep may queue a job
//! whose worker is only slow: every such run starts with `claim`, and only
//! the run holding the job's lease (its attempt number, renewed while it
//! works) may write the job's state. A run that finds the lease held by
//! another leaves the job to it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::domain::{now, ImportFailure, Job, JobStatus, JobUpdate, LeaseChange, When};
use crate::{App, Result};

/// A job owned by this run until it ends or the lease is lost.
pub(super) struct Lease {
    app: App,
    job_id: String,
    attempt: u32,
    lost: Arc<AtomicBool>,
    heartbeat: JoinHandle<()>,
}

/// What `claim` found.
// Returned once per delivery and taken apart at once: its size costs nothing.
#[allow(clippy::large_enum_variant)]
pub(super) enum Claim {
    /// The job is this run's now.
    Won(Lease, Job),
    /// The job is done, unknown (`None`), or owned by a live run (which has
    /// its own message and finishes it).
    Declined(Option<Job>),
}

/// Claims the job for a new run.
pub(super) async fn claim(app: &App, job_id: &str) -> Result<Claim> {
    let lease_for = app.settings.job_lease;
    let at = now();
    let until = at + chrono::Duration::from_std(lease_for).unwrap_or_default();
    let claimed = app
        .jobs
        .transition(
            job_id,
            When::Unleased(at),
            JobStatus::Started,
            JobUpdate {
                lease: Some(LeaseChange::Claim { until }),
                ..JobUpdate::default()
            },
        )
        .await?;
    let Some(job) = claimed else {
        let job = app.jobs.job(job_id).await?;
        if let Some(job) = job.as_ref().filter(|job| !job.status.is_done()) {
            tracing::info!(job_id, attempt = job.attempt, "job owned by another run");
        }
        return Ok(Claim::Declined(job));
    };
    let lost = Arc::new(AtomicBool::new(false));
    let heartbeat = tokio::spawn(heartbeat(
        app.clone(),
        job.id.clone(),
        job.attempt,
        lost.clone(),
    ));
    let lease = Lease {
        app: app.clone(),
        job_id: job.id.clone(),
        attempt: job.attempt,
        lost,
        heartbeat,
    };
    Ok(Claim::Won(lease, job))
}

/// Renews the lease a third of its length before it runs out, until the
/// run ends or someone else owns the job.
async fn heartbeat(app: App, job_id: String, attempt: u32, lost: Arc<AtomicBool>) {
    let lease_for = app.settings.job_lease;
    loop {
        tokio::time::sleep(lease_for / 3).await;
        match renew(&app, &job_id, attempt, lease_for).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(job_id, attempt, "lost the job's lease");
                lost.store(true, Ordering::SeqCst);
                return;
            }
            // A store hiccup: the next beat tries again, well within the lease.
            Err(err) => tracing::warn!(job_id, error = %err, "cannot renew the job's lease"),
        }
    }
}

async fn renew(app: &App, job_id: &str, attempt: u32, lease_for: Duration) -> Result<bool> {
    let until = now() + chrono::Duration::from_std(lease_for).unwrap_or_default();
    let renewed = app
        .jobs
        .transition(
            job_id,
            When::Leased(attempt),
            JobStatus::Started,
            JobUpdate {
                lease: Some(LeaseChange::Renew { until }),
                ..JobUpdate::default()
            },
        )
        .await?;
    Ok(renewed.is_some())
}

impl Lease {
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Whether this run still owns the job, renewing the lease: asked right
    /// before publishing anything.
    pub async fn confirm(&self) -> Result<bool> {
        if self.lost.load(Ordering::SeqCst) {
            return Ok(false);
        }
        let owned = renew(
            &self.app,
            &self.job_id,
            self.attempt,
            self.app.settings.job_lease,
        )
        .await?;
        if !owned {
            self.lost.store(true, Ordering::SeqCst);
        }
        Ok(owned)
    }

    /// Writes `update` to the owned job, durably at once (not as progress,
    /// which a store may keep back); `false` if this run no longer owns it.
    pub async fn update(&self, update: JobUpdate) -> Result<bool> {
        Ok(self.transition(JobStatus::Started, update).await?.is_some())
    }

    /// Progress of the owned job.
    pub async fn progress(&self, update: JobUpdate) -> Result<()> {
        let when = When::OwnedBy(self.attempt);
        self.app
            .jobs
            .record_progress(&self.job_id, when, update)
            .await?;
        Ok(())
    }

    /// `progress`, written by a task of its own; the caller awaits it
    /// before the job moves on.
    pub fn progress_in_background(&self, update: JobUpdate) -> JoinHandle<Result<()>> {
        let (app, job_id, attempt) = (self.app.clone(), self.job_id.clone(), self.attempt);
        tokio::spawn(async move {
            app.jobs
                .record_progress(&job_id, When::OwnedBy(attempt), update)
                .await?;
            Ok(())
        })
    }

    /// Moves the job to `to` with `update` while this run owns it; `None`
    /// if it no longer does.
    async fn transition(&self, to: JobStatus, update: JobUpdate) -> Result<Option<Job>> {
        self.app
            .jobs
            .transition(&self.job_id, When::OwnedBy(self.attempt), to, update)
            .await
    }

    /// Stops the run before its job is done and lets go of the job, with
    /// `update` saying where a later run continues; `false` if this run no
    /// longer owned it. The caller sends the message for that later run.
    pub async fn pause(&self, update: JobUpdate) -> Result<bool> {
        self.heartbeat.abort();
        Ok(self.release(update).await?.is_some())
    }

    /// Lets go of the owned job, still `started`, writing `update`.
    async fn release(&self, update: JobUpdate) -> Result<Option<Job>> {
        let update = JobUpdate {
            lease: Some(LeaseChange::Release),
            ..update
        };
        self.transition(JobStatus::Started, update).await
    }

    /// Ends the owned job `finished`; `None` if this run no longer owned it.
    /// `bytes`: the archive it wrote or read, for the job's metrics.
    pub async fn finish(&self, update: JobUpdate, bytes: Option<u64>) -> Result<Option<Job>> {
        let finished = self.transition(JobStatus::Finished, update).await?;
        if let Some(job) = &finished {
            self.app.metrics.job_ended(job, bytes);
        }
        Ok(finished)
    }

    /// Ends the owned job `failed` for a reason retrying cannot fix.
    pub async fn fail(&self, reason: String) -> Result<()> {
        self.fail_with(reason, Vec::new()).await
    }

    /// Ends the owned job `failed`, recording what failed where
    /// (`failed_relations`).
    pub async fn fail_with(&self, reason: String, failures: Vec<ImportFailure>) -> Result<()> {
        tracing::warn!(job_id = self.job_id, reason = %crate::redact::text(&reason), "job failed");
        let update = JobUpdate {
            // Shown as `import_error`: no user URL's secrets in it.
            error: Some(crate::redact::text(&reason).into_owned()),
            failures: Some(failures),
            ..JobUpdate::default()
        };
        if let Some(job) = self.transition(JobStatus::Failed, update).await? {
            self.app.metrics.job_ended(&job, None);
        }
        Ok(())
    }

    /// Ends the run with its outcome: a run that will be retried lets go of
    /// the job at once, so that the retry (or `give_up`) can take it.
    pub async fn end(self, outcome: Result<()>) -> Result<()> {
        self.heartbeat.abort();
        if outcome.is_err() {
            let released = self.release(JobUpdate::default()).await;
            if let Err(err) = released {
                // The lease runs out by itself.
                tracing::warn!(job_id = self.job_id, error = %err, "cannot release the job");
            }
        }
        outcome
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.heartbeat.abort();
    }
}
