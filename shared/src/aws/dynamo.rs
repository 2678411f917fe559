//! Users, projects, jobs and content manifests in one DynamoDB table (`pk`, `sk`).
//!
//! | item                 | pk                          | sk               |
//! | -------------------- | --------------------------- | ---------------- |
//! | counter              | `COUNTER#<name>`            | `COUNTER`        |
//! | user / by username   | `USER#<id>` / `USERNAME#<n>`| `USER`           |
//! | token (by hash)      | `TOKEN#<sha256 hex>`        | `TOKEN`          |
//! | token id → hash      | `TOKENID#<id>`              | `TOKEN`          |
//! | namespace / by path  | `NS#<id>` / `NSPATH#<path>` | `NS`             |
//! | project / by path    | `PROJECT#<id>` / `PATH#<p>` | `PROJECT`        |
//! | project lists        | `PROJECTS` / `OWNER#<user>` | `PROJECT#<id, 20 digits>` |
//! | export schedules     | `SCHEDULES`                 | `PROJECT#<id, 20 digits>` |
//! | deleted projects     | `DELETED`                   | `PROJECT#<id, 20 digits>` |
//! | latest job pointers  | `PROJECT#<id>`              | `LATEST#<kind>`, `FINISHED#<kind>` |
//! | project's jobs       | `PROJECT#<id>`              | `JOBS#<kind>#<created µs>#<job>` |
//! | job                  | `JOB#<id>`                  | `JOB`            |
//! | unfinished jobs      | `ACTIVE`                    | `JOB#<id>`       |
//! | content chunk        | `GEN#<generation>`          | `CHUNK#<rel>#<first seq, 20 digits>` |
//! | relation export part | `RELEXP#<project>`          | `<rel>#<batch, 10 digits>` |
//! | rate limit window    | `RATE#<user>#<action>`      | window start     |
//!
//! Content chunks are `content`'s: the records themselves are in S3.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::error::DisplayErrorContext;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, Delete, DeleteRequest, KeySchemaElement,
    KeyType, Put, PutRequest, ReturnValue, ScalarAttributeType, TransactWriteItem, WriteRequest,
};
use aws_sdk_dynamodb::Client;
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::domain::{
    now, DeletedProject, ExportSchedule, Job, JobKind, JobStatus, JobUpdate, Namespace,
    NamespaceId, NewProject, Project, ProjectId, RelationExportPart, Token, User, UserId, When,
};
use crate::ports::{JobStore, ProjectStore, UserStore};
use crate::{Error, Result};

pub(super) type Item = HashMap<String, AttributeValue>;

pub(super) fn ddb_error(err: impl std::error::Error) -> Error {
    Error::Storage(format!("DynamoDB: {}", DisplayErrorContext(err)))
}

pub(super) fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

pub(super) fn n(value: u64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

pub(super) fn key(pk: impl Into<String>, sk: impl Into<String>) -> Item {
    HashMap::from([("pk".to_owned(), s(pk)), ("sk".to_owned(), s(sk))])
}

pub(super) fn seq_key(seq: u64) -> String {
    format!("{seq:020}")
}

/// The batch request deleting a queried item (by its `pk` and `sk`).
pub(super) fn delete_of(item: &Item) -> Result<WriteRequest> {
    let key = key(
        get_s(item, "pk").unwrap_or_default(),
        get_s(item, "sk").unwrap_or_default(),
    );
    let request = DeleteRequest::builder()
        .set_key(Some(key))
        .build()
        .map_err(Error::internal)?;
    Ok(WriteRequest::builder().delete_request(request).build())
}

pub(super) fn get_s<'a>(item: &'a Item, name: &str) -> Option<&'a str> {
    item.get(name)
        .and_then(|v| v.as_s().ok())
        .map(String::as_str)
}

pub(super) fn get_n(item: &Item, name: &str) -> Option<u64> {
    item.get(name)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
}

fn data_of<T: DeserializeOwned>(item: &Item) -> Result<T> {
    let data = get_s(item, "data").ok_or_else(|| Error::Storage("item without data".into()))?;
    serde_json::from_str(data).map_err(Error::storage)
}

fn with_data(mut item: Item, value: &impl Serialize) -> Result<Item> {
    item.insert(
        "data".into(),
        s(serde_json::to_string(value).map_err(Error::internal)?),
    );
    Ok(item)
}

