//! A migration's entity, pulled from its source instance, in three steps:
//!
//! 1. The entity's import job checks the source, asks it for a relations
//!    export and waits for it; it then records how many files the export
//!    has (and which, in a small plan beside them), lets go of the job and
//!    queues the messages of the first files (a relation, or one batch of
//!    it): on AWS each is an invocation of its own. At most a window of
//!    them is queued at a time, so a source claiming thousands of batches
//!    never puts other users' work behind its own.
//! 2. Each file's message downloads it into the upload's folder, staged as
//!    one member of the archive to be (see `archive`): the file is there,
//!    with a marker naming its size, whole or not at all. It queues the
//!    next file past the window; the one that finds every file there
//!    queues the job again.
//! 3. The job lists the staged files in archive order (a composition, a
//!    small file beside them) and imports that like any other archive,
//!    across as many invocations as it takes: everything the import checks,
//!    and how it publishes (one generation, switched in at the end), is the
//!    same. Nothing is copied into an archive first.
//!
//! Any message may arrive twice, or not at all: a file downloaded twice is
//! the same file, a job message early finds files missing and queues their
//! messages again, and the stale-job sweep queues the job again when
//! nothing moves. The upload's folder goes when the import ends, whichever
//! way.

mod archive;
mod members;

use std::time::Duration;

use super::lease::Lease;
use super::Deadline;
use crate::domain::{
    now, BulkPlan, BulkSource, ImportFailure, Job, JobKind, JobUpdate, Message, When,
};
use crate::relations;
use crate::remote::source::{SourceInstance, SourceRelation};
use crate::{keys, App, Error, Result};
use archive::{stage, stage_files, staged_files, Composition, Staged, Staging};

/// How long one run polls the source's export before it lets go of the job
/// and a later message polls again: an invocation is not held waiting.
const WAIT_IN_A_RUN: Duration = Duration::from_secs(60);
const FIRST_POLL: Duration = Duration::from_millis(200);
const MAX_POLL: Duration = Duration::from_secs(5);
/// How long the source may take to export the project, from the job's
/// start: a big project's export takes hours.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(8 * 3600);
/// A later poll comes after a quarter of the time waited so far, within
/// these bounds: soon for a small project, seldom for a big one.
const LATER_POLL: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(60));

/// The most files (relations and batches) one entity's export may have:
/// a hundred million records at GitLab's 1,000 per batch. A source claiming
/// more is refused before anything is planned.
const MAX_SOURCE_FILES: u64 = 100_000;

/// One file of the source's export: a relation, or one batch of it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
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

/// Where the job's files from the source are kept until its import ends.
fn staging(archive_key: &str) -> String {
    format!("{}source/", keys::upload_folder(archive_key))
}

/// The files of the source's export in download order, kept small: each
/// relation with its number of batches (0: one file, not batched).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Plan(Vec<(String, u32)>);

impl Plan {
    fn of(parts: &[Part]) -> Plan {
        let mut plan: Vec<(String, u32)> = Vec::new();
        for part in parts {
            match plan.last_mut() {
                Some((relation, batches)) if *relation == part.relation && part.batch.is_some() => {
                    *batches += 1
                }
                _ => plan.push((part.relation.clone(), u32::from(part.batch.is_some()))),
            }
        }
        Plan(plan)
    }

    fn parts(&self) -> impl Iterator<Item = Part> + '_ {
        self.0.iter().flat_map(|(relation, batches)| {
            let batched = *batches > 0;
            (1..=(*batches).max(1)).map(move |n| Part {
                relation: relation.clone(),
                batch: batched.then_some(n),
            })
        })
    }

    fn key(staging: &str) -> String {
        format!("{staging}plan.json")
    }

    async fn save(&self, app: &App, staging: &str) -> Result<()> {
        crate::ports::put_json(&*app.blobs, &Self::key(staging), self).await
    }

    async fn load(app: &App, staging: &str) -> Result<Plan> {
        crate::ports::get_json(&*app.blobs, &Self::key(staging)).await
    }

    /// The messages of the first `window` files not staged.
    fn first_missing(&self, job: &Job, staged: &[Part], window: usize) -> Vec<Message> {
        let staged: std::collections::HashSet<&Part> = staged.iter().collect();
        self.parts()
            .filter(|part| !staged.contains(part))
            .take(window)
            .map(|part| part.message(job))
            .collect()
    }
}

