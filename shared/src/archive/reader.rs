//! Reads an archive from a stranger into a stream of `ImportEvent`s, checking
//! every entry on the way. Nothing is written here: the consumer stores events
//! in a staging area and only publishes them once the whole archive passed.

use std::cell::Cell;
use std::io::{self, BufRead, BufReader, Read};
use std::rc::Rc;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use flate2::read::MultiGzDecoder;

mod ahead;
mod paths;

use super::events::{invalid, ImportEvent, Sink};
use super::json::check_record;
use super::{
    is_supported_version, legacy, relation_file, ArchiveError, Limits, LEGACY_PROJECT_JSON,
    PROJECT_JSON,
};
use paths::{normalize, relation_of, shown, Extensions, Tree, MAX_PATH_BYTES};

/// Reads a whole `.tar.gz`, emitting events in order. Returns the archive's
/// VERSION.
pub fn read_archive(
    input: impl Read + Send,
    limits: &Limits,
    sink: &mut Sink<'_>,
) -> Result<String, ArchiveError> {
    read_selected(input, limits, None, sink)
}

/// Reads a `.tar.gz` for one relation: only that relation's records are
/// emitted (and checked); every other entry is streamed past. The archive
/// must still be a valid export.
pub fn read_relation(
    input: impl Read + Send,
    limits: &Limits,
    relation: &str,
    sink: &mut Sink<'_>,
) -> Result<String, ArchiveError> {
    read_selected(input, limits, Some(relation), sink)
}

fn read_selected(
    input: impl Read + Send,
    limits: &Limits,
    only: Option<&str>,
    sink: &mut Sink<'_>,
) -> Result<String, ArchiveError> {
    let mut input = BufReader::with_capacity(64 * 1024, input);
    let head = input.fill_buf().map_err(corrupt)?;
    if head.len() < 2 || head[0] != 0x1f || head[1] != 0x8b {
        return Err(ArchiveError::NotGzip);
    }
    let over_limit = Rc::new(Cell::new(false));
    std::thread::scope(|scope| {
        // Every member, as `gzip -dc` reads them: pigz and parallel writers
        // cut one stream into many.
        let mut expanded = LimitedReader {
            inner: ahead::read_ahead(scope, MultiGzDecoder::new(input)),
            remaining: limits.max_uncompressed_bytes,
            over_limit: over_limit.clone(),
        };
        let result = read_entries(&mut expanded, limits, only, sink)
            .and_then(|version| read_to_the_end(&mut expanded).map(|()| version));
        if over_limit.get() {
            return Err(ArchiveError::TooLarge {
                limit: limits.max_uncompressed_bytes,
            });
        }
        result
    })
}

/// The tar stream ends before the gzip stream does (its padding, then each
/// member's trailer): reading on to the end checks every trailer's CRC and
/// length, and refuses whatever follows the last member.
fn read_to_the_end(expanded: &mut impl Read) -> Result<(), ArchiveError> {
    io::copy(expanded, &mut io::sink()).map_err(corrupt)?;
    Ok(())
}

fn read_entries(
    expanded: impl Read,
    limits: &Limits,
    only: Option<&str>,
    sink: &mut Sink<'_>,
) -> Result<String, ArchiveError> {
    let mut selected = |event: ImportEvent| match (&event, only) {
        (_, None) => sink(event),
        (ImportEvent::Record { relation, .. }, Some(only)) if **relation == *only => sink(event),
        _ => Ok(()),
    };
    let sink: &mut Sink<'_> = &mut selected;
    let mut archive = tar::Archive::new(expanded);
    let mut version = None;
    let mut has_project = false;
    let mut relation_files = 0usize;
    let mut check = EntryCheck::new(limits);
    for entry in archive.entries().map_err(corrupt)?.raw(true) {
        let mut entry = entry.map_err(corrupt)?;
        let Some(path) = check.file_path(&mut entry)? else {
            continue;
        };
        match path.as_str() {
            "VERSION" => {
                let text = read_small(&mut entry, 64, "VERSION")?;
                let text = text.trim().to_owned();
                if !is_supported_version(&text) {
                    return Err(ArchiveError::UnsupportedVersion(text));
                }
                version = Some(text);
            }
            "GITLAB_VERSION" | "GITLAB_REVISION" => {
                read_small(&mut entry, 256, &path)?;
            }
            PROJECT_JSON => {
                let text = read_small(&mut entry, limits.max_attributes_bytes, &path)?;
                let attributes = check_record(text.as_bytes(), limits)
                    .map_err(|reason| invalid(&path, 1, reason))?;
                sink(ImportEvent::Attributes(Bytes::copy_from_slice(attributes)))
                    .map_err(|_| ArchiveError::Aborted)?;
                has_project = true;
            }
            LEGACY_PROJECT_JSON => {
                legacy::read_project_json(&mut entry, limits, sink)?;
                has_project = true;
            }
            _ => {
                let relation = relation_of(&path)?;
                if relation.is_some() {
                    relation_files += 1;
                    if relation_files > limits.max_relations {
                        return Err(ArchiveError::TooManyRelations {
                            limit: limits.max_relations,
                        });
                    }
                }
                match (relation, only) {
                    (Some(relation), None) => read_ndjson(&mut entry, &relation, limits, sink)?,
                    (Some(relation), Some(only)) if relation == only => {
                        read_ndjson(&mut entry, &relation, limits, sink)?
                    }
                    (None, None) => read_blob(&mut entry, path, sink)?,
                    // Not wanted: the tar reader skips the rest of the entry.
                    _ => {}
                }
            }
        }
    }
    let version = version.ok_or(ArchiveError::MissingVersion)?;
    if !has_project {
        return Err(ArchiveError::MissingProject);
    }
    Ok(version)
}

