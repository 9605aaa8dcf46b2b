//! Events as the application gives them, and their wire form.

use chrono::{DateTime, Datelike, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::error::TrackError;

/// Most events the server accepts in one request.
pub const MAX_BATCH_EVENTS: usize = 500;
/// Most bytes the server accepts in one request body (1 MiB).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Most bytes the server accepts for one event's JSON (32 KiB).
pub const MAX_EVENT_BYTES: usize = 32 * 1024;
/// Most characters in a `session_id`.
pub const MAX_SESSION_ID_CHARS: usize = 128;
/// Most characters in a `category` or a `name`.
pub const MAX_TYPE_CHARS: usize = 64;

/// One event with every field given: use it with
/// [`Client::track_event`](crate::Client::track_event) to set the timestamp
/// yourself, or to keep the `event_id` so that tracking the same event again is
/// stored once.
///
/// ```
/// use eye_client::Event;
/// use serde_json::json;
///
/// let at = chrono::DateTime::parse_from_rfc3339("2021-01-01T09:15:27.243860Z").unwrap();
/// let event = Event::new("session-1", "page interaction", "pageview", json!({"host": "h", "path": "/"}))
///     .with_timestamp(at.into());
/// assert_eq!(event.event_id.get_version_num(), 7);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The application's session identifier: 1 to 128 characters.
    pub session_id: String,
    /// The event's category, such as `page interaction`: 1 to 64 characters.
    pub category: String,
    /// The event's name, such as `pageview`: 1 to 64 characters.
    pub name: String,
    /// The payload: must be a JSON object.
    pub data: serde_json::Value,
    /// When the event happened, by this machine's clock (years 1970 to 9999).
    pub timestamp: DateTime<Utc>,
    /// The idempotency key: the server stores an event with the same
    /// `event_id` and `timestamp` once, however often it is sent.
    pub event_id: Uuid,
}

impl Event {
    /// An event that happens now, with a new UUIDv7 `event_id`.
    pub fn new(
        session_id: impl Into<String>,
        category: impl Into<String>,
        name: impl Into<String>,
        data: serde_json::Value,
    ) -> Self {
        let timestamp = Utc::now();
        Event {
            session_id: session_id.into(),
            category: category.into(),
            name: name.into(),
            data,
            timestamp,
            event_id: Uuid::now_v7(),
        }
    }

    /// The same event with another timestamp.
    #[must_use]
    pub fn with_timestamp(mut self, timestamp: DateTime<Utc>) -> Self {
        self.timestamp = timestamp;
        self
    }

    /// The same event with another `event_id` (for example one the
    /// application stored, to resend an event idempotently).
    #[must_use]
    pub fn with_event_id(mut self, event_id: Uuid) -> Self {
        self.event_id = event_id;
        self
    }
}

/// An event checked and serialized at `track` time, ready to be batched.
#[derive(Debug, Clone)]
pub(crate) struct Prepared {
    pub(crate) event_id: Uuid,
    pub(crate) json: String,
}

#[derive(Serialize)]
struct Wire<'a> {
    session_id: &'a str,
    category: &'a str,
    name: &'a str,
    data: &'a RawValue,
    timestamp: &'a str,
    event_id: &'a str,
}

/// The wire form of a timestamp: RFC 3339, UTC, microseconds, `Z`.
pub(crate) fn format_timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// Checks an event with the server's envelope rules and serializes it once.
pub(crate) fn prepare<D: Serialize + ?Sized>(
    session_id: &str,
    category: &str,
    name: &str,
    data: &D,
    timestamp: DateTime<Utc>,
    event_id: Uuid,
) -> Result<Prepared, TrackError> {
    check_text("session_id", session_id, MAX_SESSION_ID_CHARS)?;
    check_text("category", category, MAX_TYPE_CHARS)?;
    check_text("name", name, MAX_TYPE_CHARS)?;
    if !(1970..=9999).contains(&timestamp.year()) {
        return Err(TrackError::InvalidEvent {
            field: "timestamp",
            reason: format!("is {timestamp}; the server accepts years 1970 to 9999 only"),
        });
    }
    let data = serde_json::value::to_raw_value(data)?;
    if !data.get().starts_with('{') {
        return Err(TrackError::InvalidEvent {
            field: "data",
            reason: "must serialize to a JSON object".into(),
        });
    }
    let timestamp = format_timestamp(timestamp);
    let event_id_text = event_id.hyphenated().to_string();
    let json = serde_json::to_string(&Wire {
        session_id,
        category,
        name,
        data: &data,
        timestamp: &timestamp,
        event_id: &event_id_text,
    })?;
    if json.len() > MAX_EVENT_BYTES {
        return Err(TrackError::EventTooLarge {
            size: json.len(),
            max: MAX_EVENT_BYTES,
        });
    }
    // JSON writers leave these two noncharacters unescaped, and the server
    // refuses them (its queues cannot carry them).
    if json.contains(['\u{FFFE}', '\u{FFFF}']) {
        return Err(TrackError::InvalidEvent {
            field: "data",
            reason: "contains the noncharacter U+FFFE or U+FFFF, which the server refuses".into(),
        });
    }
    Ok(Prepared { event_id, json })
}

