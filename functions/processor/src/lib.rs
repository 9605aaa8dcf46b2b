//! The processor Lambda's glue: an SQS batch in, partial batch failures out,
//! and one CloudWatch Embedded Metric Format line per batch.

use eye_shared::adapters::aws::{SqsBatchResponse, SqsEvent};
use eye_shared::app::process::Processor;
use eye_shared::domain::Timestamp;
use eye_shared::lambda::{emf, sqs_trigger};

/// Processes one batch and prints its metrics (EMF) to stdout, where the Lambda
/// runtime sends them to CloudWatch.
pub async fn handle(processor: &Processor, event: SqsEvent) -> SqsBatchResponse {
    let (response, report) = sqs_trigger::handle(processor, &event).await;
    println!(
        "{}",
        emf::batch_metrics(&report, Timestamp::now().as_micros() / 1000)
    );
    response
}
