//! Imports an uploaded archive into a new content generation of the project,
//! then switches the project to it in one conditional write. Until then the
//! project shows what it had before; on failure the generation is deleted.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::archive_events::{ArchiveEvents, Reading};
use super::direct_transfer;
use super::generation;
use super::lease::{claim, Claim, Lease};
use super::records::{failures_of, stored_counts, RecordWriter};
use super::Deadline;
use crate::archive::{ImportEvent, ReadControl, ReadEnd, ReaderCheckpoint};
use crate::domain::{
    ArchiveProgress, BlobInParts, ImportResume, Job, JobUpdate, Message, Project, RelationCounts,
    StoredPart,
};
use crate::ports::GenerationRef;
use crate::service::content_files_prefix;
use crate::{remote, stream, App, Error, Result};

pub(super) async fn run(app: &App, job_id: &str, deadline: Deadline) -> Result<()> {
    let Claim::Won(lease, job) = claim(app, job_id).await? else {
        return Ok(());
    };
    let outcome = import(app, &lease, job, deadline).await;
    lease.end(outcome).await
}

async fn import(app: &App, lease: &Lease, job: Job, deadline: Deadline) -> Result<()> {
    let Some(project) = app.projects.project(job.project_id).await? else {
        return lease.fail("the project no longer exists".into()).await;
    };
    if generation::published_by(&project, &job, None) {
        let update = JobUpdate {
            processed: Some(job.processed),
            relation_counts: Some(job.relation_counts.clone()),
            ..JobUpdate::default()
        };
        return finish(app, lease, project.id, update, &[], None).await;
    }
    let Some(upload) = job.archive_key.clone() else {
        return lease.fail("the job has no uploaded archive".into()).await;
    };
    let mut resume = match job.resume.clone() {
        // Earlier invocations wrote part of it: go on where they stopped.
        Some(resume) => resume,
        None => {
            generation::discard_earlier_runs(app, &project, &job, |_| Vec::new()).await?;
            ImportResume {
                generation: job.generation(lease.attempt()),
                ..ImportResume::default()
            }
        }
    };
    let generation = resume.generation.clone();
    let at = GenerationRef::new(project.id, &generation);
    if !app
        .content
        .claim_generation(at, lease.attempt(), &resume.records)
        .await?
    {
        tracing::info!(generation, "a later run writes this generation");
        return Ok(());
    }
    if let Some(source) = job.bulk.as_ref().filter(|_| resume.invocations == 0) {
        match direct_transfer::prepare(app, lease, &job, source, &upload, deadline).await {
            Ok(direct_transfer::Prepared::Ready) => {}
            Ok(_) => return Ok(()),
            Err(err) if err.is_permanent() => {
                app.blobs
                    .delete_prefix(&crate::keys::upload_folder(&upload))
                    .await?;
                return lease.fail(err.to_string()).await;
            }
            Err(err) => return Err(err),
        }
    }
    if let Some(url) = job.source_url.as_ref().filter(|_| resume.invocations == 0) {
        tracing::info!(upload, "fetching the remote archive");
        let limit = app.settings.max_upload_bytes;
        match remote::fetch_into(app, url, &upload, limit).await {
            Ok(size) => tracing::info!(size, "remote archive fetched"),
            Err(err) if err.is_permanent() => return lease.fail(err.to_string()).await,
            Err(err) => return Err(err),
        }
    }
    let from = match &resume.reader {
        Some(key) => match load_checkpoint(app, key).await {
            Ok(saved) => {
                if let Some(blob) = &mut resume.blob {
                    blob.parts = saved.parts;
                }
                Some(Box::new(saved.reader))
            }
            Err(err) if err.is_permanent() => return lease.fail(err.to_string()).await,
            Err(err) => return Err(err),
        },
        None => None,
    };
    let offset = from.as_ref().map_or(0, |from| from.access.compressed);
    let (archive, size) = match open_archive(app, &job, &upload, offset).await {
        Ok(opened) => opened,
        Err(Error::NotFound(_)) => {
            return lease.fail("the uploaded archive is missing".into()).await
        }
        Err(err) => return Err(err),
    };
    let (archive, archive_bytes) = crate::stream::counted(archive);
    tracing::info!(
        upload,
        generation,
        invocations = resume.invocations,
        offset,
        "import started"
    );
    let reading = Source {
        from,
        archive,
        size,
    };
    let outcome = ingest(app, lease, &project, &job, &resume, reading, deadline).await;
    let summary = match outcome {
        Ok(Ingested::Done(summary)) => summary,
        Ok(Ingested::Paused(progress, mut checkpoint, reader)) => {
            checkpoint.archive_read += archive_bytes.load(std::sync::atomic::Ordering::Relaxed);
            let stop = Stop {
                progress,
                resume: checkpoint,
                reader: *reader,
            };
            return pause(app, lease, &job, &upload, stop).await;
        }
        Err(err) if err.is_permanent() => {
            // Nothing of a refused archive is kept, the upload included.
            generation::discard(app, project.id, &generation).await?;
            if let Some(blob) = &resume.blob {
                app.blobs.abort_parts(&blob.key, &blob.upload).await?;
            }
            app.blobs
                .delete_prefix(&crate::keys::upload_folder(&upload))
                .await?;
            let failures = failures_of(app, &err, "project_import").await?;
            return lease.fail_with(err.to_string(), failures).await;
        }
        Err(err) => {
            // The retry goes on from the last checkpoint, into the same
            // generation: what earlier runs stored there stays.
            if resume.invocations == 0 {
                generation::discard(app, project.id, &generation).await?;
            }
            return Err(err);
        }
    };
    if !lease.confirm().await? {
        // Another run owns the job now and publishes its own generation.
        generation::discard(app, project.id, &generation).await?;
        return Ok(());
    }
    // A full import replaces everything, whatever switched meanwhile.
    let mut current = project;
    loop {
        let mut updated = current.clone();
        if let Some(description) = &summary.description {
            updated.description = Some(description.clone());
        }
        updated.content = Some(generation.clone());
        updated.relation_content.clear();
        if app.projects.switch_content(&updated).await? {
            break;
        }
        current = match app.projects.project(current.id).await? {
            Some(project) => project,
            None => {
                generation::discard(app, current.id, &generation).await?;
                return lease.fail("the project no longer exists".into()).await;
            }
        };
    }
    let replaced = current.generations();
    crate::crash::point("import-switched");
    let update = JobUpdate {
        processed: Some(summary.records),
        relation_counts: Some(summary.counts),
        archive_progress: Some(summary.progress),
        ..JobUpdate::default()
    };
    let read = resume.archive_read + archive_bytes.load(std::sync::atomic::Ordering::Relaxed);
    finish(app, lease, current.id, update, &replaced, Some(read)).await?;
    app.blobs
        .delete_prefix(&crate::keys::upload_folder(&upload))
        .await?;
    tracing::info!(records = summary.records, "import finished");
    Ok(())
}

