//! The ingest envelope: what an application may POST, checked field by field.
//!
//! Parsing borrows from the request body: strings without escapes and every
//! `data` payload are slices of it, never copies. Every refusal says where the
//! problem is (event index and field) and what to do about it.

use std::borrow::Cow;

use serde_json::value::RawValue;

pub use super::raw_json::json_kind;
use super::raw_json::{RawObject, string_field};
use super::time::{TIMESTAMP_FORMS, Timestamp};

/// Size and count limits of one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Events in one request.
    pub max_events: usize,
    /// Bytes in one request body.
    pub max_body_bytes: usize,
    /// Bytes in one event, as sent.
    pub max_event_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_events: 500,
            max_body_bytes: 1024 * 1024,
            max_event_bytes: 32 * 1024,
        }
    }
}

/// Maximum length of `session_id`, in characters.
pub const MAX_SESSION_ID_CHARS: usize = 128;
/// Maximum length of `category` and `name`, in characters.
pub const MAX_TYPE_CHARS: usize = 64;
/// Maximum length of a client `event_id`, in characters.
pub const MAX_EVENT_ID_CHARS: usize = 64;
/// Maximum length of `user_id` and `anonymous_id`, in characters.
pub const MAX_IDENTITY_CHARS: usize = 256;
/// Most field errors listed in one answer.
pub const MAX_DETAILS: usize = 100;

/// A request body that passed every envelope check.
#[derive(Debug)]
pub struct Envelope<'a> {
    /// When the client says it sent the request (for skew correction).
    pub sent_at: Option<Timestamp>,
    /// The events, in request order.
    pub events: Vec<EventInput<'a>>,
}

/// One event that passed the envelope checks.
#[derive(Debug, Clone)]
pub struct EventInput<'a> {
    /// The event exactly as sent.
    pub raw: &'a RawValue,
    /// The application's session identifier.
    pub session_id: Cow<'a, str>,
    /// Event category, such as `page interaction`.
    pub category: Cow<'a, str>,
    /// Event name, such as `pageview`.
    pub name: Cow<'a, str>,
    /// The payload: always a JSON object.
    pub data: &'a RawValue,
    /// When the event happened, by the client's clock.
    pub timestamp: Timestamp,
    /// The client's idempotency key, if it sent one.
    pub event_id: Option<Cow<'a, str>>,
    /// Who the user is, by the application's own id, if known.
    pub user_id: Option<Cow<'a, str>>,
    /// The device's or browser's id for a user not (yet) known.
    pub anonymous_id: Option<Cow<'a, str>>,
    /// Where the event happened (page, device, library...): a JSON object.
    pub context: Option<&'a RawValue>,
}

/// One problem with one field of one event.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FieldError {
    /// Position of the event in the request; absent for envelope fields.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
    /// The field's name; absent when the whole event is at fault.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// What is wrong and how to fix it.
    pub message: String,
}

/// Why a request body was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// The body is larger than [`Limits::max_body_bytes`].
    #[error("the request body is {size} bytes; the limit is {max} bytes")]
    BodyTooLarge { size: usize, max: usize },
    /// The body is not JSON.
    #[error("the request body is not valid JSON: {reason} at line {line} column {column}")]
    MalformedJson {
        line: usize,
        column: usize,
        reason: String,
    },
    /// Valid JSON, but not one of the accepted shapes.
    #[error("{message}")]
    InvalidBody {
        field: Option<String>,
        message: String,
    },
    /// No events at all.
    #[error("the request has no events")]
    EmptyBatch,
    /// More events than [`Limits::max_events`].
    #[error("the request has {count} events; the limit is {max}")]
    TooManyEvents { count: usize, max: usize },
    /// One event is larger than [`Limits::max_event_bytes`].
    #[error("event {index} is {size} bytes; the limit is {max} bytes per event")]
    EventTooLarge {
        index: usize,
        size: usize,
        max: usize,
    },
    /// Events with invalid fields; at most [`MAX_DETAILS`] are listed.
    #[error("{} invalid field(s)", .0.len())]
    InvalidEvents(Vec<FieldError>),
}

