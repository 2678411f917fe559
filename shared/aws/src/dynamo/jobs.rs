//! `JobStore`: jobs, their per-project index and pointers, and relations
//! export parts.

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{PutRequest, WriteRequest};

use super::{data_of, ddb_error, delete_of, get_s, key, keys, n, s, with_data, DynamoStore, Item};
use shared::domain::{
    now, BulkImport, Job, JobKind, JobStatus, JobUpdate, ProjectId, RelationExportPart, UserId,
    When,
};
use shared::ports::JobStore;
use shared::{Error, Result};

#[async_trait]
impl JobStore for DynamoStore {
    async fn create_job(&self, job: &Job) -> Result<()> {
        let mut item = with_data(key(keys::job(&job.id), "JOB"), job)?;
        item.insert("version".into(), n(0));
        let mut pointer = key(
            keys::project(job.project_id),
            keys::job_pointer("LATEST", job.kind),
        );
        pointer.insert("job_id".into(), s(&job.id));
        let mut listed = listing_key(job);
        listed.insert("job_id".into(), s(&job.id));
        let mut active = key(keys::ACTIVE, keys::job(&job.id));
        active.insert("job_id".into(), s(&job.id));
        let created = self
            .put_all(vec![
                (item, Some("attribute_not_exists(pk)")),
                (pointer, None),
                (listed, None),
                (active, None),
            ])
            .await?;
        if !created {
            return Err(Error::Conflict(format!("job {} exists", job.id)));
        }
        Ok(())
    }

    async fn job(&self, id: &str) -> Result<Option<Job>> {
        self.get_data(&keys::job(id), "JOB").await
    }

    async fn transition(
        &self,
        id: &str,
        when: When,
        to: JobStatus,
        update: JobUpdate,
    ) -> Result<Option<Job>> {
        let retention = self.export_retention.as_secs();
        let job = self
            .update_versioned(&keys::job(id), "JOB", |job: &mut Job| {
                if !when.holds(job) {
                    return None;
                }
                job.apply(to, update.clone());
                let mut extra = Item::new();
                if to == JobStatus::Finished && job.kind != JobKind::Import {
                    extra.insert("expires_at".into(), n(now().timestamp() as u64 + retention));
                }
                Some(extra)
            })
            .await?;
        if let Some(job) = job.as_ref().filter(|_| to.is_done()) {
            self.client
                .delete_item()
                .table_name(&self.table)
                .set_key(Some(key(keys::ACTIVE, keys::job(&job.id))))
                .send()
                .await
                .map_err(ddb_error)?;
        }
        if let Some(job) = job.as_ref().filter(|_| to == JobStatus::Finished) {
            if job.kind != JobKind::Import {
                // The job's place in the history expires with the job.
                self.client
                    .update_item()
                    .table_name(&self.table)
                    .set_key(Some(listing_key(job)))
                    .update_expression("SET expires_at = :expires")
                    .expression_attribute_values(
                        ":expires",
                        n(now().timestamp() as u64 + retention),
                    )
                    .send()
                    .await
                    .map_err(ddb_error)?;
            }
            let mut pointer = key(
                keys::project(job.project_id),
                keys::job_pointer("FINISHED", job.kind),
            );
            pointer.insert("job_id".into(), s(&job.id));
            self.put_item(pointer).await?;
        }
        Ok(job)
    }

    async fn project_jobs(
        &self,
        project_id: ProjectId,
        kind: JobKind,
        skip: usize,
        limit: usize,
    ) -> Result<Vec<Job>> {
        let page = self
            .client
            .query()
            .table_name(&self.table)
            .consistent_read(true)
            .key_condition_expression("pk = :pk AND begins_with(sk, :prefix)")
            .expression_attribute_values(":pk", s(keys::project(project_id)))
            .expression_attribute_values(":prefix", s(keys::project_jobs_of(kind)))
            .scan_index_forward(false)
            .limit((skip + limit).clamp(1, 1000) as i32)
            .send()
            .await
            .map_err(ddb_error)?;
        let mut jobs = Vec::new();
        for item in page.items.unwrap_or_default().into_iter().skip(skip) {
            if let Some(job) = match get_s(&item, "job_id") {
                Some(id) => self.job(id).await?,
                None => None,
            } {
                jobs.push(job);
            }
        }
        Ok(jobs)
    }

