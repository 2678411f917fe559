//! Migrations by direct transfer (GitLab's bulk imports): projects pulled
//! from another GitLab-compatible instance through its relations export API.
//!
//! A migration is stored once, whole, with its entities; each entity's work
//! is an import job of the project it creates, so its state, progress and
//! failures are that job's, and the job's lease, retries and sweep apply.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::*;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BulkImport {
    pub id: u64,
    pub user_id: UserId,
    /// The source instance's base URL, as given.
    pub source_url: String,
    pub entities: Vec<BulkEntity>,
    #[serde(default)]
    pub canceled: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// One project to migrate.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BulkEntity {
    pub id: u64,
    /// The import job that does the work.
    pub job_id: String,
    /// The project it creates at `destination_namespace/destination_slug`.
    pub project_id: ProjectId,
    pub source_full_path: String,
    pub destination_slug: String,
    pub destination_namespace: String,
    pub migrate_projects: bool,
    pub migrate_memberships: bool,
    pub created_at: DateTime<Utc>,
}

/// What an entity's import job needs to reach the source. The token is
/// dropped when the job is done (`Job::apply`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BulkSource {
    pub bulk_import_id: u64,
    pub entity_id: u64,
    pub url: String,
    pub source_full_path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<Secret>,
    /// Once the source has exported it: the project's id there, and how
    /// many files (relations and batches) are downloaded, one message each.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_project_id: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parts: Option<u32>,
    /// The source's members come too, matched to this instance's users.
    #[serde(default = "migrates_members")]
    pub migrate_memberships: bool,
    /// What the source project has that the migration cannot bring: from
    /// GitLab, its wiki and its snippets' repositories, which GitLab
    /// serves over git only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_migrated: Vec<String>,
}

fn migrates_members() -> bool {
    true
}

/// A credential: serialized for the store, never shown in logs.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[REDACTED]")
    }
}

/// GitLab's states of a migration and of its entities
/// (`BulkImport.all_human_statuses`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BulkStatus {
    Created,
    Started,
    Finished,
    Timeout,
    Failed,
    Canceled,
}

/// The text a canceled entity's job fails with.
pub const BULK_CANCELED: &str = "the migration was canceled";

impl BulkStatus {
    pub const ALL: [BulkStatus; 6] = [
        BulkStatus::Created,
        BulkStatus::Started,
        BulkStatus::Finished,
        BulkStatus::Timeout,
        BulkStatus::Failed,
        BulkStatus::Canceled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            BulkStatus::Created => "created",
            BulkStatus::Started => "started",
            BulkStatus::Finished => "finished",
            BulkStatus::Timeout => "timeout",
            BulkStatus::Failed => "failed",
            BulkStatus::Canceled => "canceled",
        }
    }

    pub fn parse(text: &str) -> Option<BulkStatus> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }

    pub fn is_done(self) -> bool {
        !matches!(self, BulkStatus::Created | BulkStatus::Started)
    }

    /// An entity's state, from its import job's (`None`: the job is gone
    /// with its project, which had been migrated).
    pub fn of_entity(job: Option<&Job>) -> BulkStatus {
        let Some(job) = job else {
            return BulkStatus::Finished;
        };
        match job.status {
            JobStatus::Queued => BulkStatus::Created,
            JobStatus::Started => BulkStatus::Started,
            JobStatus::Finished => BulkStatus::Finished,
            JobStatus::Failed if job.error.as_deref() == Some(BULK_CANCELED) => {
                BulkStatus::Canceled
            }
            JobStatus::Failed => BulkStatus::Failed,
        }
    }

    /// A migration's state from its entities' (GitLab's `ProcessService`):
    /// failed when every entity failed, finished when every one is done,
    /// created until one starts.
    pub fn of_import(import: &BulkImport, entities: &[BulkStatus]) -> BulkStatus {
        if import.canceled {
            return BulkStatus::Canceled;
        }
        if !entities.is_empty() && entities.iter().all(|s| *s == BulkStatus::Failed) {
            BulkStatus::Failed
        } else if entities.iter().all(|s| s.is_done()) {
            BulkStatus::Finished
        } else if entities.iter().all(|s| *s == BulkStatus::Created) {
            BulkStatus::Created
        } else {
            BulkStatus::Started
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn import() -> BulkImport {
        BulkImport {
            id: 1,
            user_id: 1,
            source_url: "https://gitlab.example.com".into(),
            entities: Vec::new(),
            canceled: false,
            created_at: now(),
            updated_at: now(),
        }
    }

    #[test]
    fn a_migration_is_as_far_as_its_entities() {
        use BulkStatus::*;
        let import = import();
        assert_eq!(BulkStatus::of_import(&import, &[Created, Created]), Created);
        assert_eq!(BulkStatus::of_import(&import, &[Created, Started]), Started);
        assert_eq!(
            BulkStatus::of_import(&import, &[Finished, Created]),
            Started
        );
        assert_eq!(
            BulkStatus::of_import(&import, &[Finished, Failed]),
            Finished
        );
        assert_eq!(BulkStatus::of_import(&import, &[Failed, Failed]), Failed);
        let canceled = BulkImport {
            canceled: true,
            ..import
        };
        assert_eq!(BulkStatus::of_import(&canceled, &[Finished]), Canceled);
    }

    #[test]
    fn the_token_never_shows_in_debug_output() {
        let source = BulkSource {
            bulk_import_id: 1,
            entity_id: 1,
            url: "https://gitlab.example.com".into(),
            source_full_path: "group/project".into(),
            token: Some(Secret("glpat-secret".into())),
            source_project_id: None,
            parts: None,
            migrate_memberships: true,
            not_migrated: Vec::new(),
        };
        assert!(!format!("{source:?}").contains("glpat-secret"));
        let text = serde_json::to_string(&source).unwrap();
        assert!(text.contains("\"token\":\"glpat-secret\""));
    }
}
