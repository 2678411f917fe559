//! The work queue on SQS: ids in messages, never payloads.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::{MessageSystemAttributeName, SendMessageBatchRequestEntry};
use aws_sdk_sqs::Client;

use shared::domain::Message;
use shared::ports::{Delivery, Queue};
use shared::{Error, Result};

pub struct SqsQueue {
    client: Client,
    queue_url: String,
}

fn sqs_error(err: impl std::error::Error) -> Error {
    Error::Storage(format!("SQS: {}", DisplayErrorContext(err)))
}

impl SqsQueue {
    pub fn new(client: Client, queue_url: &str) -> Self {
        SqsQueue {
            client,
            queue_url: queue_url.to_owned(),
        }
    }
}

/// Reads a message body; `None` for something that is not ours.
pub fn parse_message(body: &str) -> Option<Message> {
    serde_json::from_str(body).ok()
}

#[async_trait]
impl Queue for SqsQueue {
    async fn send(&self, messages: &[Message]) -> Result<()> {
        self.send_later(messages, Duration::ZERO).await
    }

    async fn send_later(&self, messages: &[Message], delay: Duration) -> Result<()> {
        // SQS's longest delay.
        let delay_seconds = delay.as_secs().min(900) as i32;
        // SendMessageBatch takes at most 10 entries.
        for chunk in messages.chunks(10) {
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(i, message)| {
                    SendMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .message_body(serde_json::to_string(message).map_err(Error::internal)?)
                        .set_delay_seconds((delay_seconds > 0).then_some(delay_seconds))
                        .build()
                        .map_err(Error::internal)
                })
                .collect::<Result<Vec<_>>>()?;
            let sent = self
                .client
                .send_message_batch()
                .queue_url(&self.queue_url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(sqs_error)?;
            if let Some(failed) = sent.failed().first() {
                return Err(Error::Storage(format!(
                    "SQS refused a message: {}",
                    failed.message().unwrap_or(failed.code())
                )));
            }
        }
        Ok(())
    }

    async fn receive(&self, max: usize, visibility: Duration) -> Result<Vec<Delivery>> {
        let received = self
            .client
            .receive_message()
            .queue_url(&self.queue_url)
            .max_number_of_messages(max.clamp(1, 10) as i32)
            .visibility_timeout(visibility.as_secs() as i32)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .send()
            .await
            .map_err(sqs_error)?;
        let mut deliveries = Vec::new();
        for message in received.messages() {
            let receipt = message.receipt_handle().unwrap_or_default().to_owned();
            let Some(parsed) = message.body().and_then(parse_message) else {
                tracing::warn!("dropping a message that is not ours");
                self.ack(&receipt).await?;
                continue;
            };
            let receive_count = message
                .attributes()
                .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                .and_then(|v| v.parse().ok())
                .unwrap_or(1);
            deliveries.push(Delivery {
                message: parsed,
                receipt,
                receive_count,
            });
        }
        Ok(deliveries)
    }

    async fn ack(&self, receipt: &str) -> Result<()> {
        self.client
            .delete_message()
            .queue_url(&self.queue_url)
            .receipt_handle(receipt)
            .send()
            .await
            .map_err(sqs_error)?;
        Ok(())
    }

    async fn retry(&self, receipt: &str, delay: Duration) -> Result<()> {
        self.client
            .change_message_visibility()
            .queue_url(&self.queue_url)
            .receipt_handle(receipt)
            .visibility_timeout(delay.as_secs() as i32)
            .send()
            .await
            .map_err(sqs_error)?;
        Ok(())
    }
}
