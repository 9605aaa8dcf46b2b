//! A Segment request body, as ingest checks it: its shape and limits, the
//! write key it may carry, and each message filled in from the batch.
//!
//! Messages are not judged here: one bad message must not cost the others,
//! so each is queued and the processor records what is wrong with it.

use std::borrow::Cow;

use serde_json::value::RawValue;

use super::{MAX_MESSAGE_ID_CHARS, SegmentCall};
use crate::domain::envelope::{EnvelopeError, parse_json};
use crate::domain::raw_json::{RawObject, json_kind, string_field};

/// Size and count limits of one Segment request (Segment's own).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentLimits {
    /// Messages in one batch.
    pub max_messages: usize,
    /// Bytes in one body, after decompression.
    pub max_body_bytes: usize,
    /// Bytes in one message, as sent.
    pub max_message_bytes: usize,
}

impl Default for SegmentLimits {
    fn default() -> Self {
        Self {
            max_messages: 2500,
            max_body_bytes: 1024 * 1024,
            max_message_bytes: 32 * 1024,
        }
    }
}

/// A Segment body that ingest may queue.
#[derive(Debug)]
pub struct SegmentBody {
    /// The `writeKey` the body carried, if any (never queued).
    pub write_key: Option<String>,
    /// The messages, in order, each filled in from the batch.
    pub messages: Vec<SegmentMessage>,
}

/// One message to queue.
#[derive(Debug)]
pub struct SegmentMessage {
    /// Its `messageId`, when it is a usable one: the event's id.
    pub message_id: Option<String>,
    /// The message, with the batch's fields it lacked, without `writeKey`.
    pub raw: Box<RawValue>,
}

