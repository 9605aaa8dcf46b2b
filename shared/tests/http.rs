//! The HTTP contract, in process: the handler over the in-memory backend.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use eye_shared::adapters::memory::Memory;
use eye_shared::api::{Api, ApiKeyAuth};
use eye_shared::app::process::Processor;
use eye_shared::domain::{QueuedBatch, Rules, SchemaRegistry};
use eye_shared::ports::{BackendError, EventQueue, Principal, QueueMessage, Reach, Scope};
use http::{Request, StatusCode};
use serde_json::{Value, json};

mod common;

const INGEST: &str = "ingest-key";
const QUERY: &str = "query-key";
const SESSION: &str = common::SEED_SESSION;

fn seed(name: &str, data: Value, timestamp: &str) -> Value {
    let category = if name == "submit" {
        "form interaction"
    } else {
        "page interaction"
    };
    json!({"session_id": SESSION, "category": category, "name": name, "data": data, "timestamp": timestamp})
}

fn seed_three() -> Value {
    let t = "2021-01-01 09:15:27.243860";
    json!([
        seed(
            "pageview",
            json!({"host": "www.consumeraffairs.com", "path": "/"}),
            t
        ),
        seed(
            "cta click",
            json!({"host": "www.consumeraffairs.com", "path": "/", "element": "chat bubble"}),
            t
        ),
        seed(
            "submit",
            json!({"host": "www.consumeraffairs.com", "path": "/", "form": {"first_name": "John", "last_name": "Doe"}}),
            t
        ),
    ])
}

struct Harness {
    api: Api,
    memory: Arc<Memory>,
}

impl Harness {
    fn new() -> Self {
        let memory = Arc::new(Memory::new());
        memory.add_key(
            INGEST,
            Principal {
                key_id: "shop-key".into(),
                app: "shop".into(),
                scopes: vec![Scope::Ingest],
                reach: Reach::AllApps,
            },
        );
        memory.add_key(
            QUERY,
            Principal {
                key_id: "analysts-key".into(),
                app: "analysts".into(),
                scopes: vec![Scope::Query],
                reach: Reach::AllApps,
            },
        );
        let api = Api::new(Arc::new(ApiKeyAuth(memory.clone())), memory.clone())
            .with_queries(memory.clone(), memory.clone());
        Self { api, memory }
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        content_type: Option<&str>,
        body: impl Into<Bytes>,
    ) -> (StatusCode, http::HeaderMap, Value) {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(key) = key {
            req = req.header("x-api-key", key);
        }
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        let resp = self.api.handle(req.body(body.into()).unwrap()).await;
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.into_body();
        let json = serde_json::from_slice(&body)
            .unwrap_or(Value::String(String::from_utf8_lossy(&body).into_owned()));
        (status, headers, json)
    }

    async fn post(&self, body: impl Into<Bytes>) -> (StatusCode, http::HeaderMap, Value) {
        self.call(
            "POST",
            "/v1/events",
            Some(INGEST),
            Some("application/json"),
            body,
        )
        .await
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        let (s, _, v) = self
            .call("GET", path, Some(QUERY), None, Bytes::new())
            .await;
        (s, v)
    }

    /// Runs everything queued through the processor.
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
        let processor = Processor::new(
            self.memory.clone(),
            self.memory.clone(),
            Arc::new(SchemaRegistry::builtin().unwrap()),
            Rules::default(),
        );
        let outcome = processor.process(&messages).await;
        assert!(outcome.failures.is_empty(), "{:?}", outcome.failures);
    }
}

fn error_code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("<none>")
}

