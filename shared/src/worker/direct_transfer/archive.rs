//! Step 3's archive: the staged files of the source put together as
//! GitLab's exporter would have written them.

use std::io::Read;

use bytes::Bytes;
use flate2::read::MultiGzDecoder;

use super::Part;
use crate::archive::{self, ExportItem};
use crate::domain::now;
use crate::relations::{self, SELF_RELATION};
use crate::worker::pipeline::{tar_gz, Entries};
use crate::{runtime, stream, App, Error, Result};

/// Bytes of a decompressed file sent into the archive at a time.
const PIECE: usize = 64 * 1024;

/// The archive GitLab's exporter would have written from these files:
/// `tree/project.json` from `self`, one NDJSON file per relation (its
/// batches one after another), and the file relations' files as they are.
pub(super) async fn write_archive(
    app: &App,
    archive_key: &str,
    staging: &str,
    parts: &[Part],
) -> Result<()> {
    let mtime = now().timestamp().max(0) as u64;
    tar_gz(app, archive_key, mtime, |entries| async move {
        entries
            .file("VERSION", Bytes::from_static(archive::VERSION.as_bytes()))
            .await?;
        let mut at = 0;
        while at < parts.len() {
            let relation = &parts[at].relation;
            let end = parts[at..]
                .iter()
                .position(|p| &p.relation != relation)
                .map_or(parts.len(), |n| at + n);
            let files = &parts[at..end];
            if relation == SELF_RELATION {
                relation_file(app, &entries, "tree/project.json", staging, files).await?;
            } else if relations::is_file_relation(relation) {
                for file in files {
                    inner_files(app, &entries, relation, &file.key(staging)).await?;
                }
            } else {
                let path = format!("tree/project/{relation}.ndjson");
                relation_file(app, &entries, &path, staging, files).await?;
            }
            at = end;
        }
        entries.finish().await
    })
    .await?;
    Ok(())
}

/// The decompressed files, one after another, as the archive entry `path`.
/// A first pass measures them (a tar entry's size comes before its bytes);
/// a file not ending its last line gets the newline NDJSON needs.
async fn relation_file(
    app: &App,
    entries: &Entries,
    path: &str,
    staging: &str,
    files: &[Part],
) -> Result<()> {
    let limit = app.settings.limits.max_uncompressed_bytes;
    let mut sizes = Vec::with_capacity(files.len());
    for file in files {
        let reader = source_file(app, &file.key(staging)).await?;
        let measured = runtime::spawn_thread("measure", move || measure(reader, limit))
            .join()
            .await??;
        sizes.push(measured);
    }
    let ndjson = path.ends_with(".ndjson");
    let padding = |(size, ends_line): (u64, bool)| u64::from(ndjson && size > 0 && !ends_line);
    let total: u64 = sizes.iter().map(|s| s.0 + padding(*s)).sum();
    entries
        .send(ExportItem::Begin {
            path: path.to_owned(),
            size: total,
        })
        .await?;
    for (file, size) in files.iter().zip(sizes) {
        let reader = source_file(app, &file.key(staging)).await?;
        let handle = tokio::runtime::Handle::current();
        let sender = entries.sender();
        runtime::spawn_thread("decompress", move || -> Result<()> {
            let mut reader = MultiGzDecoder::new(reader).take(size.0);
            let mut piece = vec![0; PIECE];
            loop {
                let n = reader.read(&mut piece).map_err(corrupt)?;
                if n == 0 {
                    break;
                }
                let data = Bytes::copy_from_slice(&piece[..n]);
                handle.block_on(sender.send(ExportItem::Data(data)))?;
            }
            Ok(())
        })
        .join()
        .await??;
        if padding(size) == 1 {
            entries
                .send(ExportItem::Data(Bytes::from_static(b"\n")))
                .await?;
        }
    }
    entries.send(ExportItem::End).await
}

type SourceFile = Box<dyn Read + Send>;

/// A staged file, to be read (and decompressed) on a blocking thread: a
/// decoder reads as soon as it is made.
async fn source_file(app: &App, key: &str) -> Result<SourceFile> {
    Ok(Box::new(stream::blocking_reader(app.blobs.get(key).await?)))
}

fn corrupt(err: std::io::Error) -> Error {
    Error::BadRequest(format!("a file of the source is corrupt: {err}"))
}

/// The decompressed size, and whether the last byte ends a line.
fn measure(reader: SourceFile, limit: u64) -> Result<(u64, bool)> {
    let mut reader = MultiGzDecoder::new(reader);
    let mut size = 0u64;
    let mut last = b'\n';
    let mut buffer = vec![0; PIECE];
    loop {
        let n = reader.read(&mut buffer).map_err(corrupt)?;
        if n == 0 {
            return Ok((size, last == b'\n'));
        }
        size += n as u64;
        last = buffer[n - 1];
        if size > limit {
            return Err(Error::BadRequest(format!(
                "the source's files are larger than {limit} bytes uncompressed"
            )));
        }
    }
}

/// The files of a file relation's `.tar.gz`, each as an entry of its own,
/// read with every check an import's archive gets (extension headers,
/// paths, entry counts, expanded size).
async fn inner_files(app: &App, entries: &Entries, relation: &str, key: &str) -> Result<()> {
    let relation = relation.to_owned();
    let reader = source_file(app, key).await?;
    let limits = app.settings.limits.clone();
    let handle = tokio::runtime::Handle::current();
    let sender = entries.sender();
    runtime::spawn_thread("file relation", move || -> Result<()> {
        archive::read_tar_files(reader, &limits, |path, entry, size| -> Result<()> {
            let path = archive_path(&relation, &path);
            let send = |item| handle.block_on(sender.send(item));
            send(ExportItem::Begin { path, size })?;
            let mut piece = vec![0; PIECE];
            loop {
                let n = entry.read(&mut piece).map_err(corrupt)?;
                if n == 0 {
                    break;
                }
                send(ExportItem::Data(Bytes::copy_from_slice(&piece[..n])))?;
            }
            send(ExportItem::End)
        })
        .map_err(|err| match err {
            Error::Archive(err) => {
                Error::BadRequest(format!("a file of the source is refused: {err}"))
            }
            other => other,
        })
    })
    .join()
    .await?
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
}
