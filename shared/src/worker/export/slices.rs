//! One export over many workers. A big project's archive is planned up
//! front (`plan`), then:
//!
//! 1. The export job starts a blob written in parts at the archive's key,
//!    stores the plan beside it, lets go of the job and queues one message
//!    per slice.
//! 2. Each slice's message compresses its stretch of the tar stream into
//!    part `n + 1` (the first with gzip's header; none with the final
//!    block) and records what its bytes add to the gzip trailer. The one
//!    that finds every slice written queues the job again.
//! 3. The job adds the trailer as the last part and completes the blob:
//!    one gzip member, as a one-worker export writes it.
//!
//! A slice's bytes depend only on the plan, so a slice run twice (a
//! duplicate, a retry) stores the same part again; a lost message is queued
//! again by the job the stale-job sweep requeues.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::plan::{Plan, Segment, SlicePlan};
use super::Built;
use crate::archive::{self, Slice, SliceSum};
use crate::domain::{Job, JobKind, JobUpdate, Message, When};
use crate::ports::{get_json, put_json, GenerationRef, RecordPages, StoredPart};
use crate::worker::lease::Lease;
use crate::worker::pipeline::{self, Chunks, PartOf};
use crate::{keys, stream, App, Error, Result};

/// A slice written: its part, and what it adds to the trailer.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Written {
    part: StoredPart,
    sum: SliceSum,
}

fn plan_key(job: &Job) -> String {
    keys::export_slice_plan_key(job.project_id, &job.id)
}

fn slices_prefix(job: &Job) -> String {
    keys::export_slices_prefix(job.project_id, &job.id)
}

fn written_key(job: &Job, slice: usize) -> String {
    keys::export_slice_record_key(job.project_id, &job.id, slice)
}

fn message(job: &Job, slice: usize) -> Message {
    Message {
        kind: JobKind::ExportSlice,
        job_id: job.id.clone(),
        project_id: job.project_id,
        relation: None,
        batch: Some(slice as u32),
    }
}

/// The job's plan, if its archive is being written in slices.
pub(super) async fn load_plan(app: &App, job: &Job) -> Result<Option<Plan>> {
    match get_json(&*app.blobs, &plan_key(job)).await {
        Ok(plan) => Ok(Some(plan)),
        Err(Error::NotFound(_)) => Ok(None),
        Err(err) => Err(err),
    }
}

/// Step 1: the upload started and the plan stored, the job let go, one
/// message per slice. `false` if the run no longer owned the job.
pub(super) async fn start(
    app: &App,
    lease: &Lease,
    job: &Job,
    at: chrono::DateTime<chrono::Utc>,
    cut: (Vec<SlicePlan>, u64),
) -> Result<bool> {
    let key = keys::export_key(job.project_id, &job.id);
    let (slices, tar_bytes) = cut;
    let plan = Plan {
        upload: app.blobs.start_parts(&key).await?,
        at,
        tar_bytes,
        slices,
    };
    put_json(&*app.blobs, &plan_key(job), &plan).await?;
    // Let go first: the last slice queues the job again, and must find it
    // free.
    if !lease.pause(JobUpdate::default()).await? {
        return Ok(false);
    }
    let messages: Vec<Message> = (0..plan.slices.len()).map(|n| message(job, n)).collect();
    app.queue.send(&messages).await?;
    tracing::info!(
        slices = messages.len(),
        tar_bytes,
        "export planned in slices"
    );
    Ok(true)
}

/// Where the job stands once its slices are planned.
pub(super) enum Joined {
    /// The archive is complete at its key.
    Done(Built),
    /// Slices are still on their way; the job was let go.
    Waiting,
    /// The run lost its job.
    Lost,
    /// A slice compressed to less than the store's least part: the upload
    /// was dropped, and the archive is to be written in one stream.
    TooSmall,
}

/// Steps 3 (and the sweep's requeue): the trailer added and the archive
/// completed once every slice is written.
pub(super) async fn join(app: &App, lease: &Lease, job: &Job, plan: &Plan) -> Result<Joined> {
    let key = keys::export_key(job.project_id, &job.id);
    let written = written_slices(app, job).await?;
    if written.len() < plan.slices.len() {
        // Early (a message delivered twice): the last slice queues the job
        // again. Queued by the stale-job sweep: a slice's message was lost,
        // and the missing ones are queued again.
        let missing: Vec<Message> = if job.stalls > 0 {
            (0..plan.slices.len())
                .filter(|n| !written.iter().any(|(w, _)| w == n))
                .map(|n| message(job, n))
                .collect()
        } else {
            Vec::new()
        };
        if !lease.pause(JobUpdate::default()).await? {
            return Ok(Joined::Lost);
        }
        app.queue.send(&missing).await?;
        return Ok(Joined::Waiting);
    }
    let mut written: Vec<Written> = {
        let mut read = Vec::with_capacity(written.len());
        for (n, _) in &written {
            read.push(get_json::<Written>(&*app.blobs, &written_key(job, *n)).await?);
        }
        read
    };
    written.sort_by_key(|w| w.part.number);
    let length: u64 = written.iter().map(|w| w.sum.length).sum();
    if length != plan.tar_bytes {
        return Err(Error::Internal(format!(
            "the slices wrote {length} bytes of archive, not the {} planned",
            plan.tar_bytes
        )));
    }
    if written
        .iter()
        .any(|w| w.part.size < app.blobs.min_part_bytes())
    {
        app.blobs.abort_parts(&key, &plan.upload).await?;
        app.blobs.delete_prefix(&slices_prefix(job)).await?;
        tracing::info!("a slice compressed below the least part size: one stream instead");
        return Ok(Joined::TooSmall);
    }
    if !lease.confirm().await? {
        return Ok(Joined::Lost);
    }
    let sums: Vec<SliceSum> = written.iter().map(|w| w.sum).collect();
    let trailer = Bytes::copy_from_slice(&archive::trailer(&sums));
    let last = plan.slices.len() as u32 + 1;
    let trailer = app
        .blobs
        .put_part(&key, &plan.upload, last, stream::from_bytes(trailer))
        .await?;
    let mut parts: Vec<StoredPart> = written.into_iter().map(|w| w.part).collect();
    parts.push(trailer);
    let bytes = app.blobs.complete_parts(&key, &plan.upload, &parts).await?;
    app.blobs.delete_prefix(&slices_prefix(job)).await?;
    Ok(Joined::Done(Built {
        at: plan.at,
        records: plan.records(),
        bytes,
    }))
}