pub(super) async fn create_table(client: &Client, table: &str) -> Result<()> {
    let attribute = |name: &str| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .map_err(Error::internal)
    };
    let schema = |name: &str, kind| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(kind)
            .build()
            .map_err(Error::internal)
    };
    client
        .create_table()
        .table_name(table)
        .attribute_definitions(attribute("pk")?)
        .attribute_definitions(attribute("sk")?)
        .key_schema(schema("pk", KeyType::Hash)?)
        .key_schema(schema("sk", KeyType::Range)?)
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .map_err(ddb_error)?;
    Ok(())
}

pub struct DynamoStore {
    pub(super) client: Client,
    pub(super) table: String,
    /// Finished export jobs expire (DynamoDB TTL on `expires_at`) with their
    /// archives.
    export_retention: std::time::Duration,
}

impl DynamoStore {
    pub fn new(client: Client, table: &str, export_retention: std::time::Duration) -> Self {
        DynamoStore {
            client,
            table: table.to_owned(),
            export_retention,
        }
    }

    pub(super) async fn get_item(&self, pk: &str, sk: &str) -> Result<Option<Item>> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(pk, sk)))
            .consistent_read(true)
            .send()
            .await
            .map_err(ddb_error)?;
        Ok(output.item)
    }

    /// The id an index item (username, namespace path, project path) points to.
    async fn indexed_id(&self, pk: &str, sk: &str) -> Result<Option<u64>> {
        Ok(self
            .get_item(pk, sk)
            .await?
            .and_then(|index| get_n(&index, "id")))
    }

    async fn get_data<T: DeserializeOwned>(&self, pk: &str, sk: &str) -> Result<Option<T>> {
        self.get_item(pk, sk)
            .await?
            .map(|item| data_of(&item))
            .transpose()
    }

    pub(super) async fn put_item(&self, item: Item) -> Result<()> {
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(ddb_error)?;
        Ok(())
    }

    async fn next_id(&self, counter: &str) -> Result<u64> {
        let output = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(format!("COUNTER#{counter}"), "COUNTER")))
            .update_expression("ADD #value :one")
            .expression_attribute_names("#value", "value")
            .expression_attribute_values(":one", n(1))
            .return_values(ReturnValue::UpdatedNew)
            .send()
            .await
            .map_err(ddb_error)?;
        output
            .attributes
            .as_ref()
            .and_then(|a| get_n(a, "value"))
            .ok_or_else(|| Error::Storage("counter without value".into()))
    }

    /// Read, change and write back a versioned item, optimistically: if
    /// someone wrote in between, read again. `change` returns `None` to
    /// leave the item as it is (the call then returns `None`), or the extra
    /// attributes to write beside the data.
    async fn update_versioned<T: Serialize + DeserializeOwned>(
        &self,
        pk: &str,
        sk: &str,
        mut change: impl FnMut(&mut T) -> Option<Item>,
    ) -> Result<Option<T>> {
        loop {
            let Some(item) = self.get_item(pk, sk).await? else {
                return Ok(None);
            };
            let mut value: T = data_of(&item)?;
            let version = get_n(&item, "version").unwrap_or(0);
            let Some(extra) = change(&mut value) else {
                return Ok(None);
            };
            let mut next = with_data(key(pk, sk), &value)?;
            next.extend(extra);
            next.insert("version".into(), n(version + 1));
            let written = self
                .client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(next))
                .condition_expression("version = :version")
                .expression_attribute_values(":version", n(version))
                .send()
                .await;
            match written {
                Ok(_) => return Ok(Some(value)),
                Err(err) => match err.into_service_error() {
                    e if e.is_conditional_check_failed_exception() => continue,
                    e => return Err(ddb_error(e)),
                },
            }
        }
    }

    /// All puts or none; `Ok(false)` if a condition failed.
    async fn put_all(&self, puts: Vec<(Item, Option<&str>)>) -> Result<bool> {
        let items = puts
            .into_iter()
            .map(|(item, condition)| {
                let put = Put::builder()
                    .table_name(&self.table)
                    .set_item(Some(item))
                    .set_condition_expression(condition.map(str::to_owned))
                    .build()
                    .map_err(Error::internal)?;
                Ok(TransactWriteItem::builder().put(put).build())
            })
            .collect::<Result<Vec<_>>>()?;
        match self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(err) => match err.into_service_error() {
                e if e.is_transaction_canceled_exception() => Ok(false),
                e => Err(ddb_error(e)),
            },
        }
    }

    /// Writes items in chunks of 25, retrying what DynamoDB left unprocessed.
    pub(super) async fn batch_write(&self, requests: Vec<WriteRequest>) -> Result<()> {
        for chunk in requests.chunks(25) {
            let mut pending = HashMap::from([(self.table.clone(), chunk.to_vec())]);
            let mut attempt = 0u32;
            while !pending.values().all(Vec::is_empty) {
                let output = self
                    .client
                    .batch_write_item()
                    .set_request_items(Some(pending))
                    .send()
                    .await
                    .map_err(ddb_error)?;
                pending = output.unprocessed_items.unwrap_or_default();
                attempt += 1;
                if attempt > 1 {
                    tokio::time::sleep(std::time::Duration::from_millis(50 << attempt.min(6)))
                        .await;
                }
            }
        }
        Ok(())
    }

    /// Every item of a partition (after `after`, up to `limit`), following pages.
    pub(super) async fn query(
        &self,
        pk: &str,
        sk_prefix: Option<&str>,
        after: Option<&str>,
        limit: Option<usize>,
    ) -> Result<Vec<Item>> {
        let mut out = Vec::new();
        let mut start = None;
        loop {
            let mut request = self
                .client
                .query()
                .table_name(&self.table)
                .consistent_read(true)
                .expression_attribute_values(":pk", s(pk))
                .set_exclusive_start_key(start);
            request = match (sk_prefix, after) {
                (_, Some(after)) => request
                    .key_condition_expression("pk = :pk AND sk > :after")
                    .expression_attribute_values(":after", s(after)),
                (Some(prefix), None) => request
                    .key_condition_expression("pk = :pk AND begins_with(sk, :prefix)")
                    .expression_attribute_values(":prefix", s(prefix)),
                (None, None) => request.key_condition_expression("pk = :pk"),
            };
            if let Some(limit) = limit {
                request = request.limit((limit - out.len()) as i32);
            }
            let page = request.send().await.map_err(ddb_error)?;
            out.extend(page.items.unwrap_or_default());
            start = page.last_evaluated_key;
            if start.is_none() || limit.is_some_and(|l| out.len() >= l) {
                return Ok(out);
            }
        }
    }
}

