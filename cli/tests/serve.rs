//! End to end: the real `eye serve` process, over HTTP.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Client, Server, create_key, event, eye};
use serde_json::{Value, json};
use tempfile::TempDir;

fn now_plus(secs: i64) -> String {
    let t = eye_shared::domain::Timestamp::now().add_micros(secs * 1_000_000);
    t.to_rfc3339()
}

#[tokio::test]
async fn seed_walkthrough_errors_duplicates_and_pagination() {
    let dir = TempDir::new().unwrap();
    let db = dir.path().join("eye.db");
    let key = create_key(&db, "shop", &["ingest", "query"]);
    let server = Server::start(&db, &[]);
    let c = Client::new(&server.url, &key);

    // The seed's three events share one timestamp; their order is kept.
    let t = "2021-01-01 09:15:27.243860";
    let seed = json!([
        event("s-seed", "pageview", t, "/"),
        event("s-seed", "cta click", t, "/"),
        event("s-seed", "submit", t, "/")
    ]);
    let (s, v) = c.post(&seed).await;
    assert_eq!(s, 202, "{v}");

    // A future timestamp and a payload that breaks its schema become error records.
    let future = event("s-bad", "pageview", &now_plus(3600), "/");
    let mut bad = event("s-bad", "cta click", "2021-01-01 09:15:28", "/");
    bad["data"].as_object_mut().unwrap().remove("element");
    assert_eq!(c.post(&json!([future, bad])).await.0, 202);

    // The same client event_id, sent three times, is stored once.
    let mut dup = event("s-dup", "pageview", "2021-01-01 10:00:00", "/");
    dup["event_id"] = json!("client-evt-1");
    for _ in 0..2 {
        assert_eq!(c.post(&dup).await.0, 202);
    }
    assert_eq!(
        c.post(&json!({"events": [dup, event("s-dup", "pageview", "2021-01-01 10:00:01", "/x")]}))
            .await
            .0,
        202
    );

    // 250 events in one session, to page through.
    let many: Vec<Value> = (0..250)
        .map(|i| {
            event(
                "s-many",
                "pageview",
                &format!("2021-01-02 00:{:02}:{:02}", i / 60, i % 60),
                &format!("/{i}"),
            )
        })
        .collect();
    assert_eq!(c.post(&Value::Array(many)).await.0, 202);

    c.drained().await;

    let (_, v) = c.get("/v1/sessions/s-seed/events").await;
    assert_eq!(common::names(&v), ["pageview", "cta click", "submit"]);
    assert_eq!(v["events"][0]["app"], "shop");

    let errors = c.all("/v1/errors", "errors").await;
    let mut codes: Vec<&str> = errors.iter().map(|e| e["code"].as_str().unwrap()).collect();
    codes.sort();
    assert_eq!(codes, ["payload_invalid", "timestamp_in_future"]);
    let payload = errors
        .iter()
        .find(|e| e["code"] == "payload_invalid")
        .unwrap();
    assert_eq!(payload["field"], "/data/element");
    assert_eq!(payload["event"]["session_id"], "s-bad");
    let (_, v) = c.get("/v1/errors?code=timestamp_in_future").await;
    assert_eq!(v["errors"].as_array().unwrap().len(), 1);

    let dup_events = c.all("/v1/sessions/s-dup/events", "events").await;
    assert_eq!(dup_events.len(), 2);
    assert_eq!(
        dup_events
            .iter()
            .filter(|e| e["event_id"] == "client-evt-1")
            .count(),
        1
    );

    let mut pages = 0;
    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let (s, v) = c
            .get(&format!("/v1/sessions/s-many/events?limit=100{cursor}"))
            .await;
        assert_eq!(s, 200);
        pages += 1;
        seen.extend(
            v["events"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["data"]["path"].as_str().unwrap().to_owned()),
        );
        match v["next_cursor"].as_str() {
            Some(next) => cursor = format!("&cursor={next}"),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, (0..250).map(|i| format!("/{i}")).collect::<Vec<_>>());

    // The CLI reads the same file.
    let lines = eye(&[
        "events",
        "--session",
        "s-many",
        "--db",
        db.to_str().unwrap(),
    ]);
    assert_eq!(lines.lines().count(), 250);
    let lines = eye(&[
        "errors",
        "--code",
        "payload_invalid",
        "--db",
        db.to_str().unwrap(),
    ]);
    assert_eq!(lines.lines().count(), 1);
}

