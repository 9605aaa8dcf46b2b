//! What The Eye stores: events and error records.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::keys::{Seq, ts_seq};
use super::time::Timestamp;

/// An event that passed validation, as stored and as served to analysts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredEvent {
    /// The client's id, or the one ingest made for it.
    pub event_id: String,
    /// The application, from its API key; never from the body.
    pub app: String,
    /// The application's session id.
    pub session_id: String,
    /// Event category.
    pub category: String,
    /// Event name.
    pub name: String,
    /// The payload, a JSON object, exactly as sent.
    pub data: Box<RawValue>,
    /// When it happened; skew-corrected when the request carried `sent_at`.
    pub timestamp: Timestamp,
    /// The client's own timestamp, kept when it was corrected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_timestamp: Option<Timestamp>,
    /// When ingest accepted it.
    pub received_at: Timestamp,
    /// The application's id of the user, when the sender knew it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// The device's or browser's id of the user, when the sender had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anonymous_id: Option<String>,
    /// Where it happened (page, device, library...): a JSON object, exactly as
    /// sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<Box<RawValue>>,
}

impl StoredEvent {
    /// The 128-bit tie-breaker of this event's keys.
    pub fn seq(&self) -> Seq {
        Seq::derive(&self.app, &self.event_id)
    }

    /// The session sort key: the client's own timestamp and the seq. Ordering a
    /// session by its sender's clock keeps the exact order in which one client
    /// produced its events; skew correction, which varies from request to request
    /// by network latency, could swap events sent milliseconds apart.
    pub fn session_key(&self) -> String {
        ts_seq(
            self.original_timestamp.unwrap_or(self.timestamp),
            self.seq(),
        )
    }

    /// The time-index sort key: the corrected timestamp and the seq. Used by the
    /// category and time-range queries, whose bounds are compared with `timestamp`.
    pub fn time_key(&self) -> String {
        ts_seq(self.timestamp, self.seq())
    }
}

/// Machine-readable reasons an event was not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The timestamp is later than `received_at` plus the allowed skew.
    TimestampInFuture,
    /// `data` breaks the JSON Schema of its event type.
    PayloadInvalid,
    /// No schema for the event type, and the processor is strict.
    UnknownEventType,
    /// The queued event no longer passes the envelope checks (for example after
    /// the rules changed while it waited in a queue).
    InvalidEvent,
}

impl ErrorCode {
    /// Every code, for documentation and validation of filters.
    pub const ALL: [ErrorCode; 4] = [
        ErrorCode::TimestampInFuture,
        ErrorCode::PayloadInvalid,
        ErrorCode::UnknownEventType,
        ErrorCode::InvalidEvent,
    ];

    /// The snake_case code.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::TimestampInFuture => "timestamp_in_future",
            ErrorCode::PayloadInvalid => "payload_invalid",
            ErrorCode::UnknownEventType => "unknown_event_type",
            ErrorCode::InvalidEvent => "invalid_event",
        }
    }

    /// Parses a snake_case code.
    pub fn parse(s: &str) -> Option<ErrorCode> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

/// An event that was refused during processing, kept with the reason so it can
/// be fixed and replayed. Nothing accepted is silently dropped.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorRecord {
    /// Stable id: the same refused event always gets the same id, so a
    /// redelivery does not record it twice.
    pub error_id: String,
    /// Why.
    pub code: ErrorCode,
    /// What is wrong, for people.
    pub message: String,
    /// JSON pointer into the event, such as `/data/element`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// The application, from its API key.
    pub app: String,
    /// When ingest accepted the event.
    pub received_at: Timestamp,
    /// The event's id (the client's, or the one ingest made).
    pub event_id: String,
    /// The event exactly as received.
    pub event: Box<RawValue>,
}

impl ErrorRecord {
    /// The error-index sort key: `"<received_at>#<error_id>"`.
    pub fn time_key(&self) -> String {
        let mut key = self.received_at.to_rfc3339();
        key.push('#');
        key.push_str(&self.error_id);
        key
    }
}