#[async_trait]
impl UserStore for DynamoStore {
    async fn create_user(&self, username: &str, name: &str, is_admin: bool) -> Result<User> {
        let id = self.next_id("user").await?;
        let user = User {
            id,
            username: username.to_owned(),
            name: name.to_owned(),
            is_admin,
            created_at: now(),
        };
        let namespace = Namespace {
            id,
            path: username.to_owned(),
            name: name.to_owned(),
            owner_id: id,
        };
        let lookup = crate::domain::name_key(username);
        let mut by_name = key(format!("USERNAME#{lookup}"), "USER");
        by_name.insert("id".into(), n(id));
        let mut by_path = key(format!("NSPATH#{lookup}"), "NS");
        by_path.insert("id".into(), n(id));
        let unique = Some("attribute_not_exists(pk)");
        let created = self
            .put_all(vec![
                (by_name, unique),
                (by_path, unique),
                (with_data(key(format!("USER#{id}"), "USER"), &user)?, None),
                (with_data(key(format!("NS#{id}"), "NS"), &namespace)?, None),
            ])
            .await?;
        if !created {
            return Err(Error::Conflict("Username has already been taken".into()));
        }
        Ok(user)
    }

    async fn user(&self, id: UserId) -> Result<Option<User>> {
        self.get_data(&format!("USER#{id}"), "USER").await
    }

    async fn user_by_username(&self, username: &str) -> Result<Option<User>> {
        let lookup = crate::domain::name_key(username);
        let mut id = self
            .indexed_id(&format!("USERNAME#{lookup}"), "USER")
            .await?;
        if id.is_none() && lookup != username {
            // Written before names were keyed in lower case.
            id = self
                .indexed_id(&format!("USERNAME#{username}"), "USER")
                .await?;
        }
        match id {
            Some(id) => self.user(id).await,
            None => Ok(None),
        }
    }

