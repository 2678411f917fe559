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
        let mut header = entry_header(size, mtime);
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

/// Every entry's tar header: a regular file, readable by all.
fn entry_header(size: u64, mtime: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_size(size);
    header.set_mode(0o644);
    header.set_mtime(mtime);
    header.set_entry_type(tar::EntryType::Regular);
    header
}

/// The bytes `write_archive` puts before an entry's data: its header, after
/// a GNU long-name entry where the path needs one.
pub fn header_bytes(path: &str, size: u64, mtime: u64) -> io::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    builder.mode(tar::HeaderMode::Deterministic);
    builder.append_data(&mut entry_header(size, mtime), path, io::empty())?;
    // Taken before the builder is dropped: dropping it ends the archive.
    Ok(builder.get_ref().clone())
}

/// The zeros that end an entry of `size` bytes at a block boundary.
pub fn padding(size: u64) -> usize {
    ((BLOCK - size % BLOCK) % BLOCK) as usize
}

const BLOCK: u64 = 512;

/// The end of an archive: two empty blocks.
pub const END_OF_ARCHIVE: [u8; 1024] = [0; 1024];

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

#[cfg(test)]
mod tests {
    use super::*;

    /// The pieces a sliced export writes by hand are the bytes of the
    /// archive `write_archive` writes.
    #[test]
    fn headers_padding_and_end_are_the_writers_bytes() {
        let long = format!("uploads/{}/file.png", "d".repeat(120));
        let entries: Vec<(&str, Vec<u8>)> = vec![
            ("VERSION", b"0.2.4".to_vec()),
            ("tree/project/issues.ndjson", vec![b'x'; 1024]),
            (long.as_str(), vec![b'y'; 700]),
        ];
        let (items, mut received) = mpsc::channel(64);
        let mut expected = Vec::new();
        for (path, data) in &entries {
            items
                .try_send(ExportItem::Begin {
                    path: (*path).to_owned(),
                    size: data.len() as u64,
                })
                .unwrap();
            items
                .try_send(ExportItem::Data(Bytes::from(data.clone())))
                .unwrap();
            items.try_send(ExportItem::End).unwrap();
            expected.extend(header_bytes(path, data.len() as u64, 1_700_000_000).unwrap());
            expected.extend_from_slice(data);
            expected.extend(vec![0; padding(data.len() as u64)]);
        }
        items.try_send(ExportItem::Finish).unwrap();
        expected.extend_from_slice(&END_OF_ARCHIVE);
        let (gz, total) = write_archive(&mut received, Vec::new(), 6, 1_700_000_000).unwrap();
        let mut tar = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut tar)
            .unwrap();
        assert_eq!(total, 5 + 1024 + 700);
        assert!(
            tar == expected,
            "{} against {} bytes",
            tar.len(),
            expected.len()
        );
    }
}
