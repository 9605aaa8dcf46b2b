//! The Segment-compatible API, in process: the handler over the in-memory
//! backend, then the processor, then the query API.

use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use eye_shared::adapters::memory::Memory;
use eye_shared::api::{Api, ApiKeyAuth};
use eye_shared::ports::{Principal, QueueMessage, Reach, Scope};
use http::{Request, StatusCode};
use serde_json::{Value, json};

mod common;

const KEY: &str = "eye_write";
const QUERY_ONLY: &str = "eye_query";

struct Harness {
    api: Api,
    memory: Arc<Memory>,
}

fn principal(key: &str, scopes: Vec<Scope>) -> Principal {
    Principal {
        key_id: key.into(),
        app: "web".into(),
        scopes,
        reach: Reach::AllApps,
    }
}

impl Harness {
    fn new() -> Self {
        let memory = Arc::new(Memory::new());
        memory.add_key(KEY, principal(KEY, vec![Scope::Ingest, Scope::Query]));
        memory.add_key(QUERY_ONLY, principal(QUERY_ONLY, vec![Scope::Query]));
        let api = Api::new(Arc::new(ApiKeyAuth(memory.clone())), memory.clone())
            .with_queries(memory.clone(), memory.clone());
        Self { api, memory }
    }

    async fn send(
        &self,
        path: &str,
        headers: &[(&str, String)],
        body: impl Into<Bytes>,
    ) -> (StatusCode, http::HeaderMap, Value) {
        let mut req = Request::builder().method("POST").uri(path);
        for (name, value) in headers {
            req = req.header(*name, value);
        }
        let resp = self.api.handle(req.body(body.into()).unwrap()).await;
        let status = resp.status();
        let headers = resp.headers().clone();
        let json = serde_json::from_slice(resp.body()).unwrap_or(Value::Null);
        (status, headers, json)
    }

    async fn get(&self, path: &str) -> Value {
        serde_json::from_str(&self.get_text(path).await).unwrap()
    }

    async fn get_text(&self, path: &str) -> String {
        let req = Request::builder()
            .uri(path)
            .header("x-api-key", KEY)
            .body(Bytes::new())
            .unwrap();
        let resp = self.api.handle(req).await;
        assert_eq!(resp.status(), StatusCode::OK);
        String::from_utf8(resp.body().to_vec()).unwrap()
    }

    async fn process(&self) {
        let messages: Vec<QueueMessage> = self
            .memory
            .drain_queue()
            .into_iter()
            .enumerate()
            .map(|(i, m)| QueueMessage {
                id: i.to_string(),
                body: m.body,
                receive_count: 1,
            })
            .collect();
        let p = common::processor(self.memory.clone(), self.memory.clone());
        let outcome = p.process(&messages).await;
        assert!(outcome.failures.is_empty(), "{:?}", outcome.failures);
    }
}

fn basic(key: &str) -> (&'static str, String) {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{key}:"));
    ("authorization", format!("Basic {encoded}"))
}