fn check_text(field: &'static str, value: &str, max: usize) -> Result<(), TrackError> {
    let chars = value.chars().count();
    if chars == 0 || chars > max {
        return Err(TrackError::InvalidEvent {
            field,
            reason: format!("has {chars} characters; it must have 1 to {max}"),
        });
    }
    if value.chars().any(char::is_control) {
        return Err(TrackError::InvalidEvent {
            field,
            reason: "contains a control character".into(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn at() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2021-01-01T09:15:27.243860Z")
            .unwrap()
            .to_utc()
    }

    #[test]
    fn wire_form_has_every_field_and_microseconds() {
        let id = Uuid::now_v7();
        let p = prepare(
            "s",
            "page interaction",
            "pageview",
            &json!({"path": "/"}),
            at(),
            id,
        )
        .unwrap();
        let v: Value = serde_json::from_str(&p.json).unwrap();
        assert_eq!(
            v,
            json!({"session_id": "s", "category": "page interaction", "name": "pageview",
                   "data": {"path": "/"}, "timestamp": "2021-01-01T09:15:27.243860Z",
                   "event_id": id.to_string()})
        );
        assert_eq!(format_timestamp(at()).len(), 27);
    }

    #[test]
    fn oversized_event_is_rejected_with_its_size() {
        let big = "x".repeat(MAX_EVENT_BYTES);
        let err =
            prepare("s", "c", "n", &json!({ "blob": big }), at(), Uuid::now_v7()).unwrap_err();
        match err {
            TrackError::EventTooLarge { size, max } => {
                assert!(size > MAX_EVENT_BYTES);
                assert_eq!(max, MAX_EVENT_BYTES);
            }
            other => panic!("{other:?}"),
        }
        // Just under the limit passes.
        let base = prepare("s", "c", "n", &json!({ "blob": "" }), at(), Uuid::now_v7())
            .unwrap()
            .json
            .len();
        let fits = "x".repeat(MAX_EVENT_BYTES - base);
        let p = prepare(
            "s",
            "c",
            "n",
            &json!({ "blob": fits }),
            at(),
            Uuid::now_v7(),
        )
        .unwrap();
        assert_eq!(p.json.len(), MAX_EVENT_BYTES);
    }

    #[test]
    fn fields_are_checked_like_the_server_does() {
        let d = json!({});
        let id = Uuid::now_v7();
        let field = |r: Result<Prepared, TrackError>| match r {
            Err(TrackError::InvalidEvent { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(field(prepare("", "c", "n", &d, at(), id)), "session_id");
        assert_eq!(
            field(prepare(&"s".repeat(129), "c", "n", &d, at(), id)),
            "session_id"
        );
        assert!(prepare(&"é".repeat(128), "c", "n", &d, at(), id).is_ok());
        assert_eq!(
            field(prepare("s", &"c".repeat(65), "n", &d, at(), id)),
            "category"
        );
        assert_eq!(field(prepare("s", "c", "", &d, at(), id)), "name");
        assert_eq!(field(prepare("s", "c\n", "n", &d, at(), id)), "category");
        assert_eq!(field(prepare("s", "c", "n", &json!([1]), at(), id)), "data");
        assert_eq!(field(prepare("s", "c", "n", &json!("x"), at(), id)), "data");
        assert_eq!(
            field(prepare("s", "c", "n", &json!({"k": "\u{FFFF}"}), at(), id)),
            "data"
        );
        let old = DateTime::parse_from_rfc3339("1969-12-31T23:59:59Z")
            .unwrap()
            .to_utc();
        assert_eq!(field(prepare("s", "c", "n", &d, old, id)), "timestamp");
    }

    #[test]
    fn event_new_makes_v7_ids_in_order() {
        let a = Event::new("s", "c", "n", json!({}));
        let b = Event::new("s", "c", "n", json!({}));
        assert_eq!(a.event_id.get_version_num(), 7);
        assert!(a.event_id < b.event_id);
        assert!(a.timestamp <= b.timestamp);
    }
}