/// Records where the import stands and hands the rest to a fresh message.
/// Everything the checkpoint counts is durable: the records were flushed,
/// the reader's checkpoint stored, and the job's own write is a durable
/// commit.
async fn pause(app: &App, lease: &Lease, job: &Job, upload: &str, stop: Stop) -> Result<()> {
    let Stop {
        progress,
        resume: mut checkpoint,
        reader,
    } = stop;
    // One blob per run (its invocation and its claim): a run that stops
    // before its job write, or one that lost the job, never overwrites the
    // checkpoint the job names.
    let key = format!(
        "{}checkpoints/{}-{}.json",
        crate::keys::upload_folder(upload),
        checkpoint.invocations,
        lease.attempt()
    );
    // The parts of a blob it stopped inside go beside the reader's state:
    // thousands of them would not fit a job's item.
    let parts = checkpoint
        .blob
        .as_mut()
        .map(|blob| std::mem::take(&mut blob.parts))
        .unwrap_or_default();
    let saved = SavedCheckpoint { reader, parts };
    crate::ports::put_json(&*app.blobs, &key, &saved).await?;
    checkpoint.reader = Some(key);
    let records = checkpoint.total_records();
    tracing::info!(
        records,
        files = checkpoint.files,
        invocations = checkpoint.invocations,
        archive_offset = saved.reader.access.compressed,
        inflated = checkpoint.inflated,
        "import continues in a fresh invocation"
    );
    let update = JobUpdate {
        processed: Some(records),
        relation_counts: Some(stored_counts(&checkpoint.records)),
        resume: Some(checkpoint),
        archive_progress: Some(progress),
        ..JobUpdate::default()
    };
    if lease.pause(update).await? {
        app.queue.send(&[Message::for_job(job)]).await?;
    }
    Ok(())
}

