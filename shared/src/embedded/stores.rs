//! Users, projects and jobs in the embedded database (their content is in
//! `content`).

use async_trait::async_trait;

use chrono::{DateTime, Utc};
use redb::{ReadTransaction, ReadableTable, TableDefinition, WriteTransaction};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::Db;
use crate::domain::{
    now, DeletedProject, ExportSchedule, Job, JobKind, JobStatus, JobUpdate, Namespace,
    NamespaceId, NewProject, Project, ProjectId, RelationExportPart, Token, User, UserId, When,
};
use crate::ports::{JobStore, ProjectStore, UserStore};
use crate::{Error, Result};

const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("counters");
const USERS: TableDefinition<u64, &[u8]> = TableDefinition::new("users");
const USERS_BY_NAME: TableDefinition<&str, u64> = TableDefinition::new("users_by_name");
const TOKENS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("tokens");
/// Token id → its hash (the key of `TOKENS`).
const TOKEN_IDS: TableDefinition<u64, &[u8]> = TableDefinition::new("token_ids");
const NAMESPACES: TableDefinition<u64, &[u8]> = TableDefinition::new("namespaces");
const NAMESPACES_BY_PATH: TableDefinition<&str, u64> = TableDefinition::new("namespaces_by_path");
const PROJECTS: TableDefinition<u64, &[u8]> = TableDefinition::new("projects");
const PROJECTS_BY_PATH: TableDefinition<&str, u64> = TableDefinition::new("projects_by_path");
const JOBS: TableDefinition<&str, &[u8]> = TableDefinition::new("jobs");
const LATEST_JOB: TableDefinition<(u64, &str), &str> = TableDefinition::new("latest_job");
const LATEST_FINISHED_JOB: TableDefinition<(u64, &str), &str> =
    TableDefinition::new("latest_finished_job");
const EXPORT_SCHEDULES: TableDefinition<u64, &[u8]> = TableDefinition::new("export_schedules");
/// Projects deleted through the API whose content is still being deleted.
const DELETED_PROJECTS: TableDefinition<u64, &[u8]> = TableDefinition::new("deleted_projects");
/// (project, kind, creation in microseconds, job id): a project's jobs in order.
const PROJECT_JOBS: TableDefinition<(u64, &str, i64, &str), ()> =
    TableDefinition::new("project_jobs");
/// (user, action, window start) → uses counted in that window
const RATE_WINDOWS: TableDefinition<(u64, &str, i64), u32> = TableDefinition::new("rate_windows");
/// (project, relation, batch number or 0 for the relation's own part)
const RELATION_EXPORTS: TableDefinition<(u64, &str, u32), &[u8]> =
    TableDefinition::new("relation_exports");

pub(super) fn create_tables(txn: &WriteTransaction) -> Result<()> {
    // Every table exists from the start, so reads never meet a missing one.
    macro_rules! create {
        ($($table:expr),* $(,)?) => { $( txn.open_table($table).map_err(Error::storage)?; )* };
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
    let mut table = txn.open_table(index).map_err(Error::storage)?;
    let mut missing = Vec::new();
    for entry in table.iter().map_err(Error::storage)? {
        let (name, id) = entry.map_err(Error::storage)?;
        let key = crate::domain::name_key(name.value());
        if key != name.value() {
            missing.push((key, id.value()));
        }
    }
    for (key, id) in missing {
        if table.get(key.as_str()).map_err(Error::storage)?.is_none() {
            table.insert(key.as_str(), id).map_err(Error::storage)?;
        }
    }
    Ok(())
}

/// One process at a time opens the data directory, so a lease found at
/// start-up belongs to a run that died with the previous process: its job
/// can be taken over at once rather than when the lease runs out.
fn release_leases(txn: &WriteTransaction) -> Result<()> {
    let mut jobs = txn.open_table(JOBS).map_err(Error::storage)?;
    let mut held = Vec::new();
    for entry in jobs.iter().map_err(Error::storage)? {
        let (id, bytes) = entry.map_err(Error::storage)?;
        let job: Job = decode(bytes.value())?;
        if job.lease_until.is_some() {
            held.push((id.value().to_owned(), job));
        }
    }
    for (id, mut job) in held {
        job.lease_until = None;
        jobs.insert(id.as_str(), encode(&job)?.as_slice())
            .map_err(Error::storage)?;
    }
    Ok(())
}

fn encode(value: &impl Serialize) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(Error::internal)
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(Error::storage)
}