/// Parses and checks a request body: one event object, an array of events, or
/// `{"events": [...], "sent_at": "..."}`. All or nothing: any problem refuses the body.
pub fn parse_body<'a>(body: &'a [u8], limits: &Limits) -> Result<Envelope<'a>, EnvelopeError> {
    if body.len() > limits.max_body_bytes {
        return Err(EnvelopeError::BodyTooLarge {
            size: body.len(),
            max: limits.max_body_bytes,
        });
    }
    let root = parse_json(body)?;

    let (sent_at, raw_events) = match root.get().as_bytes().first() {
        Some(b'[') => (None, parse_array(root)?),
        Some(b'{') => {
            let object = RawObject::parse(root).map_err(malformed)?;
            if object.get("events").is_some() {
                parse_batch_object(object)?
            } else {
                (None, vec![root])
            }
        }
        _ => {
            return Err(EnvelopeError::InvalidBody {
                field: None,
                message: format!(
                    "the body is {}; send an event object, an array of events, or {{\"events\": [...]}}",
                    json_kind(root)
                ),
            });
        }
    };

    if raw_events.is_empty() {
        return Err(EnvelopeError::EmptyBatch);
    }
    if raw_events.len() > limits.max_events {
        return Err(EnvelopeError::TooManyEvents {
            count: raw_events.len(),
            max: limits.max_events,
        });
    }
    if let Some((index, raw)) = raw_events
        .iter()
        .enumerate()
        .find(|(_, raw)| raw.get().len() > limits.max_event_bytes)
    {
        return Err(EnvelopeError::EventTooLarge {
            index,
            size: raw.get().len(),
            max: limits.max_event_bytes,
        });
    }

    let mut events = Vec::with_capacity(raw_events.len());
    let mut errors = Vec::new();
    for (index, raw) in raw_events.into_iter().enumerate() {
        match parse_event(raw) {
            Ok(event) => events.push(event),
            Err(problems) => errors.extend(problems.into_iter().map(|mut p| {
                p.index = Some(index);
                p
            })),
        }
    }
    if !errors.is_empty() {
        errors.truncate(MAX_DETAILS);
        return Err(EnvelopeError::InvalidEvents(errors));
    }
    Ok(Envelope { sent_at, events })
}

fn parse_array(root: &RawValue) -> Result<Vec<&RawValue>, EnvelopeError> {
    serde_json::from_str(root.get()).map_err(malformed)
}

fn parse_batch_object(
    object: RawObject<'_>,
) -> Result<(Option<Timestamp>, Vec<&RawValue>), EnvelopeError> {
    let invalid = |field: &str, message: String| EnvelopeError::InvalidBody {
        field: Some(field.to_owned()),
        message,
    };
    let mut sent_at = None;
    let mut events = None;
    for (key, value) in &object.0 {
        match key.as_ref() {
            "events" => {
                if !value.get().starts_with('[') {
                    return Err(invalid(
                        "events",
                        format!(
                            "`events` is {}; it must be an array of event objects",
                            json_kind(value)
                        ),
                    ));
                }
                events = Some(parse_array(value)?);
            }
            "sent_at" => {
                if value.get() == "null" {
                    continue;
                }
                let text = string_field(value)
                    .map_err(|m| invalid("sent_at", format!("`sent_at` {m}")))?;
                let at = Timestamp::parse(&text).map_err(|e| {
                    invalid(
                        "sent_at",
                        format!("`sent_at` {}: {TIMESTAMP_FORMS}", e.reason),
                    )
                })?;
                sent_at = Some(at);
            }
            other => {
                return Err(invalid(
                    other,
                    format!(
                        "unknown field `{other}` in a batch; a batch is {{\"events\": [...], \"sent_at\": \"...\"}}"
                    ),
                ));
            }
        }
    }
    if object.has_duplicates() {
        return Err(invalid(
            "events",
            "a batch field is given more than once".into(),
        ));
    }
    Ok((sent_at, events.unwrap_or_default()))
}

