//! Jobs: what the workers do (exports, imports, relation exports and
//! imports), their states and the conditional transitions between them,
//! and the parts of a relations export.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::*;

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    Export,
    RelationExport,
    Import,
    RelationImport,
    /// Deleting a deleted project's content: a message, never a stored job.
    ProjectDeletion,
    /// Downloading one file of a migration's source (`job_id` names the
    /// entity's import job): a message, never a stored job.
    DirectTransferPart,
    /// Writing one slice of a big export's archive (`job_id` names the
    /// export job, `batch` the slice): a message, never a stored job.
    ExportSlice,
}

impl JobKind {
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Export => "export",
            JobKind::RelationExport => "relation_export",
            JobKind::Import => "import",
            JobKind::RelationImport => "relation_import",
            JobKind::ProjectDeletion => "project_deletion",
            JobKind::DirectTransferPart => "direct_transfer_part",
            JobKind::ExportSlice => "export_slice",
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Queued,
    Started,
    Finished,
    Failed,
}

impl JobStatus {
    pub fn is_done(self) -> bool {
        matches!(self, JobStatus::Finished | JobStatus::Failed)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Job {
    pub id: String,
    pub kind: JobKind,
    pub project_id: ProjectId,
    pub user_id: UserId,
    pub status: JobStatus,
    pub error: Option<String>,
    /// Export: the description that overrides the project's in the archive.
    pub description: Option<String>,
    /// Export: where the finished archive is; import: where the uploaded one is.
    pub archive_key: Option<String>,
    /// Export: the file name GitLab would give the archive.
    pub file_name: Option<String>,
    /// Records processed so far: progress of long work.
    pub processed: u64,
    /// Relation import: the relation, and the job's number GitLab shows as `id`.
    #[serde(default)]
    pub relation: Option<String>,
    #[serde(default)]
    pub number: u64,
    /// Imports: live counts per relation.
    #[serde(default)]
    pub relation_counts: BTreeMap<String, RelationCounts>,
    /// Imports: what failed, as GitLab's `failed_relations`.
    #[serde(default)]
    pub failures: Vec<ImportFailure>,
    /// Export: started by the export schedule rather than a user.
    #[serde(default)]
    pub scheduled: bool,
    /// Export: where the finished archive is also sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload: Option<UploadTarget>,
    /// Import: the URL the archive is fetched from (a remote import).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_url: Option<String>,
    /// Import: a migration's entity, pulled from another instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bulk: Option<BulkSource>,
    /// Import: project attributes (and their JSON text) that replace the
    /// archive's, from `override_params`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub overrides: Vec<(String, String)>,
    /// Import: waiting for the client's upload to a presigned URL.
    #[serde(default)]
    pub awaiting_upload: bool,
    /// Times the stale-job sweep found the job without progress and queued
    /// it again (its message was lost).
    #[serde(default)]
    pub stalls: u32,
    /// Runs that claimed the job so far: the current run's number is its
    /// claim, and every write of the run is conditional on it.
    #[serde(default)]
    pub attempt: u32,
    /// Until when the run `attempt` owns the job (renewed while it works);
    /// `None` when no run holds it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_until: Option<DateTime<Utc>>,
    /// Import: where a run that stopped before its invocation's deadline
    /// left off; the next run continues from there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume: Option<ImportResume>,
    /// Import: how far its runs got through the archive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive_progress: Option<ArchiveProgress>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Where a finished export is also sent (GitLab's `upload[...]` parameters).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct UploadTarget {
    pub url: String,
    /// `PUT` or `POST`.
    pub method: String,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

/// Records of one relation an import has read, stored and skipped (already
/// present).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct RelationCounts {
    pub read: u64,
    pub stored: u64,
    pub skipped: u64,
}

/// One entry of GitLab's `failed_relations`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ImportFailure {
    pub id: u64,
    pub created_at: DateTime<Utc>,
    pub exception_class: String,
    pub exception_message: String,
    pub source: String,
    pub relation_name: String,
    pub line_number: u64,
}

impl Job {
    pub fn new(kind: JobKind, project_id: ProjectId, user_id: UserId) -> Self {
        let at = now();
        Job {
            id: new_id(),
            kind,
            project_id,
            user_id,
            status: JobStatus::Queued,
            error: None,
            description: None,
            archive_key: None,
            file_name: None,
            processed: 0,
            relation: None,
            number: 0,
            relation_counts: BTreeMap::new(),
            failures: Vec::new(),
            scheduled: false,
            upload: None,
            source_url: None,
            bulk: None,
            overrides: Vec::new(),
            awaiting_upload: false,
            stalls: 0,
            attempt: 0,
            lease_until: None,
            resume: None,
            archive_progress: None,
            created_at: at,
            updated_at: at,
        }
    }
}

/// What a status transition writes besides the status itself.
#[derive(Debug, Clone, Default)]
pub struct JobUpdate {
    pub error: Option<String>,
    pub archive_key: Option<String>,
    pub file_name: Option<String>,
    pub processed: Option<u64>,
    pub relation_counts: Option<BTreeMap<String, RelationCounts>>,
    pub failures: Option<Vec<ImportFailure>>,
    pub stalls: Option<u32>,
    pub lease: Option<LeaseChange>,
    /// Import: the upload arrived (its URL is spent).
    pub upload_landed: bool,
    /// Import: the run stops here and a later run continues.
    pub resume: Option<ImportResume>,
    pub archive_progress: Option<ArchiveProgress>,
    /// Migration: the source's export planned.
    pub bulk_plan: Option<BulkPlan>,
}

/// A migration's source export, planned.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BulkPlan {
    pub source_project_id: u64,
    /// Files (relations and batches) to download, one message each.
    pub parts: u32,
    /// What the source holds that no file brings (see `BulkSource`).
    pub not_migrated: Vec<String>,
}

