//! Content generations on S3, indexed by a small manifest in DynamoDB.
//!
//! Each batch a writer gives (`CHUNK_BYTES` of records) becomes one S3 object
//! holding the relation's NDJSON lines for its seqs (`keys::content_chunk_key`)
//! and one manifest item (`GEN#<generation>`, `CHUNK#<relation>#<first seq>`)
//! with its record count, its bytes and a sparse index of where records start,
//! so that a batch of a relation is read from near its first record with one
//! ranged GET. There is no item per record: a 1 GB relation is about 250
//! objects and 250 small items, whatever its record count, so no partition
//! key comes near DynamoDB's 1,000 write units per second.
//!
//! The attributes are one more object; everything of a generation lives under
//! `keys::content_prefix` and goes with one prefix delete.

use std::collections::BTreeMap;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};

use aws_sdk_dynamodb::types::{ConditionCheck, Put, TransactWriteItem};

use super::dynamo::keys as layout;
use super::dynamo::{ddb_error, delete_of, get_n, get_s, key, n, s, DynamoStore, Item};
use super::s3::S3BlobStore;
use shared::keys;
use shared::ports::{
    BatchSize, BlobStore, ContentStore, GenerationRef, RecordRange, RecordStream, RelationStats,
    StoredGeneration, StoredRecord,
};
use shared::stream::ByteStream;
use shared::{Error, Result};

/// One S3 PUT per this many bytes of records: about 250 requests per GB
/// (a few tenths of a cent), in memory twice while one is written and the
/// next one fills.
const CHUNK_BYTES: usize = 4 * 1024 * 1024;
/// The manifest notes where a record starts about this often, so a read
/// from the middle of a chunk skips less than this.
const INDEX_STRIDE_BYTES: u64 = 64 * 1024;
/// Manifest items read at a time while streaming a relation.
const MANIFEST_PAGE: i32 = 64;
/// A page of records stops growing past this many bytes.
const PAGE_BYTES: usize = 256 * 1024;

mod reader;

use reader::ChunkReader;

pub struct S3ContentStore {
    table: DynamoStore,
    blobs: S3BlobStore,
}

impl S3ContentStore {
    pub fn new(table: DynamoStore, blobs: S3BlobStore) -> Self {
        S3ContentStore { table, blobs }
    }
}

fn manifest_pk(at: GenerationRef<'_>) -> String {
    layout::generation(at.name)
}

/// The manifest item naming the generation's one writer.
const WRITER_SK: &str = "WRITER";

fn chunk_sk(relation: &str, first_seq: u64) -> String {
    layout::chunk(relation, first_seq)
}

/// One chunk as the manifest describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Chunk {
    relation: String,
    /// Who wrote its object (`None`: written before writers were named).
    writer: Option<u32>,
    first: u64,
    records: u64,
    bytes: u64,
    /// (record index in the chunk, byte offset of its line), ascending.
    index: Vec<(u64, u64)>,
}

impl Chunk {
    fn end(&self) -> u64 {
        self.first + self.records
    }

    fn of_batch(relation: &str, writer: u32, first: u64, records: &[Bytes]) -> Self {
        let mut index = Vec::new();
        let mut offset = 0u64;
        let mut noted = 0u64;
        for (i, record) in records.iter().enumerate() {
            if offset - noted >= INDEX_STRIDE_BYTES {
                index.push((i as u64, offset));
                noted = offset;
            }
            offset += record.len() as u64 + 1;
        }
        Chunk {
            relation: relation.to_owned(),
            writer: Some(writer),
            first,
            records: records.len() as u64,
            bytes: offset,
            index,
        }
    }

    /// Where to start reading for record `seq`: the record the read starts
    /// at and its byte offset.
    fn start_for(&self, seq: u64) -> (u64, u64) {
        let wanted = seq.saturating_sub(self.first);
        self.index
            .iter()
            .take_while(|(i, _)| *i <= wanted)
            .last()
            .map_or((self.first, 0), |&(i, offset)| (self.first + i, offset))
    }

    /// Where a read ending before record `end` may stop: the offset of the
    /// first noted record at or after it, or the chunk's end.
    fn stop_for(&self, end: u64) -> u64 {
        let wanted = end.saturating_sub(self.first);
        self.index
            .iter()
            .find(|(i, _)| *i >= wanted)
            .map_or(self.bytes, |&(_, offset)| offset)
    }

