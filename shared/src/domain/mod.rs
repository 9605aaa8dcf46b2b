//! The pure domain: the event model, envelope parsing, validation and key
//! encoding. Nothing here knows about HTTP, SQLite or AWS.

pub mod admission;
pub mod api_key;
pub mod envelope;
pub mod judge;
pub mod keys;
pub mod message;
pub mod model;
pub mod range;
pub mod redelivery;
pub mod schema;
pub mod time;

pub use envelope::{
    Envelope, EnvelopeError, EventInput, FieldError, Limits, parse_body, parse_event,
};
pub use judge::{Context, Rules, Verdict, judge};
pub use keys::{Seq, ts_seq};
pub use message::{EncodedMessage, MESSAGE_VERSION, MessageError, QueuedBatch, QueuedEvent};
pub use model::{ErrorCode, ErrorRecord, StoredEvent};
pub use schema::{SchemaCheck, SchemaError, SchemaRegistry};
pub use time::{Timestamp, TimestampError};
