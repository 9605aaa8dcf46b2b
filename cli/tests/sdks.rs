//! Real Segment and RudderStack SDKs, pinned, against a real `eye serve`,
//! unchanged but for the host: each sends N messages through its own
//! batching, and the query API then shows exactly N, mapped as the README's
//! table says. `./scripts/test` installs the SDKs (scripts/sdk) and sets
//! `EYE_TEST_PYTHON` and `EYE_TEST_NODE`; without them these tests fail.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Client, Server, create_key};
use serde_json::Value;
use tempfile::TempDir;

fn tool(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!("{var} is not set: run ./scripts/test, which installs the SDKs these tests drive")
    })
}

fn sdk_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/sdk")
}

fn run(program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .current_dir(sdk_dir())
        .output()
        .unwrap_or_else(|e| panic!("run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every event of `session`, once the count has reached `n` and stayed
/// there for a moment (so a duplicate would show).
async fn stored(c: &Client, session: &str, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let fetch = || async {
        let (s, v) = c
            .get(&format!("/v1/sessions/{session}/events?limit=1000"))
            .await;
        assert_eq!(s, 200, "{v}");
        v["events"].as_array().cloned().unwrap_or_default()
    };
    loop {
        let events = fetch().await;
        if events.len() >= n || Instant::now() > deadline {
            tokio::time::sleep(Duration::from_millis(600)).await;
            return fetch().await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn check_mapping(events: &[Value], session: &str, sdk: &str, library: &str) {
    for e in events {
        assert_eq!(e["anonymous_id"], session, "{e}");
        assert_eq!(e["session_id"], session, "anonymousId is the session: {e}");
        assert!(e["user_id"].as_str().unwrap().starts_with("user-"), "{e}");
        assert_eq!(e["data"]["sdk"], sdk, "{e}");
        assert!(e["event_id"].as_str().is_some_and(|id| !id.is_empty()));
        let lib = e["context"]["library"]["name"].as_str().unwrap_or("");
        assert!(lib.contains(library), "context.library.name {lib:?}: {e}");
        match e["context"]["segment"]["type"].as_str() {
            Some("track") => {
                assert_eq!(
                    (e["category"].as_str(), e["name"].as_str()),
                    (Some("track"), Some("Item Viewed"))
                );
                assert!(e["data"]["sku"].as_str().unwrap().starts_with("sku-"));
            }
            Some("page") => {
                assert_eq!(
                    (e["category"].as_str(), e["name"].as_str()),
                    (Some("Docs"), Some("Getting Started"))
                );
                assert!(e["data"]["path"].as_str().unwrap().starts_with("/docs/"));
            }
            Some("identify") => {
                assert_eq!(
                    (e["category"].as_str(), e["name"].as_str()),
                    (Some("identify"), Some("identify"))
                );
                assert_eq!(e["data"]["plan"], "pro");
            }
            other => panic!("type {other:?}: {e}"),
        }
    }
    let mut indexes: Vec<i64> = events
        .iter()
        .map(|e| e["data"]["index"].as_i64().unwrap())
        .collect();
    indexes.sort();
    let expected: Vec<i64> = (0..i64::try_from(events.len()).unwrap()).collect();
    assert_eq!(indexes, expected, "each message once");
}

async fn drive(sdk: &str, program: &str, script: &str, library: &str) {
    let dir = TempDir::new().unwrap();
    let db = dir.path().join("eye.db");
    let key = create_key(&db, "web", &["ingest", "query"]);
    let server = Server::start(&db, &["--no-fsync"]);
    let session = format!("{sdk}-session");
    let n = 60;
    let mut args = vec![script];
    if program.ends_with("python") || program.contains("python") {
        args.push(sdk);
    }
    let n_text = n.to_string();
    args.extend([
        server.url.as_str(),
        key.as_str(),
        n_text.as_str(),
        session.as_str(),
    ]);
    run(program, &args);
    let c = Client::new(&server.url, &key);
    let events = stored(&c, &session, n).await;
    assert_eq!(events.len(), n, "{sdk}: stored {} of {n}", events.len());
    check_mapping(&events, &session, sdk, library);
    let (_, errors) = c.get("/v1/errors").await;
    assert_eq!(errors["errors"], serde_json::json!([]), "no error records");
}

#[tokio::test]
async fn segment_analytics_python_sends_track_page_and_identify() {
    drive(
        "segment",
        &tool("EYE_TEST_PYTHON"),
        "python_send.py",
        "analytics-python",
    )
    .await;
}

#[tokio::test]
async fn rudder_sdk_python_sends_with_basic_auth_and_gzip() {
    drive(
        "rudder",
        &tool("EYE_TEST_PYTHON"),
        "python_send.py",
        "analytics-python",
    )
    .await;
}

#[tokio::test]
async fn segment_analytics_node_sends_track_and_page() {
    drive(
        "node",
        &tool("EYE_TEST_NODE"),
        "node_send.mjs",
        "analytics-node",
    )
    .await;
}
