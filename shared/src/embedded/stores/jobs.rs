//! `JobStore`: jobs, their per-project index and pointers, and relations
//! export parts.

use async_trait::async_trait;

use super::*;

/// The keys of a project's entries in `PROJECT_JOBS`.
fn project_job_keys(
    index: &impl ReadableTable<(u64, &'static str, i64, &'static str), ()>,
    project_id: ProjectId,
) -> Result<Vec<(String, i64, String)>> {
    index
        .range((project_id, "", i64::MIN, "")..(project_id + 1, "", i64::MIN, ""))?
        .map(|entry| {
            let (key, _) = entry?;
            let (_, kind, created, id) = key.value();
            Ok((kind.to_owned(), created, id.to_owned()))
        })
        .collect()
}

/// Moves job `id` to `to` within `txn` if `when` holds.
fn transition_in(
    txn: &WriteTransaction,
    id: &str,
    when: When,
    to: JobStatus,
    update: JobUpdate,
) -> Result<Option<Job>> {
    let mut jobs = txn.open_table(JOBS)?;
    let mut job: Job = match jobs.get(id)? {
        Some(bytes) => decode(bytes.value())?,
        None => return Ok(None),
    };
    if !when.holds(&job) {
        return Ok(None);
    }
    job.apply(to, update);
    jobs.insert(id, encode(&job)?.as_slice())?;
    if to == JobStatus::Finished {
        txn.open_table(LATEST_FINISHED_JOB)?
            .insert((job.project_id, job.kind.as_str()), job.id.as_str())?;
    }
    Ok(Some(job))
}

