//! GitLab's project relations export: one file per top-level relation (and
//! `self` and the file relations), each built by its own queue message, in
//! parallel; batched relations split into batches of their own.

use std::collections::BTreeMap;

use crate::domain::{
    new_id, now, Job, JobKind, JobStatus, JobUpdate, Message, Project, RelationExportPart, When,
};
use crate::relations::{self, FILE_RELATIONS, SELF_RELATION};
use crate::service::content_files_prefix;
use crate::{keys, App, Error, Result};

/// Where a part's file goes.
pub fn part_key(project_id: u64, run_id: &str, relation: &str, batch: Option<u32>) -> String {
    let file = relations::export_file_name(relation);
    keys::relation_export_part_key(project_id, run_id, relation, batch, &file)
}

/// Every relation a project's relations export has, with its object count:
/// `self`, each tree relation but the skipped ones (known ones always,
/// unknown ones if stored) and GitLab's file relations (empty ones too).
async fn portable_relations(app: &App, project: &Project) -> Result<Vec<(String, u64)>> {
    let mut out = vec![(SELF_RELATION.to_owned(), 1)];
    let mut records: BTreeMap<String, u64> = BTreeMap::new();
    let mut files: BTreeMap<&str, u64> = BTreeMap::new();
    for (_, stats) in super::content_relations(app, project).await? {
        records.insert(stats.relation, stats.records);
    }
    if let Some(content) = &project.content {
        let prefix = content_files_prefix(project.id, content);
        for blob in app.blobs.list(&prefix).await? {
            if let Some(relation) = relations::file_relation_of(&blob.key[prefix.len()..]) {
                *files.entry(relation).or_default() += 1;
            }
        }
    }
    for skipped in relations::SKIPPED_RELATIONS {
        records.remove(*skipped);
    }
    for relation in relations::RELATIONS {
        if relations::SKIPPED_RELATIONS.contains(&relation.name) {
            continue;
        }
        out.push((
            relation.name.to_owned(),
            records.remove(relation.name).unwrap_or(0),
        ));
    }
    out.extend(records);
    // In GitLab's order of file relations.
    for (name, _) in FILE_RELATIONS {
        let count = files.get(name).copied().unwrap_or(0);
        if relations::PORTABLE_FILE_RELATIONS.contains(name) || count > 0 {
            out.push(((*name).to_owned(), count));
        }
    }
    Ok(out)
}

/// Starts a new run: replaces the previous one and queues one message per
/// relation (per batch when `batched`). Not rate limited: GitLab's limits
/// are on full exports and their downloads, and direct transfer calls this
/// once per project it migrates.
pub async fn start_run(app: &App, project: &Project, batched: bool) -> Result<()> {
    let run_id = new_id();
    let batch_size = app.settings.relation_batch_records.max(1);
    let part = |relation: &str, objects_count: u64| RelationExportPart {
        project_id: project.id,
        relation: relation.to_owned(),
        batch: None,
        run_id: run_id.clone(),
        content: project.relation_generation(relation).map(str::to_owned),
        status: JobStatus::Queued,
        error: None,
        batched: false,
        batches_count: 0,
        objects_count,
        first_seq: 0,
        exported: 0,
        archive_key: None,
        updated_at: now(),
    };
    let mut parts = Vec::new();
    for (relation, objects) in portable_relations(app, project).await? {
        let is_tree = relation != SELF_RELATION && !relations::is_file_relation(&relation);
        if !(batched && is_tree) {
            parts.push(part(&relation, objects));
            continue;
        }
        let batches = objects.div_ceil(batch_size);
        let mut whole = part(&relation, objects);
        whole.batched = true;
        whole.batches_count = batches as u32;
        if batches == 0 {
            // Nothing to export: done at once, as GitLab reports empty relations.
            whole.status = JobStatus::Finished;
        }
        parts.push(whole);
        for n in 0..batches {
            let mut batch = part(&relation, batch_size.min(objects - n * batch_size));
            batch.batched = true;
            batch.batch = Some(n as u32 + 1);
            batch.first_seq = n * batch_size;
            parts.push(batch);
        }
    }
    // The store's order (relation, then batch): the order parts are sent in.
    parts.sort_by(|a, b| {
        (&a.relation, a.batch.unwrap_or(0)).cmp(&(&b.relation, b.batch.unwrap_or(0)))
    });
    let previous = app
        .jobs
        .latest_job(project.id, JobKind::RelationExport)
        .await?;
    // The run as a job of its own: what the stale-job sweep watches.
    let mut run = Job::new(JobKind::RelationExport, project.id, project.owner_id);
    run.id = run_id.clone();
    super::history::create_job(app, &run).await?;
    let window = app.settings.relation_export_window.max(1);
    let messages: Vec<Message> = sent_in_order(&parts)
        .filter(|p| p.status == JobStatus::Queued)
        .take(window)
        .map(message_for)
        .collect();
    let fanned_out = sent_in_order(&parts)
        .filter(|p| p.status == JobStatus::Queued)
        .count() as u64;
    app.jobs.replace_relation_export(project.id, parts).await?;
    app.queue.send(&messages).await?;
    app.metrics.relation_parts_queued(&run, fanned_out);
    if let Some(previous) = previous {
        // The runs before the previous one were replaced when it started.
        let kept = [run_id.as_str(), previous.id.as_str()];
        prune_runs(app, project.id, &kept, previous.created_at).await;
    }
    Ok(())
}