/// Where a run stopped: what the job shows, what the next run needs.
struct Stop {
    progress: ArchiveProgress,
    resume: ImportResume,
    reader: ReaderCheckpoint,
}

/// What a run that stopped leaves for the next, beside the upload.
#[derive(serde::Serialize, serde::Deserialize)]
struct SavedCheckpoint {
    reader: ReaderCheckpoint,
    /// The parts stored so far of the blob it stopped inside.
    #[serde(default)]
    parts: Vec<StoredPart>,
}

/// The checkpoint an earlier run stored.
async fn load_checkpoint(app: &App, key: &str) -> Result<SavedCheckpoint> {
    match crate::ports::get_json(&*app.blobs, key).await {
        Err(Error::NotFound(_)) => Err(Error::BadRequest(
            "the import's checkpoint is missing".into(),
        )),
        loaded => loaded,
    }
}

async fn finish(
    app: &App,
    lease: &Lease,
    project_id: u64,
    update: JobUpdate,
    replaced: &[String],
    archive_bytes: Option<u64>,
) -> Result<()> {
    lease.finish(update, archive_bytes).await?;
    for old in replaced {
        generation::discard(app, project_id, old).await?;
    }
    Ok(())
}

struct Summary {
    records: u64,
    counts: BTreeMap<String, RelationCounts>,
    description: Option<String>,
    progress: ArchiveProgress,
}

/// The archive a run reads: from its start, or from where the reader of an
/// earlier run stopped (`archive` then starts at its compressed offset).
struct Source {
    from: Option<Box<ReaderCheckpoint>>,
    archive: stream::BlockingReader,
    /// The archive's size, when the store tells it.
    size: Option<u64>,
}

/// The job's archive from its byte `offset` on, and its size when known:
/// the upload, or a migration's staged files.
async fn open_archive(
    app: &App,
    job: &Job,
    upload: &str,
    offset: u64,
) -> Result<(stream::BlockingReader, Option<u64>)> {
    if job.bulk.is_some() {
        let (archive, size) = direct_transfer::archive(app, upload, offset).await?;
        return Ok((archive, Some(size)));
    }
    let archive = app.blobs.reader_from(upload, offset).await?;
    // A continued run knows the size from the run before: no listing.
    let known = job
        .resume
        .as_ref()
        .and(job.archive_progress.as_ref())
        .and_then(|progress| progress.archive_bytes);
    let size = match known {
        Some(size) => Some(size),
        None => blob_size(app, upload).await?,
    };
    Ok((archive, size))
}

/// The size of the blob at `key`, if it is there.
async fn blob_size(app: &App, key: &str) -> Result<Option<u64>> {
    let listed = app.blobs.list(key).await?;
    Ok(listed
        .iter()
        .find(|blob| blob.key == key)
        .map(|blob| blob.size))
}

enum Ingested {
    Done(Summary),
    /// Stopped past the deadline: a later run continues from here.
    Paused(ArchiveProgress, ImportResume, Box<ReaderCheckpoint>),
}

