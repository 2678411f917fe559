//! Deletes what a deleted project left: its content generations (and those
//! its imports were writing), export archives, relations export runs,
//! uploads, jobs and relations export parts. Each step can run twice; the
//! deleted project is forgotten only once all of it is gone, so a run that
//! stops part way is simply run again.

use super::generation;
use super::relation_import::staging_generation;
use crate::domain::{JobKind, ProjectId};
use crate::keys;
use crate::ports::GenerationRef;
use crate::{App, Result};

pub(super) async fn run(app: &App, project_id: ProjectId) -> Result<()> {
    let Some(deleted) = app.projects.deleted_project(project_id).await? else {
        // Done already: this is a second delivery.
        return Ok(());
    };
    let jobs = app.jobs.all_project_jobs(project_id).await?;
    let mut generations = deleted.project.generations();
    for job in &jobs {
        match job.kind {
            JobKind::Import => generations.extend(generation::every_generation_of(job, |_| vec![])),
            JobKind::RelationImport => generations
                .extend(generation::every_generation_of(job, |g| {
                    vec![staging_generation(g)]
                })),
            _ => {}
        }
        let upload = job.archive_key.as_deref().filter(|key| {
            matches!(job.kind, JobKind::Import | JobKind::RelationImport)
                && keys::is_upload_key(key)
        });
        if let Some(upload) = upload {
            app.blobs
                .delete_prefix(&keys::upload_folder(upload))
                .await?;
        }
    }
    generations.sort();
    generations.dedup();
    for name in &generations {
        app.content
            .delete_content(GenerationRef::new(project_id, name))
            .await?;
    }
    // Every generation's files, and every export archive and relations
    // export run, by prefix.
    app.blobs
        .delete_prefix(&keys::project_prefix(project_id))
        .await?;
    app.blobs
        .delete_prefix(&keys::exports_prefix(project_id))
        .await?;
    app.jobs.delete_project_jobs(project_id).await?;
    app.projects.forget_deleted_project(project_id).await?;
    tracing::info!(
        project_id,
        generations = generations.len(),
        jobs = jobs.len(),
        "deleted project's content deleted"
    );
    Ok(())
}
