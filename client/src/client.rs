//! The client handle and its builder.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::Utc;
use reqwest::header::HeaderValue;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::error::{BuildError, ClientError, DeliveryFailure, TrackError};
use crate::event::{self, Event, MAX_BATCH_EVENTS, Prepared};
use crate::retry::{Backoff, Rng};
use crate::sender::{Control, FailureHandler, Sender, Settings, Shared};
use crate::stats::{Counters, Stats};

/// Sends events to The Eye in the background. Cheap to clone: clones share one
/// queue and one background task.
///
/// Build it once with [`Client::builder`], inside a tokio runtime, and keep it
/// for the life of the process (or of the Lambda execution environment).
/// See the [crate documentation](crate) for what happens on drop and in a Lambda.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    events: mpsc::Sender<Prepared>,
    control: mpsc::UnboundedSender<Control>,
    shared: Arc<Shared>,
    max_queue: usize,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("max_queue", &self.inner.max_queue)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Starts configuring a client for The Eye at `base_url` (such as
    /// `https://abc.execute-api.eu-west-1.amazonaws.com/prod` or
    /// `http://127.0.0.1:3000`; events go to `{base_url}/v1/events`), with an
    /// API key that has the `ingest` scope.
    pub fn builder(base_url: impl Into<String>, api_key: impl Into<String>) -> ClientBuilder {
        ClientBuilder {
            base_url: base_url.into(),
            api_key: api_key.into(),
            batch_size: 100,
            flush_interval: Duration::from_secs(1),
            max_queue: 10_000,
            timeout: Duration::from_secs(10),
            max_retries: 10,
            max_retry_time: Duration::from_secs(30),
            backoff: Backoff {
                base: Duration::from_millis(100),
                cap: Duration::from_secs(10),
            },
            on_failure: None,
        }
    }

    /// Queues an event that happens now, with a new UUIDv7 `event_id`, and
    /// returns that id. Returns at once: it never waits for the network.
    ///
    /// `data` must serialize to a JSON object (a `serde_json::json!({...})`,
    /// a map, or a struct). The event is checked and serialized here, so an
    /// event the server would refuse (a field too long or empty, more than
    /// 32 KiB of JSON) is an error now rather than a failed batch later. A
    /// full queue is an error too ([`TrackError::QueueFull`]), counted in
    /// [`Stats::dropped`].
    pub fn track<D: Serialize + ?Sized>(
        &self,
        session_id: &str,
        category: &str,
        name: &str,
        data: &D,
    ) -> Result<Uuid, TrackError> {
        let timestamp = Utc::now();
        let event_id = Uuid::now_v7();
        let prepared = event::prepare(session_id, category, name, data, timestamp, event_id);
        self.enqueue(prepared)
    }

    /// Queues a complete event, with its own `timestamp` and `event_id`, and
    /// returns its `event_id`. Like [`track`](Self::track), it never waits for
    /// the network. Tracking the same [`Event`] twice sends it twice, and the
    /// server stores it once.
    pub fn track_event(&self, event: &Event) -> Result<Uuid, TrackError> {
        let prepared = event::prepare(
            &event.session_id,
            &event.category,
            &event.name,
            &event.data,
            event.timestamp,
            event.event_id,
        );
        self.enqueue(prepared)
    }

    fn enqueue(&self, prepared: Result<Prepared, TrackError>) -> Result<Uuid, TrackError> {
        let counters = &self.inner.shared.counters;
        let prepared = prepared.inspect_err(|_| Counters::add(&counters.invalid, 1))?;
        let event_id = prepared.event_id;
        // Admission by count of events not yet done, so the bound covers the
        // events in flight and waiting for a retry, not just the channel.
        let before = counters.queued.fetch_add(1, Ordering::AcqRel);
        if before >= self.inner.max_queue {
            counters.queued.fetch_sub(1, Ordering::AcqRel);
            Counters::add(&counters.dropped, 1);
            return Err(TrackError::QueueFull {
                capacity: self.inner.max_queue,
            });
        }
        match self.inner.events.try_send(prepared) {
            Ok(()) => Ok(event_id),
            Err(e) => {
                counters.queued.fetch_sub(1, Ordering::AcqRel);
                Counters::add(&counters.dropped, 1);
                Err(match e {
                    mpsc::error::TrySendError::Full(_) => TrackError::QueueFull {
                        capacity: self.inner.max_queue,
                    },
                    mpsc::error::TrySendError::Closed(_) => TrackError::Closed,
                })
            }
        }
    }

    /// Waits until every event tracked before this call has been acknowledged
    /// by the server or has failed for good (and been reported). With the
    /// server down, that takes up to the retry limits per batch.
    ///
    /// After [`shutdown`](Self::shutdown) there is nothing left to send, and
    /// `flush` returns `Ok` at once.
    pub async fn flush(&self) -> Result<(), ClientError> {
        self.ask(Control::Flush).await
    }

    /// Stops the client: from now on `track` returns [`TrackError::Closed`],
    /// and every event `track` accepted is sent (or fails for good) before
    /// this returns. Affects every clone. Calling it again returns `Ok`.
    pub async fn shutdown(&self) -> Result<(), ClientError> {
        self.ask(Control::Shutdown).await
    }

    async fn ask(&self, control: fn(oneshot::Sender<()>) -> Control) -> Result<(), ClientError> {
        let (reply, done) = oneshot::channel();
        let answered = match self.inner.control.send(control(reply)) {
            Ok(()) => done.await.is_ok(),
            Err(_) => false,
        };
        if answered || self.inner.shared.stopped.load(Ordering::SeqCst) {
            Ok(())
        } else {
            Err(ClientError::SenderGone)
        }
    }

    /// The counters: events sent, retried, failed, dropped, and the queue depth.
    pub fn stats(&self) -> Stats {
        self.inner.shared.counters.snapshot()
    }
}

