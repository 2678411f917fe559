//! Writes a GitLab archive from a stream of entries. Every entry announces its
//! size first (tar needs it in the header) and the writer checks the data
//! matches, so a short or long entry fails the export instead of producing a
//! corrupt archive.

use std::io::{self, Read, Write};

use bytes::Bytes;

use super::ParallelGzEncoder;
use tokio::sync::mpsc;

#[derive(Debug)]
pub enum ExportItem {
    Begin {
        path: String,
        size: u64,
    },
    Data(Bytes),
    End,
    /// Everything was sent. A channel closed without it means the producer
    /// failed, and the archive is abandoned rather than finished.
    Finish,
}

/// Writes entries received on `items` as a `.tar.gz` into `out` until
/// `Finish`. Returns `out` and the uncompressed bytes written.
pub fn write_archive<W: Write>(
    items: &mut mpsc::Receiver<ExportItem>,
    out: W,
    level: u32,
    mtime: u64,
) -> io::Result<(W, u64)> {
    let mut builder = tar::Builder::new(ParallelGzEncoder::new(out, level));
    builder.mode(tar::HeaderMode::Deterministic);
    let mut total = 0u64;
    loop {
        let (path, size) = match items.blocking_recv() {
            Some(ExportItem::Begin { path, size }) => (path, size),
            Some(ExportItem::Finish) => break,
            Some(_) => return Err(io::Error::other("archive entry data without a header")),
            None => return Err(io::Error::other("the archive producer stopped")),
        };
        let mut header = tar::Header::new_gnu();
        header.set_size(size);
        header.set_mode(0o644);
        header.set_mtime(mtime);
        header.set_entry_type(tar::EntryType::Regular);
        let data = EntryData {
            items,
            path: &path,
            remaining: size,
            current: Bytes::new(),
            ended: false,
        };
        builder.append_data(&mut header, &path, data)?;
        total += size;
    }
    let encoder = builder.into_inner()?;
    Ok((encoder.finish()?, total))
}

/// The data of one entry, read from the channel up to its `End`.
struct EntryData<'a> {
    items: &'a mut mpsc::Receiver<ExportItem>,
    path: &'a str,
    remaining: u64,
    current: Bytes,
    ended: bool,
}

impl Read for EntryData<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            if self.ended {
                return Ok(0);
            }
            match self.items.blocking_recv() {
                Some(ExportItem::Data(chunk)) => self.current = chunk,
                Some(ExportItem::End) => {
                    if self.remaining != 0 {
                        return Err(self.mismatch("shorter"));
                    }
                    self.ended = true;
                }
                Some(ExportItem::Begin { .. } | ExportItem::Finish) | None => {
                    return Err(io::Error::other(format!(
                        "archive entry {} ended without its data",
                        self.path
                    )))
                }
            }
        }
        let n = buf.len().min(self.current.len());
        if n as u64 > self.remaining {
            return Err(self.mismatch("longer"));
        }
        buf[..n].copy_from_slice(&self.current.split_to(n));
        self.remaining -= n as u64;
        Ok(n)
    }
}

impl EntryData<'_> {
    fn mismatch(&self, how: &str) -> io::Error {
        io::Error::other(format!(
            "archive entry {} is {how} than its announced size",
            self.path
        ))
    }
}
