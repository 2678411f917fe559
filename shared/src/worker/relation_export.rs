//! Builds one file of a relations export: a relation's records (or one
//! batch of them) as gzipped NDJSON, `self` as gzipped JSON, a file
//! relation as a tar.gz. Each message is independent: one failing relation
//! leaves the others finishing.

use std::time::Instant;

use bytes::Bytes;

use super::pipeline;
use crate::domain::{JobStatus, JobUpdate, Message, RelationExportPart};
use crate::ports::{GenerationRef, RecordPages};
use crate::relations::{self, SELF_RELATION};
use crate::service::content_files_prefix;
use crate::service::relation_export::{self, part_key};
use crate::{App, Error, Result};

pub(super) async fn run(app: &App, message: &Message) -> Result<()> {
    let Some(relation) = message.relation.as_deref() else {
        tracing::warn!("relation export message without a relation");
        return Ok(());
    };
    let transition = |from: &'static [JobStatus], to, update| {
        app.jobs.transition_relation_export_part(
            message.project_id,
            relation,
            message.batch,
            &message.job_id,
            from,
            to,
            update,
        )
    };
    // Claimed only if it still belongs to this run and is not done.
    let Some(part) = transition(
        &[JobStatus::Queued, JobStatus::Started],
        JobStatus::Started,
        JobUpdate::default(),
    )
    .await?
    else {
        // Done already (a repeated delivery, or a run that stopped before
        // queuing the next part): make sure the run goes on.
        return relation_export::advance(app, message).await;
    };
    let key = part_key(part.project_id, &part.run_id, relation, part.batch);
    let started = Instant::now();
    let written = if relation == SELF_RELATION {
        export_self(app, &part, &key).await
    } else if relations::is_file_relation(relation) {
        export_files(app, &part, &key).await
    } else {
        export_records(app, &part, &key).await
    };
    match written {
        Ok(objects) => {
            tracing::info!(
                relation,
                batch = part.batch,
                objects,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "relation export part written"
            );
            let finished = transition(
                &[JobStatus::Started],
                JobStatus::Finished,
                JobUpdate {
                    archive_key: Some(key.clone()),
                    processed: Some(objects),
                    ..JobUpdate::default()
                },
            )
            .await?;
            if finished.is_none() && app.projects.project(part.project_id).await?.is_none() {
                // Deleted while this ran: its deletion may have passed already.
                app.blobs.delete_prefix(&key).await?;
            }
            relation_export::advance(app, message).await
        }
        Err(err) if err.is_permanent() => {
            tracing::warn!(relation, error = %err, "relation export failed");
            transition(
                &[JobStatus::Started],
                JobStatus::Failed,
                JobUpdate {
                    error: Some(err.to_string()),
                    ..JobUpdate::default()
                },
            )
            .await?;
            relation_export::advance(app, message).await
        }
        Err(err) => Err(err),
    }
}

async fn export_self(app: &App, part: &RelationExportPart, key: &str) -> Result<u64> {
    let attributes = match &part.content {
        Some(content) => app
            .content
            .attributes(GenerationRef::new(part.project_id, content))
            .await?
            .ok_or_else(|| {
                Error::BadRequest("the project changed during the export: schedule it again".into())
            })?,
        None => Bytes::from_static(b"{}"),
    };
    pipeline::gzip(app, key, |chunks| async move {
        chunks.send(attributes).await?;
        chunks.finish().await?;
        Ok(1)
    })
    .await
    .map(|(value, _size)| value)
}

async fn export_records(app: &App, part: &RelationExportPart, key: &str) -> Result<u64> {
    let expected = part.objects_count;
    pipeline::gzip(app, key, |chunks| async move {
        let mut written = 0u64;
        if let Some(content) = &part.content {
            let mut pages = RecordPages::new(
                app.content.as_ref(),
                GenerationRef::new(part.project_id, content),
                &part.relation,
                app.settings.export_page_records,
            )
            .within(part.first_seq, expected);
            while let Some(page) = pages.next().await? {
                let before = written;
                written += page.len() as u64;
                for piece in pipeline::ndjson_pieces(&page) {
                    chunks.send(piece).await?;
                }
                if super::progress_due(before, written) {
                    app.jobs
                        .transition_relation_export_part(
                            part.project_id,
                            &part.relation,
                            part.batch,
                            &part.run_id,
                            &[JobStatus::Started],
                            JobStatus::Started,
                            JobUpdate {
                                processed: Some(written),
                                ..JobUpdate::default()
                            },
                        )
                        .await?;
                }
            }
        }
        if written != expected {
            return Err(Error::BadRequest(format!(
                "the project changed during the export ({written} of {expected} records found): schedule it again"
            )));
        }
        chunks.finish().await?;
        Ok(written)
    })
    .await
    .map(|(value, _size)| value)
}

async fn export_files(app: &App, part: &RelationExportPart, key: &str) -> Result<u64> {
    // A project without content (or without files of the relation)
    // exports an empty archive, as GitLab does.
    let prefix = match &part.content {
        Some(content) => content_files_prefix(part.project_id, content),
        None => String::new(),
    };
    let files: Vec<_> = match &part.content {
        Some(_) => app.blobs.list(&prefix).await?,
        None => Vec::new(),
    }
    .into_iter()
    .filter(|b| relations::file_relation_of(&b.key[prefix.len()..]) == Some(part.relation.as_str()))
    .collect();
    let count = files.len() as u64;
    if count != part.objects_count {
        return Err(Error::BadRequest(format!(
            "the project changed during the export ({count} of {} files found): schedule it again",
            part.objects_count
        )));
    }
    let mtime = part.updated_at.timestamp() as u64;
    let relation = part.relation.as_str();
    pipeline::tar_gz(app, key, mtime, |entries| async move {
        // GitLab's layout, which its destinations read: paths relative to
        // the relation's folder, and for LFS each object's repository types.
        let mut lfs_types = serde_json::Map::new();
        for file in &files {
            let path = relations::path_in_relation_file(relation, &file.key[prefix.len()..]);
            entries.blob(app, &file.key, &path, file.size).await?;
            lfs_types.insert(path, serde_json::json!([null]));
        }
        if relation == "lfs_objects" {
            let json = serde_json::Value::Object(lfs_types).to_string();
            entries
                .file(relations::LFS_OBJECTS_JSON, Bytes::from(json))
                .await?;
        }
        entries.finish().await?;
        Ok(count)
    })
    .await
    .map(|(value, _size)| value)
}

/// The part's message failed every delivery: the part ends failed (`-1`)
/// with the reason, if it still belongs to the message's run.
pub(super) async fn give_up(app: &App, message: &Message, reason: &str) -> Result<()> {
    let Some(relation) = message.relation.as_deref() else {
        return Ok(());
    };
    app.jobs
        .transition_relation_export_part(
            message.project_id,
            relation,
            message.batch,
            &message.job_id,
            &[JobStatus::Queued, JobStatus::Started],
            JobStatus::Failed,
            JobUpdate {
                error: Some(crate::redact::text(reason).into_owned()),
                ..JobUpdate::default()
            },
        )
        .await?;
    relation_export::advance(app, message).await
}