/// How far an import got in the invocations before: everything before it is
/// durable in `generation`, which the continuing run goes on writing.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct ImportResume {
    pub generation: String,
    /// Per relation: its first records, stored.
    pub records: BTreeMap<String, u64>,
    /// The archive's first files (uploads, LFS objects…), stored.
    pub files: u64,
    /// Invocations that worked on the import so far.
    pub invocations: u32,
    /// Where the archive's reader stopped: the key of a blob beside the
    /// upload (with its 32 KiB window and the paths seen, it may not fit
    /// the job's item). None: the next run reads from the archive's start
    /// and skips what `records` and `files` count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reader: Option<String>,
    /// Archive bytes read and bytes inflated by the runs so far.
    #[serde(default)]
    pub archive_read: u64,
    #[serde(default)]
    pub inflated: u64,
    /// The blob of the archive the last run stopped inside, stored in parts
    /// so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blob: Option<BlobInParts>,
}

/// A blob written in parts across runs: where it goes, the store's upload,
/// and the parts stored so far (kept in the run's checkpoint beside the
/// upload, not in the job).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BlobInParts {
    pub key: String,
    pub upload: String,
    #[serde(default, skip)]
    pub parts: Vec<StoredPart>,
}

/// One stored part of a blob written in parts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredPart {
    pub number: u32,
    pub size: u64,
    /// What the store needs to join it (S3's ETag).
    pub receipt: String,
}

/// How far an import's runs got through its archive: what the status API
/// shows of a long import, with an estimate of the time left.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct ArchiveProgress {
    /// The archive's size, when known.
    pub archive_bytes: Option<u64>,
    /// The archive's bytes read so far (its offset, compressed).
    pub read: u64,
    /// Bytes inflated by every run so far: the archive's uncompressed size
    /// once done, and what runs that stopped read ahead and threw away.
    pub inflated: u64,
    /// Runs (invocations) that worked on it, this one included.
    pub invocations: u32,
}

impl ImportResume {
    pub fn total_records(&self) -> u64 {
        self.records.values().sum()
    }
}

/// How a transition changes who owns a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseChange {
    /// A new run takes the job: the next attempt, owned until `until`.
    Claim { until: DateTime<Utc> },
    /// The owning run is still at work.
    Renew { until: DateTime<Utc> },
    /// The owning run stopped; anyone may claim the job again.
    Release,
}

/// The state a job must be in for a transition to apply. Checked inside
/// the store's conditional write, so two writers never both pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// Its status is one of a set, whoever runs it.
    StatusIn(StatusSet),
    /// Started and still owned by the run that claimed it as this attempt.
    OwnedBy(u32),
    /// `OwnedBy`, with its lease not let go: a renewal sent before the run
    /// paused and landing after it must not take the job back.
    Leased(u32),
    /// Not done, and no run holds a live lease on it at this instant.
    Unleased(DateTime<Utc>),
    /// An authorized import whose upload has not landed yet.
    AwaitingUpload,
}

impl When {
    pub fn status_in(statuses: &[JobStatus]) -> When {
        When::StatusIn(StatusSet::of(statuses))
    }

    /// Started, whichever run holds it.
    pub fn started() -> When {
        When::status_in(&[JobStatus::Started])
    }

    pub fn holds(&self, job: &Job) -> bool {
        match *self {
            When::StatusIn(statuses) => statuses.contains(job.status),
            When::OwnedBy(attempt) => job.status == JobStatus::Started && job.attempt == attempt,
            When::Leased(attempt) => When::OwnedBy(attempt).holds(job) && job.lease_until.is_some(),
            When::Unleased(at) => {
                !job.status.is_done() && job.lease_until.is_none_or(|until| until <= at)
            }
            When::AwaitingUpload => job.status == JobStatus::Queued && job.awaiting_upload,
        }
    }
}

/// A set of job statuses (a bit each).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusSet(u8);

impl StatusSet {
    pub fn of(statuses: &[JobStatus]) -> StatusSet {
        StatusSet(statuses.iter().fold(0, |bits, &s| bits | Self::bit(s)))
    }

    pub fn contains(self, status: JobStatus) -> bool {
        self.0 & Self::bit(status) != 0
    }

    fn bit(status: JobStatus) -> u8 {
        1 << status as u8
    }
}

