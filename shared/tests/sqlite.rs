//! The SQLite adapter against a real database file.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use eye_shared::adapters::sqlite::{Sqlite, SqliteConfig};
use eye_shared::app::consume::Consumer;
use eye_shared::domain::{ErrorCode, QueuedBatch, Timestamp};
use eye_shared::ports::*;
use serde_json::value::RawValue;
use tempfile::TempDir;

mod common;

use common::{batch, event, page, processor, raw};

fn open(dir: &TempDir) -> Sqlite {
    Sqlite::open(SqliteConfig::new(dir.path().join("eye.db"))).unwrap()
}

async fn enqueue(
    db: &Sqlite,
    app: &str,
    events: &[(String, Box<RawValue>)],
) -> Result<(), BackendError> {
    db.enqueue(&batch(app, events)).await
}

async fn drain(db: &Sqlite) {
    let worker = Consumer::new(
        Arc::new(db.clone()),
        processor(Arc::new(db.clone()), Arc::new(db.clone())),
        100,
    );
    while worker.run_once().await.unwrap().is_some() {}
}

#[tokio::test]
async fn queue_round_trip_and_persistence_across_reopen() {
    let dir = TempDir::new().unwrap();
    {
        let db = open(&dir);
        let e = event(
            "s1",
            "page interaction",
            "pageview",
            "2021-01-01 09:00:00",
            "/",
        );
        enqueue(&db, "shop", &[("a".into(), e)]).await.unwrap();
    }
    // Acknowledged means on disk: a new handle (as after a restart) sees it.
    let db = open(&dir);
    let got = db.receive(10).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].receive_count, 1);
    let batch = QueuedBatch::decode(&got[0].body).unwrap();
    assert_eq!(batch.app, "shop");
    assert_eq!(batch.events[0].event_id, "a");
    db.complete(vec![got[0].id.clone()], vec![]).await.unwrap();
    assert!(db.receive(10).await.unwrap().is_empty());
}

