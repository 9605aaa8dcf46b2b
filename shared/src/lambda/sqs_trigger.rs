//! The SQS trigger of the processor Lambda: an SQS batch in, the process use
//! case, partial batch failures out. `eye serve --backend aws` feeds it the
//! same event shape from its poller.

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};

use crate::app::process::{BatchReport, Processor};
use crate::ports::QueueMessage;

/// The processor Lambda's work: an SQS batch in, partial batch failures out.
/// Only messages that failed for a retryable reason are listed; SQS redelivers
/// them, and after `maxReceiveCount` receives moves them to the dead-letter queue.
pub async fn handle(processor: &Processor, event: &SqsEvent) -> (SqsBatchResponse, BatchReport) {
    let messages: Vec<QueueMessage> = event
        .records
        .iter()
        .map(|r| QueueMessage {
            id: r.message_id.clone().unwrap_or_default(),
            body: r.body.clone().unwrap_or_default(),
            receive_count: r
                .attributes
                .get("ApproximateReceiveCount")
                .and_then(|n| n.parse().ok())
                .unwrap_or(1),
        })
        .collect();
    let outcome = processor.process(&messages).await;
    let mut response = SqsBatchResponse::default();
    for failure in outcome.failures {
        tracing::warn!(message_id = %failure.message_id, reason = %failure.reason, "message failed; SQS will redeliver it");
        let mut item = BatchItemFailure::default();
        item.item_identifier = failure.message_id;
        response.batch_item_failures.push(item);
    }
    (response, outcome.report)
}
