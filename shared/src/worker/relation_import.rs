//! Imports one relation of an archive into an existing project, adding only
//! the records the project does not have yet.
//!
//! The merged relation is written to a new generation that only holds this
//! relation; the project is switched to it in one conditional write, so a
//! failed or concurrent run never shows a mix. New records take their place
//! in the archive's order: each goes right after the existing record that
//! precedes it in the archive (at the start when none does).

use std::collections::{HashMap, HashSet};

use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::archive_events::{ArchiveEvents, Reading};
use super::generation;
use super::lease::{claim, Claim, Lease};
use super::records::{failures_of, RecordWriter};
use crate::archive::{raw_json, ImportEvent};
use crate::domain::{Job, JobUpdate, Project, RelationCounts};
use crate::ports::{GenerationRef, RecordPages, StoredRecord};
use crate::{relations, stream, App, Error, Result};

pub(super) async fn run(app: &App, job_id: &str) -> Result<()> {
    let Claim::Won(lease, job) = claim(app, job_id).await? else {
        return Ok(());
    };
    let outcome = import_relation(app, &lease, job).await;
    lease.end(outcome).await
}

async fn import_relation(app: &App, lease: &Lease, job: Job) -> Result<()> {
    let Some(relation) = job.relation.clone() else {
        return lease.fail("the job names no relation".into()).await;
    };
    let Some(project) = app.projects.project(job.project_id).await? else {
        return lease.fail("the project no longer exists".into()).await;
    };
    if generation::published_by(&project, &job, Some(&relation)) {
        let counts = job.relation_counts.clone();
        return finish(app, lease, &relation, counts, None, None).await;
    }
    let Some(upload) = job.archive_key.clone() else {
        return lease.fail("the job has no uploaded archive".into()).await;
    };
    generation::discard_earlier_runs(app, &project, &job, |g| vec![generation::staging(g)]).await?;
    let generation = job.generation(lease.attempt());
    let staged = generation::staging(&generation);
    for name in [&generation, &staged] {
        let at = GenerationRef::new(project.id, name);
        if !app
            .content
            .claim_generation(at, lease.attempt(), &Default::default())
            .await?
        {
            return Ok(());
        }
    }
    let archive = match app.blobs.reader(&upload).await {
        Ok(archive) => archive,
        Err(Error::NotFound(_)) => {
            return lease.fail("the uploaded archive is missing".into()).await
        }
        Err(err) => return Err(err),
    };
    let (archive, archive_bytes) = crate::stream::counted(archive);
    tracing::info!(relation, generation, "relation import started");
    let merged = Merge {
        app,
        project: &project,
        lease,
        relation: &relation,
        generation: &generation,
        staged: &staged,
    }
    .run(archive)
    .await;
    generation::discard(app, project.id, &staged).await?;
    let counts = match merged {
        Ok(counts) => counts,
        Err(err) => {
            generation::discard(app, project.id, &generation).await?;
            if err.is_permanent() {
                app.blobs
                    .delete_prefix(&crate::keys::upload_folder(&upload))
                    .await?;
                let failures = failures_of(app, &err, "relation_import").await?;
                return lease.fail_with(err.to_string(), failures).await;
            }
            return Err(err);
        }
    };
    let mut updated = project.clone();
    let replaced = updated
        .relation_content
        .insert(relation.clone(), generation.clone());
    if !lease.confirm().await? {
        // Another run owns the job now and publishes its own merge.
        generation::discard(app, project.id, &generation).await?;
        return Ok(());
    }
    if !app.projects.switch_content(&updated).await? {
        // The project changed while we merged against it: merge again. This
        // run's generation was never shown, so dropping it loses nothing.
        generation::discard(app, project.id, &generation).await?;
        return Err(Error::Storage(
            "the project's content changed during the relation import".into(),
        ));
    }
    let read = archive_bytes.load(std::sync::atomic::Ordering::Relaxed);
    finish(
        app,
        lease,
        &relation,
        counts,
        replaced.as_deref(),
        Some(read),
    )
    .await?;
    app.blobs
        .delete_prefix(&crate::keys::upload_folder(&upload))
        .await?;
    Ok(())
}

async fn finish(
    app: &App,
    lease: &Lease,
    relation: &str,
    counts: std::collections::BTreeMap<String, RelationCounts>,
    replaced: Option<&str>,
    archive_bytes: Option<u64>,
) -> Result<()> {
    let stored = counts.get(relation).map_or(0, |c| c.stored);
    let update = JobUpdate {
        processed: Some(stored),
        relation_counts: Some(counts),
        ..JobUpdate::default()
    };
    let finished = lease.finish(update, archive_bytes).await?;
    if let (Some(job), Some(old)) = (finished, replaced) {
        // Only a generation this relation had on its own; the project's main
        // generation still holds its other relations.
        generation::discard(app, job.project_id, old).await?;
    }
    tracing::info!(relation, stored, "relation import finished");
    Ok(())
}

