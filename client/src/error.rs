//! The errors the client returns, and the failures it reports in the background.

use uuid::Uuid;

/// Why [`Client::track`](crate::Client::track) refused an event. A refused event
/// was not queued and will not be sent; nothing is dropped silently.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrackError {
    /// The queue already holds its maximum number of events (set with
    /// [`ClientBuilder::max_queue`](crate::ClientBuilder::max_queue)), waiting
    /// to be sent or retried. Counted in [`Stats::dropped`](crate::Stats::dropped).
    #[error(
        "the client's queue is full ({capacity} events waiting to be sent); the event was not queued"
    )]
    QueueFull {
        /// The maximum queue length.
        capacity: usize,
    },
    /// [`Client::shutdown`](crate::Client::shutdown) was called: the client sends
    /// nothing more. Counted in [`Stats::dropped`](crate::Stats::dropped).
    #[error("the client is shut down; the event was not queued")]
    Closed,
    /// A field breaks the server's rules, so the server would refuse the whole
    /// batch that carries it. Counted in [`Stats::invalid`](crate::Stats::invalid).
    #[error("invalid event: `{field}` {reason}")]
    InvalidEvent {
        /// The field at fault: `session_id`, `category`, `name`, `data` or `timestamp`.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The event's JSON is larger than the server accepts for one event
    /// (32 KiB). Counted in [`Stats::invalid`](crate::Stats::invalid).
    #[error("the event is {size} bytes as JSON; the server accepts at most {max} bytes per event")]
    EventTooLarge {
        /// The event's size as JSON, in bytes.
        size: usize,
        /// The limit, in bytes.
        max: usize,
    },
    /// The event's `data` could not be serialized to JSON. Counted in
    /// [`Stats::invalid`](crate::Stats::invalid).
    #[error("the event's data could not be serialized to JSON: {0}")]
    Serialize(#[from] serde_json::Error),
}

/// Why [`ClientBuilder::build`](crate::ClientBuilder::build) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The base URL is not an absolute `http` or `https` URL.
    #[error("invalid base URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The API key cannot be sent as an HTTP header value.
    #[error("invalid API key: it must be printable ASCII")]
    InvalidApiKey,
    /// An option is out of its range.
    #[error("invalid option `{option}`: {reason}")]
    InvalidOption {
        /// The builder method.
        option: &'static str,
        /// The allowed range.
        reason: String,
    },
    /// `build` was called outside a tokio runtime, so the background task
    /// cannot be started.
    #[error("no tokio runtime: build the client from within a tokio runtime")]
    NoRuntime,
    /// The HTTP client could not be built (for example, TLS set-up failed).
    #[error("could not build the HTTP client: {0}")]
    Http(#[from] reqwest::Error),
}

/// Why [`Client::flush`](crate::Client::flush) or
/// [`Client::shutdown`](crate::Client::shutdown) could not do its work.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The background task is gone without a clean shutdown (its runtime was
    /// shut down, or it panicked). Events still queued are lost.
    #[error("the client's background task is not running; queued events could not be sent")]
    SenderGone,
}

/// Events that will never be stored, reported to the callback set with
/// [`ClientBuilder::on_failure`](crate::ClientBuilder::on_failure), and counted in
/// [`Stats::failed`](crate::Stats::failed).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{} event(s) failed after {attempts} attempt(s): {reason}", event_ids.len())]
#[non_exhaustive]
pub struct DeliveryFailure {
    /// Why the batch failed.
    pub reason: FailureReason,
    /// The `event_id` of each failed event, in tracking order.
    pub event_ids: Vec<Uuid>,
    /// Each failed event's JSON, exactly as sent, in the same order: keep them
    /// to fix and replay later (a replay with the same `event_id` and
    /// `timestamp` is stored at most once).
    pub events: Vec<String>,
    /// HTTP requests made for this batch, the first one included.
    pub attempts: u32,
}

/// Why a batch failed for good.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FailureReason {
    /// The server refused the batch with a status that a retry cannot change:
    /// a 4xx other than 408 and 429 (400 invalid events, 403 bad key, 413 too
    /// large, 415), or an unexpected 1xx/3xx. It was not retried.
    #[error("the server answered {status}: {body}")]
    Rejected {
        /// The HTTP status.
        status: u16,
        /// The server's answer body, such as
        /// `{"error":{"code":"invalid_event","message":…,"details":[…]}}`.
        body: String,
    },
    /// Every attempt failed with a retryable error (network error, timeout,
    /// 408, 429, 5xx) until the retry limits were reached.
    #[error("retries exhausted; last error: {last_error}")]
    RetriesExhausted {
        /// The last attempt's error: the network error, or the status and body.
        last_error: String,
    },
}
