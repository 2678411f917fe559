//! A migration's entity, pulled from its source instance, in three steps:
//!
//! 1. The entity's import job checks the source, asks it for a relations
//!    export and waits for it; it then records how many files the export
//!    has, lets go of the job and queues one message per file (a relation,
//!    or one batch of it): on AWS each is an invocation of its own.
//! 2. Each file's message downloads it into the upload's folder (a put is
//!    atomic, so a file is there whole or not at all); the one that finds
//!    every file there queues the job again.
//! 3. The job puts the files together into a GitLab export archive at its
//!    upload key, and imports it like any other archive: everything the
//!    import checks, and how it publishes (one generation, switched in at
//!    the end), is the same.
//!
//! Any message may arrive twice, or not at all: a file downloaded twice is
//! the same file, a job message early finds files missing and queues their
//! messages again, and the stale-job sweep queues the job again when
//! nothing moves. The upload's folder goes when the import ends, whichever
//! way.

mod archive;

use std::time::Duration;

use futures::StreamExt;

use super::lease::Lease;
use crate::domain::{now, BulkSource, ImportFailure, Job, JobKind, JobUpdate, Message, When};
use crate::relations;
use crate::remote::source::{SourceInstance, SourceRelation};
use crate::{keys, stream, App, Error, Result};
use archive::write_archive;

/// How long the source may take to export the project before the run
/// gives up and a retry asks again.
const EXPORT_WAIT: Duration = Duration::from_secs(600);
const FIRST_POLL: Duration = Duration::from_millis(200);
const MAX_POLL: Duration = Duration::from_secs(5);

/// One file of the source's export: a relation, or one batch of it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Part {
    relation: String,
    batch: Option<u32>,
}

impl Part {
    fn key(&self, staging: &str) -> String {
        format!("{staging}{}.{}.gz", self.relation, self.batch.unwrap_or(0))
    }

    /// The part a staged file is, from its name.
    fn of_key(key: &str, staging: &str) -> Option<Part> {
        let name = key.strip_prefix(staging)?.strip_suffix(".gz")?;
        let (relation, batch) = name.rsplit_once('.')?;
        let batch: u32 = batch.parse().ok()?;
        Some(Part {
            relation: relation.to_owned(),
            batch: (batch > 0).then_some(batch),
        })
    }

    fn message(&self, job: &Job) -> Message {
        Message {
            kind: JobKind::DirectTransferPart,
            job_id: job.id.clone(),
            project_id: job.project_id,
            relation: Some(self.relation.clone()),
            batch: self.batch,
        }
    }
}

/// Where the job's files from the source are kept until the archive is
/// written.
fn staging(archive_key: &str) -> String {
    format!("{}source/", keys::upload_folder(archive_key))
}

/// Where a migration's import job stands before its archive is read.
pub(super) enum Prepared {
    /// The archive is at the upload key: import it.
    Ready,
    /// Files are on their way (their messages queued); the job was let go.
    Waiting,
    /// The run lost its job (canceled, or another run took it over).
    Lost,
}

/// Takes the job one step towards its archive (steps 1 and 3 above).
pub(super) async fn prepare(
    app: &App,
    lease: &Lease,
    job: &Job,
    source: &BulkSource,
    archive_key: &str,
) -> Result<Prepared> {
    let remote = connect(app, source)?;
    let (Some(project_id), Some(expected)) = (source.source_project_id, source.parts) else {
        return request_export(app, lease, job, source, &remote).await;
    };
    let staging = staging(archive_key);
    let mut staged: Vec<Part> = app
        .blobs
        .list(&staging)
        .await?
        .iter()
        .filter_map(|blob| Part::of_key(&blob.key, &staging))
        .collect();
    if staged.len() < expected as usize {
        let written = app.blobs.list(archive_key).await?;
        if written.iter().any(|blob| blob.key == archive_key) {
            // An earlier run wrote the archive and stopped in its import.
            return Ok(Prepared::Ready);
        }
        // Early (a message delivered twice): the last file queues the job
        // again. Queued by the stale-job sweep: a file's message was lost,
        // and the missing ones are queued again.
        let missing: Vec<Message> = if job.stalls > 0 {
            let status = remote.relations_export_status(project_id).await?;
            plan(job, &status)
                .0
                .into_iter()
                .filter(|part| !staged.contains(part))
                .map(|part| part.message(job))
                .collect()
        } else {
            Vec::new()
        };
        if !lease.pause(JobUpdate::default()).await? {
            return Ok(Prepared::Lost);
        }
        app.queue.send(&missing).await?;
        return Ok(Prepared::Waiting);
    }
    staged.sort_by(|a, b| {
        let rank = |p: &Part| (relations::relation_export_rank(&p.relation), p.batch);
        rank(a).cmp(&rank(b))
    });
    if !lease.confirm().await? {
        return Ok(Prepared::Lost);
    }
    write_archive(app, archive_key, &staging, &staged).await?;
    app.blobs.delete_prefix(&staging).await?;
    Ok(Prepared::Ready)
}

