//! The sender: the background task that batches the queue, sends, retries and reports.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::Utc;
use reqwest::header::{CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::batch;
use crate::error::{DeliveryFailure, FailureReason};
use crate::event::{MAX_BODY_BYTES, Prepared};
use crate::retry::{self, Backoff, Class, Rng};
use crate::stats::Counters;

/// The failure callback.
pub(crate) type FailureHandler = Arc<dyn Fn(&DeliveryFailure) + Send + Sync>;

/// What `flush` and `shutdown` ask of the sender.
pub(crate) enum Control {
    Flush(oneshot::Sender<()>),
    Shutdown(oneshot::Sender<()>),
}

/// State shared by the clients and the sender.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) counters: Counters,
    /// Set by the sender once it has sent everything and stopped on request.
    pub(crate) stopped: AtomicBool,
}

/// The sender's settings.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) endpoint: reqwest::Url,
    pub(crate) api_key: HeaderValue,
    pub(crate) batch_size: usize,
    pub(crate) flush_interval: Duration,
    pub(crate) timeout: Duration,
    pub(crate) max_retries: u32,
    pub(crate) max_retry_time: Duration,
    pub(crate) backoff: Backoff,
}

pub(crate) struct Sender {
    pub(crate) http: reqwest::Client,
    pub(crate) settings: Settings,
    pub(crate) shared: Arc<Shared>,
    pub(crate) on_failure: Option<FailureHandler>,
    pub(crate) events: mpsc::Receiver<Prepared>,
    pub(crate) control: mpsc::UnboundedReceiver<Control>,
    pub(crate) pending: VecDeque<Prepared>,
    pub(crate) pending_bytes: usize,
    /// When the oldest pending event arrived: the batch is due one flush
    /// interval later.
    pub(crate) oldest: Option<Instant>,
    pub(crate) rng: Rng,
}

/// How one attempt ended.
enum Attempt {
    Accepted,
    Retry {
        retry_after: Option<Duration>,
        error: String,
    },
    Reject {
        status: u16,
        body: String,
    },
}

impl Sender {
    pub(crate) async fn run(mut self) {
        let mut buf = Vec::with_capacity(self.settings.batch_size);
        loop {
            while self.batch_is_full() {
                self.send_one_batch().await;
            }
            let due = self.oldest.map(|t| t + self.settings.flush_interval);
            if due.is_some_and(|due| due <= Instant::now()) {
                self.send_all().await;
                continue;
            }
            tokio::select! {
                biased;
                control = self.control.recv() => match control {
                    Some(Control::Flush(reply)) => {
                        // Everything tracked before `flush` was called is in the
                        // channel already: take it all, send it all.
                        while let Ok(event) = self.events.try_recv() {
                            self.push(event);
                        }
                        self.send_all().await;
                        let _ = reply.send(());
                    }
                    Some(Control::Shutdown(reply)) => {
                        self.stop().await;
                        let _ = reply.send(());
                        return;
                    }
                    // Every client is dropped.
                    None => {
                        self.stop().await;
                        return;
                    }
                },
                n = self.events.recv_many(&mut buf, self.settings.batch_size) => {
                    if n == 0 {
                        // Every client is dropped.
                        self.stop().await;
                        return;
                    }
                    for event in buf.drain(..) {
                        self.push(event);
                    }
                }
                () = sleep_until(due), if due.is_some() => self.send_all().await,
            }
        }
    }

    /// Refuses new events, then sends every event accepted before.
    async fn stop(&mut self) {
        self.events.close();
        while let Some(event) = self.events.recv().await {
            self.push(event);
        }
        self.send_all().await;
        self.shared.stopped.store(true, Ordering::SeqCst);
        tracing::debug!(stats = ?self.shared.counters.snapshot(), "eye-client stopped");
    }

    fn push(&mut self, event: Prepared) {
        if self.pending.is_empty() {
            self.oldest = Some(Instant::now());
        }
        self.pending_bytes += event.json.len();
        self.pending.push_back(event);
    }

    fn batch_is_full(&self) -> bool {
        self.pending.len() >= self.settings.batch_size
            || batch::body_len(self.pending_bytes, self.pending.len()) > MAX_BODY_BYTES
    }

    async fn send_all(&mut self) {
        while !self.pending.is_empty() {
            self.send_one_batch().await;
        }
    }

