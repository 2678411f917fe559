//! The storage ports. Each has an embedded adapter (`embedded`) and an AWS
//! adapter; services and workers only ever see these traits.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;

use crate::domain::{
    BulkImport, DeletedProject, ExportSchedule, Job, JobKind, JobStatus, JobUpdate, Message,
    Namespace, NamespaceId, NewProject, Project, ProjectId, RelationExportPart, Token, User,
    UserId, When,
};
use crate::error::Result;
use crate::stream::{BlockingReader, BorrowedStream, ByteStream};

/// Users, their namespaces and their tokens (stored as hashes only).
#[async_trait]
pub trait UserStore: Send + Sync {
    /// Creates the user and the user's namespace; `Conflict` if the username is taken.
    async fn create_user(&self, username: &str, name: &str, is_admin: bool) -> Result<User>;
    async fn user(&self, id: UserId) -> Result<Option<User>>;
    async fn user_by_username(&self, username: &str) -> Result<Option<User>>;
    async fn add_token(
        &self,
        user_id: UserId,
        name: &str,
        token_hash: [u8; 32],
        expires_at: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Result<Token>;
    async fn token_by_hash(&self, token_hash: [u8; 32]) -> Result<Option<Token>>;
    async fn token(&self, id: u64) -> Result<Option<Token>>;
    /// Marks the token revoked; false if there is no such token.
    async fn revoke_token(&self, id: u64) -> Result<bool>;
    async fn namespace(&self, id: NamespaceId) -> Result<Option<Namespace>>;
    async fn namespace_by_path(&self, path: &str) -> Result<Option<Namespace>>;
    /// Counts one use of `action` by the user in the fixed window starting
    /// at `window_start` (unix seconds), unless `limit` uses were counted
    /// already: then returns false and counts nothing.
    async fn take_rate_slot(
        &self,
        user_id: UserId,
        action: &str,
        window_start: i64,
        limit: u32,
    ) -> Result<bool>;
}

/// Size of one stored relation of a content generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelationStats {
    pub relation: String,
    pub records: u64,
    /// Bytes of its NDJSON file: every record plus one newline each.
    pub ndjson_bytes: u64,
}

/// One stored record: its position in the relation and its exact JSON text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    pub seq: u64,
    pub json: Bytes,
}

/// One content generation: a name no other generation has, and the project
/// it belongs to (stores group a project's content under it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GenerationRef<'a> {
    pub project_id: ProjectId,
    pub name: &'a str,
}

impl<'a> GenerationRef<'a> {
    pub fn new(project_id: ProjectId, name: &'a str) -> Self {
        GenerationRef { project_id, name }
    }
}

/// Which records of a relation to read, and how many per page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRange {
    pub first: u64,
    pub count: u64,
    pub page_records: usize,
}

/// Pages of records in order; each page holds at least one record.
pub type RecordStream<'a> = BoxStream<'a, Result<Vec<StoredRecord>>>;

/// How many records a writer gathers into one `put_records`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchSize {
    pub records: usize,
    pub bytes: usize,
}

/// A relation's records, a page at a time in order: `next` gives the next
/// page, or `None` at the end.
pub struct RecordPages<'a> {
    content: &'a dyn ContentStore,
    at: GenerationRef<'a>,
    relation: &'a str,
    range: RecordRange,
    pages: Option<RecordStream<'a>>,
}

impl<'a> RecordPages<'a> {
    pub fn new(
        content: &'a dyn ContentStore,
        at: GenerationRef<'a>,
        relation: &'a str,
        page_records: usize,
    ) -> Self {
        RecordPages {
            content,
            at,
            relation,
            range: RecordRange {
                first: 0,
                count: u64::MAX,
                page_records: page_records.max(1),
            },
            pages: None,
        }
    }

    /// Only the `count` records from seq `first` on: one batch of a relation.
    pub fn within(mut self, first: u64, count: u64) -> Self {
        self.range.first = first;
        self.range.count = count;
        self
    }

    pub async fn next(&mut self) -> Result<Option<Vec<StoredRecord>>> {
        if self.range.count == 0 {
            return Ok(None);
        }
        let pages = self.pages.get_or_insert_with(|| {
            self.content
                .read_records(self.at, self.relation, self.range)
        });
        pages.next().await.transpose()
    }
}

