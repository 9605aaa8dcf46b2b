//! One Segment message becomes one Eye event (the README's table):
//! - `session_id`: `context.sessionId`, else `anonymousId`, else `userId`;
//! - `category` and `name` by the call: track is `properties.category` (or
//!   "track") and `event`; page and screen are the message's `category` and
//!   `name` (or the type); identify, group and alias are the type;
//! - `data`: `properties` (track, page, screen) or `traits` (identify, group;
//!   RudderStack's SDKs send them in `context.traits`, which is used then);
//! - `timestamp`: `timestamp`, else `originalTimestamp`, corrected with
//!   `sentAt`; else the time received;
//! - `user_id`, `anonymous_id`; `context` is the message's context, plus
//!   every other field of the message under `context.segment`.
//!
//! Values are copied as raw JSON text, never through floats.

use std::borrow::Cow;

use serde::Serialize;
use serde_json::value::RawValue;

use super::body::{object_of, usable_message_id};
use super::{KEPT_FIELDS_KEY, MAX_MESSAGE_ID_CHARS, SegmentType};
use crate::domain::raw_json::{RawObject, json_kind, string_field};
use crate::domain::time::{TIMESTAMP_FORMS, Timestamp};

/// A message as an Eye event, ready for the envelope checks.
#[derive(Debug)]
pub struct Translated {
    /// The event in The Eye's envelope.
    pub event: Box<RawValue>,
    /// The message's `sentAt`, for skew correction.
    pub sent_at: Option<Timestamp>,
    /// Which field of the message each top-level field of the event came from.
    sources: Vec<(&'static str, String)>,
}

impl Translated {
    /// Where in the message a field of the event (a JSON pointer such as
    /// `/data/element`) came from, such as `/properties/element`.
    pub fn source_of(&self, pointer: &str) -> String {
        let rest = pointer.strip_prefix('/').unwrap_or(pointer);
        let (first, tail) = match rest.split_once('/') {
            Some((first, tail)) => (first, Some(tail)),
            None => (rest, None),
        };
        match self.sources.iter().find(|(field, _)| *field == first) {
            Some((_, source)) => match tail {
                Some(tail) => format!("{source}/{tail}"),
                None => source.clone(),
            },
            None => pointer.to_owned(),
        }
    }
}

/// Why a message cannot be an event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct TranslateError {
    /// A JSON pointer into the message; `None` when the whole message is at fault.
    pub field: Option<String>,
    /// What is wrong and how to fix it.
    pub message: String,
}

fn refuse<T>(field: &str, message: String) -> Result<T, TranslateError> {
    Err(TranslateError {
        field: Some(format!("/{field}")),
        message,
    })
}

#[derive(Serialize)]
struct Event<'a> {
    session_id: &'a str,
    category: &'a str,
    name: &'a str,
    data: &'a RawValue,
    timestamp: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    anonymous_id: Option<&'a str>,
    context: &'a RawValue,
}

