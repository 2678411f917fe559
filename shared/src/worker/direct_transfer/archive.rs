//! The archive of steps 2 and 3, never written whole. Each file of the
//! source is staged (step 2) as one gzip member of the archive's tar stream:
//! a relation's NDJSON (or `self`'s JSON) as its bare data, a file
//! relation's files as whole tar entries. Step 3 only lists those members
//! with the few bytes between them (the entries' headers, padding, the
//! archive's end) as a small composition beside them; the import reads it as
//! a multi-member gzip stream like any uploaded archive, and stops in and
//! continues from it across invocations the same way: no file of the source
//! is copied or read twice, whatever the project's size.
//!
//! A file relation's file (a repository bundle, every upload) may take
//! longer than a run to download: it is staged in pieces, each a member of
//! its own, a run stopping at its deadline where the read allows and the
//! next asking the source for the rest of the file only (a ranged request
//! from the gzip access point the stop kept).

use std::future::Future;
use std::io::{self, Read, Write};

use bytes::Bytes;
use flate2::read::MultiGzDecoder;
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use super::Part;
use crate::archive::{
    self, ImportEvent, Limits, ReadControl, ReadEnd, ReaderCheckpoint, SinkClosed,
};
use crate::relations::{self, SELF_RELATION};
use crate::remote::source::SourceFile;
use crate::stream::{BlockingReader, ByteStream};
use crate::worker::pipeline;
use crate::worker::Deadline;
use crate::{runtime, stream, App, Error, Result};

/// Bytes of a decompressed file sent on at a time.
const PIECE: usize = 64 * 1024;

/// A staged file of the source: the archive bytes it holds (uncompressed)
/// and the blobs it is stored in, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Staged {
    pub part: Part,
    pub bytes: u64,
    pub pieces: Vec<Piece>,
}

/// One blob of a staged file: a whole gzip member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Piece {
    key: String,
    stored: u64,
}

/// How a run left the file it staged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Staging {
    /// Staged whole, its marker written.
    Whole,
    /// Stopped at the run's deadline: a later run goes on. It had gone on
    /// from the progress whose last piece this is (`start-<file size>` if
    /// none).
    Stopped { resumed_from: String },
}

/// The least a run stages of a file before it may stop: a short deadline
/// never leaves a file in thousands of tiny pieces.
const MIN_PIECE_BYTES: u64 = 4 * 1024 * 1024;

impl Part {
    /// The empty blob that says the part's file is staged whole, and how
    /// many archive bytes it holds: one listing tells every part's sizes.
    fn marker(&self, staging: &str, bytes: u64) -> String {
        format!(
            "{staging}{}.{}.{bytes}.staged",
            self.relation,
            self.batch.unwrap_or(0)
        )
    }

    /// The marker of a file staged in pieces: it lists them.
    fn pieces_marker(&self, staging: &str, bytes: u64) -> String {
        format!(
            "{staging}{}.{}.{bytes}.pieces",
            self.relation,
            self.batch.unwrap_or(0)
        )
    }

    /// The part a marker names, the archive bytes it holds, and whether it
    /// lists pieces.
    fn of_marker(key: &str, staging: &str) -> Option<(Part, u64, bool)> {
        let name = key.strip_prefix(staging)?;
        let (name, pieced) = match name.strip_suffix(".staged") {
            Some(name) => (name, false),
            None => (name.strip_suffix(".pieces")?, true),
        };
        let (name, bytes) = name.rsplit_once('.')?;
        let part = Part::of_key(&format!("{staging}{name}.gz"), staging)?;
        Some((part, bytes.parse().ok()?, pieced))
    }

    /// Where a file staged in pieces says how far it got.
    fn progress_key(&self, staging: &str) -> String {
        format!("{}progress.json", self.prefix(staging))
    }

    /// Where the names of this part's staged blobs start.
    fn prefix(&self, staging: &str) -> String {
        format!("{staging}{}.{}.", self.relation, self.batch.unwrap_or(0))
    }
}

