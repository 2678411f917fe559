//! Reads an archive from a stranger into a stream of `ImportEvent`s, checking
//! every entry on the way. Nothing is written here: the consumer stores events
//! in a staging area and only publishes them once the whole archive passed.

use std::cell::Cell;
use std::io::{self, BufRead, BufReader, Read};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};

mod ahead;
mod paths;

use super::events::{invalid, ImportEvent, Sink};
use super::inflate::{AccessPoint, AccessPoints, Inflater, Progress};
use super::json::check_record;
use super::{
    blob_part_bytes, is_supported_version, legacy, relation_file, ArchiveError, Limits,
    LEGACY_PROJECT_JSON, PROJECT_JSON,
};
use paths::{normalize, relation_of, shown, Extensions, SeenPaths, Tree, MAX_PATH_BYTES};

/// How a read of a whole archive ended.
#[derive(Debug)]
pub enum ReadEnd {
    /// Read to its end; the archive's VERSION.
    Complete { version: String },
    /// Stopped at a safe point on request: a later read goes on from here.
    Stopped(Box<ReaderCheckpoint>),
}

/// Shared by a read and whoever started it: a request to stop at the next
/// safe point (between two entries, or between two lines of a relation's
/// file) one way, how far the inflater got the other.
#[derive(Clone, Default)]
pub struct ReadControl {
    stop: Arc<AtomicBool>,
    progress: Arc<Progress>,
}

impl ReadControl {
    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    fn stop_requested(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// The archive's offset of the next byte the read takes in.
    pub fn compressed(&self) -> u64 {
        self.progress.compressed()
    }

    /// Bytes this read inflated (from where it started).
    pub fn inflated(&self) -> u64 {
        self.progress.inflated()
    }
}

/// Where a read stopped, with everything it needs to go on there without
/// reading a byte before: the inflater's access point at or before the
/// stop, the uncompressed offset of the stop, and what the checks had seen
/// (entries, paths, the VERSION, relation files, the file it was in).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReaderCheckpoint {
    pub access: AccessPoint,
    pub expanded: u64,
    version: Option<String>,
    has_project: bool,
    relation_files: usize,
    entries: u64,
    #[serde(flatten)]
    paths: SeenPaths,
    inside: Option<Inside>,
}

impl ReaderCheckpoint {
    /// The blob the read stopped inside (its path, and the bytes of it
    /// before the stop), if it did.
    pub fn inside_blob(&self) -> Option<(&str, u64)> {
        match &self.inside {
            Some(Inside::Blob { path, from, .. }) => Some((path, *from)),
            _ => None,
        }
    }
}

/// The file the read stopped in: where its data ends and where the next
/// entry's header starts (after the padding), as uncompressed offsets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Inside {
    /// A relation's file, between two of its lines.
    Relation {
        relation: String,
        next_line: u64,
        data_end: u64,
        next_header: u64,
    },
    /// A blob stored in parts, where a part ends.
    Blob {
        path: String,
        size: u64,
        from: u64,
        data_end: u64,
        next_header: u64,
    },
}

impl Inside {
    fn layout(&self, data_start: u64) -> Layout {
        let (Inside::Relation {
            data_end,
            next_header,
            ..
        }
        | Inside::Blob {
            data_end,
            next_header,
            ..
        }) = self;
        Layout {
            data_start,
            data_end: *data_end,
            next_header: *next_header,
        }
    }
}

/// Reads a whole `.tar.gz`, emitting events in order: from its start, or
/// from where an earlier read stopped (`input` then starts at the
/// checkpoint's compressed offset). Asked through `control`, it stops at the
/// next safe point.
pub fn read_archive(
    input: impl Read + Send,
    limits: &Limits,
    from: Option<&ReaderCheckpoint>,
    control: &ReadControl,
    sink: &mut Sink<'_>,
) -> Result<ReadEnd, ArchiveError> {
    read_selected(input, limits, Select::All, from, Some(control), sink)
}

