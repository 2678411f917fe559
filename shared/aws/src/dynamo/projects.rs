//! `ProjectStore`: projects, their paths and lists, export schedules and
//! deleted projects.

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{Delete, Put, ReturnValue, TransactWriteItem};

use super::{data_of, ddb_error, get_n, key, keys, n, s, with_data, DynamoStore};
use shared::domain::{now, DeletedProject, ExportSchedule, NewProject, Project, ProjectId, UserId};
use shared::ports::ProjectStore;
use shared::{Error, Result};

#[async_trait]
impl ProjectStore for DynamoStore {
    async fn create_project(&self, new: NewProject) -> Result<Project> {
        let project = new.with_id(self.next_id("project").await?);
        let mut by_path = key(keys::project_path(&project.full_path()), "PROJECT");
        by_path.insert("id".into(), n(project.id));
        let listed = |pk: String| {
            let mut item = key(pk, keys::listed(project.id));
            item.insert("id".into(), n(project.id));
            item
        };
        let created = self
            .put_all(vec![
                (by_path, Some("attribute_not_exists(pk)")),
                (
                    with_data(key(keys::project(project.id), "PROJECT"), &project)?,
                    None,
                ),
                (listed(keys::PROJECTS.into()), None),
                (listed(keys::owner(project.owner_id)), None),
            ])
            .await?;
        if !created {
            return Err(Error::BadRequest(
                "Name has already been taken, Path has already been taken".into(),
            ));
        }
        Ok(project)
    }

    async fn project(&self, id: ProjectId) -> Result<Option<Project>> {
        self.get_data(&keys::project(id), "PROJECT").await
    }

    async fn project_by_full_path(&self, full_path: &str) -> Result<Option<Project>> {
        match self
            .indexed_id(&keys::project_path(full_path), "PROJECT")
            .await?
        {
            Some(id) => self.project(id).await,
            None => Ok(None),
        }
    }

    async fn list_projects(
        &self,
        owner: Option<UserId>,
        offset: usize,
        limit: usize,
    ) -> Result<(Vec<Project>, u64)> {
        let pk = match owner {
            Some(owner) => keys::owner(owner),
            None => keys::PROJECTS.to_owned(),
        };
        let index = self
            .query(&pk, Some(keys::LISTED_PREFIX), None, None)
            .await?;
        let mut page = Vec::new();
        for item in index.iter().skip(offset).take(limit) {
            if let Some(project) = match get_n(item, "id") {
                Some(id) => self.project(id).await?,
                None => None,
            } {
                page.push(project);
            }
        }
        Ok((page, index.len() as u64))
    }

