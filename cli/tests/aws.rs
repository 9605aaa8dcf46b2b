//! End to end on the AWS path: `eye bootstrap`, then `eye serve --backend aws`
//! against an emulator speaking the AWS wire protocol (moto, started by
//! `scripts/test`, which sets `EYE_TEST_MOTO_URL`).

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::{Client, Server, create_key, event, eye};
use serde_json::{Value, json};
use tempfile::TempDir;

fn moto_url() -> String {
    std::env::var("EYE_TEST_MOTO_URL").expect(
        "EYE_TEST_MOTO_URL is not set: run ./scripts/test, which starts the AWS emulator (moto) for these tests",
    )
}

async fn wait_for<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn bootstrap_serve_query_through_the_indexes_and_recover_a_poison_message() {
    let url = moto_url();
    let prefix = format!("e2e{}", std::process::id());
    let aws = [
        "--backend",
        "aws",
        "--endpoint-url",
        &url,
        "--prefix",
        &prefix,
    ];
    let mut boot = vec!["bootstrap"];
    boot.extend(aws);
    boot.extend(["--visibility-timeout", "1", "--max-receive-count", "2"]);
    let out = eye(&boot);
    assert!(
        out.contains(&format!("created table {prefix}-events")),
        "{out}"
    );

    let dir = TempDir::new().unwrap();
    let db = dir.path().join("keys.db");
    let key = create_key(&db, "shop", &["ingest", "query"]);
    let mut serve_args: Vec<&str> = aws.to_vec();
    serve_args.extend(["--shards", "4"]);
    let server = Server::start(&db, &serve_args);
    let c = Client::new(&server.url, &key);

    // 3 days x 2 categories x 10 events, over 3 sessions.
    let mut events = Vec::new();
    for day in 1..=3 {
        for i in 0..20 {
            let name = if i % 2 == 0 { "pageview" } else { "submit" };
            events.push(event(
                &format!("s{}", i % 3),
                name,
                &format!("2021-02-0{day} {:02}:30:00", i),
                &format!("/{day}/{i}"),
            ));
        }
    }
    let (s, v) = c.post(&Value::Array(events)).await;
    assert_eq!(s, 202, "{v}");
    let (s, _) = c
        .post(&json!([
            event("seed", "pageview", "2021-02-01 09:15:27.243860", "/"),
            event("seed", "cta click", "2021-02-01 09:15:27.243860", "/"),
            event("seed", "submit", "2021-02-01 09:15:27.243860", "/")
        ]))
        .await;
    assert_eq!(s, 202);

    let range = "/v1/events?from=2021-02-01T00:00:00Z&to=2021-02-04T00:00:00Z";
    wait_for("63 events to be queryable", || {
        let c = c.clone();
        async move { c.all(range, "events").await.len() == 63 }
    })
    .await;

    // The AWS calls behind them, as `eye bench` and `eye cost` read them:
    // one SendMessageBatch of one message per request, and one conditional
    // put of 3 write units (table + two indexes) per event.
    let (s, health) = c.get("/health").await;
    assert_eq!(s, 200, "{health}");
    let calls = &health["aws_calls"];
    assert_eq!(calls["sqs_events"], 63, "{health}");
    assert_eq!(calls["sqs_send_batches"], 2, "{health}");
    assert_eq!(calls["sqs_messages"], 2, "{health}");
    assert_eq!(calls["dynamodb_puts"], 63, "{health}");
    assert_eq!(calls["dynamodb_write_units"], 189, "{health}");
    assert!(calls["sqs_receives"].as_u64().unwrap() >= 1, "{health}");

    // Time range across three day buckets and four shards, merged in order.
    let all = c.all(range, "events").await;
    let times: Vec<&str> = all
        .iter()
        .map(|e| e["timestamp"].as_str().unwrap())
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "merged in time order"
    );
    let (_, page) = c
        .get("/v1/events?from=2021-02-02T00:00:00Z&to=2021-02-03T00:00:00Z&limit=7")
        .await;
    assert_eq!(page["events"].as_array().unwrap().len(), 7);
    assert!(page["next_cursor"].is_string());
    assert_eq!(
        c.all(
            "/v1/events?from=2021-02-02T00:00:00Z&to=2021-02-03T00:00:00Z",
            "events"
        )
        .await
        .len(),
        20
    );

    // By category, across shards and days.
    let forms = c
        .all("/v1/events?category=form%20interaction", "events")
        .await;
    assert_eq!(forms.len(), 31);
    assert!(forms.iter().all(|e| e["category"] == "form interaction"));

    // By session: the seed's three, in send order.
    let (_, v) = c.get("/v1/sessions/seed/events").await;
    assert_eq!(common::names(&v), ["pageview", "cta click", "submit"]);

    // The CLI reads the same tables.
    let mut args = vec!["events"];
    args.extend(aws);
    args.extend([
        "--shards",
        "4",
        "--category",
        "page interaction",
        "--from",
        "2021-02-03 00:00:00",
    ]);
    assert_eq!(eye(&args).lines().count(), 10);

    // A poison message: the errors table is gone (a broken deployment), so a
    // message with an invalid event fails every time and lands in the DLQ.
    let sdk = eye_shared::adapters::aws::sdk_config(Some(&url)).await;
    let ddb = eye_shared::adapters::aws::DynamoClient::new(&sdk);
    ddb.delete_table()
        .table_name(format!("{prefix}-errors"))
        .send()
        .await
        .unwrap();
    let mut invalid = event("poison", "cta click", "2021-02-05 10:00:00", "/");
    invalid["data"].as_object_mut().unwrap().remove("element");
    let valid = event("poison", "pageview", "2021-02-05 10:00:01", "/");
    assert_eq!(c.post(&json!([invalid, valid])).await.0, 202);
    let mut list = vec!["dlq", "list"];
    list.extend(aws);
    wait_for("the poison message in the DLQ", || {
        let list = list.clone();
        async move { eye(&list).lines().count() == 1 }
    })
    .await;
    let dead: Value = serde_json::from_str(eye(&list).lines().next().unwrap()).unwrap();
    assert!(dead["body"].as_str().unwrap().contains("poison"));

    // Fix the cause (bootstrap recreates the table), then redrive.
    assert!(eye(&boot).contains(&format!("created table {prefix}-errors")));
    let mut redrive = vec!["dlq", "redrive"];
    redrive.extend(aws);
    assert!(eye(&redrive).contains("Moved 1"));
    wait_for("the recovered error record", || {
        let c = c.clone();
        async move {
            c.all("/v1/errors?code=payload_invalid", "errors")
                .await
                .len()
                == 1
        }
    })
    .await;
    let poison = c.all("/v1/sessions/poison/events", "events").await;
    assert_eq!(
        poison.len(),
        1,
        "the valid event of the poison message is stored once, despite 3 deliveries"
    );
    assert_eq!(eye(&list).lines().count(), 0);

    let (_, health) = c.get("/health").await;
    assert_eq!(health["dead_letters"], 0);
    let mut counts: HashMap<String, usize> = HashMap::new();
    for e in c
        .all(
            "/v1/events?from=2021-02-01T00:00:00Z&to=2021-02-06T00:00:00Z",
            "events",
        )
        .await
    {
        *counts
            .entry(e["event_id"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    assert!(counts.values().all(|&n| n == 1), "nothing stored twice");
    assert_eq!(counts.len(), 64);
}
