//! The leftovers sweep. Every path that ends a job cleans up after it, but
//! a process killed between two steps (an upload stored before its job was
//! created, a generation replaced before the old one was discarded, an
//! archive written for a job that is gone) leaves what nothing will ever
//! read. This sweep lists what the stores hold, keeps what a live project
//! or job owns, and deletes the rest once it is older than any run could
//! still be writing it. It runs at start-up and hourly on the local server,
//! and daily on AWS (where bucket lifecycle rules also expire `exports/` and
//! `imports/`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::sweep::STALE_AFTER;
use crate::domain::{Job, JobStatus, ProjectId};
use crate::keys;
use crate::ports::GenerationRef;
use crate::{App, Result};

/// What one sweep deleted.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct LeftoverSummary {
    /// Content generations no project shows and no live job writes.
    pub generations: usize,
    /// Blob folders (a project's, an export's, a relations export run's,
    /// an upload's) nothing owns.
    pub folders: usize,
    /// Uploads in parts no run has added to for `PARTS_GRACE` (the
    /// embedded store's; S3's lifecycle rule aborts its own).
    pub parts: usize,
}

/// How long an upload in parts may go untouched: a day, as the bucket's
/// rule gives S3's. A run writes its next part within minutes.
const PARTS_GRACE: chrono::TimeDelta = chrono::TimeDelta::days(1);

/// How old a leftover must be: older than any run could still be writing
/// it, and than any download URL handed out for it.
pub fn grace(app: &App) -> Duration {
    STALE_AFTER.max(app.settings.download_ttl)
}

/// One sweep at `now`: deletes what no one owns and was last written
/// before `now - grace`.
pub async fn sweep_leftovers(
    app: &App,
    now: DateTime<Utc>,
    grace: Duration,
) -> Result<LeftoverSummary> {
    let before = now - chrono::Duration::from_std(grace).unwrap_or_default();
    let sweep = Sweep { app, before };
    let mut summary = LeftoverSummary::default();
    summary.folders += sweep.projects_and_generations(&mut summary).await?;
    summary.folders += sweep.exports().await?;
    summary.folders += sweep.uploads(now).await?;
    summary.parts = app.blobs.drop_stale_parts(now - PARTS_GRACE).await?;
    if summary != LeftoverSummary::default() {
        tracing::warn!(
            generations = summary.generations,
            folders = summary.folders,
            parts = summary.parts,
            "leftovers deleted"
        );
    }
    Ok(summary)
}

struct Sweep<'a> {
    app: &'a App,
    before: DateTime<Utc>,
}

/// Whose a project folder is.
enum Owner {
    /// A live project.
    Project(Box<crate::domain::Project>),
    /// A deleted project: its deletion removes everything.
    Deletion,
    /// No one.
    Nobody,
}

