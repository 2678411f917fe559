//! The streaming legs every file a worker writes goes through: a producer
//! sending pieces, a thread of its own compressing them, an upload into the
//! blob store, with bounded channels between them. A producer that stops
//! without finishing leaves no file.

use std::future::Future;
use std::io::Write;

use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::mpsc;

use crate::archive::{self, ExportItem, Slice, SliceSum};
use crate::ports::{StoredPart, StoredRecord};
use crate::{runtime, stream, App, Error, Result};

/// Pieces in flight between the producer and the compressor: enough to
/// keep both busy, few enough that memory does not grow with the project.
const PIPELINE_DEPTH: usize = 4;

/// A page of records as NDJSON (each record, then a newline), in pieces
/// all allocated at one size: pages differ in size.
pub(super) fn ndjson_pieces(page: &[StoredRecord]) -> Vec<Bytes> {
    let mut pieces = stream::Pieces::new(PIECE_BYTES);
    let mut done = Vec::new();
    for record in page {
        for mut bytes in [&record.json[..], b"\n"] {
            while !bytes.is_empty() {
                let (taken, full) = pieces.push(bytes);
                done.extend(full);
                bytes = &bytes[taken..];
            }
        }
    }
    done.extend(pieces.rest());
    done
}

const PIECE_BYTES: usize = 64 * 1024;

fn stopped(what: &str) -> Error {
    Error::Internal(format!("the {what} stopped"))
}

/// The entries of a tar.gz on their way to the compressing thread.
pub(super) struct Entries {
    items: mpsc::Sender<ExportItem>,
}

impl Entries {
    pub async fn send(&self, item: ExportItem) -> Result<()> {
        self.items
            .send(item)
            .await
            .map_err(|_| stopped("archive writer"))
    }

    /// A whole small file.
    pub async fn file(&self, path: &str, bytes: Bytes) -> Result<()> {
        self.send(ExportItem::Begin {
            path: path.to_owned(),
            size: bytes.len() as u64,
        })
        .await?;
        self.send(ExportItem::Data(bytes)).await?;
        self.send(ExportItem::End).await
    }

    /// A stored blob, streamed into the archive as `path`.
    pub async fn blob(&self, app: &App, key: &str, path: &str, size: u64) -> Result<()> {
        self.send(ExportItem::Begin {
            path: path.to_owned(),
            size,
        })
        .await?;
        let mut body = app.blobs.get(key).await?;
        while let Some(chunk) = body.next().await {
            self.send(ExportItem::Data(chunk?)).await?;
        }
        self.send(ExportItem::End).await
    }

    /// Everything was sent: only now may the archive be completed.
    pub async fn finish(self) -> Result<()> {
        self.send(ExportItem::Finish).await
    }
}

/// Writes the tar.gz that `produce` fills to the blob at `key`; returns
/// what `produce` returns and the archive's size.
pub(super) async fn tar_gz<T, F, Fut>(
    app: &App,
    key: &str,
    mtime: u64,
    produce: F,
) -> Result<(T, u64)>
where
    F: FnOnce(Entries) -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let (items, mut items_rx) = mpsc::channel::<ExportItem>(PIPELINE_DEPTH);
    let (writer, compressed) = stream::blocking_writer();
    let level = app.settings.compression_level;
    let compress = runtime::spawn_thread("compressor", move || -> std::io::Result<()> {
        let (writer, _) = archive::write_archive(&mut items_rx, writer, level, mtime)?;
        writer.finish()
    });
    let (uploaded, produced) =
        tokio::join!(app.blobs.put(key, compressed), produce(Entries { items }));
    let ((value, ()), size) = finish_legs(key, compress.join().await, produced, uploaded)?;
    Ok((value, size))
}

/// The pieces of a gzip file on their way to the compressing thread.
pub(super) struct Chunks {
    chunks: mpsc::Sender<Option<Bytes>>,
}

impl Chunks {
    /// Another handle on the same file, for a producer on a thread of its
    /// own.
    pub fn sender(&self) -> Chunks {
        Chunks {
            chunks: self.chunks.clone(),
        }
    }

    pub async fn send(&self, chunk: Bytes) -> Result<()> {
        self.chunks
            .send(Some(chunk))
            .await
            .map_err(|_| stopped("compressor"))
    }

    pub async fn finish(self) -> Result<()> {
        self.chunks
            .send(None)
            .await
            .map_err(|_| stopped("compressor"))
    }
}