/// A record's identity within its relation.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum RecordKey {
    Iid(i64),
    Digest([u8; 32]),
}

fn record_key(relation: &str, json: &[u8]) -> RecordKey {
    #[derive(Deserialize)]
    struct Keyed {
        iid: Option<Value>,
    }
    if relations::natural_key_field(relation) == Some("iid") {
        if let Ok(Keyed {
            iid: Some(Value::Number(iid)),
        }) = serde_json::from_slice::<Keyed>(json)
        {
            if let Some(iid) = iid.as_i64() {
                return RecordKey::Iid(iid);
            }
        }
    }
    let mut hasher = Sha256::new();
    let canonical = std::str::from_utf8(json)
        .map_err(|_| ())
        .and_then(|text| raw_json::canonical(text, &mut |b| hasher.update(b)).map_err(|_| ()));
    if canonical.is_err() {
        // Stored records are valid JSON; the bytes still identify one that is not.
        hasher = Sha256::new();
        hasher.update(json);
    }
    RecordKey::Digest(hasher.finalize().into())
}

/// Runs of staged records (`start..end` staging seqs) to insert after an
/// existing record, or at the start (`None`).
type Runs = HashMap<Option<RecordKey>, Vec<(u64, u64)>>;

struct Merge<'a> {
    app: &'a App,
    project: &'a Project,
    lease: &'a Lease,
    relation: &'a str,
    generation: &'a str,
    staged: &'a str,
}

impl Merge<'_> {
    async fn run(
        &self,
        archive: stream::BlockingReader,
    ) -> Result<std::collections::BTreeMap<String, RelationCounts>> {
        let base = self.project.relation_generation(self.relation);
        let existing = self.existing_keys(base).await?;
        let (runs, mut counts) = self.stage_new(archive, &existing).await?;
        self.write_merged(base, runs).await?;
        counts.stored = counts.read - counts.skipped;
        Ok([(self.relation.to_owned(), counts)].into())
    }

    fn at<'g>(&'g self, generation: &'g str) -> GenerationRef<'g> {
        GenerationRef::new(self.project.id, generation)
    }

    fn pages<'g>(&'g self, generation: &'g str) -> RecordPages<'g> {
        RecordPages::new(
            self.app.content.as_ref(),
            self.at(generation),
            self.relation,
            self.app.settings.export_page_records,
        )
    }

    async fn existing_keys(&self, base: Option<&str>) -> Result<HashSet<RecordKey>> {
        let mut keys = HashSet::new();
        let Some(base) = base else { return Ok(keys) };
        let mut pages = self.pages(base);
        while let Some(page) = pages.next().await? {
            keys.extend(page.iter().map(|r| record_key(self.relation, &r.json)));
        }
        Ok(keys)
    }

    /// Reads the relation from the archive and stages the records the
    /// project lacks, noting where each run of them goes.
    async fn stage_new(
        &self,
        archive: stream::BlockingReader,
        existing: &HashSet<RecordKey>,
    ) -> Result<(Runs, RelationCounts)> {
        let limits = self.app.settings.limits.clone();
        let relation = Reading::Relation(self.relation.to_owned());
        let mut events = ArchiveEvents::read(archive, limits, relation);
        let mut writer = RecordWriter::new(self.app, self.at(self.staged), self.lease.attempt());
        let mut counts = RelationCounts::default();
        let mut runs = Runs::new();
        let mut anchor: Option<RecordKey> = None;
        let mut added = HashSet::new();
        let stored: Result<()> = async {
            while let Some(event) = events.next().await {
                let ImportEvent::Record { json, .. } = event else {
                    continue;
                };
                counts.read += 1;
                let key = record_key(self.relation, &json);
                if existing.contains(&key) {
                    anchor = Some(key);
                    counts.skipped += 1;
                } else if !added.insert(key) {
                    // Twice in the archive: the first one counts.
                    counts.skipped += 1;
                } else {
                    let seq = writer.records;
                    let run = runs.entry(anchor.clone()).or_default();
                    match run.last_mut() {
                        Some((_, end)) if *end == seq => *end += 1,
                        _ => run.push((seq, seq + 1)),
                    }
                    writer.push(self.relation, json).await?;
                }
                if super::progress_due(counts.read - 1, counts.read) {
                    self.progress(&counts).await?;
                }
            }
            writer.flush().await
        }
        .await;
        let parsed = events.finish().await;
        writer.settle().await;
        stored?;
        parsed?;
        Ok((runs, counts))
    }

    async fn progress(&self, counts: &RelationCounts) -> Result<()> {
        let mut counts = counts.clone();
        counts.stored = counts.read - counts.skipped;
        tracing::info!(
            relation = self.relation,
            read = counts.read,
            stored = counts.stored,
            skipped = counts.skipped,
            "relation import progress"
        );
        self.lease
            .progress(JobUpdate {
                relation_counts: Some([(self.relation.to_owned(), counts)].into()),
                ..JobUpdate::default()
            })
            .await
    }

    /// The existing records in their order, each followed by the new ones
    /// anchored on it.
    async fn write_merged(&self, base: Option<&str>, mut runs: Runs) -> Result<()> {
        let mut out = RecordWriter::new(self.app, self.at(self.generation), self.lease.attempt());
        let mut staged = StagedReader::new(self);
        let written = async {
            if let Some(head) = runs.remove(&None) {
                staged.copy(&head, &mut out).await?;
            }
            if let Some(base) = base {
                let mut pages = self.pages(base);
                while let Some(page) = pages.next().await? {
                    for record in page {
                        let key = record_key(self.relation, &record.json);
                        out.push(self.relation, record.json).await?;
                        if let Some(following) = runs.remove(&Some(key)) {
                            staged.copy(&following, &mut out).await?;
                        }
                    }
                }
            }
            out.flush().await
        }
        .await;
        // The caller cleans up after a failure: nothing may still be writing.
        out.settle().await;
        written
    }
}