impl Job {
    /// The one way a job changes, whatever stores it.
    pub fn apply(&mut self, to: JobStatus, update: JobUpdate) {
        self.status = to;
        self.updated_at = now();
        if update.error.is_some() {
            self.error = update.error;
        }
        if update.archive_key.is_some() {
            self.archive_key = update.archive_key;
        }
        if update.file_name.is_some() {
            self.file_name = update.file_name;
        }
        if let Some(processed) = update.processed {
            self.processed = processed;
        }
        if let Some(counts) = update.relation_counts {
            self.relation_counts = counts;
        }
        if let Some(failures) = update.failures {
            self.failures = failures;
        }
        if let Some(stalls) = update.stalls {
            self.stalls = stalls;
        }
        if update.resume.is_some() {
            self.resume = update.resume;
        }
        if update.archive_progress.is_some() {
            self.archive_progress = update.archive_progress;
        }
        match update.lease {
            Some(LeaseChange::Claim { until }) => {
                self.attempt += 1;
                self.lease_until = Some(until);
            }
            Some(LeaseChange::Renew { until }) => self.lease_until = Some(until),
            Some(LeaseChange::Release) => self.lease_until = None,
            None => {}
        }
        if self.status.is_done() {
            self.lease_until = None;
            // A remote import's URL may carry a credential (a presigned S3
            // URL does): kept only while it may still be fetched.
            self.source_url = None;
            if let Some(bulk) = &mut self.bulk {
                bulk.token = None;
            }
        }
        if let (Some(plan), Some(bulk)) = (update.bulk_plan, &mut self.bulk) {
            bulk.source_project_id = Some(plan.source_project_id);
            bulk.parts = Some(plan.parts);
            bulk.not_migrated = plan.not_migrated;
        }
        if update.upload_landed {
            self.awaiting_upload = false;
        }
    }

    /// The content generation this job's run `attempt` writes: each run its
    /// own, so that two runs of one job never write into, or discard, each
    /// other's records.
    pub fn generation(&self, attempt: u32) -> String {
        format!("{}.{attempt}", self.id)
    }

    /// Whether `generation` was written by a run of this job (including the
    /// single per-job generation of earlier versions).
    pub fn wrote_generation(&self, generation: &str) -> bool {
        generation
            .strip_prefix(self.id.as_str())
            .is_some_and(|rest| {
                rest.is_empty()
                    || rest
                        .strip_prefix('.')
                        .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
            })
    }
}

/// One file of a relations export: a whole relation, or one batch of a
/// batched relation. A batched relation has a row of its own (`batch: None`)
/// that carries the totals; its status is derived from its batches.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RelationExportPart {
    pub project_id: ProjectId,
    pub relation: String,
    /// 1-based batch number; `None` for the relation itself.
    pub batch: Option<u32>,
    /// The export run; a new run replaces every part of the project.
    pub run_id: String,
    /// The project content the run reads, fixed when it was scheduled.
    pub content: Option<String>,
    pub status: JobStatus,
    pub error: Option<String>,
    pub batched: bool,
    pub batches_count: u32,
    /// Records (or files) this part holds.
    pub objects_count: u64,
    /// Position of the part's first record in the relation.
    #[serde(default)]
    pub first_seq: u64,
    /// Records (or files) written so far.
    pub exported: u64,
    pub archive_key: Option<String>,
    pub updated_at: DateTime<Utc>,
}

impl RelationExportPart {
    /// Whether a transition from `from` by a worker of `run_id` applies.
    pub fn may_move(&self, run_id: &str, from: &[JobStatus]) -> bool {
        self.run_id == run_id && from.contains(&self.status)
    }

    /// The one way a part changes, whatever stores it.
    pub fn apply(&mut self, to: JobStatus, update: JobUpdate) {
        self.status = to;
        self.updated_at = now();
        if update.error.is_some() {
            self.error = update.error;
        }
        if update.archive_key.is_some() {
            self.archive_key = update.archive_key;
        }
        if let Some(exported) = update.processed {
            self.exported = exported;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run pauses (lets go of its lease, still `started`) while its last
    /// renewal is in flight: landing after the pause, the renewal finds the
    /// lease let go and must not take the job back from the next run.
    #[test]
    fn a_renewal_after_a_pause_does_not_take_the_job_back() {
        let mut job = Job::new(JobKind::Import, 1, 1);
        let until = now() + chrono::Duration::seconds(60);
        job.apply(
            JobStatus::Started,
            JobUpdate {
                lease: Some(LeaseChange::Claim { until }),
                ..JobUpdate::default()
            },
        );
        let attempt = job.attempt;
        assert!(When::Leased(attempt).holds(&job));
        job.apply(
            JobStatus::Started,
            JobUpdate {
                lease: Some(LeaseChange::Release),
                ..JobUpdate::default()
            },
        );
        assert!(When::OwnedBy(attempt).holds(&job));
        assert!(!When::Leased(attempt).holds(&job));
        assert!(When::Unleased(now()).holds(&job));
    }
}
