//! What the shared tests build again and again: events, queue messages, a
//! processor, pages, the seed's fixtures, and the names of a session in order.

#![allow(dead_code)]

use std::sync::Arc;

use eye_shared::app::process::Processor;
use eye_shared::domain::{QueuedBatch, QueuedEvent, Rules, SchemaRegistry, Timestamp};
use eye_shared::ports::{ErrorStore, EventStore, PageRequest, QueueMessage};
use serde_json::Value;
use serde_json::value::RawValue;

/// The brief's session id.
pub const SEED_SESSION: &str = "e2085be5-9137-4e4e-80b5-f1ffddc25423";

/// The brief's own example event, with its trailing comma: malformed JSON.
pub const SEED_WITH_TRAILING_COMMA: &str = r#"{
  "session_id": "e2085be5-9137-4e4e-80b5-f1ffddc25423",
  "category": "page interaction",
  "name": "pageview",
  "data": {
    "host": "www.consumeraffairs.com",
    "path": "/",
  },
  "timestamp": "2021-01-01 09:15:27.243860"
}"#;

/// JSON text as a raw value.
pub fn raw(s: impl Into<String>) -> Box<RawValue> {
    RawValue::from_string(s.into()).unwrap()
}

/// An event valid against the built-in schemas (a `cta click` gets its
/// `element`, a `submit` its `form`).
pub fn event(session: &str, category: &str, name: &str, ts: &str, path: &str) -> Box<RawValue> {
    let extra = match name {
        "cta click" => r#","element":"b""#,
        "submit" => r#","form":{}"#,
        _ => "",
    };
    raw(format!(
        r#"{{"session_id":"{session}","category":"{category}","name":"{name}","data":{{"host":"h","path":"{path}"{extra}}},"timestamp":"{ts}"}}"#
    ))
}

/// A queued batch of `(event_id, event)` pairs from `app`, received now.
pub fn batch<'a>(app: &'a str, events: &'a [(String, Box<RawValue>)]) -> QueuedBatch<'a> {
    let events = events
        .iter()
        .map(|(id, e)| QueuedEvent {
            event_id: id.into(),
            event: e,
        })
        .collect();
    QueuedBatch::new(app, Timestamp::now(), None, events)
}

/// A queue message `id` holding `batch`, on its first delivery.
pub fn message(id: &str, batch: &QueuedBatch<'_>) -> QueueMessage {
    QueueMessage {
        id: id.into(),
        body: batch.encode(usize::MAX).remove(0).body,
        receive_count: 1,
    }
}

/// A processor with the built-in schemas and the default rules.
pub fn processor(events: Arc<dyn EventStore>, errors: Arc<dyn ErrorStore>) -> Processor {
    Processor::new(
        events,
        errors,
        Arc::new(SchemaRegistry::builtin().unwrap()),
        Rules::default(),
    )
}

/// The first page of `limit` items.
pub fn page(limit: usize) -> PageRequest {
    PageRequest { limit, after: None }
}

/// The names of the events in an answer's `events` array, in order.
pub fn answer_names(answer: &Value) -> Vec<&str> {
    answer["events"]
        .as_array()
        .expect("an `events` array")
        .iter()
        .map(|e| e["name"].as_str().expect("a name"))
        .collect()
}

/// A pageview that carries every optional field: identities and a context.
pub fn identified_event(session: &str, ts: &str) -> Box<RawValue> {
    raw(format!(
        r#"{{"session_id":"{session}","category":"page interaction","name":"pageview","data":{{"host":"h","path":"/"}},"timestamp":"{ts}","user_id":"user-7","anonymous_id":"anon-é","context":{{"page":{{"url":"https://h/","title":"Ünïcode"}},"library":{{"name":"t","version":"1.0"}},"screen":{{"width":1280}},"list":[1,"two",null,true]}}}}"#
    ))
}
