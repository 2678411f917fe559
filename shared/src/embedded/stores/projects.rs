//! `ProjectStore`: projects, their paths, export schedules and deleted
//! projects.

use async_trait::async_trait;

use super::*;

#[async_trait]
impl ProjectStore for EmbeddedStore {
    async fn create_project(&self, new: NewProject) -> Result<Project> {
        self.db
            .write(move |txn| {
                let full_path = format!("{}/{}", new.namespace.path, new.path);
                let mut by_path = txn.open_table(PROJECTS_BY_PATH)?;
                if by_path.get(full_path.as_str())?.is_some() {
                    return Err(Error::BadRequest(
                        "Name has already been taken, Path has already been taken".into(),
                    ));
                }
                let project = new.with_id(next_id(txn, "project")?);
                by_path.insert(full_path.as_str(), project.id)?;
                txn.open_table(PROJECTS)?
                    .insert(project.id, encode(&project)?.as_slice())?;
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
                let by_path = txn.open_table(PROJECTS_BY_PATH)?;
                let Some(id) = by_path.get(full_path.as_str())? else {
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
                let projects = txn.open_table(PROJECTS)?;
                let mut page = Vec::new();
                let mut total = 0u64;
                for entry in projects.iter()? {
                    let (_, bytes) = entry?;
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
                let mut projects = txn.open_table(PROJECTS)?;
                let current: Project = match projects.get(updated.id)? {
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
                projects.insert(merged.id, encode(&merged)?.as_slice())?;
                Ok(true)
            })
            .await
    }

    async fn put_export_schedule(&self, schedule: &ExportSchedule) -> Result<()> {
        let schedule = schedule.clone();
        self.db
            .write(move |txn| {
                txn.open_table(EXPORT_SCHEDULES)?
                    .insert(schedule.project_id, encode(&schedule)?.as_slice())?;
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
                let mut table = txn.open_table(EXPORT_SCHEDULES)?;
                let removed = table.remove(project_id)?;
                Ok(removed.is_some())
            })
            .await
    }

    async fn export_schedules(&self) -> Result<Vec<ExportSchedule>> {
        self.db
            .read(move |txn| {
                let table = txn.open_table(EXPORT_SCHEDULES)?;
                let mut all = Vec::new();
                for entry in table.iter()? {
                    let (_, bytes) = entry?;
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
                    .open_table(PROJECTS)?
                    .remove(id)?
                    .map(|bytes| decode::<Project>(bytes.value()))
                    .transpose()?
                else {
                    return Ok(None);
                };
                txn.open_table(PROJECTS_BY_PATH)?
                    .remove(project.full_path().as_str())?;
                txn.open_table(EXPORT_SCHEDULES)?.remove(id)?;
                let deleted = DeletedProject {
                    project: project.clone(),
                    deleted_at: now(),
                };
                txn.open_table(DELETED_PROJECTS)?
                    .insert(id, encode(&deleted)?.as_slice())?;
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
                let table = txn.open_table(DELETED_PROJECTS)?;
                let mut all = Vec::new();
                for entry in table.iter()? {
                    let (_, bytes) = entry?;
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
                txn.open_table(DELETED_PROJECTS)?.remove(id)?;
                Ok(())
            })
            .await
    }
}
