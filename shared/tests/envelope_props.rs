//! Property tests: the envelope parser, the judge of each event it accepts,
//! and the timestamp parser never panic, whatever bytes arrive, and what they
//! accept keeps its invariants. 2,000 cases a property in every test run.

use std::sync::OnceLock;

use eye_shared::domain::{
    Context, EnvelopeError, Limits, Rules, SchemaRegistry, Timestamp, Verdict, judge, parse_body,
};
use proptest::prelude::*;

const SEED: &str = r#"[{"session_id":"e2085be5-9137-4e4e-80b5-f1ffddc25423","category":"page interaction","name":"pageview","data":{"host":"www.consumeraffairs.com","path":"/"},"timestamp":"2021-01-01 09:15:27.243860"},{"session_id":"s","category":"form interaction","name":"submit","data":{"form":{"a":"\u00e9"}},"timestamp":"2021-01-01T09:15:27+02:00","event_id":"x"}]"#;

fn check(body: &[u8]) {
    let limits = Limits {
        max_events: 50,
        max_body_bytes: 64 * 1024,
        max_event_bytes: 2048,
    };
    match parse_body(body, &limits) {
        Ok(env) => {
            assert!(!env.events.is_empty() && env.events.len() <= limits.max_events);
            for e in &env.events {
                assert!(e.raw.get().len() <= limits.max_event_bytes);
                assert!(e.data.get().starts_with('{'));
                let n = e.session_id.chars().count();
                assert!((1..=128).contains(&n));
                judged(e.raw);
            }
        }
        Err(EnvelopeError::InvalidEvents(details)) => {
            assert!(!details.is_empty());
            assert!(details.iter().all(|d| !d.message.is_empty()));
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
}

/// What the processor makes of an accepted event: a verdict, never a panic;
/// a refusal says why.
fn judged(raw: &serde_json::value::RawValue) {
    static SCHEMAS: OnceLock<SchemaRegistry> = OnceLock::new();
    let schemas = SCHEMAS.get_or_init(|| SchemaRegistry::builtin().unwrap());
    let ctx = Context {
        app: "shop",
        received_at: Timestamp::now(),
        sent_at: None,
    };
    match judge(ctx, "id", raw, schemas, Rules::default()) {
        Verdict::Store(e) => assert_eq!(e.app, "shop"),
        Verdict::Reject(r) => {
            assert!(!r.message.is_empty());
            assert_eq!(r.event.get(), raw.get(), "the raw event is kept");
        }
    }
}

/// A JSON value of bounded size.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        ".{0,12}".prop_map(serde_json::Value::from),
        Just(serde_json::Value::from("2021-01-01 09:15:27.243860")),
    ];
    leaf.prop_recursive(4, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("session_id".to_owned()),
                    Just("category".to_owned()),
                    Just("name".to_owned()),
                    Just("data".to_owned()),
                    Just("timestamp".to_owned()),
                    Just("event_id".to_owned()),
                    Just("events".to_owned()),
                    Just("sent_at".to_owned()),
                    "[a-z_]{1,8}",
                ],
                inner,
                0..7,
            )
            .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..2048)) {
        check(&body);
    }

    #[test]
    fn mutated_valid_bodies_never_panic(
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut body = SEED.as_bytes().to_vec();
        for (at, byte, op) in edits {
            let i = at.index(body.len());
            match op {
                0 => body[i] = byte,
                1 => body.insert(i, byte),
                _ => { body.remove(i); }
            }
        }
        check(&body);
        check(&body[..cut.index(body.len() + 1)]);
    }

    #[test]
    fn arbitrary_json_shapes_never_panic(value in json_value()) {
        check(value.to_string().as_bytes());
        check(serde_json::json!([value.clone()]).to_string().as_bytes());
        check(serde_json::json!({"events": [value]}).to_string().as_bytes());
    }

    #[test]
    fn timestamps_never_panic_and_round_trip(s in ".{0,40}") {
        if let Ok(t) = Timestamp::parse(&s) {
            prop_assert_eq!(Timestamp::parse(&t.to_rfc3339()).unwrap(), t);
        }
    }

    #[test]
    fn generated_timestamps_round_trip(micros in 0i64..253_402_300_799_999_999) {
        let t = Timestamp::from_micros(micros);
        prop_assert_eq!(Timestamp::parse(&t.to_rfc3339()).unwrap(), t);
    }
}