/// Reads the archive on a blocking thread and stores what it finds, batching
/// records per relation. A run continuing an earlier one starts where its
/// reader stopped (`from`: `archive` starts at its compressed offset).
/// Past the deadline, with this run's share done, it asks the reader to
/// stop at its next safe point (between two entries or two lines), stores
/// everything read before it, and returns the checkpoint.
async fn ingest(
    app: &App,
    lease: &Lease,
    project: &Project,
    job: &Job,
    resume: &ImportResume,
    source: Source,
    deadline: Deadline,
) -> Result<Ingested> {
    let Source {
        from,
        archive,
        size,
    } = source;
    let generation = resume.generation.as_str();
    let at = GenerationRef::new(project.id, generation);
    // Resumed from a checkpoint, nothing read was stored before; without
    // one (a run of an earlier version stopped) what was is skipped.
    let (mut read_of, mut files_read): (HashMap<Arc<str>, u64>, u64) = match &from {
        Some(_) => (
            resume
                .records
                .iter()
                .map(|(relation, &n)| (Arc::from(relation.as_str()), n))
                .collect(),
            resume.files,
        ),
        None => (HashMap::new(), 0),
    };
    let control = ReadControl::default();
    let progress = |control: &ReadControl| ArchiveProgress {
        archive_bytes: size,
        read: control.compressed(),
        inflated: resume.inflated + control.inflated(),
        invocations: resume.invocations + 1,
    };
    let reading = Reading::Whole {
        from,
        control: control.clone(),
    };
    let mut events = ArchiveEvents::read(archive, app.settings.limits.clone(), reading);
    let mut writer = RecordWriter::continuing(app, at, lease.attempt(), &resume.records);
    let mut description = None;
    let mut blob: Option<BlobUpload> = None;
    let mut files_stored = resume.files;
    let mut stop_requested = false;
    // Parts of a blob too big for one run stored by this one.
    let mut parts_stored = 0u64;
    let mut progress_writes = ProgressWrites::default();
    let stored: Result<()> = async {
        while let Some(event) = events.next().await {
            if !stop_requested && deadline.passed() {
                let progressed = writer.records > resume.total_records()
                    || files_stored > resume.files
                    || parts_stored > 0;
                if progressed {
                    control.request_stop();
                    stop_requested = true;
                }
            }
            match event {
                ImportEvent::Attributes(json) => {
                    let json = with_overrides(json, &job.overrides)?;
                    description = description_of(&json);
                    app.content.put_attributes(at, json).await?;
                }
                ImportEvent::Record { relation, json } => {
                    let read = read_of.entry(relation.clone()).or_default();
                    *read += 1;
                    if *read <= resume.records.get(&*relation).copied().unwrap_or(0) {
                        continue;
                    }
                    writer.push(&relation, json).await?;
                    if super::progress_due(writer.records - 1, writer.records) {
                        tracing::info!(records = writer.records, "import progress");
                        let update = JobUpdate {
                            processed: Some(writer.records),
                            relation_counts: Some(writer.counts()),
                            archive_progress: Some(progress(&control)),
                            ..JobUpdate::default()
                        };
                        progress_writes.record(lease, update).await?;
                    }
                }
                ImportEvent::BlobStart { path, size, from } => {
                    if from == 0 {
                        files_read += 1;
                        if files_read <= resume.files {
                            // Stored by an earlier run: its chunks pass by.
                            continue;
                        }
                    }
                    let key = format!("{}{path}", content_files_prefix(project.id, generation));
                    let stored = resume.blob.as_ref();
                    blob = Some(BlobUpload::start(app, key, (size, from), stored).await?);
                }
                ImportEvent::BlobChunk(chunk) => {
                    if let Some(upload) = &mut blob {
                        if upload.send(app, chunk).await? {
                            parts_stored += 1;
                        }
                    }
                }
                ImportEvent::BlobEnd => {
                    if let Some(upload) = blob.take() {
                        upload.finish(app).await?;
                        files_stored += 1;
                    }
                }
            }
        }
        writer.flush().await
    }
    .await;
    // Before the job moves on: no progress lands after it.
    let stored = stored.and(progress_writes.settle().await);
    // Stop the reader if storing failed, then learn how reading went.
    let parsed = events.finish().await;
    // Nothing may still be writing when a failed import is cleaned up.
    writer.settle().await;
    let stopped_inside_blob = stored.is_ok()
        && matches!(&parsed, Ok(ReadEnd::Stopped(reader)) if reader.inside_blob().is_some());
    let blob_parts = match blob.take() {
        // The next run goes on with it.
        Some(BlobUpload::Parts(upload)) if stopped_inside_blob => Some(upload.stopped()?),
        Some(upload) => {
            // Cut short by a failure: make sure it never lands.
            upload.abort(app).await;
            None
        }
        None => None,
    };
    stored?;
    if let ReadEnd::Stopped(reader) = parsed? {
        let mut progress = progress(&control);
        progress.read = reader.access.compressed;
        return Ok(Ingested::Paused(
            progress,
            ImportResume {
                generation: generation.to_owned(),
                records: writer.stored(),
                files: files_stored,
                invocations: resume.invocations + 1,
                reader: None,
                blob: blob_parts,
                archive_read: resume.archive_read,
                inflated: resume.inflated + control.inflated(),
            },
            reader,
        ));
    }
    Ok(Ingested::Done(Summary {
        records: writer.records,
        counts: writer.counts(),
        description,
        progress: progress(&control),
    }))
}