fn next_id(txn: &WriteTransaction, counter: &str) -> Result<u64> {
    let mut counters = txn.open_table(COUNTERS).map_err(Error::storage)?;
    let next = counters
        .get(counter)
        .map_err(Error::storage)?
        .map(|v| v.value())
        .unwrap_or(0)
        + 1;
    counters.insert(counter, next).map_err(Error::storage)?;
    Ok(next)
}

fn get_json<K: redb::Key + 'static, T: DeserializeOwned>(
    txn: &ReadTransaction,
    table: TableDefinition<K, &[u8]>,
    key: K::SelfType<'_>,
) -> Result<Option<T>> {
    let table = txn.open_table(table).map_err(Error::storage)?;
    let value = table.get(key).map_err(Error::storage)?;
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

#[async_trait]
impl UserStore for EmbeddedStore {
    async fn create_user(&self, username: &str, name: &str, is_admin: bool) -> Result<User> {
        let (username, name) = (username.to_owned(), name.to_owned());
        let lookup = crate::domain::name_key(&username);
        self.db
            .write(move |txn| {
                let mut by_name = txn.open_table(USERS_BY_NAME).map_err(Error::storage)?;
                let mut ns_by_path = txn.open_table(NAMESPACES_BY_PATH).map_err(Error::storage)?;
                if by_name
                    .get(lookup.as_str())
                    .map_err(Error::storage)?
                    .is_some()
                    || ns_by_path
                        .get(lookup.as_str())
                        .map_err(Error::storage)?
                        .is_some()
                {
                    return Err(Error::Conflict("Username has already been taken".into()));
                }
                let id = next_id(txn, "user")?;
                let user = User {
                    id,
                    username: username.clone(),
                    name: name.clone(),
                    is_admin,
                    created_at: now(),
                };
                let namespace = Namespace {
                    id,
                    path: username.clone(),
                    name,
                    owner_id: id,
                };
                txn.open_table(USERS)
                    .map_err(Error::storage)?
                    .insert(id, encode(&user)?.as_slice())
                    .map_err(Error::storage)?;
                by_name
                    .insert(lookup.as_str(), id)
                    .map_err(Error::storage)?;
                txn.open_table(NAMESPACES)
                    .map_err(Error::storage)?
                    .insert(id, encode(&namespace)?.as_slice())
                    .map_err(Error::storage)?;
                ns_by_path
                    .insert(lookup.as_str(), id)
                    .map_err(Error::storage)?;
                Ok(user)
            })
            .await
    }

    async fn user(&self, id: UserId) -> Result<Option<User>> {
        self.db.read(move |txn| get_json(txn, USERS, id)).await
    }

    async fn user_by_username(&self, username: &str) -> Result<Option<User>> {
        let username = crate::domain::name_key(username);
        self.db
            .read(move |txn| {
                let by_name = txn.open_table(USERS_BY_NAME).map_err(Error::storage)?;
                let Some(id) = by_name.get(username.as_str()).map_err(Error::storage)? else {
                    return Ok(None);
                };
                get_json(txn, USERS, id.value())
            })
            .await
    }

    async fn add_token(
        &self,
        user_id: UserId,
        name: &str,
        token_hash: [u8; 32],
        expires_at: Option<DateTime<Utc>>,
    ) -> Result<Token> {
        let name = name.to_owned();
        self.db
            .write(move |txn| {
                let token = Token {
                    id: next_id(txn, "token")?,
                    user_id,
                    name,
                    created_at: now(),
                    expires_at,
                    revoked: false,
                };
                txn.open_table(TOKENS)
                    .map_err(Error::storage)?
                    .insert(token_hash.as_slice(), encode(&token)?.as_slice())
                    .map_err(Error::storage)?;
                txn.open_table(TOKEN_IDS)
                    .map_err(Error::storage)?
                    .insert(token.id, token_hash.as_slice())
                    .map_err(Error::storage)?;
                Ok(token)
            })
            .await
    }

    async fn token_by_hash(&self, token_hash: [u8; 32]) -> Result<Option<Token>> {
        self.db
            .read(move |txn| get_json(txn, TOKENS, token_hash.as_slice()))
            .await
    }

    async fn token(&self, id: u64) -> Result<Option<Token>> {
        self.db
            .read(move |txn| {
                let ids = txn.open_table(TOKEN_IDS).map_err(Error::storage)?;
                let Some(hash) = ids.get(id).map_err(Error::storage)? else {
                    return Ok(None);
                };
                get_json(txn, TOKENS, hash.value())
            })
            .await
    }

    async fn revoke_token(&self, id: u64) -> Result<bool> {
        self.db
            .write(move |txn| {
                let ids = txn.open_table(TOKEN_IDS).map_err(Error::storage)?;
                let Some(hash) = ids
                    .get(id)
                    .map_err(Error::storage)?
                    .map(|h| h.value().to_vec())
                else {
                    return Ok(false);
                };
                let mut tokens = txn.open_table(TOKENS).map_err(Error::storage)?;
                let mut token: Token = match tokens.get(hash.as_slice()).map_err(Error::storage)? {
                    Some(bytes) => decode(bytes.value())?,
                    None => return Ok(false),
                };
                token.revoked = true;
                tokens
                    .insert(hash.as_slice(), encode(&token)?.as_slice())
                    .map_err(Error::storage)?;
                Ok(true)
            })
            .await
    }

    async fn namespace(&self, id: NamespaceId) -> Result<Option<Namespace>> {
        self.db.read(move |txn| get_json(txn, NAMESPACES, id)).await
    }

    async fn namespace_by_path(&self, path: &str) -> Result<Option<Namespace>> {
        let path = crate::domain::name_key(path);
        self.db
            .read(move |txn| {
                let by_path = txn.open_table(NAMESPACES_BY_PATH).map_err(Error::storage)?;
                let Some(id) = by_path.get(path.as_str()).map_err(Error::storage)? else {
                    return Ok(None);
                };
                get_json(txn, NAMESPACES, id.value())
            })
            .await
    }

    async fn take_rate_slot(
        &self,
        user_id: UserId,
        action: &str,
        window_start: i64,
        limit: u32,
    ) -> Result<bool> {
        let action = action.to_owned();
        self.db
            .write(move |txn| {
                let mut table = txn.open_table(RATE_WINDOWS).map_err(Error::storage)?;
                let a = action.as_str();
                // Past windows of this user and action are of no use any more.
                let past: Vec<i64> = table
                    .range((user_id, a, i64::MIN)..(user_id, a, window_start))
                    .map_err(Error::storage)?
                    .map(|item| item.map(|(key, _)| key.value().2))
                    .collect::<Result<_, _>>()
                    .map_err(Error::storage)?;
                for window in past {
                    table.remove((user_id, a, window)).map_err(Error::storage)?;
                }
                let used = table
                    .get((user_id, a, window_start))
                    .map_err(Error::storage)?
                    .map_or(0, |v| v.value());
                if used >= limit {
                    return Ok(false);
                }
                table
                    .insert((user_id, a, window_start), used + 1)
                    .map_err(Error::storage)?;
                Ok(true)
            })
            .await
    }
}

#[async_trait]
impl ProjectStore for EmbeddedStore {
    async fn create_project(&self, new: NewProject) -> Result<Project> {
        self.db
            .write(move |txn| {
                let full_path = format!("{}/{}", new.namespace.path, new.path);
                let mut by_path = txn.open_table(PROJECTS_BY_PATH).map_err(Error::storage)?;
                if by_path
                    .get(full_path.as_str())
                    .map_err(Error::storage)?
                    .is_some()
                {
                    return Err(Error::BadRequest(
                        "Name has already been taken, Path has already been taken".into(),
                    ));
                }
                let project = Project {
                    id: next_id(txn, "project")?,
                    namespace_id: new.namespace.id,
                    namespace_path: new.namespace.path,
                    namespace_name: new.namespace.name,
                    path: new.path,
                    name: new.name,
                    description: new.description,
                    owner_id: new.owner_id,
                    created_at: now(),
                    content: None,
                    relation_content: Default::default(),
                    content_rev: 0,
                };
                by_path
                    .insert(full_path.as_str(), project.id)
                    .map_err(Error::storage)?;
                txn.open_table(PROJECTS)
                    .map_err(Error::storage)?
                    .insert(project.id, encode(&project)?.as_slice())
                    .map_err(Error::storage)?;
                Ok(project)
            })
            .await
    }

    async fn project(&self, id: ProjectId) -> Result<Option<Project>> {
        self.db.read(move |txn| get_json(txn, PROJECTS, id)).await
    }

    async fn project_by_full_path(&self, full_path: &str) -> Result<Option<Project>> {
        let full_path = full_path.to_owned();
        self.db
            .read(move |txn| {
                let by_path = txn.open_table(PROJECTS_BY_PATH).map_err(Error::storage)?;
                let Some(id) = by_path.get(full_path.as_str()).map_err(Error::storage)? else {
                    return Ok(None);
                };
                get_json(txn, PROJECTS, id.value())
            })
            .await
    }

    async fn list_projects(
        &self,
        owner: Option<UserId>,
        offset: usize,
        limit: usize,
    ) -> Result<(Vec<Project>, u64)> {
        self.db
            .read(move |txn| {
                let projects = txn.open_table(PROJECTS).map_err(Error::storage)?;
                let mut page = Vec::new();
                let mut total = 0u64;
                for entry in projects.iter().map_err(Error::storage)? {
                    let (_, bytes) = entry.map_err(Error::storage)?;
                    let project: Project = decode(bytes.value())?;
                    if owner.is_some_and(|owner| owner != project.owner_id) {
                        continue;
                    }
                    if total as usize >= offset && page.len() < limit {
                        page.push(project);
                    }
                    total += 1;
                }
                Ok((page, total))
            })
            .await
    }

    async fn switch_content(&self, updated: &Project) -> Result<bool> {
        let updated = updated.clone();
        self.db
            .write(move |txn| {
                let mut projects = txn.open_table(PROJECTS).map_err(Error::storage)?;
                let current: Project = match projects.get(updated.id).map_err(Error::storage)? {
                    Some(bytes) => decode(bytes.value())?,
                    None => return Err(Error::project_not_found()),
                };
                if current.content_rev != updated.content_rev {
                    return Ok(false);
                }
                // Identity fields stay as they are; only what an import sets changes.
                let merged = Project {
                    name: updated.name.clone(),
                    description: updated.description.clone(),
                    content: updated.content.clone(),
                    relation_content: updated.relation_content.clone(),
                    content_rev: current.content_rev + 1,
                    ..current
                };
                projects
                    .insert(merged.id, encode(&merged)?.as_slice())
                    .map_err(Error::storage)?;
                Ok(true)
            })
            .await
    }

    async fn put_export_schedule(&self, schedule: &ExportSchedule) -> Result<()> {
        let schedule = schedule.clone();
        self.db
            .write(move |txn| {
                txn.open_table(EXPORT_SCHEDULES)
                    .map_err(Error::storage)?
                    .insert(schedule.project_id, encode(&schedule)?.as_slice())
                    .map_err(Error::storage)?;
                Ok(())
            })
            .await
    }

    async fn export_schedule(&self, project_id: ProjectId) -> Result<Option<ExportSchedule>> {
        self.db
            .read(move |txn| get_json(txn, EXPORT_SCHEDULES, project_id))
            .await
    }

    async fn delete_export_schedule(&self, project_id: ProjectId) -> Result<bool> {
        self.db
            .write(move |txn| {
                let mut table = txn.open_table(EXPORT_SCHEDULES).map_err(Error::storage)?;
                let removed = table.remove(project_id).map_err(Error::storage)?;
                Ok(removed.is_some())
            })
            .await
    }

    async fn export_schedules(&self) -> Result<Vec<ExportSchedule>> {
        self.db
            .read(move |txn| {
                let table = txn.open_table(EXPORT_SCHEDULES).map_err(Error::storage)?;
                let mut all = Vec::new();
                for entry in table.iter().map_err(Error::storage)? {
                    let (_, bytes) = entry.map_err(Error::storage)?;
                    all.push(decode(bytes.value())?);
                }
                Ok(all)
            })
            .await
    }

    async fn delete_project(&self, id: ProjectId) -> Result<Option<Project>> {
        self.db
            .write(move |txn| {
                let Some(project) = txn
                    .open_table(PROJECTS)
                    .map_err(Error::storage)?
                    .remove(id)
                    .map_err(Error::storage)?
                    .map(|bytes| decode::<Project>(bytes.value()))
                    .transpose()?
                else {
                    return Ok(None);
                };
                txn.open_table(PROJECTS_BY_PATH)
                    .map_err(Error::storage)?
                    .remove(project.full_path().as_str())
                    .map_err(Error::storage)?;
                txn.open_table(EXPORT_SCHEDULES)
                    .map_err(Error::storage)?
                    .remove(id)
                    .map_err(Error::storage)?;
                let deleted = DeletedProject {
                    project: project.clone(),
                    deleted_at: now(),
                };
                txn.open_table(DELETED_PROJECTS)
                    .map_err(Error::storage)?
                    .insert(id, encode(&deleted)?.as_slice())
                    .map_err(Error::storage)?;
                Ok(Some(project))
            })
            .await
    }

    async fn deleted_project(&self, id: ProjectId) -> Result<Option<DeletedProject>> {
        self.db
            .read(move |txn| get_json(txn, DELETED_PROJECTS, id))
            .await
    }

    async fn deleted_projects(&self, limit: usize) -> Result<Vec<DeletedProject>> {
        self.db
            .read(move |txn| {
                let table = txn.open_table(DELETED_PROJECTS).map_err(Error::storage)?;
                let mut all = Vec::new();
                for entry in table.iter().map_err(Error::storage)? {
                    let (_, bytes) = entry.map_err(Error::storage)?;
                    all.push(decode::<DeletedProject>(bytes.value())?);
                }
                all.sort_by_key(|d| d.deleted_at);
                all.truncate(limit);
                Ok(all)
            })
            .await
    }

    async fn forget_deleted_project(&self, id: ProjectId) -> Result<()> {
        self.db
            .write(move |txn| {
                txn.open_table(DELETED_PROJECTS)
                    .map_err(Error::storage)?
                    .remove(id)
                    .map_err(Error::storage)?;
                Ok(())
            })
            .await
    }
}

/// The keys of a project's entries in `PROJECT_JOBS`.
fn project_job_keys(
    index: &impl ReadableTable<(u64, &'static str, i64, &'static str), ()>,
    project_id: ProjectId,
) -> Result<Vec<(String, i64, String)>> {
    index
        .range((project_id, "", i64::MIN, "")..(project_id + 1, "", i64::MIN, ""))
        .map_err(Error::storage)?
        .map(|entry| {
            let (key, _) = entry.map_err(Error::storage)?;
            let (_, kind, created, id) = key.value();
            Ok((kind.to_owned(), created, id.to_owned()))
        })
        .collect()
}

#[async_trait]
impl JobStore for EmbeddedStore {
    async fn create_job(&self, job: &Job) -> Result<()> {
        let job = job.clone();
        self.db
            .write(move |txn| {
                let mut jobs = txn.open_table(JOBS).map_err(Error::storage)?;
                if jobs.get(job.id.as_str()).map_err(Error::storage)?.is_some() {
                    return Err(Error::Conflict(format!("job {} exists", job.id)));
                }
                jobs.insert(job.id.as_str(), encode(&job)?.as_slice())
                    .map_err(Error::storage)?;
                txn.open_table(PROJECT_JOBS)
                    .map_err(Error::storage)?
                    .insert(
                        (
                            job.project_id,
                            job.kind.as_str(),
                            job.created_at.timestamp_micros(),
                            job.id.as_str(),
                        ),
                        (),
                    )
                    .map_err(Error::storage)?;
                txn.open_table(LATEST_JOB)
                    .map_err(Error::storage)?
                    .insert((job.project_id, job.kind.as_str()), job.id.as_str())
                    .map_err(Error::storage)?;
                Ok(())
            })
            .await
    }

    async fn job(&self, id: &str) -> Result<Option<Job>> {
        let id = id.to_owned();
        self.db
            .read(move |txn| get_json(txn, JOBS, id.as_str()))
            .await
    }

    async fn transition(
        &self,
        id: &str,
        when: When,
        to: JobStatus,
        update: JobUpdate,
    ) -> Result<Option<Job>> {
        let id = id.to_owned();
        self.db
            .write(move |txn| {
                let mut jobs = txn.open_table(JOBS).map_err(Error::storage)?;
                let mut job: Job = match jobs.get(id.as_str()).map_err(Error::storage)? {
                    Some(bytes) => decode(bytes.value())?,
                    None => return Ok(None),
                };
                if !when.holds(&job) {
                    return Ok(None);
                }
                job.apply(to, update);
                jobs.insert(id.as_str(), encode(&job)?.as_slice())
                    .map_err(Error::storage)?;
                if to == JobStatus::Finished {
                    txn.open_table(LATEST_FINISHED_JOB)
                        .map_err(Error::storage)?
                        .insert((job.project_id, job.kind.as_str()), job.id.as_str())
                        .map_err(Error::storage)?;
                }
                Ok(Some(job))
            })
            .await
    }

    async fn project_jobs(
        &self,
        project_id: ProjectId,
        kind: JobKind,
        limit: usize,
    ) -> Result<Vec<Job>> {
        self.db
            .read(move |txn| {
                let index = txn.open_table(PROJECT_JOBS).map_err(Error::storage)?;
                let range = index
                    .range(
                        (project_id, kind.as_str(), i64::MIN, "")
                            ..=(project_id, kind.as_str(), i64::MAX, "~"),
                    )
                    .map_err(Error::storage)?;
                let mut jobs = Vec::new();
                for entry in range.rev().take(limit) {
                    let (key, _) = entry.map_err(Error::storage)?;
                    let (_, _, _, id) = key.value();
                    if let Some(job) = get_json(txn, JOBS, id)? {
                        jobs.push(job);
                    }
                }
                Ok(jobs)
            })
            .await
    }

    async fn stale_jobs(&self, updated_before: DateTime<Utc>, limit: usize) -> Result<Vec<Job>> {
        self.db
            .read(move |txn| {
                let jobs = txn.open_table(JOBS).map_err(Error::storage)?;
                let mut stale = Vec::new();
                for entry in jobs.iter().map_err(Error::storage)? {
                    let (_, bytes) = entry.map_err(Error::storage)?;
                    let job: Job = decode(bytes.value())?;
                    if !job.status.is_done() && job.updated_at < updated_before {
                        stale.push(job);
                        if stale.len() >= limit {
                            break;
                        }
                    }
                }
                Ok(stale)
            })
            .await
    }

    async fn all_project_jobs(&self, project_id: ProjectId) -> Result<Vec<Job>> {
        self.db
            .read(move |txn| {
                let index = txn.open_table(PROJECT_JOBS).map_err(Error::storage)?;
                let mut jobs = Vec::new();
                for (_, _, id) in project_job_keys(&index, project_id)? {
                    if let Some(job) = get_json(txn, JOBS, id.as_str())? {
                        jobs.push(job);
                    }
                }
                Ok(jobs)
            })
            .await
    }

    async fn delete_project_jobs(&self, project_id: ProjectId) -> Result<()> {
        self.db
            .write(move |txn| {
                let mut index = txn.open_table(PROJECT_JOBS).map_err(Error::storage)?;
                let mut jobs = txn.open_table(JOBS).map_err(Error::storage)?;
                let mut latest = txn.open_table(LATEST_JOB).map_err(Error::storage)?;
                let mut finished = txn
                    .open_table(LATEST_FINISHED_JOB)
                    .map_err(Error::storage)?;
                for (kind, created, id) in project_job_keys(&index, project_id)? {
                    jobs.remove(id.as_str()).map_err(Error::storage)?;
                    index
                        .remove((project_id, kind.as_str(), created, id.as_str()))
                        .map_err(Error::storage)?;
                    latest
                        .remove((project_id, kind.as_str()))
                        .map_err(Error::storage)?;
                    finished
                        .remove((project_id, kind.as_str()))
                        .map_err(Error::storage)?;
                }
                let mut parts = txn.open_table(RELATION_EXPORTS).map_err(Error::storage)?;
                parts
                    .retain_in((project_id, "", 0)..(project_id + 1, "", 0), |_, _| false)
                    .map_err(Error::storage)?;
                Ok(())
            })
            .await
    }

    async fn next_number(&self, sequence: &str) -> Result<u64> {
        let sequence = format!("sequence:{sequence}");
        self.db.write(move |txn| next_id(txn, &sequence)).await
    }

    async fn latest_job(&self, project_id: ProjectId, kind: JobKind) -> Result<Option<Job>> {
        self.db
            .read(move |txn| pointed_job(txn, LATEST_JOB, project_id, kind))
            .await
    }

    async fn latest_finished_job(
        &self,
        project_id: ProjectId,
        kind: JobKind,
    ) -> Result<Option<Job>> {
        self.db
            .read(move |txn| pointed_job(txn, LATEST_FINISHED_JOB, project_id, kind))
            .await
    }

    async fn replace_relation_export(
        &self,
        project_id: ProjectId,
        parts: Vec<RelationExportPart>,
    ) -> Result<()> {
        self.db
            .write(move |txn| {
                let mut table = txn.open_table(RELATION_EXPORTS).map_err(Error::storage)?;
                let old: Vec<(String, u32)> = table
                    .range((project_id, "", 0)..(project_id + 1, "", 0))
                    .map_err(Error::storage)?
                    .map(|item| {
                        item.map(|(key, _)| {
                            let (_, relation, batch) = key.value();
                            (relation.to_owned(), batch)
                        })
                    })
                    .collect::<Result<_, _>>()
                    .map_err(Error::storage)?;
                for (relation, batch) in old {
                    table
                        .remove((project_id, relation.as_str(), batch))
                        .map_err(Error::storage)?;
                }
                for part in parts {
                    let key = (project_id, part.relation.as_str(), part.batch.unwrap_or(0));
                    table
                        .insert(key, encode(&part)?.as_slice())
                        .map_err(Error::storage)?;
                }
                Ok(())
            })
            .await
    }

    async fn relation_export_parts(
        &self,
        project_id: ProjectId,
    ) -> Result<Vec<RelationExportPart>> {
        self.db
            .read(move |txn| {
                let table = txn.open_table(RELATION_EXPORTS).map_err(Error::storage)?;
                let range = table
                    .range((project_id, "", 0)..(project_id + 1, "", 0))
                    .map_err(Error::storage)?;
                range
                    .map(|item| decode(item.map_err(Error::storage)?.1.value()))
                    .collect()
            })
            .await
    }

    async fn relation_export_parts_from(
        &self,
        project_id: ProjectId,
        relation: &str,
        batch: Option<u32>,
        limit: usize,
    ) -> Result<Vec<RelationExportPart>> {
        let relation = relation.to_owned();
        self.db
            .read(move |txn| {
                let table = txn.open_table(RELATION_EXPORTS).map_err(Error::storage)?;
                let from = (project_id, relation.as_str(), batch.unwrap_or(0));
                let range = table
                    .range(from..(project_id + 1, "", 0))
                    .map_err(Error::storage)?;
                range
                    .take(limit)
                    .map(|item| decode(item.map_err(Error::storage)?.1.value()))
                    .collect()
            })
            .await
    }

    async fn transition_relation_export_part(
        &self,
        project_id: ProjectId,
        relation: &str,
        batch: Option<u32>,
        run_id: &str,
        from: &[JobStatus],
        to: JobStatus,
        update: JobUpdate,
    ) -> Result<Option<RelationExportPart>> {
        let (relation, run_id, from) = (relation.to_owned(), run_id.to_owned(), from.to_vec());
        self.db
            .write(move |txn| {
                let mut table = txn.open_table(RELATION_EXPORTS).map_err(Error::storage)?;
                let key = (project_id, relation.as_str(), batch.unwrap_or(0));
                let mut part: RelationExportPart = match table.get(key).map_err(Error::storage)? {
                    Some(bytes) => decode(bytes.value())?,
                    None => return Ok(None),
                };
                if !part.may_move(&run_id, &from) {
                    return Ok(None);
                }
                part.apply(to, update);
                table
                    .insert(key, encode(&part)?.as_slice())
                    .map_err(Error::storage)?;
                Ok(Some(part))
            })
            .await
    }
}

fn pointed_job(
    txn: &ReadTransaction,
    pointers: TableDefinition<(u64, &str), &str>,
    project_id: ProjectId,
    kind: JobKind,
) -> Result<Option<Job>> {
    let table = txn.open_table(pointers).map_err(Error::storage)?;
    let Some(id) = table
        .get((project_id, kind.as_str()))
        .map_err(Error::storage)?
    else {
        return Ok(None);
    };
    get_json(txn, JOBS, id.value())
}