fn connect(app: &App, source: &BulkSource) -> Result<SourceInstance> {
    let token = source.token.as_ref().ok_or_else(|| {
        Error::BadRequest("the access token to the source instance is no longer kept".into())
    })?;
    SourceInstance::new(&source.url, &token.0, app.settings.allow_local_requests)
}

/// Step 1: the source checked and its export done, one message per file.
async fn request_export(
    app: &App,
    lease: &Lease,
    job: &Job,
    source: &BulkSource,
    remote: &SourceInstance,
) -> Result<Prepared> {
    remote.check_token().await?;
    let project_id = remote.project_id(&source.source_full_path).await?;
    let mut status = if lease.attempt() == 1 {
        Vec::new()
    } else {
        // A retry uses the export its first run asked for, if there is one.
        remote.relations_export_status(project_id).await?
    };
    if status.is_empty() {
        remote
            .start_relations_export(project_id, &source.source_full_path)
            .await?;
    }
    status = match wait_for_export(remote, project_id, lease).await? {
        Some(status) => status,
        None => return Ok(Prepared::Lost),
    };
    let (parts, failures) = plan(job, &status);
    if parts.is_empty() {
        return Err(Error::BadRequest(
            "Import failed: the source exported no relation".into(),
        ));
    }
    let update = JobUpdate {
        failures: Some(failures),
        bulk_plan: Some((project_id, parts.len() as u32)),
        ..JobUpdate::default()
    };
    // Let go first: the last file's message queues the job again, and must
    // find it free.
    if !lease.pause(update).await? {
        return Ok(Prepared::Lost);
    }
    let messages: Vec<Message> = parts.iter().map(|part| part.message(job)).collect();
    app.queue.send(&messages).await?;
    tracing::info!(files = messages.len(), "the source exported the project");
    Ok(Prepared::Waiting)
}

/// The files of the source's export, and the relations it failed (GitLab's
/// entity ends `finished` with them as failures, unless every relation
/// failed).
fn plan(job: &Job, status: &[SourceRelation]) -> (Vec<Part>, Vec<ImportFailure>) {
    let mut parts = Vec::new();
    let mut failures = Vec::new();
    for relation in status {
        match files_of(relation) {
            Ok(files) => parts.extend(files),
            Err(reason) => failures.push(failure(job, failures.len(), &relation.relation, reason)),
        }
    }
    (parts, failures)
}

/// Step 2: one file of the source's export, downloaded; the last one queues
/// the job again.
pub(super) async fn download_part(app: &App, message: &Message) -> Result<()> {
    let Some(job) = app.jobs.job(&message.job_id).await? else {
        return Ok(());
    };
    let (Some(source), Some(archive_key), Some(relation)) =
        (&job.bulk, &job.archive_key, &message.relation)
    else {
        return Ok(());
    };
    let (Some(project_id), Some(expected)) = (source.source_project_id, source.parts) else {
        return Ok(());
    };
    if job.status.is_done() || !relations::is_valid_name(relation) {
        return Ok(());
    }
    let part = Part {
        relation: relation.clone(),
        batch: message.batch,
    };
    let staging = staging(archive_key);
    let downloaded = async {
        let remote = connect(app, source)?;
        let body = remote
            .download(project_id, &part.relation, part.batch)
            .await?;
        let limit = app.settings.max_upload_bytes;
        app.blobs
            .put(&part.key(&staging), Box::pin(capped(body, limit)))
            .await
    }
    .await;
    match downloaded {
        Ok(_) => {}
        Err(err) if err.is_permanent() => {
            // The entity cannot be imported whole: it fails now.
            let reason = crate::redact::text(&err.to_string()).into_owned();
            super::abandon(app, &job.id, When::Unleased(now()), reason).await?;
            return Ok(());
        }
        Err(err) => return Err(err),
    }
    if app
        .jobs
        .job(&job.id)
        .await?
        .is_none_or(|job| job.status.is_done())
    {
        // Failed or canceled meanwhile: its folder is gone, and so is this.
        app.blobs.delete_prefix(&staging).await?;
        return Ok(());
    }
    let staged = app.blobs.list(&staging).await?.len();
    // Progress the sweep sees: a long migration is not a stalled one.
    let progress = JobUpdate {
        processed: Some(staged as u64),
        ..JobUpdate::default()
    };
    app.jobs
        .record_progress(&job.id, When::started(), progress)
        .await?;
    if staged >= expected as usize {
        app.queue.send(&[Message::for_job(&job)]).await?;
    }
    Ok(())
}

