//! Ports: one small trait per capability. Adapters implement them; the HTTP
//! handler and the processor use nothing else.

use async_trait::async_trait;

use crate::domain::{ErrorRecord, QueuedBatch, StoredEvent};

/// A backend failure. Every one is worth retrying later; `Busy` says the backend
/// shed load on purpose (throttling, a full queue), so the caller should back off.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    /// Overloaded or throttled: try again after a pause.
    #[error("busy: {0}")]
    Busy(String),
    /// Any other failure: timeouts, lost connections, I/O errors, misconfiguration.
    #[error("{0}")]
    Failed(String),
    /// The backend cannot answer the query as asked; the message says how to
    /// ask instead. Not worth retrying.
    #[error("{0}")]
    Unsupported(String),
}

/// Ingest's side of the queue.
#[async_trait]
pub trait EventQueue: Send + Sync {
    /// Durably enqueues a request's events: when this returns `Ok`, a crash
    /// cannot lose them.
    async fn enqueue(&self, batch: &QueuedBatch<'_>) -> Result<(), BackendError>;
}

/// The result of one idempotent write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    /// Written now.
    Stored,
    /// Already there: a redelivery or a resend of the same event.
    Duplicate,
}

/// Where valid events go. Writes are idempotent: an event whose key exists is
/// reported as [`PutOutcome::Duplicate`] and not written again.
#[async_trait]
pub trait EventStore: Send + Sync {
    /// Stores events; one result per event, in order.
    async fn put_events(&self, events: Vec<StoredEvent>) -> Vec<Result<PutOutcome, BackendError>>;
}

/// Where invalid events go, with their reasons. Idempotent by `error_id`.
#[async_trait]
pub trait ErrorStore: Send + Sync {
    /// Stores error records; one result per record, in order.
    async fn put_errors(&self, errors: Vec<ErrorRecord>) -> Vec<Result<PutOutcome, BackendError>>;
}

/// One page of a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    /// Most items to return.
    pub limit: usize,
    /// Continue after this key (the `next` of the previous page).
    pub after: Option<String>,
}

/// A page of results.
#[derive(Debug, Clone)]
pub struct Page<T> {
    /// The items, in key order.
    pub items: Vec<T>,
    /// The key to continue after, when more items may follow.
    pub next: Option<String>,
}

impl<T> Page<T> {
    /// Builds a page from up to `limit + 1` fetched items: the extra one only
    /// tells that more follow.
    pub fn from_fetched(mut items: Vec<T>, limit: usize, key: impl Fn(&T) -> String) -> Self {
        let more = items.len() > limit;
        items.truncate(limit);
        let next = if more { items.last().map(key) } else { None };
        Page { items, next }
    }

    /// The same page with each item decoded, or the first decoding error.
    pub fn try_map<U, E>(self, f: impl FnMut(T) -> Result<U, E>) -> Result<Page<U>, E> {
        Ok(Page {
            items: self.items.into_iter().map(f).collect::<Result<_, _>>()?,
            next: self.next,
        })
    }

    /// The same page with each item mapped.
    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page {
            items: self.items.into_iter().map(f).collect(),
            next: self.next,
        }
    }
}

pub use crate::domain::range::{ErrorFilter, EventFilter};

/// Reads events for analysts.
#[async_trait]
pub trait EventQuery: Send + Sync {
    /// A session's events in the order they occurred (by the sender's clock),
    /// only those of `app` when it is given. Keys are
    /// [`StoredEvent::session_key`].
    async fn session_events(
        &self,
        session_id: &str,
        app: Option<&str>,
        page: PageRequest,
    ) -> Result<Page<StoredEvent>, BackendError>;

    /// Events by category and/or time range, ordered by `timestamp`.
    /// Keys are [`StoredEvent::time_key`].
    async fn find_events(
        &self,
        filter: &EventFilter,
        page: PageRequest,
    ) -> Result<Page<StoredEvent>, BackendError>;
}

/// Reads error records for operators.
#[async_trait]
pub trait ErrorQuery: Send + Sync {
    /// Error records ordered by `received_at`. Keys are [`ErrorRecord::time_key`].
    async fn find_errors(
        &self,
        filter: &ErrorFilter,
        page: PageRequest,
    ) -> Result<Page<ErrorRecord>, BackendError>;
}