/// Reads the files of a `.tar.gz` from a stranger (a migration source's
/// file relation) with every check an archive's entries get, each file as
/// a blob's events whatever its name: from its start, or from where an
/// earlier read stopped, and stopping as `read_archive` does. It ends
/// `Complete` with an empty version: such a tar has none.
pub fn read_files(
    input: impl Read + Send,
    limits: &Limits,
    from: Option<&ReaderCheckpoint>,
    control: &ReadControl,
    sink: &mut Sink<'_>,
) -> Result<ReadEnd, ArchiveError> {
    read_selected(input, limits, Select::Files, from, Some(control), sink)
}

/// Which entries a read emits.
#[derive(Clone, Copy)]
enum Select<'a> {
    /// An export archive: every entry.
    All,
    /// An export archive: only this relation's records.
    Relation(&'a str),
    /// A tar of files: every file a blob, no archive layout.
    Files,
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
    match read_selected(input, limits, Select::Relation(relation), None, None, sink)? {
        ReadEnd::Complete { version } => Ok(version),
        ReadEnd::Stopped(_) => unreachable!("a read without a stop signal never stops"),
    }
}

fn read_selected(
    input: impl Read + Send,
    limits: &Limits,
    select: Select<'_>,
    from: Option<&ReaderCheckpoint>,
    control: Option<&ReadControl>,
    sink: &mut Sink<'_>,
) -> Result<ReadEnd, ArchiveError> {
    let access = from.map_or_else(AccessPoint::start, |from| from.access.clone());
    let inflater = if from.is_some() {
        Inflater::resume(io::Cursor::new(Vec::new()).chain(input), access.clone())
    } else {
        Inflater::new(gzip_input(input)?)
    }
    .map_err(corrupt)?;
    let inflater = match control {
        Some(control) => inflater.report_to(control.progress.clone()),
        None => inflater,
    };
    let points = inflater.access_points();
    let over_limit = Rc::new(Cell::new(false));
    std::thread::scope(|scope| {
        let position = Rc::new(Cell::new(access.expanded));
        // Every member, as `gzip -dc` reads them: pigz and parallel writers
        // cut one stream into many.
        let mut expanded = Positioned {
            inner: LimitedReader {
                inner: ahead::read_ahead(scope, inflater),
                remaining: limits
                    .max_uncompressed_bytes
                    .saturating_sub(access.expanded),
                over_limit: over_limit.clone(),
            },
            position: position.clone(),
        };
        let mut entries = Entries {
            limits,
            select,
            check: EntryCheck::new(limits),
            seen: Seen::default(),
            position,
            points,
            control,
        };
        let result = (|| {
            let mut inside = None;
            if let Some(from) = from {
                inside = entries.restore(from)?;
                skip(&mut expanded, from.expanded.saturating_sub(access.expanded))?;
            }
            let end = entries.read(&mut expanded, inside, sink)?;
            if let ReadEnd::Complete { .. } = end {
                read_to_the_end(&mut expanded)?;
            }
            Ok(end)
        })();
        if over_limit.get() {
            return Err(ArchiveError::TooLarge {
                limit: limits.max_uncompressed_bytes,
            });
        }
        result
    })
}

/// `input`, once its first bytes show a gzip stream.
fn gzip_input<R: Read>(mut input: R) -> Result<io::Chain<io::Cursor<Vec<u8>>, R>, ArchiveError> {
    let mut head = [0u8; 2];
    let mut got = 0;
    while got < head.len() {
        match input.read(&mut head[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(corrupt(err)),
        }
    }
    if head[..got] != [0x1f, 0x8b] {
        return Err(ArchiveError::NotGzip);
    }
    Ok(io::Cursor::new(head.to_vec()).chain(input))
}

fn skip(input: &mut impl Read, bytes: u64) -> Result<(), ArchiveError> {
    let skipped = io::copy(&mut input.take(bytes), &mut io::sink()).map_err(corrupt)?;
    if skipped < bytes {
        return Err(ArchiveError::Corrupt("the archive ends early".into()));
    }
    Ok(())
}

/// The tar stream ends before the gzip stream does (its padding, then each
/// member's trailer): reading on to the end checks every trailer's CRC and
/// length, and refuses whatever follows the last member.
fn read_to_the_end(expanded: &mut impl Read) -> Result<(), ArchiveError> {
    io::copy(expanded, &mut io::sink()).map_err(corrupt)?;
    Ok(())
}

/// What the archive showed so far, checked at its end.
#[derive(Default)]
struct Seen {
    version: Option<String>,
    has_project: bool,
    relation_files: usize,
}

/// Where an entry's data lies in the uncompressed stream.
#[derive(Clone, Copy)]
struct Layout {
    data_start: u64,
    data_end: u64,
    next_header: u64,
}

/// The reading of an archive's entries, with what it checks across them.
struct Entries<'a> {
    limits: &'a Limits,
    select: Select<'a>,
    check: EntryCheck<'a>,
    seen: Seen,
    /// The uncompressed offset of the next byte read.
    position: Rc<Cell<u64>>,
    points: AccessPoints,
    control: Option<&'a ReadControl>,
}

