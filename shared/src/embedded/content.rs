//! Content generations in the embedded database: attributes, and each
//! relation's records packed in chunks (`chunks`) with per-relation counts.

use std::collections::BTreeMap;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::{stream, StreamExt};
use redb::{ReadableTable, TableDefinition, WriteTransaction};

use super::chunks::{self, CHUNK_BYTES, RECORD_CHUNKS};
use super::stores::EmbeddedStore;
use crate::ports::{
    BatchSize, ContentStore, GenerationRef, RecordRange, RecordStream, RelationStats,
    StoredGeneration, StoredRecord,
};
use crate::{Error, Result};

const ATTRIBUTES: TableDefinition<&str, &[u8]> = TableDefinition::new("attributes");
/// (generation, relation) → (records, NDJSON bytes)
const RELATION_STATS: TableDefinition<(&str, &str), (u64, u64)> =
    TableDefinition::new("relation_stats");
/// generation → the one writer allowed to add records to it.
const WRITERS: TableDefinition<&str, u32> = TableDefinition::new("generation_writers");

pub(super) fn create_tables(txn: &WriteTransaction) -> Result<()> {
    // Every table exists from the start, so reads never meet a missing one.
    txn.open_table(ATTRIBUTES)?;
    txn.open_table(RECORD_CHUNKS)?;
    txn.open_table(RELATION_STATS)?;
    txn.open_table(WRITERS)?;
    chunks::migrate(txn)
}
/// A page of records stops growing past this many bytes, whatever its
/// limit, so a relation of large records does not make pages large.
const PAGE_BYTES: usize = 256 * 1024;

impl EmbeddedStore {
    /// Up to `limit` records of a relation from `start` on, in order;
    /// fewer once a page holds `PAGE_BYTES`, none past the end.
    async fn records(
        &self,
        generation: &str,
        relation: &str,
        start: u64,
        limit: usize,
    ) -> Result<Vec<StoredRecord>> {
        let (generation, relation) = (generation.to_owned(), relation.to_owned());
        self.db
            .read(move |txn| {
                let table = txn.open_table(RECORD_CHUNKS)?;
                let (g, r) = (generation.as_str(), relation.as_str());
                // The chunk holding `start` is the last one beginning at or before it.
                let from = table
                    .range((g, r, 0)..=(g, r, start))?
                    .next_back()
                    .transpose()?
                    .map_or(start, |(key, _)| key.value().2);
                let mut out = Vec::with_capacity(limit.min(1024));
                let mut bytes = 0;
                let chunks_from = table.range((g, r, from)..=(g, r, u64::MAX))?;
                'chunks: for item in chunks_from {
                    let (key, value) = item?;
                    // Copied at one size whatever the chunk's length, so that
                    // the copies reuse each other's memory.
                    let mut copy = BytesMut::with_capacity(CHUNK_BYTES.max(value.value().len()));
                    copy.extend_from_slice(value.value());
                    let chunk = copy.freeze();
                    let first = key.value().2;
                    for (seq, range) in (first..).zip(chunks::unpack(&chunk)?) {
                        if out.len() == limit || bytes >= PAGE_BYTES {
                            break 'chunks;
                        }
                        if seq >= start {
                            bytes += range.len();
                            out.push(StoredRecord {
                                seq,
                                json: chunk.slice(range),
                            });
                        }
                    }
                }
                Ok(out)
            })
            .await
    }
}

#[async_trait]
impl ContentStore for EmbeddedStore {
    /// 1 MiB batches cost 2 to 3 MB of peak RSS more than 256 KiB ones and
    /// save a quarter of the hand-overs between the import and the store's
    /// threads (see `archive_events`' batches).
    fn batch_size(&self) -> BatchSize {
        BatchSize {
            records: 1000,
            bytes: 1024 * 1024,
        }
    }

    async fn put_attributes(&self, at: GenerationRef<'_>, attributes: Bytes) -> Result<()> {
        let generation = at.name.to_owned();
        self.db
            .write(move |txn| {
                txn.open_table(ATTRIBUTES)?
                    .insert(generation.as_str(), attributes.as_ref())?;
                Ok(())
            })
            .await
    }