    async fn add_token(
        &self,
        user_id: UserId,
        name: &str,
        token_hash: [u8; 32],
        expires_at: Option<DateTime<Utc>>,
    ) -> Result<Token> {
        let token = Token {
            id: self.next_id("token").await?,
            user_id,
            name: name.to_owned(),
            created_at: now(),
            expires_at,
            revoked: false,
        };
        let item = with_data(
            key(format!("TOKEN#{}", hex::encode(token_hash)), "TOKEN"),
            &token,
        )?;
        let mut by_id = key(format!("TOKENID#{}", token.id), "TOKEN");
        by_id.insert("hash".into(), s(hex::encode(token_hash)));
        self.put_all(vec![(item, None), (by_id, None)]).await?;
        Ok(token)
    }

    async fn token(&self, id: u64) -> Result<Option<Token>> {
        let Some(by_id) = self.get_item(&format!("TOKENID#{id}"), "TOKEN").await? else {
            return Ok(None);
        };
        match get_s(&by_id, "hash") {
            Some(hash) => self.get_data(&format!("TOKEN#{hash}"), "TOKEN").await,
            None => Ok(None),
        }
    }

    async fn revoke_token(&self, id: u64) -> Result<bool> {
        let Some(by_id) = self.get_item(&format!("TOKENID#{id}"), "TOKEN").await? else {
            return Ok(false);
        };
        let Some(hash) = get_s(&by_id, "hash").map(str::to_owned) else {
            return Ok(false);
        };
        let Some(mut token) = self
            .get_data::<Token>(&format!("TOKEN#{hash}"), "TOKEN")
            .await?
        else {
            return Ok(false);
        };
        token.revoked = true;
        let item = with_data(key(format!("TOKEN#{hash}"), "TOKEN"), &token)?;
        self.put_item(item).await?;
        Ok(true)
    }

    async fn token_by_hash(&self, token_hash: [u8; 32]) -> Result<Option<Token>> {
        self.get_data(&format!("TOKEN#{}", hex::encode(token_hash)), "TOKEN")
            .await
    }

    async fn namespace(&self, id: NamespaceId) -> Result<Option<Namespace>> {
        self.get_data(&format!("NS#{id}"), "NS").await
    }

    async fn namespace_by_path(&self, path: &str) -> Result<Option<Namespace>> {
        let lookup = crate::domain::name_key(path);
        let mut id = self.indexed_id(&format!("NSPATH#{lookup}"), "NS").await?;
        if id.is_none() && lookup != path {
            id = self.indexed_id(&format!("NSPATH#{path}"), "NS").await?;
        }
        match id {
            Some(id) => self.namespace(id).await,
            None => Ok(None),
        }
    }

    async fn take_rate_slot(
        &self,
        user_id: UserId,
        action: &str,
        window_start: i64,
        limit: u32,
    ) -> Result<bool> {
        let counted = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(
                format!("RATE#{user_id}#{action}"),
                window_start.to_string(),
            )))
            .update_expression("ADD hits :one SET expires_at = :expires")
            .condition_expression("attribute_not_exists(hits) OR hits < :limit")
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":limit", n(limit.into()))
            .expression_attribute_values(":expires", n(window_start.max(0) as u64 + 3600))
            .send()
            .await;
        match counted {
            Ok(_) => Ok(true),
            Err(err) => match err.into_service_error() {
                e if e.is_conditional_check_failed_exception() => Ok(false),
                e => Err(ddb_error(e)),
            },
        }
    }
}

