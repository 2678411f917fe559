//! Relation records packed many to a database value. One B-tree entry per
//! record made the B-tree the import's bottleneck; a chunk of about 64 KiB
//! holds a few dozen records, read and written as one value.
//!
//! A chunk's key is (generation, relation, seq of its first record); its
//! records have the following seqs with no gaps. Each record is stored as a
//! little-endian u32 length, then its bytes.

use std::ops::Range;

use bytes::Bytes;
use redb::{ReadableTable, ReadableTableMetadata, TableDefinition, TableHandle, WriteTransaction};

use crate::{Error, Result};

pub(super) const RECORD_CHUNKS: TableDefinition<(&str, &str, u64), &[u8]> =
    TableDefinition::new("record_chunks");
/// Before chunks: one record per value, keyed by its own seq.
const RECORDS_BEFORE_CHUNKS: TableDefinition<(&str, &str, u64), &[u8]> =
    TableDefinition::new("records");

/// A chunk closes once it holds this much (one record may make it larger).
pub(super) const CHUNK_BYTES: usize = 64 * 1024;

/// Splits consecutive records into chunks and hands each to `store` as
/// (index of its first record, its records, the packed chunk). One buffer
/// serves every chunk of the batch: a fresh one per chunk, grown by
/// doubling, was churn the heap kept as fragments. The split depends only on
/// the records, so writing the same batch again yields the same keys.
pub(super) fn pack_each(
    records: &[Bytes],
    mut store: impl FnMut(usize, &[Bytes], &[u8]) -> Result<()>,
) -> Result<()> {
    let mut chunk = Vec::with_capacity(CHUNK_BYTES);
    let mut first = 0;
    while first < records.len() {
        chunk.clear();
        let mut next = first;
        while let Some(record) = records.get(next) {
            if !chunk.is_empty() && chunk.len() + 4 + record.len() > CHUNK_BYTES {
                break;
            }
            append(&mut chunk, record);
            next += 1;
        }
        store(first, &records[first..next], &chunk)?;
        first = next;
    }
    Ok(())
}

fn append(chunk: &mut Vec<u8>, record: &[u8]) {
    let len = u32::try_from(record.len()).expect("records are far below 4 GiB");
    chunk.extend_from_slice(&len.to_le_bytes());
    chunk.extend_from_slice(record);
}

/// Where each record of a chunk lies in it.
pub(super) fn unpack(chunk: &[u8]) -> Result<Vec<Range<usize>>> {
    let mut ranges = Vec::new();
    let mut pos = 0;
    while pos < chunk.len() {
        let header = chunk
            .get(pos..pos + 4)
            .ok_or_else(|| Error::Storage("a record chunk is cut short".into()))?;
        let len = u32::from_le_bytes(header.try_into().expect("four bytes")) as usize;
        let start = pos + 4;
        if start + len > chunk.len() {
            return Err(Error::Storage("a record chunk is cut short".into()));
        }
        ranges.push(start..start + len);
        pos = start + len;
    }
    Ok(ranges)
}

/// (records, NDJSON bytes with their newlines) of a packed chunk.
pub(super) fn tally(chunk: &[u8]) -> Result<(u64, u64)> {
    let ranges = unpack(chunk)?;
    let bytes = ranges.iter().map(|r| ndjson_line_bytes(r.len())).sum();
    Ok((ranges.len() as u64, bytes))
}

/// (records, NDJSON bytes with their newlines) of records as `pack_each`
/// hands them over, without unpacking the chunk just packed.
pub(super) fn tally_records(records: &[Bytes]) -> (u64, u64) {
    let bytes = records.iter().map(|r| ndjson_line_bytes(r.len())).sum();
    (records.len() as u64, bytes)
}

/// A record's bytes in NDJSON: the record, then its newline.
fn ndjson_line_bytes(record_len: usize) -> u64 {
    record_len as u64 + 1
}