impl Entries<'_> {
    /// Takes on what the checks had seen at `from`; returns the relation
    /// file it stopped in, if any.
    fn restore(&mut self, from: &ReaderCheckpoint) -> Result<Option<Inside>, ArchiveError> {
        self.seen = Seen {
            version: from.version.clone(),
            has_project: from.has_project,
            relation_files: from.relation_files,
        };
        self.check.count = from.entries;
        self.check.tree = Tree::from_seen(&from.paths)
            .ok_or_else(|| ArchiveError::Corrupt("the checkpoint's paths are not ours".into()))?;
        Ok(from.inside.clone())
    }

    /// A checkpoint at `expanded`, if a stop was requested and an access
    /// point at or before it is still kept (else the next safe point).
    fn stop_here(
        &self,
        expanded: u64,
        inside: impl FnOnce() -> Option<Inside>,
    ) -> Option<Box<ReaderCheckpoint>> {
        if !self.control?.stop_requested() {
            return None;
        }
        let access = self.points.at_or_before(expanded)?;

        Some(Box::new(ReaderCheckpoint {
            access,
            expanded,
            version: self.seen.version.clone(),
            has_project: self.seen.has_project,
            relation_files: self.seen.relation_files,
            entries: self.check.count,
            paths: self.check.tree.seen(),
            inside: inside(),
        }))
    }

    fn read(
        &mut self,
        expanded: &mut impl Read,
        inside: Option<Inside>,
        sink: &mut Sink<'_>,
    ) -> Result<ReadEnd, ArchiveError> {
        let select = self.select;
        let mut selected = |event: ImportEvent| match (&event, select) {
            (_, Select::All | Select::Files) => sink(event),
            (ImportEvent::Record { relation, .. }, Select::Relation(only))
                if **relation == *only =>
            {
                sink(event)
            }
            _ => Ok(()),
        };
        let sink: &mut Sink<'_> = &mut selected;
        if let Some(inside) = inside {
            // The rest of the file the last read stopped in.
            let layout = inside.layout(self.position.get());
            let mut rest = (&mut *expanded).take(layout.data_end.saturating_sub(layout.data_start));
            let stopped = match inside {
                Inside::Relation {
                    relation,
                    next_line,
                    ..
                } => self.read_ndjson(&mut rest, &relation, next_line, layout, sink)?,
                Inside::Blob {
                    path, size, from, ..
                } => self.read_blob(&mut rest, path, (size, from), layout, sink)?,
            };
            if let Some(stop) = stopped {
                return Ok(ReadEnd::Stopped(stop));
            }
            skip(
                expanded,
                layout.next_header.saturating_sub(self.position.get()),
            )?;
        }
        let mut archive = tar::Archive::new(expanded);
        for entry in archive.entries().map_err(corrupt)?.raw(true) {
            let mut entry = entry.map_err(corrupt)?;
            let data_start = self.position.get();
            let size = entry.size();
            let layout = Layout {
                data_start,
                data_end: data_start.saturating_add(size),
                next_header: data_start.saturating_add(size.div_ceil(512).saturating_mul(512)),
            };
            let Some(path) = self.check.file_path(&mut entry)? else {
                continue;
            };
            if let Some(stop) = self.read_entry(&mut entry, path, layout, sink)? {
                return Ok(ReadEnd::Stopped(stop));
            }
            if let Some(stop) = self.stop_here(layout.next_header, || None) {
                return Ok(ReadEnd::Stopped(stop));
            }
        }
        if let Select::Files = self.select {
            return Ok(ReadEnd::Complete {
                version: String::new(),
            });
        }
        let version = self
            .seen
            .version
            .take()
            .ok_or(ArchiveError::MissingVersion)?;
        if !self.seen.has_project {
            return Err(ArchiveError::MissingProject);
        }
        Ok(ReadEnd::Complete { version })
    }

    /// Reads one file entry; a checkpoint if it stopped inside it.
    fn read_entry(
        &mut self,
        entry: &mut impl Read,
        path: String,
        layout: Layout,
        sink: &mut Sink<'_>,
    ) -> Result<Option<Box<ReaderCheckpoint>>, ArchiveError> {
        let limits = self.limits;
        if let Select::Files = self.select {
            let size = layout.data_end - layout.data_start;
            return self.read_blob(entry, path, (size, 0), layout, sink);
        }
        match path.as_str() {
            "VERSION" => {
                let text = read_small(entry, 64, "VERSION")?;
                let text = text.trim().to_owned();
                if !is_supported_version(&text) {
                    return Err(ArchiveError::UnsupportedVersion(text));
                }
                self.seen.version = Some(text);
            }
            "GITLAB_VERSION" | "GITLAB_REVISION" => {
                read_small(entry, 256, &path)?;
            }
            PROJECT_JSON => {
                let text = read_small(entry, limits.max_attributes_bytes, &path)?;
                let attributes = check_record(text.as_bytes(), limits)
                    .map_err(|reason| invalid(&path, 1, reason))?;
                sink(ImportEvent::Attributes(Bytes::copy_from_slice(attributes)))
                    .map_err(|_| ArchiveError::Aborted)?;
                self.seen.has_project = true;
            }
            LEGACY_PROJECT_JSON => {
                legacy::read_project_json(entry, limits, sink)?;
                self.seen.has_project = true;
            }
            _ => {
                let relation = relation_of(&path)?;
                if relation.is_some() {
                    self.seen.relation_files += 1;
                    if self.seen.relation_files > limits.max_relations {
                        return Err(ArchiveError::TooManyRelations {
                            limit: limits.max_relations,
                        });
                    }
                }
                match (relation, self.select) {
                    (Some(relation), Select::All) => {
                        return self.read_ndjson(entry, &relation, 1, layout, sink);
                    }
                    (Some(relation), Select::Relation(only)) if relation == only => {
                        return self.read_ndjson(entry, &relation, 1, layout, sink);
                    }
                    (None, Select::All) => {
                        let size = layout.data_end - layout.data_start;
                        return self.read_blob(entry, path, (size, 0), layout, sink);
                    }
                    // Not wanted: the tar reader skips the rest of the entry.
                    _ => {}
                }
            }
        }
        Ok(None)
    }
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

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

