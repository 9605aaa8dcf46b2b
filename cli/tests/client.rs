//! The client library (`eye-client`) against the real `eye serve`: directly,
//! and through a small proxy that injects faults (503 with `Retry-After`,
//! connections cut after the server got the batch, answers slower than the
//! client's timeout). Every count is made through the query API.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Server, create_key};
use eye_client::{Client, DeliveryFailure, FailureReason, TrackError, Uuid};
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A running `eye serve` with a key that can ingest and query.
struct Eye {
    server: Server,
    key: String,
    query: common::Client,
    _dir: TempDir,
}

fn start_eye() -> Eye {
    // reqwest is built with `rustls-no-provider` (for eye-client), so a
    // provider must be installed before `common::Client` builds its reqwest.
    eye_client::install_crypto_provider();
    let dir = TempDir::new().unwrap();
    let db = dir.path().join("eye.db");
    let key = create_key(&db, "shop", &["ingest", "query"]);
    let server = Server::start(&db, &[]);
    let query = common::Client::new(&server.url, &key);
    Eye {
        server,
        key,
        query,
        _dir: dir,
    }
}

/// The seed's three event types, in turn, each valid for its schema.
fn seed(i: usize) -> (&'static str, &'static str, Value) {
    let host = "www.consumeraffairs.com";
    let path = format!("/p/{i}");
    match i % 3 {
        0 => (
            "page interaction",
            "pageview",
            json!({"host": host, "path": path}),
        ),
        1 => (
            "page interaction",
            "cta click",
            json!({"host": host, "path": path, "element": "chat bubble"}),
        ),
        _ => (
            "form interaction",
            "submit",
            json!({"host": host, "path": path, "form": {"first_name": "John"}}),
        ),
    }
}

fn track_n(client: &Client, session: &str, n: usize) -> Vec<Uuid> {
    (0..n)
        .map(|i| {
            let (category, name, data) = seed(i);
            client.track(session, category, name, &data).unwrap()
        })
        .collect()
}

/// The `event_id`s stored for a session, in the session's order, once the
/// server has processed everything it accepted.
async fn stored_ids(eye: &Eye, session: &str) -> Vec<String> {
    eye.query.drained().await;
    eye.query
        .all(&format!("/v1/sessions/{session}/events"), "events")
        .await
        .iter()
        .map(|e| e["event_id"].as_str().expect("event_id").to_owned())
        .collect()
}

