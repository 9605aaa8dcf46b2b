//! The client library for The Eye: applications embed
//! it to send user-behaviour events without waiting on the network.
//!
//! ```no_run
//! use eye_client::Client;
//! use serde_json::json;
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let eye = Client::builder("https://events.example.com/prod", std::env::var("EYE_KEY")?).build()?;
//!     eye.track("session-1", "page interaction", "pageview", &json!({"host": "shop.example", "path": "/"}))?;
//!     eye.track("session-1", "page interaction", "cta click", &json!({"host": "shop.example", "path": "/", "element": "chat bubble"}))?;
//!     eye.shutdown().await?; // sends everything queued, then stops
//!     Ok(())
//! }
//! ```
//!
//! # How it works
//!
//! [`Client::track`] checks the event against the server's rules, gives it a
//! time-ordered UUIDv7 `event_id` and a timestamp (UTC, microseconds),
//! serializes it once and puts it on a bounded in-memory queue. It returns at
//! once, never waiting on the network; a full queue is an error the caller sees
//! ([`TrackError::QueueFull`]) and is counted ([`Stats::dropped`]).
//! [`Client::track_event`] takes a complete [`Event`] with its own timestamp.
//!
//! A background task (spawned on the tokio runtime that built the client)
//! sends the queue as `POST {base_url}/v1/events` requests of
//! `{"events": [...], "sent_at": "..."}`, one request at a time, in tracking
//! order. A request is sent as soon as it holds
//! [`batch_size`](ClientBuilder::batch_size) events (default 100) or would
//! pass 1 MiB, and otherwise when its oldest event has waited
//! [`flush_interval`](ClientBuilder::flush_interval) (default 1 s). Every
//! request stays within the server's limits: at most 500 events, 1 MiB of body
//! and 32 KiB per event (a larger event is refused by `track`).
//!
//! # Retries and failures
//!
//! - A network error, a timeout ([`timeout`](ClientBuilder::timeout), default
//!   10 s), or an answer 408, 429 or 5xx is retried after an exponential
//!   backoff with full jitter (a random wait up to `min(10 s, 100 ms × 2^(n-1))`
//!   before retry `n`), or after the server's `Retry-After` if that is longer.
//! - A batch is retried at most [`max_retries`](ClientBuilder::max_retries)
//!   times (default 10) and for at most
//!   [`max_retry_time`](ClientBuilder::max_retry_time) (default 30 s); then its
//!   events fail.
//! - Any other answer (400, 403, 413, 415, any 4xx but 408 and 429, a 3xx) is
//!   not retried: its events fail at once.
//! - Failed events are counted in [`Stats::failed`], logged with `tracing`, and
//!   given to the [`on_failure`](ClientBuilder::on_failure) callback as a
//!   [`DeliveryFailure`]: the reason (with the server's status and error body),
//!   the `event_id`s and the events' JSON.
//!
//! Retries never store an event twice: an event keeps its `event_id` and
//! `timestamp` across attempts, and the server stores an event with the same
//! pair once. Each attempt carries a fresh `sent_at`, which the server uses to
//! correct the sender's clock skew.
//!
//! # Flush, shutdown and drop
//!
//! - [`Client::flush`] returns once every event tracked before the call has
//!   been acknowledged by the server or has failed for good.
//! - [`Client::shutdown`] makes `track` refuse new events
//!   ([`TrackError::Closed`]), sends everything it accepted, and stops the
//!   background task. Nothing that `track` accepted is lost, unless it fails
//!   for good (and is then reported).
//! - **Drop**: dropping the last clone of a [`Client`] does not wait for
//!   anything. The background task sees its queue close and then sends every
//!   queued event, with retries, as `shutdown` does, *but only while its tokio
//!   runtime keeps running*. When the runtime shuts down (at the end of
//!   `main`, or of a `#[tokio::test]`), whatever is still queued is lost. So
//!   call `shutdown().await` before the process ends, and `flush().await`
//!   before a point where the process might be frozen or killed.
//!
//! # In AWS Lambda
//!
//! Build the client once, in `main`, before `lambda_runtime::run`, and share it
//! with the handler (a clone is cheap). Call `flush().await` before the handler
//! returns: between invocations Lambda freezes the execution environment, so
//! the background task does not run, and an environment may be shut down
//! without notice, losing what it still holds.
//!
//! ```no_run
//! # use eye_client::Client;
//! # async fn handler(eye: &Client, session: &str) -> Result<(), Box<dyn std::error::Error>> {
//! eye.track(session, "page interaction", "pageview", &serde_json::json!({"path": "/"}))?;
//! // ... the handler's work ...
//! eye.flush().await?; // before returning the response
//! # Ok(())
//! # }
//! ```
//!
//! A flush costs one request per started batch, usually a few milliseconds;
//! with the server unreachable it may take up to the retry limits, so lower
//! `max_retry_time` for a function with a short timeout.
//!
//! # Stats
//!
//! [`Client::stats`] returns the counters: events `sent` (acknowledged),
//! `retried` (re-sends), `failed`, `dropped` (queue full or shut down),
//! `invalid` (refused by `track`), HTTP `requests`, and the `queue_depth`
//! (events accepted and not yet acknowledged or failed).
//!
//! # TLS
//!
//! HTTPS uses rustls with the *ring* crypto provider (reqwest's
//! `rustls-no-provider` feature), and the platform's certificate verifier,
//! which reads the system's CA certificates. `ClientBuilder::build` installs
//! ring as the process-wide rustls provider unless one is installed already.
//! reqwest's default TLS provider, aws-lc-rs, builds much more slowly.
//!
//! Cargo unifies features, so every `reqwest` in a program that uses this
//! crate is built with `rustls-no-provider`, and panics if it builds a client
//! before a provider is installed: such a program should call
//! [`install_crypto_provider`] at start.

#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod batch;
mod client;
mod error;
mod event;
mod retry;
mod sender;
mod stats;

pub use client::{Client, ClientBuilder, install_crypto_provider};
pub use error::{BuildError, ClientError, DeliveryFailure, FailureReason, TrackError};
pub use event::{
    Event, MAX_BATCH_EVENTS, MAX_BODY_BYTES, MAX_EVENT_BYTES, MAX_SESSION_ID_CHARS, MAX_TYPE_CHARS,
};
pub use stats::Stats;
pub use uuid::Uuid;