impl Entries<'_> {
    /// Reads a relation's records from its line `first_line` on (the data
    /// at `layout.data_start`), or up to a requested stop between two lines.
    fn read_ndjson(
        &self,
        entry: &mut impl Read,
        relation: &str,
        first_line: u64,
        layout: Layout,
        sink: &mut Sink<'_>,
    ) -> Result<Option<Box<ReaderCheckpoint>>, ArchiveError> {
        let limits = self.limits;
        let file = relation_file(relation);
        let shared: Arc<str> = relation.into();
        let mut copies = RecordCopies::default();
        let big_records = BigRecords::default();
        let counted = Counted {
            inner: entry,
            count: 0,
        };
        let mut lines = BufReader::with_capacity(64 * 1024, counted);
        let mut line = Vec::new();
        let mut number = first_line.saturating_sub(1);
        loop {
            if self.control.is_some() {
                let taken = lines.get_ref().count - lines.buffer().len() as u64;
                let at = layout.data_start + taken;
                let inside = || {
                    Some(Inside::Relation {
                        relation: relation.to_owned(),
                        next_line: number + 1,
                        data_end: layout.data_end,
                        next_header: layout.next_header,
                    })
                };
                if let Some(stop) = self.stop_here(at, inside) {
                    return Ok(Some(stop));
                }
            }
            line.clear();
            number += 1;
            let complete = read_line_limited(&mut lines, &mut line, limits.max_record_bytes + 2)
                .map_err(corrupt)?;
            if line.is_empty() && !complete {
                return Ok(None);
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
                relation: shared.clone(),
                json,
            })
            .map_err(|_| ArchiveError::Aborted)?;
        }
    }
}