    async fn send_one_batch(&mut self) {
        let batch = batch::take_batch(&mut self.pending, self.settings.batch_size, MAX_BODY_BYTES);
        self.pending_bytes -= batch.iter().map(|e| e.json.len()).sum::<usize>();
        self.oldest = (!self.pending.is_empty()).then(Instant::now);
        if !batch.is_empty() {
            self.deliver(batch).await;
        }
    }

    /// Sends one batch until it is acknowledged or has failed for good.
    async fn deliver(&mut self, batch: Vec<Prepared>) {
        let counters = &self.shared.counters;
        let started = Instant::now();
        let mut attempts: u32 = 0;
        let reason = loop {
            attempts += 1;
            Counters::add(&counters.requests, 1);
            // `sent_at` is fresh on every attempt, for the server's skew
            // correction; `event_id` and `timestamp` stay, for its dedup.
            let body = batch::body(&batch, Utc::now());
            match self.attempt(body).await {
                Attempt::Accepted => {
                    Counters::add(&counters.sent, batch.len());
                    tracing::debug!(events = batch.len(), attempts, "eye-client batch accepted");
                    break None;
                }
                Attempt::Reject { status, body } => {
                    break Some(FailureReason::Rejected { status, body });
                }
                Attempt::Retry { retry_after, error } => {
                    if attempts > self.settings.max_retries {
                        break Some(FailureReason::RetriesExhausted { last_error: error });
                    }
                    let backoff = self.settings.backoff.delay(attempts, &mut self.rng);
                    let delay = retry::next_delay(backoff, retry_after);
                    if started.elapsed() + delay > self.settings.max_retry_time {
                        break Some(FailureReason::RetriesExhausted { last_error: error });
                    }
                    tracing::warn!(
                        events = batch.len(),
                        attempt = attempts,
                        delay_ms = delay.as_millis() as u64,
                        %error,
                        "eye-client: sending a batch failed; retrying"
                    );
                    Counters::add(&counters.retried, batch.len());
                    tokio::time::sleep(delay).await;
                }
            }
        };
        if let Some(reason) = reason {
            self.fail(batch, reason, attempts);
        } else {
            counters.queued.fetch_sub(batch.len(), Ordering::Relaxed);
        }
    }

    async fn attempt(&self, body: String) -> Attempt {
        let response = self
            .http
            .post(self.settings.endpoint.clone())
            .header("x-api-key", self.settings.api_key.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .timeout(self.settings.timeout)
            .body(body)
            .send()
            .await;
        let response = match response {
            Ok(response) => response,
            Err(e) => {
                return Attempt::Retry {
                    retry_after: None,
                    error: error_chain(&e),
                };
            }
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| retry::parse_retry_after(v, Utc::now()));
        let text = response.text().await;
        match retry::classify(status) {
            // The status alone says the server has the events.
            Class::Accepted => Attempt::Accepted,
            Class::Retry => Attempt::Retry {
                retry_after,
                error: match text {
                    Ok(body) => format!("HTTP {status}: {body}"),
                    Err(e) => format!("HTTP {status} (body unreadable: {})", error_chain(&e)),
                },
            },
            Class::Reject => Attempt::Reject {
                status,
                body: text.unwrap_or_else(|e| format!("(body unreadable: {})", error_chain(&e))),
            },
        }
    }

    fn fail(&self, batch: Vec<Prepared>, reason: FailureReason, attempts: u32) {
        let counters = &self.shared.counters;
        Counters::add(&counters.failed, batch.len());
        counters.queued.fetch_sub(batch.len(), Ordering::Relaxed);
        let (event_ids, events) = batch.into_iter().map(|e| (e.event_id, e.json)).unzip();
        let failure = DeliveryFailure {
            reason,
            event_ids,
            events,
            attempts,
        };
        tracing::error!(error = %failure, "eye-client: events failed");
        if let Some(handler) = &self.on_failure {
            // A panicking callback must not take the queue down with it.
            if std::panic::catch_unwind(AssertUnwindSafe(|| handler(&failure))).is_err() {
                tracing::error!("eye-client: the failure callback panicked");
            }
        }
    }
}

async fn sleep_until(due: Option<Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due).await,
        None => std::future::pending().await,
    }
}

/// An error and its sources, as one line: reqwest's own message is often just
/// "error sending request".
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
