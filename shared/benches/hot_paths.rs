//! Criterion micro-benchmarks of the hot paths: envelope parsing and checking,
//! schema validation, key encoding, the processor's judgement, queue message
//! encoding, and the SQLite batch write.
//!
//! Run: `cargo bench -p eye-shared --bench hot_paths`

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use eye_shared::adapters::sqlite::{Sqlite, SqliteConfig};
use eye_shared::domain::keys::{Seq, ts_seq};
use eye_shared::domain::{
    Context, Limits, QueuedBatch, QueuedEvent, Rules, SchemaRegistry, StoredEvent, Timestamp,
    Verdict, judge, parse_body,
};
use eye_shared::ports::EventStore;
use serde_json::value::RawValue;

const SEED: &str = r#"{"session_id":"e2085be5-9137-4e4e-80b5-f1ffddc25423","category":"page interaction","name":"cta click","data":{"host":"www.consumeraffairs.com","path":"/","element":"chat bubble"},"timestamp":"2021-01-01 09:15:27.243860"}"#;

fn batch_body(n: usize) -> String {
    format!("[{}]", vec![SEED; n].join(","))
}

fn envelope(c: &mut Criterion) {
    let limits = Limits::default();
    let mut g = c.benchmark_group("envelope");
    g.throughput(Throughput::Elements(1));
    g.bench_function("parse_one_event", |b| {
        b.iter(|| parse_body(black_box(SEED.as_bytes()), &limits).map(|e| e.events.len()))
    });
    let body = batch_body(50);
    g.throughput(Throughput::Elements(50));
    g.bench_function("parse_batch_of_50", |b| {
        b.iter(|| parse_body(black_box(body.as_bytes()), &limits).map(|e| e.events.len()))
    });
    g.finish();
}

fn schema(c: &mut Criterion) {
    let registry = SchemaRegistry::builtin().unwrap();
    let valid: serde_json::Value = serde_json::json!({"host": "www.consumeraffairs.com", "path": "/", "element": "chat bubble"});
    let invalid: serde_json::Value =
        serde_json::json!({"host": "www.consumeraffairs.com", "path": "/"});
    let mut g = c.benchmark_group("schema");
    g.bench_function("check_valid", |b| {
        b.iter(|| registry.check("page interaction", "cta click", black_box(&valid)))
    });
    g.bench_function("check_invalid_with_message", |b| {
        b.iter(|| registry.check("page interaction", "cta click", black_box(&invalid)))
    });
    g.finish();
}

fn keys(c: &mut Criterion) {
    let t = Timestamp::parse("2021-01-01 09:15:27.243860").unwrap();
    let mut g = c.benchmark_group("keys");
    g.bench_function("seq_from_uuid", |b| {
        b.iter(|| {
            Seq::derive(
                black_box("shop"),
                black_box("0190c3a2-8b1e-7c3d-9f00-123456789abc"),
            )
        })
    });
    g.bench_function("seq_from_other_id", |b| {
        b.iter(|| Seq::derive(black_box("shop"), black_box("order-42-click-7")))
    });
    g.bench_function("ts_seq", |b| b.iter(|| ts_seq(black_box(t), Seq(42))));
    g.bench_function("timestamp_parse", |b| {
        b.iter(|| Timestamp::parse(black_box("2021-01-01 09:15:27.243860")))
    });
    g.finish();
}

fn processing(c: &mut Criterion) {
    let registry = SchemaRegistry::builtin().unwrap();
    let raw = RawValue::from_string(SEED.to_owned()).unwrap();
    let ctx = Context {
        app: "shop",
        received_at: Timestamp::parse("2021-01-01 09:16:00").unwrap(),
        sent_at: None,
    };
    let mut g = c.benchmark_group("processor");
    g.throughput(Throughput::Elements(1));
    g.bench_function("judge_one_event", |b| {
        b.iter(|| {
            matches!(
                judge(ctx, black_box("evt-1"), &raw, &registry, Rules::default()),
                Verdict::Store(_)
            )
        })
    });
    let raws: Vec<Box<RawValue>> = (0..50)
        .map(|_| RawValue::from_string(SEED.to_owned()).unwrap())
        .collect();
    let ids: Vec<String> = (0..50).map(|i| format!("evt-{i}")).collect();
    let events = raws
        .iter()
        .zip(&ids)
        .map(|(e, id)| QueuedEvent {
            event_id: id.into(),
            event: e,
        })
        .collect();
    let batch = QueuedBatch::new("shop", ctx.received_at, None, events);
    let body = batch.encode(usize::MAX).remove(0).body;
    g.throughput(Throughput::Elements(50));
    g.bench_function("encode_message_of_50", |b| {
        b.iter(|| batch.encode(black_box(usize::MAX)).len())
    });
    g.bench_function("decode_message_of_50", |b| {
        b.iter(|| QueuedBatch::decode(black_box(&body)).map(|b| b.events.len()))
    });
    g.finish();
}

fn sqlite_write(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::TempDir::new().unwrap();
    let db = runtime
        .block_on(async { Sqlite::open(SqliteConfig::new(dir.path().join("bench.db"))).unwrap() });
    let registry = Arc::new(SchemaRegistry::builtin().unwrap());
    let counter = AtomicU64::new(0);
    let make = |n: usize, sessions: u64| -> Vec<StoredEvent> {
        (0..n)
            .map(|_| {
                let i = counter.fetch_add(1, Ordering::Relaxed);
                let raw = RawValue::from_string(SEED.replace(
                    "e2085be5-9137-4e4e-80b5-f1ffddc25423",
                    &format!("session-{}", i % sessions),
                ))
                .unwrap();
                let ctx = Context {
                    app: "shop",
                    received_at: Timestamp::now(),
                    sent_at: None,
                };
                match judge(ctx, &format!("evt-{i}"), &raw, &registry, Rules::default()) {
                    Verdict::Store(e) => e,
                    Verdict::Reject(r) => panic!("{r:?}"),
                }
            })
            .collect()
    };
    let mut g = c.benchmark_group("sqlite");
    g.sample_size(20);
    for sessions in [100u64, 10_000] {
        g.throughput(Throughput::Elements(500));
        g.bench_function(format!("put_500_events_{sessions}_sessions"), |b| {
            b.iter_batched(
                || make(500, sessions),
                |events| runtime.block_on(db.put_events(events)).len(),
                BatchSize::LargeInput,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, envelope, schema, keys, processing, sqlite_write);
criterion_main!(benches);