impl Entries<'_> {
    /// Streams a blob's bytes `from..size` (its data at `layout.data_start`)
    /// in chunks. A blob stored in parts may stop where a part ends.
    fn read_blob(
        &self,
        entry: &mut impl Read,
        path: String,
        (size, from): (u64, u64),
        layout: Layout,
        sink: &mut Sink<'_>,
    ) -> Result<Option<Box<ReaderCheckpoint>>, ArchiveError> {
        let part = blob_part_bytes(size);
        sink(ImportEvent::BlobStart {
            path: path.clone(),
            size,
            from,
        })
        .map_err(|_| ArchiveError::Aborted)?;
        let mut buf = vec![0u8; crate::stream::CHUNK];
        let mut at = from;
        loop {
            let mut want = buf.len();
            if let Some(part) = part {
                let to_part_end = part - at % part;
                if to_part_end == part && at > from && at < size {
                    let inside = || {
                        Some(Inside::Blob {
                            path: path.clone(),
                            size,
                            from: at,
                            data_end: layout.data_end,
                            next_header: layout.next_header,
                        })
                    };
                    if let Some(stop) = self.stop_here(layout.data_start + (at - from), inside) {
                        return Ok(Some(stop));
                    }
                }
                want = want.min(to_part_end as usize);
            }
            let n = entry.read(&mut buf[..want]).map_err(corrupt)?;
            if n == 0 {
                break;
            }
            at += n as u64;
            sink(ImportEvent::BlobChunk(Bytes::copy_from_slice(&buf[..n])))
                .map_err(|_| ArchiveError::Aborted)?;
        }
        sink(ImportEvent::BlobEnd).map_err(|_| ArchiveError::Aborted)?;
        Ok(None)
    }
}

/// Counts the bytes read through it.
struct Counted<R> {
    inner: R,
    count: u64,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        Ok(n)
    }
}

/// Keeps the uncompressed offset of the next byte read where the entries'
/// reader sees it while tar holds this reader.
struct Positioned<R> {
    inner: R,
    position: Rc<Cell<u64>>,
}