    async fn attributes(&self, at: GenerationRef<'_>) -> Result<Option<Bytes>> {
        let generation = at.name.to_owned();
        self.db
            .read(move |txn| {
                let table = txn.open_table(ATTRIBUTES)?;
                let value = table.get(generation.as_str())?;
                Ok(value.map(|v| Bytes::copy_from_slice(v.value())))
            })
            .await
    }

    async fn claim_generation(
        &self,
        at: GenerationRef<'_>,
        writer: u32,
        keep: &BTreeMap<String, u64>,
    ) -> Result<bool> {
        let generation = at.name.to_owned();
        let keep = keep.clone();
        self.db
            .write(move |txn| {
                let mut writers = txn.open_table(WRITERS)?;
                let owner = writers.get(generation.as_str())?.map(|v| v.value());
                if owner.is_some_and(|owner| owner > writer) {
                    return Ok(false);
                }
                writers.insert(generation.as_str(), writer)?;
                truncate(txn, &generation, &keep)?;
                Ok(true)
            })
            .await
    }

    async fn put_records(
        &self,
        at: GenerationRef<'_>,
        writer: u32,
        relation: &str,
        first_seq: u64,
        records: Vec<Bytes>,
    ) -> Result<()> {
        let (generation, relation) = (at.name.to_owned(), relation.to_owned());
        // A generation's records are read only once a durable switch points
        // a project at it (or a durable checkpoint names them), which
        // persists them too.
        self.db
            .write_deferred(move |txn| {
                let owner = txn
                    .open_table(WRITERS)?
                    .get(generation.as_str())?
                    .map(|v| v.value());
                if owner != Some(writer) {
                    return Err(Error::not_the_writer(&generation, writer));
                }
                let mut table = txn.open_table(RECORD_CHUNKS)?;
                let mut stats = txn.open_table(RELATION_STATS)?;
                let key = (generation.as_str(), relation.as_str());
                let (mut count, mut bytes) = stats.get(key)?.map(|v| v.value()).unwrap_or((0, 0));
                chunks::pack_each(&records, |first, packed, chunk| {
                    let seq = first_seq + first as u64;
                    let previous = table.insert((key.0, key.1, seq), chunk)?;
                    // A retried batch rewrites the same chunks: count each once.
                    if let Some(old) = previous {
                        let (old_count, old_bytes) = chunks::tally(old.value())?;
                        count -= old_count;
                        bytes -= old_bytes;
                    }
                    let (new_count, new_bytes) = chunks::tally_records(packed);
                    count += new_count;
                    bytes += new_bytes;
                    Ok(())
                })?;
                stats.insert(key, (count, bytes))?;
                Ok(())
            })
            .await
    }

    async fn relations(&self, at: GenerationRef<'_>) -> Result<Vec<RelationStats>> {
        let generation = at.name.to_owned();
        self.db
            .read(move |txn| {
                let stats = txn.open_table(RELATION_STATS)?;
                let range = stats.range((generation.as_str(), "")..)?;
                let mut out = Vec::new();
                for item in range {
                    let (key, value) = item?;
                    let (gen, relation) = key.value();
                    if gen != generation {
                        break;
                    }
                    let (records, ndjson_bytes) = value.value();
                    out.push(RelationStats {
                        relation: relation.to_owned(),
                        records,
                        ndjson_bytes,
                    });
                }
                Ok(out)
            })
            .await
    }