/// Checks a body sent to a Segment endpoint and takes it apart into messages.
pub fn parse_segment_body(
    body: &[u8],
    call: SegmentCall,
    limits: &SegmentLimits,
) -> Result<SegmentBody, EnvelopeError> {
    if body.len() > limits.max_body_bytes {
        return Err(EnvelopeError::BodyTooLarge {
            size: body.len(),
            max: limits.max_body_bytes,
        });
    }
    let root = parse_json(body)?;
    let invalid = |field: Option<&str>, message: String| EnvelopeError::InvalidBody {
        field: field.map(str::to_owned),
        message,
    };
    let object = match RawObject::parse(root) {
        Ok(object) if root.get().starts_with('{') => object,
        _ => {
            let expected = match call {
                SegmentCall::Batch => "{\"batch\": [...]}",
                SegmentCall::One(_) => "one message object",
            };
            return Err(invalid(
                None,
                format!("the body is {}; send {expected}", json_kind(root)),
            ));
        }
    };
    let mut write_key = write_key_of(&object)?;
    let (raw_messages, fills, forced_type) = match call {
        SegmentCall::Batch => {
            let Some(batch) = object.get("batch") else {
                return Err(invalid(
                    Some("batch"),
                    "a batch is {\"batch\": [...messages]}; `batch` is missing".into(),
                ));
            };
            if !batch.get().starts_with('[') {
                return Err(invalid(
                    Some("batch"),
                    format!(
                        "`batch` is {}; it must be an array of messages",
                        json_kind(batch)
                    ),
                ));
            }
            let messages: Vec<&RawValue> =
                serde_json::from_str(batch.get()).map_err(crate::domain::envelope::malformed)?;
            let fills: Vec<(Cow<'_, str>, &RawValue)> = object
                .0
                .iter()
                .filter(|(k, _)| k != "batch" && k != "writeKey")
                .cloned()
                .collect();
            (messages, fills, None)
        }
        SegmentCall::One(t) => (vec![root], Vec::new(), Some(t.as_str())),
    };
    if raw_messages.is_empty() {
        return Err(EnvelopeError::EmptyBatch);
    }
    if raw_messages.len() > limits.max_messages {
        return Err(EnvelopeError::TooManyEvents {
            count: raw_messages.len(),
            max: limits.max_messages,
        });
    }
    let mut messages = Vec::with_capacity(raw_messages.len());
    for (index, raw) in raw_messages.into_iter().enumerate() {
        if raw.get().len() > limits.max_message_bytes {
            return Err(EnvelopeError::EventTooLarge {
                index,
                size: raw.get().len(),
                max: limits.max_message_bytes,
            });
        }
        let Some(message) = RawObject::parse(raw)
            .ok()
            .filter(|_| raw.get().starts_with('{'))
        else {
            // Not an object: queued as it is, and recorded as invalid.
            messages.push(SegmentMessage {
                message_id: None,
                raw: raw.to_owned(),
            });
            continue;
        };
        if write_key.is_none() {
            write_key = write_key_of(&message)?;
        }
        messages.push(SegmentMessage {
            message_id: usable_message_id(message.get("messageId")),
            raw: filled_in(&message, &fills, forced_type),
        });
    }
    Ok(SegmentBody {
        write_key,
        messages,
    })
}

fn write_key_of(object: &RawObject<'_>) -> Result<Option<String>, EnvelopeError> {
    match object.get("writeKey") {
        None => Ok(None),
        Some(v) if v.get() == "null" => Ok(None),
        Some(v) => {
            string_field(v)
                .map(|k| Some(k.into_owned()))
                .map_err(|m| EnvelopeError::InvalidBody {
                    field: Some("writeKey".into()),
                    message: format!("`writeKey` {m}; send your Eye key as a string"),
                })
        }
    }
}

/// A `messageId` that can be an event id: a string of 1 to
/// [`MAX_MESSAGE_ID_CHARS`] characters without control characters.
pub(super) fn usable_message_id(value: Option<&RawValue>) -> Option<String> {
    let id = string_field(value?).ok()?;
    let chars = id.chars().count();
    ((1..=MAX_MESSAGE_ID_CHARS).contains(&chars) && !id.chars().any(char::is_control))
        .then(|| id.into_owned())
}

/// The message with what the batch gives and it lacks: top-level fields it
/// does not have, and `context` and `integrations` merged key by key (the
/// message's own keys win). `writeKey` is left out; `type` is the endpoint's
/// when the endpoint names one.
fn filled_in(
    message: &RawObject<'_>,
    fills: &[(Cow<'_, str>, &RawValue)],
    forced_type: Option<&str>,
) -> Box<RawValue> {
    let mut members: Vec<(Cow<'_, str>, Cow<'_, RawValue>)> = Vec::new();
    for (key, value) in &message.0 {
        let value = match (key.as_ref(), forced_type) {
            ("writeKey", _) => continue,
            ("type", Some(t)) => Cow::Owned(json_string(t)),
            ("context" | "integrations", _) => match fills.iter().find(|(k, _)| k == key) {
                Some((_, batch)) => merged(value, batch),
                None => Cow::Borrowed(*value),
            },
            _ => Cow::Borrowed(*value),
        };
        members.push((key.clone(), value));
    }
    for (key, value) in fills {
        if message.get(key).is_none() {
            members.push((key.clone(), Cow::Borrowed(*value)));
        }
    }
    if let Some(t) = forced_type.filter(|_| message.get("type").is_none()) {
        members.push((Cow::Borrowed("type"), Cow::Owned(json_string(t))));
    }
    object_of(&members)
}

/// `own` with the members of `batch` it lacks, when both are objects; else `own`.
fn merged<'a>(own: &'a RawValue, batch: &RawValue) -> Cow<'a, RawValue> {
    let (Ok(own_members), Ok(batch_members)) = (RawObject::parse(own), RawObject::parse(batch))
    else {
        return Cow::Borrowed(own);
    };
    if !own.get().starts_with('{') || !batch.get().starts_with('{') {
        return Cow::Borrowed(own);
    }
    let mut members: Vec<(Cow<'_, str>, Cow<'_, RawValue>)> = own_members
        .0
        .iter()
        .map(|(k, v)| (k.clone(), Cow::Borrowed(*v)))
        .collect();
    for (key, value) in &batch_members.0 {
        if own_members.get(key).is_none() {
            members.push((key.clone(), Cow::Borrowed(*value)));
        }
    }
    Cow::Owned(object_of(&members))
}

/// A JSON object of raw members, in order.
pub(super) fn object_of(members: &[(Cow<'_, str>, Cow<'_, RawValue>)]) -> Box<RawValue> {
    let mut text = String::from("{");
    for (i, (key, value)) in members.iter().enumerate() {
        if i > 0 {
            text.push(',');
        }
        text.push_str(json_string(key).get());
        text.push(':');
        text.push_str(value.get());
    }
    text.push('}');
    // Keys are escaped by serde_json and values were valid JSON: valid JSON.
    RawValue::from_string(text).unwrap_or_default()
}

/// A string as a JSON value.
pub(super) fn json_string(s: &str) -> Box<RawValue> {
    // Serialising a string cannot fail.
    serde_json::value::to_raw_value(s).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::segment::SegmentType;

    fn parse(body: &str, call: SegmentCall) -> Result<SegmentBody, EnvelopeError> {
        parse_segment_body(body.as_bytes(), call, &SegmentLimits::default())
    }

    fn value(raw: &RawValue) -> serde_json::Value {
        serde_json::from_str(raw.get()).unwrap()
    }

    #[test]
    fn a_batch_fills_each_message_in_and_keeps_its_own_fields() {
        let body = r#"{"batch":[
            {"type":"track","event":"Signed Up","userId":"u1","messageId":"m-1","context":{"ip":"1.2.3.4","page":{"path":"/own"}}},
            {"type":"page","anonymousId":"a1","messageId":"m-2","integrations":{"All":false}},
            {"type":"identify","userId":"u1","sentAt":"2024-01-01T00:00:01Z"}
        ],"sentAt":"2024-01-01T00:00:00Z","context":{"page":{"path":"/batch"},"library":{"name":"x"}},"integrations":{"All":true,"Foo":true},"writeKey":"eye_key"}"#;
        let got = parse(body, SegmentCall::Batch).unwrap();
        assert_eq!(got.write_key.as_deref(), Some("eye_key"));
        assert_eq!(got.messages.len(), 3);
        let ids: Vec<_> = got
            .messages
            .iter()
            .map(|m| m.message_id.as_deref())
            .collect();
        assert_eq!(ids, [Some("m-1"), Some("m-2"), None]);
        let first = value(&got.messages[0].raw);
        assert_eq!(
            first["context"]["page"]["path"], "/own",
            "the message's own keys win"
        );
        assert_eq!(first["context"]["library"]["name"], "x");
        assert_eq!(first["context"]["ip"], "1.2.3.4");
        assert_eq!(first["integrations"]["Foo"], true);
        assert_eq!(first["sentAt"], "2024-01-01T00:00:00Z");
        let second = value(&got.messages[1].raw);
        assert_eq!(
            second["integrations"],
            serde_json::json!({"All": false, "Foo": true})
        );
        let third = value(&got.messages[2].raw);
        assert_eq!(third["sentAt"], "2024-01-01T00:00:01Z");
        for m in &got.messages {
            assert!(!m.raw.get().contains("writeKey") && !m.raw.get().contains("eye_key"));
        }
    }

    #[test]
    fn numbers_and_bytes_of_a_message_survive_the_filling_in() {
        let body = r#"{"batch":[{"type":"track","event":"e","userId":"u","properties":{"big":12345678901234567890123,"x":1.50}}],"context":{"n":1e300}}"#;
        let got = parse(body, SegmentCall::Batch).unwrap();
        let raw = got.messages[0].raw.get();
        assert!(
            raw.contains(r#""properties":{"big":12345678901234567890123,"x":1.50}"#),
            "{raw}"
        );
        assert!(raw.contains(r#""context":{"n":1e300}"#), "{raw}");
    }

    #[test]
    fn a_single_call_takes_its_type_from_the_path() {
        let got = parse(
            r#"{"event":"Clicked","anonymousId":"a","writeKey":"k"}"#,
            SegmentCall::One(SegmentType::Track),
        )
        .unwrap();
        assert_eq!(got.write_key.as_deref(), Some("k"));
        let m = value(&got.messages[0].raw);
        assert_eq!(m["type"], "track");
        assert!(m.get("writeKey").is_none());
        let got = parse(
            r#"{"type":"track","name":"Home"}"#,
            SegmentCall::One(SegmentType::Page),
        )
        .unwrap();
        assert_eq!(value(&got.messages[0].raw)["type"], "page");
    }

    #[test]
    fn shapes_and_limits_are_refused_whole() {
        let batch = SegmentCall::Batch;
        assert!(matches!(
            parse("[1]", batch),
            Err(EnvelopeError::InvalidBody { .. })
        ));
        assert!(
            matches!(parse("{}", batch), Err(EnvelopeError::InvalidBody { field: Some(f), .. }) if f == "batch")
        );
        assert!(matches!(
            parse(r#"{"batch":{}}"#, batch),
            Err(EnvelopeError::InvalidBody { .. })
        ));
        assert!(matches!(
            parse(r#"{"batch":[]}"#, batch),
            Err(EnvelopeError::EmptyBatch)
        ));
        assert!(matches!(
            parse("{\"batch\":[", batch),
            Err(EnvelopeError::MalformedJson { .. })
        ));
        assert!(
            matches!(parse(r#"{"batch":[],"writeKey":7}"#, batch), Err(EnvelopeError::InvalidBody { field: Some(f), .. }) if f == "writeKey")
        );
        let many = format!("{{\"batch\":[{}]}}", vec!["{}"; 2501].join(","));
        assert!(matches!(
            parse(&many, batch),
            Err(EnvelopeError::TooManyEvents {
                count: 2501,
                max: 2500
            })
        ));
        let big = format!(r#"{{"batch":[{{}},{{"p":"{}"}}]}}"#, "x".repeat(32 * 1024));
        assert!(matches!(
            parse(&big, batch),
            Err(EnvelopeError::EventTooLarge { index: 1, .. })
        ));
        let huge = "x".repeat(1024 * 1024 + 1);
        assert!(matches!(
            parse(&huge, batch),
            Err(EnvelopeError::BodyTooLarge { .. })
        ));
    }

    #[test]
    fn a_message_that_is_not_an_object_is_kept_for_the_processor() {
        let got = parse(
            r#"{"batch":[7,{"type":"page","userId":"u"}]}"#,
            SegmentCall::Batch,
        )
        .unwrap();
        assert_eq!(got.messages[0].raw.get(), "7");
        assert_eq!(got.messages.len(), 2);
    }

    #[test]
    fn only_usable_message_ids_become_event_ids() {
        let raw = |s: &str| RawValue::from_string(s.to_owned()).unwrap();
        assert_eq!(
            usable_message_id(Some(&raw("\"ajs-1\""))).as_deref(),
            Some("ajs-1")
        );
        assert_eq!(usable_message_id(Some(&raw("\"\""))), None);
        assert_eq!(usable_message_id(Some(&raw("12"))), None);
        assert_eq!(usable_message_id(Some(&raw("\"a\\u0001\""))), None);
        let long = format!("\"{}\"", "m".repeat(MAX_MESSAGE_ID_CHARS + 1));
        assert_eq!(usable_message_id(Some(&raw(&long))), None);
        assert_eq!(usable_message_id(None), None);
    }
}
