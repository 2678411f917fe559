//! The table's layout as functions: every partition and sort key the
//! adapters write is built here (the table in `mod.rs` is its map).

use crate::domain::{JobKind, ProjectId, UserId};

pub(in crate::aws) const PROJECTS: &str = "PROJECTS";
pub(in crate::aws) const SCHEDULES: &str = "SCHEDULES";
pub(in crate::aws) const DELETED: &str = "DELETED";
pub(in crate::aws) const ACTIVE: &str = "ACTIVE";
/// The sort key prefix of a project's jobs, and of entries keyed by job.
pub(in crate::aws) const JOBS_PREFIX: &str = "JOBS#";
pub(in crate::aws) const JOB_PREFIX: &str = "JOB#";
/// The sort key prefix of projects in `PROJECTS`, `OWNER#`, `SCHEDULES` and
/// `DELETED`.
pub(in crate::aws) const LISTED_PREFIX: &str = "PROJECT#";

pub(in crate::aws) fn counter(name: &str) -> String {
    format!("COUNTER#{name}")
}

pub(in crate::aws) fn user(id: UserId) -> String {
    format!("USER#{id}")
}

pub(in crate::aws) fn username(name: &str) -> String {
    format!("USERNAME#{name}")
}

pub(in crate::aws) fn token(hash_hex: &str) -> String {
    format!("TOKEN#{hash_hex}")
}

pub(in crate::aws) fn token_id(id: u64) -> String {
    format!("TOKENID#{id}")
}

pub(in crate::aws) fn namespace(id: u64) -> String {
    format!("NS#{id}")
}

pub(in crate::aws) fn namespace_path(path: &str) -> String {
    format!("NSPATH#{path}")
}

pub(in crate::aws) fn rate_window(user: UserId, action: &str) -> String {
    format!("RATE#{user}#{action}")
}

/// A project's item, and the partition of its job pointers and index.
pub(in crate::aws) fn project(id: ProjectId) -> String {
    format!("PROJECT#{id}")
}

pub(in crate::aws) fn project_path(full_path: &str) -> String {
    format!("PATH#{full_path}")
}

pub(in crate::aws) fn owner(user: UserId) -> String {
    format!("OWNER#{user}")
}

/// A project in a list (`PROJECTS`, `OWNER#`, `SCHEDULES`, `DELETED`), in
/// id order.
pub(in crate::aws) fn listed(id: ProjectId) -> String {
    format!("{LISTED_PREFIX}{id:020}")
}

pub(in crate::aws) fn job(id: &str) -> String {
    format!("{JOB_PREFIX}{id}")
}

/// `LATEST#<kind>` or `FINISHED#<kind>` in the project's partition.
pub(in crate::aws) fn job_pointer(which: &str, kind: JobKind) -> String {
    format!("{which}#{}", kind.as_str())
}

/// The sort key prefix of a project's jobs of a kind.
pub(in crate::aws) fn project_jobs_of(kind: JobKind) -> String {
    format!("{JOBS_PREFIX}{}#", kind.as_str())
}

/// A project's jobs of a kind, in creation order.
pub(in crate::aws) fn project_job(kind: JobKind, created_micros: i64, job_id: &str) -> String {
    format!(
        "{}{:020}#{job_id}",
        project_jobs_of(kind),
        created_micros.max(0)
    )
}

/// The partition of a user's migrations by direct transfer.
pub(in crate::aws) fn bulk_imports(user: UserId) -> String {
    format!("BULK#{user}")
}

/// A migration in its user's partition, in id order.
pub(in crate::aws) fn bulk_import(id: u64) -> String {
    format!("BULK#{id:020}")
}

pub(in crate::aws) fn relation_exports(project_id: ProjectId) -> String {
    format!("RELEXP#{project_id}")
}

pub(in crate::aws) fn relation_export_part(relation: &str, batch: Option<u32>) -> String {
    format!("{relation}#{:010}", batch.unwrap_or(0))
}

/// A content generation's manifest (`content.rs`).
pub(in crate::aws) fn generation(name: &str) -> String {
    format!("GEN#{name}")
}

/// A chunk of a relation's records in a generation's manifest.
pub(in crate::aws) fn chunk(relation: &str, first_seq: u64) -> String {
    format!("CHUNK#{relation}#{first_seq:020}")
}
