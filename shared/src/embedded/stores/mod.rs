//! Users, projects and jobs in the embedded database (their content is in
//! `content`).

mod jobs;
mod projects;
mod users;

use chrono::{DateTime, Utc};
use redb::{ReadTransaction, ReadableTable, TableDefinition, WriteTransaction};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::Db;
use crate::domain::{
    now, BulkImport, DeletedProject, ExportSchedule, Job, JobKind, JobStatus, JobUpdate, Namespace,
    NamespaceId, NewProject, Project, ProjectId, RelationExportPart, Token, User, UserId, When,
};
use crate::ports::{JobStore, ProjectStore, UserStore};
use crate::{Error, Result};

pub(super) const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("counters");
pub(super) const USERS: TableDefinition<u64, &[u8]> = TableDefinition::new("users");
pub(super) const USERS_BY_NAME: TableDefinition<&str, u64> = TableDefinition::new("users_by_name");
pub(super) const TOKENS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("tokens");
/// Token id → its hash (the key of `TOKENS`).
pub(super) const TOKEN_IDS: TableDefinition<u64, &[u8]> = TableDefinition::new("token_ids");
pub(super) const NAMESPACES: TableDefinition<u64, &[u8]> = TableDefinition::new("namespaces");
pub(super) const NAMESPACES_BY_PATH: TableDefinition<&str, u64> =
    TableDefinition::new("namespaces_by_path");
pub(super) const PROJECTS: TableDefinition<u64, &[u8]> = TableDefinition::new("projects");
pub(super) const PROJECTS_BY_PATH: TableDefinition<&str, u64> =
    TableDefinition::new("projects_by_path");
pub(super) const JOBS: TableDefinition<&str, &[u8]> = TableDefinition::new("jobs");
pub(super) const LATEST_JOB: TableDefinition<(u64, &str), &str> =
    TableDefinition::new("latest_job");
pub(super) const LATEST_FINISHED_JOB: TableDefinition<(u64, &str), &str> =
    TableDefinition::new("latest_finished_job");
pub(super) const EXPORT_SCHEDULES: TableDefinition<u64, &[u8]> =
    TableDefinition::new("export_schedules");
/// Projects deleted through the API whose content is still being deleted.
pub(super) const DELETED_PROJECTS: TableDefinition<u64, &[u8]> =
    TableDefinition::new("deleted_projects");
/// (project, kind, creation in microseconds, job id): a project's jobs in order.
pub(super) const PROJECT_JOBS: TableDefinition<(u64, &str, i64, &str), ()> =
    TableDefinition::new("project_jobs");
/// (user, action, window start) → uses counted in that window
pub(super) const RATE_WINDOWS: TableDefinition<(u64, &str, i64), u32> =
    TableDefinition::new("rate_windows");
/// (project, relation, batch number or 0 for the relation's own part)
pub(super) const RELATION_EXPORTS: TableDefinition<(u64, &str, u32), &[u8]> =
    TableDefinition::new("relation_exports");

/// Migrations by direct transfer, by user and id.
pub(super) const BULK_IMPORTS: TableDefinition<(u64, u64), &[u8]> =
    TableDefinition::new("bulk_imports");

pub(in crate::embedded) fn create_tables(txn: &WriteTransaction) -> Result<()> {
    // Every table exists from the start, so reads never meet a missing one.
    macro_rules! create {
        ($($table:expr),* $(,)?) => { $( txn.open_table($table)?; )* };
    }
    create!(
        COUNTERS,
        USERS,
        USERS_BY_NAME,
        TOKENS,
        TOKEN_IDS,
        NAMESPACES,
        NAMESPACES_BY_PATH,
        PROJECTS,
        PROJECTS_BY_PATH,
        JOBS,
        LATEST_JOB,
        LATEST_FINISHED_JOB,
        PROJECT_JOBS,
        EXPORT_SCHEDULES,
        DELETED_PROJECTS,
        RELATION_EXPORTS,
        RATE_WINDOWS,
        BULK_IMPORTS,
    );
    for index in [USERS_BY_NAME, NAMESPACES_BY_PATH] {
        key_names_in_lower_case(txn, index)?;
    }
    release_leases(txn)
}

/// Indexes written before names were looked up case-insensitively get
/// their lower-case keys.
fn key_names_in_lower_case(
    txn: &WriteTransaction,
    index: TableDefinition<&str, u64>,
) -> Result<()> {
    let mut table = txn.open_table(index)?;
    let mut missing = Vec::new();
    for entry in table.iter()? {
        let (name, id) = entry?;
        let key = crate::domain::name_key(name.value());
        if key != name.value() {
            missing.push((key, id.value()));
        }
    }
    for (key, id) in missing {
        if table.get(key.as_str())?.is_none() {
            table.insert(key.as_str(), id)?;
        }
    }
    Ok(())
}

/// One process at a time opens the data directory, so a lease found at
/// start-up belongs to a run that died with the previous process: its job
/// can be taken over at once rather than when the lease runs out.
fn release_leases(txn: &WriteTransaction) -> Result<()> {
    let mut jobs = txn.open_table(JOBS)?;
    let mut held = Vec::new();
    for entry in jobs.iter()? {
        let (id, bytes) = entry?;
        let job: Job = decode(bytes.value())?;
        if job.lease_until.is_some() {
            held.push((id.value().to_owned(), job));
        }
    }
    for (id, mut job) in held {
        job.lease_until = None;
        jobs.insert(id.as_str(), encode(&job)?.as_slice())?;
    }
    Ok(())
}

pub(super) fn encode(value: &impl Serialize) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(Error::internal)
}

pub(super) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(Error::storage)
}

pub(super) fn next_id(txn: &WriteTransaction, counter: &str) -> Result<u64> {
    let mut counters = txn.open_table(COUNTERS)?;
    let next = counters.get(counter)?.map(|v| v.value()).unwrap_or(0) + 1;
    counters.insert(counter, next)?;
    Ok(next)
}

pub(super) fn get_json<K: redb::Key + 'static, T: DeserializeOwned>(
    txn: &ReadTransaction,
    table: TableDefinition<K, &[u8]>,
    key: K::SelfType<'_>,
) -> Result<Option<T>> {
    let table = txn.open_table(table)?;
    let value = table.get(key)?;
    value.map(|v| decode(v.value())).transpose()
}

/// Users, projects and jobs: one adapter over one database, implementing
/// three ports.
pub struct EmbeddedStore {
    pub(super) db: Db,
}

impl EmbeddedStore {
    pub(super) fn new(db: Db) -> Self {
        EmbeddedStore { db }
    }
}
