//! The ingest use case: check a request's envelope, give each event its final
//! id, and queue the events durably within a deadline. Only then may the
//! caller answer 202 (or 200).

use std::sync::Arc;
use std::time::Duration;

use serde_json::value::RawValue;

use crate::config;
use crate::domain::keys::generated_event_id;
use crate::domain::segment::{SegmentBody, SegmentCall, SegmentLimits, parse_segment_body};
use crate::domain::{EnvelopeError, Limits, QueuedBatch, QueuedEvent, Timestamp, parse_body};
use crate::ports::{BackendError, EventQueue};

/// What an accepted request became.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// Each event's id, in the request's order: the client's, or the one made here.
    pub event_ids: Vec<String>,
}

/// Why a request was not accepted. Nothing of it was queued.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The request is not a valid envelope.
    #[error(transparent)]
    Invalid(#[from] EnvelopeError),
    /// The queue did not take it (busy, failed, or no answer in time).
    #[error("the queue: {0}")]
    Unavailable(BackendError),
}

/// Accepts requests of events into a queue.
#[derive(Clone)]
pub struct Ingest {
    queue: Arc<dyn EventQueue>,
    limits: Limits,
    segment_limits: SegmentLimits,
    timeout: Duration,
}

impl Ingest {
    /// Ingest into `queue`, with the default limits and deadline.
    pub fn new(queue: Arc<dyn EventQueue>) -> Self {
        Self {
            queue,
            limits: Limits::default(),
            segment_limits: SegmentLimits::default(),
            timeout: config::ENQUEUE_TIMEOUT,
        }
    }

    /// Sets the request limits.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Sets how long to wait for the queue.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The request limits in force.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Checks `body` and queues its events for `app`, all or nothing.
    pub async fn accept(&self, app: &str, body: &[u8]) -> Result<Accepted, IngestError> {
        let envelope = parse_body(body, &self.limits)?;
        let event_ids = final_ids(
            app,
            envelope
                .events
                .iter()
                .map(|e| (e.event_id.as_deref(), e.raw.get())),
        );
        let events = queued(&event_ids, envelope.events.iter().map(|e| e.raw));
        let batch = QueuedBatch::new(app, Timestamp::now(), envelope.sent_at, events);
        self.enqueue(&batch).await?;
        Ok(Accepted { event_ids })
    }

    /// The limits of a Segment request.
    pub fn segment_limits(&self) -> SegmentLimits {
        self.segment_limits
    }

    /// Checks a Segment body's shape and limits. Its messages are judged
    /// one by one when processed, so one bad message costs no other.
    pub fn parse_segment(
        &self,
        call: SegmentCall,
        body: &[u8],
    ) -> Result<SegmentBody, IngestError> {
        Ok(parse_segment_body(body, call, &self.segment_limits)?)
    }

    /// Queues a Segment body's messages for `app`: each one's event id is its
    /// `messageId`, or one made here from the message when it has none.
    pub async fn accept_segment(
        &self,
        app: &str,
        body: &SegmentBody,
    ) -> Result<Accepted, IngestError> {
        let event_ids = final_ids(
            app,
            body.messages
                .iter()
                .map(|m| (m.message_id.as_deref(), m.raw.get())),
        );
        let events = queued(&event_ids, body.messages.iter().map(|m| &*m.raw));
        self.enqueue(&QueuedBatch::segment(app, Timestamp::now(), events))
            .await?;
        Ok(Accepted { event_ids })
    }

    async fn enqueue(&self, batch: &QueuedBatch<'_>) -> Result<(), IngestError> {
        match tokio::time::timeout(self.timeout, self.queue.enqueue(batch)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(IngestError::Unavailable(e)),
            Err(_) => Err(IngestError::Unavailable(BackendError::Busy(format!(
                "no answer within {:?}",
                self.timeout
            )))),
        }
    }
}

/// Each event's final id, in order: the client's, or one made here from the
/// event as sent and its position.
fn final_ids<'a>(app: &str, sent: impl Iterator<Item = (Option<&'a str>, &'a str)>) -> Vec<String> {
    sent.enumerate()
        .map(|(i, (id, raw))| match id {
            Some(id) => id.to_owned(),
            None => generated_event_id(app, i, raw),
        })
        .collect()
}

/// The queued events: each one as sent, with its final id.
fn queued<'a>(ids: &'a [String], raws: impl Iterator<Item = &'a RawValue>) -> Vec<QueuedEvent<'a>> {
    ids.iter()
        .zip(raws)
        .map(|(id, event)| QueuedEvent {
            event_id: id.as_str().into(),
            event,
        })
        .collect()
}