/// The files staged whole so far (a file without its marker may be half
/// written by a run that is still going, or died).
pub(super) async fn staged_files(app: &App, staging: &str) -> Result<Vec<Staged>> {
    let listed = app.blobs.list(staging).await?;
    let stored: std::collections::HashMap<&str, u64> = listed
        .iter()
        .map(|blob| (blob.key.as_str(), blob.size))
        .collect();
    let mut files = Vec::new();
    for blob in &listed {
        let Some((part, bytes, pieced)) = Part::of_marker(&blob.key, staging) else {
            continue;
        };
        let pieces = if pieced {
            crate::ports::get_json(&*app.blobs, &blob.key).await?
        } else {
            let key = part.key(staging);
            let Some(&stored) = stored.get(key.as_str()) else {
                continue;
            };
            vec![Piece { key, stored }]
        };
        files.push(Staged {
            part,
            bytes,
            pieces,
        });
    }
    Ok(files)
}

/// Whether `part` is staged whole already.
pub(super) async fn is_staged(app: &App, part: &Part, staging: &str) -> Result<bool> {
    let listed = app.blobs.list(&part.prefix(staging)).await?;
    Ok(listed
        .iter()
        .any(|blob| Part::of_marker(&blob.key, staging).is_some_and(|(p, _, _)| p == *part)))
}

/// Step 2 for a relation's NDJSON (or `self`'s JSON): the source's file
/// `body` staged as the archive's member for `part`, decompressed within
/// the size limit and written again in our own gzip, so the import reads
/// nothing the source wrote; a file is staged the same, byte for byte,
/// however often it is downloaded. (File relations: `stage_files`.)
pub(super) async fn stage(app: &App, part: &Part, staging: &str, body: ByteStream) -> Result<()> {
    let key = part.key(staging);
    let relation = part.relation.clone();
    let limits = app.settings.limits.clone();
    let reader = stream::blocking_reader(body);
    let (bytes, _) = gzip_from_thread(app, &key, move |emit| {
        archive_bytes(reader, &relation, &limits, emit)
    })
    .await?;
    let empty: ByteStream = Box::pin(futures::stream::empty());
    app.blobs.put(&part.marker(staging, bytes), empty).await?;
    Ok(())
}

/// Writes the gzip blob at `key` that `produce` fills on a blocking thread
/// (where the source's file is read) through the `emit` it is given;
/// returns what `produce` returns and the blob's size.
async fn gzip_from_thread<T: Send + 'static>(
    app: &App,
    key: &str,
    produce: impl FnOnce(&mut dyn FnMut(Bytes) -> Result<()>) -> Result<T> + Send + 'static,
) -> Result<(T, u64)> {
    pipeline::gzip(app, key, |chunks| async move {
        let handle = tokio::runtime::Handle::current();
        let sender = chunks.sender();
        let value = runtime::spawn_thread("stage", move || {
            let mut emit = |chunk: Bytes| handle.block_on(sender.send(chunk));
            produce(&mut emit)
        })
        .join()
        .await??;
        chunks.finish().await?;
        Ok(value)
    })
    .await
}

/// What `relation`'s NDJSON file from the source adds to the archive's tar
/// stream, sent on through `emit`; returns how many bytes.
fn archive_bytes(
    reader: impl Read + Send,
    relation: &str,
    limits: &Limits,
    emit: &mut dyn FnMut(Bytes) -> Result<()>,
) -> Result<u64> {
    let limit = limits.max_uncompressed_bytes;
    let (mut size, last) = send_all(&mut MultiGzDecoder::new(reader), limit, emit)?;
    // A batch not ending its last line gets the newline NDJSON needs.
    if relation != SELF_RELATION && last != b'\n' {
        emit(Bytes::from_static(b"\n"))?;
        size += 1;
    }
    Ok(size)
}

