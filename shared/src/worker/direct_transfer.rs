//! A migration's entity, pulled from its source instance: the source is
//! asked for a relations export, every relation (every batch of it) is
//! downloaded, and the files are put together into a GitLab export archive
//! at the import's upload key. The import then reads that archive like any
//! other, so everything it checks and how it publishes (one generation,
//! switched in at the end) is the same.
//!
//! Staged downloads are kept under the upload's folder, which the import
//! deletes whether it finishes or fails.

use std::io::Read;
use std::time::Duration;

use bytes::Bytes;
use flate2::read::MultiGzDecoder;
use futures::StreamExt;

use super::lease::Lease;
use super::pipeline::{tar_gz, Entries};
use crate::archive::{self, ExportItem};
use crate::domain::{now, BulkSource, ImportFailure, Job};
use crate::relations::{self, SELF_RELATION};
use crate::remote::source::{SourceInstance, SourceRelation};
use crate::{keys, runtime, stream, App, Error, Result};

/// How long the source may take to export the project before the run
/// gives up and a retry asks again.
const EXPORT_WAIT: Duration = Duration::from_secs(600);
const FIRST_POLL: Duration = Duration::from_millis(200);
const MAX_POLL: Duration = Duration::from_secs(5);
/// Bytes of a decompressed file sent into the archive at a time.
const PIECE: usize = 64 * 1024;

/// One file of the source's export: a relation, or one batch of it.
struct Part {
    relation: String,
    batch: Option<u32>,
    key: String,
}

/// Puts the source project's relations together into the archive at
/// `archive_key`; returns the relations the source failed to export
/// (GitLab's entity ends `finished` with them as failures, unless every
/// relation failed), or `None` if the run lost its job meanwhile (the
/// migration was canceled, or another run took over).
pub(super) async fn assemble(
    app: &App,
    lease: &Lease,
    job: &Job,
    source: &BulkSource,
    archive_key: &str,
) -> Result<Option<Vec<ImportFailure>>> {
    let first_run = lease.attempt() == 1;
    let token = source.token.as_ref().ok_or_else(|| {
        Error::BadRequest("the access token to the source instance is no longer kept".into())
    })?;
    let remote = SourceInstance::new(&source.url, &token.0, app.settings.allow_local_requests)?;
    remote.check_token().await?;
    let project_id = remote.project_id(&source.source_full_path).await?;
    let mut status = if first_run {
        Vec::new()
    } else {
        // A retry uses the export its first run asked for, if there is one.
        remote.relations_export_status(project_id).await?
    };
    if status.is_empty() {
        remote
            .start_relations_export(project_id, &source.source_full_path)
            .await?;
    }
    status = match wait_for_export(&remote, project_id, lease).await? {
        Some(status) => status,
        None => return Ok(None),
    };
    status.sort_by_key(|r| relations::relation_export_rank(&r.relation));

    let staging = format!("{}source/", keys::upload_folder(archive_key));
    let mut failures = Vec::new();
    let mut parts = Vec::new();
    for relation in &status {
        match files_of(relation, &staging) {
            Ok(files) => parts.extend(files),
            Err(reason) => failures.push(failure(job, failures.len(), &relation.relation, reason)),
        }
    }
    if parts.is_empty() {
        return Err(Error::BadRequest(
            "Import failed: the source exported no relation".into(),
        ));
    }
    let limit = app.settings.max_upload_bytes;
    for part in &parts {
        if !lease.confirm().await? {
            return Ok(None);
        }
        let body = remote
            .download(project_id, &part.relation, part.batch)
            .await?;
        app.blobs
            .put(&part.key, Box::pin(capped(body, limit)))
            .await?;
    }
    write_archive(app, archive_key, &parts).await?;
    app.blobs.delete_prefix(&staging).await?;
    Ok(Some(failures))
}