/// Parses and checks one event. Used by ingest, and again by the processor on
/// what it takes off the queue, so both apply the very same rules.
pub fn parse_event(raw: &RawValue) -> Result<EventInput<'_>, Vec<FieldError>> {
    let whole = |message: String| {
        vec![FieldError {
            index: None,
            field: None,
            message,
        }]
    };
    if !raw.get().starts_with('{') {
        return Err(whole(format!(
            "an event must be a JSON object, got {}",
            json_kind(raw)
        )));
    }
    if raw.get().contains(['\u{FFFE}', '\u{FFFF}']) {
        return Err(whole(
            "the event contains the noncharacter U+FFFE or U+FFFF, which queues cannot carry; send it escaped (\\uFFFF) or remove it".into(),
        ));
    }
    let object = RawObject::parse(raw).map_err(|e| whole(e.to_string()))?;

    let mut errors = Vec::new();
    let mut fail = |field: &str, message: String| {
        errors.push(FieldError {
            index: None,
            field: Some(field.to_owned()),
            message,
        })
    };

    let mut seen = Seen::default();
    for (key, _) in &object.0 {
        let slot = match key.as_ref() {
            "session_id" => &mut seen.session_id,
            "category" => &mut seen.category,
            "name" => &mut seen.name,
            "data" => &mut seen.data,
            "timestamp" => &mut seen.timestamp,
            "event_id" => &mut seen.event_id,
            "user_id" => &mut seen.user_id,
            "anonymous_id" => &mut seen.anonymous_id,
            "context" => &mut seen.context,
            other => {
                fail(
                    other,
                    format!(
                        "unknown field `{other}`; an event has session_id, category, name, data, timestamp and optional event_id, user_id, anonymous_id and context"
                    ),
                );
                continue;
            }
        };
        if *slot {
            fail(key, format!("`{key}` is given more than once"));
        }
        *slot = true;
    }

    let session_id = text_field(&object, "session_id", 1, MAX_SESSION_ID_CHARS, &mut fail);
    let category = text_field(&object, "category", 1, MAX_TYPE_CHARS, &mut fail);
    let name = text_field(&object, "name", 1, MAX_TYPE_CHARS, &mut fail);

    let data = match object.get("data") {
        None => {
            fail(
                "data",
                "`data` is required: a JSON object with the event's payload".into(),
            );
            None
        }
        Some(value) if value.get().starts_with('{') => Some(value),
        Some(value) => {
            fail(
                "data",
                format!("`data` must be a JSON object, got {}", json_kind(value)),
            );
            None
        }
    };

    let timestamp = match object.get("timestamp") {
        None => {
            fail(
                "timestamp",
                format!("`timestamp` is required: {TIMESTAMP_FORMS}"),
            );
            None
        }
        Some(value) => match string_field(value) {
            Err(m) => {
                fail("timestamp", format!("`timestamp` {m}; {TIMESTAMP_FORMS}"));
                None
            }
            Ok(text) => match Timestamp::parse(&text) {
                Ok(t) => Some(t),
                Err(e) => {
                    fail(
                        "timestamp",
                        format!("`timestamp` {:?}: {}; {TIMESTAMP_FORMS}", e.input, e.reason),
                    );
                    None
                }
            },
        },
    };

    let mut optional_text = |field: &str, max: usize| match object.get(field) {
        Some(value) if value.get() != "null" => {
            text_field(&object, field, 1, max, &mut fail).map(Some)
        }
        _ => Some(None),
    };
    let event_id = optional_text("event_id", MAX_EVENT_ID_CHARS);
    let user_id = optional_text("user_id", MAX_IDENTITY_CHARS);
    let anonymous_id = optional_text("anonymous_id", MAX_IDENTITY_CHARS);

    let context = match object.get("context") {
        Some(value) if value.get().starts_with('{') => Some(Some(value)),
        Some(value) if value.get() == "null" => Some(None),
        None => Some(None),
        Some(value) => {
            fail(
                "context",
                format!("`context` must be a JSON object, got {}", json_kind(value)),
            );
            None
        }
    };

    match (
        session_id,
        category,
        name,
        data,
        timestamp,
        event_id,
        (user_id, anonymous_id, context),
    ) {
        (
            Some(session_id),
            Some(category),
            Some(name),
            Some(data),
            Some(timestamp),
            Some(event_id),
            (Some(user_id), Some(anonymous_id), Some(context)),
        ) if errors.is_empty() => Ok(EventInput {
            raw,
            session_id,
            category,
            name,
            data,
            timestamp,
            event_id,
            user_id,
            anonymous_id,
            context,
        }),
        _ => Err(errors),
    }
}