/// A batch as an SDK sends it (with a price no float can hold).
fn batch() -> String {
    let batch = json!({
        "batch": [
            {"type": "page", "anonymousId": "anon-1", "messageId": "m-1", "name": "Home",
             "properties": {"path": "/", "url": "https://shop.example/"},
             "timestamp": "2024-05-01T10:00:00.000Z"},
            {"type": "track", "anonymousId": "anon-1", "userId": "user-1", "messageId": "m-2",
             "event": "Added to Cart", "properties": {"sku": "A-1", "price": 1},
             "timestamp": "2024-05-01T10:00:01.000Z"},
            {"type": "track", "anonymousId": "anon-1", "messageId": "m-bad",
             "properties": {"sku": "no event name"}, "timestamp": "2024-05-01T10:00:02.000Z"},
            {"type": "identify", "userId": "user-1", "anonymousId": "anon-1", "messageId": "m-3",
             "traits": {"plan": "pro"}, "timestamp": "2024-05-01T10:00:03.000Z"}
        ],
        "context": {"library": {"name": "analytics-test", "version": "1"}},
        "sentAt": "2024-05-01T10:00:04.000Z"
    });
    batch
        .to_string()
        .replace(r#""price":1"#, r#""price":12345678901234567890123"#)
}

#[tokio::test]
async fn a_batch_with_one_bad_message_stores_the_others_and_records_it() {
    let h = Harness::new();
    let (s, _, v) = h.send("/v1/batch", &[basic(KEY)], batch()).await;
    assert_eq!((s, v), (StatusCode::OK, json!({"success": true})));
    h.process().await;

    let events = h.get("/v1/sessions/anon-1/events").await;
    let events = events["events"].as_array().unwrap();
    let types: Vec<(&str, &str)> = events
        .iter()
        .map(|e| (e["category"].as_str().unwrap(), e["name"].as_str().unwrap()))
        .collect();
    assert_eq!(
        types,
        [
            ("page", "Home"),
            ("track", "Added to Cart"),
            ("identify", "identify")
        ]
    );
    let track = &events[1];
    assert_eq!(track["event_id"], "m-2");
    assert_eq!(track["app"], "web");
    assert_eq!(track["user_id"], "user-1");
    assert_eq!(track["anonymous_id"], "anon-1");
    assert_eq!(track["data"]["sku"], "A-1");
    assert_eq!(
        track["context"]["library"]["name"], "analytics-test",
        "the batch's context is merged into each message"
    );
    assert_eq!(track["context"]["segment"]["type"], "track");
    assert!(
        h.get_text("/v1/sessions/anon-1/events")
            .await
            .contains(r#""price":12345678901234567890123"#),
        "a big number keeps every digit"
    );
    // Skew correction: sent 1 s after the event, so it happened 3 s before
    // it was received.
    let t = eye_shared::domain::Timestamp::parse(track["timestamp"].as_str().unwrap()).unwrap();
    let r = eye_shared::domain::Timestamp::parse(track["received_at"].as_str().unwrap()).unwrap();
    assert_eq!(r.as_micros() - t.as_micros(), 3_000_000);
    assert_eq!(track["original_timestamp"], "2024-05-01T10:00:01.000000Z");

    let errors = h.get("/v1/errors?code=invalid_event").await;
    let errors = errors["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0]["event_id"], "m-bad");
    assert_eq!(errors[0]["field"], "/event");
    assert_eq!(
        errors[0]["event"]["properties"]["sku"], "no event name",
        "the raw message is kept"
    );
    assert!(errors[0]["event"].get("writeKey").is_none());

    // A resend of the same batch (a lost answer) is stored once.
    let (s, _, _) = h.send("/v1/import", &[basic(KEY)], batch()).await;
    assert_eq!(s, StatusCode::OK);
    h.process().await;
    assert_eq!(h.memory.event_count(), 3);
    assert_eq!(h.memory.error_count(), 1);
}

#[tokio::test]
async fn the_key_may_come_in_any_of_the_three_ways() {
    let h = Harness::new();
    let message = |id: &str| json!({"event": "Clicked", "anonymousId": "a", "messageId": id});
    let (s, _, _) = h
        .send("/v1/track", &[basic(KEY)], message("1").to_string())
        .await;
    assert_eq!(s, StatusCode::OK, "HTTP Basic, key as user name");
    let (s, _, _) = h
        .send(
            "/v1/t",
            &[("x-api-key", KEY.into())],
            message("2").to_string(),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "x-api-key");
    let mut in_body = message("3");
    in_body["writeKey"] = KEY.into();
    let (s, _, _) = h.send("/v1/track", &[], in_body.to_string()).await;
    assert_eq!(s, StatusCode::OK, "writeKey in the body");
    let mut typed = message("4");
    typed["type"] = "track".into();
    let batch = json!({"batch": [typed], "writeKey": KEY});
    let (s, _, _) = h.send("/v1/b", &[], batch.to_string()).await;
    assert_eq!(s, StatusCode::OK, "writeKey in a batch");
    h.process().await;
    assert_eq!(h.memory.event_count(), 4);
    let stored = h.get("/v1/sessions/a/events").await;
    assert!(!stored.to_string().contains(KEY), "the key is never stored");
}

#[tokio::test]
async fn a_missing_or_unknown_key_is_401_and_one_that_may_not_ingest_403() {
    let h = Harness::new();
    let body = json!({"type": "page", "anonymousId": "a"}).to_string();
    let cases = [
        (vec![], StatusCode::UNAUTHORIZED, "unauthorized", "no key"),
        (
            vec![basic("eye_wrong")],
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "not a valid key",
        ),
        (
            vec![("x-api-key", "eye_wrong".to_owned())],
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "not a valid key",
        ),
        (
            vec![basic(QUERY_ONLY)],
            StatusCode::FORBIDDEN,
            "forbidden",
            "may not ingest",
        ),
    ];
    for (headers, status, code, says) in cases {
        let (s, _, v) = h.send("/v1/page", &headers, body.clone()).await;
        assert_eq!(s, status, "{headers:?}: {v}");
        assert_eq!(v["code"], code, "top-level code: {v}");
        assert!(v["message"].as_str().unwrap().contains(says), "{v}");
        assert_eq!(v["error"]["code"], code);
    }
    let wrong_in_body =
        json!({"batch": [{"type": "page", "anonymousId": "a"}], "writeKey": "nope"});
    let (s, _, v) = h.send("/v1/batch", &[], wrong_in_body.to_string()).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
    assert!(v["message"].as_str().unwrap().contains("writeKey"), "{v}");
    assert_eq!(h.memory.drain_queue().len(), 0, "nothing was queued");
}

#[tokio::test]
async fn bodies_beyond_the_limits_or_not_json_are_refused_whole_with_code_and_message() {
    let h = Harness::new();
    let one = json!({"type": "page", "anonymousId": "a"});
    let many = json!({"batch": vec![one.clone(); 2501]});
    let (s, _, v) = h.send("/v1/batch", &[basic(KEY)], many.to_string()).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(v["code"], "too_many_events");
    assert!(v["message"].as_str().unwrap().contains("2501"), "{v}");
    let just_enough = json!({"batch": vec![one.clone(); 2500]});
    let (s, _, _) = h
        .send("/v1/batch", &[basic(KEY)], just_enough.to_string())
        .await;
    assert_eq!(s, StatusCode::OK);

    let (s, _, v) = h.send("/v1/batch", &[basic(KEY)], "{\"batch\": [").await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("malformed_json"))
    );
    let big = json!({"batch": [{"type": "page", "anonymousId": "a", "properties": {"x": "y".repeat(33 * 1024)}}]});
    let (s, _, v) = h.send("/v1/batch", &[basic(KEY)], big.to_string()).await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("payload_too_large"))
    );
    let (s, _, v) = h
        .send(
            "/v1/page",
            &[basic(KEY), ("content-type", "application/xml".into())],
            one.to_string(),
        )
        .await;
    assert_eq!(
        (s, v["code"].as_str()),
        (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Some("unsupported_media_type")
        )
    );
}

#[tokio::test]
async fn beacons_send_json_as_text_plain() {
    let h = Harness::new();
    let body = json!({"type": "track", "event": "Left", "anonymousId": "b", "writeKey": KEY});
    let (s, _, v) = h
        .send(
            "/v1/t",
            &[("content-type", "text/plain;charset=UTF-8".into())],
            body.to_string(),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    h.process().await;
    assert_eq!(h.memory.event_count(), 1);
}

#[tokio::test]
async fn the_native_api_is_unchanged_and_get_on_a_segment_path_is_405() {
    let h = Harness::new();
    let req = Request::builder()
        .uri("/v1/batch")
        .body(Bytes::new())
        .unwrap();
    let resp = h.api.handle(req).await;
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(resp.headers()["allow"], "POST");
    // A Segment body on the native endpoint is refused as usual, whole.
    let (s, _, v) = h
        .send("/v1/events", &[("x-api-key", KEY.into())], batch())
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(v["error"]["code"], "invalid_event");
    assert!(v.to_string().contains("unknown field `batch`"), "{v}");
}