/// Step 2 for a file relation's file, which may take longer than a run:
/// its files staged as the archive's tar entries in pieces, a whole gzip
/// member each. A run stops at `deadline` (once it staged
/// `MIN_PIECE_BYTES`, where the read may stop), keeping where it got beside
/// the pieces; the next run `download`s the source's file from that gzip
/// access point's offset on and goes on there. Runs of one file at the same
/// moment write pieces of their own, and the progress they leave (or the
/// marker listing them) names only pieces written whole.
pub(super) async fn stage_files<F, Fut>(
    app: &App,
    part: &Part,
    staging: &str,
    mtime: u64,
    deadline: Deadline,
    download: F,
) -> Result<Staging>
where
    F: FnOnce(u64) -> Fut,
    Fut: Future<Output = Result<SourceFile>>,
{
    let progress_key = part.progress_key(staging);
    let mut progress: FilesProgress = match crate::ports::get_json(&*app.blobs, &progress_key).await
    {
        Ok(progress) => progress,
        Err(Error::NotFound(_)) => FilesProgress::default(),
        Err(err) => return Err(err),
    };
    let checkpoint = progress.reader.take();
    let from = checkpoint.as_ref().map_or(0, |c| c.access.compressed);

    let file = download(from).await?;
    if from > 0 && file.size.is_some() && file.size != progress.source_size {
        // Exported again since the last run: what was staged is of another
        // file. The retry starts this one from its beginning.
        app.blobs.delete_prefix(&progress_key).await?;
        return Err(Error::Storage(format!(
            "the source's {} file changed between runs ({:?} bytes, then {:?}): staged again from its start",
            part.relation, progress.source_size, file.size
        )));
    }
    progress.source_size = file.size.or(progress.source_size);
    // A file staged again from its start (exported again) starts a chain
    // of runs of its own.
    let resumed_from = match progress.pieces.last() {
        Some(piece) => piece
            .key
            .rsplit('/')
            .next()
            .unwrap_or(&piece.key)
            .to_owned(),
        None => format!("start-{}", file.size.unwrap_or(0)),
    };
    // A source ignoring ranges sends the file again up to the stop each
    // run: the rest is read in this run, as it was before runs could stop.
    let may_stop = from == 0 || file.ranged;
    let key = format!(
        "{}{}.{}.piece",
        part.prefix(staging),
        uuid::Uuid::new_v4().simple(),
        progress.pieces.len()
    );
    let relation = part.relation.clone();
    let limits = app.settings.limits.clone();
    let reader = stream::blocking_reader(file.body);
    let ((end, bytes), stored) = gzip_from_thread(app, &key, move |send| {
        let control = ReadControl::default();
        let mut sent = 0u64;
        let mut emit = |chunk: Bytes| {
            sent += chunk.len() as u64;
            if may_stop && sent >= MIN_PIECE_BYTES && deadline.passed() {
                control.request_stop();
            }
            send(chunk)
        };
        let from = (checkpoint.as_ref(), &control);
        files_bytes(reader, &relation, &limits, mtime, from, &mut emit)
    })
    .await?;
    progress.bytes += bytes;
    progress.pieces.push(Piece { key, stored });
    match end {
        ReadEnd::Complete { .. } => {
            let marker = part.pieces_marker(staging, progress.bytes);
            crate::ports::put_json(&*app.blobs, &marker, &progress.pieces).await?;
            Ok(Staging::Whole)
        }
        ReadEnd::Stopped(checkpoint) => {
            tracing::info!(
                relation = %part.relation,
                read = checkpoint.access.compressed,
                staged = progress.bytes,
                pieces = progress.pieces.len(),
                "a file of the source continues in a later run"
            );
            progress.reader = Some(*checkpoint);
            crate::ports::put_json(&*app.blobs, &progress_key, &progress).await?;
            Ok(Staging::Stopped { resumed_from })
        }
    }
}

/// Where a file relation's file staged in pieces stands between runs.
#[derive(Debug, Default, Serialize, Deserialize)]
struct FilesProgress {
    /// Where the read of the source's file goes on.
    reader: Option<ReaderCheckpoint>,
    /// Archive bytes staged so far.
    bytes: u64,
    pieces: Vec<Piece>,
    /// The source file's size, where the source said it: a later run
    /// finding another size finds another file.
    #[serde(default)]
    source_size: Option<u64>,
}