/// What every tar entry from a stranger passes before it is read: a bound
/// on the entries, extension headers (long names, PAX) read only up to
/// their cap, a path inside the root that unpacks on any file system, and
/// only files and directories.
struct EntryCheck<'a> {
    limits: &'a Limits,
    count: u64,
    tree: Tree,
    extended: Extensions,
}

impl<'a> EntryCheck<'a> {
    fn new(limits: &'a Limits) -> Self {
        EntryCheck {
            limits,
            count: 0,
            tree: Tree::default(),
            extended: Extensions::default(),
        }
    }

    /// The path of a raw entry (`Entries::raw`: extension headers come as
    /// entries, so their size is checked before anything of them is held)
    /// that is a file to read; `None` for anything else that passed.
    fn file_path(
        &mut self,
        entry: &mut tar::Entry<'_, impl Read>,
    ) -> Result<Option<String>, ArchiveError> {
        self.count += 1;
        if self.count > self.limits.max_entries {
            return Err(ArchiveError::TooManyEntries {
                limit: self.limits.max_entries,
            });
        }
        let entry_type = entry.header().entry_type();
        if self.extended.take_extension(entry, entry_type)? {
            return Ok(None);
        }
        let (long_name, pax_size) = self.extended.for_next_entry()?;
        if pax_size.is_some_and(|size| Some(size) != entry.header().entry_size().ok()) {
            return Err(ArchiveError::UnsupportedEntry {
                path: shown(&String::from_utf8_lossy(&entry.path_bytes())),
                kind: "a PAX size that differs from its header".into(),
            });
        }
        let raw_path = match long_name {
            Some(name) => name,
            None => String::from_utf8_lossy(&entry.path_bytes()).into_owned(),
        };
        let Some(path) = normalize(&raw_path)? else {
            return Ok(None);
        };
        if entry_type.is_dir() {
            self.tree.add_dir(&path)?;
            return Ok(None);
        }
        if !(entry_type.is_file() || entry_type.is_contiguous()) {
            return Err(ArchiveError::UnsupportedEntry {
                path: shown(&raw_path),
                kind: entry_kind(entry_type),
            });
        }
        if path.len() > MAX_PATH_BYTES {
            return Err(ArchiveError::UnsafePath(shown(&raw_path)));
        }
        self.tree.add_file(&path)?;
        Ok(Some(path))
    }
}

/// Reads the files of a `.tar.gz` from a stranger (a migration source's
/// file relation) with every check an import's archive gets: each file's
/// path, its reader and its size go to `file`, which must read it whole or
/// fail. Every gzip member's trailer is checked, and what follows the tar
/// stream must be padding.
pub fn read_tar_files<E: From<ArchiveError>>(
    input: impl Read + Send,
    limits: &Limits,
    mut file: impl FnMut(String, &mut dyn Read, u64) -> Result<(), E>,
) -> Result<(), E> {
    let mut input = BufReader::with_capacity(64 * 1024, input);
    let head = input.fill_buf().map_err(corrupt)?;
    if head.len() < 2 || head[0] != 0x1f || head[1] != 0x8b {
        return Err(ArchiveError::NotGzip.into());
    }
    let over_limit = Rc::new(Cell::new(false));
    let mut expanded = LimitedReader {
        inner: MultiGzDecoder::new(input),
        remaining: limits.max_uncompressed_bytes,
        over_limit: over_limit.clone(),
    };
    let too_large = || ArchiveError::TooLarge {
        limit: limits.max_uncompressed_bytes,
    };
    let read = (|| {
        let mut archive = tar::Archive::new(&mut expanded);
        let mut check = EntryCheck::new(limits);
        for entry in archive.entries().map_err(corrupt)?.raw(true) {
            let mut entry = entry.map_err(corrupt)?;
            if let Some(path) = check.file_path(&mut entry)? {
                let size = entry.header().entry_size().map_err(corrupt)?;
                file(path, &mut entry, size)?;
            }
        }
        read_to_the_end(&mut expanded).map_err(E::from)
    })();
    if over_limit.get() {
        return Err(too_large().into());
    }
    read
}

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