/// Each tracked event is stored exactly once, in tracking order, and nothing
/// became an error record.
async fn assert_stored_exactly_once(eye: &Eye, session: &str, tracked: &[Uuid]) {
    let stored = stored_ids(eye, session).await;
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for id in &stored {
        *counts.entry(id).or_default() += 1;
    }
    let duplicated: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        duplicated.is_empty(),
        "stored more than once: {duplicated:?}"
    );
    let tracked: Vec<String> = tracked.iter().map(Uuid::to_string).collect();
    assert_eq!(stored.len(), tracked.len(), "stored vs tracked");
    assert_eq!(stored, tracked, "the session's order is the tracking order");
    let errors = eye.query.all("/v1/errors", "errors").await;
    assert!(errors.is_empty(), "{errors:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracked_events_are_stored_once_each_in_session_order() {
    let eye = start_eye();
    let client = Client::builder(&eye.server.url, &eye.key).build().unwrap();
    let sessions: Vec<String> = (0..4).map(|i| format!("happy-{i}")).collect();
    let mut tracked: HashMap<&str, Vec<Uuid>> = HashMap::new();
    for i in 0..1000 {
        let session = &sessions[i % sessions.len()];
        let (category, name, data) = seed(i);
        let id = client.track(session, category, name, &data).unwrap();
        assert_eq!(id.get_version_num(), 7);
        tracked.entry(session).or_default().push(id);
    }
    client.flush().await.unwrap();

    let stats = client.stats();
    assert_eq!(
        (
            stats.sent,
            stats.failed,
            stats.dropped,
            stats.retried,
            stats.queue_depth
        ),
        (1000, 0, 0, 0, 0),
        "{stats:?}"
    );
    // Default batches of 100: at least 10 requests, and not one per event.
    assert!((10..=100).contains(&stats.requests), "{stats:?}");
    let mut total = 0;
    for session in &sessions {
        assert_stored_exactly_once(&eye, session, &tracked[session.as_str()]).await;
        total += tracked[session.as_str()].len();
    }
    assert_eq!(total, 1000);

    // A full event with its own timestamp, tracked twice: stored once, with
    // that timestamp.
    let event = eye_client::Event::new("happy-full", "page interaction", "pageview", seed(0).2)
        .with_timestamp("2021-01-01T09:15:27.243860Z".parse().unwrap());
    client.track_event(&event).unwrap();
    client.track_event(&event).unwrap();
    client.shutdown().await.unwrap();
    eye.query.drained().await;
    let (_, v) = eye.query.get("/v1/sessions/happy-full/events").await;
    let events = v["events"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{v}");
    assert_eq!(events[0]["event_id"], event.event_id.to_string());
    assert_eq!(
        events[0]["original_timestamp"],
        "2021-01-01T09:15:27.243860Z"
    );
}

/// What the proxy does to the first `faulty` requests; later ones are forwarded.
#[derive(Clone, Copy, Debug)]
enum Fault {
    /// Answers 503 with `Retry-After: 1`, without forwarding.
    Unavailable,
    /// Forwards, waits for the server's answer, then closes the connection
    /// without answering.
    CutAfterForward,
    /// Forwards, then answers only after this long.
    SlowAnswer(Duration),
    /// Answers 400 `invalid_event`, without forwarding.
    BadRequest,
}

/// A one-request-per-connection HTTP/1.1 proxy in front of `eye serve`.
struct Proxy {
    url: String,
    /// Request bodies, in arrival order.
    bodies: Arc<Mutex<Vec<Value>>>,
    /// Requests that reached the real server.
    forwarded: Arc<AtomicUsize>,
}

impl Proxy {
    async fn start(upstream: &str, fault: Fault, faulty: usize) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let forwarded = Arc::new(AtomicUsize::new(0));
        let http = reqwest::Client::new();
        let upstream = format!("{upstream}/v1/events");
        let (b, f) = (Arc::clone(&bodies), Arc::clone(&forwarded));
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let (b, f, http, upstream) = (
                    Arc::clone(&b),
                    Arc::clone(&f),
                    http.clone(),
                    upstream.clone(),
                );
                tokio::spawn(async move {
                    let mut socket = socket;
                    let Some((head, body)) = read_request(&mut socket).await else {
                        return;
                    };
                    let n = {
                        let mut bodies = b.lock().unwrap();
                        bodies.push(serde_json::from_slice(&body).unwrap_or(Value::Null));
                        bodies.len() - 1
                    };
                    let fault = (n < faulty).then_some(fault);
                    match fault {
                        Some(Fault::Unavailable) => {
                            let body = br#"{"error":{"code":"unavailable","message":"try later","details":[]}}"#;
                            respond(&mut socket, 503, "retry-after: 1\r\n", body).await;
                            return;
                        }
                        Some(Fault::BadRequest) => {
                            let body = br#"{"error":{"code":"invalid_event","message":"1 event(s) are invalid and nothing was accepted","details":[{"index":0,"field":"category","message":"`category` has 65 characters; it must have 1 to 64"}]}}"#;
                            respond(&mut socket, 400, "", body).await;
                            return;
                        }
                        _ => {}
                    }
                    let key = header(&head, "x-api-key").unwrap_or_default();
                    let answer = http
                        .post(&upstream)
                        .header("x-api-key", key)
                        .header("content-type", "application/json")
                        .body(body)
                        .send()
                        .await
                        .expect("the real server answers");
                    let status = answer.status().as_u16();
                    let answer = answer.bytes().await.expect("answer body");
                    f.fetch_add(1, Ordering::SeqCst);
                    match fault {
                        Some(Fault::CutAfterForward) => drop(socket),
                        Some(Fault::SlowAnswer(delay)) => {
                            tokio::time::sleep(delay).await;
                            respond(&mut socket, status, "", &answer).await;
                        }
                        _ => respond(&mut socket, status, "", &answer).await,
                    }
                });
            }
        });
        Proxy {
            url,
            bodies,
            forwarded,
        }
    }

    fn bodies(&self) -> Vec<Value> {
        self.bodies.lock().unwrap().clone()
    }
}

/// Reads one request: the head up to CRLFCRLF, then Content-Length bytes.
async fn read_request(socket: &mut TcpStream) -> Option<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = socket.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let length: usize = header(&head, "content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < length {
        let n = socket.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some((head, body))
}

fn header(head: &str, name: &str) -> Option<String> {
    head.lines().find_map(|line| {
        let (k, v) = line.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_owned())
    })
}

async fn respond(socket: &mut TcpStream, status: u16, extra_headers: &str, body: &[u8]) {
    let head = format!(
        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n{extra_headers}\r\n",
        body.len()
    );
    // The client may have given up already (timeouts): ignore write errors.
    let _ = socket.write_all(head.as_bytes()).await;
    let _ = socket.write_all(body).await;
    let _ = socket.shutdown().await;
}

