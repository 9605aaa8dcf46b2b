//! The queue message: what ingest hands to the processor, through SQS or SQLite.
//!
//! A message carries the request context (app, `received_at`, `sent_at`) once and
//! the events exactly as sent, each with its final `event_id`. The processor
//! re-checks every event with the same envelope rules, so a message written by an
//! older ingest is judged by the current rules.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::time::Timestamp;

/// The newest version of the message format, which this processor reads
/// along with every older one. 1: events in The Eye's envelope. 2: a
/// `format` says how the events are written ([`Format`]). Messages of
/// The Eye's own format are still written as version 1, so a processor of
/// an older release reads them during an upgrade; it refuses version 2,
/// which it would misread, and the message waits for the new one.
pub const MESSAGE_VERSION: u8 = 2;

/// How the events of a message are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// The Eye's envelope (`POST /v1/events`).
    #[default]
    Eye,
    /// Segment messages (`/v1/batch`, `/v1/track`...), translated when processed.
    Segment,
}

impl Format {
    fn is_eye(&self) -> bool {
        *self == Format::Eye
    }

    fn version(self) -> u8 {
        match self {
            Format::Eye => 1,
            Format::Segment => 2,
        }
    }
}

/// One queue message: a request's context and some or all of its events.
#[derive(Debug, Serialize, Deserialize)]
pub struct QueuedBatch<'a> {
    /// Format version, [`MESSAGE_VERSION`].
    pub v: u8,
    /// The application, from its API key.
    #[serde(borrow)]
    pub app: Cow<'a, str>,
    /// When ingest accepted the request.
    pub received_at: Timestamp,
    /// The request's `sent_at`, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_at: Option<Timestamp>,
    /// How the events are written.
    #[serde(default, skip_serializing_if = "Format::is_eye")]
    pub format: Format,
    /// The events.
    #[serde(borrow)]
    pub events: Vec<QueuedEvent<'a>>,
}

/// One event in a queue message.
#[derive(Debug, Serialize, Deserialize)]
pub struct QueuedEvent<'a> {
    /// The client's id, or the one ingest made.
    #[serde(borrow)]
    pub event_id: Cow<'a, str>,
    /// The event exactly as sent.
    #[serde(borrow)]
    pub event: &'a RawValue,
}

/// Why a message body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    /// Not a message of this format.
    #[error("the message is not a queued batch: {0}")]
    Malformed(#[from] serde_json::Error),
    /// A format this processor does not know.
    #[error(
        "message format version {0} is not supported (this processor reads version {MESSAGE_VERSION})"
    )]
    Version(u8),
}

impl<'a> QueuedBatch<'a> {
    /// A message of events in The Eye's envelope.
    pub fn new(
        app: &'a str,
        received_at: Timestamp,
        sent_at: Option<Timestamp>,
        events: Vec<QueuedEvent<'a>>,
    ) -> Self {
        QueuedBatch {
            v: Format::Eye.version(),
            app: Cow::Borrowed(app),
            received_at,
            sent_at,
            format: Format::Eye,
            events,
        }
    }

    /// A message of Segment messages, each with its event id.
    pub fn segment(app: &'a str, received_at: Timestamp, events: Vec<QueuedEvent<'a>>) -> Self {
        QueuedBatch {
            v: Format::Segment.version(),
            app: Cow::Borrowed(app),
            received_at,
            sent_at: None,
            format: Format::Segment,
            events,
        }
    }

    /// Reads a message body.
    pub fn decode(body: &'a str) -> Result<Self, MessageError> {
        let batch: QueuedBatch<'a> = serde_json::from_str(body)?;
        if !(1..=MESSAGE_VERSION).contains(&batch.v) || batch.v < batch.format.version() {
            return Err(MessageError::Version(batch.v));
        }
        Ok(batch)
    }

    /// Splits the batch into message bodies of at most `max_bytes` each (at least
    /// one event per body, whatever its size). Each body records how many events it
    /// carries.
    pub fn encode(&self, max_bytes: usize) -> Vec<EncodedMessage> {
        let overhead = to_json(&clone_header(self)).len();
        let mut out = Vec::new();
        let mut start = 0;
        while start < self.events.len() {
            let mut size = overhead;
            let mut end = start;
            while end < self.events.len() {
                let cost = event_size(&self.events[end]) + 1;
                if end > start && size + cost > max_bytes {
                    break;
                }
                size += cost;
                end += 1;
            }
            let chunk = QueuedBatch {
                events: self.events[start..end]
                    .iter()
                    .map(|e| QueuedEvent {
                        event_id: Cow::Borrowed(&e.event_id),
                        event: e.event,
                    })
                    .collect(),
                ..clone_header(self)
            };
            out.push(EncodedMessage {
                body: to_json(&chunk),
                events: end - start,
            });
            start = end;
        }
        out
    }
}

/// A message body ready for a queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedMessage {
    /// The JSON body.
    pub body: String,
    /// How many events it carries.
    pub events: usize,
}

