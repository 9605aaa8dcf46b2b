//! SQS: the ingest queue, a poller that produces the processor Lambda's event
//! shape for `eye serve --backend aws`, and the dead-letter queue tools. The
//! trigger's mapping itself is in [`crate::lambda::sqs_trigger`].

use std::collections::HashSet;
use std::sync::Arc;

use async_trait::async_trait;
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use aws_sdk_sqs::types::{
    DeleteMessageBatchRequestEntry, MessageSystemAttributeName, QueueAttributeName,
    SendMessageBatchRequestEntry,
};

use super::{CallCounts, classify};
use crate::domain::QueuedBatch;
use crate::ports::{BackendError, DeadLetter, DeadLetters, EventQueue};

/// Largest message body The Eye sends: under 256 KiB, the classic SQS limit
/// that emulators still enforce, with room for the batch call's framing.
pub const MAX_MESSAGE_BYTES: usize = 250 * 1024;
/// Largest total payload of one `SendMessageBatch` call.
pub const MAX_BATCH_BYTES: usize = 256 * 1024;
/// Most entries in one `SendMessageBatch` call.
pub const MAX_BATCH_ENTRIES: usize = 10;

/// The ingest queue on SQS.
#[derive(Clone)]
pub struct SqsQueue {
    client: aws_sdk_sqs::Client,
    queue_url: String,
    counts: Arc<CallCounts>,
}

impl SqsQueue {
    /// A queue at `queue_url`.
    pub fn new(
        client: aws_sdk_sqs::Client,
        queue_url: impl Into<String>,
        counts: Arc<CallCounts>,
    ) -> Self {
        Self {
            client,
            queue_url: queue_url.into(),
            counts,
        }
    }
}

/// Groups message bodies into `SendMessageBatch` calls: at most
/// [`MAX_BATCH_ENTRIES`] entries and [`MAX_BATCH_BYTES`] in each.
pub fn group_into_calls(sizes: &[usize]) -> Vec<std::ops::Range<usize>> {
    let mut calls = Vec::new();
    let mut start = 0;
    let mut bytes = 0;
    for (i, &size) in sizes.iter().enumerate() {
        if i > start && (i - start == MAX_BATCH_ENTRIES || bytes + size > MAX_BATCH_BYTES) {
            calls.push(start..i);
            start = i;
            bytes = 0;
        }
        bytes += size;
    }
    if start < sizes.len() {
        calls.push(start..sizes.len());
    }
    calls
}

#[async_trait]
impl EventQueue for SqsQueue {
    async fn enqueue(&self, batch: &QueuedBatch<'_>) -> Result<(), BackendError> {
        let messages = batch.encode(MAX_MESSAGE_BYTES);
        let sizes: Vec<usize> = messages.iter().map(|m| m.body.len()).collect();
        for call in group_into_calls(&sizes) {
            let mut request = self.client.send_message_batch().queue_url(&self.queue_url);
            for (n, m) in messages[call.clone()].iter().enumerate() {
                let entry = SendMessageBatchRequestEntry::builder()
                    .id(n.to_string())
                    .message_body(&m.body)
                    .build()
                    .map_err(|e| BackendError::Failed(format!("building SendMessageBatch: {e}")))?;
                request = request.entries(entry);
            }
            let out = request
                .send()
                .await
                .map_err(|e| classify("SendMessageBatch", &e))?;
            CallCounts::add(&self.counts.sqs_send_batches, 1);
            if let Some(f) = out.failed().first() {
                // Some messages may have gone in: the client's retry is safe,
                // because the same events get the same keys.
                return Err(BackendError::Failed(format!(
                    "SendMessageBatch refused {} message(s): {}: {}",
                    out.failed().len(),
                    f.code(),
                    f.message().unwrap_or("")
                )));
            }
            let sent = &messages[call];
            CallCounts::add(&self.counts.sqs_messages, sent.len() as u64);
            CallCounts::add(
                &self.counts.sqs_events,
                sent.iter().map(|m| m.events as u64).sum(),
            );
        }
        Ok(())
    }
}

/// Receives from SQS and hands out batches in the Lambda's event shape.
#[derive(Clone)]
pub struct SqsPoller {
    client: aws_sdk_sqs::Client,
    queue_url: String,
    queue_arn: String,
    region: String,
    counts: Arc<CallCounts>,
}

