//! The local server's limits and deadlines against misbehaving clients
//! (issue 12), over raw TCP on 127.0.0.1, each bounded in count and time.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{Server, create_key};
use tempfile::TempDir;

fn addr(server: &Server) -> String {
    server.url.trim_start_matches("http://").to_owned()
}

fn connect(addr: &str) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    s
}

/// Reads until the server closes the connection; returns what came and when.
fn read_until_closed(s: &mut TcpStream, start: Instant) -> (Vec<u8>, Duration) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return (got, start.elapsed()),
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// Sends one request and reads one answer: (status, body).
fn request(s: &mut TcpStream, head: &str, body: &[u8]) -> (u16, String) {
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = s.read(&mut buf).expect("an answer");
        assert!(
            n > 0,
            "closed before an answer: {}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some((head, rest)) = text.split_once("\r\n\r\n") {
            let length: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(str::to_owned)
                })
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if rest.len() >= length {
                let status = head[9..12].parse().unwrap();
                return (status, rest[..length].to_owned());
            }
        }
    }
}

fn post_head(key: &str, length: usize) -> String {
    format!(
        "POST /v1/events HTTP/1.1\r\nHost: eye\r\nx-api-key: {key}\r\ncontent-type: application/json\r\ncontent-length: {length}\r\n\r\n"
    )
}

const ONE_EVENT: &str = r#"{"session_id":"s","category":"page interaction","name":"pageview","data":{"host":"h","path":"/"},"timestamp":"2021-01-01 09:00:00"}"#;

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap()
}

/// Before the fix, each of these requests took an in-flight slot and had its
/// body read into memory before its key was checked: 1,000 of them took RSS
/// from 113 MB to 1.13 GB, and 2,100 made every real request get 503.
#[test]
fn clients_without_a_key_take_no_slot_and_no_memory() {
    let dir = TempDir::new().unwrap();
    let db = dir.path().join("eye.db");
    let key = create_key(&db, "shop", &["ingest"]);
    // Few slots, so that a request that took one would show at once; the
    // per-address cap is off, since every client here is 127.0.0.1.
    let server = Server::start(
        &db,
        &[
            "--max-in-flight",
            "16",
            "--max-connections-per-address",
            "2000",
        ],
    );
    let pid = server.child.id();
    let before = rss_kib(pid);
    let half = vec![b' '; 400 * 1024];
    let bad = "eye_000000000000_0000000000000000000000000000000000000000000000000000000000000000";
    let mut attackers = Vec::new();
    for _ in 0..300 {
        let mut s = connect(&addr(&server));
        s.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
        let _ = s.write_all(post_head(bad, 1024 * 1024 - 1).as_bytes());
        // Half a body: the server answers 403 without reading it, and may
        // close while this is still being written.
        let _ = s.write_all(&half);
        attackers.push(s);
    }
    let answered = attackers
        .iter_mut()
        .map(|s| {
            let mut buf = [0u8; 12];
            s.read_exact(&mut buf).is_ok() && &buf[9..12] == b"403"
        })
        .filter(|forbidden| *forbidden)
        .count();
    assert_eq!(answered, 300, "each got 403 at once, its body unread");
    // With all of them still connected, a real client is served at once.
    let start = Instant::now();
    let mut client = connect(&addr(&server));
    let (status, body) = request(
        &mut client,
        &post_head(&key, ONE_EVENT.len()),
        ONE_EVENT.as_bytes(),
    );
    assert_eq!(status, 202, "{body}");
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    let grown = rss_kib(pid).saturating_sub(before);
    // 300 bodies of 400 KiB would be 117 MiB; the bound is a sixth of that.
    assert!(grown < 20 * 1024, "RSS grew by {grown} KiB");
}

#[test]
fn a_request_whose_headers_never_end_is_closed_at_the_header_deadline() {
    let dir = TempDir::new().unwrap();
    let server = Server::start(&dir.path().join("eye.db"), &["--header-timeout-secs", "1"]);
    let mut s = connect(&addr(&server));
    let start = Instant::now();
    s.write_all(b"POST /v1/events HTTP/1.1\r\nHost: eye\r\n")
        .unwrap();
    let (_, took) = read_until_closed(&mut s, start);
    assert!(
        took >= Duration::from_millis(900),
        "closed too soon: {took:?}"
    );
    assert!(took < Duration::from_secs(5), "still open after {took:?}");
}