/// The job's progress, written beside the import rather than in its way:
/// each is a durable commit (an fsync of everything written so far, 20 to
/// 130 ms on the bench machine), and awaited in line they held the import
/// up by a fifth. One is in flight at a time; one due meanwhile is skipped,
/// the next carries newer counts.
#[derive(Default)]
struct ProgressWrites {
    writing: Option<JoinHandle<Result<()>>>,
}

impl ProgressWrites {
    async fn record(&mut self, lease: &Lease, progress: JobUpdate) -> Result<()> {
        if self.writing.as_ref().is_some_and(|w| !w.is_finished()) {
            return Ok(());
        }
        self.settle().await?;
        self.writing = Some(lease.progress_in_background(progress));
        Ok(())
    }

    async fn settle(&mut self) -> Result<()> {
        match self.writing.take() {
            Some(write) => write.await.map_err(Error::internal)?,
            None => Ok(()),
        }
    }
}

/// The archive's attributes with the import's `override_params` applied,
/// every other member as written.
fn with_overrides(attributes: Bytes, overrides: &[(String, String)]) -> Result<Bytes> {
    if overrides.is_empty() {
        return Ok(attributes);
    }
    // The reader checked the attributes; whatever still fails here is the
    // archive's doing, and no retry changes it.
    let refused = |err: &dyn std::fmt::Display| {
        Error::BadRequest(format!(
            "{}: the overrides cannot be applied: {err}",
            crate::archive::PROJECT_JSON
        ))
    };
    let text = std::str::from_utf8(&attributes).map_err(|e| refused(&e))?;
    let updates: Vec<(&str, String)> = overrides
        .iter()
        .map(|(name, value)| (name.as_str(), value.clone()))
        .collect();
    let edited = crate::archive::raw_json::with_members(text, &updates).map_err(|e| refused(&e))?;
    Ok(Bytes::from(edited))
}

/// The archive's description: the last `description` member, read alone,
/// so that no other member (a number past a float's range) can spoil it.
fn description_of(attributes: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(attributes).ok()?;
    let members = crate::archive::raw_json::members(text).ok()?;
    let (_, value) = members
        .iter()
        .rev()
        .find(|(key, _)| crate::archive::raw_json::key_is(key, "description"))?;
    serde_json::from_str::<Option<String>>(value.get()).ok()?
}

/// One blob of the archive on its way to the blob store.
enum BlobUpload {
    /// Streamed into one write.
    Whole(WholeUpload),
    /// Too big for one run: stored part by part.
    Parts(PartsUpload),
    /// Completed by an earlier run of this checkpoint that then died: its
    /// chunks pass by.
    Stored,
}

impl BlobUpload {
    /// The blob `size` bytes long at `key`, from its byte `from` on (a run
    /// that stopped inside it left its parts in `resume`).
    async fn start(
        app: &App,
        key: String,
        (size, from): (u64, u64),
        resume: Option<&BlobInParts>,
    ) -> Result<Self> {
        let Some(part_bytes) = crate::archive::blob_part_bytes(size) else {
            return Ok(BlobUpload::Whole(WholeUpload::start(app, key)));
        };
        if from == 0 {
            let upload = app.blobs.start_parts(&key).await?;
            return Ok(BlobUpload::Parts(PartsUpload::new(
                BlobInParts {
                    key,
                    upload,
                    parts: Vec::new(),
                },
                part_bytes,
            )));
        }
        if blob_size(app, &key).await? == Some(size) {
            return Ok(BlobUpload::Stored);
        }
        match resume {
            Some(stored) if stored.key == key && stored.parts.len() as u64 * part_bytes == from => {
                let mut upload = PartsUpload::new(stored.clone(), part_bytes);
                upload.resumed = true;
                Ok(BlobUpload::Parts(upload))
            }
            _ => Err(Error::internal(format!(
                "the parts of {key} before byte {from} are not recorded"
            ))),
        }
    }

