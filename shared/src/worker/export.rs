//! Builds a project's export archive: store → tar.gz → blob store, streamed
//! through the worker pipeline (reading records, compressing on a blocking
//! thread, uploading).

use bytes::Bytes;
use serde_json::Value;

use super::lease::{claim, Lease};
use super::pipeline::{self, Entries};
use crate::archive::{self, raw_json, ExportItem};
use crate::domain::{export_file_name, now, Job, JobKind, JobUpdate, Project};
use crate::ports::{GenerationRef, RecordPages};
use crate::service::{content_files_prefix, content_relations, export_key, schedule};
use crate::{relations, remote, App, Error, Result};

pub(super) async fn run(app: &App, job_id: &str) -> Result<()> {
    let Some((lease, job)) = claim(app, job_id).await? else {
        return Ok(());
    };
    let outcome = export(app, &lease, job).await;
    lease.end(outcome).await
}

async fn export(app: &App, lease: &Lease, job: Job) -> Result<()> {
    let Some(project) = app.projects.project(job.project_id).await? else {
        return lease.fail("the project no longer exists".into()).await;
    };
    let at = now();
    let key = export_key(project.id, &job.id);
    let (records, bytes) = build_archive(app, &project, &job, &key, at.timestamp() as u64).await?;
    if let Some(target) = &job.upload {
        match remote::send_blob(app, &key, bytes, target).await {
            Ok(()) => tracing::info!(size = bytes, "export uploaded"),
            Err(err) if err.is_permanent() => return lease.fail(err.to_string()).await,
            Err(err) => return Err(err),
        }
    }
    let finished = lease
        .finish(
            JobUpdate {
                archive_key: Some(key),
                file_name: Some(export_file_name(&project, &at)),
                processed: Some(records),
                ..JobUpdate::default()
            },
            Some(bytes),
        )
        .await?;
    if finished.is_none() && app.projects.project(project.id).await?.is_none() {
        // Deleted while this ran: its deletion may have passed already.
        app.blobs
            .delete_prefix(&crate::keys::export_prefix(project.id, &job.id))
            .await?;
    }
    if finished.is_some() {
        tracing::info!(records, "export finished");
        // Only the newest archive is offered for download, besides the
        // scheduled ones the project keeps.
        let pruned = schedule::archives_to_prune(app, project.id).await?;
        for old in &pruned {
            let prefix = crate::keys::export_prefix(project.id, &old.id);
            app.blobs.delete_prefix(&prefix).await?;
        }
        // An export whose archive is gone is history no one can reach.
        crate::service::history::forget(app, project.id, JobKind::Export, pruned).await?;
    }
    Ok(())
}

/// Writes the archive to `key`; returns the number of records in it and
/// its size.
async fn build_archive(
    app: &App,
    project: &Project,
    job: &Job,
    key: &str,
    mtime: u64,
) -> Result<(u64, u64)> {
    pipeline::tar_gz(app, key, mtime, |entries| async move {
        let records = write_entries(app, project, job, &entries).await?;
        entries.finish().await?;
        Ok(records)
    })
    .await
}

/// Sends every entry of the archive. Returns the record count.
async fn write_entries(app: &App, project: &Project, job: &Job, entries: &Entries) -> Result<u64> {
    entries
        .file("VERSION", Bytes::from_static(archive::VERSION.as_bytes()))
        .await?;
    entries
        .file(
            "GITLAB_VERSION",
            Bytes::from_static(archive::GITLAB_VERSION.as_bytes()),
        )
        .await?;
    entries
        .file(
            "GITLAB_REVISION",
            Bytes::from_static(archive::GITLAB_REVISION.as_bytes()),
        )
        .await?;
    let generation = project.content.as_deref();
    let stored = match generation {
        Some(generation) => {
            app.content
                .attributes(GenerationRef::new(project.id, generation))
                .await?
        }
        None => None,
    };
    entries
        .file(archive::PROJECT_JSON, project_json(project, job, stored)?)
        .await?;

    let mut records = 0u64;
    let mut relations = content_relations(app, project).await?;
    relations.sort_by_key(|(_, r)| relations::export_rank(&r.relation));
    for (generation, stats) in relations.into_iter().filter(|(_, s)| s.records > 0) {
        entries
            .send(ExportItem::Begin {
                path: archive::relation_file(&stats.relation),
                size: stats.ndjson_bytes,
            })
            .await?;
        let mut pages = RecordPages::new(
            app.content.as_ref(),
            GenerationRef::new(project.id, &generation),
            &stats.relation,
            app.settings.export_page_records,
        );
        while let Some(page) = pages.next().await? {
            records += page.len() as u64;
            for piece in pipeline::ndjson_pieces(&page) {
                entries.send(ExportItem::Data(piece)).await?;
            }
        }
        entries.send(ExportItem::End).await?;
        tracing::info!(relation = stats.relation, records, "export progress");
        let progress = JobUpdate {
            processed: Some(records),
            ..JobUpdate::default()
        };
        app.jobs.record_progress(&job.id, progress).await?;
    }
    let Some(generation) = generation else {
        return Ok(records);
    };
    let prefix = content_files_prefix(project.id, generation);
    for blob in app.blobs.list(&prefix).await? {
        entries
            .blob(app, &blob.key, &blob.key[prefix.len()..], blob.size)
            .await?;
    }
    Ok(records)
}

/// `tree/project.json`: the attributes as imported, with the export's
/// description override applied.
/// Only the description is rewritten: every other member stays as written.
fn project_json(project: &Project, job: &Job, stored: Option<Bytes>) -> Result<Bytes> {
    let override_description = job.description.as_ref().filter(|d| !d.is_empty());
    match (stored, override_description) {
        (Some(stored), None) => Ok(stored),
        (stored, description) => {
            let stored = match &stored {
                Some(bytes) => std::str::from_utf8(bytes).map_err(Error::storage)?,
                None => "{}",
            };
            let mut updates = Vec::new();
            if let Some(description) = description.or(project.description.as_ref()) {
                updates.push(("description", Value::from(description.as_str()).to_string()));
            }
            let edited = raw_json::with_members(stored, &updates).map_err(Error::storage)?;
            Ok(Bytes::from(edited))
        }
    }
}