/// Translates one queued message, received at `received_at`.
pub fn translate(message: &RawValue, received_at: Timestamp) -> Result<Translated, TranslateError> {
    let object = match RawObject::parse(message) {
        Ok(object) if message.get().starts_with('{') => object,
        _ => {
            return Err(TranslateError {
                field: None,
                message: format!(
                    "a Segment message must be a JSON object, got {}",
                    json_kind(message)
                ),
            });
        }
    };
    if let Some((key, _)) = object
        .0
        .iter()
        .enumerate()
        .find(|(i, (k, _))| object.0[..*i].iter().any(|(other, _)| other == k))
        .map(|(_, member)| member)
    {
        return refuse(key, format!("`{key}` is given more than once"));
    }
    let present = |key: &str| object.get(key).filter(|v| v.get() != "null");

    let kind = match present("type").map(string_field) {
        Some(Ok(t)) => match SegmentType::parse(&t) {
            Some(kind) => kind,
            None => return refuse("type", format!("unknown type {t:?}; {TYPES}")),
        },
        Some(Err(m)) => return refuse("type", format!("`type` {m}; {TYPES}")),
        None => return refuse("type", format!("`type` is missing; {TYPES}")),
    };
    if present("messageId").is_some() && usable_message_id(present("messageId")).is_none() {
        return refuse(
            "messageId",
            format!(
                "`messageId` must be a string of 1 to {MAX_MESSAGE_ID_CHARS} characters without control characters"
            ),
        );
    }
    let user_id = identity(present("userId"), "userId")?;
    let anonymous_id = identity(present("anonymousId"), "anonymousId")?;
    let (someone, someone_source) = match (&anonymous_id, &user_id) {
        (Some(a), _) => (a.clone(), "/anonymousId"),
        (None, Some(u)) => (u.clone(), "/userId"),
        (None, None) => {
            return refuse(
                "anonymousId",
                "a message needs `userId` or `anonymousId` (a non-empty string): The Eye files events by who did them".into(),
            );
        }
    };

    let context = match present("context") {
        None => None,
        Some(c) if c.get().starts_with('{') => Some(
            RawObject::parse(c)
                .or_else(|e| refuse("context", format!("`context` is not an object: {e}")))?,
        ),
        Some(c) => {
            return refuse(
                "context",
                format!("`context` must be an object, got {}", json_kind(c)),
            );
        }
    };
    if context
        .as_ref()
        .is_some_and(|c| c.get(KEPT_FIELDS_KEY).is_some())
    {
        return refuse(
            &format!("context/{KEPT_FIELDS_KEY}"),
            format!(
                "`context.{KEPT_FIELDS_KEY}` is where The Eye keeps the message's other fields; rename that key"
            ),
        );
    }
    let session = context
        .as_ref()
        .and_then(|c| {
            identity(c.get("sessionId"), "context/sessionId")
                .ok()
                .flatten()
        })
        .map(|s| (s, "/context/sessionId"));
    let (session_id, session_source) = session.unwrap_or((someone, someone_source));

    let mut used: Vec<&str> = vec!["messageId", "userId", "anonymousId", "context"];
    let named = |key: &'static str, default: &'static str, used: &mut Vec<&str>| {
        used.push(key);
        match present(key) {
            None => Ok((Cow::Borrowed(default), "/type".to_owned())),
            Some(v) => match string_field(v) {
                Ok(s) if !s.is_empty() => Ok((Cow::Owned(s.into_owned()), format!("/{key}"))),
                Ok(_) => Ok((Cow::Borrowed(default), "/type".to_owned())),
                Err(m) => refuse(key, format!("`{key}` {m}")),
            },
        }
    };
    let data_field = match kind {
        SegmentType::Track | SegmentType::Page | SegmentType::Screen => Some("properties"),
        SegmentType::Identify | SegmentType::Group => Some("traits"),
        SegmentType::Alias => None,
    };
    let empty_object = RawValue::from_string("{}".into()).unwrap_or_default();
    // RudderStack's SDKs send an identify's traits in `context.traits`.
    let traits_in_context = context
        .as_ref()
        .and_then(|c| c.get("traits"))
        .filter(|t| t.get().starts_with('{') && data_field == Some("traits"));
    let mut data_source = format!("/{}", data_field.unwrap_or("type"));
    let data: &RawValue = match (data_field.and_then(present), traits_in_context) {
        (None, Some(t)) => {
            data_source = "/context/traits".into();
            t
        }
        (None, None) => &empty_object,
        (Some(d), _) if d.get().starts_with('{') => d,
        (Some(d), _) => {
            let field = data_field.unwrap_or("properties");
            return refuse(
                field,
                format!("`{field}` must be an object, got {}", json_kind(d)),
            );
        }
    };
    if let Some(field) = data_field {
        used.push(field);
    }
    let ((category, category_source), (name, name_source)) = match kind {
        SegmentType::Track => {
            used.push("event");
            let name = match present("event").map(string_field) {
                Some(Ok(e)) if !e.is_empty() => (e.into_owned(), "/event".to_owned()),
                Some(Err(m)) => return refuse("event", format!("`event` {m}")),
                _ => {
                    return refuse(
                        "event",
                        "a track needs `event`, the name of what the user did".into(),
                    );
                }
            };
            let from_properties = RawObject::parse(data)
                .ok()
                .and_then(|p| p.get("category").map(string_field))
                .and_then(Result::ok)
                .filter(|c| !c.is_empty());
            let category = match from_properties {
                Some(c) => (
                    Cow::Owned(c.into_owned()),
                    "/properties/category".to_owned(),
                ),
                None => (Cow::Borrowed("track"), "/type".to_owned()),
            };
            (category, (Cow::Owned(name.0), name.1))
        }
        SegmentType::Page | SegmentType::Screen => (
            named("category", kind.as_str(), &mut used)?,
            named("name", kind.as_str(), &mut used)?,
        ),
        SegmentType::Identify | SegmentType::Group | SegmentType::Alias => (
            (Cow::Borrowed(kind.as_str()), "/type".to_owned()),
            (Cow::Borrowed(kind.as_str()), "/type".to_owned()),
        ),
    };

    let sent_at = match present("sentAt").map(string_field) {
        None => None,
        Some(Ok(text)) => Some(Timestamp::parse(&text).or_else(|e| {
            refuse(
                "sentAt",
                format!("`sentAt` {:?}: {}; {TIMESTAMP_FORMS}", e.input, e.reason),
            )
        })?),
        Some(Err(m)) => return refuse("sentAt", format!("`sentAt` {m}")),
    };
    let stamp = ["timestamp", "originalTimestamp"]
        .into_iter()
        .find_map(|f| present(f).map(|v| (f, v)));
    let (timestamp, timestamp_source, sent_at) = match stamp {
        Some((field, value)) => {
            used.push(field);
            let text = string_field(value)
                .or_else(|m| refuse(field, format!("`{field}` {m}; {TIMESTAMP_FORMS}")))?;
            (text.into_owned(), format!("/{field}"), sent_at)
        }
        // No time of its own: the time received, with nothing to correct.
        None => (received_at.to_rfc3339(), "/type".to_owned(), None),
    };

    let kept: Vec<(Cow<'_, str>, Cow<'_, RawValue>)> = object
        .0
        .iter()
        .filter(|(k, _)| !used.contains(&k.as_ref()))
        .map(|(k, v)| (k.clone(), Cow::Borrowed(*v)))
        .collect();
    let mut context_members: Vec<(Cow<'_, str>, Cow<'_, RawValue>)> = context
        .as_ref()
        .map(|c| {
            c.0.iter()
                .map(|(k, v)| (k.clone(), Cow::Borrowed(*v)))
                .collect()
        })
        .unwrap_or_default();
    context_members.push((Cow::Borrowed(KEPT_FIELDS_KEY), Cow::Owned(object_of(&kept))));
    let context_value = object_of(&context_members);

    let event = Event {
        session_id: &session_id,
        category: &category,
        name: &name,
        data,
        timestamp: &timestamp,
        user_id: user_id.as_deref(),
        anonymous_id: anonymous_id.as_deref(),
        context: &context_value,
    };
    // Serialising strings and raw values cannot fail.
    let event = serde_json::value::to_raw_value(&event).unwrap_or_default();
    Ok(Translated {
        event,
        sent_at,
        sources: vec![
            ("session_id", session_source.to_owned()),
            ("category", category_source),
            ("name", name_source),
            ("data", data_source),
            ("timestamp", timestamp_source),
            ("user_id", "/userId".to_owned()),
            ("anonymous_id", "/anonymousId".to_owned()),
            ("context", "/context".to_owned()),
        ],
    })
}