#[tokio::test]
async fn accepts_the_three_body_forms_and_answers_ids_in_order() {
    let h = Harness::new();
    let one = seed_three()[0].to_string();
    let (s, _, v) = h.post(one).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    assert_eq!(v["accepted"], 1);

    let (s, _, v) = h.post(seed_three().to_string()).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    assert_eq!(v["accepted"], 3);
    let ids: Vec<&str> = v["event_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 3);
    assert!(
        ids[0] < ids[1] && ids[1] < ids[2],
        "generated ids follow request order: {ids:?}"
    );

    let mut with_id = seed_three()[0].clone();
    with_id["event_id"] = json!("client-1");
    let batch = json!({"events": [with_id], "sent_at": "2021-01-01T09:16:00Z"});
    let (s, _, v) = h.post(batch.to_string()).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    assert_eq!(v["event_ids"], json!(["client-1"]));

    let queued = h.memory.drain_queue();
    assert_eq!(queued.len(), 3);
    let last = QueuedBatch::decode(&queued[2].body).unwrap();
    assert_eq!(last.app, "shop", "app comes from the key");
    assert_eq!(
        last.sent_at.unwrap().to_rfc3339(),
        "2021-01-01T09:16:00.000000Z"
    );
}

#[tokio::test]
async fn resending_the_same_request_yields_the_same_ids() {
    let h = Harness::new();
    let (_, _, a) = h.post(seed_three().to_string()).await;
    let (_, _, b) = h.post(seed_three().to_string()).await;
    assert_eq!(a["event_ids"], b["event_ids"]);
    h.process().await;
    assert_eq!(h.memory.event_count(), 3, "a resent request is stored once");
}

#[tokio::test]
async fn forbidden_mirrors_api_gateway() {
    let h = Harness::new();
    let body = seed_three().to_string();
    for key in [None, Some("nope"), Some(QUERY)] {
        let (s, _, v) = h.call("POST", "/v1/events", key, None, body.clone()).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{key:?}");
        assert_eq!(v, json!({"message": "Forbidden"}));
    }
    for path in [
        format!("/v1/sessions/{SESSION}/events"),
        "/v1/events?category=x".into(),
        "/v1/errors".into(),
    ] {
        let (s, _, v) = h.call("GET", &path, Some(INGEST), None, Bytes::new()).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{path}");
        assert_eq!(v, json!({"message": "Forbidden"}));
    }
    assert!(h.memory.drain_queue().is_empty());
}

#[tokio::test]
async fn seed_example_with_trailing_comma_is_malformed_json() {
    let h = Harness::new();
    let (s, _, v) = h.post(common::SEED_WITH_TRAILING_COMMA).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&v), "malformed_json");
    let message = v["error"]["message"].as_str().unwrap();
    assert!(message.contains("line 8 column 3"), "{message}");
    assert!(message.contains("trailing comma"), "{message}");
}

#[tokio::test]
async fn invalid_events_are_refused_whole_with_details() {
    let h = Harness::new();
    let mut events = seed_three();
    events[1]["timestamp"] = json!("2021-01-01 25:00:00");
    events[2].as_object_mut().unwrap().remove("session_id");
    let (s, _, v) = h.post(events.to_string()).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&v), "invalid_event");
    let details = v["error"]["details"].as_array().unwrap();
    assert_eq!(details.len(), 2);
    assert_eq!(details[0]["index"], 1);
    assert_eq!(details[0]["field"], "timestamp");
    assert_eq!(details[1]["index"], 2);
    assert_eq!(details[1]["field"], "session_id");
    assert!(h.memory.drain_queue().is_empty(), "all or nothing");
}