/// Content of generations: project attributes and relation records. A
/// generation is written once, read by many, and deleted whole.
#[async_trait]
pub trait ContentStore: Send + Sync {
    /// The batches `put_records` is best given.
    fn batch_size(&self) -> BatchSize;
    async fn put_attributes(&self, at: GenerationRef<'_>, attributes: Bytes) -> Result<()>;
    async fn attributes(&self, at: GenerationRef<'_>) -> Result<Option<Bytes>>;
    /// Makes `writer` the generation's one writer from now on, and cuts each
    /// relation back to its first `keep` records (a relation not in `keep`
    /// to none): what an earlier writer left past the point its successor
    /// continues from. `false` if a later writer (a higher number) owns it.
    async fn claim_generation(
        &self,
        at: GenerationRef<'_>,
        writer: u32,
        keep: &BTreeMap<String, u64>,
    ) -> Result<bool>;
    /// Appends records at `first_seq..`; writing the same batch twice is
    /// harmless. Refused (`Error::Conflict`) unless `writer` owns the
    /// generation: a run that lost its job cannot write into its successor's.
    async fn put_records(
        &self,
        at: GenerationRef<'_>,
        writer: u32,
        relation: &str,
        first_seq: u64,
        records: Vec<Bytes>,
    ) -> Result<()>;
    /// The relations with records, by name.
    async fn relations(&self, at: GenerationRef<'_>) -> Result<Vec<RelationStats>>;
    /// The records of `range` in order, in pages of at most
    /// `range.page_records` (fewer if the store bounds a page's bytes);
    /// it ends early at the relation's end.
    fn read_records<'a>(
        &'a self,
        at: GenerationRef<'a>,
        relation: &'a str,
        range: RecordRange,
    ) -> RecordStream<'a>;
    async fn delete_content(&self, at: GenerationRef<'_>) -> Result<()>;
    /// Every generation the store holds anything of, for the leftovers
    /// sweep.
    async fn stored_generations(&self) -> Result<Vec<StoredGeneration>>;
}

/// A generation found in the content store.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct StoredGeneration {
    /// Where the store's layout names it (S3's does; the embedded database
    /// keys records by generation alone, whose names are unique).
    pub project_id: Option<ProjectId>,
    pub name: String,
}

/// Projects, which generations of content they show (see `Project::content`),
/// and their export schedules.
#[async_trait]
pub trait ProjectStore: Send + Sync {
    /// Assigns the id; `Conflict` if the path is taken in the namespace.
    async fn create_project(&self, new: NewProject) -> Result<Project>;
    async fn project(&self, id: ProjectId) -> Result<Option<Project>>;
    async fn project_by_full_path(&self, full_path: &str) -> Result<Option<Project>>;
    /// Projects in id order, all or one owner's: one page (`offset`,
    /// `limit`) and the total count.
    async fn list_projects(
        &self,
        owner: Option<UserId>,
        offset: usize,
        limit: usize,
    ) -> Result<(Vec<Project>, u64)>;
    /// Switches the project's content (`content`, `relation_content`) and
    /// import metadata (name, description) to those of `updated`, only if
    /// its `content_rev` is still `updated.content_rev`; bumps the rev.
    /// Returns false if someone else switched it meanwhile.
    async fn switch_content(&self, updated: &Project) -> Result<bool>;

    /// Scheduled exports: a project's opt-in, replaced whole.
    async fn put_export_schedule(&self, schedule: &ExportSchedule) -> Result<()>;
    async fn export_schedule(&self, project_id: ProjectId) -> Result<Option<ExportSchedule>>;
    /// Returns whether there was one.
    async fn delete_export_schedule(&self, project_id: ProjectId) -> Result<bool>;
    /// Every opt-in, in project order.
    async fn export_schedules(&self) -> Result<Vec<ExportSchedule>>;

    /// Deletes the project at once (its id, path and listings answer
    /// nothing from now on; its path is free; its export schedule goes) and
    /// keeps it as deleted until `forget_deleted_project`: the list of what
    /// its content is for the deletion that follows. Returns it, or `None`
    /// if there was no such project.
    async fn delete_project(&self, id: ProjectId) -> Result<Option<Project>>;
    /// A deleted project whose content is not yet all gone.
    async fn deleted_project(&self, id: ProjectId) -> Result<Option<DeletedProject>>;
    /// Deleted projects whose content is not yet all gone, oldest first, at
    /// most `limit`.
    async fn deleted_projects(&self, limit: usize) -> Result<Vec<DeletedProject>>;
    /// The deletion is complete.
    async fn forget_deleted_project(&self, id: ProjectId) -> Result<()>;
}

/// Export and import jobs. Status changes are conditional so that two workers
/// cannot both claim a job and a finished job never goes back.
#[async_trait]
pub trait JobStore: Send + Sync {
    async fn create_job(&self, job: &Job) -> Result<()>;
    async fn job(&self, id: &str) -> Result<Option<Job>>;
    /// Moves the job to `to` if `when` holds; `None` if it did not.
    async fn transition(
        &self,
        id: &str,
        when: When,
        to: JobStatus,
        update: JobUpdate,
    ) -> Result<Option<Job>>;
    /// Progress of a started job (records processed so far, counts) if
    /// `when` holds; `false` if it did not. Progress is for watching, not
    /// for recovering: a store may make it durable only with its next
    /// state change, so that frequent progress never waits on the disk.
    async fn record_progress(&self, id: &str, when: When, progress: JobUpdate) -> Result<bool> {
        let written = self
            .transition(id, when, JobStatus::Started, progress)
            .await?;
        Ok(written.is_some())
    }
    /// The project's jobs of a kind, newest first: at most `limit` after
    /// the newest `skip`.
    async fn project_jobs(
        &self,
        project_id: ProjectId,
        kind: JobKind,
        skip: usize,
        limit: usize,
    ) -> Result<Vec<Job>>;
    /// Queued or started jobs last updated before `updated_before`, at most
    /// `limit`: candidates for the stale-job sweep.
    async fn stale_jobs(
        &self,
        updated_before: chrono::DateTime<chrono::Utc>,
        limit: usize,
    ) -> Result<Vec<Job>>;
    /// Every job of the project, of every kind.
    async fn all_project_jobs(&self, project_id: ProjectId) -> Result<Vec<Job>>;
    /// Deletes every job of the project and its relations export parts.
    async fn delete_project_jobs(&self, project_id: ProjectId) -> Result<()>;
    /// Deletes these jobs and their places in the project's history; the
    /// caller never names one a pointer (`latest_job`, `latest_finished_job`)
    /// points at.
    async fn forget_jobs(&self, jobs: &[Job]) -> Result<()>;
    /// The next number of a sequence (1, 2, ...): ids GitLab shows as integers.
    async fn next_number(&self, sequence: &str) -> Result<u64>;
    /// The newest job of a kind for a project.
    async fn latest_job(&self, project_id: ProjectId, kind: JobKind) -> Result<Option<Job>>;
    /// The newest finished job of a kind for a project.
    async fn latest_finished_job(
        &self,
        project_id: ProjectId,
        kind: JobKind,
    ) -> Result<Option<Job>>;

    /// Stores a migration by direct transfer, whole: when it is created,
    /// and again when it is canceled (nothing else changes it).
    async fn put_bulk_import(&self, import: &BulkImport) -> Result<()>;
    /// One of the user's migrations.
    async fn bulk_import(&self, user_id: UserId, id: u64) -> Result<Option<BulkImport>>;
    /// The user's migrations, oldest first.
    async fn bulk_imports(&self, user_id: UserId) -> Result<Vec<BulkImport>>;

    /// Starts a new relations export run: `parts` replace every part the
    /// project had.
    async fn replace_relation_export(
        &self,
        project_id: ProjectId,
        parts: Vec<RelationExportPart>,
    ) -> Result<()>;
    /// The parts of the project's latest relations export, ordered by
    /// relation, the relation's own part before its batches.
    async fn relation_export_parts(&self, project_id: ProjectId)
        -> Result<Vec<RelationExportPart>>;
    /// Up to `limit` parts of the project's latest relations export, in the
    /// same order, from the part of `relation` and `batch` on.
    async fn relation_export_parts_from(
        &self,
        project_id: ProjectId,
        relation: &str,
        batch: Option<u32>,
        limit: usize,
    ) -> Result<Vec<RelationExportPart>>;
    /// Moves one part to `to` if it still belongs to `run_id` and its status
    /// is one of `from`; `None` otherwise. `processed` sets `exported`.
    #[allow(clippy::too_many_arguments)]
    async fn transition_relation_export_part(
        &self,
        project_id: ProjectId,
        relation: &str,
        batch: Option<u32>,
        run_id: &str,
        from: &[JobStatus],
        to: JobStatus,
        update: JobUpdate,
    ) -> Result<Option<RelationExportPart>>;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobInfo {
    pub key: String,
    pub size: u64,
    /// When it was written, where the store says.
    pub modified: Option<chrono::DateTime<chrono::Utc>>,
}

pub use crate::domain::StoredPart;

/// The highest part number (S3's).
pub const MAX_PART_NUMBER: u32 = 10_000;

/// Archives, uploads and imported blobs.
#[async_trait]
pub trait BlobStore: Send + Sync {
    /// Stores the whole stream under `key`; the blob becomes visible only once
    /// complete. Returns its size.
    async fn put(&self, key: &str, body: BorrowedStream<'_>) -> Result<u64>;
    /// `404 File Not Found` if there is no such blob.
    async fn get(&self, key: &str) -> Result<ByteStream>;
    /// The blob for a blocking thread (an archive's reader); `404` as `get`.
    async fn reader(&self, key: &str) -> Result<BlockingReader> {
        Ok(Box::new(crate::stream::blocking_reader(
            self.get(key).await?,
        )))
    }
    /// `length` bytes of the blob from byte `offset` on (a ranged read):
    /// one slice's piece of a blob bigger than a slice.
    async fn get_range(&self, key: &str, offset: u64, length: u64) -> Result<ByteStream>;
    /// The blob from byte `offset` on (a ranged read), for a blocking
    /// thread: an import that goes on where an earlier run stopped.
    async fn reader_from(&self, key: &str, offset: u64) -> Result<BlockingReader>;
    async fn list(&self, prefix: &str) -> Result<Vec<BlobInfo>>;
    /// The names of the folders right under `prefix` (which ends in `/`):
    /// `a` and `b` for `x/a/1` and `x/b/c/2` under `x/`.
    async fn folders(&self, prefix: &str) -> Result<Vec<String>>;
    async fn delete_prefix(&self, prefix: &str) -> Result<()>;
    /// A short-lived URL a client can GET the blob from, served as `file_name`.
    async fn download_url(&self, key: &str, file_name: &str, ttl: Duration) -> Result<String>;
    /// A short-lived URL a client can PUT the blob to (a presigned upload).
    async fn upload_url(&self, key: &str, ttl: Duration) -> Result<String>;

    /// Starts a blob written in numbered parts, by any number of workers:
    /// nothing is at `key` until `complete_parts`. Returns the upload's id.
    async fn start_parts(&self, key: &str) -> Result<String>;
    /// Stores part `number` (1 to `MAX_PART_NUMBER`) of the upload; the same
    /// part stored again replaces itself.
    async fn put_part(
        &self,
        key: &str,
        upload: &str,
        number: u32,
        body: BorrowedStream<'_>,
    ) -> Result<StoredPart>;
    /// Joins `parts`, in order, into the blob at `key`; returns its size.
    /// Completing an upload completed before is no error.
    async fn complete_parts(&self, key: &str, upload: &str, parts: &[StoredPart]) -> Result<u64>;
    /// Drops the upload and its parts.
    async fn abort_parts(&self, key: &str, upload: &str) -> Result<()>;
    /// Drops every upload in parts nothing has added to since `before` (its
    /// run died mid-upload); how many. S3's are the bucket's lifecycle
    /// rule's to abort, a day after they began.
    async fn drop_stale_parts(&self, _before: chrono::DateTime<chrono::Utc>) -> Result<usize> {
        Ok(0)
    }
    /// The least size of every part but the last (S3's 5 MiB).
    fn min_part_bytes(&self) -> u64;
}

/// Stores `value` as a small JSON blob: a plan, a checkpoint, what a step
/// wrote, kept beside the blobs it describes.
pub async fn put_json(
    blobs: &dyn BlobStore,
    key: &str,
    value: &(impl serde::Serialize + ?Sized),
) -> Result<()> {
    let json = serde_json::to_vec(value).map_err(crate::Error::internal)?;
    blobs
        .put(key, crate::stream::from_bytes(Bytes::from(json)))
        .await?;
    Ok(())
}

/// A JSON blob `put_json` stored; `404` if there is none.
pub async fn get_json<T: serde::de::DeserializeOwned>(
    blobs: &dyn BlobStore,
    key: &str,
) -> Result<T> {
    let json = crate::stream::collect(blobs.get(key).await?).await?;
    serde_json::from_slice(&json).map_err(crate::Error::storage)
}

/// A received message and the handle to acknowledge it.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub message: Message,
    pub receipt: String,
    /// 1 on first delivery.
    pub receive_count: u32,
}

/// The work queue. At-least-once: a message may arrive twice.
#[async_trait]
pub trait Queue: Send + Sync {
    async fn send(&self, messages: &[Message]) -> Result<()>;
    /// Sends messages delivered only after `delay` (at most 15 minutes,
    /// SQS's longest).
    async fn send_later(&self, messages: &[Message], delay: Duration) -> Result<()>;
    /// Up to `max` messages, hidden from other consumers for `visibility`.
    async fn receive(&self, max: usize, visibility: Duration) -> Result<Vec<Delivery>>;
    async fn ack(&self, receipt: &str) -> Result<()>;
    /// Makes the message visible again after `delay`.
    async fn retry(&self, receipt: &str, delay: Duration) -> Result<()>;
}