/// What a file relation's `.tar.gz` from the source adds to the archive's
/// tar stream, sent on through `emit`: each file a tar entry where the
/// archive keeps it, read with every check an import's archive gets
/// (extension headers, paths, entry counts, expanded size), from `from` on
/// (the header of a file a run stopped in went with that run). Returns how
/// the read ended and the bytes sent.
fn files_bytes(
    reader: impl Read + Send,
    relation: &str,
    limits: &Limits,
    mtime: u64,
    (from, control): (Option<&ReaderCheckpoint>, &ReadControl),
    emit: &mut dyn FnMut(Bytes) -> Result<()>,
) -> Result<(ReadEnd, u64)> {
    let mut total = 0u64;
    let mut failed = None;
    let mut skipping = false;
    let mut padding = 0;
    let mut sink = |event: ImportEvent| -> std::result::Result<(), SinkClosed> {
        let bytes = match event {
            ImportEvent::BlobStart { path, size, from } => {
                // Repository types, which an archive does not keep.
                skipping = relation == "lfs_objects" && path == relations::LFS_OBJECTS_JSON;
                padding = archive::padding(size);
                if skipping || from > 0 {
                    return Ok(());
                }
                let path = archive_path(relation, &path);
                match archive::header_bytes(&path, size, mtime) {
                    Ok(header) => Bytes::from(header),
                    Err(err) => {
                        failed = Some(Error::Internal(format!("a tar header for {path}: {err}")));
                        return Err(SinkClosed);
                    }
                }
            }
            ImportEvent::BlobChunk(chunk) if !skipping => chunk,
            ImportEvent::BlobEnd if !skipping => Bytes::from(vec![0; padding]),
            _ => return Ok(()),
        };
        total += bytes.len() as u64;
        emit(bytes).map_err(|err| {
            failed = Some(err);
            SinkClosed
        })
    };
    let read = archive::read_files(reader, limits, from, control, &mut sink);
    if let Some(err) = failed {
        return Err(err);
    }
    let end =
        read.map_err(|err| Error::BadRequest(format!("a file of the source is refused: {err}")))?;
    Ok((end, total))
}

/// Sends what `reader` holds on through `emit`, a piece at a time: how many
/// bytes (refused past `limit`), and the last of them (a newline if none).
fn send_all(
    reader: &mut dyn Read,
    limit: u64,
    emit: &mut dyn FnMut(Bytes) -> Result<()>,
) -> Result<(u64, u8)> {
    let mut size = 0u64;
    let mut last = b'\n';
    let mut piece = vec![0; PIECE];
    loop {
        let n = reader.read(&mut piece).map_err(corrupt)?;
        if n == 0 {
            return Ok((size, last));
        }
        size += n as u64;
        if size > limit {
            return Err(Error::BadRequest(format!(
                "the source's files are larger than {limit} bytes uncompressed"
            )));
        }
        last = piece[n - 1];
        emit(Bytes::copy_from_slice(&piece[..n]))?;
    }
}

fn corrupt(err: io::Error) -> Error {
    Error::BadRequest(format!("a file of the source is corrupt: {err}"))
}

/// Where a file of a file relation's `.tar.gz` goes in the archive: ours
/// holds archive paths already; GitLab's holds them relative to the
/// relation's folder (or its one file).
fn archive_path(relation: &str, path: &str) -> String {
    let path = path.trim_start_matches("./");
    if relations::file_relation_of(path) == Some(relation) {
        return path.to_owned();
    }
    match relations::FILE_RELATIONS
        .iter()
        .find(|(name, _)| *name == relation)
    {
        Some((_, folder)) if folder.ends_with('/') => format!("{folder}{path}"),
        Some((_, file)) => (*file).to_owned(),
        None => path.to_owned(),
    }
}

/// Step 3's archive: the staged members in archive order, with the bytes
/// between them, each stretch of those its own small gzip member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Composition {
    members: Vec<Member>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Member {
    /// A few bytes of the tar stream (headers, padding, the end), deflated.
    Between { gzip: Vec<u8> },
    /// A piece of a staged file, as stored.
    Piece(Piece),
    /// A staged file, as stored at its part's key (compositions written
    /// before files were staged in pieces).
    Staged {
        relation: String,
        batch: Option<u32>,
        stored: u64,
    },
}

impl Member {
    fn stored(&self) -> u64 {
        match self {
            Member::Between { gzip } => gzip.len() as u64,
            Member::Piece(piece) => piece.stored,
            Member::Staged { stored, .. } => *stored,
        }
    }
}