    /// Whether a part was stored.
    async fn send(&mut self, app: &App, chunk: Bytes) -> Result<bool> {
        match self {
            BlobUpload::Whole(upload) => upload.send(chunk).await.map(|()| false),
            BlobUpload::Parts(upload) => upload.send(app, chunk).await,
            BlobUpload::Stored => Ok(false),
        }
    }

    async fn finish(self, app: &App) -> Result<()> {
        match self {
            BlobUpload::Whole(upload) => upload.finish().await,
            BlobUpload::Parts(upload) => upload.finish(app).await,
            BlobUpload::Stored => Ok(()),
        }
    }

    async fn abort(self, app: &App) {
        match self {
            BlobUpload::Whole(upload) => upload.abort().await,
            // The job's checkpoint names it: a retry goes on with it.
            BlobUpload::Parts(upload) if upload.resumed => {}
            BlobUpload::Parts(upload) => {
                let stored = upload.stored;
                if let Err(err) = app.blobs.abort_parts(&stored.key, &stored.upload).await {
                    tracing::warn!(key = stored.key, error = %err, "a blob's parts stay behind");
                }
            }
            BlobUpload::Stored => {}
        }
    }
}

/// A blob written in parts of `part_bytes` (the last one shorter): the
/// reader hands its chunks over without crossing a part's end, and stops
/// inside the blob only where a part ends, so a part is never split
/// between runs.
struct PartsUpload {
    stored: BlobInParts,
    /// Started by an earlier run (the job's checkpoint names it).
    resumed: bool,
    part_bytes: u64,
    pending: Vec<Bytes>,
    pending_bytes: u64,
}

impl PartsUpload {
    fn new(stored: BlobInParts, part_bytes: u64) -> Self {
        PartsUpload {
            stored,
            resumed: false,
            part_bytes,
            pending: Vec::new(),
            pending_bytes: 0,
        }
    }

    async fn send(&mut self, app: &App, chunk: Bytes) -> Result<bool> {
        self.pending_bytes += chunk.len() as u64;
        self.pending.push(chunk);
        if self.pending_bytes < self.part_bytes {
            return Ok(false);
        }
        self.store_part(app).await?;
        Ok(true)
    }

    async fn store_part(&mut self, app: &App) -> Result<()> {
        let number = self.stored.parts.len() as u32 + 1;
        let chunks = std::mem::take(&mut self.pending);
        self.pending_bytes = 0;
        let body = futures::stream::iter(chunks.into_iter().map(Ok));
        let stored = &self.stored;
        let part = app
            .blobs
            .put_part(&stored.key, &stored.upload, number, Box::pin(body))
            .await?;
        self.stored.parts.push(part);
        Ok(())
    }

    async fn finish(mut self, app: &App) -> Result<()> {
        if self.pending_bytes > 0 || self.stored.parts.is_empty() {
            self.store_part(app).await?;
        }
        let stored = &self.stored;
        app.blobs
            .complete_parts(&stored.key, &stored.upload, &stored.parts)
            .await?;
        Ok(())
    }

    /// What the next run needs to go on: every part so far is stored.
    fn stopped(self) -> Result<BlobInParts> {
        if !self.pending.is_empty() {
            return Err(Error::internal("the reader stopped inside a part"));
        }
        Ok(self.stored)
    }
}

/// A blob streamed into one write of the store.
struct WholeUpload {
    chunks: mpsc::Sender<std::io::Result<Bytes>>,
    task: JoinHandle<Result<u64>>,
}

impl WholeUpload {
    fn start(app: &App, key: String) -> Self {
        let (chunks, rx) = mpsc::channel(4);
        let blobs = app.blobs.clone();
        let task = tokio::spawn(async move { blobs.put(&key, stream::from_receiver(rx)).await });
        WholeUpload { chunks, task }
    }

    async fn send(&self, chunk: Bytes) -> Result<()> {
        if self.chunks.send(Ok(chunk)).await.is_err() {
            // The upload stopped: its own error says why.
            return Err(Error::Storage("blob upload stopped".into()));
        }
        Ok(())
    }

    async fn abort(self) {
        let _ = self
            .chunks
            .send(Err(std::io::Error::other("the import stopped")))
            .await;
        drop(self.chunks);
        let _ = self.task.await;
    }

    async fn finish(self) -> Result<()> {
        drop(self.chunks);
        self.task.await.map_err(Error::internal)?.map(|_| ())
    }
}
