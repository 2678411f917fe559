//! The table's layout as functions: every partition and sort key the
//! adapters write is built here (the table in `mod.rs` is its map).

use shared::domain::{JobKind, ProjectId, UserId};

pub(crate) const PROJECTS: &str = "PROJECTS";
pub(crate) const SCHEDULES: &str = "SCHEDULES";
pub(crate) const DELETED: &str = "DELETED";
pub(crate) const ACTIVE: &str = "ACTIVE";
/// The sort key prefix of a project's jobs, and of entries keyed by job.
pub(crate) const JOBS_PREFIX: &str = "JOBS#";
pub(crate) const JOB_PREFIX: &str = "JOB#";
/// The sort key prefix of projects in `PROJECTS`, `OWNER#`, `SCHEDULES` and
/// `DELETED`.
pub(crate) const LISTED_PREFIX: &str = "PROJECT#";

pub(crate) fn counter(name: &str) -> String {
    format!("COUNTER#{name}")
}

pub(crate) fn user(id: UserId) -> String {
    format!("USER#{id}")
}

pub(crate) fn username(name: &str) -> String {
    format!("USERNAME#{name}")
}

pub(crate) fn token(hash_hex: &str) -> String {
    format!("TOKEN#{hash_hex}")
}

pub(crate) fn token_id(id: u64) -> String {
    format!("TOKENID#{id}")
}

pub(crate) fn namespace(id: u64) -> String {
    format!("NS#{id}")
}

pub(crate) fn namespace_path(path: &str) -> String {
    format!("NSPATH#{path}")
}

pub(crate) fn rate_window(user: UserId, action: &str) -> String {
    format!("RATE#{user}#{action}")
}

/// A project's item, and the partition of its job pointers and index.
pub(crate) fn project(id: ProjectId) -> String {
    format!("PROJECT#{id}")
}

pub(crate) fn project_path(full_path: &str) -> String {
    format!("PATH#{full_path}")
}

pub(crate) fn owner(user: UserId) -> String {
    format!("OWNER#{user}")
}

/// A project in a list (`PROJECTS`, `OWNER#`, `SCHEDULES`, `DELETED`), in
/// id order.
pub(crate) fn listed(id: ProjectId) -> String {
    format!("{LISTED_PREFIX}{id:020}")
}

pub(crate) fn job(id: &str) -> String {
    format!("{JOB_PREFIX}{id}")
}

/// `LATEST#<kind>` or `FINISHED#<kind>` in the project's partition.
pub(crate) fn job_pointer(which: &str, kind: JobKind) -> String {
    format!("{which}#{}", kind.as_str())
}

/// The sort key prefix of a project's jobs of a kind.
pub(crate) fn project_jobs_of(kind: JobKind) -> String {
    format!("{JOBS_PREFIX}{}#", kind.as_str())
}

/// A project's jobs of a kind, in creation order.
pub(crate) fn project_job(kind: JobKind, created_micros: i64, job_id: &str) -> String {
    format!(
        "{}{:020}#{job_id}",
        project_jobs_of(kind),
        created_micros.max(0)
    )
}

/// The partition of a user's migrations by direct transfer.
pub(crate) fn bulk_imports(user: UserId) -> String {
    format!("BULK#{user}")
}

/// A migration in its user's partition, in id order.
pub(crate) fn bulk_import(id: u64) -> String {
    format!("BULK#{id:020}")
}

pub(crate) fn relation_exports(project_id: ProjectId) -> String {
    format!("RELEXP#{project_id}")
}

pub(crate) fn relation_export_part(relation: &str, batch: Option<u32>) -> String {
    format!("{relation}#{:010}", batch.unwrap_or(0))
}

/// A content generation's manifest (`content.rs`).
pub(crate) fn generation(name: &str) -> String {
    format!("GEN#{name}")
}

/// A chunk of a relation's records in a generation's manifest.
pub(crate) fn chunk(relation: &str, first_seq: u64) -> String {
    format!("CHUNK#{relation}#{first_seq:020}")
}