    async fn stale_jobs(
        &self,
        updated_before: chrono::DateTime<chrono::Utc>,
        limit: usize,
    ) -> Result<Vec<Job>> {
        let mut stale = Vec::new();
        for item in self
            .query(keys::ACTIVE, Some(keys::JOB_PREFIX), None, None)
            .await?
        {
            let Some(id) = get_s(&item, "job_id") else {
                continue;
            };
            if let Some(job) = self.job(id).await? {
                if !job.status.is_done() && job.updated_at < updated_before {
                    stale.push(job);
                    if stale.len() >= limit {
                        break;
                    }
                }
            }
        }
        Ok(stale)
    }

    async fn all_project_jobs(&self, project_id: ProjectId) -> Result<Vec<Job>> {
        let listed = self
            .query(
                &keys::project(project_id),
                Some(keys::JOBS_PREFIX),
                None,
                None,
            )
            .await?;
        let mut jobs = Vec::new();
        for item in &listed {
            if let Some(id) = get_s(item, "job_id") {
                jobs.extend(self.job(id).await?);
            }
        }
        Ok(jobs)
    }

    async fn delete_project_jobs(&self, project_id: ProjectId) -> Result<()> {
        let pk = keys::project(project_id);
        let mut deletes = Vec::new();
        for item in self.query(&pk, None, None, None).await? {
            // The project's own item, if it is there, is not a job's.
            if get_s(&item, "sk") == Some("PROJECT") {
                continue;
            }
            if let Some(id) = get_s(&item, "job_id")
                .filter(|_| get_s(&item, "sk").is_some_and(|sk| sk.starts_with("JOBS#")))
            {
                deletes.push(delete_of(&key(keys::job(id), "JOB"))?);
                deletes.push(delete_of(&key(keys::ACTIVE, keys::job(id)))?);
            }
            deletes.push(delete_of(&item)?);
        }
        for part in self
            .query(&keys::relation_exports(project_id), None, None, None)
            .await?
        {
            deletes.push(delete_of(&part)?);
        }
        self.batch_write(deletes).await
    }

    async fn forget_jobs(&self, jobs: &[Job]) -> Result<()> {
        let mut deletes = Vec::new();
        for job in jobs {
            deletes.push(delete_of(&key(keys::job(&job.id), "JOB"))?);
            deletes.push(delete_of(&key(keys::ACTIVE, keys::job(&job.id)))?);
            deletes.push(delete_of(&listing_key(job))?);
        }
        self.batch_write(deletes).await
    }

    async fn next_number(&self, sequence: &str) -> Result<u64> {
        self.next_id(&format!("sequence:{sequence}")).await
    }

    async fn latest_job(&self, project_id: ProjectId, kind: JobKind) -> Result<Option<Job>> {
        self.pointed_job(project_id, &keys::job_pointer("LATEST", kind))
            .await
    }

    async fn latest_finished_job(
        &self,
        project_id: ProjectId,
        kind: JobKind,
    ) -> Result<Option<Job>> {
        // A job's own item turns finished before its FINISHED pointer is
        // written (and a crash may fall between): the latest job, once
        // finished, is the newest finished one, so a client that saw it
        // finished downloads it at once.
        let latest = self.latest_job(project_id, kind).await?;
        if let Some(job) = latest.filter(|job| job.status == JobStatus::Finished) {
            return Ok(Some(job));
        }
        self.pointed_job(project_id, &keys::job_pointer("FINISHED", kind))
            .await
    }