/// The parts staged so far.
fn parts_of(staged: &[Staged]) -> Vec<Part> {
    staged.iter().map(|file| file.part.clone()).collect()
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
    deadline: Deadline,
) -> Result<Prepared> {
    let remote = connect(app, source)?;
    let (Some(project_id), Some(expected)) = (source.source_project_id, source.parts) else {
        return request_export(app, lease, job, source, &remote, deadline).await;
    };
    let staging = staging(archive_key);
    let mut staged = staged_files(app, &staging).await?;
    if staged.len() < expected as usize {
        // Early (a message delivered twice): the last file queues the job
        // again. Queued by the stale-job sweep: a file's message was lost,
        // and a window of the missing ones is queued again.
        let missing: Vec<Message> = if job.stalls > 0 {
            let window = app.settings.relation_export_window;
            let staged = parts_of(&staged);
            match Plan::load(app, &staging).await {
                Ok(plan) => plan.first_missing(job, &staged, window),
                // Planned before plans were kept: the source says again.
                Err(Error::NotFound(_)) => {
                    let status = remote.relations_export_status(project_id).await?;
                    let parts = plan(job, &status, &app.settings.limits)?.0;
                    Plan::of(&with_members(source, parts)).first_missing(job, &staged, window)
                }
                Err(err) => return Err(err),
            }
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
        rank(&a.part).cmp(&rank(&b.part))
    });
    let unmatched = members::load_failures(app, &staging).await?;
    if !unmatched.is_empty() {
        let mut failures: Vec<ImportFailure> = job
            .failures
            .iter()
            .filter(|f| f.relation_name != members::RELATION)
            .cloned()
            .chain(unmatched)
            .collect();
        for (n, failure) in failures.iter_mut().enumerate() {
            failure.id = n as u64 + 1;
        }
        let update = JobUpdate {
            failures: Some(failures),
            ..JobUpdate::default()
        };
        if !lease.update(update).await? {
            return Ok(Prepared::Lost);
        }
    }
    if !lease.confirm().await? {
        return Ok(Prepared::Lost);
    }
    Composition::of(&staged, mtime(job))?
        .save(app, &staging)
        .await?;
    Ok(Prepared::Ready)
}

/// Every tar header of the job's archive carries this time: a file staged
/// twice is staged the same.
fn mtime(job: &Job) -> u64 {
    job.created_at.timestamp().max(0) as u64
}

/// The archive of a migration's entity, prepared: read from `offset` on,
/// and its size.
pub(super) async fn archive(
    app: &App,
    archive_key: &str,
    offset: u64,
) -> Result<(crate::stream::BlockingReader, u64)> {
    let staging = staging(archive_key);
    let composition = Composition::load(app, &staging).await?;
    let size = composition.size();
    Ok((composition.reader_from(app, &staging, offset), size))
}

fn connect(app: &App, source: &BulkSource) -> Result<SourceInstance> {
    let token = source.token.as_ref().ok_or_else(|| {
        Error::BadRequest("the access token to the source instance is no longer kept".into())
    })?;
    SourceInstance::new(
        &source.url,
        &token.0,
        app.settings.allow_local_requests,
        app.settings.remote,
    )
}

/// Step 1: the source checked and its export done, one message per file.
async fn request_export(
    app: &App,
    lease: &Lease,
    job: &Job,
    source: &BulkSource,
    remote: &SourceInstance,
    deadline: Deadline,
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
    status = match wait_for_export(remote, project_id, lease, deadline).await? {
        Waited::Done(status) => status,
        Waited::Lost => return Ok(Prepared::Lost),
        Waited::Busy => return poll_later(app, lease, job).await,
    };
    let (parts, failures) = plan(job, &status, &app.settings.limits)?;
    let parts = with_members(source, parts);
    if parts.is_empty() {
        return Err(Error::BadRequest(
            "Import failed: the source exported no relation".into(),
        ));
    }
    let plan = Plan::of(&parts);
    if let Some(archive_key) = &job.archive_key {
        plan.save(app, &staging(archive_key)).await?;
    }
    let update = JobUpdate {
        failures: Some(failures),
        bulk_plan: Some(BulkPlan {
            source_project_id: project_id,
            parts: parts.len() as u32,
            not_migrated: not_migrated(remote, project_id, &parts).await?,
        }),
        ..JobUpdate::default()
    };
    // Let go first: the last file's message queues the job again, and must
    // find it free.
    if !lease.pause(update).await? {
        return Ok(Prepared::Lost);
    }
    let messages = plan.first_missing(job, &[], app.settings.relation_export_window);
    app.queue.send(&messages).await?;
    tracing::info!(files = parts.len(), "the source exported the project");
    Ok(Prepared::Waiting)
}