    fn key(&self, at: GenerationRef<'_>) -> String {
        keys::content_chunk_key(
            at.project_id,
            at.name,
            &self.relation,
            self.first,
            self.writer,
        )
    }

    fn to_item(&self, at: GenerationRef<'_>) -> Item {
        let mut item = key(manifest_pk(at), chunk_sk(&self.relation, self.first));
        item.insert("records".into(), n(self.records));
        item.insert("bytes".into(), n(self.bytes));
        if let Some(writer) = self.writer {
            item.insert("writer".into(), n(u64::from(writer)));
        }
        let index: Vec<String> = self
            .index
            .iter()
            .map(|(i, offset)| format!("{i}:{offset}"))
            .collect();
        if !index.is_empty() {
            item.insert("index".into(), s(index.join(",")));
        }
        item
    }

    /// `None` for an item that is not a chunk (or belongs to a relation
    /// whose name only starts like the one asked for).
    fn from_item(item: &Item) -> Option<Self> {
        let sk = get_s(item, "sk")?.strip_prefix("CHUNK#")?;
        let (relation, first) = sk.rsplit_once('#')?;
        if first.len() != 20 {
            return None;
        }
        let index = match get_s(item, "index") {
            Some(text) => text
                .split(',')
                .map(|pair| {
                    let (i, offset) = pair.split_once(':')?;
                    Some((i.parse().ok()?, offset.parse().ok()?))
                })
                .collect::<Option<Vec<_>>>()?,
            None => Vec::new(),
        };
        Some(Chunk {
            relation: relation.to_owned(),
            writer: get_n(item, "writer").and_then(|w| u32::try_from(w).ok()),
            first: first.parse().ok()?,
            records: get_n(item, "records")?,
            bytes: get_n(item, "bytes")?,
            index,
        })
    }
}

impl S3ContentStore {
    /// A consistent query of the generation's manifest items whose sort
    /// keys lie in `low..=high`.
    fn manifest_between(
        &self,
        at: GenerationRef<'_>,
        low: &str,
        high: &str,
    ) -> aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder {
        self.table
            .client
            .query()
            .table_name(&self.table.table)
            .consistent_read(true)
            .key_condition_expression("pk = :pk AND sk BETWEEN :low AND :high")
            .expression_attribute_values(":pk", s(manifest_pk(at)))
            .expression_attribute_values(":low", s(low))
            .expression_attribute_values(":high", s(high))
    }

    /// The chunk holding `seq`'s sort key, or the relation's first chunk.
    async fn start_chunk(
        &self,
        at: GenerationRef<'_>,
        relation: &str,
        seq: u64,
    ) -> Result<Option<String>> {
        let output = self
            .manifest_between(at, &chunk_sk(relation, 0), &chunk_sk(relation, seq))
            .scan_index_forward(false)
            .limit(1)
            .send()
            .await
            .map_err(ddb_error)?;
        Ok(output
            .items()
            .first()
            .and_then(|item| get_s(item, "sk"))
            .map(str::to_owned))
    }

    /// Up to `MANIFEST_PAGE` chunk items from `from` (inclusive) on, or
    /// after the page that ended at `after`.
    async fn manifest_page(
        &self,
        at: GenerationRef<'_>,
        relation: &str,
        from: &str,
        after: Option<Item>,
    ) -> Result<(Vec<Chunk>, Option<Item>)> {
        let output = self
            .manifest_between(at, from, &chunk_sk(relation, u64::MAX))
            .set_exclusive_start_key(after)
            .limit(MANIFEST_PAGE)
            .send()
            .await
            .map_err(ddb_error)?;
        let chunks = output
            .items()
            .iter()
            .filter_map(Chunk::from_item)
            .filter(|chunk| chunk.relation == relation)
            .collect();
        Ok((chunks, output.last_evaluated_key))
    }

    async fn chunks(&self, at: GenerationRef<'_>) -> Result<Vec<Chunk>> {
        let items = self
            .table
            .query(&manifest_pk(at), Some("CHUNK#"), None, None)
            .await?;
        Ok(items.iter().filter_map(Chunk::from_item).collect())
    }
}