#[async_trait]
impl ProjectStore for DynamoStore {
    async fn create_project(&self, new: NewProject) -> Result<Project> {
        let project = Project {
            id: self.next_id("project").await?,
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
        let mut by_path = key(format!("PATH#{}", project.full_path()), "PROJECT");
        by_path.insert("id".into(), n(project.id));
        let listed = |pk: String| {
            let mut item = key(pk, format!("PROJECT#{:020}", project.id));
            item.insert("id".into(), n(project.id));
            item
        };
        let created = self
            .put_all(vec![
                (by_path, Some("attribute_not_exists(pk)")),
                (
                    with_data(key(format!("PROJECT#{}", project.id), "PROJECT"), &project)?,
                    None,
                ),
                (listed("PROJECTS".into()), None),
                (listed(format!("OWNER#{}", project.owner_id)), None),
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
        self.get_data(&format!("PROJECT#{id}"), "PROJECT").await
    }

    async fn project_by_full_path(&self, full_path: &str) -> Result<Option<Project>> {
        match self
            .indexed_id(&format!("PATH#{full_path}"), "PROJECT")
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
            Some(owner) => format!("OWNER#{owner}"),
            None => "PROJECTS".to_owned(),
        };
        let index = self.query(&pk, Some("PROJECT#"), None, None).await?;
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
        let mut item = with_data(key(format!("PROJECT#{}", merged.id), "PROJECT"), &merged)?;
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
        let item = with_data(key("SCHEDULES", schedule_sk(schedule.project_id)), schedule)?;
        self.put_item(item).await
    }

    async fn export_schedule(&self, project_id: ProjectId) -> Result<Option<ExportSchedule>> {
        self.get_data("SCHEDULES", &schedule_sk(project_id)).await
    }

    async fn delete_export_schedule(&self, project_id: ProjectId) -> Result<bool> {
        let output = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key("SCHEDULES", schedule_sk(project_id))))
            .return_values(ReturnValue::AllOld)
            .send()
            .await
            .map_err(ddb_error)?;
        Ok(output.attributes.is_some_and(|a| !a.is_empty()))
    }

    async fn export_schedules(&self) -> Result<Vec<ExportSchedule>> {
        self.query("SCHEDULES", Some("PROJECT#"), None, None)
            .await?
            .iter()
            .map(data_of)
            .collect()
    }

    async fn delete_project(&self, id: ProjectId) -> Result<Option<Project>> {
        let pk = format!("PROJECT#{id}");
        loop {
            let Some(item) = self.get_item(&pk, "PROJECT").await? else {
                return Ok(None);
            };
            let project: Project = data_of(&item)?;
            let as_read = item.get("data").cloned().unwrap_or_else(|| s(""));
            let listed = format!("PROJECT#{id:020}");
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
                    format!("PATH#{}", project.full_path()),
                    "PROJECT".to_owned(),
                ),
                ("PROJECTS".to_owned(), listed.clone()),
                (format!("OWNER#{}", project.owner_id), listed.clone()),
                ("SCHEDULES".to_owned(), schedule_sk(id)),
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
                .set_item(Some(with_data(key("DELETED", listed), &deleted)?))
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
        self.get_data("DELETED", &format!("PROJECT#{id:020}")).await
    }

    async fn deleted_projects(&self, limit: usize) -> Result<Vec<DeletedProject>> {
        let mut all = self
            .query("DELETED", Some("PROJECT#"), None, None)
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
            .set_key(Some(key("DELETED", format!("PROJECT#{id:020}"))))
            .send()
            .await
            .map_err(ddb_error)?;
        Ok(())
    }
}

fn pointer_sk(prefix: &str, kind: JobKind) -> String {
    format!("{prefix}#{}", kind.as_str())
}

