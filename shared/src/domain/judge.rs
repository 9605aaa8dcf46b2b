//! Judging one queued event: store it, or record why not. (Processing a
//! batch of them is the use case in `app::process`.)

use std::borrow::Cow;

use serde_json::Value;
use serde_json::value::RawValue;

use super::envelope::parse_event;
use super::keys::Seq;
use super::model::{ErrorCode, ErrorRecord, StoredEvent};
use super::schema::{SchemaCheck, SchemaRegistry};
use super::segment::translate;
use super::time::Timestamp;

/// How deep objects and arrays may nest in `data`, itself counted as one: the
/// most serde_json reads (its recursion limit; a unit test finds the edge).
pub const MAX_DATA_DEPTH: usize = 127;

/// The processor's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    /// How far past `received_at` a timestamp may be, in microseconds.
    pub max_skew_micros: i64,
    /// Refuse event types that have no schema.
    pub strict_types: bool,
}

impl Default for Rules {
    fn default() -> Self {
        Self {
            max_skew_micros: i64::from(crate::config::MAX_SKEW_SECS) * 1_000_000,
            strict_types: false,
        }
    }
}

/// What becomes of one event.
#[derive(Debug)]
pub enum Verdict {
    /// Valid: store it.
    Store(StoredEvent),
    /// Invalid: record it as an error, with the raw event.
    Reject(ErrorRecord),
}

/// The request an event came with.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// The application, from its API key.
    pub app: &'a str,
    /// When ingest accepted the request.
    pub received_at: Timestamp,
    /// The request's `sent_at`, if any.
    pub sent_at: Option<Timestamp>,
}

/// Segment's skew correction: `timestamp = received_at - (sent_at - original)`.
/// The client's clock may be wrong, but the interval between the event and the
/// send, measured on that one clock, is right; it is replayed on the server's clock.
pub fn corrected_timestamp(
    original: Timestamp,
    sent_at: Timestamp,
    received_at: Timestamp,
) -> Timestamp {
    let elapsed = sent_at.as_micros().saturating_sub(original.as_micros());
    received_at.add_micros(elapsed.saturating_neg())
}

/// Judges one event against the envelope rules, the clock and its schema.
pub fn judge(
    ctx: Context<'_>,
    event_id: &str,
    raw: &RawValue,
    schemas: &SchemaRegistry,
    rules: Rules,
) -> Verdict {
    judge_as(
        ctx,
        event_id,
        (raw, raw),
        &|field| field.to_owned(),
        schemas,
        rules,
    )
}

/// Judges one Segment message: translated into an event, then judged as
/// one, with an error record that keeps the message and points into it.
pub fn judge_segment(
    ctx: Context<'_>,
    event_id: &str,
    message: &RawValue,
    schemas: &SchemaRegistry,
    rules: Rules,
) -> Verdict {
    match translate(message, ctx.received_at) {
        Ok(t) => {
            let ctx = Context {
                sent_at: t.sent_at,
                ..ctx
            };
            judge_as(
                ctx,
                event_id,
                (&t.event, message),
                &|field| t.source_of(field),
                schemas,
                rules,
            )
        }
        Err(e) => Verdict::Reject(ErrorRecord {
            error_id: Seq::derive(ctx.app, event_id).to_hex(),
            code: ErrorCode::InvalidEvent,
            message: e.message,
            field: e.field,
            app: ctx.app.to_owned(),
            received_at: ctx.received_at,
            event_id: event_id.to_owned(),
            event: message.to_owned(),
        }),
    }
}