/// Deletes the files of the project's relations export runs that started
/// before `replaced_at` (when a run replaced them: status and download then
/// reach only the new run), but not `kept`, once that was at least a
/// download URL's lifetime ago: until then a client may hold a URL to one
/// of their files, or be reading it. A run that started later is newer and
/// never touched, whoever prunes (a late delivery for an old run). Runs
/// replaced later go at a later prune (the next run's start or finish), so
/// a project keeps at most two runs' files. A failure is only logged: the
/// files go at the next prune.
pub async fn prune_runs(
    app: &App,
    project_id: u64,
    kept: &[&str],
    replaced_at: chrono::DateTime<chrono::Utc>,
) {
    let grace = chrono::Duration::from_std(app.settings.download_ttl).unwrap_or_default();
    if now() - replaced_at < grace {
        return;
    }
    let pruned = async {
        let prefix = keys::relation_exports_prefix(project_id);
        let mut runs = std::collections::BTreeSet::new();
        for blob in app.blobs.list(&prefix).await? {
            if let Some((run, _)) = blob.key[prefix.len()..].split_once('/') {
                if !kept.contains(&run) {
                    runs.insert(run.to_owned());
                }
            }
        }
        let mut pruned = 0;
        for run in &runs {
            // A run whose job is gone (expired) is older than any kept one.
            if let Some(job) = app.jobs.job(run).await? {
                if job.created_at >= replaced_at {
                    continue;
                }
            }
            let run_files = keys::relation_export_run_prefix(project_id, run);
            app.blobs.delete_prefix(&run_files).await?;
            pruned += 1;
        }
        Ok::<_, Error>(pruned)
    }
    .await;
    match pruned {
        Ok(0) => {}
        Ok(runs) => tracing::info!(project_id, runs, "replaced relations exports deleted"),
        Err(err) => {
            tracing::warn!(project_id, error = %err, "cannot delete replaced relations exports")
        }
    }
}

/// The parts that get a message of their own, in the order they are sent:
/// all but a batched relation's own row (its batches do the work).
pub fn sent_in_order(parts: &[RelationExportPart]) -> impl Iterator<Item = &RelationExportPart> {
    parts.iter().filter(|p| !(p.batched && p.batch.is_none()))
}

pub fn message_for(part: &RelationExportPart) -> Message {
    Message {
        kind: JobKind::RelationExport,
        job_id: part.run_id.clone(),
        project_id: part.project_id,
        relation: Some(part.relation.clone()),
        batch: part.batch,
    }
}