#[async_trait]
impl JobStore for DynamoStore {
    async fn create_job(&self, job: &Job) -> Result<()> {
        let mut item = with_data(key(format!("JOB#{}", job.id), "JOB"), job)?;
        item.insert("version".into(), n(0));
        let mut pointer = key(
            format!("PROJECT#{}", job.project_id),
            pointer_sk("LATEST", job.kind),
        );
        pointer.insert("job_id".into(), s(&job.id));
        let mut listed = key(
            format!("PROJECT#{}", job.project_id),
            project_jobs_sk(job.kind, job.created_at.timestamp_micros(), &job.id),
        );
        listed.insert("job_id".into(), s(&job.id));
        let mut active = key("ACTIVE", format!("JOB#{}", job.id));
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
        self.get_data(&format!("JOB#{id}"), "JOB").await
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
            .update_versioned(&format!("JOB#{id}"), "JOB", |job: &mut Job| {
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
                .set_key(Some(key("ACTIVE", format!("JOB#{}", job.id))))
                .send()
                .await
                .map_err(ddb_error)?;
        }
        if let Some(job) = job.as_ref().filter(|_| to == JobStatus::Finished) {
            let mut pointer = key(
                format!("PROJECT#{}", job.project_id),
                pointer_sk("FINISHED", job.kind),
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
        limit: usize,
    ) -> Result<Vec<Job>> {
        let page = self
            .client
            .query()
            .table_name(&self.table)
            .consistent_read(true)
            .key_condition_expression("pk = :pk AND begins_with(sk, :prefix)")
            .expression_attribute_values(":pk", s(format!("PROJECT#{project_id}")))
            .expression_attribute_values(":prefix", s(format!("JOBS#{}#", kind.as_str())))
            .scan_index_forward(false)
            .limit(limit.clamp(1, 1000) as i32)
            .send()
            .await
            .map_err(ddb_error)?;
        let mut jobs = Vec::new();
        for item in page.items.unwrap_or_default() {
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
        for item in self.query("ACTIVE", Some("JOB#"), None, None).await? {
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
            .query(&format!("PROJECT#{project_id}"), Some("JOBS#"), None, None)
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
        let pk = format!("PROJECT#{project_id}");
        let mut deletes = Vec::new();
        for item in self.query(&pk, None, None, None).await? {
            // The project's own item, if it is there, is not a job's.
            if get_s(&item, "sk") == Some("PROJECT") {
                continue;
            }
            if let Some(id) = get_s(&item, "job_id")
                .filter(|_| get_s(&item, "sk").is_some_and(|sk| sk.starts_with("JOBS#")))
            {
                deletes.push(delete_of(&key(format!("JOB#{id}"), "JOB"))?);
                deletes.push(delete_of(&key("ACTIVE", format!("JOB#{id}")))?);
            }
            deletes.push(delete_of(&item)?);
        }
        for part in self
            .query(&format!("RELEXP#{project_id}"), None, None, None)
            .await?
        {
            deletes.push(delete_of(&part)?);
        }
        self.batch_write(deletes).await
    }

    async fn next_number(&self, sequence: &str) -> Result<u64> {
        self.next_id(&format!("sequence:{sequence}")).await
    }

    async fn latest_job(&self, project_id: ProjectId, kind: JobKind) -> Result<Option<Job>> {
        self.pointed_job(project_id, &pointer_sk("LATEST", kind))
            .await
    }

    async fn latest_finished_job(
        &self,
        project_id: ProjectId,
        kind: JobKind,
    ) -> Result<Option<Job>> {
        self.pointed_job(project_id, &pointer_sk("FINISHED", kind))
            .await
    }

    async fn replace_relation_export(
        &self,
        project_id: ProjectId,
        parts: Vec<RelationExportPart>,
    ) -> Result<()> {
        // Not one transaction (a run may have thousands of parts): a worker
        // holding a message of the old run finds its run id gone and stops.
        let pk = format!("RELEXP#{project_id}");
        let old = self.query(&pk, None, None, None).await?;
        let deletes = old.iter().map(delete_of).collect::<Result<Vec<_>>>()?;
        self.batch_write(deletes).await?;
        let puts = parts
            .iter()
            .map(|part| {
                let mut item = with_data(key(&pk, part_sk(&part.relation, part.batch)), part)?;
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
            .query(&format!("RELEXP#{project_id}"), None, None, None)
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
                .expression_attribute_values(":pk", s(format!("RELEXP#{project_id}")))
                .expression_attribute_values(":from", s(part_sk(relation, batch)))
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
        let (pk, sk) = (format!("RELEXP#{project_id}"), part_sk(relation, batch));
        self.update_versioned(&pk, &sk, |part: &mut RelationExportPart| {
            part.may_move(run_id, from).then(|| {
                part.apply(to, update.clone());
                Item::new()
            })
        })
        .await
    }
}

fn schedule_sk(project_id: ProjectId) -> String {
    format!("PROJECT#{project_id:020}")
}

/// A project's jobs of a kind, in creation order.
fn project_jobs_sk(kind: JobKind, created_micros: i64, job_id: &str) -> String {
    format!(
        "JOBS#{}#{:020}#{job_id}",
        kind.as_str(),
        created_micros.max(0)
    )
}

fn part_sk(relation: &str, batch: Option<u32>) -> String {
    format!("{relation}#{:010}", batch.unwrap_or(0))
}

impl DynamoStore {
    async fn pointed_job(&self, project_id: ProjectId, sk: &str) -> Result<Option<Job>> {
        let Some(pointer) = self.get_item(&format!("PROJECT#{project_id}"), sk).await? else {
            return Ok(None);
        };
        match get_s(&pointer, "job_id") {
            Some(job_id) => self.job(job_id).await,
            None => Ok(None),
        }
    }
}