/// Configures a [`Client`]: made by [`Client::builder`], finished by
/// [`build`](Self::build).
pub struct ClientBuilder {
    base_url: String,
    api_key: String,
    batch_size: usize,
    flush_interval: Duration,
    max_queue: usize,
    timeout: Duration,
    max_retries: u32,
    max_retry_time: Duration,
    backoff: Backoff,
    on_failure: Option<FailureHandler>,
}

impl fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("base_url", &self.base_url)
            .field("batch_size", &self.batch_size)
            .field("flush_interval", &self.flush_interval)
            .field("max_queue", &self.max_queue)
            .field("timeout", &self.timeout)
            .field("max_retries", &self.max_retries)
            .field("max_retry_time", &self.max_retry_time)
            .field("backoff", &self.backoff)
            .field("on_failure", &self.on_failure.is_some())
            .finish_non_exhaustive()
    }
}

impl ClientBuilder {
    /// Most events in one request: 1 to 500 (the server's limit); default 100.
    /// A batch is sent as soon as it is full, and also closes at 1 MiB.
    #[must_use]
    pub fn batch_size(mut self, events: usize) -> Self {
        self.batch_size = events;
        self
    }

    /// How long an event may wait for its batch to fill before it is sent
    /// anyway; default 1 s.
    #[must_use]
    pub fn flush_interval(mut self, interval: Duration) -> Self {
        self.flush_interval = interval;
        self
    }

    /// Most events held by the client at once (queued, in flight, or waiting
    /// for a retry); default 10,000. Past it, `track` returns
    /// [`TrackError::QueueFull`].
    #[must_use]
    pub fn max_queue(mut self, events: usize) -> Self {
        self.max_queue = events;
        self
    }

    /// Timeout of one HTTP request, from connecting to the end of the answer;
    /// default 10 s. A timed-out request is retried.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Most retries of one batch after its first attempt; default 10. `0`
    /// never retries.
    #[must_use]
    pub fn max_retries(mut self, retries: u32) -> Self {
        self.max_retries = retries;
        self
    }

    /// Longest time one batch may spend being retried, measured from its first
    /// attempt: a retry whose wait would end later is not made, and the batch
    /// fails. Default 30 s.
    #[must_use]
    pub fn max_retry_time(mut self, time: Duration) -> Self {
        self.max_retry_time = time;
        self
    }