    async fn put_bulk_import(&self, import: &BulkImport) -> Result<()> {
        let item = with_data(
            key(
                keys::bulk_imports(import.user_id),
                keys::bulk_import(import.id),
            ),
            import,
        )?;
        self.put_item(item).await
    }

    async fn bulk_import(&self, user_id: UserId, id: u64) -> Result<Option<BulkImport>> {
        self.get_data(&keys::bulk_imports(user_id), &keys::bulk_import(id))
            .await
    }

    async fn bulk_imports(&self, user_id: UserId) -> Result<Vec<BulkImport>> {
        self.query(&keys::bulk_imports(user_id), None, None, None)
            .await?
            .iter()
            .map(data_of)
            .collect()
    }

    async fn replace_relation_export(
        &self,
        project_id: ProjectId,
        parts: Vec<RelationExportPart>,
    ) -> Result<()> {
        // Not one transaction (a run may have thousands of parts): a worker
        // holding a message of the old run finds its run id gone and stops.
        let pk = keys::relation_exports(project_id);
        let old = self.query(&pk, None, None, None).await?;
        let deletes = old.iter().map(delete_of).collect::<Result<Vec<_>>>()?;
        self.batch_write(deletes).await?;
        let puts = parts
            .iter()
            .map(|part| {
                let mut item = with_data(
                    key(&pk, keys::relation_export_part(&part.relation, part.batch)),
                    part,
                )?;
                item.insert("version".into(), n(0));
                let request = PutRequest::builder()
                    .set_item(Some(item))
                    .build()
                    .map_err(Error::internal)?;
                Ok(WriteRequest::builder().put_request(request).build())
            })
            .collect::<Result<Vec<_>>>()?;
        self.batch_write(puts).await
    }

    async fn relation_export_parts(
        &self,
        project_id: ProjectId,
    ) -> Result<Vec<RelationExportPart>> {
        let items = self
            .query(&keys::relation_exports(project_id), None, None, None)
            .await?;
        items.iter().map(data_of).collect()
    }

    async fn relation_export_parts_from(
        &self,
        project_id: ProjectId,
        relation: &str,
        batch: Option<u32>,
        limit: usize,
    ) -> Result<Vec<RelationExportPart>> {
        let mut parts = Vec::new();
        let mut start = None;
        while parts.len() < limit {
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .consistent_read(true)
                .key_condition_expression("pk = :pk AND sk >= :from")
                .expression_attribute_values(":pk", s(keys::relation_exports(project_id)))
                .expression_attribute_values(
                    ":from",
                    s(keys::relation_export_part(relation, batch)),
                )
                .limit((limit - parts.len()) as i32)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(ddb_error)?;
            for item in page.items() {
                parts.push(data_of(item)?);
            }
            start = page.last_evaluated_key;
            if start.is_none() {
                break;
            }
        }
        Ok(parts)
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
        let (pk, sk) = (
            keys::relation_exports(project_id),
            keys::relation_export_part(relation, batch),
        );
        self.update_versioned(&pk, &sk, |part: &mut RelationExportPart| {
            part.may_move(run_id, from).then(|| {
                part.apply(to, update.clone());
                Item::new()
            })
        })
        .await
    }
}

impl DynamoStore {
    async fn pointed_job(&self, project_id: ProjectId, sk: &str) -> Result<Option<Job>> {
        let Some(pointer) = self.get_item(&keys::project(project_id), sk).await? else {
            return Ok(None);
        };
        match get_s(&pointer, "job_id") {
            Some(job_id) => self.job(job_id).await,
            None => Ok(None),
        }
    }
}

/// The job's entry in its project's history.
fn listing_key(job: &Job) -> Item {
    key(
        keys::project(job.project_id),
        keys::project_job(job.kind, job.created_at.timestamp_micros(), &job.id),
    )
}
