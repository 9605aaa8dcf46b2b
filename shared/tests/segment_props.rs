//! Property tests of the Segment parser and translation: whatever bytes or
//! message shapes arrive, ingest's body check and the processor's judging of
//! each message never panic, and every refusal says why. 2,000 cases a
//! property in every test run.

use std::sync::OnceLock;

use eye_shared::domain::segment::{SegmentCall, SegmentLimits, SegmentType, parse_segment_body};
use eye_shared::domain::{Context, Rules, SchemaRegistry, Timestamp, Verdict, judge_segment};
use proptest::prelude::*;
use serde_json::Value;

const SDK_BATCH: &str = r#"{"batch":[{"type":"track","event":"Order Completed","userId":"u1","anonymousId":"a1","messageId":"m-1","properties":{"category":"checkout","total":30.5},"timestamp":"2024-05-01T11:59:00.123Z","context":{"library":{"name":"analytics-python"},"traits":{"plan":"pro"}}},{"type":"page","anonymousId":"a1","name":"Home","properties":{"path":"/"}},{"type":"identify","userId":"u1","traits":{"plan":"pro"},"sentAt":"2024-05-01T12:00:00Z"}],"sentAt":"2024-05-01T12:00:01Z","context":{"ip":"1.2.3.4"},"writeKey":"eye_k"}"#;

fn calls() -> impl Strategy<Value = SegmentCall> {
    prop_oneof![
        Just(SegmentCall::Batch),
        prop::sample::select(SegmentType::ALL.to_vec()).prop_map(SegmentCall::One),
    ]
}

fn check(body: &[u8], call: SegmentCall) {
    static SCHEMAS: OnceLock<SchemaRegistry> = OnceLock::new();
    let schemas = SCHEMAS.get_or_init(|| SchemaRegistry::builtin().unwrap());
    let limits = SegmentLimits {
        max_messages: 50,
        max_body_bytes: 64 * 1024,
        max_message_bytes: 4096,
    };
    match parse_segment_body(body, call, &limits) {
        Ok(parsed) => {
            assert!(!parsed.messages.is_empty() && parsed.messages.len() <= limits.max_messages);
            for m in &parsed.messages {
                if let Ok(Value::Object(top)) = serde_json::from_str::<Value>(m.raw.get()) {
                    assert!(!top.contains_key("writeKey"), "writeKey is never queued");
                }
                let ctx = Context {
                    app: "web",
                    received_at: Timestamp::now(),
                    sent_at: None,
                };
                let id = m.message_id.as_deref().unwrap_or("generated");
                match judge_segment(ctx, id, &m.raw, schemas, Rules::default()) {
                    Verdict::Store(e) => {
                        assert_eq!(e.app, "web");
                        assert_eq!(e.event_id, id);
                        assert!(!e.session_id.is_empty());
                        assert!(e.data.get().starts_with('{'));
                        let context: Value =
                            serde_json::from_str(e.context.as_ref().unwrap().get()).unwrap();
                        assert!(context["segment"]["type"].is_string(), "{context}");
                    }
                    Verdict::Reject(r) => {
                        assert!(!r.message.is_empty());
                        assert_eq!(r.event.get(), m.raw.get(), "the message is kept as queued");
                        if let Some(field) = &r.field {
                            assert!(field.starts_with('/'), "{field}");
                        }
                    }
                }
            }
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
}

/// A JSON value of bounded size, with Segment's field names likely.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
        prop::sample::select(vec![
            "track",
            "page",
            "identify",
            "alias",
            "2024-05-01T12:00:00Z",
            ""
        ])
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    prop::sample::select(vec![
                        "batch",
                        "type",
                        "event",
                        "name",
                        "category",
                        "userId",
                        "anonymousId",
                        "messageId",
                        "properties",
                        "traits",
                        "context",
                        "sessionId",
                        "timestamp",
                        "originalTimestamp",
                        "sentAt",
                        "integrations",
                        "writeKey",
                        "segment",
                    ])
                    .prop_map(str::to_owned),
                    "[a-zA-Z]{1,8}",
                ],
                inner,
                0..8,
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..2048), call in calls()) {
        check(&body, call);
    }

    #[test]
    fn mutated_sdk_batches_never_panic(
        cuts in prop::collection::vec((0usize..SDK_BATCH.len(), any::<u8>()), 1..6),
        call in calls(),
    ) {
        let mut body = SDK_BATCH.as_bytes().to_vec();
        for (at, byte) in cuts {
            body[at] = byte;
        }
        check(&body, call);
    }

    #[test]
    fn arbitrary_message_shapes_never_panic(value in json_value(), call in calls()) {
        check(value.to_string().as_bytes(), call);
        let batch = serde_json::json!({"batch": [value.clone(), value], "context": {"x": 1}});
        check(batch.to_string().as_bytes(), SegmentCall::Batch);
    }
}

#[test]
fn the_sdk_batch_itself_is_stored_whole() {
    check(SDK_BATCH.as_bytes(), SegmentCall::Batch);
    let schemas = SchemaRegistry::builtin().unwrap();
    let parsed = parse_segment_body(
        SDK_BATCH.as_bytes(),
        SegmentCall::Batch,
        &SegmentLimits::default(),
    )
    .unwrap();
    assert_eq!(parsed.write_key.as_deref(), Some("eye_k"));
    let ctx = Context {
        app: "web",
        received_at: Timestamp::now(),
        sent_at: None,
    };
    let stored = parsed
        .messages
        .iter()
        .filter(|m| {
            matches!(
                judge_segment(ctx, "id", &m.raw, &schemas, Rules::default()),
                Verdict::Store(_)
            )
        })
        .count();
    assert_eq!(
        stored, 3,
        "the fixture is a valid batch, so the properties start from one"
    );
}
