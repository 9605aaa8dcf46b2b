//! The processor use case over the in-memory backend.

use std::sync::Arc;

use async_trait::async_trait;
use eye_shared::adapters::memory::Memory;
use eye_shared::domain::StoredEvent;
use eye_shared::ports::{BackendError, EventStore, PutOutcome, QueueMessage};
use serde_json::value::RawValue;

mod common;

/// A message `id` from `app` with `(event_id, event JSON)` pairs.
fn message(id: &str, app: &str, events: &[(&str, &str)]) -> QueueMessage {
    let events: Vec<(String, Box<RawValue>)> = events
        .iter()
        .map(|(id, e)| ((*id).to_owned(), common::raw(*e)))
        .collect();
    common::message(id, &common::batch(app, &events))
}

const VALID: &str = r#"{"session_id":"s","category":"page interaction","name":"pageview","data":{"host":"h","path":"/"},"timestamp":"2021-01-01 00:00:00"}"#;
const INVALID: &str = r#"{"session_id":"s","category":"page interaction","name":"cta click","data":{"host":"h","path":"/"},"timestamp":"2021-01-01 00:00:00"}"#;
const POISON_SESSION: &str = r#"{"session_id":"poison","category":"page interaction","name":"pageview","data":{"host":"h","path":"/"},"timestamp":"2021-01-01 00:00:00"}"#;

/// Fails (as throttling would) every event of session `poison`.
struct ThrottlesPoison(Arc<Memory>);

#[async_trait]
impl EventStore for ThrottlesPoison {
    async fn put_events(&self, events: Vec<StoredEvent>) -> Vec<Result<PutOutcome, BackendError>> {
        let mut out = Vec::new();
        for e in events {
            if e.session_id == "poison" {
                out.push(Err(BackendError::Busy(
                    "ProvisionedThroughputExceeded".into(),
                )));
            } else {
                out.extend(self.0.put_events(vec![e]).await);
            }
        }
        out
    }
}

#[tokio::test]
async fn a_redelivered_message_stores_nothing_twice() {
    let memory = Arc::new(Memory::new());
    let p = common::processor(memory.clone(), memory.clone());
    let m = message("m1", "shop", &[("a", VALID), ("b", INVALID)]);
    let first = p.process(std::slice::from_ref(&m)).await;
    assert_eq!(
        (
            first.report.stored,
            first.report.errors.values().sum::<usize>()
        ),
        (1, 1)
    );
    let again = p.process(&[m]).await;
    assert!(again.failures.is_empty());
    assert_eq!((again.report.stored, again.report.duplicates), (0, 1));
    assert!(
        again.report.errors.is_empty(),
        "the error record is not written twice"
    );
    assert_eq!((memory.event_count(), memory.error_count()), (1, 1));
}

#[tokio::test]
async fn only_transient_failures_are_reported_for_retry() {
    let memory = Arc::new(Memory::new());
    let p = common::processor(Arc::new(ThrottlesPoison(memory.clone())), memory.clone());
    let batch = [
        message("valid", "shop", &[("a", VALID)]),
        message("invalid", "shop", &[("b", INVALID)]),
        message("transient", "shop", &[("c", VALID), ("d", POISON_SESSION)]),
        QueueMessage {
            id: "garbage".into(),
            body: "{".into(),
            receive_count: 1,
        },
    ];
    let outcome = p.process(&batch).await;
    let failed: Vec<&str> = outcome
        .failures
        .iter()
        .map(|f| f.message_id.as_str())
        .collect();
    assert_eq!(failed, ["transient", "garbage"]);
    assert!(
        outcome.failures[0]
            .reason
            .contains("ProvisionedThroughputExceeded")
    );
    assert_eq!(outcome.report.stored, 2); // a and c; c is stored again as a duplicate on retry
    assert_eq!(outcome.report.errors.get("payload_invalid"), Some(&1));
    assert_eq!(outcome.report.failed_messages, 2);
}