/// The files of the source's export, and the relations it failed (GitLab's
/// entity ends `finished` with them as failures, unless every relation
/// failed). A source claiming more relations or files than an archive may
/// hold is refused whole, before anything is planned.
fn plan(
    job: &Job,
    status: &[SourceRelation],
    limits: &crate::archive::Limits,
) -> Result<(Vec<Part>, Vec<ImportFailure>)> {
    let relations = status.len();
    // `self` is no relation file.
    let max_relations = limits.max_relations + 1;
    if relations > max_relations {
        return Err(Error::BadRequest(format!(
            "the source exported {relations} relations, more than the {max_relations} an import takes"
        )));
    }
    let files: u64 = status
        .iter()
        .map(|r| {
            if r.batched {
                u64::from(r.batches_count)
            } else {
                1
            }
        })
        .sum();
    if files > MAX_SOURCE_FILES {
        return Err(Error::BadRequest(format!(
            "the source exported {files} files, more than the {MAX_SOURCE_FILES} a migration takes"
        )));
    }
    let mut parts = Vec::new();
    let mut failures = Vec::new();
    for relation in status {
        match files_of(relation) {
            Ok(files) => parts.extend(files),
            Err(reason) => {
                let at = (failures.len(), relation.relation.as_str());
                failures.push(failure(job, at, PIPELINE_ERROR, reason));
            }
        }
    }
    Ok((parts, failures))
}

/// What the source project has that no file of its export brings: a
/// wiki or snippets' repositories that GitLab serves over git only (this
/// server exports them as relations of its own, and lists neither).
async fn not_migrated(
    remote: &SourceInstance,
    project_id: u64,
    parts: &[Part],
) -> Result<Vec<String>> {
    let mut missing = Vec::new();
    for (relation, list) in [("wiki", "wikis"), ("snippet_repositories", "snippets")] {
        let exported = parts.iter().any(|part| part.relation == relation);
        if !exported && remote.lists_any(project_id, list).await? {
            missing.push(relation.to_owned());
        }
    }
    Ok(missing)
}

/// The files to download, with the members part when members come too
/// (in place of any the source listed: GitLab's exports leave them out).
fn with_members(source: &BulkSource, parts: Vec<Part>) -> Vec<Part> {
    let mut parts: Vec<Part> = parts
        .into_iter()
        .filter(|part| part.relation != members::RELATION)
        .collect();
    if source.migrate_memberships && !parts.is_empty() {
        parts.push(members::part());
    }
    parts
}

/// Step 2: one file of the source's export, downloaded (a file relation's
/// over as many runs as it takes); the last one queues the job again.
pub(super) async fn download_part(app: &App, message: &Message, deadline: Deadline) -> Result<()> {
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
        if archive::is_staged(app, &part, &staging).await? {
            // Delivered again: staged already.
            return Ok(Staging::Whole);
        }
        let remote = connect(app, source)?;
        let limit = app.settings.max_upload_bytes;
        if relations::is_file_relation(&part.relation) {
            let download =
                |from| remote.download(project_id, &part.relation, part.batch, limit, from);
            return stage_files(app, &part, &staging, mtime(&job), deadline, download).await;
        }
        let body: crate::stream::ByteStream = if part == members::part() {
            let (gzip, failures) = members::fetch(app, &job, &remote, project_id).await?;
            members::save_failures(app, &staging, &failures).await?;
            Box::pin(futures::stream::once(async move { Ok(gzip) }))
        } else {
            remote
                .download(project_id, &part.relation, part.batch, limit, 0)
                .await?
                .body
        };
        stage(app, &part, &staging, body).await?;
        Ok(Staging::Whole)
    }
    .await;
    let stopped = match downloaded {
        Ok(Staging::Whole) => None,
        Ok(Staging::Stopped { resumed_from }) => Some(resumed_from),
        Err(err) if err.is_permanent() => {
            // The entity cannot be imported whole: it fails now.
            let reason = crate::redact::text(&err.to_string()).into_owned();
            super::abandon(app, &job.id, When::Unleased(now()), reason).await?;
            return Ok(());
        }
        Err(err) => return Err(err),
    };
    if app
        .jobs
        .job(&job.id)
        .await?
        .is_none_or(|job| job.status.is_done())
    {
        // Failed or canceled meanwhile: its folder is gone, and so is this
        // (the whole folder: this file may have made it again).
        app.blobs
            .delete_prefix(&keys::upload_folder(archive_key))
            .await?;
        return Ok(());
    }
    if let Some(resumed_from) = stopped {
        // Moving, for the stale-job sweep; the same message goes on. Runs
        // that went on from the same progress (a delivery twice) queue one
        // message between them, by a ticket; a run going on from another
        // run's progress queues its own.
        app.jobs
            .record_progress(&job.id, When::started(), JobUpdate::default())
            .await?;
        let batch = part.batch.unwrap_or(0);
        let sequence = format!(
            "direct_transfer:{}:{relation}.{batch}:{resumed_from}",
            job.id
        );
        if app.jobs.next_number(&sequence).await? == 1 {
            app.queue.send(&[part.message(&job)]).await?;
        }
        return Ok(());
    }
    let staged = parts_of(&staged_files(app, &staging).await?);
    // Progress the sweep sees: a long migration is not a stalled one.
    let progress = JobUpdate {
        processed: Some(staged.len() as u64),
        ..JobUpdate::default()
    };
    app.jobs
        .record_progress(&job.id, When::started(), progress)
        .await?;
    if staged.len() >= expected as usize {
        app.queue.send(&[Message::for_job(&job)]).await?;
        return Ok(());
    }
    // The next file of the window. Each file that ends takes a ticket, and
    // ticket n queues the file `window - 1 + n` in download order: files
    // delivered twice, even at the same moment, each queue a file of their
    // own, never one twice. A lost message is found by the stale-job sweep.
    let ticket = app
        .jobs
        .next_number(&format!("direct_transfer:{}", job.id))
        .await?;
    let plan = Plan::load(app, &staging).await?;
    let window = app.settings.relation_export_window as u64;
    let next = usize::try_from(window - 1 + ticket).unwrap_or(usize::MAX);
    if let Some(next) = plan.parts().nth(next).filter(|p| !staged.contains(p)) {
        app.queue.send(&[next.message(&job)]).await?;
    }
    Ok(())
}