#[derive(Default)]
struct Seen {
    session_id: bool,
    category: bool,
    name: bool,
    data: bool,
    timestamp: bool,
    event_id: bool,
    user_id: bool,
    anonymous_id: bool,
    context: bool,
}

fn text_field<'a>(
    object: &RawObject<'a>,
    field: &str,
    min: usize,
    max: usize,
    fail: &mut impl FnMut(&str, String),
) -> Option<Cow<'a, str>> {
    let Some(value) = object.get(field) else {
        fail(
            field,
            format!("`{field}` is required: a string of {min} to {max} characters"),
        );
        return None;
    };
    let text = match string_field(value) {
        Ok(text) => text,
        Err(m) => {
            fail(field, format!("`{field}` {m} of {min} to {max} characters"));
            return None;
        }
    };
    let chars = text.chars().count();
    if chars < min || chars > max {
        fail(
            field,
            format!("`{field}` has {chars} characters; it must have {min} to {max}"),
        );
        return None;
    }
    if text.chars().any(char::is_control) {
        fail(
            field,
            format!("`{field}` contains a control character; remove it"),
        );
        return None;
    }
    Some(text)
}

/// A syntax error in the whole body, with a plainer reason where serde_json's
/// is obscure: a trailing comma before `}` or `]` (as in the seed's example).
/// A request body as one raw JSON value, or where and why it is not JSON.
pub(crate) fn parse_json(body: &[u8]) -> Result<&RawValue, EnvelopeError> {
    let text = std::str::from_utf8(body).map_err(|e| {
        let (line, column) = line_col(body, e.valid_up_to());
        EnvelopeError::MalformedJson {
            line,
            column,
            reason: "invalid UTF-8".into(),
        }
    })?;
    serde_json::from_str(text).map_err(|e| malformed_in(text, e))
}

fn malformed_in(text: &str, e: serde_json::Error) -> EnvelopeError {
    let mut error = malformed(e);
    if let EnvelopeError::MalformedJson {
        line,
        column,
        reason,
    } = &mut error
    {
        let offset = text
            .split_inclusive('\n')
            .take(line.saturating_sub(1))
            .map(str::len)
            .sum::<usize>()
            + column.saturating_sub(1);
        let at = text.as_bytes().get(offset).copied();
        let before = text.as_bytes()[..offset.min(text.len())]
            .iter()
            .rev()
            .find(|b| !b.is_ascii_whitespace())
            .copied();
        if matches!(at, Some(b'}' | b']')) && before == Some(b',') {
            *reason = "trailing comma (remove the comma before the closing bracket)".into();
        }
    }
    error
}

pub(crate) fn malformed(e: serde_json::Error) -> EnvelopeError {
    let reason = e.to_string();
    // serde_json appends " at line L column C"; keep only the reason.
    let reason = match reason.find(" at line ") {
        Some(cut) => reason[..cut].to_owned(),
        None => reason,
    };
    EnvelopeError::MalformedJson {
        line: e.line(),
        column: e.column(),
        reason,
    }
}