/// Polls the source's relations export until no relation is in progress;
/// `None` once the run no longer owns its job.
async fn wait_for_export(
    remote: &SourceInstance,
    project_id: u64,
    lease: &Lease,
) -> Result<Option<Vec<SourceRelation>>> {
    let started = tokio::time::Instant::now();
    let mut pause = FIRST_POLL;
    loop {
        let status = remote.relations_export_status(project_id).await?;
        let busy = status.is_empty()
            || status
                .iter()
                .any(|r| r.status == 0 || r.batches.iter().any(|b| b.status == 0));
        if !busy {
            return Ok(Some(status));
        }
        if !lease.confirm().await? {
            return Ok(None);
        }
        if started.elapsed() > EXPORT_WAIT {
            return Err(Error::Storage(
                "the source instance has not finished exporting the project".into(),
            ));
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(MAX_POLL);
    }
}

/// The files a finished relation has, or why it has none.
fn files_of(relation: &SourceRelation, staging: &str) -> std::result::Result<Vec<Part>, String> {
    let name = &relation.relation;
    if !relations::is_valid_name(name) {
        return Err(format!("the relation name {name:?} is not valid"));
    }
    if relation.status != 1 {
        let error = relation.error.clone().unwrap_or_default();
        return Err(format!("Export from source instance failed: {error}"));
    }
    let part = |batch: Option<u32>| Part {
        relation: name.clone(),
        batch,
        key: format!("{staging}{name}.{}.gz", batch.unwrap_or(0)),
    };
    if !relation.batched {
        return Ok(vec![part(None)]);
    }
    // A batched relation without batches is empty: nothing to download.
    if let Some(failed) = relation.batches.iter().find(|b| b.status != 1) {
        let error = failed.error.clone().unwrap_or_default();
        return Err(format!(
            "Export from source instance failed: batch {}: {error}",
            failed.batch_number
        ));
    }
    Ok((1..=relation.batches_count)
        .map(|n| part(Some(n)))
        .collect())
}

/// A failed relation as GitLab lists it in the entity's failures.
fn failure(job: &Job, index: usize, relation: &str, reason: String) -> ImportFailure {
    ImportFailure {
        id: index as u64 + 1,
        created_at: now(),
        exception_class: "BulkImports::PipelineError".into(),
        exception_message: reason,
        source: format!("direct_transfer:{}", job.id),
        relation_name: relation.to_owned(),
        line_number: 0,
    }
}

/// The body, refused once it passes `limit` bytes.
fn capped(body: stream::ByteStream, limit: u64) -> stream::ByteStream {
    let mut seen = 0u64;
    Box::pin(body.map(move |chunk| {
        let chunk = chunk?;
        seen += chunk.len() as u64;
        if seen > limit {
            return Err(std::io::Error::other(format!(
                "a file of the source is larger than {limit} bytes"
            )));
        }
        Ok(chunk)
    }))
}

/// The archive GitLab's exporter would have written from these files:
/// `tree/project.json` from `self`, one NDJSON file per relation (its
/// batches one after another), and the file relations' files as they are.
async fn write_archive(app: &App, archive_key: &str, parts: &[Part]) -> Result<()> {
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
                relation_file(app, &entries, "tree/project.json", files).await?;
            } else if relations::is_file_relation(relation) {
                for file in files {
                    inner_files(app, &entries, relation, &file.key).await?;
                }
            } else {
                let path = format!("tree/project/{relation}.ndjson");
                relation_file(app, &entries, &path, files).await?;
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
async fn relation_file(app: &App, entries: &Entries, path: &str, files: &[Part]) -> Result<()> {
    let limit = app.settings.limits.max_uncompressed_bytes;
    let mut sizes = Vec::with_capacity(files.len());
    for file in files {
        let reader = source_file(app, &file.key).await?;
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
        let reader = source_file(app, &file.key).await?;
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

/// The files of a file relation's `.tar.gz`, each as an entry of its own.
async fn inner_files(app: &App, entries: &Entries, relation: &str, key: &str) -> Result<()> {
    let relation = relation.to_owned();
    let reader = source_file(app, key).await?;
    let handle = tokio::runtime::Handle::current();
    let sender = entries.sender();
    runtime::spawn_thread("file relation", move || -> Result<()> {
        let mut tar = tar::Archive::new(MultiGzDecoder::new(reader));
        for entry in tar.entries().map_err(corrupt)? {
            let mut entry = entry.map_err(corrupt)?;
            if !entry.header().entry_type().is_file() {
                continue;
            }
            let path = entry
                .path()
                .map_err(corrupt)?
                .to_string_lossy()
                .into_owned();
            let path = archive_path(&relation, &path);
            let size = entry.size();
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
            send(ExportItem::End)?;
        }
        Ok(())
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