#[async_trait]
impl ContentStore for S3ContentStore {
    fn batch_size(&self) -> BatchSize {
        BatchSize {
            records: usize::MAX,
            bytes: CHUNK_BYTES,
        }
    }

    async fn put_attributes(&self, at: GenerationRef<'_>, attributes: Bytes) -> Result<()> {
        let key = keys::content_attributes_key(at.project_id, at.name);
        self.blobs.put_bytes(&key, attributes).await
    }

    async fn attributes(&self, at: GenerationRef<'_>) -> Result<Option<Bytes>> {
        let key = keys::content_attributes_key(at.project_id, at.name);
        match self.blobs.get_bytes(&key).await {
            Ok(bytes) => Ok(Some(bytes)),
            Err(Error::NotFound(_)) => Ok(None),
            Err(err) => Err(err),
        }
    }

    async fn claim_generation(
        &self,
        at: GenerationRef<'_>,
        writer: u32,
        keep: &BTreeMap<String, u64>,
    ) -> Result<bool> {
        let mut owner = key(manifest_pk(at), WRITER_SK);
        owner.insert("writer".into(), n(u64::from(writer)));
        let claimed = self
            .table
            .client
            .put_item()
            .table_name(&self.table.table)
            .set_item(Some(owner))
            .condition_expression("attribute_not_exists(pk) OR writer <= :writer")
            .expression_attribute_values(":writer", n(u64::from(writer)))
            .send()
            .await;
        if let Err(err) = claimed {
            return match err.into_service_error() {
                e if e.is_conditional_check_failed_exception() => Ok(false),
                e => Err(ddb_error(e)),
            };
        }
        // From here on only `writer`'s chunks enter the manifest: what the
        // earlier writers left past `keep` can go.
        let mut cut = Vec::new();
        let mut end_of_kept: BTreeMap<&str, u64> = BTreeMap::new();
        let chunks = self.chunks(at).await?;
        for chunk in &chunks {
            let kept = keep.get(&chunk.relation).copied().unwrap_or(0);
            if chunk.first >= kept {
                cut.push(chunk);
            } else {
                let end = end_of_kept.entry(&chunk.relation).or_default();
                *end = (*end).max(chunk.end());
            }
        }
        for (relation, &end) in &end_of_kept {
            let kept = keep[*relation];
            if end > kept {
                return Err(Error::Storage(format!(
                    "{relation} of {} cannot be cut at record {kept}: a chunk ends at {end}",
                    at.name
                )));
            }
        }
        for chunk in &cut {
            tracing::info!(
                generation = at.name,
                writer,
                relation = chunk.relation,
                first = chunk.first,
                records = chunk.records,
                by = chunk.writer,
                "chunk past the checkpoint cut"
            );
        }
        let objects: Vec<String> = cut.iter().map(|chunk| chunk.key(at)).collect();
        let items = cut
            .iter()
            .map(|chunk| delete_of(&chunk.to_item(at)))
            .collect::<Result<Vec<_>>>()?;
        self.table.batch_write(items).await?;
        self.blobs.delete_keys(&objects).await?;
        Ok(true)
    }

