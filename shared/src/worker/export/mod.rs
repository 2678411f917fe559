//! Builds a project's export archive: store → tar.gz → blob store, streamed
//! through the worker pipeline (reading records, compressing on a blocking
//! thread, uploading). A big project's archive is written in slices by many
//! workers (`slices`), a small one's in one stream here.

mod plan;
pub(super) mod slices;

use bytes::Bytes;
use serde_json::Value;

use super::lease::{claim, Claim, Lease};
use super::pipeline::{self, Entries};
use crate::archive::{self, raw_json, ExportItem};
use crate::domain::{export_file_name, now, Job, JobKind, JobStatus, JobUpdate, Project, When};
use crate::ports::{GenerationRef, RecordPages};
use crate::service::{content_files_prefix, content_relations, export_key, schedule};
use crate::{relations, remote, App, Error, Result};
use plan::Entry;
use slices::Joined;

pub(super) async fn run(app: &App, job_id: &str) -> Result<()> {
    let (lease, job) = match claim(app, job_id).await? {
        Claim::Won(lease, job) => (lease, job),
        // A delivery after the export finished: the run that finished it
        // may have stopped before pruning what its archive replaced (its
        // message came back because it was never settled).
        Claim::Declined(Some(job)) if job.status == JobStatus::Finished => {
            return prune_replaced_archives(app, job.project_id).await;
        }
        Claim::Declined(_) => return Ok(()),
    };
    let outcome = export(app, &lease, job).await;
    lease.end(outcome).await
}

/// Deletes the archives the project no longer offers: only the newest is
/// offered for download, besides the scheduled ones the project keeps.
/// Safe to repeat: a second pass finds nothing left to delete.
async fn prune_replaced_archives(app: &App, project_id: u64) -> Result<()> {
    let pruned = schedule::archives_to_prune(app, project_id).await?;
    for old in &pruned {
        let prefix = crate::keys::export_prefix(project_id, &old.id);
        app.blobs.delete_prefix(&prefix).await?;
    }
    // An export whose archive is gone is history no one can reach.
    crate::service::history::forget(app, project_id, JobKind::Export, pruned).await?;
    Ok(())
}

/// An archive written: when its export began, its records and its size.
pub(super) struct Built {
    at: chrono::DateTime<chrono::Utc>,
    records: u64,
    bytes: u64,
}

async fn export(app: &App, lease: &Lease, job: Job) -> Result<()> {
    let Some(project) = app.projects.project(job.project_id).await? else {
        return lease.fail("the project no longer exists".into()).await;
    };
    let key = export_key(project.id, &job.id);
    let built = match slices::load_plan(app, &job).await? {
        Some(plan) => match slices::join(app, lease, &job, &plan).await? {
            Joined::Done(built) => built,
            Joined::Waiting | Joined::Lost => return Ok(()),
            Joined::TooSmall => {
                let entries = entries_of(app, &project, &job).await?;
                build_archive(app, &job, &key, plan.at, entries).await?
            }
        },
        None => {
            let at = now();
            let entries = entries_of(app, &project, &job).await?;
            let slice_bytes = app.settings.export_slice_bytes;
            match plan::cut(&entries, slice_bytes, at.timestamp().max(0) as u64)? {
                Some(cut) if cut.0.len() > 1 => {
                    slices::start(app, lease, &job, at, cut).await?;
                    return Ok(());
                }
                _ => build_archive(app, &job, &key, at, entries).await?,
            }
        }
    };
    let Built { at, records, bytes } = built;
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
        crate::crash::point("export-finished");
        prune_replaced_archives(app, project.id).await?;
    }
    Ok(())
}

/// Writes the archive of `entries` to `key` in one stream.
async fn build_archive(
    app: &App,
    job: &Job,
    key: &str,
    at: chrono::DateTime<chrono::Utc>,
    entries: Vec<Entry>,
) -> Result<Built> {
    let mtime = at.timestamp().max(0) as u64;
    let (records, bytes) = pipeline::tar_gz(app, key, mtime, |sender| async move {
        let records = write_entries(app, job, &entries, &sender).await?;
        sender.finish().await?;
        Ok(records)
    })
    .await?;
    Ok(Built { at, records, bytes })
}

/// The archive's entries, in the order they are written.
async fn entries_of(app: &App, project: &Project, job: &Job) -> Result<Vec<Entry>> {
    let file = |path: &str, bytes: Bytes| Entry::File {
        path: path.to_owned(),
        bytes,
    };
    let mut entries = vec![
        file("VERSION", Bytes::from_static(archive::VERSION.as_bytes())),
        file(
            "GITLAB_VERSION",
            Bytes::from_static(archive::GITLAB_VERSION.as_bytes()),
        ),
        file(
            "GITLAB_REVISION",
            Bytes::from_static(archive::GITLAB_REVISION.as_bytes()),
        ),
    ];
    let generation = project.content.as_deref();
    let stored = match generation {
        Some(generation) => {
            app.content
                .attributes(GenerationRef::new(project.id, generation))
                .await?
        }
        None => None,
    };
    entries.push(file(
        archive::PROJECT_JSON,
        project_json(project, job, stored)?,
    ));
    let mut relations = content_relations(app, project).await?;
    relations.sort_by_key(|(_, r)| relations::export_rank(&r.relation));
    for (generation, stats) in relations.into_iter().filter(|(_, s)| s.records > 0) {
        entries.push(Entry::Relation { generation, stats });
    }
    if let Some(generation) = generation {
        let prefix = content_files_prefix(project.id, generation);
        for blob in app.blobs.list(&prefix).await? {
            entries.push(Entry::Blob {
                path: blob.key[prefix.len()..].to_owned(),
                key: blob.key,
                size: blob.size,
            });
        }
    }
    Ok(entries)
}

/// Sends every entry of the archive. Returns the record count.
async fn write_entries(app: &App, job: &Job, entries: &[Entry], sender: &Entries) -> Result<u64> {
    let mut records = 0u64;
    for entry in entries {
        match entry {
            Entry::File { path, bytes } => sender.file(path, bytes.clone()).await?,
            Entry::Blob { key, path, size } => sender.blob(app, key, path, *size).await?,
            Entry::Relation { generation, stats } => {
                sender
                    .send(ExportItem::Begin {
                        path: archive::relation_file(&stats.relation),
                        size: stats.ndjson_bytes,
                    })
                    .await?;
                let mut pages = RecordPages::new(
                    app.content.as_ref(),
                    GenerationRef::new(job.project_id, generation),
                    &stats.relation,
                    app.settings.export_page_records,
                );
                while let Some(page) = pages.next().await? {
                    records += page.len() as u64;
                    for piece in pipeline::ndjson_pieces(&page) {
                        sender.send(ExportItem::Data(piece)).await?;
                    }
                }
                sender.send(ExportItem::End).await?;
                tracing::info!(relation = stats.relation, records, "export progress");
                let progress = JobUpdate {
                    processed: Some(records),
                    ..JobUpdate::default()
                };
                app.jobs
                    .record_progress(&job.id, When::started(), progress)
                    .await?;
            }
        }
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