impl Composition {
    /// The archive GitLab's exporter would have written from `staged`, in
    /// archive order: `VERSION`, `tree/project.json` from `self`, one
    /// NDJSON file per relation (its batches one after another), the file
    /// relations' files as they are.
    pub fn of(staged: &[Staged], mtime: u64) -> Result<Composition> {
        let mut composition = Composition {
            members: Vec::new(),
        };
        let mut between = Vec::new();
        let header = |path: &str, size| {
            archive::header_bytes(path, size, mtime)
                .map_err(|err| Error::Internal(format!("a tar header for {path}: {err}")))
        };
        let version = archive::VERSION.as_bytes();
        between.extend(header("VERSION", version.len() as u64)?);
        between.extend_from_slice(version);
        between.resize(between.len() + archive::padding(version.len() as u64), 0);
        let mut at = 0;
        while at < staged.len() {
            let relation = &staged[at].part.relation;
            let end = staged[at..]
                .iter()
                .position(|s| &s.part.relation != relation)
                .map_or(staged.len(), |n| at + n);
            let files = &staged[at..end];
            at = end;
            let entry = if relation == SELF_RELATION {
                Some(archive::PROJECT_JSON.to_owned())
            } else if relations::is_file_relation(relation) {
                None
            } else {
                Some(archive::relation_file(relation))
            };
            let size: u64 = files.iter().map(|file| file.bytes).sum();
            if let Some(path) = &entry {
                between.extend(header(path, size)?);
            }
            for file in files.iter().filter(|file| file.bytes > 0) {
                composition.close(&mut between)?;
                let pieces = file.pieces.iter().cloned().map(Member::Piece);
                composition.members.extend(pieces);
            }
            if entry.is_some() {
                between.resize(between.len() + archive::padding(size), 0);
            }
        }
        between.extend_from_slice(&archive::END_OF_ARCHIVE);
        composition.close(&mut between)?;
        Ok(composition)
    }

    /// The bytes gathered since the last staged file, as a member.
    fn close(&mut self, between: &mut Vec<u8>) -> Result<()> {
        if between.is_empty() {
            return Ok(());
        }
        let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gzip.write_all(between)
            .and_then(|()| gzip.try_finish())
            .map_err(|err| Error::Internal(format!("deflating the archive's headers: {err}")))?;
        self.members.push(Member::Between {
            gzip: gzip
                .finish()
                .map_err(|err| Error::Internal(err.to_string()))?,
        });
        between.clear();
        Ok(())
    }

    /// The archive's size: what an import reads of it.
    pub fn size(&self) -> u64 {
        self.members.iter().map(Member::stored).sum()
    }

    fn key(staging: &str) -> String {
        format!("{staging}archive.json")
    }

    pub async fn save(&self, app: &App, staging: &str) -> Result<()> {
        crate::ports::put_json(&*app.blobs, &Self::key(staging), self).await
    }

    pub async fn load(app: &App, staging: &str) -> Result<Composition> {
        crate::ports::get_json(&*app.blobs, &Self::key(staging)).await
    }

