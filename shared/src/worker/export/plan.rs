//! The byte layout of an export archive, planned before a byte is written,
//! and cut into slices that workers compress apart. Records are stored
//! byte for byte, so every entry's size is known up front: a slice needs
//! only its own segments (a header, records `first..first + count` of a
//! relation, the padding that ends an entry) to write its stretch of the
//! tar stream, whatever the others write.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::archive;
use crate::ports::RelationStats;

/// One entry of the archive, in the order it is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Entry {
    /// A small file, all of it at hand (`VERSION`, `tree/project.json`).
    File { path: String, bytes: Bytes },
    /// A relation's NDJSON file, read from its generation.
    Relation {
        generation: String,
        stats: RelationStats,
    },
    /// A stored blob (an upload, a bundle), copied as it is.
    Blob {
        key: String,
        path: String,
        size: u64,
    },
}

impl Entry {
    fn path(&self) -> String {
        match self {
            Entry::File { path, .. } | Entry::Blob { path, .. } => path.clone(),
            Entry::Relation { stats, .. } => archive::relation_file(&stats.relation),
        }
    }

    fn size(&self) -> u64 {
        match self {
            Entry::File { bytes, .. } => bytes.len() as u64,
            Entry::Relation { stats, .. } => stats.ndjson_bytes,
            Entry::Blob { size, .. } => *size,
        }
    }
}

/// A stretch of the tar stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(super) enum Segment {
    /// An entry's header (after a long-name entry where its path needs one).
    Header { path: String, size: u64 },
    /// A small file's text.
    Text { text: String },
    /// Records `first..first + count` of a relation, as NDJSON.
    Records {
        generation: String,
        relation: String,
        first: u64,
        count: u64,
    },
    /// Bytes `offset..offset + size` of a stored blob: a blob bigger than
    /// a slice is cut between slices like a relation, so that no slice
    /// (one worker's run) copies more than about a slice.
    Blob {
        key: String,
        size: u64,
        #[serde(default)]
        offset: u64,
    },
    /// The zeros after an entry of `size` bytes.
    Padding { size: u64 },
    /// The archive's two empty blocks.
    End,
}

/// What one worker writes: one part of the archive's upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct SlicePlan {
    pub segments: Vec<Segment>,
    /// Records in it: the export's progress once it is written.
    pub records: u64,
}

/// The whole archive's plan, stored beside it while its slices are written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Plan {
    /// The upload the slices are parts of.
    pub upload: String,
    /// When the export began: its entries' time and its file name's.
    pub at: DateTime<Utc>,
    /// Bytes of the tar stream: what the slices' lengths add up to.
    pub tar_bytes: u64,
    pub slices: Vec<SlicePlan>,
}

impl Plan {
    pub fn mtime(&self) -> u64 {
        self.at.timestamp().max(0) as u64
    }

    pub fn records(&self) -> u64 {
        self.slices.iter().map(|s| s.records).sum()
    }
}

/// Cuts the archive of `entries` into slices of about `slice_bytes` of tar
/// stream each, and returns them with the stream's length. A relation is
/// cut between records (at its average record size: slices are only about
/// even), a blob between bytes. Every slice but the last is at least
/// `slice_bytes` long, and the last at least half that: each becomes a part
/// S3 wants at least 5 MiB of. `None` if some small file is not text.
pub(super) fn cut(
    entries: &[Entry],
    slice_bytes: u64,
    mtime: u64,
) -> std::io::Result<Option<(Vec<SlicePlan>, u64)>> {
    let slice_bytes = slice_bytes.max(1);
    let mut cutter = Cutter {
        slices: vec![SlicePlan {
            segments: Vec::new(),
            records: 0,
        }],
        filled: 0,
        lengths: vec![0],
        slice_bytes,
    };
    let mut total = 0u64;
    for entry in entries {
        let (path, size) = (entry.path(), entry.size());
        let header = archive::header_bytes(&path, size, mtime)?.len() as u64;
        let padding = archive::padding(size) as u64;
        total += header + size + padding;
        cutter.add(Segment::Header { path, size }, header, 0);
        match entry {
            Entry::File { bytes, .. } => {
                let Ok(text) = std::str::from_utf8(bytes) else {
                    return Ok(None);
                };
                let text = text.to_owned();
                cutter.add(Segment::Text { text }, size, 0);
            }
            Entry::Blob { key, size, .. } => cutter.add_blob(key, *size),
            Entry::Relation { generation, stats } => cutter.add_records(generation, stats),
        }
        cutter.add(Segment::Padding { size }, padding, 0);
    }
    let end = archive::END_OF_ARCHIVE.len() as u64;
    total += end;
    cutter.add(Segment::End, end, 0);
    Ok(Some((cutter.finish(), total)))
}

