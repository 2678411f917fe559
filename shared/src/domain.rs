//! The domain: users, namespaces, projects, jobs and the messages that drive
//! workers. Knows nothing of HTTP or storage technology.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

pub type UserId = u64;
pub type ProjectId = u64;
pub type NamespaceId = u64;

pub fn now() -> DateTime<Utc> {
    Utc::now()
}

/// GitLab's timestamp shape: `2017-08-29T04:36:44.383Z`.
pub fn gitlab_time(at: &DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct User {
    pub id: UserId,
    pub username: String,
    pub name: String,
    pub is_admin: bool,
    pub created_at: DateTime<Utc>,
}

/// A namespace projects live in. Every user has one with the user's id and
/// username as path.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Namespace {
    pub id: NamespaceId,
    pub path: String,
    pub name: String,
    pub owner_id: UserId,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Token {
    pub id: u64,
    pub user_id: UserId,
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked: bool,
}

impl Token {
    pub fn is_usable(&self, at: DateTime<Utc>) -> bool {
        !self.revoked && self.expires_at.is_none_or(|expiry| at < expiry)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Project {
    pub id: ProjectId,
    pub namespace_id: NamespaceId,
    pub namespace_path: String,
    pub namespace_name: String,
    pub path: String,
    pub name: String,
    pub description: Option<String>,
    pub owner_id: UserId,
    pub created_at: DateTime<Utc>,
    /// The generation of records and blobs the project shows; `None` until a
    /// first import finished. Imports write a new generation and switch this
    /// pointer only once everything is stored, so a failed import leaves the
    /// project exactly as it was.
    pub content: Option<String>,
    /// Relations replaced by a relation import since `content` was
    /// activated: relation → the generation holding it.
    #[serde(default)]
    pub relation_content: BTreeMap<String, String>,
    /// Bumped by every switch of `content` or `relation_content`: the
    /// condition of the next switch.
    #[serde(default)]
    pub content_rev: u64,
}

impl Project {
    /// The generation a relation's records are read from.
    pub fn relation_generation(&self, relation: &str) -> Option<&str> {
        self.relation_content
            .get(relation)
            .map(String::as_str)
            .or(self.content.as_deref())
    }

    /// Every generation the project's content is spread over.
    pub fn generations(&self) -> Vec<String> {
        let mut all: Vec<String> = self.content.iter().cloned().collect();
        all.extend(self.relation_content.values().cloned());
        all
    }

    pub fn full_path(&self) -> String {
        format!("{}/{}", self.namespace_path, self.path)
    }

    pub fn name_with_namespace(&self) -> String {
        format!("{} / {}", self.namespace_name, self.name)
    }
}

/// A project deleted through the API whose content is still being deleted.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DeletedProject {
    pub project: Project,
    pub deleted_at: DateTime<Utc>,
}

/// What a new project needs before the store gives it an id.
#[derive(Debug, Clone)]
pub struct NewProject {
    pub namespace: Namespace,
    pub path: String,
    pub name: String,
    pub description: Option<String>,
    pub owner_id: UserId,
}

impl NewProject {
    /// The project as created with `id`: no content yet.
    pub fn with_id(self, id: ProjectId) -> Project {
        Project {
            id,
            namespace_id: self.namespace.id,
            namespace_path: self.namespace.path,
            namespace_name: self.namespace.name,
            path: self.path,
            name: self.name,
            description: self.description,
            owner_id: self.owner_id,
            created_at: now(),
            content: None,
            relation_content: Default::default(),
            content_rev: 0,
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    Export,
    RelationExport,
    Import,
    RelationImport,
    /// Deleting a deleted project's content: a message, never a stored job.
    ProjectDeletion,
}

impl JobKind {
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Export => "export",
            JobKind::RelationExport => "relation_export",
            JobKind::Import => "import",
            JobKind::RelationImport => "relation_import",
            JobKind::ProjectDeletion => "project_deletion",
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
            overrides: Vec::new(),
            awaiting_upload: false,
            stalls: 0,
            attempt: 0,
            lease_until: None,
            resume: None,
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
    /// Not done, and no run holds a live lease on it at this instant.
    Unleased(DateTime<Utc>),
    /// An authorized import whose upload has not landed yet.
    AwaitingUpload,
}

impl When {
    pub fn status_in(statuses: &[JobStatus]) -> When {
        When::StatusIn(StatusSet::of(statuses))
    }

    pub fn holds(&self, job: &Job) -> bool {
        match *self {
            When::StatusIn(statuses) => statuses.contains(job.status),
            When::OwnedBy(attempt) => job.status == JobStatus::Started && job.attempt == attempt,
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

/// A project's opt-in to scheduled exports (our extension of GitLab's API):
/// each tick of the schedule (EventBridge on AWS, a timer locally) exports
/// the project, and the last `keep` scheduled archives are kept.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ExportSchedule {
    pub project_id: ProjectId,
    /// A relations export instead of a full one.
    pub relations: bool,
    /// Relations exports only: batched.
    pub batched: bool,
    /// Full exports only: scheduled archives kept.
    pub keep: u32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub last_scheduled_at: Option<DateTime<Utc>>,
}

/// A unit of work on the queue: ids, never payloads.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Message {
    pub kind: JobKind,
    pub job_id: String,
    pub project_id: ProjectId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relation: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<u32>,
}

impl Message {
    /// Deletes what a deleted project left.
    pub fn project_deletion(project_id: ProjectId) -> Self {
        Message {
            kind: JobKind::ProjectDeletion,
            job_id: String::new(),
            project_id,
            relation: None,
            batch: None,
        }
    }

    pub fn for_job(job: &Job) -> Self {
        Message {
            kind: job.kind,
            job_id: job.id.clone(),
            project_id: job.project_id,
            relation: None,
            batch: None,
        }
    }
}

pub fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// GitLab's export file name: `2017-12-05_22-11-148_namespace_project_export.tar.gz`.
pub fn export_file_name(project: &Project, at: &DateTime<Utc>) -> String {
    format!(
        "{}_{}_export.tar.gz",
        at.format("%Y-%m-%d_%H-%M-%3f"),
        project.full_path().replace('/', "_")
    )
}

/// The key a username or namespace path is looked up by: GitLab treats
/// `Alice` and `alice` as one name.
pub fn name_key(name: &str) -> String {
    name.to_ascii_lowercase()
}

/// A GitLab path: letters, digits, `_`, `-` and `.`, not starting with `-`
/// or `.`, not ending in `.git` or `.atom`.
pub fn is_valid_path(path: &str) -> bool {
    !path.is_empty()
        && path.len() <= 255
        && path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        && !path.starts_with(['-', '.'])
        && !path.ends_with(".git")
        && !path.ends_with(".atom")
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn export_file_name_matches_gitlab() {
        let project = Project {
            id: 5,
            namespace_id: 1,
            namespace_path: "namespace".into(),
            namespace_name: "Namespace".into(),
            path: "project".into(),
            name: "Project".into(),
            description: None,
            owner_id: 1,
            created_at: now(),
            content: None,
            relation_content: BTreeMap::new(),
            content_rev: 0,
        };
        let at = Utc.with_ymd_and_hms(2017, 12, 5, 22, 11, 0).unwrap()
            + chrono::Duration::milliseconds(148);
        assert_eq!(
            export_file_name(&project, &at),
            "2017-12-05_22-11-148_namespace_project_export.tar.gz"
        );
    }

    #[test]
    fn paths() {
        assert!(is_valid_path("api-project"));
        assert!(is_valid_path("gitlab_test.2"));
        assert!(!is_valid_path("../x"));
        assert!(!is_valid_path("a/b"));
        assert!(!is_valid_path(""));
        assert!(!is_valid_path("x.git"));
    }
}