/// After the part a message names has ended (finished or failed): queues the
/// part a window after it, and ends the run once every part has. Safe to
/// call twice: a part queued twice is built once.
///
/// It reads the part and the few after it, not the whole run: a run of P
/// parts costs O(P) reads, not O(P²). Only the parts of the last window,
/// which have no successor to queue, read the whole run to see whether it
/// has ended; the part that ends last is always one of them, since every
/// other part's successor starts only once it has ended.
pub async fn advance(app: &App, message: &Message) -> Result<()> {
    let Some(relation) = message.relation.as_deref() else {
        return Ok(());
    };
    let window = app.settings.relation_export_window.max(1);
    let page = window + 1;
    let mut ahead = app
        .jobs
        .relation_export_parts_from(message.project_id, relation, message.batch, page)
        .await?;
    let Some(part) = ahead
        .first()
        .filter(|p| p.relation == relation && p.batch == message.batch)
        .cloned()
    else {
        return Ok(());
    };
    if part.run_id != message.job_id || !part.status.is_done() {
        return Ok(()); // a newer run replaced this one, or it is not done
    }
    // Rows that get no message (a batched relation's own row, empty
    // relations) may come in any number: read on until `window` rows that
    // do, or the end.
    let mut fetched = ahead.len();
    while fetched == page && sent_in_order(&ahead[1..]).count() < window {
        let Some(last) = ahead.last() else { break };
        let (from, batch) = (last.relation.clone(), last.batch);
        let more = app
            .jobs
            .relation_export_parts_from(message.project_id, &from, batch, page)
            .await?;
        fetched = more.len();
        // The page starts with the row it was read from.
        ahead.extend(more.into_iter().skip(1));
    }
    let successors: Vec<&RelationExportPart> = sent_in_order(&ahead[1..]).collect();
    let mut all_finished = false;
    let mut exported = 0;
    let to = match successors.get(window - 1) {
        Some(next) => {
            if next.status == JobStatus::Queued && next.run_id == part.run_id {
                app.queue.send(&[message_for(next)]).await?;
            }
            JobStatus::Started
        }
        None => {
            let parts = app.jobs.relation_export_parts(message.project_id).await?;
            let sent: Vec<&RelationExportPart> = sent_in_order(&parts).collect();
            // Rows of this run only: a newer run that replaced it meanwhile
            // must not have its files taken for older ones.
            all_finished = sent
                .iter()
                .all(|p| p.status == JobStatus::Finished && p.run_id == part.run_id);
            exported = sent.iter().map(|p| p.exported).sum();
            if sent.iter().all(|p| p.status.is_done()) {
                JobStatus::Finished
            } else {
                JobStatus::Started
            }
        }
    };
    // Also a sign of life for the sweep while the run goes on.
    let run = app
        .jobs
        .transition(
            &message.job_id,
            When::status_in(&[JobStatus::Queued, JobStatus::Started]),
            to,
            JobUpdate::default(),
        )
        .await?;
    if let Some(run) = run.as_ref().filter(|_| to == JobStatus::Finished) {
        // A run with a failed relation ends `finished` in GitLab's terms;
        // for the operator it failed.
        let mut measured = run.clone();
        measured.processed = exported;
        if !all_finished {
            measured.status = JobStatus::Failed;
        }
        app.metrics.job_ended(&measured, None);
    }
    if let Some(run) = run.filter(|_| to == JobStatus::Finished && all_finished) {
        // Every relation of the new run can be downloaded: the older runs
        // can go. A run with a failed relation leaves them.
        prune_runs(app, message.project_id, &[&run.id], run.created_at).await;
    }
    Ok(())
}

/// GitLab's status of one relation: `0` started, `1` finished, `-1` failed.
pub fn status_code(status: JobStatus) -> i8 {
    match status {
        JobStatus::Queued | JobStatus::Started => 0,
        JobStatus::Finished => 1,
        JobStatus::Failed => -1,
    }
}

/// One relation of a run with its batches; a batched relation's status,
/// error and progress come from its batches.
#[derive(Debug, Clone)]
pub struct RelationState {
    pub part: RelationExportPart,
    pub batches: Vec<RelationExportPart>,
}

impl RelationState {
    pub fn status(&self) -> JobStatus {
        if !self.part.batched || self.batches.is_empty() {
            return self.part.status;
        }
        if self.batches.iter().any(|b| b.status == JobStatus::Failed) {
            JobStatus::Failed
        } else if self.batches.iter().all(|b| b.status == JobStatus::Finished) {
            JobStatus::Finished
        } else {
            JobStatus::Started
        }
    }

    pub fn error(&self) -> Option<&str> {
        self.part
            .error
            .as_deref()
            .or_else(|| self.batches.iter().find_map(|b| b.error.as_deref()))
    }

    pub fn exported(&self) -> u64 {
        if self.part.batched {
            self.batches.iter().map(|b| b.exported).sum()
        } else {
            self.part.exported
        }
    }