/// Rewrites a data directory's per-record table as chunks, once.
pub(super) fn migrate(txn: &WriteTransaction) -> Result<()> {
    let exists = txn
        .list_tables()?
        .any(|table| table.name() == RECORDS_BEFORE_CHUNKS.name());
    if !exists {
        return Ok(());
    }
    {
        let old = txn.open_table(RECORDS_BEFORE_CHUNKS)?;
        let mut chunks = txn.open_table(RECORD_CHUNKS)?;
        tracing::info!(records = old.len()?, "packing records into chunks");
        // (generation, relation, first seq, next seq, packed)
        let mut open: Option<(String, String, u64, u64, Vec<u8>)> = None;
        for item in old.iter()? {
            let (key, value) = item?;
            let (generation, relation, seq) = key.value();
            let continues = open.as_ref().is_some_and(|(g, r, _, next, chunk)| {
                g == generation
                    && r == relation
                    && *next == seq
                    && chunk.len() + 4 + value.value().len() <= CHUNK_BYTES
            });
            if !continues {
                if let Some((g, r, first, _, chunk)) = open.take() {
                    chunks.insert((g.as_str(), r.as_str(), first), chunk.as_slice())?;
                }
                open = Some((generation.into(), relation.into(), seq, seq, Vec::new()));
            }
            let (_, _, _, next, chunk) = open.as_mut().expect("opened above");
            append(chunk, value.value());
            *next += 1;
        }
        if let Some((g, r, first, _, chunk)) = open {
            chunks.insert((g.as_str(), r.as_str(), first), chunk.as_slice())?;
        }
    }
    txn.delete_table(RECORDS_BEFORE_CHUNKS)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packs_and_unpacks() {
        let big = Bytes::from(vec![b'x'; CHUNK_BYTES]);
        let records = vec![
            Bytes::from_static(b"{\"a\":1}"),
            Bytes::from_static(b"{}"),
            big.clone(),
            Bytes::from_static(b"{\"b\":2}"),
        ];
        let pack = |records: &[Bytes]| {
            let mut chunks = Vec::new();
            pack_each(records, |first, packed, chunk| {
                assert_eq!(packed, &records[first..first + packed.len()]);
                chunks.push((first, chunk.to_vec()));
                Ok(())
            })
            .unwrap();
            chunks
        };
        let chunks = pack(&records);
        // The big record cannot join the first chunk, and fills its own.
        assert_eq!(
            chunks.iter().map(|(first, _)| *first).collect::<Vec<_>>(),
            vec![0, 2, 3]
        );
        let (_, first) = &chunks[0];
        let ranges = unpack(first).unwrap();
        assert_eq!(&first[ranges[0].clone()], b"{\"a\":1}");
        assert_eq!(&first[ranges[1].clone()], b"{}");
        assert_eq!(tally(first).unwrap(), (2, 7 + 1 + 2 + 1));
        assert_eq!(unpack(&chunks[1].1).unwrap()[0].len(), CHUNK_BYTES);
        assert!(unpack(&first[..first.len() - 1]).is_err());
        assert_eq!(pack(&records), chunks, "the split is deterministic");
    }

    #[test]
    fn migrates_per_record_values_to_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let db = redb::Database::create(dir.path().join("db")).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut old = txn.open_table(RECORDS_BEFORE_CHUNKS).unwrap();
            for seq in 0..3u64 {
                let json = format!("{{\"iid\":{seq}}}");
                old.insert(("g1", "issues", seq), json.as_bytes()).unwrap();
            }
            old.insert(("g1", "labels", 0), &b"{\"l\":0}"[..]).unwrap();
            // A gap starts a new chunk.
            old.insert(("g1", "labels", 5), &b"{\"l\":5}"[..]).unwrap();
        }
        migrate(&txn).unwrap();
        let chunks = txn.open_table(RECORD_CHUNKS).unwrap();
        let keys: Vec<(String, String, u64)> = chunks
            .iter()
            .unwrap()
            .map(|item| {
                let (key, _) = item.unwrap();
                let (g, r, seq) = key.value();
                (g.to_owned(), r.to_owned(), seq)
            })
            .collect();
        let key = |r: &str, seq| ("g1".to_owned(), r.to_owned(), seq);
        assert_eq!(
            keys,
            vec![key("issues", 0), key("labels", 0), key("labels", 5)]
        );
        {
            let issues = chunks.get(("g1", "issues", 0)).unwrap().unwrap();
            assert_eq!(tally(issues.value()).unwrap().0, 3);
        }
        drop(chunks);
        assert!(!txn
            .list_tables()
            .unwrap()
            .any(|t| t.name() == RECORDS_BEFORE_CHUNKS.name()));
        migrate(&txn).unwrap();
    }
}
