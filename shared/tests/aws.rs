//! The AWS adapters against an emulator speaking the AWS wire protocol (moto).
//! `scripts/test` starts moto and sets `EYE_TEST_MOTO_URL`; without it these
//! tests fail, they never skip.

#![cfg(feature = "aws")]

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{AttributeValue, KeyType, ProjectionType, ScalarAttributeType};
use aws_sdk_sqs::types::QueueAttributeName;
use eye_shared::adapters::aws::dynamodb::{DynamoConfig, DynamoStore};
use eye_shared::adapters::aws::resources::{Resources, bootstrap};
use eye_shared::adapters::aws::sqs::{MAX_MESSAGE_BYTES, SqsDeadLetters, SqsPoller, SqsQueue};
use eye_shared::adapters::aws::{CallCounts, DynamoClient, SdkConfig, SqsClient, sdk_config};
use eye_shared::domain::{ErrorCode, QueuedBatch, Rules, SchemaRegistry, StoredEvent, Timestamp};
use eye_shared::lambda::sqs_trigger;
use eye_shared::ports::*;
use serde_json::value::RawValue;

mod common;

use common::{batch, event, page, processor, raw};

fn moto_url() -> String {
    std::env::var("EYE_TEST_MOTO_URL").expect(
        "EYE_TEST_MOTO_URL is not set: run ./scripts/test, which starts the AWS emulator (moto) for these tests",
    )
}

async fn sdk() -> SdkConfig {
    sdk_config(Some(&moto_url())).await
}

