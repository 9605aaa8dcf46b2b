//! The ingest Lambda on the API Gateway fixtures in `events/`: it must answer
//! exactly as `eye serve`'s handler does for the same request.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use eye_shared::adapters::memory::Memory;
use eye_shared::api::{Api, ApiKeyAuth, GatewayAuth};
use eye_shared::domain::QueuedBatch;
use eye_shared::ports::{Principal, Reach, Scope};
use serde_json::Value;

fn fixture(name: &str) -> String {
    let path = format!("{}/../../events/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

struct Answer {
    status: u16,
    content_type: String,
    body: Value,
}

/// Runs a fixture through the Lambda glue.
async fn via_lambda(name: &str) -> (Answer, Arc<Memory>) {
    let memory = Arc::new(Memory::new());
    let keys = eye_ingest::gateway_keys(&[Some(r#"{"a1b2c3d4e5": "shop"}"#)]).unwrap();
    let api = Api::new(Arc::new(GatewayAuth::new(keys)), memory.clone());
    let req = lambda_http::request::from_str(&fixture(name)).expect("a valid API Gateway event");
    let resp = eye_ingest::handle(&api, req).await;
    let status = resp.status().as_u16();
    let content_type = resp.headers()["content-type"].to_str().unwrap().to_owned();
    let body = match resp.into_body() {
        lambda_http::Body::Text(t) => serde_json::from_str(&t).unwrap(),
        other => panic!("expected a text body, got {other:?}"),
    };
    (
        Answer {
            status,
            content_type,
            body,
        },
        memory,
    )
}

/// Sends the fixture's method, path, headers and body to the handler the way
/// `eye serve` does, with the same key known to the local key store.
async fn via_local_server(name: &str) -> Answer {
    let event: Value = serde_json::from_str(&fixture(name)).unwrap();
    let memory = Arc::new(Memory::new());
    memory.add_key(
        "eye-demo-key-shop-0123456789",
        Principal {
            key_id: "shop-key".into(),
            app: "shop".into(),
            scopes: vec![Scope::Ingest],
            reach: Reach::AllApps,
        },
    );
    let api = Api::new(Arc::new(ApiKeyAuth(memory.clone())), memory);
    let mut req = http::Request::builder()
        .method(event["httpMethod"].as_str().unwrap())
        .uri(event["path"].as_str().unwrap());
    let headers: HashMap<String, String> =
        serde_json::from_value(event["headers"].clone()).unwrap();
    for (k, v) in headers {
        req = req.header(k, v);
    }
    let resp = api
        .handle(
            req.body(Bytes::from(event["body"].as_str().unwrap_or("").to_owned()))
                .unwrap(),
        )
        .await;
    Answer {
        status: resp.status().as_u16(),
        content_type: resp.headers()["content-type"].to_str().unwrap().to_owned(),
        body: serde_json::from_slice(resp.body()).unwrap(),
    }
}

async fn same_answer(name: &str) -> (Answer, Arc<Memory>) {
    let (lambda, memory) = via_lambda(name).await;
    let local = via_local_server(name).await;
    assert_eq!(lambda.status, local.status, "{name}");
    assert_eq!(lambda.content_type, local.content_type, "{name}");
    assert_eq!(lambda.body, local.body, "{name}");
    (lambda, memory)
}

#[tokio::test]
async fn valid_seed_events_are_accepted_behind_the_stage_prefix() {
    let (answer, memory) = same_answer("apigw-post-seed.json").await;
    assert_eq!(answer.status, 202, "{}", answer.body);
    assert_eq!(answer.body["accepted"], 3);
    let queued = memory.drain_queue();
    assert_eq!(queued.len(), 1);
    let batch = QueuedBatch::decode(&queued[0].body).unwrap();
    assert_eq!(batch.app, "shop", "the app comes from the API key id");
    assert_eq!(batch.events.len(), 3);
}

#[tokio::test]
async fn malformed_json_is_a_400_naming_line_and_column() {
    let (answer, memory) = same_answer("apigw-post-malformed.json").await;
    assert_eq!(answer.status, 400);
    assert_eq!(answer.body["error"]["code"], "malformed_json");
    assert!(
        answer.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("line 8 column 3")
    );
    assert!(memory.drain_queue().is_empty());
}

#[tokio::test]
async fn invalid_events_are_a_400_with_details() {
    let (answer, _) = same_answer("apigw-post-invalid.json").await;
    assert_eq!(answer.status, 400);
    assert_eq!(answer.body["error"]["code"], "invalid_event");
    assert_eq!(answer.body["error"]["details"][0]["field"], "timestamp");
}

#[tokio::test]
async fn a_request_without_a_key_is_forbidden() {
    let (answer, memory) = same_answer("apigw-post-missing-key.json").await;
    assert_eq!(answer.status, 403);
    assert_eq!(answer.body, serde_json::json!({"message": "Forbidden"}));
    assert!(memory.drain_queue().is_empty());
}

#[test]
fn key_maps_are_merged_and_checked() {
    let keys = eye_ingest::gateway_keys(&[
        Some(r#"{"a": "shop"}"#),
        None,
        Some(r#"{"b": "blog"}"#),
        Some(""),
    ])
    .unwrap();
    assert_eq!(keys.len(), 2);
    assert_eq!(keys["b"].app, "blog");
    assert!(!keys["a"].can(Scope::Query));
    assert!(eye_ingest::gateway_keys(&[Some("[1]")]).is_err());
}

#[tokio::test]
async fn a_segment_batch_is_answered_200_success_and_queued_as_segment_messages() {
    let (answer, memory) = same_answer("apigw-post-segment-batch.json").await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body, serde_json::json!({"success": true}));
    let queued = memory.drain_queue();
    assert_eq!(queued.len(), 1);
    let batch = QueuedBatch::decode(&queued[0].body).unwrap();
    assert_eq!(batch.app, "shop", "the app comes from the API key id");
    assert_eq!(batch.format, eye_shared::domain::Format::Segment);
    let ids: Vec<&str> = batch.events.iter().map(|e| e.event_id.as_ref()).collect();
    assert_eq!(ids, ["m-1", "m-2"]);
}