struct Cutter {
    slices: Vec<SlicePlan>,
    /// Bytes planned into the last slice.
    filled: u64,
    lengths: Vec<u64>,
    slice_bytes: u64,
}

impl Cutter {
    /// Appends a segment of `bytes`, starting a new slice if the last is
    /// full. A slice is closed only once something follows it, so the end
    /// of the archive never sits alone.
    fn add(&mut self, segment: Segment, bytes: u64, records: u64) {
        if self.filled >= self.slice_bytes {
            self.slices.push(SlicePlan {
                segments: Vec::new(),
                records: 0,
            });
            self.lengths.push(0);
            self.filled = 0;
        }
        let slice = self.slices.last_mut().expect("one slice at least");
        slice.segments.push(segment);
        slice.records += records;
        self.filled += bytes;
        *self.lengths.last_mut().expect("one length per slice") += bytes;
    }

    fn add_blob(&mut self, key: &str, size: u64) {
        let mut offset = 0;
        loop {
            let room = match self.slice_bytes.checked_sub(self.filled) {
                Some(room) if room > 0 => room,
                // The next `add` starts a slice.
                _ => self.slice_bytes,
            };
            let piece = room.min(size - offset);
            let segment = Segment::Blob {
                key: key.to_owned(),
                size: piece,
                offset,
            };
            self.add(segment, piece, 0);
            offset += piece;
            if offset >= size {
                return;
            }
        }
    }

    fn add_records(&mut self, generation: &str, stats: &RelationStats) {
        let average = stats.ndjson_bytes as f64 / stats.records.max(1) as f64;
        let mut first = 0;
        while first < stats.records {
            let room = self.slice_bytes.saturating_sub(self.filled).max(1);
            let fit = (room as f64 / average.max(1.0)).ceil() as u64;
            let count = fit.clamp(1, stats.records - first);
            let bytes = (count as f64 * average).round() as u64;
            let segment = Segment::Records {
                generation: generation.to_owned(),
                relation: stats.relation.clone(),
                first,
                count,
            };
            self.add(segment, bytes.max(1), count);
            first += count;
        }
    }