fn read_ndjson(
    entry: &mut impl Read,
    relation: &str,
    limits: &Limits,
    sink: &mut Sink<'_>,
) -> Result<(), ArchiveError> {
    let file = relation_file(relation);
    let relation: Arc<str> = relation.into();
    let mut copies = RecordCopies::default();
    let big_records = BigRecords::default();
    let mut lines = BufReader::with_capacity(64 * 1024, entry);
    let mut line = Vec::new();
    let mut number = 0u64;
    loop {
        line.clear();
        number += 1;
        let complete = read_line_limited(&mut lines, &mut line, limits.max_record_bytes + 2)
            .map_err(corrupt)?;
        if line.is_empty() && !complete {
            return Ok(());
        }
        if line.len() > limits.max_record_bytes + 1 {
            return Err(invalid(
                &file,
                number,
                format!(
                    "line longer than the limit of {} bytes",
                    limits.max_record_bytes
                ),
            ));
        }
        if number == 1 && line.starts_with(UTF8_BOM) {
            // Editors on Windows start files with one; it is no JSON.
            line.drain(..UTF8_BOM.len());
        }
        if line.trim_ascii().is_empty() {
            continue;
        }
        let record =
            check_record(&line, limits).map_err(|reason| invalid(&file, number, reason))?;
        let json = if record.len() > RecordCopies::BLOCK_BYTES {
            // A big record keeps the line's own buffer rather than a second
            // copy of it; the next line starts with a small one.
            let start = record.as_ptr() as usize - line.as_ptr() as usize;
            let end = start + record.len();
            big_records
                .hand_out(std::mem::take(&mut line))
                .slice(start..end)
        } else {
            copies.copy(record)
        };
        sink(ImportEvent::Record {
            relation: relation.clone(),
            json,
        })
        .map_err(|_| ArchiveError::Aborted)?;
    }
}

/// Big records (near the size limit) are handed out one at a time: the
/// next is read only once the one before it was dropped, that is stored.
/// However many stages the pipeline has, one such record is in memory, and
/// the line being read.
#[derive(Clone, Default)]
struct BigRecords(Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>);

/// A big record's buffer; dropping it lets the next one go.
struct HandedOut {
    bytes: Vec<u8>,
    gate: BigRecords,
}

impl AsRef<[u8]> for HandedOut {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

impl Drop for HandedOut {
    fn drop(&mut self) {
        let (out, freed) = &*self.gate.0;
        *out.lock().unwrap_or_else(|e| e.into_inner()) = false;
        freed.notify_all();
    }
}

impl BigRecords {
    fn hand_out(&self, bytes: Vec<u8>) -> Bytes {
        let (out, freed) = &*self.0;
        let mut busy = out.lock().unwrap_or_else(|e| e.into_inner());
        while *busy {
            busy = freed.wait(busy).unwrap_or_else(|e| e.into_inner());
        }
        *busy = true;
        drop(busy);
        Bytes::from_owner(HandedOut {
            bytes,
            gate: self.clone(),
        })
    }
}

/// Records copied out of the line buffer into shared blocks, not into an
/// allocation each: hundreds of thousands of small allocations of mixed
/// sizes, freed on other threads, fragmented glibc's heap so that an
/// import's peak RSS grew with the archive (`bench/run.py`'s flatness line).
#[derive(Default)]
struct RecordCopies {
    block: BytesMut,
}

impl RecordCopies {
    /// A block is freed once every record copied into it is dropped; the
    /// records of a block are stored together, so that is soon.
    const BLOCK_BYTES: usize = 64 * 1024;

