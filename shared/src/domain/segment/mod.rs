//! Segment's HTTP Tracking API, which RudderStack's SDKs also speak: the
//! calls, the request bodies ingest accepts ([`body`]), and how one message
//! becomes an Eye event ([`translate`]). The README's table is the mapping.
//!
//! Ingest only checks a body's shape and limits, fills each message in from
//! the batch, and queues the messages as sent. The processor translates them,
//! so that a message that breaks the mapping's rules becomes an error record
//! that keeps the message itself, like any other refused event.

pub mod body;
pub mod translate;

pub use body::{SegmentBody, SegmentLimits, parse_segment_body};
pub use translate::{TranslateError, Translated, translate};

/// The kinds of Segment message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentType {
    /// An action: `event` names it, `properties` describe it.
    Track,
    /// A web page view.
    Page,
    /// A mobile screen view.
    Screen,
    /// Who the user is: `traits`.
    Identify,
    /// The user's group (company, team): `traits`.
    Group,
    /// One user id joined to another (`previousId`).
    Alias,
}

impl SegmentType {
    /// Every type.
    pub const ALL: [SegmentType; 6] = [
        SegmentType::Track,
        SegmentType::Page,
        SegmentType::Screen,
        SegmentType::Identify,
        SegmentType::Group,
        SegmentType::Alias,
    ];

    /// The type's name, as messages carry it in `type`.
    pub fn as_str(self) -> &'static str {
        match self {
            SegmentType::Track => "track",
            SegmentType::Page => "page",
            SegmentType::Screen => "screen",
            SegmentType::Identify => "identify",
            SegmentType::Group => "group",
            SegmentType::Alias => "alias",
        }
    }

    /// Parses a type's name.
    pub fn parse(name: &str) -> Option<SegmentType> {
        Self::ALL.into_iter().find(|t| t.as_str() == name)
    }
}

/// What a Segment endpoint takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentCall {
    /// `/v1/batch`, `/v1/import`, `/v1/b`: `{"batch": [...]}`.
    Batch,
    /// `/v1/track`, `/v1/t`, ...: one message of this type.
    One(SegmentType),
}

impl SegmentCall {
    /// The call a path under `/v1/` names: the long names, and the short ones
    /// analytics.js uses (a type's first letter, `b` for a batch).
    pub fn from_path(name: &str) -> Option<SegmentCall> {
        match name {
            "batch" | "import" | "b" => Some(SegmentCall::Batch),
            "t" => Some(SegmentCall::One(SegmentType::Track)),
            "p" => Some(SegmentCall::One(SegmentType::Page)),
            "s" => Some(SegmentCall::One(SegmentType::Screen)),
            "i" => Some(SegmentCall::One(SegmentType::Identify)),
            "g" => Some(SegmentCall::One(SegmentType::Group)),
            "a" => Some(SegmentCall::One(SegmentType::Alias)),
            other => SegmentType::parse(other).map(SegmentCall::One),
        }
    }
}

/// The most characters of a `messageId` (The Eye's `event_id`).
pub const MAX_MESSAGE_ID_CHARS: usize = 256;

/// The `context` key under which a translated event keeps the message's
/// fields that have no place of their own.
pub const KEPT_FIELDS_KEY: &str = "segment";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_path_name_and_short_name_is_a_call() {
        for t in SegmentType::ALL {
            assert_eq!(
                SegmentCall::from_path(t.as_str()),
                Some(SegmentCall::One(t))
            );
            let short = &t.as_str()[..1];
            assert_eq!(SegmentCall::from_path(short), Some(SegmentCall::One(t)));
        }
        for batch in ["batch", "import", "b"] {
            assert_eq!(SegmentCall::from_path(batch), Some(SegmentCall::Batch));
        }
        assert_eq!(SegmentCall::from_path("events"), None);
        assert_eq!(SegmentCall::from_path("x"), None);
    }
}