    /// The backoff before retry `n`: a random wait up to
    /// `min(cap, base * 2^(n-1))` (full jitter), or the server's
    /// `Retry-After` if that is longer. Default base 100 ms, cap 10 s.
    #[must_use]
    pub fn backoff(mut self, base: Duration, cap: Duration) -> Self {
        self.backoff = Backoff { base, cap };
        self
    }

    /// Called from the background task with each batch that failed for good,
    /// with the reason (the status and the server's error body for a refusal)
    /// and the events. Keep it quick and non-blocking: send the failure to a
    /// channel or a log. Failures are also logged with `tracing` at error level.
    #[must_use]
    pub fn on_failure(
        mut self,
        handler: impl Fn(&DeliveryFailure) + Send + Sync + 'static,
    ) -> Self {
        self.on_failure = Some(Arc::new(handler));
        self
    }

    /// Checks the settings and starts the background task on the current
    /// tokio runtime.
    pub fn build(self) -> Result<Client, BuildError> {
        let invalid = |option: &'static str, reason: &str| BuildError::InvalidOption {
            option,
            reason: reason.to_owned(),
        };
        if !(1..=MAX_BATCH_EVENTS).contains(&self.batch_size) {
            return Err(invalid("batch_size", "must be 1 to 500 events"));
        }
        if self.max_queue == 0 {
            return Err(invalid("max_queue", "must be at least 1 event"));
        }
        if self.flush_interval.is_zero() {
            return Err(invalid("flush_interval", "must be more than zero"));
        }
        if self.timeout.is_zero() {
            return Err(invalid("timeout", "must be more than zero"));
        }
        if self.backoff.base.is_zero() || self.backoff.cap < self.backoff.base {
            return Err(invalid(
                "backoff",
                "the base must be more than zero and the cap at least the base",
            ));
        }
        let endpoint = endpoint(&self.base_url)?;
        let mut api_key =
            HeaderValue::from_str(&self.api_key).map_err(|_| BuildError::InvalidApiKey)?;
        api_key.set_sensitive(true);
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| BuildError::NoRuntime)?;

        install_crypto_provider();
        let http = reqwest::Client::builder()
            .user_agent(concat!("eye-client/", env!("CARGO_PKG_VERSION")))
            // A redirect would turn the POST into a GET: report it instead.
            .redirect(reqwest::redirect::Policy::none())
            .build()?;

        let shared = Arc::new(Shared {
            counters: Counters::default(),
            stopped: AtomicBool::new(false),
        });
        let (events_tx, events_rx) = mpsc::channel(self.max_queue);
        let (control_tx, control_rx) = mpsc::unbounded_channel();
        let sender = Sender {
            http,
            settings: Settings {
                endpoint,
                api_key,
                batch_size: self.batch_size,
                flush_interval: self.flush_interval,
                timeout: self.timeout,
                max_retries: self.max_retries,
                max_retry_time: self.max_retry_time,
                backoff: self.backoff,
            },
            shared: Arc::clone(&shared),
            on_failure: self.on_failure,
            events: events_rx,
            control: control_rx,
            pending: Default::default(),
            pending_bytes: 0,
            oldest: None,
            rng: Rng::from_time(),
        };
        runtime.spawn(sender.run());
        Ok(Client {
            inner: Arc::new(Inner {
                events: events_tx,
                control: control_tx,
                shared,
                max_queue: self.max_queue,
            }),
        })
    }
}