#[test]
fn an_idle_kept_alive_connection_is_closed_after_its_timeout() {
    let dir = TempDir::new().unwrap();
    let server = Server::start(&dir.path().join("eye.db"), &["--header-timeout-secs", "1"]);
    let mut s = connect(&addr(&server));
    let (status, _) = request(&mut s, "GET /health HTTP/1.1\r\nHost: eye\r\n\r\n", b"");
    assert_eq!(status, 200);
    // The connection is kept alive: a second request on it is answered.
    let (status, _) = request(&mut s, "GET /health HTTP/1.1\r\nHost: eye\r\n\r\n", b"");
    assert_eq!(status, 200);
    let start = Instant::now();
    let (rest, took) = read_until_closed(&mut s, start);
    assert!(rest.is_empty());
    assert!(
        took < Duration::from_secs(5),
        "idle connection open after {took:?}"
    );
}

#[test]
fn a_body_that_does_not_arrive_in_time_gets_408() {
    let dir = TempDir::new().unwrap();
    let db = dir.path().join("eye.db");
    let key = create_key(&db, "shop", &["ingest"]);
    let server = Server::start(&db, &["--body-timeout-secs", "1"]);
    let mut s = connect(&addr(&server));
    let start = Instant::now();
    s.write_all(post_head(&key, ONE_EVENT.len()).as_bytes())
        .unwrap();
    s.write_all(&ONE_EVENT.as_bytes()[..10]).unwrap();
    let (got, took) = read_until_closed(&mut s, start);
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("request_timeout"), "{text}");
    assert!(took < Duration::from_secs(5), "{took:?}");
}

#[test]
fn the_connection_cap_holds_and_open_connections_go_on_being_served() {
    let dir = TempDir::new().unwrap();
    let server = Server::start(
        &dir.path().join("eye.db"),
        &["--max-connections", "4", "--header-timeout-secs", "30"],
    );
    let mut open: Vec<TcpStream> = (0..4).map(|_| connect(&addr(&server))).collect();
    // Let the server accept all four before the fifth.
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..3 {
        let mut extra = connect(&addr(&server));
        let start = Instant::now();
        let _ = extra.write_all(b"GET /health HTTP/1.1\r\nHost: eye\r\n\r\n");
        let (got, took) = read_until_closed(&mut extra, start);
        assert!(got.is_empty(), "a connection past the cap was served");
        assert!(took < Duration::from_secs(2), "{took:?}");
    }
    for s in &mut open {
        let (status, _) = request(s, "GET /health HTTP/1.1\r\nHost: eye\r\n\r\n", b"");
        assert_eq!(status, 200);
    }
    drop(open);
    // Closed ones free their places.
    std::thread::sleep(Duration::from_millis(300));
    let mut again = connect(&addr(&server));
    let (status, _) = request(&mut again, "GET /health HTTP/1.1\r\nHost: eye\r\n\r\n", b"");
    assert_eq!(status, 200);
}

#[test]
fn one_key_with_its_slots_full_does_not_block_another_key_of_the_same_app() {
    let dir = TempDir::new().unwrap();
    let db = dir.path().join("eye.db");
    let greedy = create_key(&db, "shop", &["ingest"]);
    let polite = create_key(&db, "shop", &["ingest"]);
    let server = Server::start(
        &db,
        &[
            "--no-fsync",
            "--max-in-flight-per-key",
            "4",
            "--body-timeout-secs",
            "20",
        ],
    );
    let addr = addr(&server);
    // Four requests of the greedy key that send half a body hold its slots.
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut s = connect(&addr);
        s.write_all(post_head(&greedy, ONE_EVENT.len()).as_bytes())
            .unwrap();
        s.write_all(&ONE_EVENT.as_bytes()[..10]).unwrap();
        held.push(s);
    }
    std::thread::sleep(Duration::from_millis(300));
    let mut s = connect(&addr);
    let (status, body) = request(
        &mut s,
        &post_head(&greedy, ONE_EVENT.len()),
        ONE_EVENT.as_bytes(),
    );
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("requests in flight, its limit"), "{body}");
    let mut s = connect(&addr);
    let (status, body) = request(
        &mut s,
        &post_head(&polite, ONE_EVENT.len()),
        ONE_EVENT.as_bytes(),
    );
    assert_eq!(status, 202, "another key of the same app is served: {body}");
    // Once the held requests finish, the greedy key is served again.
    for s in &mut held {
        s.write_all(&ONE_EVENT.as_bytes()[10..]).unwrap();
    }
    for mut s in held {
        let mut buf = [0u8; 12];
        s.read_exact(&mut buf).unwrap();
        assert_eq!(&buf[9..12], b"202");
    }
    let mut s = connect(&addr);
    let (status, body) = request(
        &mut s,
        &post_head(&greedy, ONE_EVENT.len()),
        ONE_EVENT.as_bytes(),
    );
    assert_eq!(status, 202, "{body}");
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