    /// The archive from its byte `offset` on: the members from there, each
    /// staged one a ranged read of its own, opened when the reader gets to
    /// it.
    pub fn reader_from(self, app: &App, staging: &str, offset: u64) -> BlockingReader {
        let mut start = 0u64;
        let mut from = Vec::new();
        for member in self.members {
            let end = start + member.stored();
            if end > offset {
                from.push((member, offset.saturating_sub(start)));
            }
            start = end;
        }
        let (app, staging) = (app.clone(), staging.to_owned());
        let members = futures::stream::iter(from).then(move |(member, skip)| {
            let (app, staging) = (app.clone(), staging.clone());
            async move {
                let (key, stored) = match member {
                    Member::Between { gzip } => {
                        let bytes = Bytes::from(gzip).slice(skip as usize..);
                        return Ok(stream::from_bytes(bytes));
                    }
                    Member::Piece(Piece { key, stored }) => (key, stored),
                    Member::Staged {
                        relation,
                        batch,
                        stored,
                    } => (Part { relation, batch }.key(&staging), stored),
                };
                let bytes: ByteStream = app
                    .blobs
                    .get_range(&key, skip, stored - skip)
                    .await
                    .map_err(io::Error::other)?;
                Ok::<_, io::Error>(bytes)
            }
        });
        Box::new(stream::blocking_reader(Box::pin(members.try_flatten())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_relations_land_where_the_archive_keeps_them() {
        assert_eq!(
            archive_path("uploads", "uploads/ab/c.png"),
            "uploads/ab/c.png"
        );
        assert_eq!(archive_path("uploads", "ab/c.png"), "uploads/ab/c.png");
        assert_eq!(archive_path("lfs_objects", "./0a1b"), "lfs-objects/0a1b");
        assert_eq!(
            archive_path("repository", "project.bundle"),
            "project.bundle"
        );
        assert_eq!(archive_path("repository", "repo.bundle"), "project.bundle");
    }

    #[test]
    fn a_marker_names_its_part_and_its_bytes() {
        let staging = "imports/u/source/";
        let part = Part {
            relation: "merge_requests".into(),
            batch: Some(12),
        };
        let marker = part.marker(staging, 4096);
        assert_eq!(marker, "imports/u/source/merge_requests.12.4096.staged");
        assert_eq!(
            Part::of_marker(&marker, staging),
            Some((part.clone(), 4096, false))
        );
        let pieces = part.pieces_marker(staging, 4096);
        assert_eq!(
            Part::of_marker(&pieces, staging),
            Some((part.clone(), 4096, true))
        );
        assert!(pieces.starts_with(&part.prefix(staging)));
        assert_eq!(Part::of_marker(&part.progress_key(staging), staging), None);
        assert!(marker.starts_with(&part.prefix(staging)));
        assert_eq!(Part::of_marker(&part.key(staging), staging), None);
        assert_eq!(
            Part::of_marker("imports/u/source/archive.json", staging),
            None
        );
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gzip.write_all(data).unwrap();
        gzip.finish().unwrap()
    }

    const MTIME: u64 = 1_700_000_000;

    /// What `archive_bytes` (or `files_bytes`) stages for a file of the
    /// source.
    fn staged(relation: &str, file: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut emit = |chunk: Bytes| {
            out.extend_from_slice(&chunk);
            Ok(())
        };
        let limits = Limits::default();
        let size = if relations::is_file_relation(relation) {
            let control = ReadControl::default();
            let read = files_bytes(file, relation, &limits, MTIME, (None, &control), &mut emit);
            let (end, size) = read.unwrap();
            assert!(matches!(end, ReadEnd::Complete { .. }));
            size
        } else {
            archive_bytes(file, relation, &limits, &mut emit).unwrap()
        };
        assert_eq!(size, out.len() as u64);
        out
    }

    /// The members, staged and between, one after another read as one
    /// gzip stream, are the tar GitLab's exporter writes.
    #[test]
    fn the_composition_reads_as_the_archive_of_its_files() {
        let mut uploads = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(3);
        uploads
            .append_data(&mut header, "ab/c.png", &b"png"[..])
            .unwrap();
        let uploads = gzip(&uploads.into_inner().unwrap());
        let sources: Vec<(&str, Option<u32>, Vec<u8>)> = vec![
            ("self", None, gzip(br#"{"description":"d"}"#)),
            ("issues", Some(1), gzip(b"{\"iid\":1}\n")),
            // GitLab's batches may leave their last line open.
            ("issues", Some(2), gzip(b"{\"iid\":2}")),
            ("labels", None, gzip(b"")),
            ("uploads", None, uploads),
        ];
        let mut blobs = std::collections::HashMap::new();
        let mut files = Vec::new();
        for (relation, batch, file) in &sources {
            let part = Part {
                relation: (*relation).into(),
                batch: *batch,
            };
            let data = staged(relation, file);
            let stored = gzip(&data);
            let key = part.key("s/");
            files.push(Staged {
                part,
                bytes: data.len() as u64,
                pieces: vec![Piece {
                    key: key.clone(),
                    stored: stored.len() as u64,
                }],
            });
            blobs.insert(key, stored);
        }
        let composition = Composition::of(&files, MTIME).unwrap();
        let mut archive = Vec::new();
        for member in &composition.members {
            match member {
                Member::Between { gzip } => archive.extend_from_slice(gzip),
                Member::Piece(piece) => archive.extend_from_slice(&blobs[&piece.key]),
                Member::Staged { .. } => unreachable!("compositions list pieces"),
            }
        }
        assert_eq!(composition.size(), archive.len() as u64);
        let mut entries = Vec::new();
        let mut tar = tar::Archive::new(MultiGzDecoder::new(&archive[..]));
        for entry in tar.entries().unwrap() {
            let mut entry = entry.unwrap();
            let path = entry.path().unwrap().to_string_lossy().into_owned();
            let mut data = String::new();
            entry.read_to_string(&mut data).unwrap();
            entries.push((path, data));
        }
        let expected = [
            ("VERSION", archive::VERSION),
            ("tree/project.json", r#"{"description":"d"}"#),
            ("tree/project/issues.ndjson", "{\"iid\":1}\n{\"iid\":2}\n"),
            ("tree/project/labels.ndjson", ""),
            ("uploads/ab/c.png", "png"),
        ];
        let expected: Vec<(String, String)> = expected
            .iter()
            .map(|(path, data)| ((*path).to_owned(), (*data).to_owned()))
            .collect();
        assert_eq!(entries, expected);
    }
}
