//! Sends N seed-style events for one session, flushes, and prints one JSON line:
//! `{"sent":N,"failed":0,"retried":R,"dropped":0}`. Exits non-zero if any event
//! was not sent.
//!
//! ```sh
//! cargo run -p eye-client --example send -- --url http://127.0.0.1:3000 --key "$KEY" --count 1000 --session s1
//! ```

use std::process::ExitCode;

use clap::Parser;
use eye_client::Client;
use serde_json::json;

#[derive(Parser)]
#[command(about = "Send N seed-style events to The Eye for one session")]
struct Args {
    /// The Eye's base URL, such as http://127.0.0.1:3000.
    #[arg(long)]
    url: String,
    /// An API key with the ingest scope.
    #[arg(long, env = "EYE_KEY")]
    key: String,
    /// How many events to send.
    #[arg(long, default_value_t = 3)]
    count: usize,
    /// The session id of every event.
    #[arg(long)]
    session: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    let eye = Client::builder(&args.url, &args.key)
        .max_queue(args.count.max(10_000))
        .on_failure(|failure| eprintln!("send: {failure}"))
        .build()?;

    let host = "www.consumeraffairs.com";
    for i in 0..args.count {
        let path = format!("/page/{i}");
        let (category, name, data) = match i % 3 {
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
                json!({"host": host, "path": path, "form": {"first_name": "John", "last_name": "Doe"}}),
            ),
        };
        if let Err(e) = eye.track(&args.session, category, name, &data) {
            eprintln!("send: event {i} not tracked: {e}");
        }
    }
    eye.shutdown().await?;

    let stats = eye.stats();
    println!(
        r#"{{"sent":{},"failed":{},"retried":{},"dropped":{}}}"#,
        stats.sent, stats.failed, stats.retried, stats.dropped
    );
    let all_sent = stats.sent == args.count as u64;
    Ok(if all_sent {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