/// The slices written so far, by number.
async fn written_slices(app: &App, job: &Job) -> Result<Vec<(usize, u64)>> {
    let prefix = slices_prefix(job);
    Ok(app
        .blobs
        .list(&prefix)
        .await?
        .iter()
        .filter_map(|blob| Some((keys::slice_of_record_key(&blob.key, &prefix)?, blob.size)))
        .collect())
}

/// Drops the upload of an export that ended without completing it.
pub(in crate::worker) async fn abandon(app: &App, job: &Job) -> Result<()> {
    if let Some(plan) = load_plan(app, job).await? {
        let key = keys::export_key(job.project_id, &job.id);
        app.blobs.abort_parts(&key, &plan.upload).await?;
    }
    Ok(())
}

/// Step 2: one slice's message.
pub(in crate::worker) async fn run(app: &App, message: &Message) -> Result<()> {
    let Some(n) = message.batch.map(|n| n as usize) else {
        return Ok(());
    };
    let Some(job) = app.jobs.job(&message.job_id).await? else {
        return Ok(());
    };
    if job.status.is_done() || job.kind != JobKind::Export {
        return Ok(());
    }
    let Some(plan) = load_plan(app, &job).await? else {
        return Ok(());
    };
    let Some(slice) = plan.slices.get(n) else {
        return Ok(());
    };
    let done = written_slices(app, &job).await?;
    if !done.iter().any(|(w, _)| *w == n) {
        let started = std::time::Instant::now();
        let key = keys::export_key(job.project_id, &job.id);
        let part = PartOf {
            key: &key,
            upload: &plan.upload,
            number: n as u32 + 1,
            slice: Slice::Open { first: n == 0 },
        };
        let produce = |chunks| write_slice(app, job.project_id, plan.mtime(), slice, chunks);
        let ((), part, sum) = pipeline::gzip_part(app, part, produce).await?;
        crate::crash::point("export-slice-part-stored");
        put_json(&*app.blobs, &written_key(&job, n), &Written { part, sum }).await?;
        tracing::info!(
            slice = n,
            records = slice.records,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "export slice written"
        );
    }
    if app
        .jobs
        .job(&job.id)
        .await?
        .is_none_or(|job| job.status.is_done())
    {
        // The export ended while this ran (a late duplicate): its record
        // would outlive the folder the job cleared.
        app.blobs.delete_prefix(&slices_prefix(&job)).await?;
        return Ok(());
    }
    let done = written_slices(app, &job).await?;
    // Progress the sweep sees: a long export is not a stalled one.
    let records = done
        .iter()
        .filter_map(|(n, _)| plan.slices.get(*n))
        .map(|s| s.records)
        .sum();
    let progress = JobUpdate {
        processed: Some(records),
        ..JobUpdate::default()
    };
    app.jobs
        .record_progress(&job.id, When::started(), progress)
        .await?;
    if done.len() >= plan.slices.len() {
        app.queue.send(&[Message::for_job(&job)]).await?;
    }
    Ok(())
}

/// Sends the slice's stretch of the tar stream.
async fn write_slice(
    app: &App,
    project_id: u64,
    mtime: u64,
    slice: &SlicePlan,
    chunks: Chunks,
) -> Result<()> {
    for segment in &slice.segments {
        match segment {
            Segment::Header { path, size } => {
                let header = archive::header_bytes(path, *size, mtime)?;
                chunks.send(Bytes::from(header)).await?;
            }
            Segment::Text { text } => chunks.send(Bytes::from(text.clone())).await?,
            Segment::Records {
                generation,
                relation,
                first,
                count,
            } => {
                let at = GenerationRef::new(project_id, generation);
                let page_records = app.settings.export_page_records;
                let mut pages = RecordPages::new(app.content.as_ref(), at, relation, page_records)
                    .within(*first, *count);
                let mut read = 0u64;
                while let Some(page) = pages.next().await? {
                    read += page.len() as u64;
                    for piece in pipeline::ndjson_pieces(&page) {
                        chunks.send(piece).await?;
                    }
                }
                if read != *count {
                    return Err(Error::Storage(format!(
                        "{relation} has {read} of the {count} records from {first} on"
                    )));
                }
            }
            Segment::Blob { key, size, offset } => {
                let mut body = app.blobs.get_range(key, *offset, *size).await?;
                let mut sent = 0u64;
                while let Some(chunk) = futures::StreamExt::next(&mut body).await {
                    let chunk = chunk?;
                    sent += chunk.len() as u64;
                    chunks.send(chunk).await?;
                }
                if sent != *size {
                    return Err(Error::Storage(format!(
                        "{key} is {sent} bytes, not the {size} planned"
                    )));
                }
            }
            Segment::Padding { size } => {
                let zeros = vec![0u8; archive::padding(*size)];
                chunks.send(Bytes::from(zeros)).await?;
            }
            Segment::End => {
                chunks
                    .send(Bytes::from_static(&archive::END_OF_ARCHIVE))
                    .await?
            }
        }
    }
    chunks.finish().await
}