/// Installs *ring* as the process-wide rustls crypto provider, unless one is
/// installed already; [`ClientBuilder::build`] calls it.
///
/// This crate builds reqwest with its `rustls-no-provider` feature, and cargo
/// turns that feature on for every reqwest in the program. reqwest then panics
/// when it builds any client before a provider is installed, so a program that
/// also makes its own `reqwest::Client` should call this first (or install a
/// provider itself).
pub fn install_crypto_provider() {
    // An error only says that a provider is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// `{base_url}/v1/events`, keeping a path prefix such as an API Gateway stage.
fn endpoint(base_url: &str) -> Result<reqwest::Url, BuildError> {
    let bad = |reason: &str| BuildError::InvalidUrl {
        url: base_url.to_owned(),
        reason: reason.to_owned(),
    };
    let mut url = reqwest::Url::parse(base_url).map_err(|e| bad(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("the scheme must be http or https"));
    }
    if url.cannot_be_a_base() || url.host().is_none() {
        return Err(bad("it must be an absolute URL with a host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad("it must not have a query or a fragment"));
    }
    let path = format!("{}/v1/events", url.path().trim_end_matches('/'));
    url.set_path(&path);
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_keeps_a_stage_prefix() {
        let e = |u: &str| endpoint(u).map(|u| u.to_string());
        assert_eq!(
            e("http://127.0.0.1:3000").unwrap(),
            "http://127.0.0.1:3000/v1/events"
        );
        assert_eq!(
            e("http://127.0.0.1:3000/").unwrap(),
            "http://127.0.0.1:3000/v1/events"
        );
        assert_eq!(
            e("https://abc.execute-api.eu-west-1.amazonaws.com/prod/").unwrap(),
            "https://abc.execute-api.eu-west-1.amazonaws.com/prod/v1/events"
        );
        for bad in [
            "",
            "localhost:3000",
            "ftp://h",
            "http://h/?a=1",
            "mailto:x@y",
        ] {
            assert!(
                matches!(endpoint(bad), Err(BuildError::InvalidUrl { .. })),
                "{bad}"
            );
        }
    }

    #[tokio::test]
    async fn builds_for_https_without_a_network_call() {
        let client = Client::builder("https://events.example.com/prod", "eye_k_s")
            .build()
            .expect("an https client builds with rustls and ring");
        assert_eq!(client.stats(), Stats::default());
        // Building twice is fine: the provider is installed once.
        assert!(
            Client::builder("https://events.example.com", "k")
                .build()
                .is_ok()
        );
        client.shutdown().await.unwrap();
    }

    #[tokio::test]
    async fn options_are_checked() {
        let b = || Client::builder("http://127.0.0.1:9", "k");
        let option = |r: Result<Client, BuildError>| match r {
            Err(BuildError::InvalidOption { option, .. }) => option,
            other => panic!("{other:?}"),
        };
        assert_eq!(option(b().batch_size(0).build()), "batch_size");
        assert_eq!(option(b().batch_size(501).build()), "batch_size");
        assert!(b().batch_size(500).build().is_ok());
        assert_eq!(option(b().max_queue(0).build()), "max_queue");
        assert_eq!(
            option(b().flush_interval(Duration::ZERO).build()),
            "flush_interval"
        );
        assert_eq!(option(b().timeout(Duration::ZERO).build()), "timeout");
        assert_eq!(
            option(
                b().backoff(Duration::from_secs(2), Duration::from_secs(1))
                    .build()
            ),
            "backoff"
        );
        assert!(matches!(
            Client::builder("http://h", "bad\nkey").build(),
            Err(BuildError::InvalidApiKey)
        ));
    }

    #[test]
    fn build_outside_a_runtime_is_an_error() {
        assert!(matches!(
            Client::builder("http://h", "k").build(),
            Err(BuildError::NoRuntime)
        ));
    }

    #[tokio::test]
    async fn track_refuses_invalid_and_closed_and_counts() {
        let client = Client::builder("http://127.0.0.1:9", "k").build().unwrap();
        let too_big = serde_json::json!({"blob": "x".repeat(40_000)});
        assert!(matches!(
            client.track("s", "c", "n", &too_big),
            Err(TrackError::EventTooLarge { .. })
        ));
        assert!(matches!(
            client.track("s", "c", "n", &[1, 2]),
            Err(TrackError::InvalidEvent { field: "data", .. })
        ));
        assert_eq!(client.stats().invalid, 2);
        assert_eq!(client.stats().queue_depth, 0);
        client.shutdown().await.unwrap();
        assert!(matches!(
            client.track("s", "c", "n", &serde_json::json!({})),
            Err(TrackError::Closed)
        ));
        assert_eq!(client.stats().dropped, 1);
        // After shutdown there is nothing left to do.
        client.flush().await.unwrap();
        client.shutdown().await.unwrap();
    }
}