/// Judges `checked`; an error record keeps `kept` (the event as it was
/// sent), with its field renamed by `source`.
fn judge_as(
    ctx: Context<'_>,
    event_id: &str,
    (raw, kept): (&RawValue, &RawValue),
    source: &dyn Fn(&str) -> String,
    schemas: &SchemaRegistry,
    rules: Rules,
) -> Verdict {
    let reject = |code: ErrorCode, field: Option<String>, message: String| {
        Verdict::Reject(ErrorRecord {
            error_id: Seq::derive(ctx.app, event_id).to_hex(),
            code,
            message,
            field: field.map(|f| source(&f)),
            app: ctx.app.to_owned(),
            received_at: ctx.received_at,
            event_id: event_id.to_owned(),
            event: kept.to_owned(),
        })
    };

    let event = match parse_event(raw) {
        Ok(event) => event,
        Err(problems) => {
            let field = problems
                .iter()
                .find_map(|p| p.field.as_ref())
                .map(|f| format!("/{f}"));
            let message = problems
                .into_iter()
                .map(|p| p.message)
                .collect::<Vec<_>>()
                .join("; ");
            return reject(ErrorCode::InvalidEvent, field, message);
        }
    };

    let original = event.timestamp;
    let timestamp = match ctx.sent_at {
        Some(sent_at) => corrected_timestamp(original, sent_at, ctx.received_at),
        None => original,
    };
    let latest = ctx.received_at.add_micros(rules.max_skew_micros);
    if timestamp > latest {
        let ahead = (timestamp.as_micros() - ctx.received_at.as_micros()) / 1_000_000;
        let corrected = if ctx.sent_at.is_some() {
            " (after skew correction with sent_at)"
        } else {
            ""
        };
        return reject(
            ErrorCode::TimestampInFuture,
            Some("/timestamp".into()),
            format!(
                "timestamp {timestamp}{corrected} is {ahead}s after the event was received at {}; at most {}s of clock skew is allowed. Fix the sender's clock, or send sent_at so The Eye can correct it",
                ctx.received_at,
                rules.max_skew_micros / 1_000_000
            ),
        );
    }
    if timestamp.as_micros() < 0 {
        return reject(
            ErrorCode::InvalidEvent,
            Some("/timestamp".into()),
            format!(
                "the skew-corrected timestamp falls before 1970 (timestamp {original}, sent_at {}); check the request's sent_at",
                ctx.sent_at.map(|t| t.to_string()).unwrap_or_default()
            ),
        );
    }

    // The envelope checked the syntax of `data` and `context` only: their
    // values may still be beyond what JSON values can hold here (and in a
    // DynamoDB map). Say so, rather than let the schema blame a `null`.
    let unreadable = |field: &str, e: serde_json::Error| {
        reject(
            ErrorCode::InvalidEvent,
            Some(format!("/{field}")),
            format!(
                "`{field}` cannot be read as JSON values: {e}; numbers must fit a 64-bit float (at most about 1.8e308), strings must be whole Unicode (no lone surrogate such as \\ud800), and objects and arrays may nest at most {MAX_DATA_DEPTH} levels"
            ),
        )
    };
    let data: Value = match serde_json::from_str(event.data.get()) {
        Ok(data) => data,
        Err(e) => return unreadable("data", e),
    };
    if let Some(context) = event.context {
        if let Err(e) = serde_json::from_str::<Value>(context.get()) {
            return unreadable("context", e);
        }
    }
    match schemas.check(&event.category, &event.name, &data) {
        SchemaCheck::Valid => {}
        SchemaCheck::UnknownType if !rules.strict_types => {}
        SchemaCheck::UnknownType => {
            return reject(
                ErrorCode::UnknownEventType,
                None,
                format!(
                    "no schema is registered for event type {:?}/{:?}; add one to the schemas directory or fix the category and name",
                    event.category, event.name
                ),
            );
        }
        SchemaCheck::Invalid { field, message } => {
            return reject(ErrorCode::PayloadInvalid, Some(field), message);
        }
    }

    Verdict::Store(StoredEvent {
        event_id: event_id.to_owned(),
        app: ctx.app.to_owned(),
        session_id: event.session_id.into_owned(),
        category: event.category.into_owned(),
        name: event.name.into_owned(),
        data: event.data.to_owned(),
        timestamp,
        original_timestamp: ctx.sent_at.map(|_| original),
        received_at: ctx.received_at,
        user_id: event.user_id.map(Cow::into_owned),
        anonymous_id: event.anonymous_id.map(Cow::into_owned),
        context: event.context.map(RawValue::to_owned),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        Timestamp::parse(s).unwrap()
    }

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_owned()).unwrap()
    }

    fn event(name: &str, data: &str, timestamp: &str) -> Box<RawValue> {
        raw(&format!(
            r#"{{"session_id":"s1","category":"page interaction","name":"{name}","data":{data},"timestamp":"{timestamp}"}}"#
        ))
    }

    fn ctx(received: &str, sent_at: Option<&str>) -> Context<'static> {
        Context {
            app: "shop",
            received_at: ts(received),
            sent_at: sent_at.map(ts),
        }
    }

    fn run(ctx: Context<'_>, raw: &RawValue, rules: Rules) -> Verdict {
        judge(ctx, "id-1", raw, &SchemaRegistry::builtin().unwrap(), rules)
    }

    #[test]
    fn skew_correction_follows_segments_rule() {
        // Client clock 1h behind: it says it sent at 08:16:00 an event from 08:15:00.
        let t = corrected_timestamp(
            ts("2021-01-01 08:15:00"),
            ts("2021-01-01 08:16:00"),
            ts("2021-01-01 09:16:02"),
        );
        assert_eq!(t, ts("2021-01-01 09:15:02"));
        // A correct clock changes nothing but the transit time.
        let t = corrected_timestamp(
            ts("2021-01-01 09:15:00"),
            ts("2021-01-01 09:16:00"),
            ts("2021-01-01 09:16:00"),
        );
        assert_eq!(t, ts("2021-01-01 09:15:00"));
    }

    #[test]
    fn valid_event_is_stored_with_keys() {
        let e = event(
            "pageview",
            r#"{"host":"h","path":"/"}"#,
            "2021-01-01 09:15:27.243860",
        );
        match run(ctx("2021-01-01 09:16:00", None), &e, Rules::default()) {
            Verdict::Store(s) => {
                assert_eq!(s.app, "shop");
                assert_eq!(s.timestamp, ts("2021-01-01 09:15:27.243860"));
                assert!(s.original_timestamp.is_none());
                assert!(s.session_key().starts_with("2021-01-01T09:15:27.243860Z#"));
                assert_eq!(s.session_key(), s.time_key());
                assert_eq!(s.data.get(), r#"{"host":"h","path":"/"}"#);
            }
            Verdict::Reject(r) => panic!("{r:?}"),
        }
    }

    #[test]
    fn sent_at_corrects_and_keeps_the_original() {
        let e = event(
            "pageview",
            r#"{"host":"h","path":"/"}"#,
            "2030-01-01 00:00:00",
        );
        match run(
            ctx("2021-01-01 09:16:00", Some("2030-01-01 00:00:10")),
            &e,
            Rules::default(),
        ) {
            Verdict::Store(s) => {
                assert_eq!(s.timestamp, ts("2021-01-01 09:15:50"));
                assert_eq!(s.original_timestamp, Some(ts("2030-01-01 00:00:00")));
                assert!(s.session_key().starts_with("2030-01-01T00:00:00.000000Z#"));
                assert!(s.time_key().starts_with("2021-01-01T09:15:50.000000Z#"));
            }
            Verdict::Reject(r) => panic!("{r:?}"),
        }
    }

    #[test]
    fn future_timestamp_is_an_error_record() {
        let e = event(
            "pageview",
            r#"{"host":"h","path":"/"}"#,
            "2021-01-01 09:21:01",
        );
        match run(ctx("2021-01-01 09:16:00", None), &e, Rules::default()) {
            Verdict::Reject(r) => {
                assert_eq!(r.code, ErrorCode::TimestampInFuture);
                assert_eq!(r.field.as_deref(), Some("/timestamp"));
                assert!(r.message.contains("301s after"), "{}", r.message);
                assert_eq!(r.event.get(), e.get());
                assert_eq!(r.error_id, Seq::derive("shop", "id-1").to_hex());
            }
            Verdict::Store(_) => panic!("stored a future event"),
        }
        // Exactly at the limit is fine.
        let e = event(
            "pageview",
            r#"{"host":"h","path":"/"}"#,
            "2021-01-01 09:21:00",
        );
        assert!(matches!(
            run(ctx("2021-01-01 09:16:00", None), &e, Rules::default()),
            Verdict::Store(_)
        ));
        // The limit is configurable.
        let strict = Rules {
            max_skew_micros: 0,
            ..Rules::default()
        };
        let e = event(
            "pageview",
            r#"{"host":"h","path":"/"}"#,
            "2021-01-01 09:16:00.000001",
        );
        assert!(matches!(
            run(ctx("2021-01-01 09:16:00", None), &e, strict),
            Verdict::Reject(_)
        ));
    }

    #[test]
    fn bad_payload_names_the_field() {
        let e = event(
            "cta click",
            r#"{"host":"h","path":"/"}"#,
            "2021-01-01 09:15:00",
        );
        match run(ctx("2021-01-01 09:16:00", None), &e, Rules::default()) {
            Verdict::Reject(r) => {
                assert_eq!(r.code, ErrorCode::PayloadInvalid);
                assert_eq!(r.field.as_deref(), Some("/data/element"));
            }
            Verdict::Store(_) => panic!("stored an invalid payload"),
        }
    }

    #[test]
    fn unknown_types_pass_unless_strict() {
        let e = event("scroll", r#"{"depth":3}"#, "2021-01-01 09:15:00");
        assert!(matches!(
            run(ctx("2021-01-01 09:16:00", None), &e, Rules::default()),
            Verdict::Store(_)
        ));
        let strict = Rules {
            strict_types: true,
            ..Rules::default()
        };
        match run(ctx("2021-01-01 09:16:00", None), &e, strict) {
            Verdict::Reject(r) => assert_eq!(r.code, ErrorCode::UnknownEventType),
            Verdict::Store(_) => panic!("strict mode stored an unknown type"),
        }
    }

    #[test]
    fn a_queued_event_that_breaks_the_envelope_is_recorded_not_lost() {
        let e = raw(r#"{"session_id":"s1","category":"c","name":"n","data":{},"timestamp":"bad"}"#);
        match run(ctx("2021-01-01 09:16:00", None), &e, Rules::default()) {
            Verdict::Reject(r) => {
                assert_eq!(r.code, ErrorCode::InvalidEvent);
                assert_eq!(r.field.as_deref(), Some("/timestamp"));
            }
            Verdict::Store(_) => panic!(),
        }
    }

    /// `data` nested `depth` levels deep (1 is `{}`).
    fn nested(depth: usize) -> String {
        format!(
            "{}{{}}{}",
            r#"{"a":"#.repeat(depth - 1),
            "}".repeat(depth - 1)
        )
    }

    /// These used to pass the envelope, then become `payload_invalid` with
    /// "/data: null is not of type object", which blamed the wrong thing.
    #[test]
    fn data_beyond_what_json_values_hold_names_its_real_cause() {
        let too_deep = nested(MAX_DATA_DEPTH + 1);
        for (data, cause) in [
            (
                r#"{"host":"h","path":"/","n":1e400}"#,
                "number out of range",
            ),
            (r#"{"host":"h","path":"/\ud800"}"#, "surrogate"),
            (too_deep.as_str(), "recursion limit"),
        ] {
            let raw = event("pageview", data, "2021-01-01 09:15:00");
            match run(ctx("2021-01-01 09:16:00", None), &raw, Rules::default()) {
                Verdict::Reject(r) => {
                    assert_eq!(r.code, ErrorCode::InvalidEvent, "{data}");
                    assert_eq!(r.field.as_deref(), Some("/data"));
                    assert!(r.message.contains(cause), "{cause} not in {}", r.message);
                    assert_eq!(r.event.get(), raw.get(), "the raw event is kept");
                }
                Verdict::Store(_) => panic!("stored {data}"),
            }
        }
    }

    #[test]
    fn a_context_beyond_json_values_names_the_context_and_identities_are_kept() {
        let base = r#"{"session_id":"s1","category":"c","name":"n","data":{},"timestamp":"2021-01-01 09:15:00","user_id":"u","anonymous_id":"a""#;
        let bad = raw(&format!(r#"{base},"context":{{"n":1e400}}}}"#));
        match run(ctx("2021-01-01 09:16:00", None), &bad, Rules::default()) {
            Verdict::Reject(r) => {
                assert_eq!(r.field.as_deref(), Some("/context"));
                assert!(r.message.contains("number out of range"), "{}", r.message);
            }
            Verdict::Store(_) => panic!("stored a context of 1e400"),
        }
        let good = raw(&format!(r#"{base},"context":{{"page":{{"path":"/"}}}}}}"#));
        match run(ctx("2021-01-01 09:16:00", None), &good, Rules::default()) {
            Verdict::Store(e) => {
                assert_eq!(e.user_id.as_deref(), Some("u"));
                assert_eq!(e.anonymous_id.as_deref(), Some("a"));
                assert_eq!(e.context.unwrap().get(), r#"{"page":{"path":"/"}}"#);
            }
            Verdict::Reject(r) => panic!("{}", r.message),
        }
    }

    #[test]
    fn data_at_the_nesting_limit_is_judged_as_usual() {
        let raw = raw(&format!(
            r#"{{"session_id":"s1","category":"c","name":"unschemed","data":{},"timestamp":"2021-01-01 09:15:00"}}"#,
            nested(MAX_DATA_DEPTH)
        ));
        match run(ctx("2021-01-01 09:16:00", None), &raw, Rules::default()) {
            Verdict::Store(e) => assert_eq!(e.name, "unschemed"),
            Verdict::Reject(r) => panic!("{}", r.message),
        }
    }
}
