//! Runs the real `eye` binary for end-to-end tests.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const EYE: &str = env!("CARGO_BIN_EXE_eye");

/// The names of the events in an answer's `events` array, in order.
pub fn names(answer: &Value) -> Vec<&str> {
    answer["events"]
        .as_array()
        .expect("an `events` array")
        .iter()
        .map(|e| e["name"].as_str().expect("a name"))
        .collect()
}

/// A running `eye serve`.
pub struct Server {
    pub child: Child,
    pub url: String,
    pub db: PathBuf,
}

impl Server {
    /// Starts `eye serve` on a free port with `db` and extra arguments, and
    /// waits until it listens.
    pub fn start(db: &Path, extra: &[&str]) -> Server {
        let mut child = Command::new(EYE)
            .args([
                "--log-format",
                "json",
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--db",
            ])
            .arg(db)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start eye serve");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if !sent {
                    if let Ok(v) = serde_json::from_str::<Value>(&line) {
                        if let Some(addr) = v["fields"]["address"].as_str() {
                            let _ = tx.send(addr.to_owned());
                            sent = true;
                        }
                    }
                }
                if std::env::var_os("EYE_TEST_SERVER_LOGS").is_some() {
                    eprintln!("[eye serve] {line}");
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("eye serve did not start listening");
        Server {
            child,
            url: format!("http://{addr}"),
            db: db.to_owned(),
        }
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill9(mut self) {
        self.child.kill().expect("kill");
        self.child.wait().expect("wait");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `eye` with arguments and returns stdout, failing on a non-zero exit.
pub fn eye(args: &[&str]) -> String {
    let out = Command::new(EYE).args(args).output().expect("run eye");
    assert!(
        out.status.success(),
        "eye {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// Creates a key and returns it (the last line of stdout).
pub fn create_key(db: &Path, app: &str, scopes: &[&str]) -> String {
    let mut args = vec!["keys", "create", "--app", app, "--db", db.to_str().unwrap()];
    for s in scopes {
        args.extend(["--scope", s]);
    }
    eye(&args).lines().last().expect("a key").trim().to_owned()
}

/// A small HTTP client.
#[derive(Clone)]
pub struct Client {
    pub http: reqwest::Client,
    pub url: String,
    pub key: String,
}

impl Client {
    pub fn new(url: &str, key: &str) -> Self {
        // reqwest is built with `rustls-no-provider` (eye-client's TLS): it
        // panics when it builds a client before a provider is installed.
        eye_client::install_crypto_provider();
        Client {
            http: reqwest::Client::new(),
            url: url.to_owned(),
            key: key.to_owned(),
        }
    }

    pub async fn post(&self, body: &Value) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}/v1/events", self.url))
            .header("x-api-key", &self.key)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .expect("POST");
        let status = r.status().as_u16();
        (
            status,
            serde_json::from_slice(&r.bytes().await.expect("body")).unwrap_or(Value::Null),
        )
    }

    pub async fn get(&self, path_and_query: &str) -> (u16, Value) {
        let r = self
            .http
            .get(format!("{}{}", self.url, path_and_query))
            .header("x-api-key", &self.key)
            .send()
            .await
            .expect("GET");
        let status = r.status().as_u16();
        (
            status,
            serde_json::from_slice(&r.bytes().await.expect("body")).unwrap_or(Value::Null),
        )
    }

    /// Every item of a paginated query (`key` is "events" or "errors").
    pub async fn all(&self, base: &str, key: &str) -> Vec<Value> {
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        let sep = if base.contains('?') { '&' } else { '?' };
        loop {
            let url = match &cursor {
                Some(c) => format!("{base}{sep}limit=1000&cursor={c}"),
                None => format!("{base}{sep}limit=1000"),
            };
            let (s, v) = self.get(&url).await;
            assert_eq!(s, 200, "{url}: {v}");
            items.extend(v[key].as_array().expect("items").iter().cloned());
            match v["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => return items,
            }
        }
    }

    /// Waits until the queue is empty (everything accepted is processed).
    pub async fn drained(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (s, v) = self.get("/health").await;
            if s == 200 && v["queue_depth"] == 0 {
                return;
            }
            assert!(Instant::now() < deadline, "queue not drained: {v}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

pub fn event(session: &str, name: &str, timestamp: &str, path: &str) -> Value {
    let (category, extra) = match name {
        "cta click" => (
            "page interaction",
            serde_json::json!({"element": "chat bubble"}),
        ),
        "submit" => (
            "form interaction",
            serde_json::json!({"form": {"first_name": "John"}}),
        ),
        _ => ("page interaction", serde_json::json!({})),
    };
    let mut data = serde_json::json!({"host": "www.consumeraffairs.com", "path": path});
    if let (Some(d), Some(x)) = (data.as_object_mut(), extra.as_object()) {
        d.extend(x.clone());
    }
    serde_json::json!({"session_id": session, "category": category, "name": name, "data": data, "timestamp": timestamp})
}