    fn read_records<'a>(
        &'a self,
        at: GenerationRef<'a>,
        relation: &'a str,
        range: RecordRange,
    ) -> RecordStream<'a> {
        let end = range.first.saturating_add(range.count);
        let pages = stream::try_unfold(range.first, move |next| async move {
            if next >= end {
                return Ok(None);
            }
            let left = usize::try_from(end - next).unwrap_or(usize::MAX);
            let page = self
                .records(at.name, relation, next, range.page_records.min(left))
                .await?;
            let after = page.last().map(|last| last.seq + 1);
            Ok(after.map(|after| (page, after)))
        });
        pages.fuse().boxed()
    }

    async fn delete_content(&self, at: GenerationRef<'_>) -> Result<()> {
        let generation = at.name;
        // Chunks removed per transaction.
        const CHUNK: usize = 1_000;
        for stats in self.relations(at).await? {
            loop {
                let (generation, relation) = (generation.to_owned(), stats.relation.clone());
                let removed = self
                    .db
                    .write(move |txn| {
                        let mut table = txn.open_table(RECORD_CHUNKS)?;
                        let (g, r) = (generation.as_str(), relation.as_str());
                        let seqs: Vec<u64> = table
                            .range((g, r, 0)..=(g, r, u64::MAX))?
                            .take(CHUNK)
                            .map(|item| item.map(|(key, _)| key.value().2))
                            .collect::<Result<_, _>>()?;
                        for seq in &seqs {
                            table.remove((g, r, *seq))?;
                        }
                        if seqs.len() < CHUNK {
                            txn.open_table(RELATION_STATS)?.remove((g, r))?;
                        }
                        Ok(seqs.len())
                    })
                    .await?;
                if removed < CHUNK {
                    break;
                }
            }
        }
        let generation = generation.to_owned();
        self.db
            .write(move |txn| {
                txn.open_table(ATTRIBUTES)?.remove(generation.as_str())?;
                txn.open_table(WRITERS)?.remove(generation.as_str())?;
                Ok(())
            })
            .await
    }

    async fn stored_generations(&self) -> Result<Vec<StoredGeneration>> {
        self.db
            .read(move |txn| {
                // A generation's records never outlive its relation counts
                // (a deletion removes the counts last), so these three
                // tables name every generation with anything stored.
                let mut names = std::collections::BTreeSet::new();
                let attributes = txn.open_table(ATTRIBUTES)?;
                for item in attributes.iter()? {
                    names.insert(item?.0.value().to_owned());
                }
                let writers = txn.open_table(WRITERS)?;
                for item in writers.iter()? {
                    names.insert(item?.0.value().to_owned());
                }
                let stats = txn.open_table(RELATION_STATS)?;
                for item in stats.iter()? {
                    names.insert(item?.0.value().0.to_owned());
                }
                Ok(names
                    .into_iter()
                    .map(|name| StoredGeneration {
                        project_id: None,
                        name,
                    })
                    .collect())
            })
            .await
    }
}

/// Removes the chunks of each relation from its `keep`-th record on.
fn truncate(txn: &WriteTransaction, generation: &str, keep: &BTreeMap<String, u64>) -> Result<()> {
    let mut table = txn.open_table(RECORD_CHUNKS)?;
    let mut stats = txn.open_table(RELATION_STATS)?;
    let mut relations = Vec::new();
    for item in stats.range((generation, "")..)? {
        let (key, _) = item?;
        let (g, relation) = key.value();
        if g != generation {
            break;
        }
        relations.push(relation.to_owned());
    }
    for relation in relations {
        let kept = keep.get(&relation).copied().unwrap_or(0);
        let (g, r) = (generation, relation.as_str());
        let mut cut = Vec::new();
        for item in table.range((g, r, kept)..=(g, r, u64::MAX))? {
            let (key, value) = item?;
            cut.push((key.value().2, chunks::tally(value.value())?));
        }
        if let Some((key, value)) = table
            .range((g, r, 0)..(g, r, kept))?
            .next_back()
            .transpose()?
        {
            let (records, _) = chunks::tally(value.value())?;
            if key.value().2 + records > kept {
                return Err(Error::Storage(format!(
                    "{relation} of {generation} cannot be cut at record {kept}: a chunk spans it"
                )));
            }
        }
        let (mut count, mut bytes) = stats.get((g, r))?.map(|v| v.value()).unwrap_or((0, 0));
        for (seq, (records, ndjson_bytes)) in cut {
            table.remove((g, r, seq))?;
            count -= records;
            bytes -= ndjson_bytes;
        }
        if count == 0 {
            stats.remove((g, r))?;
        } else {
            stats.insert((g, r), (count, bytes))?;
        }
    }
    Ok(())
}
