//! The pure domain: nothing here knows about HTTP, SQLite or AWS.
//! - the event: [`model`] (stored events, error records), [`time`],
//!   [`envelope`] (what a client may send), [`message`] (the queue message),
//!   [`keys`] (sort keys and event ids), [`schema`] and [`judge`] (one
//!   event's verdict);
//! - the policy every backend applies: [`range`] (query ranges, filters, day
//!   buckets), [`redelivery`] (retry or dead letter), [`admission`] (the
//!   backlog limit) and [`api_key`] (key format, hashing, the check).

pub mod admission;
pub mod api_key;
pub mod envelope;
pub mod judge;
pub mod keys;
pub mod message;
pub mod model;
pub mod range;
pub(crate) mod raw_json;
pub mod redelivery;
pub mod schema;
pub mod segment;
pub mod time;

pub use envelope::{
    Envelope, EnvelopeError, EventInput, FieldError, Limits, parse_body, parse_event,
};
pub use judge::{Context, Rules, Verdict, judge, judge_segment};
pub use keys::{Seq, ts_seq};
pub use message::{
    EncodedMessage, Format, MESSAGE_VERSION, MessageError, QueuedBatch, QueuedEvent,
};
pub use model::{ErrorCode, ErrorRecord, StoredEvent};
pub use schema::{SchemaCheck, SchemaError, SchemaRegistry};
pub use time::{Timestamp, TimestampError};