/// What an API key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// POST events.
    Ingest,
    /// Read events and error records.
    Query,
}

impl Scope {
    /// The scope's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Ingest => "ingest",
            Scope::Query => "query",
        }
    }

    /// Parses a scope's name.
    pub fn parse(s: &str) -> Option<Scope> {
        match s {
            "ingest" => Some(Scope::Ingest),
            "query" => Some(Scope::Query),
            _ => None,
        }
    }
}

/// Which applications' events and error records a key's queries read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Reach {
    /// Every application's: the analytics team is one team across the apps.
    #[default]
    AllApps,
    /// Only the key's own application's (`eye keys create --own-app-only`).
    OwnApp,
}

/// Who is calling: the application behind a valid key, and what it may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The key's public id: what per-key limits count by.
    pub key_id: String,
    /// The application's name.
    pub app: String,
    /// What the key allows.
    pub scopes: Vec<Scope>,
    /// Whose data its queries read.
    pub reach: Reach,
}

impl Principal {
    /// Whether the key allows `scope`.
    pub fn can(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }

    /// The one application its queries may read, or `None` for every one.
    pub fn query_app(&self) -> Option<&str> {
        match self.reach {
            Reach::AllApps => None,
            Reach::OwnApp => Some(&self.app),
        }
    }
}

/// Checks API keys.
#[async_trait]
pub trait KeyStore: Send + Sync {
    /// The principal of a presented key, or `None` if it is unknown or revoked.
    async fn verify(&self, presented: &str) -> Result<Option<Principal>, BackendError>;
}

/// The key of a status that reports a fault: its value says what fails.
/// `/health` then answers `"status": "degraded"`.
pub const DEGRADED: &str = "degraded";

/// Reports backend status for `GET /health` (queue depth, dead letters…).
#[async_trait]
pub trait StatusSource: Send + Sync {
    /// A JSON object merged into the health answer.
    async fn status(&self) -> Result<serde_json::Value, BackendError>;
}

/// A queue message that had every delivery it may have: a row of SQLite's
/// `dead_letters`, or a message on the SQS dead-letter queue.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DeadLetter {
    /// Its id where it is kept: a row id, or an SQS message id.
    pub id: String,
    /// The message body: a queued batch, as encoded by [`QueuedBatch::encode`].
    pub body: String,
    /// Deliveries it had.
    pub attempts: u32,
    /// Events it carries, where the queue counts them (SQLite).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events: Option<u64>,
    /// The last failure, where the queue keeps it (SQLite; on AWS see the
    /// processor's logs).
    pub last_error: Option<String>,
    /// When it was given up, where the queue keeps it (SQLite).
    pub failed_at: Option<String>,
}

/// The dead letters of a queue, for operators (`eye dlq`).
#[async_trait]
pub trait DeadLetters: Send + Sync {
    /// Up to `max` dead letters, oldest first where the queue knows the order,
    /// without consuming them.
    async fn list_dead_letters(&self, max: usize) -> Result<Vec<DeadLetter>, BackendError>;

    /// Moves every dead letter back to the queue with a fresh delivery count;
    /// returns how many moved. Events already stored are not stored twice.
    async fn redrive_dead_letters(&self) -> Result<usize, BackendError>;
}

/// A message taken off a pull queue (the embedded queue; SQS reaches the
/// processor through the Lambda event shape instead).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueMessage {
    /// The queue's id for it.
    pub id: String,
    /// The body, as encoded by [`QueuedBatch::encode`].
    pub body: String,
    /// How many times it has been handed out, this time included.
    pub receive_count: u32,
}

/// The processor's side of a pull queue.
#[async_trait]
pub trait QueueSource: Send + Sync {
    /// Up to `max_messages` messages that are due, oldest first.
    async fn receive(&self, max_messages: usize) -> Result<Vec<QueueMessage>, BackendError>;

    /// Deletes the processed messages; schedules the failed ones for a retry, or
    /// moves them to the dead letters once they have failed too often.
    async fn complete(
        &self,
        processed: Vec<String>,
        failed: Vec<(String, String)>,
    ) -> Result<(), BackendError>;

    /// Waits until something may be due, or `timeout` passes. A queue that
    /// can tell when a message arrives returns early.
    async fn wait_for_work(&self, timeout: std::time::Duration) {
        tokio::time::sleep(timeout).await;
    }
}
