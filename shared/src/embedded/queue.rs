//! A durable queue in the embedded database. Messages survive restarts; a
//! message received but not acknowledged becomes visible again after its
//! visibility timeout, or at once when the server restarts.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redb::{ReadableTable, ReadableTableMetadata, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use super::Db;
use crate::domain::Message;
use crate::ports::{Delivery, Queue};
use crate::{Error, Result};

const QUEUE: TableDefinition<u64, &[u8]> = TableDefinition::new("queue");
const QUEUE_SEQ: TableDefinition<&str, u64> = TableDefinition::new("queue_seq");

#[derive(Serialize, Deserialize)]
struct Entry {
    message: Message,
    visible_at_ms: i64,
    receive_count: u32,
}

pub(super) fn create_tables(txn: &WriteTransaction) -> Result<()> {
    txn.open_table(QUEUE)?;
    txn.open_table(QUEUE_SEQ)?;
    Ok(())
}

pub struct EmbeddedQueue {
    db: Db,
    arrived: Arc<Notify>,
}

fn now_ms() -> i64 {
    crate::domain::now().timestamp_millis()
}

impl EmbeddedQueue {
    pub(super) fn open(db: Db) -> Result<Self> {
        // Only one process opens the database, so anything in flight belongs
        // to a process that is gone: make it visible again now.
        db.write_now(|txn| {
            let mut queue = txn.open_table(QUEUE)?;
            let mut in_flight = Vec::new();
            for item in queue.iter()? {
                let (seq, bytes) = item?;
                let entry: Entry = serde_json::from_slice(bytes.value()).map_err(Error::storage)?;
                if entry.visible_at_ms > 0 {
                    in_flight.push((seq.value(), entry));
                }
            }
            for (seq, mut entry) in in_flight {
                entry.visible_at_ms = 0;
                let bytes = serde_json::to_vec(&entry).map_err(Error::internal)?;
                queue.insert(seq, bytes.as_slice())?;
            }
            Ok(())
        })?;
        Ok(EmbeddedQueue {
            db,
            arrived: Arc::new(Notify::new()),
        })
    }

    /// Resolves when a message may have arrived.
    pub async fn wait_for_message(&self, at_most: Duration) {
        let _ = tokio::time::timeout(at_most, self.arrived.notified()).await;
    }

    /// Messages waiting or in flight.
    pub async fn len(&self) -> Result<u64> {
        self.db
            .read(|txn| txn.open_table(QUEUE)?.len().map_err(Error::storage))
            .await
    }

    pub async fn is_empty(&self) -> Result<bool> {
        Ok(self.len().await? == 0)
    }
}

fn parse_receipt(receipt: &str) -> Result<u64> {
    receipt
        .parse()
        .map_err(|_| Error::Internal(format!("invalid receipt {receipt:?}")))
}

/// SQS's longest delay, kept here too.
const MAX_DELAY: Duration = Duration::from_secs(900);

#[async_trait]
impl Queue for EmbeddedQueue {
    async fn send(&self, messages: &[Message]) -> Result<()> {
        self.send_later(messages, Duration::ZERO).await
    }

    async fn send_later(&self, messages: &[Message], delay: Duration) -> Result<()> {
        let messages = messages.to_vec();
        let visible_at_ms = if delay.is_zero() {
            0
        } else {
            now_ms() + delay.min(MAX_DELAY).as_millis() as i64
        };
        self.db
            .write(move |txn| {
                let mut seqs = txn.open_table(QUEUE_SEQ)?;
                let mut next = seqs.get("next")?.map_or(0, |v| v.value());
                let mut queue = txn.open_table(QUEUE)?;
                for message in messages {
                    next += 1;
                    let entry = Entry {
                        message,
                        visible_at_ms,
                        receive_count: 0,
                    };
                    let bytes = serde_json::to_vec(&entry).map_err(Error::internal)?;
                    queue.insert(next, bytes.as_slice())?;
                }
                seqs.insert("next", next)?;
                Ok(())
            })
            .await?;
        self.arrived.notify_waiters();
        Ok(())
    }

    async fn receive(&self, max: usize, visibility: Duration) -> Result<Vec<Delivery>> {
        self.db
            .write(move |txn| {
                let mut queue = txn.open_table(QUEUE)?;
                let now = now_ms();
                let mut taken = Vec::new();
                for item in queue.iter()? {
                    let (seq, bytes) = item?;
                    let entry: Entry =
                        serde_json::from_slice(bytes.value()).map_err(Error::storage)?;
                    if entry.visible_at_ms <= now {
                        taken.push((seq.value(), entry));
                        if taken.len() == max {
                            break;
                        }
                    }
                }
                let mut deliveries = Vec::new();
                for (seq, mut entry) in taken {
                    entry.visible_at_ms = now + visibility.as_millis() as i64;
                    entry.receive_count += 1;
                    let bytes = serde_json::to_vec(&entry).map_err(Error::internal)?;
                    queue.insert(seq, bytes.as_slice())?;
                    deliveries.push(Delivery {
                        message: entry.message,
                        receipt: seq.to_string(),
                        receive_count: entry.receive_count,
                    });
                }
                Ok(deliveries)
            })
            .await
    }

    async fn ack(&self, receipt: &str) -> Result<()> {
        let seq = parse_receipt(receipt)?;
        self.db
            .write(move |txn| {
                txn.open_table(QUEUE)?.remove(seq)?;
                Ok(())
            })
            .await
    }

    async fn retry(&self, receipt: &str, delay: Duration) -> Result<()> {
        let seq = parse_receipt(receipt)?;
        self.db
            .write(move |txn| {
                let mut queue = txn.open_table(QUEUE)?;
                let Some(bytes) = queue.get(seq)? else {
                    return Ok(());
                };
                let mut entry: Entry =
                    serde_json::from_slice(bytes.value()).map_err(Error::storage)?;
                drop(bytes);
                entry.visible_at_ms = now_ms() + delay.as_millis() as i64;
                let bytes = serde_json::to_vec(&entry).map_err(Error::internal)?;
                queue.insert(seq, bytes.as_slice())?;
                Ok(())
            })
            .await
    }
}