const TYPES: &str = "a message's type is track, page, screen, identify, group or alias";

/// A user id, anonymous id or session id: a non-empty string, or a number
/// (some SDKs send numbers), as text. Empty or null is absent.
fn identity(value: Option<&RawValue>, field: &str) -> Result<Option<String>, TranslateError> {
    let Some(value) = value.filter(|v| v.get() != "null") else {
        return Ok(None);
    };
    let text = value.get();
    if text.starts_with(|c: char| c == '-' || c.is_ascii_digit()) {
        return Ok(Some(text.to_owned()));
    }
    match string_field(value) {
        Ok(s) if s.is_empty() => Ok(None),
        Ok(s) => Ok(Some(s.into_owned())),
        Err(m) => refuse(field, format!("`{}` {m}", field.replace('/', "."))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn received() -> Timestamp {
        Timestamp::parse("2024-05-01T12:00:00Z").unwrap()
    }

    fn run(message: Value) -> Result<(Value, Translated), TranslateError> {
        let raw = RawValue::from_string(message.to_string()).unwrap();
        let t = translate(&raw, received())?;
        let v = serde_json::from_str(t.event.get()).unwrap();
        Ok((v, t))
    }

    #[test]
    fn a_track_is_its_event_in_its_properties_category() {
        let (e, t) = run(json!({
            "type": "track", "event": "Order Completed", "userId": "u1", "anonymousId": "a1",
            "messageId": "m1", "properties": {"category": "checkout", "total": 30},
            "timestamp": "2024-05-01T11:59:00.123Z", "sentAt": "2024-05-01T11:59:01Z",
            "context": {"ip": "1.2.3.4", "library": {"name": "analytics-python"}},
            "integrations": {"All": true}, "version": 2
        }))
        .unwrap();
        assert_eq!(e["session_id"], "a1", "anonymousId before userId");
        assert_eq!(
            (e["category"].as_str(), e["name"].as_str()),
            (Some("checkout"), Some("Order Completed"))
        );
        assert_eq!(e["data"], json!({"category": "checkout", "total": 30}));
        assert_eq!(e["timestamp"], "2024-05-01T11:59:00.123Z");
        assert_eq!(
            (e["user_id"].as_str(), e["anonymous_id"].as_str()),
            (Some("u1"), Some("a1"))
        );
        assert_eq!(e["context"]["ip"], "1.2.3.4");
        assert_eq!(
            e["context"]["segment"],
            json!({"type": "track", "sentAt": "2024-05-01T11:59:01Z", "integrations": {"All": true}, "version": 2}),
            "every unmapped field is kept"
        );
        assert_eq!(t.sent_at, Timestamp::parse("2024-05-01T11:59:01Z").ok());
        assert_eq!(t.source_of("/data/total"), "/properties/total");
        assert_eq!(t.source_of("/name"), "/event");
        assert_eq!(t.source_of("/category"), "/properties/category");
        assert_eq!(t.source_of("/session_id"), "/anonymousId");
    }

    #[test]
    fn categories_and_names_follow_the_call() {
        let cases = [
            (
                json!({"type": "track", "event": "Clicked", "userId": "u"}),
                "track",
                "Clicked",
            ),
            (
                json!({"type": "page", "userId": "u", "name": "Home", "category": "Docs"}),
                "Docs",
                "Home",
            ),
            (json!({"type": "page", "userId": "u"}), "page", "page"),
            (
                json!({"type": "screen", "userId": "u", "name": "Settings"}),
                "screen",
                "Settings",
            ),
            (
                json!({"type": "identify", "userId": "u", "traits": {"plan": "pro"}}),
                "identify",
                "identify",
            ),
            (
                json!({"type": "group", "userId": "u", "groupId": "g", "traits": {}}),
                "group",
                "group",
            ),
            (
                json!({"type": "alias", "userId": "u", "previousId": "old"}),
                "alias",
                "alias",
            ),
        ];
        for (message, category, name) in cases {
            let (e, _) = run(message.clone()).unwrap();
            assert_eq!(
                (e["category"].as_str(), e["name"].as_str()),
                (Some(category), Some(name)),
                "{message}"
            );
        }
        let (e, _) =
            run(json!({"type": "identify", "userId": "u", "traits": {"plan": "pro"}})).unwrap();
        assert_eq!(e["data"], json!({"plan": "pro"}));
        let (e, t) = run(
            json!({"type": "identify", "userId": "u", "context": {"traits": {"plan": "rudder"}}}),
        )
        .unwrap();
        assert_eq!(e["data"], json!({"plan": "rudder"}), "RudderStack's traits");
        assert_eq!(
            e["context"]["traits"],
            json!({"plan": "rudder"}),
            "and kept where they were"
        );
        assert_eq!(t.source_of("/data/plan"), "/context/traits/plan");
        let (e, _) = run(json!({"type": "track", "event": "x", "userId": "u", "context": {"traits": {"plan": "p"}}})).unwrap();
        assert_eq!(
            e["data"],
            json!({}),
            "a track's data is its properties only"
        );
        let (e, _) = run(json!({"type": "group", "userId": "u", "groupId": "g"})).unwrap();
        assert_eq!(e["data"], json!({}));
        assert_eq!(e["context"]["segment"]["groupId"], "g");
        let (e, _) = run(
            json!({"type": "alias", "userId": "u", "previousId": "old", "properties": {"p": 1}}),
        )
        .unwrap();
        assert_eq!(e["data"], json!({}));
        assert_eq!(
            e["context"]["segment"]["properties"],
            json!({"p": 1}),
            "an alias's properties are kept too"
        );
    }

    #[test]
    fn the_session_is_the_context_session_then_anonymous_id_then_user_id() {
        let (e, t) = run(json!({"type": "page", "userId": "u", "anonymousId": "a", "context": {"sessionId": "s"}})).unwrap();
        assert_eq!(e["session_id"], "s");
        assert_eq!(t.source_of("/session_id"), "/context/sessionId");
        let (e, _) = run(json!({"type": "page", "userId": "u", "anonymousId": "a", "context": {"sessionId": ""}})).unwrap();
        assert_eq!(e["session_id"], "a");
        let (e, t) = run(json!({"type": "page", "userId": 42})).unwrap();
        assert_eq!(
            (e["session_id"].as_str(), e["user_id"].as_str()),
            (Some("42"), Some("42"))
        );
        assert_eq!(t.source_of("/session_id"), "/userId");
        let (e, _) = run(json!({"type": "page", "userId": "", "anonymousId": "a"})).unwrap();
        assert!(e.get("user_id").is_none(), "an empty userId is absent");
    }

    #[test]
    fn without_a_timestamp_the_time_received_with_nothing_to_correct() {
        let (e, t) = run(
            json!({"type": "track", "event": "x", "userId": "u", "sentAt": "2024-05-01T11:00:00Z"}),
        )
        .unwrap();
        assert_eq!(e["timestamp"], "2024-05-01T12:00:00.000000Z");
        assert_eq!(t.sent_at, None);
        let (e, t) = run(json!({"type": "track", "event": "x", "userId": "u", "originalTimestamp": "2024-05-01T11:00:00Z"})).unwrap();
        assert_eq!(e["timestamp"], "2024-05-01T11:00:00Z");
        assert_eq!(t.source_of("/timestamp"), "/originalTimestamp");
    }

    #[test]
    fn broken_messages_say_which_field_and_why() {
        let cases = [
            (
                json!({"type": "track", "userId": "u"}),
                Some("/event"),
                "needs `event`",
            ),
            (
                json!({"type": "track", "event": "x"}),
                Some("/anonymousId"),
                "`userId` or `anonymousId`",
            ),
            (
                json!({"event": "x", "userId": "u"}),
                Some("/type"),
                "`type` is missing",
            ),
            (
                json!({"type": "tracks", "userId": "u"}),
                Some("/type"),
                "unknown type",
            ),
            (
                json!({"type": "track", "event": 5, "userId": "u"}),
                Some("/event"),
                "must be a string",
            ),
            (
                json!({"type": "page", "userId": "u", "properties": []}),
                Some("/properties"),
                "must be an object",
            ),
            (
                json!({"type": "page", "userId": "u", "context": "x"}),
                Some("/context"),
                "must be an object",
            ),
            (
                json!({"type": "page", "userId": {"id": 1}}),
                Some("/userId"),
                "must be a string",
            ),
            (
                json!({"type": "page", "userId": "u", "messageId": ""}),
                Some("/messageId"),
                "1 to 256",
            ),
            (
                json!({"type": "page", "userId": "u", "sentAt": "soon"}),
                Some("/sentAt"),
                "`sentAt`",
            ),
            (
                json!({"type": "page", "userId": "u", "timestamp": 7}),
                Some("/timestamp"),
                "must be a string",
            ),
            (
                json!({"type": "page", "userId": "u", "context": {"segment": 1}}),
                Some("/context/segment"),
                "rename",
            ),
            (json!([1]), None, "must be a JSON object"),
        ];
        for (message, field, says) in cases {
            let e = run(message.clone()).map(|_| ()).unwrap_err();
            assert_eq!(e.field.as_deref(), field, "{message}");
            assert!(e.message.contains(says), "{message}: {}", e.message);
        }
        let raw =
            RawValue::from_string(r#"{"type":"page","userId":"u","userId":"v"}"#.into()).unwrap();
        let e = translate(&raw, received()).unwrap_err();
        assert!(e.message.contains("more than once"), "{}", e.message);
    }

    #[test]
    fn values_are_copied_as_text_never_through_floats() {
        let raw = RawValue::from_string(
            r#"{"type":"track","event":"x","userId":"u","properties":{"big":12345678901234567890123,"f":1.50},"context":{"n":1e300}}"#.into(),
        )
        .unwrap();
        let t = translate(&raw, received()).unwrap();
        assert!(
            t.event
                .get()
                .contains(r#""data":{"big":12345678901234567890123,"f":1.50}"#),
            "{}",
            t.event.get()
        );
        assert!(t.event.get().contains(r#""n":1e300"#), "{}", t.event.get());
    }
}