impl Sweep<'_> {
    async fn owner(&self, project_id: ProjectId) -> Result<Owner> {
        if let Some(project) = self.app.projects.project(project_id).await? {
            return Ok(Owner::Project(Box::new(project)));
        }
        if self
            .app
            .projects
            .deleted_project(project_id)
            .await?
            .is_some()
        {
            return Ok(Owner::Deletion);
        }
        Ok(Owner::Nobody)
    }

    /// Whether everything under `prefix` was written before the cut-off
    /// (an empty prefix is).
    async fn quiet(&self, prefix: &str) -> Result<bool> {
        Ok(self
            .app
            .blobs
            .list(prefix)
            .await?
            .iter()
            .all(|blob| blob.modified.is_some_and(|at| at < self.before)))
    }

    /// Deletes the folder if it is quiet; whether it did.
    async fn delete_quiet(&self, prefix: &str) -> Result<bool> {
        if !self.quiet(prefix).await? {
            return Ok(false);
        }
        tracing::warn!(prefix, "leftover folder deleted");
        self.app.blobs.delete_prefix(prefix).await?;
        Ok(true)
    }

    /// Project folders of no project, and generations no one owns (in the
    /// content store and in the blob store). Returns the folders deleted.
    async fn projects_and_generations(&self, summary: &mut LeftoverSummary) -> Result<usize> {
        let app = self.app;
        let mut folders = 0;
        let mut generations: BTreeMap<String, Option<ProjectId>> = BTreeMap::new();
        for project in app.blobs.folders(keys::PROJECTS).await? {
            let Ok(project_id) = project.parse::<ProjectId>() else {
                continue;
            };
            if let Owner::Nobody = self.owner(project_id).await? {
                let prefix = keys::project_prefix(project_id);
                folders += usize::from(self.delete_quiet(&prefix).await?);
                continue;
            }
            for name in app
                .blobs
                .folders(&keys::generations_prefix(project_id))
                .await?
            {
                generations.insert(name, Some(project_id));
            }
        }
        // Listed after the folders of no project went with their content.
        for stored in app.content.stored_generations().await? {
            generations.entry(stored.name).or_insert(stored.project_id);
        }
        for (name, project_id) in generations {
            let job = app.jobs.job(writer_of(&name)).await?;
            let project_id = project_id.or(job.as_ref().map(|job| job.project_id));
            if self
                .generation_owned(&name, project_id, job.as_ref())
                .await?
            {
                continue;
            }
            tracing::warn!(
                generation = name,
                ?project_id,
                "leftover generation deleted"
            );
            // The embedded store keys records by name alone; 0 stands for a
            // project no one knows any more.
            let at = GenerationRef::new(project_id.unwrap_or(0), &name);
            app.content.delete_content(at).await?;
            if let Some(project_id) = project_id {
                app.blobs
                    .delete_prefix(&keys::content_prefix(project_id, &name))
                    .await?;
            }
            summary.generations += 1;
        }
        Ok(folders)
    }

    /// Whether a live project shows the generation, a deletion will remove
    /// it, or a job that may still write it is live (or ended too recently
    /// to be sure its runs have stopped).
    /// `job` is the generation's writer, `project_id` its project (from the
    /// store's layout or the job), where known.
    async fn generation_owned(
        &self,
        name: &str,
        project_id: Option<ProjectId>,
        job: Option<&Job>,
    ) -> Result<bool> {
        if job.is_some_and(|job| self.live(job)) {
            return Ok(true);
        }
        // A job is never forgotten while the project shows what it wrote,
        // so a generation with neither job nor project is no one's.
        let Some(project_id) = project_id else {
            return Ok(false);
        };
        Ok(match self.owner(project_id).await? {
            Owner::Project(project) => project.generations().iter().any(|g| g == name),
            Owner::Deletion => true,
            Owner::Nobody => false,
        })
    }

    fn live(&self, job: &Job) -> bool {
        !job.status.is_done() || job.updated_at >= self.before
    }

    /// Export folders of a job that is gone or failed, relations export
    /// runs that are not the project's latest, and the exports of projects
    /// that are gone. Returns the folders deleted.
    async fn exports(&self) -> Result<usize> {
        let app = self.app;
        let mut deleted = 0;
        for project in app.blobs.folders(keys::EXPORTS).await? {
            let Ok(project_id) = project.parse::<ProjectId>() else {
                continue;
            };
            match self.owner(project_id).await? {
                Owner::Nobody => {
                    let prefix = keys::exports_prefix(project_id);
                    deleted += usize::from(self.delete_quiet(&prefix).await?);
                    continue;
                }
                Owner::Deletion => continue,
                Owner::Project(_) => {}
            }
            let runs = keys::relation_exports_prefix(project_id);
            for folder in app.blobs.folders(&keys::exports_prefix(project_id)).await? {
                let prefix = format!("{}{folder}/", keys::exports_prefix(project_id));
                if prefix == runs {
                    deleted += self.relation_export_runs(project_id).await?;
                    continue;
                }
                let owned = app
                    .jobs
                    .job(&folder)
                    .await?
                    .is_some_and(|job| job.status != JobStatus::Failed || self.live(&job));
                if !owned {
                    deleted += usize::from(self.delete_quiet(&prefix).await?);
                }
            }
        }
        Ok(deleted)
    }

    async fn relation_export_runs(&self, project_id: ProjectId) -> Result<usize> {
        let app = self.app;
        let current = app
            .jobs
            .relation_export_parts(project_id)
            .await?
            .first()
            .map(|part| part.run_id.clone());
        let mut deleted = 0;
        for run in app
            .blobs
            .folders(&keys::relation_exports_prefix(project_id))
            .await?
        {
            if current.as_deref() == Some(run.as_str()) {
                continue;
            }
            let prefix = keys::relation_export_run_prefix(project_id, &run);
            deleted += usize::from(self.delete_quiet(&prefix).await?);
        }
        Ok(deleted)
    }

    /// Uploads no live import is waiting for or reading. Returns the
    /// folders deleted.
    async fn uploads(&self, now: DateTime<Utc>) -> Result<usize> {
        let app = self.app;
        // Every job not yet done: the stale-job listing up to a day ahead.
        let live: BTreeSet<String> = app
            .jobs
            .stale_jobs(now + chrono::Duration::days(1), 100_000)
            .await?
            .into_iter()
            .filter_map(|job| job.archive_key)
            .filter(|key| keys::is_upload_key(key))
            .map(|key| keys::upload_folder(&key))
            .collect();
        let mut deleted = 0;
        for upload in app.blobs.folders(keys::UPLOADS).await? {
            let prefix = keys::upload_prefix(&upload);
            if !live.contains(&prefix) {
                deleted += usize::from(self.delete_quiet(&prefix).await?);
            }
        }
        Ok(deleted)
    }
}

/// The job whose run wrote a generation: its name is the job's id, with
/// the run's attempt (`<job>.<n>`) and a relation import's staging suffix.
fn writer_of(generation: &str) -> &str {
    let name = generation.strip_suffix("-staged").unwrap_or(generation);
    match name.rsplit_once('.') {
        Some((job, attempt))
            if !attempt.is_empty() && attempt.bytes().all(|b| b.is_ascii_digit()) =>
        {
            job
        }
        _ => name,
    }
}

#[cfg(test)]
mod tests {
    use super::writer_of;

    #[test]
    fn a_generation_names_the_job_that_wrote_it() {
        assert_eq!(writer_of("abc.1"), "abc");
        assert_eq!(writer_of("abc.12-staged"), "abc");
        assert_eq!(writer_of("abc"), "abc");
        assert_eq!(writer_of("a.b"), "a.b");
    }
}
