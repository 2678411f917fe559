//! Reading a relation's records back: the manifest a page at a time, each
//! chunk from the first record wanted (one ranged GET), its lines numbered.

use std::collections::VecDeque;

use futures::{stream, StreamExt};

use super::*;

/// How far the manifest has been read.
enum Manifest {
    NotRead,
    /// Read from this sort key on; more after this page's last key.
    Reading {
        from: String,
        after: Option<Item>,
    },
    Done,
}

/// Streams records `next..end` of a relation chunk by chunk.
pub(super) struct ChunkReader<'a> {
    store: &'a S3ContentStore,
    at: GenerationRef<'a>,
    relation: &'a str,
    page_records: usize,
    next: u64,
    end: u64,
    manifest: Manifest,
    chunks: VecDeque<Chunk>,
    lines: Option<(Chunk, Lines)>,
}

impl<'a> ChunkReader<'a> {
    /// The records of `range`, a page at a time.
    pub(super) fn stream(
        store: &'a S3ContentStore,
        at: GenerationRef<'a>,
        relation: &'a str,
        range: RecordRange,
    ) -> RecordStream<'a> {
        let reader = ChunkReader {
            store,
            at,
            relation,
            page_records: range.page_records.max(1),
            next: range.first,
            end: range.first.saturating_add(range.count),
            manifest: Manifest::NotRead,
            chunks: VecDeque::new(),
            lines: None,
        };
        stream::try_unfold(reader, |mut reader| async move {
            Ok(reader.next_page().await?.map(|page| (page, reader)))
        })
        .fuse()
        .boxed()
    }

    async fn next_page(&mut self) -> Result<Option<Vec<StoredRecord>>> {
        let mut page = Vec::new();
        let mut bytes = 0;
        while self.next < self.end && page.len() < self.page_records && bytes < PAGE_BYTES {
            let Some((chunk, lines)) = &mut self.lines else {
                match self.next_chunk().await? {
                    Some(chunk) => self.open(chunk).await?,
                    None => {
                        // The relation ended before `end`.
                        self.end = self.next;
                    }
                }
                continue;
            };
            let seq = lines.seq;
            match lines.next_line().await? {
                Some(json) if seq >= self.next => {
                    bytes += json.len();
                    page.push(StoredRecord { seq, json });
                    self.next = seq + 1;
                }
                Some(_) => {}
                None if seq == chunk.end() => self.lines = None,
                None => {
                    return Err(Error::Storage(format!(
                        "chunk {} of {} ended at record {seq} of {}",
                        chunk.first,
                        chunk.relation,
                        chunk.end()
                    )))
                }
            }
        }
        Ok((!page.is_empty()).then_some(page))
    }

    async fn next_chunk(&mut self) -> Result<Option<Chunk>> {
        loop {
            if let Some(chunk) = self.chunks.pop_front() {
                if chunk.end() <= self.next {
                    continue;
                }
                if chunk.first > self.next {
                    return Err(Error::Storage(format!(
                        "records {}..{} of {} are missing",
                        self.next, chunk.first, chunk.relation
                    )));
                }
                return Ok(Some(chunk));
            }
            match std::mem::replace(&mut self.manifest, Manifest::Done) {
                Manifest::Done => return Ok(None),
                Manifest::NotRead => {
                    let start = self
                        .store
                        .start_chunk(self.at, self.relation, self.next)
                        .await?;
                    let from = start.unwrap_or_else(|| chunk_sk(self.relation, 0));
                    self.manifest = Manifest::Reading { from, after: None };
                }
                Manifest::Reading { from, after } => {
                    let (chunks, last) = self
                        .store
                        .manifest_page(self.at, self.relation, &from, after)
                        .await?;
                    self.chunks.extend(chunks);
                    if last.is_some() {
                        self.manifest = Manifest::Reading { from, after: last };
                    }
                }
            }
        }
    }

    async fn open(&mut self, chunk: Chunk) -> Result<()> {
        let (seq, offset) = chunk.start_for(self.next);
        // Only the bytes the range needs: a batch reads its own records,
        // not the rest of the chunk.
        let stop = chunk.stop_for(self.end);
        let key = chunk.key(self.at);
        let body = match self.store.blobs.get_range(&key, offset..stop).await {
            Ok(body) => body,
            // The manifest names it, so it was written: a storage fault,
            // not a missing file of the user's.
            Err(Error::NotFound(_)) => {
                return Err(Error::Storage(format!("content chunk {key} is missing")))
            }
            Err(err) => return Err(err),
        };
        self.lines = Some((chunk, Lines::new(body, seq)));
        Ok(())
    }
}

/// The lines of a chunk body, numbered.
struct Lines {
    body: ByteStream,
    buffer: BytesMut,
    /// Bytes of `buffer` known to hold no newline.
    scanned: usize,
    /// The seq of the next line.
    seq: u64,
}

impl Lines {
    fn new(body: ByteStream, seq: u64) -> Self {
        Lines {
            body,
            buffer: BytesMut::new(),
            scanned: 0,
            seq,
        }
    }

    async fn next_line(&mut self) -> Result<Option<Bytes>> {
        loop {
            if let Some(at) = self.buffer[self.scanned..].iter().position(|&b| b == b'\n') {
                let mut line = self.buffer.split_to(self.scanned + at + 1);
                line.truncate(line.len() - 1);
                self.scanned = 0;
                self.seq += 1;
                return Ok(Some(line.freeze()));
            }
            self.scanned = self.buffer.len();
            match self.body.next().await {
                Some(piece) => self.buffer.extend_from_slice(&piece?),
                None if self.buffer.is_empty() => return Ok(None),
                None => return Err(Error::Storage("a chunk ends inside a record".into())),
            }
        }
    }
}