/// Writes the gzip file that `produce` fills to the blob at `key`; returns
/// what `produce` returns and the file's size.
pub(super) async fn gzip<T, F, Fut>(app: &App, key: &str, produce: F) -> Result<(T, u64)>
where
    F: FnOnce(Chunks) -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let (chunks, mut chunks_rx) = mpsc::channel::<Option<Bytes>>(PIPELINE_DEPTH);
    let (writer, compressed) = stream::blocking_writer();
    let level = app.settings.compression_level;
    let compress = runtime::spawn_thread("compressor", move || -> std::io::Result<()> {
        let mut gzip = archive::ParallelGzEncoder::new(writer, level);
        write_chunks(&mut chunks_rx, &mut gzip)?;
        gzip.finish()?.finish()
    });
    let (uploaded, produced) =
        tokio::join!(app.blobs.put(key, compressed), produce(Chunks { chunks }));
    let ((value, ()), size) = finish_legs(key, compress.join().await, produced, uploaded)?;
    Ok((value, size))
}

/// Where one slice of a gzip stream goes: part `number` of the blob `key`
/// being written in parts as `upload`.
pub(super) struct PartOf<'a> {
    pub key: &'a str,
    pub upload: &'a str,
    pub number: u32,
    pub slice: Slice,
}

/// Writes the slice of a gzip stream that `produce` fills as one part of
/// a blob written in parts; returns what `produce` returns, the stored part
/// and what the slice adds to the stream's trailer.
pub(super) async fn gzip_part<T, F, Fut>(
    app: &App,
    part: PartOf<'_>,
    produce: F,
) -> Result<(T, StoredPart, SliceSum)>
where
    F: FnOnce(Chunks) -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let (chunks, mut chunks_rx) = mpsc::channel::<Option<Bytes>>(PIPELINE_DEPTH);
    let (writer, compressed) = stream::blocking_writer();
    let level = app.settings.compression_level;
    let slice = part.slice;
    let compress = runtime::spawn_thread("compressor", move || -> std::io::Result<SliceSum> {
        let mut gzip = archive::ParallelGzEncoder::slice(writer, level, slice);
        write_chunks(&mut chunks_rx, &mut gzip)?;
        let (writer, sum) = gzip.finish_slice()?;
        writer.finish()?;
        Ok(sum)
    });
    let stored = app
        .blobs
        .put_part(part.key, part.upload, part.number, compressed);
    let (uploaded, produced) = tokio::join!(stored, produce(Chunks { chunks }));
    let ((value, sum), stored) = finish_legs(part.key, compress.join().await, produced, uploaded)?;
    Ok((value, stored, sum))
}

/// Writes every chunk received into `out`, until the producer's end.
fn write_chunks(
    chunks: &mut mpsc::Receiver<Option<Bytes>>,
    out: &mut impl Write,
) -> std::io::Result<()> {
    loop {
        match chunks.blocking_recv() {
            Some(Some(chunk)) => out.write_all(&chunk)?,
            Some(None) => return Ok(()),
            None => return Err(std::io::Error::other("the producer stopped")),
        }
    }
}

/// The first failure in pipeline order is the cause; later ones are echoes.
fn finish_legs<T, C, U>(
    key: &str,
    compressed: Result<std::io::Result<C>>,
    produced: Result<T>,
    uploaded: Result<U>,
) -> Result<((T, C), U)> {
    let compressed = compressed?;
    let value = produced?;
    let compressed = compressed.map_err(|err| Error::Internal(format!("writing {key}: {err}")))?;
    Ok(((value, compressed), uploaded?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ndjson_pieces_are_the_page_as_ndjson_in_equal_pieces() {
        let page: Vec<StoredRecord> = [100, PIECE_BYTES, 3, PIECE_BYTES * 2 + 5, 7]
            .into_iter()
            .enumerate()
            .map(|(seq, len)| StoredRecord {
                seq: seq as u64,
                json: Bytes::from(vec![b'a' + seq as u8; len]),
            })
            .collect();
        let pieces = ndjson_pieces(&page);
        let mut expected = Vec::new();
        for record in &page {
            expected.extend_from_slice(&record.json);
            expected.push(b'\n');
        }
        assert_eq!(pieces.concat(), expected);
        let (last, full) = pieces.split_last().unwrap();
        assert!(full.iter().all(|piece| piece.len() == PIECE_BYTES));
        assert!(!last.is_empty() && last.len() <= PIECE_BYTES);
        assert!(ndjson_pieces(&[]).is_empty());
    }
}