impl SqsPoller {
    /// A poller of `queue_url`.
    pub async fn new(
        client: aws_sdk_sqs::Client,
        queue_url: impl Into<String>,
        region: &str,
    ) -> Result<Self, BackendError> {
        let queue_url = queue_url.into();
        let queue_arn = queue_arn(&client, &queue_url).await?;
        Ok(Self {
            client,
            queue_url,
            queue_arn,
            region: region.to_owned(),
            counts: Arc::default(),
        })
    }

    /// Counts this poller's calls in `counts`.
    pub fn with_counts(mut self, counts: Arc<CallCounts>) -> Self {
        self.counts = counts;
        self
    }

    /// Long-polls up to 10 messages as an [`SqsEvent`], exactly as the Lambda
    /// trigger would deliver them.
    pub async fn poll(&self, wait_secs: i32) -> Result<SqsEvent, BackendError> {
        let out = self
            .client
            .receive_message()
            .queue_url(&self.queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(wait_secs)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .send()
            .await
            .map_err(|e| classify("ReceiveMessage", &e))?;
        CallCounts::add(&self.counts.sqs_receives, 1);
        let records: Vec<serde_json::Value> = out
            .messages()
            .iter()
            .map(|m| {
                let attributes: serde_json::Map<String, serde_json::Value> = m
                    .attributes()
                    .map(|a| {
                        a.iter()
                            .map(|(k, v)| {
                                (k.as_str().to_owned(), serde_json::Value::from(v.as_str()))
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                serde_json::json!({
                    "messageId": m.message_id(),
                    "receiptHandle": m.receipt_handle(),
                    "body": m.body(),
                    "attributes": attributes,
                    "messageAttributes": {},
                    "md5OfBody": m.md5_of_body(),
                    "eventSource": "aws:sqs",
                    "eventSourceARN": self.queue_arn,
                    "awsRegion": self.region,
                })
            })
            .collect();
        serde_json::from_value(serde_json::json!({ "Records": records }))
            .map_err(|e| BackendError::Failed(format!("shaping the SQS event: {e}")))
    }

    /// Deletes the messages of `event` that are not listed as failures; the
    /// failed ones reappear after the visibility timeout, as with the Lambda.
    pub async fn delete_done(
        &self,
        event: &SqsEvent,
        response: &SqsBatchResponse,
    ) -> Result<(), BackendError> {
        let failed: HashSet<&str> = response
            .batch_item_failures
            .iter()
            .map(|f| f.item_identifier.as_str())
            .collect();
        let done: Vec<&str> = event
            .records
            .iter()
            .filter(|r| !failed.contains(r.message_id.as_deref().unwrap_or("")))
            .filter_map(|r| r.receipt_handle.as_deref())
            .collect();
        delete_batch(&self.client, &self.queue_url, &done, &self.counts).await
    }
}

/// Deletes `handles` in DeleteMessageBatch calls of up to 10, counting each call.
async fn delete_batch(
    client: &aws_sdk_sqs::Client,
    queue_url: &str,
    handles: &[&str],
    counts: &CallCounts,
) -> Result<(), BackendError> {
    for chunk in handles.chunks(MAX_BATCH_ENTRIES) {
        let mut request = client.delete_message_batch().queue_url(queue_url);
        for (i, handle) in chunk.iter().enumerate() {
            request = request.entries(
                DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(*handle)
                    .build()
                    .map_err(|e| {
                        BackendError::Failed(format!("building DeleteMessageBatch: {e}"))
                    })?,
            );
        }
        CallCounts::add(&counts.sqs_deletes, 1);
        request
            .send()
            .await
            .map_err(|e| classify("DeleteMessageBatch", &e))?;
    }
    Ok(())
}

/// A queue's ARN.
pub async fn queue_arn(
    client: &aws_sdk_sqs::Client,
    queue_url: &str,
) -> Result<String, BackendError> {
    client
        .get_queue_attributes()
        .queue_url(queue_url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(|e| classify("GetQueueAttributes", &e))?
        .attributes()
        .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
        .ok_or_else(|| BackendError::Failed(format!("queue {queue_url} has no ARN")))
}

/// The dead-letter queue of an ingest queue.
#[derive(Clone)]
pub struct SqsDeadLetters {
    client: aws_sdk_sqs::Client,
    dlq_url: String,
    queue_url: String,
}

impl SqsDeadLetters {
    /// The dead letters at `dlq_url`, which a redrive sends back to `queue_url`.
    pub fn new(
        client: aws_sdk_sqs::Client,
        dlq_url: impl Into<String>,
        queue_url: impl Into<String>,
    ) -> Self {
        Self {
            client,
            dlq_url: dlq_url.into(),
            queue_url: queue_url.into(),
        }
    }
}

#[async_trait]
impl DeadLetters for SqsDeadLetters {
    /// Each message is made visible again at once; `attempts` is its
    /// receive count on the dead-letter queue.
    async fn list_dead_letters(&self, max: usize) -> Result<Vec<DeadLetter>, BackendError> {
        let (client, dlq_url) = (&self.client, &self.dlq_url);
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        let mut empty_rounds = 0;
        while out.len() < max && empty_rounds < 3 {
            let got = client
                .receive_message()
                .queue_url(dlq_url)
                .max_number_of_messages(10)
                .visibility_timeout(0)
                .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
                .send()
                .await
                .map_err(|e| classify("ReceiveMessage", &e))?;
            let mut new = 0;
            for m in got.messages() {
                let id = m.message_id().unwrap_or_default().to_owned();
                if seen.insert(id.clone()) {
                    new += 1;
                    out.push(DeadLetter {
                        id,
                        body: m.body().unwrap_or_default().to_owned(),
                        attempts: m
                            .attributes()
                            .and_then(|a| {
                                a.get(&MessageSystemAttributeName::ApproximateReceiveCount)
                            })
                            .and_then(|n| n.parse().ok())
                            .unwrap_or(0),
                        events: None,
                        last_error: None,
                        failed_at: None,
                    });
                }
            }
            empty_rounds = if new == 0 { empty_rounds + 1 } else { 0 };
        }
        out.truncate(max);
        Ok(out)
    }

    /// Send, then delete: a crash in between only repeats a message, and
    /// repeated events are stored once.
    async fn redrive_dead_letters(&self) -> Result<usize, BackendError> {
        let (client, dlq_url, queue_url) = (&self.client, &self.dlq_url, &self.queue_url);
        let mut moved = 0;
        loop {
            let got = client
                .receive_message()
                .queue_url(dlq_url)
                .max_number_of_messages(10)
                .visibility_timeout(60)
                .send()
                .await
                .map_err(|e| classify("ReceiveMessage", &e))?;
            if got.messages().is_empty() {
                return Ok(moved);
            }
            let mut request = client.send_message_batch().queue_url(queue_url);
            for (i, m) in got.messages().iter().enumerate() {
                request = request.entries(
                    SendMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .message_body(m.body().unwrap_or_default())
                        .build()
                        .map_err(|e| {
                            BackendError::Failed(format!("building SendMessageBatch: {e}"))
                        })?,
                );
            }
            let out = request
                .send()
                .await
                .map_err(|e| classify("SendMessageBatch", &e))?;
            let failed: HashSet<&str> = out.failed().iter().map(|f| f.id()).collect();
            let handles: Vec<&str> = got
                .messages()
                .iter()
                .enumerate()
                .filter(|(i, _)| !failed.contains(i.to_string().as_str()))
                .filter_map(|(_, m)| m.receipt_handle())
                .collect();
            delete_batch(client, dlq_url, &handles, &CallCounts::default()).await?;
            moved += handles.len();
            if !failed.is_empty() {
                return Err(BackendError::Failed(format!(
                    "{} dead letter(s) could not be sent back; run redrive again",
                    failed.len()
                )));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_respect_entry_and_byte_limits() {
        assert_eq!(group_into_calls(&[]), Vec::<std::ops::Range<usize>>::new());
        assert_eq!(group_into_calls(&[100; 25]), vec![0..10, 10..20, 20..25]);
        let big = MAX_MESSAGE_BYTES;
        assert_eq!(group_into_calls(&[big, big, 10]), vec![0..1, 1..3]);
        let sizes = [100 * 1024, 100 * 1024, 100 * 1024];
        let calls = group_into_calls(&sizes);
        assert_eq!(calls, vec![0..2, 2..3]);
        for c in calls {
            assert!(sizes[c].iter().sum::<usize>() <= MAX_BATCH_BYTES);
        }
    }
}