    /// A last slice under half the size joins the one before.
    fn finish(mut self) -> Vec<SlicePlan> {
        let last = *self.lengths.last().expect("one length per slice");
        if self.slices.len() > 1 && last < self.slice_bytes / 2 {
            let tail = self.slices.pop().expect("two slices");
            let before = self.slices.last_mut().expect("one slice");
            before.segments.extend(tail.segments);
            before.records += tail.records;
        }
        self.slices
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relation(name: &str, records: u64, bytes: u64) -> Entry {
        Entry::Relation {
            generation: "g1".into(),
            stats: RelationStats {
                relation: name.into(),
                records,
                ndjson_bytes: bytes,
            },
        }
    }

    fn entries() -> Vec<Entry> {
        vec![
            Entry::File {
                path: "VERSION".into(),
                bytes: Bytes::from_static(b"0.2.4"),
            },
            relation("labels", 10, 1_000),
            relation("issues", 1_000, 1_000_000),
            Entry::Blob {
                key: "k/upload".into(),
                path: "uploads/a/b.png".into(),
                size: 300_000,
            },
            relation("merge_requests", 100, 250_000),
        ]
    }

    /// Every record of every relation is in exactly one slice, in order,
    /// and each relation's header, records and padding come in that order.
    fn records_in_order(slices: &[SlicePlan]) -> Vec<(String, u64, u64)> {
        slices
            .iter()
            .flat_map(|s| &s.segments)
            .filter_map(|segment| match segment {
                Segment::Records {
                    relation,
                    first,
                    count,
                    ..
                } => Some((relation.clone(), *first, *count)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_small_archive_is_one_slice() {
        let (slices, total) = cut(&entries(), 10 << 20, 0).unwrap().unwrap();
        assert_eq!(slices.len(), 1);
        assert_eq!(slices[0].records, 1_110);
        assert_eq!(slices[0].segments.last(), Some(&Segment::End));
        // Headers, sizes rounded up to blocks, the end.
        let sizes: u64 = [5u64, 1_000, 1_000_000, 300_000, 250_000]
            .iter()
            .map(|s| s.div_ceil(512) * 512)
            .sum();
        assert_eq!(total, sizes + 5 * 512 + 1024);
    }

    #[test]
    fn slices_cover_every_record_once_and_are_about_even() {
        for slice_bytes in [100_000u64, 250_000, 400_000, 1_500_000] {
            let (slices, total) = cut(&entries(), slice_bytes, 0).unwrap().unwrap();
            let mut seen: Vec<(String, u64)> = Vec::new();
            for (relation, first, count) in records_in_order(&slices) {
                let next = seen
                    .iter()
                    .rev()
                    .find(|(r, _)| *r == relation)
                    .map_or(0, |(_, end)| *end);
                assert_eq!(first, next, "{relation} continues where it stopped");
                seen.push((relation, first + count));
            }
            for (relation, records) in [("labels", 10), ("issues", 1_000), ("merge_requests", 100)]
            {
                let end = seen.iter().rev().find(|(r, _)| r == relation).unwrap().1;
                assert_eq!(end, records, "{relation} at {slice_bytes}");
            }
            let records: u64 = slices.iter().map(|s| s.records).sum();
            assert_eq!(records, 1_110);
            let expected = total.div_ceil(slice_bytes).max(1) as usize;
            assert!(
                slices.len() <= expected,
                "{} slices of {slice_bytes} for {total}",
                slices.len()
            );
            let ends = slices.iter().flat_map(|s| &s.segments);
            assert_eq!(ends.filter(|s| **s == Segment::End).count(), 1);
            assert_eq!(slices.last().unwrap().segments.last(), Some(&Segment::End));
        }
    }

    #[test]
    fn a_blob_bigger_than_a_slice_is_cut_into_pieces_that_cover_it_once() {
        let entries = vec![
            relation("labels", 10, 1_000),
            Entry::Blob {
                key: "k/bundle".into(),
                path: "project.bundle".into(),
                size: 10_000_000,
            },
        ];
        let (slices, _) = cut(&entries, 1_000_000, 0).unwrap().unwrap();
        assert!(slices.len() >= 9, "{} slices", slices.len());
        let mut next = 0;
        for slice in &slices {
            let pieces: Vec<(u64, u64)> = slice
                .segments
                .iter()
                .filter_map(|segment| match segment {
                    Segment::Blob { size, offset, .. } => Some((*offset, *size)),
                    _ => None,
                })
                .collect();
            // A last slice under half the size joins the one before.
            let in_slice: u64 = pieces.iter().map(|(_, size)| size).sum();
            assert!(
                in_slice <= 1_500_000,
                "{in_slice} bytes of the blob in one slice"
            );
            for (offset, size) in pieces {
                assert_eq!(offset, next);
                next += size;
            }
        }
        assert_eq!(next, 10_000_000);
    }

    #[test]
    fn a_file_that_is_not_text_is_not_sliced() {
        let entries = vec![Entry::File {
            path: "tree/project.json".into(),
            bytes: Bytes::from_static(b"\xff"),
        }];
        assert_eq!(cut(&entries, 1, 0).unwrap(), None);
    }
}
