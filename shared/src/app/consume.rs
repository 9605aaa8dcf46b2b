//! The embedded consumer: takes batches off a pull queue and runs the
//! processor on them, as the SQS trigger does for the processor Lambda.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::process::{BatchReport, Processor};
use crate::ports::{BackendError, QueueSource};

/// How long the consumer waits for work before it looks again.
const IDLE_WAIT: Duration = Duration::from_millis(250);
/// How long it waits after the queue could not be reached.
const ERROR_WAIT: Duration = Duration::from_secs(1);

/// Moves batches from a [`QueueSource`] through a [`Processor`].
pub struct Consumer {
    source: Arc<dyn QueueSource>,
    processor: Processor,
    max_messages: usize,
}

impl Consumer {
    /// A consumer taking up to `max_messages` messages per batch.
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

    /// Processes batches until `stop` turns true or its sender is dropped,
    /// waiting for work when the queue is empty and pausing when it cannot be
    /// reached. (A dropped sender used to read as "go on" at once, every
    /// turn: the loop spun, and a process that failed to start never exited.)
    pub async fn run(&self, mut stop: watch::Receiver<bool>) {
        while !*stop.borrow() {
            match self.run_once().await {
                Ok(Some(report)) => tracing::debug!(?report, "batch processed"),
                Ok(None) => {
                    tokio::select! {
                        _ = self.source.wait_for_work(IDLE_WAIT) => {}
                        changed = stop.changed() => if changed.is_err() { return },
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "the consumer cannot reach the queue; retrying in 1s");
                    tokio::select! {
                        _ = tokio::time::sleep(ERROR_WAIT) => {}
                        changed = stop.changed() => if changed.is_err() { return },
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use async_trait::async_trait;

    use super::*;
    use crate::adapters::memory::Memory;
    use crate::domain::{Rules, SchemaRegistry};
    use crate::ports::QueueMessage;

    /// An empty queue that counts how often it is asked.
    #[derive(Default)]
    struct Empty(AtomicUsize);

    #[async_trait]
    impl QueueSource for Empty {
        async fn receive(&self, _: usize) -> Result<Vec<QueueMessage>, BackendError> {
            self.0.fetch_add(1, Ordering::Relaxed);
            Ok(Vec::new())
        }

        async fn complete(
            &self,
            _: Vec<String>,
            _: Vec<(String, String)>,
        ) -> Result<(), BackendError> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_dropped_stop_sender_ends_the_loop_instead_of_spinning() {
        let memory = Arc::new(Memory::new());
        let processor = Processor::new(
            memory.clone(),
            memory,
            Arc::new(SchemaRegistry::builtin().unwrap()),
            Rules::default(),
        );
        let queue = Arc::new(Empty::default());
        let consumer = Consumer::new(queue.clone(), processor, 10);
        let (stop, stopped) = watch::channel(false);
        drop(stop);
        tokio::time::timeout(Duration::from_secs(2), consumer.run(stopped))
            .await
            .expect("run returns once nobody can tell it to stop");
        assert!(queue.0.load(Ordering::Relaxed) <= 2, "it did not spin");
    }
}