/// Tracks 300 events (three batches of 100) through a faulty proxy, flushes,
/// and checks that each is stored exactly once, and that the retried batch
/// kept its events (ids and timestamps) with a fresh `sent_at`.
async fn survive(fault: Fault, timeout: Duration) -> (eye_client::Stats, Proxy, Duration) {
    let eye = start_eye();
    let faulty = 2;
    let proxy = Proxy::start(&eye.server.url, fault, faulty).await;
    let client = Client::builder(&proxy.url, &eye.key)
        .timeout(timeout)
        .build()
        .unwrap();
    let session = format!("fault-{fault:?}").replace(['(', ')', '.', ' '], "-");
    let started = Instant::now();
    let tracked = track_n(&client, &session, 300);
    client.flush().await.unwrap();
    let elapsed = started.elapsed();

    let stats = client.stats();
    assert_eq!(
        (stats.sent, stats.failed, stats.queue_depth),
        (300, 0, 0),
        "{stats:?}"
    );
    let bodies = proxy.bodies();
    assert_eq!(stats.requests as usize, bodies.len(), "{stats:?}");
    // The first batch was sent `faulty` + 1 times, the same events each time.
    assert!(bodies.len() >= 3 + faulty, "{} requests", bodies.len());
    assert!(stats.retried >= faulty as u64, "{stats:?}");
    for attempt in 1..=faulty {
        assert_eq!(
            bodies[attempt]["events"], bodies[0]["events"],
            "attempt {attempt}"
        );
        assert_ne!(bodies[attempt]["sent_at"], bodies[attempt - 1]["sent_at"]);
    }
    for body in &bodies {
        let sent_at = body["sent_at"].as_str().expect("every batch has sent_at");
        assert_eq!(sent_at.len(), 27, "{sent_at}");
        assert!(body["events"].as_array().unwrap().len() <= 100);
    }
    assert_stored_exactly_once(&eye, &session, &tracked).await;
    (stats, proxy, elapsed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_after_503_honouring_retry_after() {
    let (stats, proxy, elapsed) = survive(Fault::Unavailable, Duration::from_secs(10)).await;
    // Two answers `Retry-After: 1`: at least two seconds, where the backoff
    // alone would wait at most 0.3 s.
    assert!(elapsed >= Duration::from_secs(2), "{elapsed:?}");
    assert_eq!(
        proxy.forwarded.load(Ordering::SeqCst) as u64,
        stats.requests - 2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_when_the_connection_is_cut_after_the_server_stored_the_batch() {
    let (stats, proxy, _) = survive(Fault::CutAfterForward, Duration::from_secs(10)).await;
    // Every request reached the server: the first batch three times.
    assert_eq!(
        proxy.forwarded.load(Ordering::SeqCst) as u64,
        stats.requests
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_answers_slower_than_the_timeout() {
    let (stats, proxy, _) = survive(
        Fault::SlowAnswer(Duration::from_millis(1500)),
        Duration::from_millis(500),
    )
    .await;
    assert_eq!(
        proxy.forwarded.load(Ordering::SeqCst) as u64,
        stats.requests
    );
}

#[tokio::test]
async fn a_full_queue_is_an_error_the_caller_sees_and_is_counted() {
    // A server that takes connections and never answers: nothing leaves the queue.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let client = Client::builder(&url, "eye_k_s")
        .max_queue(10)
        .batch_size(5)
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    for i in 0..10 {
        client.track("full", "c", "n", &json!({ "i": i })).unwrap();
    }
    // Let the sender take a batch into a request: in flight still counts.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let err = client.track("full", "c", "n", &json!({})).unwrap_err();
    assert!(
        matches!(err, TrackError::QueueFull { capacity: 10 }),
        "{err:?}"
    );
    assert!(err.to_string().contains("queue is full"), "{err}");
    let event = eye_client::Event::new("full", "c", "n", json!({}));
    assert!(matches!(
        client.track_event(&event),
        Err(TrackError::QueueFull { .. })
    ));
    let stats = client.stats();
    assert_eq!((stats.dropped, stats.queue_depth), (2, 10), "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_4xx_is_not_retried_and_is_reported_with_the_servers_body() {
    let eye = start_eye();
    let failures: Arc<Mutex<Vec<DeliveryFailure>>> = Arc::default();

    // A 400 (from a stub: the client's own checks refuse what the server would).
    let proxy = Proxy::start(&eye.server.url, Fault::BadRequest, usize::MAX).await;
    let sink = Arc::clone(&failures);
    let client = Client::builder(&proxy.url, &eye.key)
        .on_failure(move |f| sink.lock().unwrap().push(f.clone()))
        .build()
        .unwrap();
    let tracked = track_n(&client, "rejected", 3);
    client.flush().await.unwrap();
    let stats = client.stats();
    assert_eq!(
        (
            stats.requests,
            stats.retried,
            stats.failed,
            stats.sent,
            stats.queue_depth
        ),
        (1, 0, 3, 0, 0),
        "{stats:?}"
    );
    assert_eq!(proxy.bodies().len(), 1, "exactly one request");
    {
        let failures = failures.lock().unwrap();
        assert_eq!(failures.len(), 1);
        let f = &failures[0];
        assert_eq!(f.event_ids, tracked);
        assert_eq!(f.events.len(), 3);
        assert_eq!(f.attempts, 1);
        match &f.reason {
            FailureReason::Rejected { status: 400, body } => {
                let body: Value = serde_json::from_str(body).unwrap();
                assert_eq!(body["error"]["code"], "invalid_event");
            }
            other => panic!("{other:?}"),
        }
    }

    // A 403 from the real server: a key it does not know.
    failures.lock().unwrap().clear();
    let sink = Arc::clone(&failures);
    let client = Client::builder(&eye.server.url, "eye_unknown_key")
        .on_failure(move |f| sink.lock().unwrap().push(f.clone()))
        .build()
        .unwrap();
    track_n(&client, "forbidden", 5);
    client.shutdown().await.unwrap();
    let stats = client.stats();
    assert_eq!((stats.requests, stats.failed), (1, 5), "{stats:?}");
    let reported = failures.lock().unwrap().clone();
    assert!(
        matches!(&reported[0].reason, FailureReason::Rejected { status: 403, body } if body.contains("Forbidden")),
        "{reported:?}"
    );
    assert!(stored_ids(&eye, "rejected").await.is_empty());
    assert!(stored_ids(&eye, "forbidden").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_loses_nothing_that_track_accepted() {
    let eye = start_eye();

    // Many events, then shutdown at once.
    let client = Client::builder(&eye.server.url, &eye.key).build().unwrap();
    let tracked = track_n(&client, "shutdown-burst", 3000);
    client.shutdown().await.unwrap();
    assert_eq!(client.stats().sent, 3000);
    assert_stored_exactly_once(&eye, "shutdown-burst", &tracked).await;

    // A thread that tracks as fast as it can while shutdown happens: every
    // event it was told was accepted is stored; the rest got `Closed`.
    let client = Client::builder(&eye.server.url, &eye.key)
        .batch_size(500)
        .build()
        .unwrap();
    let c = client.clone();
    let tracker = std::thread::spawn(move || {
        let mut accepted = Vec::new();
        let mut i = 0;
        loop {
            let (category, name, data) = seed(i);
            i += 1;
            match c.track("shutdown-race", category, name, &data) {
                Ok(id) => accepted.push(id),
                Err(TrackError::QueueFull { .. }) => std::thread::yield_now(),
                Err(TrackError::Closed) => return accepted,
                Err(e) => panic!("{e}"),
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    client.shutdown().await.unwrap();
    let accepted = tracker.join().unwrap();
    assert!(!accepted.is_empty());
    let stats = client.stats();
    assert_eq!(stats.sent, accepted.len() as u64, "{stats:?}");
    assert_eq!((stats.failed, stats.queue_depth), (0, 0), "{stats:?}");
    assert_stored_exactly_once(&eye, "shutdown-race", &accepted).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_client_still_sends_while_the_runtime_runs() {
    let eye = start_eye();
    let client = Client::builder(&eye.server.url, &eye.key)
        .flush_interval(Duration::from_secs(30))
        .build()
        .unwrap();
    let tracked = track_n(&client, "dropped-client", 50);
    drop(client);
    let deadline = Instant::now() + Duration::from_secs(20);
    while stored_ids(&eye, "dropped-client").await.len() < tracked.len() {
        assert!(Instant::now() < deadline, "the queued events were not sent");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_stored_exactly_once(&eye, "dropped-client", &tracked).await;
}

/// The client checks events against the server's rules before it sends them,
/// so its limits must be the server's.
#[test]
fn client_limits_are_the_servers() {
    use eye_shared::domain::{Limits, envelope};
    let server = Limits::default();
    assert_eq!(eye_client::MAX_BATCH_EVENTS, server.max_events);
    assert_eq!(eye_client::MAX_BODY_BYTES, server.max_body_bytes);
    assert_eq!(eye_client::MAX_EVENT_BYTES, server.max_event_bytes);
    assert_eq!(
        eye_client::MAX_SESSION_ID_CHARS,
        envelope::MAX_SESSION_ID_CHARS
    );
    assert_eq!(eye_client::MAX_TYPE_CHARS, envelope::MAX_TYPE_CHARS);
}