#[test]
fn gzip_bodies_are_accepted_and_a_gzip_bomb_gets_413_with_bounded_memory() {
    let dir = TempDir::new().unwrap();
    let db = dir.path().join("eye.db");
    let key = create_key(&db, "shop", &["ingest"]);
    let server = Server::start(&db, &["--no-fsync"]);
    let addr = addr(&server);
    let gz_head = |path: &str, length: usize| {
        format!(
            "POST {path} HTTP/1.1\r\nHost: eye\r\nx-api-key: {key}\r\ncontent-type: application/json\r\ncontent-encoding: gzip\r\ncontent-length: {length}\r\n\r\n"
        )
    };
    let body = gzip(ONE_EVENT.as_bytes());
    let (status, text) = request(
        &mut connect(&addr),
        &gz_head("/v1/events", body.len()),
        &body,
    );
    assert_eq!(status, 202, "{text}");
    let segment = gzip(br#"{"batch":[{"type":"track","event":"Zipped","anonymousId":"z"}]}"#);
    let (status, text) = request(
        &mut connect(&addr),
        &gz_head("/v1/batch", segment.len()),
        &segment,
    );
    assert_eq!((status, text.as_str()), (200, r#"{"success":true}"#));

    // 256 MiB of zeros in about 250 KiB, sent 16 times at once.
    let bomb = gzip(&vec![0u8; 256 * 1024 * 1024]);
    assert!(bomb.len() < 1024 * 1024, "{} bytes", bomb.len());
    let pid = server.child.id();
    let before = rss_kib(pid);
    let threads: Vec<_> = (0..16)
        .map(|i| {
            let (addr, bomb) = (addr.clone(), bomb.clone());
            let path = if i % 2 == 0 {
                "/v1/events"
            } else {
                "/v1/batch"
            };
            let head = gz_head(path, bomb.len());
            std::thread::spawn(move || request(&mut connect(&addr), &head, &bomb))
        })
        .collect();
    for t in threads {
        let (status, text) = t.join().unwrap();
        assert_eq!(status, 413, "{text}");
        assert!(text.contains("once decompressed"), "{text}");
    }
    let grown = rss_kib(pid).saturating_sub(before);
    // Each request holds its compressed body and at most 1 MiB of output:
    // about 20 MiB for the 16, against 4 GiB if the bombs were inflated.
    assert!(grown < 64 * 1024, "RSS grew by {grown} KiB");
}

/// A Segment request without a key in its head may carry `writeKey` in its
/// body, so its body must be read before its key is checked. Such requests
/// take slots of a small pool of their own: clients without any key cannot
/// take the server's.
#[test]
fn requests_with_the_key_in_the_body_cannot_take_the_servers_slots() {
    let dir = TempDir::new().unwrap();
    let db = dir.path().join("eye.db");
    let key = create_key(&db, "shop", &["ingest"]);
    let server = Server::start(
        &db,
        &[
            "--no-fsync",
            "--max-in-flight",
            "3",
            "--max-in-flight-key-in-body",
            "3",
        ],
    );
    let addr = addr(&server);
    let body = format!(
        r#"{{"batch":[{{"type":"track","event":"e","anonymousId":"a"}}],"writeKey":"{key}"}}"#
    );
    let head = format!(
        "POST /v1/batch HTTP/1.1\r\nHost: eye\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut s = connect(&addr);
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(&body.as_bytes()[..10]).unwrap();
        held.push(s);
    }
    std::thread::sleep(Duration::from_millis(300));
    let (status, text) = request(&mut connect(&addr), &head, body.as_bytes());
    assert_eq!(status, 503, "the key-in-body pool is full: {text}");
    let (status, text) = request(
        &mut connect(&addr),
        &post_head(&key, ONE_EVENT.len()),
        ONE_EVENT.as_bytes(),
    );
    assert_eq!(status, 202, "the server's own slots are free: {text}");
    for s in &mut held {
        s.write_all(&body.as_bytes()[10..]).unwrap();
    }
    for mut s in held {
        let mut buf = [0u8; 12];
        s.read_exact(&mut buf).unwrap();
        assert_eq!(&buf[9..12], b"200", "the held ones finish and are accepted");
    }
}