#[tokio::test]
async fn empty_and_oversized_batches() {
    let h = Harness::new();
    let (s, _, v) = h.post("[]").await;
    assert_eq!(
        (s, error_code(&v)),
        (StatusCode::BAD_REQUEST, "empty_batch")
    );

    let many: Vec<Value> = (0..501).map(|_| seed_three()[0].clone()).collect();
    let (s, _, v) = h.post(Value::Array(many).to_string()).await;
    assert_eq!(
        (s, error_code(&v)),
        (StatusCode::BAD_REQUEST, "too_many_events")
    );

    let (s, _, v) = h.post(vec![b' '; 2 * 1024 * 1024]).await;
    assert_eq!(
        (s, error_code(&v)),
        (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
    );

    let mut big = seed_three();
    big[2]["data"]["blob"] = json!("x".repeat(40 * 1024));
    let (s, _, v) = h.post(big.to_string()).await;
    assert_eq!(
        (s, error_code(&v)),
        (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
    );
    assert_eq!(v["error"]["details"][0]["index"], 2);
    assert!(h.memory.drain_queue().is_empty());
}

#[tokio::test]
async fn content_type_must_be_json_when_given() {
    let h = Harness::new();
    let body = seed_three().to_string();
    for ct in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
    ] {
        let (s, _, v) = h
            .call("POST", "/v1/events", Some(INGEST), Some(ct), body.clone())
            .await;
        assert_eq!(
            (s, error_code(&v)),
            (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
            "{ct}"
        );
    }
    for ct in [
        None,
        Some("application/json; charset=utf-8"),
        Some("application/vnd.eye+json"),
    ] {
        let (s, _, _) = h
            .call("POST", "/v1/events", Some(INGEST), ct, body.clone())
            .await;
        assert_eq!(s, StatusCode::ACCEPTED, "{ct:?}");
    }
}

struct BrokenQueue(BackendError);

#[async_trait]
impl EventQueue for BrokenQueue {
    async fn enqueue(&self, _: &QueuedBatch<'_>) -> Result<(), BackendError> {
        Err(self.0.clone())
    }
}

struct HangingQueue;

#[async_trait]
impl EventQueue for HangingQueue {
    async fn enqueue(&self, _: &QueuedBatch<'_>) -> Result<(), BackendError> {
        std::future::pending().await
    }
}

#[tokio::test]
async fn an_unavailable_queue_gets_503_with_retry_after_and_never_hangs() {
    let memory = Arc::new(Memory::new());
    memory.add_key(
        INGEST,
        Principal {
            key_id: "shop-key".into(),
            app: "shop".into(),
            scopes: vec![Scope::Ingest],
            reach: Reach::AllApps,
        },
    );
    let auth = Arc::new(ApiKeyAuth(memory.clone()));
    let queues: Vec<Arc<dyn EventQueue>> = vec![
        Arc::new(BrokenQueue(BackendError::Busy("full".into()))),
        Arc::new(BrokenQueue(BackendError::Failed("disk".into()))),
        Arc::new(HangingQueue),
    ];
    for queue in queues {
        let api = Api::new(auth.clone(), queue).with_enqueue_timeout(Duration::from_millis(200));
        let req = Request::post("/v1/events")
            .header("x-api-key", INGEST)
            .body(Bytes::from(seed_three().to_string()))
            .unwrap();
        let started = std::time::Instant::now();
        let resp = tokio::time::timeout(Duration::from_secs(5), api.handle(req))
            .await
            .expect("the handler must not hang");
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(resp.headers()["retry-after"], "1");
        let v: Value = serde_json::from_slice(resp.body()).unwrap();
        assert_eq!(error_code(&v), "unavailable");
    }
}

#[tokio::test]
async fn queries_after_processing() {
    let h = Harness::new();
    let (s, _, _) = h.post(seed_three().to_string()).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let mut bad = seed_three();
    bad[1]["data"].as_object_mut().unwrap().remove("element");
    bad[1]["session_id"] = json!("other-session");
    bad[0]["timestamp"] = json!("2999-01-01 00:00:00");
    bad[0]["session_id"] = json!("other-session");
    bad[2]["session_id"] = json!("other-session");
    let (s, _, _) = h.post(bad.to_string()).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    h.process().await;

    let (s, v) = h.get(&format!("/v1/sessions/{SESSION}/events")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        common::answer_names(&v),
        ["pageview", "cta click", "submit"],
        "same timestamp keeps send order"
    );
    assert_eq!(v["next_cursor"], Value::Null);
    let first = &v["events"][0];
    assert_eq!(first["app"], "shop");
    assert_eq!(first["timestamp"], "2021-01-01T09:15:27.243860Z");
    assert!(first["received_at"].is_string());
    assert_eq!(first["data"]["host"], "www.consumeraffairs.com");

    let (_, v) = h.get("/v1/events?category=form%20interaction").await;
    assert_eq!(v["events"].as_array().unwrap().len(), 2);
    let (_, v) = h
        .get("/v1/events?from=2021-01-01T09:15:27.243860Z&to=2021-01-01T09:15:27.243861Z")
        .await;
    assert_eq!(v["events"].as_array().unwrap().len(), 4);
    let (_, v) = h.get("/v1/events?to=2021-01-01T09:15:27.243860Z").await;
    assert_eq!(
        v["events"].as_array().unwrap().len(),
        0,
        "`to` is exclusive"
    );

    let (_, v) = h.get("/v1/errors").await;
    let codes: Vec<&str> = v["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["code"].as_str().unwrap())
        .collect();
    assert_eq!(codes.len(), 2);
    assert!(codes.contains(&"timestamp_in_future") && codes.contains(&"payload_invalid"));
    let (_, v) = h.get("/v1/errors?code=payload_invalid").await;
    let e = &v["errors"][0];
    assert_eq!(e["field"], "/data/element");
    assert_eq!(e["app"], "shop");
    assert_eq!(e["event"]["name"], "cta click", "the raw event is kept");
    assert!(e["error_id"].is_string() && e["message"].is_string() && e["received_at"].is_string());
}

#[tokio::test]
async fn pagination_walks_every_event_once() {
    let h = Harness::new();
    let events: Vec<Value> = (0..250)
        .map(|i| {
            seed(
                "pageview",
                json!({"host": "h", "path": format!("/{i}")}),
                &format!("2021-01-01 10:{:02}:{:02}", i / 60, i % 60),
            )
        })
        .collect();
    assert_eq!(
        h.post(Value::Array(events).to_string()).await.0,
        StatusCode::ACCEPTED
    );
    h.process().await;
    for base in [
        format!("/v1/sessions/{SESSION}/events?limit=100"),
        "/v1/events?category=page+interaction&limit=100".into(),
    ] {
        let mut paths = Vec::new();
        let mut cursor: Option<String> = None;
        let mut pages = 0;
        loop {
            let url = match &cursor {
                Some(c) => format!("{base}&cursor={c}"),
                None => base.clone(),
            };
            let (s, v) = h.get(&url).await;
            assert_eq!(s, StatusCode::OK, "{v}");
            pages += 1;
            paths.extend(
                v["events"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|e| e["data"]["path"].as_str().unwrap().to_owned()),
            );
            match v["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => break,
            }
        }
        assert_eq!(pages, 3, "{base}");
        let expected: Vec<String> = (0..250).map(|i| format!("/{i}")).collect();
        assert_eq!(paths, expected, "{base}");
    }
}

#[tokio::test]
async fn bad_queries_are_explained() {
    let h = Harness::new();
    for path in [
        "/v1/events?catgory=x",
        "/v1/events?category=x&limit=0",
        "/v1/events?category=x&limit=5000",
        "/v1/events?from=tomorrow",
        "/v1/events?category=x&cursor=zz",
        "/v1/errors?code=nope",
    ] {
        let (s, v) = h.get(path).await;
        assert_eq!(
            (s, error_code(&v)),
            (StatusCode::BAD_REQUEST, "invalid_query"),
            "{path}"
        );
        assert!(v["error"]["message"].as_str().unwrap().len() > 20);
    }
    // A session cursor does not work on another query.
    let events: Vec<Value> = (0..3)
        .map(|i| {
            seed(
                "pageview",
                json!({"host": "h", "path": "/"}),
                &format!("2021-01-01 10:00:0{i}"),
            )
        })
        .collect();
    h.post(Value::Array(events).to_string()).await;
    h.process().await;
    let (_, v) = h
        .get(&format!("/v1/sessions/{SESSION}/events?limit=1"))
        .await;
    let cursor = v["next_cursor"].as_str().unwrap();
    let (s, _) = h.get(&format!("/v1/errors?cursor={cursor}")).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn docs_health_and_unknown_routes() {
    let h = Harness::new();
    let (s, _, v) = h.call("GET", "/health", None, None, Bytes::new()).await;
    assert_eq!((s, &v["status"]), (StatusCode::OK, &json!("ok")));

    let (s, _, doc) = h
        .call("GET", "/openapi.json", None, None, Bytes::new())
        .await;
    assert_eq!(s, StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/v1/events",
        "/v1/sessions/{session_id}/events",
        "/v1/errors",
        "/health",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} is documented");
    }
    let codes = doc["components"]["schemas"]["Error"]["properties"]["error"]["properties"]["code"]
        ["enum"]
        .to_string();
    for code in [
        "malformed_json",
        "invalid_event",
        "empty_batch",
        "too_many_events",
        "payload_too_large",
        "unsupported_media_type",
        "unavailable",
        "invalid_query",
    ] {
        assert!(codes.contains(code), "{code} is documented");
    }

    let (s, headers, page) = h.call("GET", "/", None, None, Bytes::new()).await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert!(page.as_str().unwrap().contains("/openapi.json"));

    let (s, _, v) = h
        .call("GET", "/v2/nothing", Some(QUERY), None, Bytes::new())
        .await;
    assert_eq!((s, error_code(&v)), (StatusCode::NOT_FOUND, "not_found"));
    let (s, headers, v) = h
        .call("DELETE", "/v1/events", Some(INGEST), None, Bytes::new())
        .await;
    assert_eq!(
        (s, error_code(&v)),
        (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
    );
    assert_eq!(headers["allow"], "GET, POST");
}

#[tokio::test]
async fn session_ids_are_percent_decoded_in_paths() {
    let h = Harness::new();
    let mut e = seed_three()[0].clone();
    e["session_id"] = json!("user 42/tab#1");
    h.post(e.to_string()).await;
    h.process().await;
    let (s, v) = h.get("/v1/sessions/user%2042%2Ftab%231/events").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["events"][0]["session_id"], "user 42/tab#1");
}

#[tokio::test]
async fn payloads_and_raw_events_come_back_byte_for_byte() {
    let h = Harness::new();
    let body = r#"[{"timestamp":"2021-01-01 09:00:00","session_id":"raw","category":"page interaction","name":"pageview","data":{"path":"/z","host":"h","n":1.50}},
                  {"timestamp":"2021-01-01 09:00:01","session_id":"raw","category":"page interaction","name":"cta click","data":{"path":"/z","host":"h"}}]"#;
    assert_eq!(h.post(body).await.0, StatusCode::ACCEPTED);
    h.process().await;
    let req = Request::get("/v1/sessions/raw/events")
        .header("x-api-key", QUERY)
        .body(Bytes::new())
        .unwrap();
    let text = String::from_utf8(h.api.handle(req).await.into_body().to_vec()).unwrap();
    assert!(
        text.contains(r#""data":{"path":"/z","host":"h","n":1.50}"#),
        "{text}"
    );
    let req = Request::get("/v1/errors")
        .header("x-api-key", QUERY)
        .body(Bytes::new())
        .unwrap();
    let text = String::from_utf8(h.api.handle(req).await.into_body().to_vec()).unwrap();
    assert!(
        text.contains(r#""event":{"timestamp":"2021-01-01 09:00:01","session_id":"raw""#),
        "{text}"
    );
}

/// Values the envelope accepts (its check is of syntax) but JSON values cannot
/// hold: kept as error records that name the cause, not blamed on the schema.
#[tokio::test]
async fn data_beyond_json_values_is_an_error_record_that_names_the_cause() {
    let h = Harness::new();
    let body = r#"[{"session_id":"s","category":"page interaction","name":"pageview","data":{"host":"h","path":"/","n":1e400},"timestamp":"2021-01-01 09:00:00"}]"#;
    let (s, _, _) = h.post(body).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    h.process().await;
    // The record keeps the event exactly as sent, 1e400 included, which
    // serde_json will not read back into a value: check the answer's text.
    let (_, v) = h.get("/v1/errors").await;
    let text = v.as_str().expect("the answer, as text");
    assert!(text.contains(r#""code":"invalid_event""#), "{text}");
    assert!(text.contains(r#""field":"/data""#), "{text}");
    assert!(text.contains("number out of range"), "{text}");
    assert!(
        text.contains(r#""n":1e400"#),
        "the raw event is kept: {text}"
    );
    assert!(!text.contains("null is not of type"), "{text}");
}

/// A backend whose writes fail, as under a full disk.
struct FailingWrites;

#[async_trait]
impl eye_shared::ports::StatusSource for FailingWrites {
    async fn status(&self) -> Result<Value, BackendError> {
        Ok(
            json!({"queue_depth": 3, "degraded": "writes to the queue fail: database or disk is full"}),
        )
    }
}

#[tokio::test]
async fn health_says_degraded_with_the_reason_while_writes_fail() {
    let memory = Arc::new(Memory::new());
    let api =
        Api::new(Arc::new(ApiKeyAuth(memory.clone())), memory).with_status(Arc::new(FailingWrites));
    let req = Request::get("/health").body(Bytes::new()).unwrap();
    let r = api.handle(req).await;
    assert_eq!(r.status(), StatusCode::OK, "up: reads are still served");
    let v: Value = serde_json::from_slice(r.body()).unwrap();
    assert_eq!(v["status"], "degraded");
    assert_eq!(
        v["reason"],
        "writes to the queue fail: database or disk is full"
    );
    assert_eq!(v["queue_depth"], 3);
    assert!(v.get("degraded").is_none(), "said once, as the reason");
}

/// The OpenAPI document is exact: its timestamp pattern accepts what the
/// server parses, and refuses what it refuses, calendar and ranges included.
#[test]
fn the_documented_timestamp_pattern_agrees_with_the_parser() {
    use eye_shared::domain::Timestamp;
    let doc: Value = serde_json::from_str(eye_shared::api::OPENAPI_JSON).unwrap();
    let schema = &doc["components"]["schemas"]["Timestamp"];
    let pattern = jsonschema::validator_for(schema).unwrap();
    let both_accept = [
        "2021-01-01 09:15:27.243860",
        "2021-01-01T09:15:27Z",
        "2021-01-01t09:15:27+02:00",
        "2021-01-01 09:15:27.123456789",
        "2021-01-01 09:15:27.1-05:30",
        "2021-01-01 09:15:27z",
        "1970-01-01 00:00:00",
        "1970-01-01T00:00:00+23:59",
        "9999-12-31T23:59:59.999999-23:59",
        "2021-01-31 00:00:00",
        "2021-04-30 00:00:00",
        "2021-12-31 23:59:59",
        "2021-02-28 00:00:00",
        "2024-02-29 00:00:00",
        "1972-02-29 00:00:00",
        "1996-02-29 00:00:00",
        "2000-02-29 00:00:00",
        "2400-02-29 00:00:00",
        "9996-02-29 00:00:00",
        "2021-01-01 23:59:59+23:59",
        "2021-01-01 00:00:00-00:00",
        "2021-01-01 00:00:00+00:00",
    ];
    let both_refuse = [
        "",
        "2021-01-01",
        "yesterday",
        "2021-01-01 09:15",
        "2021-01-01 09:15:27+0100",
        "2021-01-01 09:15:27.",
        "2021-01-01 09:15:27.1234567890",
        "2021-01-01 09:15:27 UTC",
        "2021-01-01 09:15:27x1",
        "2021-02-30 00:00:00",
        "1969-12-31 23:59:59",
        "1900-01-01 00:00:00",
        "0000-00-00T00:00:00",
        "2021-01-01 25:00:00",
        "2021-01-01 24:00:00",
        "2021-01-01 23:60:00",
        "2021-01-01 23:59:60",
        "2021-13-01 00:00:00",
        "2021-00-01 00:00:00",
        "2021-01-00 00:00:00",
        "2021-01-32 00:00:00",
        "2021-04-31 00:00:00",
        "2021-02-29 00:00:00",
        "1900-02-29 00:00:00",
        "2100-02-29 00:00:00",
        "1970-02-29 00:00:00",
        "2021-01-01 00:00:00+24:00",
        "2021-01-01 00:00:00-24:00",
        "2021-01-01 00:00:00+23:60",
        "2021-01-01 00:00:00+1:00",
        "2021-01-01 00:00:00Z\n",
        "10000-01-01 00:00:00",
        "2021-01-01\t00:00:00",
        "٢٠٢١-01-01 00:00:00",
    ];
    for t in both_accept {
        assert!(Timestamp::parse(t).is_ok(), "parser: {t}");
        assert!(pattern.is_valid(&json!(t)), "pattern: {t}");
    }
    for t in both_refuse {
        assert!(Timestamp::parse(t).is_err(), "parser: {t:?}");
        assert!(!pattern.is_valid(&json!(t)), "pattern: {t:?}");
    }
    // Every date of the years around the range's start and of some century
    // and leap years, with impossible months and days: the same verdicts.
    let years = (1960..=2110)
        .chain((2100..=9900).step_by(100))
        .chain([2396, 2397, 2399, 2404])
        .chain(9990..=9999);
    for year in years {
        for month in 0..=13 {
            for day in 0..=32 {
                let t = format!("{year:04}-{month:02}-{day:02}T12:00:00Z");
                assert_eq!(
                    Timestamp::parse(&t).is_ok(),
                    pattern.is_valid(&json!(t)),
                    "{t}"
                );
            }
        }
    }
    // Every time of day and zone offset, by hour and minute.
    for h in 0..=99 {
        for m in [0, 1, 9, 10, 30, 59, 60, 61, 99] {
            for t in [
                format!("2021-06-15 {h:02}:{m:02}:{m:02}"),
                format!("2021-06-15T12:00:00+{h:02}:{m:02}"),
                format!("2021-06-15T12:00:00-{h:02}:{m:02}"),
            ] {
                assert_eq!(
                    Timestamp::parse(&t).is_ok(),
                    pattern.is_valid(&json!(t)),
                    "{t}"
                );
            }
        }
    }
    // Every timestamp of the document is this one definition.
    let text = eye_shared::api::OPENAPI_JSON;
    assert_eq!(text.matches("\"pattern\": \"^((19").count(), 1);
    for pointer in [
        "/components/parameters/from/schema",
        "/components/parameters/to/schema",
        "/components/schemas/EventIn/properties/timestamp",
        "/components/schemas/Batch/properties/sent_at/anyOf/0",
    ] {
        assert_eq!(
            doc.pointer(pointer).unwrap()["$ref"],
            "#/components/schemas/Timestamp",
            "{pointer}"
        );
    }
}

/// `from` equal to `to` is an empty range, as the document says, not a 400.
#[tokio::test]
async fn from_equal_to_to_is_an_empty_page() {
    let h = Harness::new();
    let (s, v) = h
        .get("/v1/events?from=2021-01-01T00:00:00Z&to=2021-01-01T00:00:00Z")
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["events"], json!([]));
    let (s, _) = h
        .get("/v1/errors?from=2021-01-01T00:00:00Z&to=2021-01-01T00:00:00Z")
        .await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn an_own_app_key_reads_only_its_apps_events_and_errors() {
    let h = Harness::new();
    h.memory.add_key(
        "blog-ingest",
        Principal {
            key_id: "blog-ingest".into(),
            app: "blog".into(),
            scopes: vec![Scope::Ingest],
            reach: Reach::AllApps,
        },
    );
    h.memory.add_key(
        "blog-own",
        Principal {
            key_id: "blog-own".into(),
            app: "blog".into(),
            scopes: vec![Scope::Query],
            reach: Reach::OwnApp,
        },
    );
    let (s, _, _) = h.post(seed_three().to_string()).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let mut blog = seed_three();
    blog[0]["data"]["path"] = json!("/blog");
    blog[1]["data"].as_object_mut().unwrap().remove("element"); // an error record
    let (s, _, _) = h
        .call(
            "POST",
            "/v1/events",
            Some("blog-ingest"),
            None,
            blog.to_string(),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    h.process().await;

    let apps = |v: &Value, field: &str| -> Vec<String> {
        v[field]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["app"].as_str().unwrap().to_owned())
            .collect()
    };
    let paths = [
        format!("/v1/sessions/{SESSION}/events"),
        "/v1/events?category=page%20interaction".to_owned(),
        "/v1/events?from=2021-01-01T00:00:00Z&to=2021-01-02T00:00:00Z".to_owned(),
    ];
    for path in &paths {
        let (s, _, own) = h.call("GET", path, Some("blog-own"), None, "").await;
        assert_eq!(s, StatusCode::OK, "{own}");
        let own = apps(&own, "events");
        assert!(
            !own.is_empty() && own.iter().all(|a| a == "blog"),
            "{path}: {own:?}"
        );
        let (_, every) = h.get(path).await;
        let every = apps(&every, "events");
        assert!(
            every.contains(&"shop".to_owned()) && every.len() > own.len(),
            "{path}: {every:?}"
        );
    }
    let (_, _, own) = h
        .call("GET", "/v1/errors", Some("blog-own"), None, "")
        .await;
    assert_eq!(apps(&own, "errors"), ["blog"]);
    // It may not ingest: the restriction does not widen anything.
    let (s, _, _) = h
        .call(
            "POST",
            "/v1/events",
            Some("blog-own"),
            None,
            seed_three().to_string(),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
}

/// Queries the OpenAPI document allows are answered 200 (found by the fuzzer,
/// `cli/tests/openapi_fuzz.rs`): no filter at all, `from` after `to` (with a
/// warning), and any cursor of the endpoint's documented pattern.
#[tokio::test]
async fn every_documented_query_is_answered() {
    let h = Harness::new();
    let events: Vec<Value> = (0..3)
        .map(|i| {
            let mut e = seed(
                "pageview",
                json!({"host": "h", "path": format!("/{i}")}),
                &format!("2021-01-01 10:00:0{i}"),
            );
            e["session_id"] = json!(format!("s{i}"));
            e
        })
        .collect();
    assert_eq!(
        h.post(Value::Array(events).to_string()).await.0,
        StatusCode::ACCEPTED
    );
    h.process().await;

    // No category and no time range: every event, by time, page by page.
    let (s, v) = h.get("/v1/events?limit=2").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["events"].as_array().unwrap().len(), 2);
    assert!(v.get("warning").is_none(), "{v}");
    let cursor = v["next_cursor"].as_str().unwrap();
    assert!(cursor.starts_with("650a"), "{cursor}");
    let (s, v) = h.get(&format!("/v1/events?limit=2&cursor={cursor}")).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["events"][0]["data"]["path"], "/2");
    assert_eq!(v["next_cursor"], Value::Null);

    // `from` after `to`: valid, empty, and said so.
    for (path, name) in [
        (
            "/v1/events?from=2021-01-02T00:00:00Z&to=2021-01-01T00:00:00Z",
            "events",
        ),
        (
            "/v1/events?category=page+interaction&from=2021-01-02T00:00:00Z&to=2021-01-01T00:00:00Z&cursor=650a32",
            "events",
        ),
        (
            "/v1/errors?from=2021-01-02T00:00:00Z&to=2021-01-01T00:00:00Z",
            "errors",
        ),
    ] {
        let (s, v) = h.get(path).await;
        assert_eq!(s, StatusCode::OK, "{path}: {v}");
        assert_eq!(v[name], json!([]), "{path}");
        assert_eq!(v["next_cursor"], Value::Null, "{path}");
        let warning = v["warning"].as_str().unwrap();
        assert!(warning.contains("is after `to`"), "{path}: {warning}");
    }
    // Still a bad cursor there is a bad cursor.
    let (s, _) = h
        .get("/v1/errors?from=2021-01-02T00:00:00Z&to=2021-01-01T00:00:00Z&cursor=650a32")
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    // Any cursor of the pattern, made up or not, only moves the start.
    for (path, found) in [
        ("/v1/events?cursor=650a20", 3),
        ("/v1/events?cursor=650a7e", 0),
        ("/v1/errors?cursor=780a20", 0),
        ("/v1/sessions/s1/events?cursor=730a20", 1),
        ("/v1/sessions/s1/events?cursor=730a7f", 0),
    ] {
        let (s, v) = h.get(path).await;
        assert_eq!(s, StatusCode::OK, "{path}: {v}");
        let name = if path.starts_with("/v1/errors") {
            "errors"
        } else {
            "events"
        };
        assert_eq!(v[name].as_array().unwrap().len(), found, "{path}: {v}");
    }
    // What the pattern refuses, the server refuses, with the same message.
    for path in [
        "/v1/events?cursor=00",
        "/v1/events?cursor=650A32",
        "/v1/events?cursor=650a",
        "/v1/events?cursor=650a1f",
        "/v1/events?cursor=730a32",
        "/v1/sessions/s1/events?cursor=650a32",
        "/v1/errors?cursor=650a32",
    ] {
        let (s, v) = h.get(path).await;
        assert_eq!(
            (s, error_code(&v)),
            (StatusCode::BAD_REQUEST, "invalid_query"),
            "{path}"
        );
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("is not a cursor of this query"),
            "{path}: {v}"
        );
    }
}

/// A session cursor is not tied to its session: on another session it only
/// moves the start, and a real one still walks its session page by page.
#[tokio::test]
async fn session_cursors_walk_their_session_and_only_skip_ahead_elsewhere() {
    let h = Harness::new();
    let events: Vec<Value> = (0..4)
        .map(|i| {
            let mut e = seed(
                "pageview",
                json!({"host": "h", "path": format!("/{i}")}),
                &format!("2021-01-01 10:00:0{i}"),
            );
            e["session_id"] = json!(if i < 2 { "a" } else { "b" });
            e
        })
        .collect();
    h.post(Value::Array(events).to_string()).await;
    h.process().await;
    let (_, v) = h.get("/v1/sessions/a/events?limit=1").await;
    let cursor = v["next_cursor"].as_str().unwrap().to_owned();
    assert!(cursor.starts_with("730a"), "{cursor}");
    let (_, v) = h
        .get(&format!("/v1/sessions/a/events?cursor={cursor}"))
        .await;
    assert_eq!(common::answer_names(&v).len(), 1);
    assert_eq!(v["events"][0]["data"]["path"], "/1");
    let (s, v) = h
        .get(&format!("/v1/sessions/b/events?cursor={cursor}"))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        v["events"].as_array().unwrap().len(),
        2,
        "b is after a's cursor"
    );
}

/// A session id in the path is checked as the document (and ingest) says:
/// 1 to MAX_SESSION_ID_CHARS characters, no control characters.
#[tokio::test]
async fn session_ids_in_paths_are_checked_like_the_ones_sent() {
    use eye_shared::domain::envelope::MAX_SESSION_ID_CHARS;
    let h = Harness::new();
    let longest = "%C3%A9".repeat(MAX_SESSION_ID_CHARS); // é, 128 times
    let (s, v) = h.get(&format!("/v1/sessions/{longest}/events")).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let too_long = "a".repeat(MAX_SESSION_ID_CHARS + 1);
    for (path, says) in [
        (format!("/v1/sessions/{too_long}/events"), "128"),
        ("/v1/sessions//events".to_owned(), "empty"),
        ("/v1/sessions/a%00b/events".to_owned(), "control character"),
        ("/v1/sessions/a%1Fb/events".to_owned(), "control character"),
        ("/v1/sessions/a%7F/events".to_owned(), "control character"),
        (
            "/v1/sessions/a%C2%9F/events".to_owned(),
            "control character",
        ),
    ] {
        let (s, v) = h.get(&path).await;
        assert_eq!(
            (s, error_code(&v)),
            (StatusCode::BAD_REQUEST, "invalid_query"),
            "{path}"
        );
        let message = v["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{path}: {message}");
    }
    let doc: Value = serde_json::from_str(eye_shared::api::OPENAPI_JSON).unwrap();
    let schema =
        &doc["paths"]["/v1/sessions/{session_id}/events"]["get"]["parameters"][0]["schema"];
    assert_eq!(schema["maxLength"], MAX_SESSION_ID_CHARS);
}
