//! What both import workers write with: records appended to a content
//! generation in batches, and GitLab's `failed_relations` entry for a record
//! the archive's checks refused.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use tokio::task::JoinHandle;

use crate::archive::{self, ArchiveError};
use crate::domain::{now, ImportFailure, RelationCounts};
use crate::ports::{BatchSize, GenerationRef};
use crate::{App, Error, Result};

/// GitLab's `failed_relations` entry for an error that names a relation
/// file and line; none for other errors.
pub(super) async fn failures_of(
    app: &App,
    err: &Error,
    source: &str,
) -> Result<Vec<ImportFailure>> {
    let Error::Archive(ArchiveError::InvalidRecord { file, line, reason }) = err else {
        return Ok(Vec::new());
    };
    let relation = file
        .strip_prefix(archive::RELATION_DIR)
        .and_then(|name| name.strip_suffix(".ndjson"))
        .unwrap_or("project");
    Ok(vec![ImportFailure {
        id: app.jobs.next_number("import_failure").await?,
        created_at: now(),
        exception_class: "Gitlab::ImportExport::InvalidRecord".into(),
        exception_message: reason.clone(),
        source: source.into(),
        relation_name: relation.into(),
        // GitLab counts a relation's records from 0.
        line_number: line.saturating_sub(1),
    }])
}

/// Appends records to a generation in batches, numbering each relation's
/// records from 0 in the order pushed. One batch is written while the next
/// one fills.
pub(super) struct RecordWriter<'a> {
    app: &'a App,
    at: GenerationRef<'a>,
    /// The run's number, which must own the generation for its writes.
    writer: u32,
    batch_size: BatchSize,
    batch_relation: String,
    batch: Vec<Bytes>,
    batch_bytes: usize,
    /// Per relation: the next seq, which is also the count stored or batched.
    next_seq: HashMap<String, u64>,
    writing: Option<JoinHandle<Result<()>>>,
    pub records: u64,
}

impl<'a> RecordWriter<'a> {
    /// Writes into a generation `writer` has claimed.
    pub fn new(app: &'a App, at: GenerationRef<'a>, writer: u32) -> Self {
        Self::continuing(app, at, writer, &BTreeMap::new())
    }

    /// Goes on after `stored`: the records an earlier run wrote.
    pub fn continuing(
        app: &'a App,
        at: GenerationRef<'a>,
        writer: u32,
        stored: &BTreeMap<String, u64>,
    ) -> Self {
        RecordWriter {
            app,
            at,
            writer,
            batch_size: app.content.batch_size(),
            batch_relation: String::new(),
            batch: Vec::new(),
            batch_bytes: 0,
            next_seq: stored.iter().map(|(r, &n)| (r.clone(), n)).collect(),
            writing: None,
            records: stored.values().sum(),
        }
    }

    /// Per relation, the records given to the store (all of them stored
    /// once `flush` returned).
    pub fn stored(&self) -> BTreeMap<String, u64> {
        self.next_seq
            .iter()
            .map(|(relation, &n)| (relation.clone(), n))
            .collect()
    }

    /// Records per relation so far (a full import stores all it reads).
    pub fn counts(&self) -> BTreeMap<String, RelationCounts> {
        let mut counts = stored_counts(&self.next_seq);
        if !self.batch.is_empty() {
            let pending = counts.entry(self.batch_relation.clone()).or_default();
            pending.read += self.batch.len() as u64;
            pending.stored = pending.read;
        }
        counts
    }

    pub async fn push(&mut self, relation: &str, json: Bytes) -> Result<()> {
        let big = json.len() >= self.batch_size.bytes;
        if relation != self.batch_relation || big {
            // A big record is written on its own, and not beside another
            // write: two of them in memory at most, not three.
            self.start_write().await?;
            if big {
                self.wait_for_write().await?;
            }
            relation.clone_into(&mut self.batch_relation);
        }
        self.batch_bytes += json.len();
        self.batch.push(json);
        self.records += 1;
        if self.batch.len() >= self.batch_size.records || self.batch_bytes >= self.batch_size.bytes
        {
            self.start_write().await?;
        }
        Ok(())
    }

    /// Writes everything pushed so far.
    pub async fn flush(&mut self) -> Result<()> {
        self.start_write().await?;
        self.wait_for_write().await
    }

    /// Waits for a write still under way, whatever its outcome, so that
    /// cleaning up after a failure never races it.
    pub async fn settle(&mut self) {
        let _ = self.wait_for_write().await;
    }

    /// Starts writing the batch once the previous write is done.
    async fn start_write(&mut self) -> Result<()> {
        self.wait_for_write().await?;
        if self.batch.is_empty() {
            return Ok(());
        }
        let seq = self
            .next_seq
            .entry(self.batch_relation.clone())
            .or_insert(0);
        let first = *seq;
        *seq += self.batch.len() as u64;
        let capacity = self.batch_size.records.min(1024);
        let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(capacity));
        self.batch_bytes = 0;
        let content = self.app.content.clone();
        let (project_id, generation) = (self.at.project_id, self.at.name.to_owned());
        let (relation, writer) = (self.batch_relation.clone(), self.writer);
        self.writing = Some(tokio::spawn(async move {
            let at = GenerationRef::new(project_id, &generation);
            content
                .put_records(at, writer, &relation, first, batch)
                .await
        }));
        Ok(())
    }

    async fn wait_for_write(&mut self) -> Result<()> {
        match self.writing.take() {
            Some(write) => write.await.map_err(Error::internal)?,
            None => Ok(()),
        }
    }
}

/// Counts of a full import, which stores every record it reads.
pub(super) fn stored_counts<'r>(
    records: impl IntoIterator<Item = (&'r String, &'r u64)>,
) -> BTreeMap<String, RelationCounts> {
    records
        .into_iter()
        .map(|(relation, &stored)| {
            let count = RelationCounts {
                read: stored,
                stored,
                skipped: 0,
            };
            (relation.clone(), count)
        })
        .collect()
}