#[tokio::test]
async fn concurrent_enqueues_are_group_committed_and_all_kept() {
    let dir = TempDir::new().unwrap();
    let db = open(&dir);
    let mut tasks = Vec::new();
    for i in 0..200 {
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            let e = event("s", "c", "n", "2021-01-01 09:00:00", &format!("/{i}"));
            enqueue(&db, "shop", &[(format!("id-{i}"), e)]).await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    drain(&db).await;
    let all = db
        .find_events(
            &EventFilter {
                category: Some("c".into()),
                ..Default::default()
            },
            page(1000),
        )
        .await
        .unwrap();
    assert_eq!(all.items.len(), 200);
}

#[tokio::test]
async fn backlog_limit_sheds_load_with_busy() {
    let dir = TempDir::new().unwrap();
    let db = Sqlite::open(SqliteConfig {
        max_backlog_events: 3,
        ..SqliteConfig::new(dir.path().join("eye.db"))
    })
    .unwrap();
    let e = || event("s", "c", "n", "2021-01-01 09:00:00", "/");
    enqueue(&db, "shop", &[("1".into(), e()), ("2".into(), e())])
        .await
        .unwrap();
    let err = enqueue(&db, "shop", &[("3".into(), e()), ("4".into(), e())])
        .await
        .unwrap_err();
    assert!(matches!(err, BackendError::Busy(_)), "{err}");
    enqueue(&db, "shop", &[("3".into(), e())]).await.unwrap();
    // Processing frees room again.
    drain(&db).await;
    enqueue(&db, "shop", &[("5".into(), e()), ("6".into(), e())])
        .await
        .unwrap();
}

#[tokio::test]
async fn events_are_stored_once_and_never_overwritten() {
    let dir = TempDir::new().unwrap();
    let db = open(&dir);
    let e = event(
        "s1",
        "page interaction",
        "pageview",
        "2021-01-01 09:00:00",
        "/",
    );
    // The same event from one app, twice (a redelivery or a resend).
    enqueue(&db, "shop", &[("same".into(), e.clone())])
        .await
        .unwrap();
    enqueue(&db, "shop", &[("same".into(), e.clone())])
        .await
        .unwrap();
    // The same event id and timestamp from another app, in the same session.
    enqueue(&db, "blog", &[("same".into(), e.clone())])
        .await
        .unwrap();
    drain(&db).await;
    let got = db.session_events("s1", None, page(10)).await.unwrap();
    let apps: Vec<&str> = got.items.iter().map(|e| e.app.as_str()).collect();
    assert_eq!(apps.len(), 2, "{apps:?}");
    assert!(apps.contains(&"shop") && apps.contains(&"blog"));

    let stored = got.items[0].clone();
    let results = db.put_events(vec![stored.clone(), stored]).await;
    assert_eq!(
        results,
        vec![Ok(PutOutcome::Duplicate), Ok(PutOutcome::Duplicate)]
    );
}

#[tokio::test]
async fn queries_order_filter_and_paginate() {
    let dir = TempDir::new().unwrap();
    let db = open(&dir);
    let mut events = Vec::new();
    for i in 0..30 {
        let category = if i % 3 == 0 {
            "form interaction"
        } else {
            "page interaction"
        };
        let name = if i % 3 == 0 { "submit" } else { "pageview" };
        let e = event(
            &format!("s{}", i % 2),
            category,
            name,
            &format!("2021-01-01 09:00:{i:02}"),
            &format!("/{i}"),
        );
        events.push((format!("id-{i}"), e));
    }
    events.reverse(); // arrival order must not matter
    enqueue(&db, "shop", &events).await.unwrap();
    drain(&db).await;

    let s0 = db.session_events("s0", None, page(100)).await.unwrap();
    assert_eq!(s0.items.len(), 15);
    assert!(s0.items.windows(2).all(|w| w[0].timestamp < w[1].timestamp));
    assert!(s0.next.is_none());

    let forms = db
        .find_events(
            &EventFilter {
                category: Some("form interaction".into()),
                ..Default::default()
            },
            page(100),
        )
        .await
        .unwrap();
    assert_eq!(forms.items.len(), 10);

    let t = |s: &str| Some(Timestamp::parse(s).unwrap());
    let range = EventFilter {
        category: None,
        from: t("2021-01-01 09:00:10"),
        to: t("2021-01-01 09:00:20"),
        app: None,
    };
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let p = db
            .find_events(
                &range,
                PageRequest {
                    limit: 4,
                    after: after.clone(),
                },
            )
            .await
            .unwrap();
        seen.extend(p.items.iter().map(|e| e.data.get().to_owned()));
        match p.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    let expected: Vec<String> = (10..20).map(|i| format!("/{i}")).collect();
    let got: Vec<String> = seen
        .iter()
        .map(|d| {
            serde_json::from_str::<serde_json::Value>(d).unwrap()["path"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(got, expected);

    let both = EventFilter {
        category: Some("form interaction".into()),
        from: t("2021-01-01 09:00:10"),
        to: t("2021-01-01 09:00:20"),
        app: None,
    };
    assert_eq!(
        db.find_events(&both, page(100)).await.unwrap().items.len(),
        3
    ); // 12, 15, 18
}

#[tokio::test]
async fn error_records_are_stored_once_and_filtered() {
    let dir = TempDir::new().unwrap();
    let db = open(&dir);
    let future = event(
        "s",
        "page interaction",
        "pageview",
        "2999-01-01 00:00:00",
        "/",
    );
    let bad = raw(
        r#"{"session_id":"s","category":"page interaction","name":"cta click","data":{"host":"h","path":"/"},"timestamp":"2021-01-01 00:00:00"}"#,
    );
    enqueue(&db, "shop", &[("f".into(), future), ("b".into(), bad)])
        .await
        .unwrap();
    drain(&db).await;
    let all = db
        .find_errors(&ErrorFilter::default(), page(10))
        .await
        .unwrap();
    assert_eq!(all.items.len(), 2);
    let results = db.put_errors(all.items.clone()).await;
    assert!(results.iter().all(|r| *r == Ok(PutOutcome::Duplicate)));
    let payload = db
        .find_errors(
            &ErrorFilter {
                code: Some(ErrorCode::PayloadInvalid),
                ..Default::default()
            },
            page(10),
        )
        .await
        .unwrap();
    assert_eq!(payload.items.len(), 1);
    assert_eq!(payload.items[0].field.as_deref(), Some("/data/element"));
    assert!(payload.items[0].event.get().contains("cta click"));
    let later = ErrorFilter {
        from: Some(Timestamp::now().add_micros(60_000_000)),
        ..Default::default()
    };
    assert!(
        db.find_errors(&later, page(10))
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

/// An event store that fails its first `n` calls, as a throttled backend would.
struct Flaky {
    inner: Sqlite,
    failures_left: AtomicUsize,
}

#[async_trait]
impl EventStore for Flaky {
    async fn put_events(
        &self,
        events: Vec<eye_shared::domain::StoredEvent>,
    ) -> Vec<Result<PutOutcome, BackendError>> {
        if self
            .failures_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return vec![Err(BackendError::Busy("throttled".into())); events.len()];
        }
        self.inner.put_events(events).await
    }
}

#[tokio::test]
async fn transient_failures_retry_then_dead_letter_then_redrive() {
    let dir = TempDir::new().unwrap();
    let db = Sqlite::open(SqliteConfig {
        max_attempts: 2,
        ..SqliteConfig::new(dir.path().join("eye.db"))
    })
    .unwrap();
    let flaky = Arc::new(Flaky {
        inner: db.clone(),
        failures_left: AtomicUsize::new(2),
    });
    let worker = Consumer::new(
        Arc::new(db.clone()),
        processor(flaky.clone(), Arc::new(db.clone())),
        10,
    );
    let e = event(
        "s",
        "page interaction",
        "pageview",
        "2021-01-01 09:00:00",
        "/",
    );
    enqueue(&db, "shop", &[("x".into(), e)]).await.unwrap();

    let report = worker.run_once().await.unwrap().unwrap();
    assert_eq!(report.failed_messages, 1);
    // Backed off: not due again at once.
    assert!(worker.run_once().await.unwrap().is_none());
    let depth = eye_shared::ports::StatusSource::status(&db).await.unwrap();
    assert_eq!(depth["queue_depth"], 1);

    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let report = worker.run_once().await.unwrap().unwrap();
    assert_eq!(report.failed_messages, 1);
    let dead = db.list_dead_letters(10).await.unwrap();
    assert_eq!(dead.len(), 1, "second failure reaches max_attempts");
    assert_eq!(dead[0].attempts, 2);
    assert_eq!(dead[0].events, Some(1));
    assert!(dead[0].last_error.as_deref().unwrap().contains("throttled"));
    let status = eye_shared::ports::StatusSource::status(&db).await.unwrap();
    assert_eq!(
        (
            status["queue_depth"].as_i64(),
            status["dead_letters"].as_i64()
        ),
        (Some(0), Some(1))
    );

    // The cause is fixed (the flaky store has no failures left): redrive recovers it.
    assert_eq!(db.redrive_dead_letters().await.unwrap(), 1);
    worker.run_once().await.unwrap().unwrap();
    assert_eq!(
        db.session_events("s", None, page(10))
            .await
            .unwrap()
            .items
            .len(),
        1
    );
    assert!(db.list_dead_letters(10).await.unwrap().is_empty());
    // Redriving the same message again stores nothing twice.
    enqueue(
        &db,
        "shop",
        &[(
            "x".into(),
            event(
                "s",
                "page interaction",
                "pageview",
                "2021-01-01 09:00:00",
                "/",
            ),
        )],
    )
    .await
    .unwrap();
    worker.run_once().await.unwrap().unwrap();
    assert_eq!(
        db.session_events("s", None, page(10))
            .await
            .unwrap()
            .items
            .len(),
        1
    );
}

#[tokio::test]
async fn api_keys_are_hashed_scoped_and_revocable() {
    let dir = TempDir::new().unwrap();
    let db = open(&dir);
    assert!(!db.has_keys().unwrap());
    let key = db
        .create_key("shop", &[Scope::Ingest], Reach::AllApps)
        .unwrap();
    assert!(db.has_keys().unwrap());
    let p = db.verify(&key).await.unwrap().unwrap();
    assert_eq!(p.app, "shop");
    assert!(p.can(Scope::Ingest) && !p.can(Scope::Query));

    // The secret is not in the file.
    let secret = key.rsplit('_').next().unwrap();
    let file = std::fs::read(dir.path().join("eye.db")).unwrap();
    let wal = std::fs::read(dir.path().join("eye.db-wal")).unwrap_or_default();
    for bytes in [file, wal] {
        assert!(!bytes.windows(secret.len()).any(|w| w == secret.as_bytes()));
    }

    let mut forged = key.clone();
    forged.pop();
    forged.push(if key.ends_with('0') { '1' } else { '0' });
    assert!(db.verify(&forged).await.unwrap().is_none());
    assert!(db.verify("eye_nope").await.unwrap().is_none());

    let listed = db.list_keys().unwrap();
    assert_eq!(listed.len(), 1);
    assert!(key.contains(&listed[0].id));
    assert!(db.revoke_key(&listed[0].id).unwrap());
    assert!(
        db.verify(&key).await.unwrap().is_none(),
        "revocation applies at once in this process"
    );
    assert!(!db.revoke_key(&listed[0].id).unwrap());
}

#[test]
fn the_queue_lives_in_its_own_file_beside_the_store() {
    use eye_shared::adapters::sqlite::queue_path;
    use std::path::Path;
    assert_eq!(
        queue_path(Path::new("/data/eye.db")),
        Path::new("/data/eye-queue.db")
    );
    assert_eq!(queue_path(Path::new("store")), Path::new("store-queue"));
    let dir = TempDir::new().unwrap();
    let _db = open(&dir);
    assert!(dir.path().join("eye.db").exists() && dir.path().join("eye-queue.db").exists());
}

#[tokio::test]
async fn wal_files_stay_bounded_under_continuous_writes() {
    let dir = TempDir::new().unwrap();
    let db = open(&dir);
    let worker = Consumer::new(
        Arc::new(db.clone()),
        processor(Arc::new(db.clone()), Arc::new(db.clone())),
        100,
    );
    let mut n = 0;
    // Write continuously: without the two-step checkpoint the WAL would never
    // wrap around and would grow with every commit.
    for _ in 0..300 {
        let events: Vec<(String, Box<RawValue>)> = (0..50)
            .map(|i| {
                n += 1;
                (
                    format!("w{n}-{i}"),
                    event(
                        &format!("s{}", n % 97),
                        "c",
                        "n",
                        "2021-01-01 09:00:00",
                        &format!("/{n}/{i}"),
                    ),
                )
            })
            .collect();
        enqueue(&db, "shop", &events).await.unwrap();
        worker.run_once().await.unwrap();
    }
    let size = |name: &str| {
        std::fs::metadata(dir.path().join(name))
            .map(|m| m.len())
            .unwrap_or(0)
    };
    let (store_wal, queue_wal) = (size("eye.db-wal"), size("eye-queue.db-wal"));
    let written = size("eye.db") + store_wal;
    assert!(
        store_wal < written / 2 + 8 * 1024 * 1024,
        "store WAL {store_wal} of {written} bytes written"
    );
    assert!(queue_wal < 16 * 1024 * 1024, "queue WAL {queue_wal}");
}

/// The paths of a session's events, read page by page.
async fn session_paths(db: &Sqlite, session: &str, limit: usize) -> Vec<String> {
    session_paths_of(db, session, None, limit).await
}

/// The paths of a session's events, only `app`'s when given, page by page.
async fn session_paths_of(
    db: &Sqlite,
    session: &str,
    app: Option<&str>,
    limit: usize,
) -> Vec<String> {
    let mut paths = Vec::new();
    let mut after = None;
    loop {
        let p = db
            .session_events(
                session,
                app,
                PageRequest {
                    limit,
                    after: after.clone(),
                },
            )
            .await
            .unwrap();
        for e in &p.items {
            let data: serde_json::Value = serde_json::from_str(e.data.get()).unwrap();
            paths.push(data["path"].as_str().unwrap().to_owned());
        }
        match p.next {
            Some(n) => after = Some(n),
            None => return paths,
        }
    }
}

/// Enqueues the pageviews at seconds `secs` of session `s`, path `/<second>`,
/// and processes them with `db`'s worker.
async fn store_seconds(db: &Sqlite, secs: impl Iterator<Item = u32>) {
    store_seconds_as(db, "shop", secs).await
}

/// Stores a pageview at second `i` of session `s` for each `i`, from `app`.
async fn store_seconds_as(db: &Sqlite, app: &str, secs: impl Iterator<Item = u32>) {
    let events: Vec<_> = secs
        .map(|i| {
            let ts = format!("2021-01-01 09:00:{i:02}");
            (
                format!("id-{i}"),
                event("s", "page interaction", "pageview", &ts, &format!("/{i}")),
            )
        })
        .collect();
    enqueue(db, app, &events).await.unwrap();
    drain(db).await;
}

/// A store whose writer indexes sessions every `every`.
fn open_indexing_every(dir: &TempDir, every: std::time::Duration) -> Sqlite {
    Sqlite::open(SqliteConfig {
        session_index_every: every,
        ..SqliteConfig::new(dir.path().join("eye.db"))
    })
    .unwrap()
}

fn indexed_rows(dir: &TempDir) -> i64 {
    let conn = rusqlite::Connection::open(dir.path().join("eye.db")).unwrap();
    conn.query_row("SELECT COUNT(*) FROM session_index", [], |r| r.get(0))
        .unwrap()
}

#[tokio::test]
async fn session_queries_span_the_bulk_index_the_newest_events_and_other_writers() {
    let dir = TempDir::new().unwrap();
    // Bulk index runs only when the test asks, whatever the machine's speed.
    let never = std::time::Duration::from_secs(3600);
    let db = open_indexing_every(&dir, never);
    let expected = |n: u32| (0..n).map(|i| format!("/{i}")).collect::<Vec<_>>();

    // Even seconds, moved into the session index; then odd seconds, which
    // only the writer's in-memory tail knows. Pages of 3 cross the boundary.
    store_seconds(&db, (0..20).step_by(2)).await;
    db.index_sessions().await.unwrap();
    assert_eq!(indexed_rows(&dir), 10);
    store_seconds(&db, (1..20).step_by(2)).await;
    assert_eq!(
        indexed_rows(&dir),
        10,
        "the odd seconds are not indexed yet"
    );
    assert_eq!(session_paths(&db, "s", 3).await, expected(20));
    assert_eq!(db.session_scans(), 0, "its own newest events are in memory");

    // A second handle on the file, as another process: its tail knows
    // nothing of what the first writes, and scans for it.
    let other = open_indexing_every(&dir, never);
    store_seconds(&db, 20..25).await;
    assert_eq!(session_paths(&other, "s", 4).await, expected(25));
    assert!(other.session_scans() > 0);
    // Both write: each one's rows are a gap in the other's tail.
    store_seconds(&other, 25..30).await;
    store_seconds(&db, 30..35).await;
    store_seconds(&other, 35..40).await;
    assert_eq!(session_paths(&db, "s", 7).await, expected(40));
    assert_eq!(session_paths(&other, "s", 100).await, expected(40));

    // Once indexed, the same answer from the index alone, each event once.
    db.index_sessions().await.unwrap();
    assert_eq!(indexed_rows(&dir), 40);
    assert_eq!(session_paths(&db, "s", 7).await, expected(40));
    assert_eq!(session_paths(&other, "s", 5).await, expected(40));
    store_seconds(&other, 0..40).await; // all of them again: duplicates
    assert_eq!(session_paths(&db, "s", 100).await, expected(40));
    other.index_sessions().await.unwrap();
    assert_eq!(indexed_rows(&dir), 40);
    // The index run closed the gaps: new events are found in memory again.
    store_seconds(&other, 40..45).await;
    let scans = other.session_scans();
    assert_eq!(session_paths(&other, "s", 10).await, expected(45));
    assert_eq!(other.session_scans(), scans);
}

#[tokio::test]
async fn the_writer_indexes_sessions_by_itself_and_on_reopen() {
    let dir = TempDir::new().unwrap();
    let every = std::time::Duration::from_secs(1);
    let db = open_indexing_every(&dir, every);
    store_seconds(&db, 0..12).await;
    assert_eq!(indexed_rows(&dir), 0);
    // After the interval the writer indexes them, with nothing more stored.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while indexed_rows(&dir) < 12 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(indexed_rows(&dir), 12);
    store_seconds(&db, 12..15).await;
    drop(db);
    // What was not indexed when the process stopped is indexed on opening.
    let db = open(&dir);
    assert_eq!(indexed_rows(&dir), 15);
    assert_eq!(session_paths(&db, "s", 4).await.len(), 15);
}

#[tokio::test]
async fn a_version_1_store_is_migrated_to_the_bulk_session_index() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("eye.db");
    {
        // The layout schema version 1 wrote: the session index on the table.
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE events (
                id INTEGER PRIMARY KEY, session_id TEXT NOT NULL, ts_seq TEXT NOT NULL,
                t TEXT NOT NULL, event_id TEXT NOT NULL, app TEXT NOT NULL,
                category TEXT NOT NULL, name TEXT NOT NULL, data TEXT NOT NULL,
                timestamp TEXT NOT NULL, original_timestamp TEXT, received_at TEXT NOT NULL);
             CREATE UNIQUE INDEX events_by_session ON events (session_id, ts_seq);
             CREATE INDEX events_by_category ON events (category, t);
             CREATE INDEX events_by_time ON events (t);
             PRAGMA user_version = 1;",
        )
        .unwrap();
        for (i, session) in [(2, "a"), (1, "a"), (3, "b")] {
            let ts = format!("2021-01-01T09:00:0{i}.000000Z");
            conn.execute(
                "INSERT INTO events (session_id, ts_seq, t, event_id, app, category, name, data, timestamp, received_at)
                 VALUES (?1, ?2, ?2, ?3, 'shop', 'page interaction', 'pageview', ?4, ?5, ?5)",
                rusqlite::params![
                    session,
                    format!("{ts}#{i:032x}"),
                    format!("id-{i}"),
                    format!(r#"{{"host":"h","path":"/{i}"}}"#),
                    ts
                ],
            )
            .unwrap();
        }
    }
    let db = open(&dir);
    assert_eq!(indexed_rows(&dir), 3);
    assert_eq!(session_paths(&db, "a", 1).await, ["/1", "/2"]);
    assert_eq!(session_paths(&db, "b", 10).await, ["/3"]);
    let conn = rusqlite::Connection::open(&path).unwrap();
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, 4);
    let old_index: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE name = 'events_by_session'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(old_index, 0, "the per-insert session index is dropped");
}

#[tokio::test]
async fn a_chunked_index_run_covers_every_session_and_finishes_when_idle() {
    let dir = TempDir::new().unwrap();
    let every = std::time::Duration::from_millis(400);
    let db = open_indexing_every(&dir, every);
    let batch = |from: u32| -> Vec<(String, Box<RawValue>)> {
        (from..from + 60)
            .map(|i| {
                let ts = format!("2021-01-01 09:{:02}:{:02}", i / 60, i % 60);
                let session = format!("session-{:02}", i % 30);
                (
                    format!("id-{i}"),
                    event(
                        &session,
                        "page interaction",
                        "pageview",
                        &ts,
                        &format!("/{i}"),
                    ),
                )
            })
            .collect()
    };
    enqueue(&db, "shop", &batch(0)).await.unwrap();
    drain(&db).await;
    tokio::time::sleep(every).await;
    // Runs over 30 sessions, in 8 chunks spread over the interval, go on
    // and end with no more commands coming.
    enqueue(&db, "shop", &batch(60)).await.unwrap();
    drain(&db).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while indexed_rows(&dir) < 120 && std::time::Instant::now() < deadline {
        // Mid-run, every session is whole and nothing shows twice.
        let got = db
            .session_events("session-07", None, page(100))
            .await
            .unwrap();
        assert_eq!(got.items.len(), 4);
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(indexed_rows(&dir), 120);
    let conn = rusqlite::Connection::open(dir.path().join("eye.db")).unwrap();
    let watermark: i64 = conn
        .query_row("SELECT indexed_through FROM session_index_state", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(watermark, 120);
    for s in 0..30 {
        let got = db
            .session_events(&format!("session-{s:02}"), None, page(100))
            .await
            .unwrap();
        assert_eq!(got.items.len(), 4, "session-{s:02}");
    }
}

/// Every path of `app`'s events in session `s`, at the seconds `secs`.
fn paths(secs: impl Iterator<Item = u32>) -> Vec<String> {
    secs.map(|i| format!("/{i}")).collect()
}

#[tokio::test]
async fn an_app_filter_reads_only_that_apps_events_and_errors_on_every_path() {
    let dir = TempDir::new().unwrap();
    let never = std::time::Duration::from_secs(3600);
    let db = open_indexing_every(&dir, never);
    // One session, two apps taking turns: the first 20 seconds in the bulk
    // index, the next 10 only in the writer's memory, then 10 from another
    // handle, which the first finds by scanning.
    for i in 0..30 {
        let app = if i % 2 == 0 { "shop" } else { "blog" };
        store_seconds_as(&db, app, i..i + 1).await;
        if i == 19 {
            db.index_sessions().await.unwrap();
        }
    }
    let other = open_indexing_every(&dir, never);
    for i in 30..40 {
        let app = if i % 2 == 0 { "shop" } else { "blog" };
        store_seconds_as(&other, app, i..i + 1).await;
    }
    let even = paths((0..40).step_by(2));
    let odd = paths((1..40).step_by(2));
    for limit in [3, 100] {
        assert_eq!(session_paths_of(&db, "s", Some("shop"), limit).await, even);
        assert_eq!(session_paths_of(&db, "s", Some("blog"), limit).await, odd);
        assert_eq!(
            session_paths_of(&other, "s", Some("blog"), limit).await,
            odd
        );
    }
    assert!(
        db.session_scans() > 0,
        "the other handle's rows were scanned"
    );
    assert_eq!(session_paths(&db, "s", 7).await, paths(0..40));
    assert!(
        session_paths_of(&db, "s", Some("nobody"), 5)
            .await
            .is_empty()
    );

    // By category and by time, page by page.
    let by_category = EventFilter::new(Some("page interaction".into()), None, None).unwrap();
    let t = |s: &str| Some(Timestamp::parse(s).unwrap());
    let by_time =
        EventFilter::new(None, t("2021-01-01 09:00:00"), t("2021-01-01 10:00:00")).unwrap();
    for filter in [by_category, by_time] {
        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let p = db
                .find_events(
                    &filter.clone().only_app(Some("blog")),
                    PageRequest { limit: 4, after },
                )
                .await
                .unwrap();
            assert!(p.items.iter().all(|e| e.app == "blog"));
            seen.extend(p.items.iter().map(|e| {
                let data: serde_json::Value = serde_json::from_str(e.data.get()).unwrap();
                data["path"].as_str().unwrap().to_owned()
            }));
            match p.next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        assert_eq!(seen, odd, "{filter:?}");
    }

    // Error records.
    let bad = |app: &str, id: &str| {
        let e = raw(
            r#"{"session_id":"s","category":"page interaction","name":"cta click","data":{"host":"h","path":"/"},"timestamp":"2021-01-01 00:00:00"}"#,
        );
        (app.to_owned(), vec![(id.to_owned(), e)])
    };
    for (app, events) in [bad("shop", "x1"), bad("blog", "x2"), bad("shop", "x3")] {
        enqueue(&db, &app, &events).await.unwrap();
    }
    drain(&db).await;
    let shop = db
        .find_errors(&ErrorFilter::default().only_app(Some("shop")), page(10))
        .await
        .unwrap();
    let ids: Vec<&str> = shop.items.iter().map(|r| r.event_id.as_str()).collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert!(ids.contains(&"x1") && ids.contains(&"x3"));
    let all = db
        .find_errors(&ErrorFilter::default(), page(10))
        .await
        .unwrap();
    assert_eq!(all.items.len(), 3);
}

#[tokio::test]
async fn a_version_2_store_gains_the_new_columns_and_keeps_its_keys_and_events() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("eye.db");
    let old_key = {
        let db = open(&dir);
        store_seconds(&db, 0..3).await;
        db.create_key("shop", &[Scope::Query], Reach::AllApps)
            .unwrap()
    };
    {
        // What schema version 2 had: api_keys without own_app_only, events
        // without identities and context.
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(
            "ALTER TABLE api_keys DROP COLUMN own_app_only;
             ALTER TABLE events DROP COLUMN user_id;
             ALTER TABLE events DROP COLUMN anonymous_id;
             ALTER TABLE events DROP COLUMN context;
             PRAGMA user_version = 2;",
        )
        .unwrap();
    }
    let db = open(&dir);
    assert_eq!(session_paths(&db, "s", 2).await, ["/0", "/1", "/2"]);
    enqueue(
        &db,
        "shop",
        &[(
            "new".into(),
            common::identified_event("s", "2021-01-01 09:00:03"),
        )],
    )
    .await
    .unwrap();
    drain(&db).await;
    let got = db.session_events("s", None, page(10)).await.unwrap();
    assert_eq!(got.items.len(), 4);
    assert_eq!(got.items[3].user_id.as_deref(), Some("user-7"));
    assert!(got.items[0].user_id.is_none() && got.items[0].context.is_none());
    let conn = rusqlite::Connection::open(&path).unwrap();
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, 4);
    let old = db
        .verify(&old_key)
        .await
        .unwrap()
        .expect("the old key still works");
    assert_eq!((old.app.as_str(), old.reach), ("shop", Reach::AllApps));
    let own = db
        .create_key("shop", &[Scope::Query], Reach::OwnApp)
        .unwrap();
    let own = db.verify(&own).await.unwrap().expect("a new key");
    assert_eq!(own.reach, Reach::OwnApp);
    assert_eq!(own.query_app(), Some("shop"));
    assert_ne!(own.key_id, old.key_id);
    let listed: Vec<bool> = db
        .list_keys()
        .unwrap()
        .iter()
        .map(|k| k.own_app_only)
        .collect();
    assert_eq!(listed.len(), 2);
    assert!(listed.contains(&true) && listed.contains(&false));
}