    async fn put_records(
        &self,
        at: GenerationRef<'_>,
        writer: u32,
        relation: &str,
        first_seq: u64,
        records: Vec<Bytes>,
    ) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        if records.iter().any(|record| record.contains(&b'\n')) {
            // Chunks are NDJSON: a line is a record.
            return Err(Error::Internal("a record spans lines".into()));
        }
        let chunk = Chunk::of_batch(relation, writer, first_seq, &records);
        let mut body = BytesMut::with_capacity(chunk.bytes as usize);
        for record in records {
            body.extend_from_slice(&record);
            body.extend_from_slice(b"\n");
        }
        self.blobs.put_bytes(&chunk.key(at), body.freeze()).await?;
        // The item last: a chunk the manifest names is always there. The
        // same batch again rewrites the same object and item. The item goes
        // in only while `writer` owns the generation, in one transaction
        // with that check.
        let owned = ConditionCheck::builder()
            .table_name(&self.table.table)
            .set_key(Some(key(manifest_pk(at), WRITER_SK)))
            .condition_expression("writer = :writer")
            .expression_attribute_values(":writer", n(u64::from(writer)))
            .build()
            .map_err(Error::internal)?;
        let put = Put::builder()
            .table_name(&self.table.table)
            .set_item(Some(chunk.to_item(at)))
            .build()
            .map_err(Error::internal)?;
        let written = self
            .table
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().condition_check(owned).build())
            .transact_items(TransactWriteItem::builder().put(put).build())
            .send()
            .await;
        match written {
            Ok(_) => Ok(()),
            Err(err) => match err.into_service_error() {
                e if e.is_transaction_canceled_exception() => {
                    Err(Error::not_the_writer(at.name, writer))
                }
                e => Err(ddb_error(e)),
            },
        }
    }

    async fn relations(&self, at: GenerationRef<'_>) -> Result<Vec<RelationStats>> {
        let mut stats: BTreeMap<String, RelationStats> = BTreeMap::new();
        for chunk in self.chunks(at).await? {
            let entry = stats
                .entry(chunk.relation.clone())
                .or_insert_with(|| RelationStats {
                    relation: chunk.relation.clone(),
                    records: 0,
                    ndjson_bytes: 0,
                });
            entry.records += chunk.records;
            entry.ndjson_bytes += chunk.bytes;
        }
        Ok(stats.into_values().collect())
    }

    fn read_records<'a>(
        &'a self,
        at: GenerationRef<'a>,
        relation: &'a str,
        range: RecordRange,
    ) -> RecordStream<'a> {
        ChunkReader::stream(self, at, relation, range)
    }

    async fn delete_content(&self, at: GenerationRef<'_>) -> Result<()> {
        // The manifest first: a deletion cut short leaves objects, which
        // the leftovers sweep finds by listing, never manifest items it
        // could not.
        let items = self.table.query(&manifest_pk(at), None, None, None).await?;
        let deletes = items.iter().map(delete_of).collect::<Result<Vec<_>>>()?;
        self.table.batch_write(deletes).await?;
        self.blobs
            .delete_prefix(&keys::content_prefix(at.project_id, at.name))
            .await
    }

    async fn stored_generations(&self) -> Result<Vec<StoredGeneration>> {
        let mut found = Vec::new();
        for project in self.blobs.folders(keys::PROJECTS).await? {
            let Ok(project_id) = project.parse() else {
                continue;
            };
            let content = keys::generations_prefix(project_id);
            for name in self.blobs.folders(&content).await? {
                found.push(StoredGeneration {
                    project_id: Some(project_id),
                    name,
                });
            }
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(sizes: &[usize]) -> Vec<Bytes> {
        sizes
            .iter()
            .map(|&len| Bytes::from(vec![b'x'; len]))
            .collect()
    }

    #[test]
    fn the_index_notes_a_record_about_every_stride() {
        let batch = records(&[40_000; 10]);
        let chunk = Chunk::of_batch("issues", 1, 100, &batch);
        assert_eq!(chunk.records, 10);
        assert_eq!(chunk.bytes, 10 * 40_001);
        // Offsets 80,002 (record 2), 160,004 (4), ...: each at least a
        // stride past the one before.
        assert_eq!(
            chunk.index,
            vec![(2, 80_002), (4, 160_004), (6, 240_006), (8, 320_008)]
        );
        assert_eq!(chunk.start_for(100), (100, 0));
        assert_eq!(chunk.start_for(101), (100, 0));
        assert_eq!(chunk.start_for(105), (104, 160_004));
        assert_eq!(chunk.start_for(109), (108, 320_008));
        assert_eq!(chunk.stop_for(101), 80_002);
        assert_eq!(chunk.stop_for(102), 80_002);
        assert_eq!(chunk.stop_for(103), 160_004);
        assert_eq!(chunk.stop_for(109), chunk.bytes);
        assert_eq!(chunk.stop_for(u64::MAX), chunk.bytes);
    }

    #[test]
    fn manifest_items_round_trip_and_reject_lookalike_relations() {
        let at = GenerationRef::new(7, "g1");
        let chunk = Chunk::of_batch("a#b", 3, 5, &records(&[70_000, 3, 4]));
        let item = chunk.to_item(at);
        assert_eq!(Chunk::from_item(&item), Some(chunk));
        let mut alien = item.clone();
        alien.insert("sk".into(), s("CHUNK#a#b#00000000000000000005#x"));
        assert_eq!(Chunk::from_item(&alien), None);
    }
}