#[async_trait]
impl JobStore for EmbeddedStore {
    async fn create_job(&self, job: &Job) -> Result<()> {
        let job = job.clone();
        self.db
            .write(move |txn| {
                let mut jobs = txn.open_table(JOBS)?;
                if jobs.get(job.id.as_str())?.is_some() {
                    return Err(Error::Conflict(format!("job {} exists", job.id)));
                }
                jobs.insert(job.id.as_str(), encode(&job)?.as_slice())?;
                txn.open_table(PROJECT_JOBS)?.insert(
                    (
                        job.project_id,
                        job.kind.as_str(),
                        job.created_at.timestamp_micros(),
                        job.id.as_str(),
                    ),
                    (),
                )?;
                txn.open_table(LATEST_JOB)?
                    .insert((job.project_id, job.kind.as_str()), job.id.as_str())?;
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
            .write(move |txn| transition_in(txn, &id, when, to, update))
            .await
    }

    /// Without a durable commit (an fsync) of its own: an import's progress
    /// every 10,000 records, each flushing everything the import had
    /// written, held its store writes up behind the disk.
    async fn record_progress(&self, id: &str, when: When, progress: JobUpdate) -> Result<bool> {
        let id = id.to_owned();
        let written = self
            .db
            .write_deferred(move |txn| transition_in(txn, &id, when, JobStatus::Started, progress))
            .await?;
        Ok(written.is_some())
    }

    async fn project_jobs(
        &self,
        project_id: ProjectId,
        kind: JobKind,
        skip: usize,
        limit: usize,
    ) -> Result<Vec<Job>> {
        self.db
            .read(move |txn| {
                let index = txn.open_table(PROJECT_JOBS)?;
                let range = index.range(
                    (project_id, kind.as_str(), i64::MIN, "")
                        ..=(project_id, kind.as_str(), i64::MAX, "~"),
                )?;
                let mut jobs = Vec::new();
                for entry in range.rev().skip(skip).take(limit) {
                    let (key, _) = entry?;
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
                let jobs = txn.open_table(JOBS)?;
                let mut stale = Vec::new();
                for entry in jobs.iter()? {
                    let (_, bytes) = entry?;
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
                let index = txn.open_table(PROJECT_JOBS)?;
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
                let mut index = txn.open_table(PROJECT_JOBS)?;
                let mut jobs = txn.open_table(JOBS)?;
                let mut latest = txn.open_table(LATEST_JOB)?;
                let mut finished = txn.open_table(LATEST_FINISHED_JOB)?;
                for (kind, created, id) in project_job_keys(&index, project_id)? {
                    jobs.remove(id.as_str())?;
                    index.remove((project_id, kind.as_str(), created, id.as_str()))?;
                    latest.remove((project_id, kind.as_str()))?;
                    finished.remove((project_id, kind.as_str()))?;
                }
                let mut parts = txn.open_table(RELATION_EXPORTS)?;
                parts.retain_in((project_id, "", 0)..(project_id + 1, "", 0), |_, _| false)?;
                Ok(())
            })
            .await
    }

    async fn forget_jobs(&self, forgotten: &[Job]) -> Result<()> {
        let forgotten = forgotten.to_vec();
        self.db
            .write(move |txn| {
                let mut index = txn.open_table(PROJECT_JOBS)?;
                let mut jobs = txn.open_table(JOBS)?;
                for job in &forgotten {
                    jobs.remove(job.id.as_str())?;
                    index.remove((
                        job.project_id,
                        job.kind.as_str(),
                        job.created_at.timestamp_micros(),
                        job.id.as_str(),
                    ))?;
                }
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

    async fn put_bulk_import(&self, import: &BulkImport) -> Result<()> {
        let import = import.clone();
        self.db
            .write(move |txn| {
                txn.open_table(BULK_IMPORTS)?
                    .insert((import.user_id, import.id), encode(&import)?.as_slice())?;
                Ok(())
            })
            .await
    }

    async fn bulk_import(&self, user_id: UserId, id: u64) -> Result<Option<BulkImport>> {
        self.db
            .read(move |txn| get_json(txn, BULK_IMPORTS, (user_id, id)))
            .await
    }

    async fn bulk_imports(&self, user_id: UserId) -> Result<Vec<BulkImport>> {
        self.db
            .read(move |txn| {
                let table = txn.open_table(BULK_IMPORTS)?;
                let mut all = Vec::new();
                for entry in table.range((user_id, 0)..=(user_id, u64::MAX))? {
                    let (_, bytes) = entry?;
                    all.push(decode(bytes.value())?);
                }
                Ok(all)
            })
            .await
    }

    async fn replace_relation_export(
        &self,
        project_id: ProjectId,
        parts: Vec<RelationExportPart>,
    ) -> Result<()> {
        self.db
            .write(move |txn| {
                let mut table = txn.open_table(RELATION_EXPORTS)?;
                let old: Vec<(String, u32)> = table
                    .range((project_id, "", 0)..(project_id + 1, "", 0))?
                    .map(|item| {
                        item.map(|(key, _)| {
                            let (_, relation, batch) = key.value();
                            (relation.to_owned(), batch)
                        })
                    })
                    .collect::<Result<_, _>>()?;
                for (relation, batch) in old {
                    table.remove((project_id, relation.as_str(), batch))?;
                }
                for part in parts {
                    let key = (project_id, part.relation.as_str(), part.batch.unwrap_or(0));
                    table.insert(key, encode(&part)?.as_slice())?;
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
                let table = txn.open_table(RELATION_EXPORTS)?;
                let range = table.range((project_id, "", 0)..(project_id + 1, "", 0))?;
                range.map(|item| decode(item?.1.value())).collect()
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
                let table = txn.open_table(RELATION_EXPORTS)?;
                let from = (project_id, relation.as_str(), batch.unwrap_or(0));
                let range = table.range(from..(project_id + 1, "", 0))?;
                range
                    .take(limit)
                    .map(|item| decode(item?.1.value()))
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
                let mut table = txn.open_table(RELATION_EXPORTS)?;
                let key = (project_id, relation.as_str(), batch.unwrap_or(0));
                let mut part: RelationExportPart = match table.get(key)? {
                    Some(bytes) => decode(bytes.value())?,
                    None => return Ok(None),
                };
                if !part.may_move(&run_id, &from) {
                    return Ok(None);
                }
                part.apply(to, update);
                table.insert(key, encode(&part)?.as_slice())?;
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
    let table = txn.open_table(pointers)?;
    let Some(id) = table.get((project_id, kind.as_str()))? else {
        return Ok(None);
    };
    get_json(txn, JOBS, id.value())
}