/// Reads staged records by their seqs. Runs mostly come in staging order
/// (an archive keeps the project's order), so one stream of pages serves
/// them one after another; a run behind it, or far ahead, opens a new one.
struct StagedReader<'g> {
    merge: &'g Merge<'g>,
    pages: Option<RecordPages<'g>>,
    page: std::collections::VecDeque<StoredRecord>,
    /// The seq the stream gives next.
    position: u64,
}

impl<'g> StagedReader<'g> {
    /// Records skipped rather than read anew when a run starts ahead.
    const SKIP_RECORDS: u64 = 4096;

    fn new(merge: &'g Merge<'g>) -> Self {
        StagedReader {
            merge,
            pages: None,
            page: Default::default(),
            position: 0,
        }
    }

    async fn copy(&mut self, runs: &[(u64, u64)], out: &mut RecordWriter<'_>) -> Result<()> {
        let missing = || Error::Storage("staged records went missing".into());
        for &(start, end) in runs {
            let behind = start < self.position;
            if self.pages.is_none() || behind || start - self.position > Self::SKIP_RECORDS {
                let merge = self.merge;
                let pages = merge.pages(merge.staged).within(start, u64::MAX - start);
                self.pages = Some(pages);
                self.page.clear();
                self.position = start;
            }
            while self.position < end {
                let Some(record) = self.page.pop_front() else {
                    let pages = self.pages.as_mut().ok_or_else(missing)?;
                    self.page = pages.next().await?.ok_or_else(missing)?.into();
                    continue;
                };
                if record.seq != self.position {
                    return Err(missing());
                }
                self.position += 1;
                if record.seq >= start {
                    out.push(self.merge.relation, record.json).await?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_by_iid_or_canonical_json() {
        assert_eq!(
            record_key("issues", br#"{"iid": 7, "title": "a"}"#),
            record_key("issues", br#"{"title": "b", "iid": 7}"#)
        );
        assert_ne!(
            record_key("issues", br#"{"iid": 7}"#),
            record_key("issues", br#"{"iid": 8}"#)
        );
        // Labels have no natural key: the whole record is the identity,
        // whatever the order of its fields.
        assert_eq!(
            record_key("labels", br#"{"title": "x", "color": "red"}"#),
            record_key("labels", br#"{"color":"red","title":"x"}"#)
        );
        assert_ne!(
            record_key("labels", br#"{"title": "x"}"#),
            record_key("labels", br#"{"title": "y"}"#)
        );
        // Two records differing past a float's precision are two records.
        assert_ne!(
            record_key("labels", br#"{"id": 123456789012345678901234567890}"#),
            record_key("labels", br#"{"id": 123456789012345678901234567891}"#)
        );
        // A pipeline without an iid falls back to its content.
        assert!(matches!(
            record_key("ci_pipelines", br#"{"sha": "abc"}"#),
            RecordKey::Digest(_)
        ));
    }

    #[test]
    fn staging_is_beside_the_generation() {
        assert_eq!(generation::staging("j1"), "j1-staged");
    }
}