/// Polls the source's relations export until no relation is in progress;
/// `None` once the run no longer owns its job.
async fn wait_for_export(
    remote: &SourceInstance,
    project_id: u64,
    lease: &Lease,
) -> Result<Option<Vec<SourceRelation>>> {
    let started = tokio::time::Instant::now();
    let mut pause = FIRST_POLL;
    loop {
        let status = remote.relations_export_status(project_id).await?;
        let busy = status.is_empty()
            || status
                .iter()
                .any(|r| r.status == 0 || r.batches.iter().any(|b| b.status == 0));
        if !busy {
            return Ok(Some(status));
        }
        if !lease.confirm().await? {
            return Ok(None);
        }
        if started.elapsed() > EXPORT_WAIT {
            return Err(Error::Storage(
                "the source instance has not finished exporting the project".into(),
            ));
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(MAX_POLL);
    }
}

/// The files a finished relation has, or why it has none.
fn files_of(relation: &SourceRelation) -> std::result::Result<Vec<Part>, String> {
    let name = &relation.relation;
    if !relations::is_valid_name(name) {
        return Err(format!("the relation name {name:?} is not valid"));
    }
    if relation.status != 1 {
        let error = relation.error.clone().unwrap_or_default();
        return Err(format!("Export from source instance failed: {error}"));
    }
    let part = |batch: Option<u32>| Part {
        relation: name.clone(),
        batch,
    };
    if !relation.batched {
        return Ok(vec![part(None)]);
    }
    // A batched relation without batches is empty: nothing to download.
    if let Some(failed) = relation.batches.iter().find(|b| b.status != 1) {
        let error = failed.error.clone().unwrap_or_default();
        return Err(format!(
            "Export from source instance failed: batch {}: {error}",
            failed.batch_number
        ));
    }
    Ok((1..=relation.batches_count)
        .map(|n| part(Some(n)))
        .collect())
}

/// A failed relation as GitLab lists it in the entity's failures.
fn failure(job: &Job, index: usize, relation: &str, reason: String) -> ImportFailure {
    ImportFailure {
        id: index as u64 + 1,
        created_at: now(),
        exception_class: "BulkImports::PipelineError".into(),
        exception_message: reason,
        source: format!("direct_transfer:{}", job.id),
        relation_name: relation.to_owned(),
        line_number: 0,
    }
}

/// The body, refused once it passes `limit` bytes.
fn capped(body: stream::ByteStream, limit: u64) -> stream::ByteStream {
    let mut seen = 0u64;
    Box::pin(body.map(move |chunk| {
        let chunk = chunk?;
        seen += chunk.len() as u64;
        if seen > limit {
            return Err(std::io::Error::other(format!(
                "a file of the source is larger than {limit} bytes"
            )));
        }
        Ok(chunk)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_staged_file_names_its_part() {
        let staging = "imports/x/source/";
        for part in [
            Part {
                relation: "issues".into(),
                batch: Some(12),
            },
            Part {
                relation: "self".into(),
                batch: None,
            },
        ] {
            assert_eq!(Part::of_key(&part.key(staging), staging), Some(part));
        }
        assert_eq!(Part::of_key("imports/x/source/junk", staging), None);
    }
}