    fn copy(&mut self, record: &[u8]) -> Bytes {
        if self.block.capacity() < record.len() {
            self.block = BytesMut::with_capacity(Self::BLOCK_BYTES.max(record.len()));
        }
        self.block.extend_from_slice(record);
        self.block.split().freeze()
    }
}

/// Reads up to and including the next `\n`, but never more than `max` bytes.
/// Returns whether a newline ended the line.
fn read_line_limited(input: &mut impl BufRead, line: &mut Vec<u8>, max: usize) -> io::Result<bool> {
    loop {
        let available = input.fill_buf()?;
        if available.is_empty() {
            return Ok(false);
        }
        let room = max.saturating_sub(line.len());
        if room == 0 {
            return Ok(false);
        }
        let window = &available[..available.len().min(room)];
        if let Some(at) = memchr::memchr(b'\n', window) {
            line.extend_from_slice(&window[..at]);
            input.consume(at + 1);
            return Ok(true);
        }
        let taken = window.len();
        line.extend_from_slice(window);
        input.consume(taken);
    }
}

fn read_blob(entry: &mut impl Read, path: String, sink: &mut Sink<'_>) -> Result<(), ArchiveError> {
    sink(ImportEvent::BlobStart { path }).map_err(|_| ArchiveError::Aborted)?;
    let mut buf = vec![0u8; crate::stream::CHUNK];
    loop {
        let n = entry.read(&mut buf).map_err(corrupt)?;
        if n == 0 {
            break;
        }
        sink(ImportEvent::BlobChunk(Bytes::copy_from_slice(&buf[..n])))
            .map_err(|_| ArchiveError::Aborted)?;
    }
    sink(ImportEvent::BlobEnd).map_err(|_| ArchiveError::Aborted)
}

fn read_small(entry: &mut impl Read, max: usize, path: &str) -> Result<String, ArchiveError> {
    let mut bytes = Vec::new();
    entry
        .take(max as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(corrupt)?;
    if bytes.len() > max {
        return Err(invalid(path, 1, format!("file larger than {max} bytes")));
    }
    String::from_utf8(bytes).map_err(|_| invalid(path, 1, "invalid UTF-8".into()))
}

fn entry_kind(entry_type: tar::EntryType) -> String {
    match entry_type {
        tar::EntryType::Symlink => "symbolic link".into(),
        tar::EntryType::Link => "hard link".into(),
        tar::EntryType::Char => "character device".into(),
        tar::EntryType::Block => "block device".into(),
        tar::EntryType::Fifo => "FIFO".into(),
        other => format!("entry type {:?}", other),
    }
}

pub(super) fn corrupt(err: io::Error) -> ArchiveError {
    ArchiveError::Corrupt(err.to_string())
}

/// Fails the read once more than `remaining` bytes came out of the decoder.
struct LimitedReader<R> {
    inner: R,
    remaining: u64,
    over_limit: Rc<Cell<bool>>,
}

impl<R: Read> Read for LimitedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n as u64 > self.remaining {
            self.over_limit.set(true);
            return Err(io::Error::other("archive expands beyond the size limit"));
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_copies_share_blocks_and_keep_their_bytes() {
        let mut copies = RecordCopies::default();
        let first = copies.copy(b"{\"a\":1}");
        let second = copies.copy(b"{}");
        assert_eq!((&first[..], &second[..]), (&b"{\"a\":1}"[..], &b"{}"[..]));
        assert_eq!(
            second.as_ptr(),
            first.as_ptr().wrapping_add(first.len()),
            "consecutive records lie in one block"
        );
        let big = vec![b'x'; RecordCopies::BLOCK_BYTES * 2];
        assert_eq!(
            copies.copy(&big),
            big,
            "a record larger than a block gets its own"
        );
        drop(first);
        assert_eq!(&copies.copy(b"[]")[..], b"[]");
        assert_eq!(&second[..], b"{}", "a copy outlives the block it came from");
    }

    #[test]
    fn normalizes_paths() {
        assert_eq!(
            normalize("./tree/project.json").unwrap().unwrap(),
            "tree/project.json"
        );
        assert_eq!(normalize("./").unwrap(), None);
        assert!(normalize("../etc/passwd").is_err());
        assert!(normalize("tree/../../x").is_err());
        assert!(normalize("/etc/passwd").is_err());
        assert!(normalize("a\\..\\b").is_err());
    }

    #[test]
    fn reads_limited_lines() {
        let mut input = BufReader::with_capacity(4, &b"abc\ndefghij\nk"[..]);
        let mut line = Vec::new();
        assert!(read_line_limited(&mut input, &mut line, 100).unwrap());
        assert_eq!(line, b"abc");
        line.clear();
        assert!(!read_line_limited(&mut input, &mut line, 5).unwrap());
        assert_eq!(line, b"defgh");
    }
}