    async fn switch_content(&self, updated: &Project) -> Result<bool> {
        let Some(current) = self.project(updated.id).await? else {
            return Err(Error::project_not_found());
        };
        if current.content_rev != updated.content_rev {
            return Ok(false);
        }
        let expected_rev = current.content_rev;
        let merged = Project {
            name: updated.name.clone(),
            description: updated.description.clone(),
            content: updated.content.clone(),
            relation_content: updated.relation_content.clone(),
            content_rev: expected_rev + 1,
            ..current
        };
        let mut item = with_data(key(keys::project(merged.id), "PROJECT"), &merged)?;
        item.insert("content_rev".into(), n(merged.content_rev));
        let mut request = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item));
        // The project must still be there: a deleted project is never
        // written back by an import that finishes after its deletion.
        request = if expected_rev == 0 {
            request
                .condition_expression("attribute_exists(pk) AND attribute_not_exists(content_rev)")
        } else {
            request
                .condition_expression("content_rev = :expected")
                .expression_attribute_values(":expected", n(expected_rev))
        };
        match request.send().await {
            Ok(_) => Ok(true),
            Err(err) => match err.into_service_error() {
                e if e.is_conditional_check_failed_exception() => Ok(false),
                e => Err(ddb_error(e)),
            },
        }
    }

    async fn put_export_schedule(&self, schedule: &ExportSchedule) -> Result<()> {
        let item = with_data(
            key(keys::SCHEDULES, keys::listed(schedule.project_id)),
            schedule,
        )?;
        self.put_item(item).await
    }

    async fn export_schedule(&self, project_id: ProjectId) -> Result<Option<ExportSchedule>> {
        self.get_data(keys::SCHEDULES, &keys::listed(project_id))
            .await
    }

    async fn delete_export_schedule(&self, project_id: ProjectId) -> Result<bool> {
        let output = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key(keys::SCHEDULES, keys::listed(project_id))))
            .return_values(ReturnValue::AllOld)
            .send()
            .await
            .map_err(ddb_error)?;
        Ok(output.attributes.is_some_and(|a| !a.is_empty()))
    }

    async fn export_schedules(&self) -> Result<Vec<ExportSchedule>> {
        self.query(keys::SCHEDULES, Some(keys::LISTED_PREFIX), None, None)
            .await?
            .iter()
            .map(data_of)
            .collect()
    }

    async fn delete_project(&self, id: ProjectId) -> Result<Option<Project>> {
        let pk = keys::project(id);
        loop {
            let Some(item) = self.get_item(&pk, "PROJECT").await? else {
                return Ok(None);
            };
            let project: Project = data_of(&item)?;
            let as_read = item.get("data").cloned().unwrap_or_else(|| s(""));
            let listed = keys::listed(id);
            let deleted = DeletedProject {
                project: project.clone(),
                deleted_at: now(),
            };
            let mut writes = vec![TransactWriteItem::builder()
                .delete(
                    Delete::builder()
                        .table_name(&self.table)
                        .set_key(Some(key(&pk, "PROJECT")))
                        // Not switched meanwhile: the deleted copy names
                        // every generation the content is in.
                        .condition_expression("#data = :as_read")
                        .expression_attribute_names("#data", "data")
                        .expression_attribute_values(":as_read", as_read)
                        .build()
                        .map_err(Error::internal)?,
                )
                .build()];
            for (pk, sk) in [
                (
                    keys::project_path(&project.full_path()),
                    "PROJECT".to_owned(),
                ),
                (keys::PROJECTS.to_owned(), listed.clone()),
                (keys::owner(project.owner_id), listed.clone()),
                (keys::SCHEDULES.to_owned(), keys::listed(id)),
            ] {
                let delete = Delete::builder()
                    .table_name(&self.table)
                    .set_key(Some(key(pk, sk)))
                    .build()
                    .map_err(Error::internal)?;
                writes.push(TransactWriteItem::builder().delete(delete).build());
            }
            let put = Put::builder()
                .table_name(&self.table)
                .set_item(Some(with_data(key(keys::DELETED, listed), &deleted)?))
                .build()
                .map_err(Error::internal)?;
            writes.push(TransactWriteItem::builder().put(put).build());
            match self
                .client
                .transact_write_items()
                .set_transact_items(Some(writes))
                .send()
                .await
            {
                Ok(_) => return Ok(Some(project)),
                Err(err) => match err.into_service_error() {
                    // Switched or deleted meanwhile: read it again.
                    e if e.is_transaction_canceled_exception() => continue,
                    e => return Err(ddb_error(e)),
                },
            }
        }
    }

    async fn deleted_project(&self, id: ProjectId) -> Result<Option<DeletedProject>> {
        self.get_data(keys::DELETED, &keys::listed(id)).await
    }

    async fn deleted_projects(&self, limit: usize) -> Result<Vec<DeletedProject>> {
        let mut all = self
            .query(keys::DELETED, Some(keys::LISTED_PREFIX), None, None)
            .await?
            .iter()
            .map(data_of)
            .collect::<Result<Vec<DeletedProject>>>()?;
        all.sort_by_key(|d| d.deleted_at);
        all.truncate(limit);
        Ok(all)
    }

    async fn forget_deleted_project(&self, id: ProjectId) -> Result<()> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key(keys::DELETED, keys::listed(id))))
            .send()
            .await
            .map_err(ddb_error)?;
        Ok(())
    }
}