impl<R: Read> Read for Positioned<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.position.set(self.position.get() + n as u64);
        Ok(n)
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

    /// A `.tar.gz` of `entries` as GitLab writes one: regular files, one
    /// gzip member at `level`.
    fn tar_gz(entries: &[(&str, &[u8])], level: u32) -> Vec<u8> {
        let mut tar = tar::Builder::new(Vec::new());
        for (path, data) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_entry_type(tar::EntryType::Regular);
            tar.append_data(&mut header, path, *data).unwrap();
        }
        let tar = tar.into_inner().unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level));
        std::io::Write::write_all(&mut gz, &tar).unwrap();
        gz.finish().unwrap()
    }

    /// A GitLab-like archive: a few relation files of several MiB, an
    /// upload between them, a long name.
    fn gitlab_like_archive() -> Vec<u8> {
        let relation = |name: &str, records: usize| {
            let mut text = String::new();
            for id in 0..records {
                text.push_str(&format!(
                    "{{\"iid\":{id},\"title\":\"{name} {id}\",\"description\":\"{}\"}}\n",
                    "words of text ".repeat(id % 40)
                ));
            }
            text
        };
        let long = format!("uploads/{}/file.txt", "d".repeat(150));
        let (issues, merge_requests) = (relation("issue", 40_000), relation("mr", 30_000));
        let labels = relation("label", 10);
        tar_gz(
            &[
                ("VERSION", b"0.2.4"),
                ("tree/project.json", br#"{"description":"resumable"}"#),
                ("tree/project/issues.ndjson", issues.as_bytes()),
                ("uploads/0123456789abcdef/big.bin", &vec![7u8; 3_000_000]),
                (&long, b"long name"),
                (
                    "tree/project/merge_requests.ndjson",
                    merge_requests.as_bytes(),
                ),
                ("tree/project/labels.ndjson", labels.as_bytes()),
            ],
            6,
        )
    }

    /// The events with each blob's chunks joined: where a chunk ends
    /// depends on how the reads below it fell.
    fn joined_chunks(events: &[ImportEvent]) -> Vec<ImportEvent> {
        let mut joined: Vec<ImportEvent> = Vec::new();
        for event in events {
            match (joined.last_mut(), event) {
                (Some(ImportEvent::BlobChunk(before)), ImportEvent::BlobChunk(chunk)) => {
                    *before = Bytes::from([&before[..], &chunk[..]].concat());
                }
                _ => joined.push(event.clone()),
            }
        }
        joined
    }

    /// How a test reads: `read_archive` or `read_files` with the default
    /// limits.
    type Read<'r> = &'r dyn Fn(
        &[u8],
        Option<&ReaderCheckpoint>,
        &ReadControl,
        &mut Sink<'_>,
    ) -> Result<ReadEnd, ArchiveError>;

    /// Reads from `from` (or the start), asking to stop after `stop_after`
    /// events; the events and how the read ended.
    fn read_some(
        archive: &[u8],
        from: Option<&ReaderCheckpoint>,
        stop_after: usize,
    ) -> (Vec<ImportEvent>, ReadEnd) {
        let read: Read<'_> = &|input, from, control, sink| {
            read_archive(input, &Limits::default(), from, control, sink)
        };
        read_some_with(read, archive, from, stop_after)
    }

    fn read_some_with(
        read: Read<'_>,
        archive: &[u8],
        from: Option<&ReaderCheckpoint>,
        stop_after: usize,
    ) -> (Vec<ImportEvent>, ReadEnd) {
        let control = ReadControl::default();
        let mut events = Vec::new();
        let offset = from.map_or(0, |from| from.access.compressed as usize);
        let mut sink = |event| {
            events.push(event);
            if events.len() == stop_after {
                control.request_stop();
            }
            Ok(())
        };
        let end = read(&archive[offset..], from, &control, &mut sink).unwrap();
        (events, end)
    }

    #[test]
    fn a_read_stopped_anywhere_goes_on_from_its_checkpoint_to_the_same_events() {
        let archive = gitlab_like_archive();
        let (whole, end) = read_some(&archive, None, usize::MAX);
        assert!(matches!(end, ReadEnd::Complete { .. }));
        for stop_after in [
            1,
            2,
            3,
            1_000,
            25_000,
            39_999,
            40_003,
            40_020,
            55_000,
            whole.len() - 2,
        ] {
            let mut events = Vec::new();
            let mut from: Option<Box<ReaderCheckpoint>> = None;
            let mut stops = 0;
            loop {
                // Stopped first where the case says, then every 7,000 events.
                let after = if from.is_none() { stop_after } else { 7_000 };
                let (read, end) = read_some(&archive, from.as_deref(), after);
                events.extend(read);
                match end {
                    ReadEnd::Complete { version } => {
                        assert_eq!(version, "0.2.4");
                        break;
                    }
                    ReadEnd::Stopped(checkpoint) => {
                        stops += 1;
                        let json = serde_json::to_string(&checkpoint).unwrap();
                        from = Some(serde_json::from_str(&json).unwrap());
                    }
                }
            }
            assert!(stops >= 1, "never stopped after {stop_after} events");
            assert!(
                joined_chunks(&events) == joined_chunks(&whole),
                "stopping after {stop_after} events lost or repeated some"
            );
        }
    }

    #[test]
    fn a_tar_of_files_is_read_as_blobs_and_goes_on_from_any_stop() {
        // Not compressible, so the tar's 20 MB take many deflate blocks.
        let big: Vec<u8> = (0..20_000_000u32)
            .map(|n| (n.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let archive = tar_gz(
            &[
                ("VERSION", b"not a version"),
                ("tree/project/issues.ndjson", b"not json"),
                ("ab/big.bundle", &big),
                ("cd/small.png", b"png"),
            ],
            6,
        );
        let files: Read<'_> = &|input, from, control, sink| {
            read_files(input, &Limits::default(), from, control, sink)
        };
        let read = |from: Option<&ReaderCheckpoint>, stop_after: usize| {
            read_some_with(files, &archive, from, stop_after)
        };
        let (whole, end) = read(None, usize::MAX);
        assert!(matches!(&end, ReadEnd::Complete { version } if version.is_empty()));
        let started: Vec<&str> = whole
            .iter()
            .filter_map(|event| match event {
                ImportEvent::BlobStart { path, .. } => Some(path.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(
            started,
            [
                "VERSION",
                "tree/project/issues.ndjson",
                "ab/big.bundle",
                "cd/small.png"
            ]
        );
        for stop_after in [1, 2, 4, 5, 40] {
            let mut events = Vec::new();
            let mut from: Option<Box<ReaderCheckpoint>> = None;
            let mut stops = 0;
            loop {
                let after = if from.is_none() { stop_after } else { 3 };
                let (got, end) = read(from.as_deref(), after);
                events.extend(got);
                match end {
                    ReadEnd::Complete { .. } => break,
                    ReadEnd::Stopped(checkpoint) => {
                        stops += 1;
                        let json = serde_json::to_string(&checkpoint).unwrap();
                        from = Some(serde_json::from_str(&json).unwrap());
                    }
                }
            }
            assert!(stops >= 2, "{stops} stops after {stop_after} events");
            // A read going on inside a file starts it again from there.
            let resumed = |event: &ImportEvent| matches!(event, ImportEvent::BlobStart { from, .. } if *from > 0);
            let inside = events.iter().filter(|e| resumed(e)).count();
            assert!(inside >= 1, "never stopped inside the big file");
            events.retain(|event| !resumed(event));
            assert!(
                joined_chunks(&events) == joined_chunks(&whole),
                "stopping after {stop_after} events lost or repeated some"
            );
        }
    }

    #[test]
    fn a_resumed_read_does_not_inflate_again_what_it_read_before() {
        let archive = gitlab_like_archive();
        let control = ReadControl::default();
        let mut sink = |_| Ok(());
        read_archive(&archive[..], &Limits::default(), None, &control, &mut sink).unwrap();
        let whole = control.inflated();
        let (mut inflated, mut from, mut runs) = (0, None::<Box<ReaderCheckpoint>>, 0);
        loop {
            let control = ReadControl::default();
            let mut count = 0;
            let mut sink = |_| {
                count += 1;
                if count == 5_000 {
                    control.request_stop();
                }
                Ok(())
            };
            let offset = from
                .as_ref()
                .map_or(0, |from| from.access.compressed as usize);
            let end = read_archive(
                &archive[offset..],
                &Limits::default(),
                from.as_deref(),
                &control,
                &mut sink,
            )
            .unwrap();
            inflated += control.inflated();
            runs += 1;
            match end {
                ReadEnd::Complete { .. } => break,
                ReadEnd::Stopped(checkpoint) => from = Some(checkpoint),
            }
        }
        assert!(runs >= 10, "{runs} runs");
        // Each resumed run inflates again at most the span between two
        // access points (256 KiB), and each stop throws away what was
        // read ahead (3 MiB at most).
        let extra = inflated - whole;
        assert!(
            extra <= runs * 13 * 256 * 1024,
            "{extra} bytes inflated again over {runs} runs"
        );
    }

    #[test]
    fn a_resumed_read_still_refuses_a_path_seen_before_the_stop() {
        let archive = tar_gz(
            &[
                ("VERSION", b"0.2.4"),
                ("tree/project.json", b"{}"),
                ("uploads/a/x", &vec![1u8; 2_000_000]),
                ("uploads/a/x", b"again"),
            ],
            1,
        );
        let (_, end) = read_some(&archive, None, 1);
        let ReadEnd::Stopped(from) = end else {
            panic!("the read did not stop");
        };
        let control = ReadControl::default();
        let offset = from.access.compressed as usize;
        let mut sink = |_| Ok(());
        let result = read_archive(
            &archive[offset..],
            &Limits::default(),
            Some(&from),
            &control,
            &mut sink,
        );
        assert!(
            matches!(result, Err(ArchiveError::DuplicateEntry(_))),
            "{result:?}"
        );
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