fn clone_header<'b>(b: &'b QueuedBatch<'_>) -> QueuedBatch<'b> {
    QueuedBatch {
        v: b.v,
        app: Cow::Borrowed(&b.app),
        received_at: b.received_at,
        sent_at: b.sent_at,
        format: b.format,
        events: Vec::new(),
    }
}

fn event_size(e: &QueuedEvent<'_>) -> usize {
    // {"event_id":"…","event":…} plus escaping headroom on the id.
    26 + e.event_id.len() * 2 + e.event.get().len()
}

fn to_json<T: Serialize>(value: &T) -> String {
    // Serialising these types cannot fail: string keys, no maps with other keys.
    serde_json::to_string(value).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_owned()).unwrap()
    }

    #[test]
    fn round_trip_keeps_events_byte_for_byte() {
        let e1 = raw(r#"{"a": 1,  "b": [1, 2]}"#);
        let batch = QueuedBatch {
            v: MESSAGE_VERSION,
            app: "shop".into(),
            received_at: Timestamp::from_micros(1_000_000),
            sent_at: Some(Timestamp::from_micros(900_000)),
            format: Format::Eye,
            events: vec![QueuedEvent {
                event_id: "id-1".into(),
                event: &e1,
            }],
        };
        let msgs = batch.encode(256 * 1024);
        assert_eq!(msgs.len(), 1);
        assert_eq!(msgs[0].events, 1);
        let back = QueuedBatch::decode(&msgs[0].body).unwrap();
        assert_eq!(back.app, "shop");
        assert_eq!(back.received_at, batch.received_at);
        assert_eq!(back.sent_at, batch.sent_at);
        assert_eq!(back.events[0].event_id, "id-1");
        assert_eq!(back.events[0].event.get(), r#"{"a": 1,  "b": [1, 2]}"#);
    }

    #[test]
    fn splits_under_the_byte_limit_in_order() {
        let payload = format!(r#"{{"blob":"{}"}}"#, "x".repeat(1000));
        let events: Vec<Box<RawValue>> = (0..100).map(|_| raw(&payload)).collect();
        let ids: Vec<String> = (0..100).map(|i| format!("id-{i:03}")).collect();
        let batch = QueuedBatch {
            v: MESSAGE_VERSION,
            app: "shop".into(),
            received_at: Timestamp::from_micros(0),
            sent_at: None,
            format: Format::Eye,
            events: events
                .iter()
                .zip(&ids)
                .map(|(e, id)| QueuedEvent {
                    event_id: id.into(),
                    event: e,
                })
                .collect(),
        };
        let msgs = batch.encode(10 * 1024);
        assert!(msgs.len() >= 10, "{} messages", msgs.len());
        assert!(msgs.iter().all(|m| m.body.len() <= 10 * 1024));
        assert_eq!(msgs.iter().map(|m| m.events).sum::<usize>(), 100);
        let order: Vec<String> = msgs
            .iter()
            .flat_map(|m| {
                QueuedBatch::decode(&m.body)
                    .unwrap()
                    .events
                    .into_iter()
                    .map(|e| e.event_id.into_owned())
                    .collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(order, ids);
    }

    #[test]
    fn eye_messages_stay_version_1_and_segment_ones_are_version_2() {
        let e = raw(r#"{"type":"track"}"#);
        let events = || {
            vec![QueuedEvent {
                event_id: "m".into(),
                event: &e,
            }]
        };
        let eye = QueuedBatch::new("a", Timestamp::from_micros(0), None, events()).encode(1 << 20);
        assert!(eye[0].body.starts_with(r#"{"v":1,"#) && !eye[0].body.contains("format"));
        let seg = QueuedBatch::segment("a", Timestamp::from_micros(0), events()).encode(1 << 20);
        assert!(
            seg[0].body.starts_with(r#"{"v":2,"#) && seg[0].body.contains(r#""format":"segment""#)
        );
        for body in [&eye[0].body, &seg[0].body] {
            let back = QueuedBatch::decode(body).unwrap();
            assert_eq!(back.events[0].event.get(), r#"{"type":"track"}"#);
        }
        assert_eq!(
            QueuedBatch::decode(&seg[0].body).unwrap().format,
            Format::Segment
        );
    }

    #[test]
    fn refuses_other_versions_and_garbage() {
        assert!(matches!(
            QueuedBatch::decode(
                r#"{"v":3,"app":"a","received_at":"2021-01-01T00:00:00Z","events":[]}"#
            ),
            Err(MessageError::Version(3))
        ));
        assert!(
            matches!(
                QueuedBatch::decode(
                    r#"{"v":1,"app":"a","received_at":"2021-01-01T00:00:00Z","format":"segment","events":[]}"#
                ),
                Err(MessageError::Version(1))
            ),
            "Segment messages are version 2"
        );
        assert!(matches!(
            QueuedBatch::decode("not json"),
            Err(MessageError::Malformed(_))
        ));
    }
}