    pub fn updated_at(&self) -> chrono::DateTime<chrono::Utc> {
        self.batches
            .iter()
            .map(|b| b.updated_at)
            .chain([self.part.updated_at])
            .max()
            .unwrap_or(self.part.updated_at)
    }
}

/// The project's latest run, relation by relation.
pub async fn states(app: &App, project: &Project) -> Result<Vec<RelationState>> {
    let mut states: Vec<RelationState> = Vec::new();
    for part in app.jobs.relation_export_parts(project.id).await? {
        match part.batch {
            None => states.push(RelationState {
                part,
                batches: Vec::new(),
            }),
            Some(_) => {
                if let Some(state) = states
                    .iter_mut()
                    .rev()
                    .find(|s| s.part.relation == part.relation)
                {
                    state.batches.push(part);
                }
            }
        }
    }
    states.sort_by_key(|s| relations::relation_export_rank(&s.part.relation));
    Ok(states)
}

/// A relation name a client may download: GitLab's "portable" relations
/// (its `project_portable` validator) plus any relation this project
/// stores that GitLab's tree does not name.
async fn check_portable(app: &App, project: &Project, relation: &str) -> Result<()> {
    let known = relation == SELF_RELATION
        || relations::find(relation).is_some()
        || relations::is_file_relation(relation);
    if relations::SKIPPED_RELATIONS.contains(&relation) {
        return Err(not_portable());
    }
    if known {
        return Ok(());
    }
    if relations::is_valid_name(relation) {
        let stored = super::content_relations(app, project).await?;
        if stored.iter().any(|(_, s)| s.relation == relation) {
            return Ok(());
        }
    }
    Err(not_portable())
}

/// Grape's validation error, as GitLab's `project_portable` validator says it.
fn not_portable() -> Error {
    Error::InvalidParameter("relation is not portable".into())
}

/// The state of one relation, for `?relation=`: its rows only, not the run's.
/// GitLab's status route does not check portability: a relation no run has
/// is `404 Export not found`.
pub async fn state(app: &App, project: &Project, relation: &str) -> Result<RelationState> {
    let part = own_row(app, project, relation).await?;
    let batches = if part.batched && part.batches_count > 0 {
        app.jobs
            .relation_export_parts_from(project.id, relation, Some(1), part.batches_count as usize)
            .await?
            .into_iter()
            .filter(|p| p.relation == relation && p.batch.is_some())
            .collect()
    } else {
        Vec::new()
    };
    Ok(RelationState { part, batches })
}

/// The relation's own row of the latest run.
async fn own_row(app: &App, project: &Project, relation: &str) -> Result<RelationExportPart> {
    app.jobs
        .relation_export_parts_from(project.id, relation, None, 1)
        .await?
        .into_iter()
        .find(|p| p.relation == relation && p.batch.is_none())
        .ok_or_else(|| Error::NotFound("Export not found".into()))
}

/// Where to download a finished relation (or batch) from.
pub async fn download(
    app: &App,
    project: &Project,
    relation: &str,
    batch: Option<u32>,
) -> Result<super::Download> {
    check_portable(app, project, relation).await?;
    // Two rows read, whatever the run's size: direct transfer downloads
    // every batch of every relation.
    let own = own_row(app, project, relation).await?;
    let target = match (own.batched, batch) {
        (true, None) => return Err(Error::BadRequest("Export is batched".into())),
        (false, Some(_)) => return Err(Error::BadRequest("Export is not batched".into())),
        (false, None) => own,
        (true, Some(n)) => app
            .jobs
            .relation_export_parts_from(project.id, relation, Some(n), 1)
            .await?
            .into_iter()
            .find(|b| b.relation == relation && b.batch == Some(n) && b.run_id == own.run_id)
            .ok_or_else(|| Error::NotFound("Batch not found".into()))?,
    };
    let missing = || match batch {
        Some(_) => Error::NotFound("Batch file not found".into()),
        None => Error::NotFound("Export file not found".into()),
    };
    if target.status != JobStatus::Finished {
        return Err(missing());
    }
    let key = target.archive_key.clone().ok_or_else(missing)?;
    Ok(super::Download {
        key,
        file_name: relations::export_file_name(relation),
    })
}
