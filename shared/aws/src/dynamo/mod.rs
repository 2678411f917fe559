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
//! | migration (bulk import) | `BULK#<user>`            | `BULK#<id, 20 digits>` |
//!
//! Content chunks are `content`'s: the records themselves are in S3.

//!
//! One file per port: `users.rs`, `projects.rs`, `jobs.rs`; the keys of
//! the table above are built in `keys.rs`.

mod jobs;
pub(crate) mod keys;
mod projects;
mod users;

use std::collections::HashMap;

use aws_sdk_dynamodb::error::DisplayErrorContext;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, DeleteRequest, KeySchemaElement, KeyType,
    Put, ReturnValue, ScalarAttributeType, TransactWriteItem, WriteRequest,
};
use aws_sdk_dynamodb::Client;
use serde::de::DeserializeOwned;
use serde::Serialize;

use shared::{Error, Result};

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

pub(super) fn data_of<T: DeserializeOwned>(item: &Item) -> Result<T> {
    let data = get_s(item, "data").ok_or_else(|| Error::Storage("item without data".into()))?;
    serde_json::from_str(data).map_err(Error::storage)
}

pub(super) fn with_data(mut item: Item, value: &impl Serialize) -> Result<Item> {
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
    pub(super) export_retention: std::time::Duration,
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
    pub(super) async fn indexed_id(&self, pk: &str, sk: &str) -> Result<Option<u64>> {
        Ok(self
            .get_item(pk, sk)
            .await?
            .and_then(|index| get_n(&index, "id")))
    }

    pub(super) async fn get_data<T: DeserializeOwned>(
        &self,
        pk: &str,
        sk: &str,
    ) -> Result<Option<T>> {
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

    pub(super) async fn next_id(&self, counter: &str) -> Result<u64> {
        let output = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(keys::counter(counter), "COUNTER")))
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
    pub(super) async fn update_versioned<T: Serialize + DeserializeOwned>(
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
    pub(super) async fn put_all(&self, puts: Vec<(Item, Option<&str>)>) -> Result<bool> {
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
