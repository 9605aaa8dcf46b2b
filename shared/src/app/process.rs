//! The process use case: judge queued events, store the valid ones, record the
//! invalid ones, and say which messages must be retried.
//!
//! The Lambda (SQS batches) and the embedded worker (SQLite queue) both call
//! [`Processor::process`].

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::domain::{
    Context, ErrorCode, ErrorRecord, Format, QueuedBatch, Rules, SchemaRegistry, StoredEvent,
    Timestamp, Verdict, judge, judge_segment,
};
use crate::ports::{BackendError, ErrorStore, EventStore, PutOutcome, QueueMessage};

/// Judges and stores batches of queue messages.
#[derive(Clone)]
pub struct Processor {
    events: Arc<dyn EventStore>,
    errors: Arc<dyn ErrorStore>,
    schemas: Arc<SchemaRegistry>,
    rules: Rules,
}

/// A message that must be retried, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The queue's id of the message.
    pub message_id: String,
    /// What went wrong.
    pub reason: String,
}

/// What one batch did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchReport {
    /// Messages in the batch.
    pub messages: usize,
    /// Events in the messages that could be read.
    pub events: usize,
    /// Events written now.
    pub stored: usize,
    /// Events that were already stored (redeliveries, resends).
    pub duplicates: usize,
    /// Error records written now, by code.
    pub errors: BTreeMap<&'static str, usize>,
    /// Messages to retry.
    pub failed_messages: usize,
    /// Largest delay from `received_at` to now, in milliseconds.
    pub max_lag_ms: i64,
}

/// What became of a batch.
#[derive(Debug, Clone, Default)]
pub struct BatchOutcome {
    /// Messages that failed for a reason worth retrying. Every other message is
    /// done: its events are stored or recorded as errors.
    pub failures: Vec<Failure>,
    /// Counts for metrics and logs.
    pub report: BatchReport,
}

impl Processor {
    /// A processor over the given stores.
    pub fn new(
        events: Arc<dyn EventStore>,
        errors: Arc<dyn ErrorStore>,
        schemas: Arc<SchemaRegistry>,
        rules: Rules,
    ) -> Self {
        Self {
            events,
            errors,
            schemas,
            rules,
        }
    }

    /// Processes a batch. Never fails as a whole: each message either completes
    /// or is listed in [`BatchOutcome::failures`].
    pub async fn process(&self, messages: &[QueueMessage]) -> BatchOutcome {
        let now = Timestamp::now();
        let mut report = BatchReport {
            messages: messages.len(),
            ..BatchReport::default()
        };
        let mut failed: BTreeMap<usize, String> = BTreeMap::new();
        let mut to_store: Vec<(usize, StoredEvent)> = Vec::new();
        let mut to_record: Vec<(usize, ErrorRecord)> = Vec::new();

        for (i, message) in messages.iter().enumerate() {
            let batch = match QueuedBatch::decode(&message.body) {
                Ok(batch) => batch,
                Err(e) => {
                    failed.insert(i, e.to_string());
                    continue;
                }
            };
            report.events += batch.events.len();
            let lag = (now.as_micros() - batch.received_at.as_micros()) / 1000;
            report.max_lag_ms = report.max_lag_ms.max(lag);
            let ctx = Context {
                app: &batch.app,
                received_at: batch.received_at,
                sent_at: batch.sent_at,
            };
            for event in &batch.events {
                let judge = match batch.format {
                    Format::Eye => judge,
                    Format::Segment => judge_segment,
                };
                match judge(ctx, &event.event_id, event.event, &self.schemas, self.rules) {
                    Verdict::Store(stored) => to_store.push((i, stored)),
                    Verdict::Reject(record) => to_record.push((i, record)),
                }
            }
        }

        let (owners, events): (Vec<usize>, Vec<StoredEvent>) = to_store.into_iter().unzip();
        let results = if events.is_empty() {
            Vec::new()
        } else {
            self.events.put_events(events).await
        };
        tally(&owners, results, &mut failed, |_, outcome| match outcome {
            PutOutcome::Stored => report.stored += 1,
            PutOutcome::Duplicate => report.duplicates += 1,
        });

        let codes: Vec<ErrorCode> = to_record.iter().map(|(_, r)| r.code).collect();
        let (owners, records): (Vec<usize>, Vec<ErrorRecord>) = to_record.into_iter().unzip();
        let results = if records.is_empty() {
            Vec::new()
        } else {
            self.errors.put_errors(records).await
        };
        tally(&owners, results, &mut failed, |item, outcome| {
            if outcome == PutOutcome::Stored {
                *report.errors.entry(codes[item].as_str()).or_default() += 1;
            }
        });

        report.failed_messages = failed.len();
        let failures = failed
            .into_iter()
            .map(|(i, reason)| Failure {
                message_id: messages[i].id.clone(),
                reason,
            })
            .collect();
        BatchOutcome { failures, report }
    }
}

/// Applies per-item results: a success goes to `ok` with the item's index, a
/// failure marks the item's message for a retry.
fn tally(
    owners: &[usize],
    results: Vec<Result<PutOutcome, BackendError>>,
    failed: &mut BTreeMap<usize, String>,
    mut ok: impl FnMut(usize, PutOutcome),
) {
    let mut results = results.into_iter();
    for (item, &owner) in owners.iter().enumerate() {
        match results.next() {
            Some(Ok(outcome)) => ok(item, outcome),
            Some(Err(e)) => {
                failed.entry(owner).or_insert_with(|| e.to_string());
            }
            // A store that answered for fewer items than it was given failed the rest.
            None => {
                failed
                    .entry(owner)
                    .or_insert_with(|| "the store returned no result for an event".into());
            }
        }
    }
}