/// Where the source's export stands after a run's polls.
enum Waited {
    Done(Vec<SourceRelation>),
    /// Still exporting: a later message polls again.
    Busy,
    /// The run no longer owns its job.
    Lost,
}

/// Polls the source's relations export until no relation is in progress,
/// for at most `WAIT_IN_A_RUN` (and not past the run's deadline).
async fn wait_for_export(
    remote: &SourceInstance,
    project_id: u64,
    lease: &Lease,
    deadline: Deadline,
) -> Result<Waited> {
    let started = tokio::time::Instant::now();
    let mut pause = FIRST_POLL;
    loop {
        let status = remote.relations_export_status(project_id).await?;
        let busy = status.is_empty()
            || status
                .iter()
                .any(|r| r.status == 0 || r.batches.iter().any(|b| b.status == 0));
        if !busy {
            return Ok(Waited::Done(status));
        }
        if !lease.confirm().await? {
            return Ok(Waited::Lost);
        }
        if started.elapsed() + pause > WAIT_IN_A_RUN || deadline.passed() {
            return Ok(Waited::Busy);
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(MAX_POLL);
    }
}

/// Lets go of the job while the source exports, and queues it again for
/// later; past `EXPORT_TIMEOUT` the entity fails.
async fn poll_later(app: &App, lease: &Lease, job: &Job) -> Result<Prepared> {
    let waited = (now() - job.created_at).to_std().unwrap_or_default();
    if waited > EXPORT_TIMEOUT {
        return Err(Error::BadRequest(format!(
            "the source instance did not finish exporting the project within {} hours",
            EXPORT_TIMEOUT.as_secs() / 3600
        )));
    }
    if !lease.pause(JobUpdate::default()).await? {
        return Ok(Prepared::Lost);
    }
    let (soonest, latest) = LATER_POLL;
    let delay = (waited / 4).clamp(soonest, latest);
    app.queue
        .send_later(&[Message::for_job(job)], delay)
        .await?;
    tracing::info!(
        waited = waited.as_secs(),
        next_in = delay.as_secs(),
        "the source is still exporting"
    );
    Ok(Prepared::Waiting)
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

/// A relation the source failed to export.
const PIPELINE_ERROR: &str = "BulkImports::PipelineError";

/// The `index`th failure of a relation, as GitLab lists it in the entity's
/// failures.
fn failure(job: &Job, at: (usize, &str), class: &str, reason: String) -> ImportFailure {
    let (index, relation) = at;
    ImportFailure {
        id: index as u64 + 1,
        created_at: now(),
        exception_class: class.into(),
        exception_message: reason,
        source: format!("direct_transfer:{}", job.id),
        relation_name: relation.to_owned(),
        line_number: 0,
    }
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
        assert_eq!(Part::of_key(&Plan::key(staging), staging), None);
    }

    #[test]
    fn a_plan_lists_its_files_in_order() {
        let part = |relation: &str, batch| Part {
            relation: relation.into(),
            batch,
        };
        let parts = vec![
            part("self", None),
            part("issues", Some(1)),
            part("issues", Some(2)),
            part("labels", None),
            part("notes", Some(1)),
        ];
        let plan = Plan::of(&parts);
        assert_eq!(plan.0.len(), 4);
        assert_eq!(plan.parts().collect::<Vec<_>>(), parts);
    }
}
