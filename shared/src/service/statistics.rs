//! What a project takes in storage: its records, its files by kind, and the
//! export archives and relations exports kept for it. GitLab's
//! `statistics` object (`GET /projects/:id?statistics=true`) is built from
//! these.

use super::content_relations;
use crate::domain::Project;
use crate::{keys, relations, App, Result};

/// Bytes held for one project.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProjectStatistics {
    /// The NDJSON records of every relation the project shows.
    pub records_size: u64,
    pub repository_size: u64,
    pub wiki_size: u64,
    pub lfs_objects_size: u64,
    pub uploads_size: u64,
    /// Files of other kinds (design repository, anything unrecognised).
    pub other_files_size: u64,
    /// Export archives and relations export files.
    pub exports_size: u64,
}

impl ProjectStatistics {
    /// Everything, as GitLab's `storage_size` counts all a project holds.
    pub fn storage_size(&self) -> u64 {
        self.records_size
            + self.repository_size
            + self.wiki_size
            + self.lfs_objects_size
            + self.uploads_size
            + self.other_files_size
            + self.exports_size
    }
}

pub async fn project_statistics(app: &App, project: &Project) -> Result<ProjectStatistics> {
    let mut statistics = ProjectStatistics::default();
    for (_, stats) in content_relations(app, project).await? {
        statistics.records_size += stats.ndjson_bytes;
    }
    if let Some(content) = &project.content {
        let prefix = keys::content_files_prefix(project.id, content);
        for blob in app.blobs.list(&prefix).await? {
            let path = &blob.key[prefix.len()..];
            let size = match relations::file_relation_of(path) {
                Some("repository") => &mut statistics.repository_size,
                Some("wiki") => &mut statistics.wiki_size,
                Some("lfs_objects") => &mut statistics.lfs_objects_size,
                Some("uploads") => &mut statistics.uploads_size,
                _ => &mut statistics.other_files_size,
            };
            *size += blob.size;
        }
    }
    for blob in app.blobs.list(&keys::exports_prefix(project.id)).await? {
        statistics.exports_size += blob.size;
    }
    Ok(statistics)
}