#[tokio::test]
async fn concurrent_writers_on_one_session_lose_nothing() {
    let dir = TempDir::new().unwrap();
    let db = dir.path().join("eye.db");
    let key = create_key(&db, "shop", &["ingest", "query"]);
    let server = Server::start(&db, &[]);
    let c = Client::new(&server.url, &key);
    let mut tasks = Vec::new();
    for writer in 0..8 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            for batch in 0..5 {
                // Every writer uses the same timestamps: only seq tells them apart.
                let events: Vec<Value> = (0..20)
                    .map(|i| {
                        let mut e = event(
                            "shared",
                            "pageview",
                            &format!("2021-01-01 12:00:{:02}", batch * 10 + i % 10),
                            &format!("/{writer}/{batch}/{i}"),
                        );
                        e["event_id"] = json!(format!("w{writer}-b{batch}-{i}"));
                        e
                    })
                    .collect();
                let (s, v) = c.post(&Value::Array(events)).await;
                assert_eq!(s, 202, "{v}");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    c.drained().await;
    let events = c.all("/v1/sessions/shared/events", "events").await;
    assert_eq!(events.len(), 8 * 5 * 20);
    let ids: HashSet<&str> = events
        .iter()
        .map(|e| e["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 800);
    let times: Vec<&str> = events
        .iter()
        .map(|e| e["timestamp"].as_str().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "ordered by time");
}

#[tokio::test]
async fn kill_9_under_load_loses_nothing_that_got_a_202() {
    let dir = TempDir::new().unwrap();
    let db = dir.path().join("eye.db");
    let key = create_key(&db, "shop", &["ingest", "query"]);
    let server = Server::start(&db, &[]);
    let c = Client::new(&server.url, &key);

    let acknowledged: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for writer in 0..6 {
        let c = c.clone();
        let acknowledged = acknowledged.clone();
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut batch = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let ids: Vec<String> = (0..25).map(|i| format!("k{writer}-{batch}-{i}")).collect();
                let events: Vec<Value> = ids
                    .iter()
                    .enumerate()
                    .map(|(i, id)| {
                        let mut e = event(
                            &format!("s{writer}"),
                            "pageview",
                            &format!("2021-01-03 00:00:{:02}.{:06}", i, batch),
                            "/",
                        );
                        e["event_id"] = json!(id);
                        e
                    })
                    .collect();
                let sent = c
                    .http
                    .post(format!("{}/v1/events", c.url))
                    .header("x-api-key", &c.key)
                    .body(Value::Array(events).to_string())
                    .send()
                    .await;
                if let Ok(r) = sent {
                    if r.status().as_u16() == 202 {
                        acknowledged.lock().unwrap().extend(ids);
                    }
                }
                batch += 1;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.kill9();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(
        acknowledged.len() > 500,
        "the load ran: {} acknowledged",
        acknowledged.len()
    );

    let server = Server::start(&db, &[]);
    let c = Client::new(&server.url, &key);
    c.drained().await;
    let stored = c
        .all(
            "/v1/events?from=2021-01-03T00:00:00Z&to=2021-01-04T00:00:00Z",
            "events",
        )
        .await;
    let mut counts: HashMap<String, usize> = HashMap::new();
    for e in &stored {
        *counts
            .entry(e["event_id"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    assert!(counts.values().all(|&n| n == 1), "nothing is stored twice");
    let missing: Vec<&String> = acknowledged
        .iter()
        .filter(|id| !counts.contains_key(*id))
        .collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged events were lost, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
}

#[tokio::test]
async fn first_start_explains_keys_and_keys_can_be_listed_and_revoked() {
    let dir = TempDir::new().unwrap();
    let db = dir.path().join("eye.db");
    let dbs = db.to_str().unwrap();
    let mut child = std::process::Command::new(common::EYE)
        .args(["serve", "--listen", "127.0.0.1:0", "--db", dbs])
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    while !seen.contains("listening") {
        if std::io::BufRead::read_line(&mut stderr, &mut seen).unwrap() == 0 {
            break;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        seen.contains("No API keys yet") && seen.contains("eye keys create"),
        "{seen}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));

    let key = create_key(&db, "shop", &[]);
    let listed = eye(&["keys", "list", "--json", "--db", dbs]);
    let info: Value = serde_json::from_str(listed.lines().next().unwrap()).unwrap();
    assert_eq!(info["app"], "shop");
    assert_eq!(
        info["scopes"],
        json!(["ingest"]),
        "ingest is the default scope"
    );
    let id = info["id"].as_str().unwrap();
    assert!(
        key.contains(id) && !listed.contains(&key),
        "list shows ids, never keys"
    );

    let server = Server::start(&db, &[]);
    let c = Client::new(&server.url, &key);
    assert_eq!(
        c.post(&event("s", "pageview", "2021-01-01 00:00:00", "/"))
            .await
            .0,
        202
    );
    assert_eq!(
        c.get("/v1/sessions/s/events").await.0,
        403,
        "an ingest key cannot query"
    );
    eye(&["keys", "revoke", id, "--db", dbs]);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (s, v) = c
        .post(&event("s", "pageview", "2021-01-01 00:00:00", "/"))
        .await;
    assert_eq!((s, v), (403, json!({"message": "Forbidden"})));
}

#[tokio::test]
async fn an_own_app_only_key_reads_only_its_app_over_http() {
    let dir = TempDir::new().unwrap();
    let db = dir.path().join("eye.db");
    let dbs = db.to_str().unwrap();
    let refused = std::process::Command::new(common::EYE)
        .args([
            "keys",
            "create",
            "--app",
            "blog",
            "--own-app-only",
            "--db",
            dbs,
        ])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("--scope query"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let shop = create_key(&db, "shop", &["ingest"]);
    let blog = create_key(&db, "blog", &["ingest"]);
    let created = eye(&[
        "keys",
        "create",
        "--app",
        "blog",
        "--scope",
        "query",
        "--own-app-only",
        "--db",
        dbs,
    ]);
    assert!(created.contains("only app \"blog\""), "{created}");
    let own = created.lines().last().unwrap().trim().to_owned();
    let everyone = create_key(&db, "analysts", &["query"]);
    let listed = eye(&["keys", "list", "--db", dbs]);
    assert!(
        listed.contains("own app") && listed.contains("all apps"),
        "{listed}"
    );

    let server = Server::start(&db, &["--no-fsync"]);
    for (key, path) in [(&shop, "/shop"), (&blog, "/blog")] {
        let c = Client::new(&server.url, key);
        let (s, v) = c
            .post(&event("s", "pageview", "2021-01-01 00:00:00", path))
            .await;
        assert_eq!(s, 202, "{v}");
    }
    let wait_for = |key: &str, n: usize| {
        let c = Client::new(&server.url, key);
        async move {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let (s, v) = c.get("/v1/sessions/s/events").await;
                assert_eq!(s, 200, "{v}");
                if v["events"].as_array().unwrap().len() >= n || Instant::now() > deadline {
                    return v;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let all = wait_for(&everyone, 2).await;
    assert_eq!(all["events"].as_array().unwrap().len(), 2, "{all}");
    let mine = wait_for(&own, 1).await;
    let apps: Vec<&str> = mine["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["app"].as_str().unwrap())
        .collect();
    assert_eq!(apps, ["blog"], "{mine}");
}