fn unique(name: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "t{}-{}-{name}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

struct Env {
    sdk: SdkConfig,
    resources: Resources,
    queue_url: String,
    dlq_url: String,
    store: DynamoStore,
    counts: Arc<CallCounts>,
}

async fn env(shards: u16, max_receive_count: u32) -> Env {
    let sdk = sdk().await;
    let mut resources = Resources::new(&unique("eye"));
    resources.queue.visibility_timeout_secs = 1;
    resources.queue.max_receive_count = max_receive_count;
    let done = bootstrap(&sdk, &resources).await.expect("bootstrap");
    let counts = Arc::new(CallCounts::default());
    let store = DynamoStore::new(
        DynamoClient::new(&sdk),
        DynamoConfig {
            events_table: resources.events.name.clone(),
            errors_table: resources.errors.name.clone(),
            shards,
            retention_days: Some(30),
        },
        counts.clone(),
    );
    Env {
        queue_url: done.queue_url,
        dlq_url: done.dlq_url,
        sdk,
        resources,
        store,
        counts,
    }
}

#[tokio::test]
async fn bootstrap_creates_string_keyed_tables_indexes_and_a_redriving_queue() {
    let e = env(4, 5).await;
    let ddb = DynamoClient::new(&e.sdk);
    for spec in [&e.resources.events, &e.resources.errors] {
        let table = ddb
            .describe_table()
            .table_name(&spec.name)
            .send()
            .await
            .unwrap()
            .table
            .unwrap();
        // moto accepts key types real AWS would refuse, so assert them here.
        for def in table.attribute_definitions() {
            assert_eq!(
                def.attribute_type(),
                &ScalarAttributeType::S,
                "{}",
                def.attribute_name()
            );
        }
        let hash = table
            .key_schema()
            .iter()
            .find(|k| k.key_type() == &KeyType::Hash)
            .unwrap();
        assert_eq!(hash.attribute_name(), spec.hash_key);
        let mut names: Vec<&str> = table
            .global_secondary_indexes()
            .iter()
            .map(|g| g.index_name().unwrap())
            .collect();
        names.sort();
        let mut expected: Vec<&str> = spec.indexes.iter().map(|i| i.name).collect();
        expected.sort();
        assert_eq!(names, expected);
        for g in table.global_secondary_indexes() {
            let spec_index = spec
                .indexes
                .iter()
                .find(|i| Some(i.name) == g.index_name())
                .unwrap();
            let keys: Vec<(&str, &KeyType)> = g
                .key_schema()
                .iter()
                .map(|k| (k.attribute_name(), k.key_type()))
                .collect();
            assert_eq!(
                keys,
                [
                    (spec_index.hash_key, &KeyType::Hash),
                    (spec_index.range_key, &KeyType::Range)
                ]
            );
            assert_eq!(
                g.projection().and_then(|p| p.projection_type()),
                Some(&ProjectionType::All)
            );
        }
    }
    let sqs = SqsClient::new(&e.sdk);
    let attrs = sqs
        .get_queue_attributes()
        .queue_url(&e.queue_url)
        .attribute_names(QueueAttributeName::All)
        .send()
        .await
        .unwrap();
    let redrive = attrs
        .attributes()
        .unwrap()
        .get(&QueueAttributeName::RedrivePolicy)
        .unwrap();
    let redrive: serde_json::Value = serde_json::from_str(redrive).unwrap();
    assert_eq!(
        redrive["maxReceiveCount"].to_string().trim_matches('"'),
        "5"
    );
    // Running it again creates nothing and changes nothing.
    let again = bootstrap(&e.sdk, &e.resources).await.unwrap();
    assert!(again.created.is_empty(), "{:?}", again.created);
    assert_eq!(again.queue_url, e.queue_url);
}

#[tokio::test]
async fn the_queue_packs_large_requests_under_the_message_limit_in_order() {
    let e = env(1, 5).await;
    let queue = SqsQueue::new(SqsClient::new(&e.sdk), &e.queue_url, e.counts.clone());
    let blob = "x".repeat(2000);
    let events: Vec<(String, Box<RawValue>)> = (0..500)
        .map(|i| {
            (
                format!("e{i:03}"),
                event(
                    "s",
                    "c",
                    "n",
                    "2021-01-01 00:00:00",
                    &format!("/{i}/{blob}"),
                ),
            )
        })
        .collect();
    queue.enqueue(&batch("shop", &events)).await.unwrap();
    let small: Vec<(String, Box<RawValue>)> = (0..3)
        .map(|i| {
            (
                format!("small{i}"),
                event("s", "c", "n", "2021-01-01 00:00:00", "/"),
            )
        })
        .collect();
    queue.enqueue(&batch("shop", &small)).await.unwrap();
    let counts = e.counts.snapshot();
    assert_eq!(counts["sqs_events"], 503);
    let messages = counts["sqs_messages"].as_u64().unwrap();
    assert!(
        (5..=6).contains(&messages),
        "~1 MB in ≤250 KiB messages, plus one small: {messages}"
    );

    let poller = SqsPoller::new(SqsClient::new(&e.sdk), &e.queue_url, "us-east-1")
        .await
        .unwrap();
    let mut ids = Vec::new();
    while ids.len() < 503 {
        let got = poller.poll(1).await.unwrap();
        assert!(
            !got.records.is_empty(),
            "messages went missing after {}",
            ids.len()
        );
        for r in &got.records {
            let body = r.body.as_deref().unwrap();
            assert!(body.len() <= MAX_MESSAGE_BYTES);
            let b = QueuedBatch::decode(body).unwrap();
            ids.extend(b.events.iter().map(|e| e.event_id.to_string()));
            assert_eq!(
                r.event_source_arn.as_deref().map(|a| a.ends_with("-queue")),
                Some(true)
            );
            assert!(r.attributes.contains_key("ApproximateReceiveCount"));
        }
        poller.delete_done(&got, &Default::default()).await.unwrap();
    }
    let unique_ids: HashSet<&String> = ids.iter().collect();
    assert_eq!(unique_ids.len(), 503);
}

#[tokio::test]
async fn puts_are_conditional_and_data_is_a_native_map() {
    let e = env(4, 5).await;
    let p = processor(Arc::new(e.store.clone()), Arc::new(e.store.clone()));
    let ev = event(
        "s1",
        "page interaction",
        "pageview",
        "2021-01-01 09:00:00",
        "/",
    );
    let events = vec![("same".to_string(), ev)];
    let body = batch("shop", &events).encode(usize::MAX).remove(0).body;
    let other_app = batch("blog", &events).encode(usize::MAX).remove(0).body;
    let msgs = [
        QueueMessage {
            id: "1".into(),
            body: body.clone(),
            receive_count: 1,
        },
        QueueMessage {
            id: "2".into(),
            body,
            receive_count: 2,
        },
        QueueMessage {
            id: "3".into(),
            body: other_app,
            receive_count: 1,
        },
    ];
    let outcome = p.process(&msgs).await;
    assert!(outcome.failures.is_empty(), "{:?}", outcome.failures);
    assert_eq!((outcome.report.stored, outcome.report.duplicates), (2, 1));
    let got = e.store.session_events("s1", None, page(10)).await.unwrap();
    assert_eq!(got.items.len(), 2, "shop and blog, each once");
    let blog = e
        .store
        .session_events("s1", Some("blog"), page(10))
        .await
        .unwrap();
    let apps: Vec<&str> = blog.items.iter().map(|e| e.app.as_str()).collect();
    assert_eq!(apps, ["blog"]);

    let ddb = DynamoClient::new(&e.sdk);
    let item = ddb
        .get_item()
        .table_name(&e.resources.events.name)
        .key("session_id", AttributeValue::S("s1".into()))
        .key("ts_seq", AttributeValue::S(got.items[0].session_key()))
        .send()
        .await
        .unwrap()
        .item
        .unwrap();
    assert!(matches!(item.get("data"), Some(AttributeValue::M(m)) if m.contains_key("host")));
    assert!(
        matches!(item.get("expires_at"), Some(AttributeValue::N(_))),
        "retention sets the TTL"
    );
    let counts = e.counts.snapshot();
    assert_eq!(counts["dynamodb_puts"], 3);
}

#[tokio::test]
async fn queries_fan_out_over_shards_and_days_and_merge_in_time_order() {
    let e = env(4, 5).await;
    let mut events = Vec::new();
    for day in 1..=3 {
        for i in 0..20 {
            let (category, name) = if i % 2 == 0 {
                ("page interaction", "pageview")
            } else {
                ("form interaction", "submit")
            };
            let ts = format!("2021-01-0{day} {:02}:00:00", i);
            events.push((
                format!("d{day}-{i}"),
                event(
                    &format!("s{}", i % 3),
                    category,
                    name,
                    &ts,
                    &format!("/{day}/{i}"),
                ),
            ));
        }
    }
    let stored: Vec<StoredEvent> = events
        .iter()
        .map(|(id, raw)| {
            // Day 2 is another app's, for the app filter.
            let ctx = eye_shared::domain::Context {
                app: if id.starts_with("d2-") {
                    "blog"
                } else {
                    "shop"
                },
                received_at: Timestamp::now(),
                sent_at: None,
            };
            match eye_shared::domain::judge(
                ctx,
                id,
                raw,
                &SchemaRegistry::builtin().unwrap(),
                Rules::default(),
            ) {
                eye_shared::domain::Verdict::Store(s) => s,
                eye_shared::domain::Verdict::Reject(r) => panic!("{r:?}"),
            }
        })
        .collect();
    assert!(
        e.store
            .put_events(stored)
            .await
            .iter()
            .all(|r| *r == Ok(PutOutcome::Stored))
    );

    // Time range over days 1-2 without a category: by_time, 2 days x 4 shards.
    let t = |s: &str| Some(Timestamp::parse(s).unwrap());
    let range = EventFilter {
        category: None,
        from: t("2021-01-01 10:00:00"),
        to: t("2021-01-02 10:00:00"),
        app: None,
    };
    let mut all = Vec::new();
    let mut after = None;
    loop {
        let p = e
            .store
            .find_events(&range, PageRequest { limit: 7, after })
            .await
            .unwrap();
        all.extend(p.items);
        match p.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    assert_eq!(
        all.len(),
        20,
        "10:00-19:00 on day 1 and 00:00-09:00 on day 2"
    );
    assert!(all.windows(2).all(|w| w[0].time_key() < w[1].time_key()));
    let shards: HashSet<u16> = all.iter().map(|e| e.seq().shard(4)).collect();
    assert!(shards.len() > 1, "the events spread over shards");
    // One app's only, in pages that DynamoDB's filter leaves short.
    for (app, day) in [("shop", "2021-01-01"), ("blog", "2021-01-02")] {
        let mut mine = Vec::new();
        let mut after = None;
        loop {
            let p = e
                .store
                .find_events(
                    &range.clone().only_app(Some(app)),
                    PageRequest { limit: 3, after },
                )
                .await
                .unwrap();
            mine.extend(p.items);
            match p.next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        assert_eq!(mine.len(), 10, "{app}");
        assert!(
            mine.iter()
                .all(|e| e.app == app && e.timestamp.to_rfc3339().starts_with(day))
        );
    }

    // A category over all three days: by_category.
    let forms = EventFilter {
        category: Some("form interaction".into()),
        from: None,
        to: None,
        app: None,
    };
    let got = e.store.find_events(&forms, page(100)).await.unwrap();
    assert_eq!(got.items.len(), 30);
    let blog = e
        .store
        .find_events(&forms.clone().only_app(Some("blog")), page(100))
        .await
        .unwrap();
    assert_eq!(blog.items.len(), 10);
    assert!(blog.items.iter().all(|e| e.app == "blog"));
    assert!(got.items.iter().all(|e| e.category == "form interaction"));
    assert!(
        got.items
            .windows(2)
            .all(|w| w[0].timestamp <= w[1].timestamp)
    );

    // Category and range together.
    let both = EventFilter {
        category: Some("page interaction".into()),
        from: t("2021-01-03 00:00:00"),
        to: t("2021-01-03 05:00:00"),
        app: None,
    };
    assert_eq!(
        e.store
            .find_events(&both, page(100))
            .await
            .unwrap()
            .items
            .len(),
        3
    ); // 00, 02, 04

    // A session, in order, paginated.
    let s0 = e
        .store
        .session_events(
            "s0",
            None,
            PageRequest {
                limit: 5,
                after: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(s0.items.len(), 5);
    let rest = e
        .store
        .session_events(
            "s0",
            None,
            PageRequest {
                limit: 100,
                after: s0.next.clone(),
            },
        )
        .await
        .unwrap();
    assert_eq!(s0.items.len() + rest.items.len(), 21);
    assert!(s0.items.last().unwrap().session_key() < rest.items[0].session_key());

    // A time query without `from` cannot be answered from day buckets: a clear refusal.
    let open = EventFilter {
        category: None,
        from: None,
        to: t("2021-01-02 00:00:00"),
        app: None,
    };
    assert!(matches!(
        e.store.find_events(&open, page(10)).await,
        Err(BackendError::Unsupported(_))
    ));
}

#[tokio::test]
async fn error_records_by_code_and_time() {
    let e = env(2, 5).await;
    let p = processor(Arc::new(e.store.clone()), Arc::new(e.store.clone()));
    let bad = raw(
        r#"{"session_id":"s","category":"page interaction","name":"cta click","data":{"host":"h","path":"/"},"timestamp":"2021-01-01 00:00:00"}"#,
    );
    let future = event(
        "s",
        "page interaction",
        "pageview",
        "2999-01-01 00:00:00",
        "/",
    );
    let events = vec![("b".to_string(), bad), ("f".to_string(), future)];
    let body = batch("shop", &events).encode(usize::MAX).remove(0).body;
    let msg = QueueMessage {
        id: "1".into(),
        body,
        receive_count: 1,
    };
    p.process(std::slice::from_ref(&msg)).await;
    let again = p.process(&[msg]).await;
    assert!(again.report.errors.is_empty(), "recorded once");
    // The time index is bucketed by day: without a code, `from` is needed,
    // and its absence is a clear refusal, not a silent default.
    let refused = e
        .store
        .find_errors(&ErrorFilter::default(), page(10))
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, BackendError::Unsupported(m) if m.contains("needs `from`")),
        "{refused:?}"
    );
    let since = ErrorFilter {
        from: Some(Timestamp::now().add_micros(-86_400_000_000)),
        ..Default::default()
    };
    let all = e.store.find_errors(&since, page(10)).await.unwrap();
    assert_eq!(all.items.len(), 2);
    let by_code = e
        .store
        .find_errors(
            &ErrorFilter {
                code: Some(ErrorCode::PayloadInvalid),
                ..Default::default()
            },
            page(10),
        )
        .await
        .unwrap();
    assert_eq!(by_code.items.len(), 1);
    assert_eq!(by_code.items[0].field.as_deref(), Some("/data/element"));
    assert!(
        by_code.items[0].event.get().contains("cta click"),
        "the raw event is kept"
    );
}

/// Throttles every write while `throttling` is set.
struct Switchable {
    inner: DynamoStore,
    throttling: std::sync::atomic::AtomicBool,
}

#[async_trait]
impl EventStore for Switchable {
    async fn put_events(&self, events: Vec<StoredEvent>) -> Vec<Result<PutOutcome, BackendError>> {
        if self.throttling.load(Ordering::SeqCst) {
            return vec![
                Err(BackendError::Busy(
                    "ProvisionedThroughputExceededException".into()
                ));
                events.len()
            ];
        }
        self.inner.put_events(events).await
    }
}

#[tokio::test]
async fn throttling_is_retried_then_dead_lettered_then_redriven() {
    let e = env(1, 2).await;
    let sqs = SqsClient::new(&e.sdk);
    let queue = SqsQueue::new(sqs.clone(), &e.queue_url, e.counts.clone());
    let events = vec![(
        "x".to_string(),
        event(
            "s",
            "page interaction",
            "pageview",
            "2021-01-01 00:00:00",
            "/",
        ),
    )];
    queue.enqueue(&batch("shop", &events)).await.unwrap();

    let store = Arc::new(Switchable {
        inner: e.store.clone(),
        throttling: true.into(),
    });
    let p = processor(store.clone(), Arc::new(e.store.clone()));
    let poller = SqsPoller::new(sqs.clone(), &e.queue_url, "us-east-1")
        .await
        .unwrap();
    let mut failures = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let got = poller.poll(1).await.unwrap();
        if got.records.is_empty() {
            if failures >= 2
                && !SqsDeadLetters::new(sqs.clone(), &e.dlq_url, &e.queue_url)
                    .list_dead_letters(10)
                    .await
                    .unwrap()
                    .is_empty()
            {
                break;
            }
        } else {
            let (response, _) = sqs_trigger::handle(&p, &got).await;
            assert_eq!(
                response.batch_item_failures.len(),
                got.records.len(),
                "throttled messages are reported"
            );
            failures += response.batch_item_failures.len();
            poller.delete_done(&got, &response).await.unwrap();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the message never reached the DLQ"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(
        failures, 2,
        "received maxReceiveCount times, then dead-lettered"
    );
    let dead = SqsDeadLetters::new(sqs.clone(), &e.dlq_url, &e.queue_url)
        .list_dead_letters(10)
        .await
        .unwrap();
    assert_eq!(dead.len(), 1);
    assert!(QueuedBatch::decode(&dead[0].body).is_ok());

    // The cause is fixed: redrive, process, stored once.
    store.throttling.store(false, Ordering::SeqCst);
    assert_eq!(
        SqsDeadLetters::new(sqs.clone(), &e.dlq_url, &e.queue_url)
            .redrive_dead_letters()
            .await
            .unwrap(),
        1
    );
    let got = poller.poll(2).await.unwrap();
    let (response, report) = sqs_trigger::handle(&p, &got).await;
    assert!(response.batch_item_failures.is_empty());
    assert_eq!(report.stored, 1);
    poller.delete_done(&got, &response).await.unwrap();
    assert_eq!(
        e.store
            .session_events("s", None, page(10))
            .await
            .unwrap()
            .items
            .len(),
        1
    );
    assert!(
        SqsDeadLetters::new(sqs.clone(), &e.dlq_url, &e.queue_url)
            .list_dead_letters(10)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn the_two_backends_store_an_accepted_event_alike() {
    let e = env(4, 5).await;
    let dir = tempfile::TempDir::new().unwrap();
    let sqlite = eye_shared::adapters::sqlite::Sqlite::open(
        eye_shared::adapters::sqlite::SqliteConfig::new(dir.path().join("eye.db")),
    )
    .unwrap();
    let events = vec![
        (
            "with-everything".to_string(),
            common::identified_event("s-alike", "2021-01-01 09:00:00"),
        ),
        (
            "plain".to_string(),
            event(
                "s-alike",
                "page interaction",
                "pageview",
                "2021-01-01 09:00:01",
                "/",
            ),
        ),
    ];
    // One message, so both stores see the same received_at.
    let body = batch("shop", &events).encode(usize::MAX).remove(0).body;
    let msg = QueueMessage {
        id: "1".into(),
        body,
        receive_count: 1,
    };
    let on_dynamo = processor(Arc::new(e.store.clone()), Arc::new(e.store.clone()));
    let on_sqlite = processor(Arc::new(sqlite.clone()), Arc::new(sqlite.clone()));
    for p in [&on_dynamo, &on_sqlite] {
        let outcome = p.process(std::slice::from_ref(&msg)).await;
        assert!(outcome.failures.is_empty(), "{:?}", outcome.failures);
        assert_eq!(outcome.report.stored, 2);
    }
    let as_json = |page: Page<StoredEvent>| -> Vec<serde_json::Value> {
        page.items
            .iter()
            .map(|e| {
                let mut v = serde_json::to_value(e).unwrap();
                // The raw texts may differ in spacing and key order; compare values.
                for field in ["data", "context"] {
                    if let Some(text) = e_field(e, field) {
                        v[field] = serde_json::from_str(&text).unwrap();
                    }
                }
                v
            })
            .collect()
    };
    fn e_field(e: &StoredEvent, field: &str) -> Option<String> {
        match field {
            "data" => Some(e.data.get().to_owned()),
            _ => e.context.as_ref().map(|c| c.get().to_owned()),
        }
    }
    let from_dynamo = as_json(
        e.store
            .session_events("s-alike", None, page(10))
            .await
            .unwrap(),
    );
    let from_sqlite = as_json(
        sqlite
            .session_events("s-alike", None, page(10))
            .await
            .unwrap(),
    );
    assert_eq!(from_dynamo, from_sqlite);
    let first = &from_sqlite[0];
    assert_eq!(first["user_id"], "user-7");
    assert_eq!(first["anonymous_id"], "anon-é");
    assert_eq!(first["context"]["page"]["title"], "Ünïcode");
    assert_eq!(
        first["context"]["list"],
        serde_json::json!([1, "two", null, true])
    );
    let plain = &from_sqlite[1];
    for absent in ["user_id", "anonymous_id", "context"] {
        assert!(
            plain.get(absent).is_none(),
            "{absent} is left out when not sent: {plain}"
        );
    }
}
