//! The embedded worker: takes batches off a pull queue and runs the processor,
//! as the SQS trigger does for the Lambda.

use std::sync::Arc;

use crate::ports::{BackendError, QueueSource};
use crate::processor::{BatchReport, Processor};

/// Moves batches from a [`QueueSource`] through a [`Processor`].
pub struct Worker {
    source: Arc<dyn QueueSource>,
    processor: Processor,
    max_messages: usize,
}

impl Worker {
    /// A worker taking up to `max_messages` messages per batch.
    pub fn new(source: Arc<dyn QueueSource>, processor: Processor, max_messages: usize) -> Self {
        Self {
            source,
            processor,
            max_messages,
        }
    }

    /// Processes one batch. `Ok(None)` means nothing was due.
    pub async fn run_once(&self) -> Result<Option<BatchReport>, BackendError> {
        let messages = self.source.receive(self.max_messages).await?;
        if messages.is_empty() {
            return Ok(None);
        }
        let outcome = self.processor.process(&messages).await;
        for f in &outcome.failures {
            tracing::warn!(message_id = %f.message_id, reason = %f.reason, "queue message failed; it will be retried");
        }
        let processed = messages
            .iter()
            .filter(|m| !outcome.failures.iter().any(|f| f.message_id == m.id))
            .map(|m| m.id.clone())
            .collect();
        let failed = outcome
            .failures
            .into_iter()
            .map(|f| (f.message_id, f.reason))
            .collect();
        self.source.complete(processed, failed).await?;
        Ok(Some(outcome.report))
    }
}