fn line_col(body: &[u8], offset: usize) -> (usize, usize) {
    let before = &body[..offset.min(body.len())];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let column = before.iter().rev().take_while(|&&b| b != b'\n').count() + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED_PAGEVIEW: &str = r#"{
  "session_id": "e2085be5-9137-4e4e-80b5-f1ffddc25423",
  "category": "page interaction",
  "name": "pageview",
  "data": {"host": "www.consumeraffairs.com", "path": "/"},
  "timestamp": "2021-01-01 09:15:27.243860"
}"#;

    fn parse(body: &str) -> Result<Envelope<'_>, EnvelopeError> {
        parse_body(body.as_bytes(), &Limits::default())
    }

    fn details(body: &str) -> Vec<FieldError> {
        match parse(body) {
            Err(EnvelopeError::InvalidEvents(d)) => d,
            other => panic!("expected invalid_event, got {other:?}"),
        }
    }

    fn event_with(field: &str, value: &str) -> String {
        let mut v: serde_json::Value = serde_json::from_str(SEED_PAGEVIEW).unwrap();
        v[field] = serde_json::from_str(value).unwrap();
        v.to_string()
    }

    #[test]
    fn single_event_object() {
        let env = parse(SEED_PAGEVIEW).unwrap();
        assert_eq!(env.events.len(), 1);
        let e = &env.events[0];
        assert_eq!(e.session_id, "e2085be5-9137-4e4e-80b5-f1ffddc25423");
        assert_eq!(e.category, "page interaction");
        assert_eq!(e.name, "pageview");
        assert_eq!(e.timestamp.to_rfc3339(), "2021-01-01T09:15:27.243860Z");
        assert!(e.data.get().contains("consumeraffairs"));
        assert!(e.event_id.is_none());
        assert!(env.sent_at.is_none());
        assert!(
            matches!(e.session_id, Cow::Borrowed(_)),
            "no copy for plain strings"
        );
    }

    #[test]
    fn array_and_batch_object_forms() {
        let array = format!("[{SEED_PAGEVIEW}, {SEED_PAGEVIEW}]");
        assert_eq!(parse(&array).unwrap().events.len(), 2);

        let batch =
            format!(r#"{{"events": [{SEED_PAGEVIEW}], "sent_at": "2021-01-01T09:16:00Z"}}"#);
        let env = parse(&batch).unwrap();
        assert_eq!(env.events.len(), 1);
        assert_eq!(
            env.sent_at.unwrap().to_rfc3339(),
            "2021-01-01T09:16:00.000000Z"
        );

        let no_sent_at = format!(r#"{{"events": [{SEED_PAGEVIEW}]}}"#);
        assert!(parse(&no_sent_at).unwrap().sent_at.is_none());
    }

    #[test]
    fn seed_trailing_comma_is_malformed_json_with_position() {
        let seed = r#"{
  "session_id": "e2085be5-9137-4e4e-80b5-f1ffddc25423",
  "category": "page interaction",
  "name": "pageview",
  "data": {
    "host": "www.consumeraffairs.com",
    "path": "/",
  },
  "timestamp": "2021-01-01 09:15:27.243860"
}"#;
        match parse(seed) {
            Err(EnvelopeError::MalformedJson {
                line,
                column,
                reason,
            }) => {
                assert_eq!(line, 8);
                assert_eq!(column, 3);
                assert!(reason.contains("trailing comma"), "{reason}");
            }
            other => panic!("expected malformed_json, got {other:?}"),
        }
    }

    #[test]
    fn not_utf8_is_malformed_json() {
        let body = b"{\"a\":\"\xff\"}";
        assert!(matches!(
            parse_body(body, &Limits::default()),
            Err(EnvelopeError::MalformedJson {
                line: 1,
                column: 7,
                ..
            })
        ));
    }

    #[test]
    fn wrong_top_level_shapes() {
        for body in ["42", "\"event\"", "null", "true"] {
            assert!(
                matches!(parse(body), Err(EnvelopeError::InvalidBody { .. })),
                "{body}"
            );
        }
        assert!(matches!(
            parse(r#"{"events": 3}"#),
            Err(EnvelopeError::InvalidBody { field: Some(f), .. }) if f == "events"
        ));
        assert!(matches!(
            parse(r#"{"events": [], "extra": 1}"#),
            Err(EnvelopeError::InvalidBody { field: Some(f), .. }) if f == "extra"
        ));
        assert!(matches!(
            parse(r#"{"events": [], "sent_at": "soon"}"#),
            Err(EnvelopeError::InvalidBody { field: Some(f), .. }) if f == "sent_at"
        ));
    }

    #[test]
    fn empty_and_too_many() {
        assert_eq!(parse("[]").unwrap_err(), EnvelopeError::EmptyBatch);
        assert_eq!(
            parse(r#"{"events": []}"#).unwrap_err(),
            EnvelopeError::EmptyBatch
        );
        let many = format!("[{}]", vec![SEED_PAGEVIEW; 501].join(","));
        assert_eq!(
            parse(&many).unwrap_err(),
            EnvelopeError::TooManyEvents {
                count: 501,
                max: 500
            }
        );
        let max = format!("[{}]", vec![SEED_PAGEVIEW; 500].join(","));
        assert_eq!(parse(&max).unwrap().events.len(), 500);
    }

    #[test]
    fn body_and_event_size_limits() {
        let limits = Limits {
            max_body_bytes: 100,
            ..Limits::default()
        };
        assert!(matches!(
            parse_body(&[b' '; 101], &limits),
            Err(EnvelopeError::BodyTooLarge {
                size: 101,
                max: 100
            })
        ));
        let big = "x".repeat(33 * 1024);
        let large = event_with(
            "data",
            &format!(r#"{{"host":"h","path":"/","blob":"{big}"}}"#),
        );
        let body = format!("[{SEED_PAGEVIEW}, {large}]");
        assert!(matches!(
            parse(&body),
            Err(EnvelopeError::EventTooLarge {
                index: 1,
                max: 32768,
                ..
            })
        ));
    }

    #[test]
    fn every_missing_field_is_reported_with_index() {
        let body = format!(r#"[{SEED_PAGEVIEW}, {{}}]"#);
        let d = details(&body);
        let fields: Vec<_> = d.iter().map(|e| e.field.clone().unwrap()).collect();
        assert_eq!(
            fields,
            ["session_id", "category", "name", "data", "timestamp"]
        );
        assert!(d.iter().all(|e| e.index == Some(1)));
        assert!(d.iter().all(|e| e.message.contains("required")));
    }

    #[test]
    fn field_type_and_length_errors() {
        let cases = [
            ("session_id", "\"\"", "1 to 128"),
            (
                "session_id",
                &format!("\"{}\"", "s".repeat(129)),
                "129 characters",
            ),
            ("session_id", "\"a\\u0001b\"", "control character"),
            ("session_id", "42", "must be a string, got a number"),
            ("category", &format!("\"{}\"", "c".repeat(65)), "1 to 64"),
            ("name", "null", "must be a string, got null"),
            ("data", "[1]", "must be a JSON object, got an array"),
            ("data", "\"text\"", "must be a JSON object, got a string"),
            (
                "timestamp",
                "\"2021-13-01 00:00:00\"",
                "no such calendar date",
            ),
            ("timestamp", "1609492527", "must be a string"),
            ("event_id", &format!("\"{}\"", "e".repeat(65)), "1 to 64"),
            ("event_id", "7", "must be a string"),
        ];
        for (field, value, expect) in cases {
            let d = details(&event_with(field, value));
            assert_eq!(d.len(), 1, "{field}={value}: {d:?}");
            assert_eq!(d[0].field.as_deref(), Some(field));
            assert_eq!(d[0].index, Some(0));
            assert!(
                d[0].message.contains(expect),
                "{field}={value}: {}",
                d[0].message
            );
        }
    }

    #[test]
    fn multibyte_lengths_count_characters_not_bytes() {
        let session = "é".repeat(128); // 256 bytes, 128 characters
        assert!(parse(&event_with("session_id", &format!("\"{session}\""))).is_ok());
    }

    #[test]
    fn event_id_optional_and_null_means_absent() {
        let body = event_with("event_id", "null");
        let env = parse(&body).unwrap();
        assert!(env.events[0].event_id.is_none());
        let body = event_with("event_id", "\"abc-1\"");
        let env = parse(&body).unwrap();
        assert_eq!(env.events[0].event_id.as_deref(), Some("abc-1"));
    }

    #[test]
    fn identities_and_context_are_optional_and_checked() {
        let env = parse(SEED_PAGEVIEW).unwrap();
        let e = &env.events[0];
        assert!(e.user_id.is_none() && e.anonymous_id.is_none() && e.context.is_none());
        let mut v: serde_json::Value = serde_json::from_str(SEED_PAGEVIEW).unwrap();
        v["user_id"] = "u-1".into();
        v["anonymous_id"] = "a-1".into();
        v["context"] = serde_json::json!({"page": {"url": "https://x/"}, "n": 1});
        let body = v.to_string();
        let env = parse(&body).unwrap();
        let e = &env.events[0];
        assert_eq!(e.user_id.as_deref(), Some("u-1"));
        assert_eq!(e.anonymous_id.as_deref(), Some("a-1"));
        assert_eq!(
            e.context.unwrap().get(),
            r#"{"n":1,"page":{"url":"https://x/"}}"#
        );
        for null in ["user_id", "anonymous_id", "context"] {
            let body = event_with(null, "null");
            let env = parse(&body).unwrap();
            let e = &env.events[0];
            assert!(e.user_id.is_none() && e.anonymous_id.is_none() && e.context.is_none());
        }
        let too_long = format!("\"{}\"", "u".repeat(MAX_IDENTITY_CHARS + 1));
        for (field, value, says) in [
            ("user_id", too_long.as_str(), "it must have 1 to 256"),
            ("anonymous_id", "\"\"", "it must have 1 to 256"),
            ("user_id", "42", "must be a string"),
            ("anonymous_id", "\"a\\u0007\"", "control character"),
            (
                "context",
                "[]",
                "`context` must be a JSON object, got an array",
            ),
            (
                "context",
                "\"page\"",
                "`context` must be a JSON object, got a string",
            ),
        ] {
            let d = details(&event_with(field, value));
            assert_eq!(d.len(), 1, "{field} {value}: {d:?}");
            assert_eq!(d[0].field.as_deref(), Some(field));
            assert!(
                d[0].message.contains(says),
                "{field} {value}: {}",
                d[0].message
            );
        }
    }

    #[test]
    fn unknown_and_duplicate_fields_are_refused() {
        let typo = SEED_PAGEVIEW.replace("\"session_id\"", "\"sesion_id\"");
        let d = details(&typo);
        assert!(d.iter().any(
            |e| e.field.as_deref() == Some("sesion_id") && e.message.contains("unknown field")
        ));
        assert!(d.iter().any(|e| e.field.as_deref() == Some("session_id")));

        let dup =
            SEED_PAGEVIEW.replace("\"name\": \"pageview\"", "\"name\": \"a\", \"name\": \"b\"");
        let d = details(&dup);
        assert_eq!(d[0].field.as_deref(), Some("name"));
        assert!(d[0].message.contains("more than once"));
    }

    #[test]
    fn non_object_event_in_array() {
        let d = details(&format!("[{SEED_PAGEVIEW}, 3]"));
        assert_eq!(
            d,
            vec![FieldError {
                index: Some(1),
                field: None,
                message: "an event must be a JSON object, got a number".into()
            }]
        );
    }

    #[test]
    fn noncharacters_that_sqs_refuses_are_refused_unless_escaped() {
        let d = details(&SEED_PAGEVIEW.replace("pageview", "page\u{FFFF}view"));
        assert!(d[0].message.contains("U+FFFF"), "{:?}", d);
        let escaped = SEED_PAGEVIEW.replace("pageview", "page\\uffffview");
        assert_eq!(parse(&escaped).unwrap().events[0].name, "page\u{FFFF}view");
    }

    #[test]
    fn escaped_strings_are_decoded() {
        let body = event_with("category", "\"page\\u0020interaction\"");
        let env = parse(&body).unwrap();
        assert_eq!(env.events[0].category, "page interaction");
    }

    #[test]
    fn details_are_capped() {
        let body = format!("[{}]", vec!["{}"; 300].join(","));
        assert_eq!(details(&body).len(), MAX_DETAILS);
    }
}
