//! The processor Lambda on the SQS fixture in `events/`.

use std::sync::Arc;

use async_trait::async_trait;
use eye_shared::adapters::aws::SqsEvent;
use eye_shared::adapters::memory::Memory;
use eye_shared::app::process::Processor;
use eye_shared::domain::{Rules, SchemaRegistry, StoredEvent};
use eye_shared::ports::{BackendError, EventStore, PutOutcome};

fn batch() -> SqsEvent {
    let path = format!("{}/../../events/sqs-batch.json", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn processor(events: Arc<dyn EventStore>, memory: Arc<Memory>) -> Processor {
    Processor::new(
        events,
        memory,
        Arc::new(SchemaRegistry::builtin().unwrap()),
        Rules::default(),
    )
}

fn failed_ids(r: &eye_shared::adapters::aws::SqsBatchResponse) -> Vec<&str> {
    r.batch_item_failures
        .iter()
        .map(|f| f.item_identifier.as_str())
        .collect()
}

#[tokio::test]
async fn valid_stored_invalid_recorded_unreadable_retried_and_redelivery_is_idempotent() {
    let memory = Arc::new(Memory::new());
    let p = processor(memory.clone(), memory.clone());
    let response = eye_processor::handle(&p, batch()).await;
    // Only the message this processor cannot read is retried (and ends in the DLQ).
    assert_eq!(
        failed_ids(&response),
        ["7b0c4ea2-2b5e-4d83-9ad0-4c7b6e3a6f10"]
    );
    assert_eq!(memory.event_count(), 3);
    assert_eq!(
        memory.error_count(),
        2,
        "bad payload and future timestamp are error records, not retries"
    );

    // SQS redelivers the whole batch (e.g. after a timeout): nothing is stored twice.
    let again = eye_processor::handle(&p, batch()).await;
    assert_eq!(failed_ids(&again), failed_ids(&response));
    assert_eq!((memory.event_count(), memory.error_count()), (3, 2));
}

struct Throttled;

#[async_trait]
impl EventStore for Throttled {
    async fn put_events(&self, events: Vec<StoredEvent>) -> Vec<Result<PutOutcome, BackendError>> {
        vec![Err(BackendError::Busy("ThrottlingException".into())); events.len()]
    }
}

#[tokio::test]
async fn throttled_writes_fail_only_their_messages() {
    let memory = Arc::new(Memory::new());
    let p = processor(Arc::new(Throttled), memory.clone());
    let response = eye_processor::handle(&p, batch()).await;
    // The first message has valid events (throttled); the second only invalid
    // ones (recorded fine); the third is unreadable.
    assert_eq!(
        failed_ids(&response),
        [
            "059f36b4-87a3-44ab-83d2-661975830a7d",
            "7b0c4ea2-2b5e-4d83-9ad0-4c7b6e3a6f10"
        ]
    );
    assert_eq!(memory.error_count(), 2);
}
