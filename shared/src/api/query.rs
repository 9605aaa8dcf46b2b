//! Query-string parameters, filters and opaque cursors.

use std::borrow::Cow;

use http::StatusCode;

use super::ApiError;
use crate::domain::envelope::MAX_SESSION_ID_CHARS;
use crate::domain::range::{ErrorFilter, EventFilter, FilterError};
use crate::domain::time::TIMESTAMP_FORMS;
use crate::domain::{ErrorCode, Timestamp};
use crate::ports::PageRequest;

/// Default page size.
pub const DEFAULT_LIMIT: usize = 100;
/// Largest page size.
pub const MAX_LIMIT: usize = 1000;

pub(super) struct Params<'a>(Vec<(Cow<'a, str>, Cow<'a, str>)>);

fn invalid(message: String) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", message)
}

impl<'a> Params<'a> {
    /// Parses a query string, refusing unknown and repeated parameters so a typo
    /// never silently widens a query.
    pub fn parse(query: Option<&'a str>, allowed: &[&str]) -> Result<Self, ApiError> {
        let pairs: Vec<_> = form_urlencoded::parse(query.unwrap_or("").as_bytes()).collect();
        for (i, (key, _)) in pairs.iter().enumerate() {
            if !allowed.contains(&key.as_ref()) {
                return Err(invalid(format!(
                    "unknown parameter `{key}`; this endpoint takes {}",
                    allowed.join(", ")
                )));
            }
            if pairs[..i].iter().any(|(k, _)| k == key) {
                return Err(invalid(format!(
                    "parameter `{key}` is given more than once"
                )));
            }
        }
        Ok(Params(pairs))
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_ref())
    }

    fn time(&self, key: &str) -> Result<Option<Timestamp>, ApiError> {
        self.get(key)
            .map(|v| {
                Timestamp::parse(v).map_err(|e| {
                    invalid(format!(
                        "`{key}` {:?}: {}; {TIMESTAMP_FORMS}",
                        e.input, e.reason
                    ))
                })
            })
            .transpose()
    }

    pub fn event_filter(&self) -> Result<EventFilter, ApiError> {
        let (from, to) = (self.time("from")?, self.time("to")?);
        EventFilter::new(self.get("category").map(str::to_owned), from, to).map_err(filter_error)
    }

    pub fn error_filter(&self) -> Result<ErrorFilter, ApiError> {
        let (from, to) = (self.time("from")?, self.time("to")?);
        let code = self
            .get("code")
            .map(|c| {
                ErrorCode::parse(c).ok_or_else(|| {
                    let known: Vec<_> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
                    invalid(format!(
                        "unknown error code {c:?}; codes are {}",
                        known.join(", ")
                    ))
                })
            })
            .transpose()?;
        ErrorFilter::new(code, from, to).map_err(filter_error)
    }

    /// The page size and the cursor's key; `kind` ties a cursor to the query
    /// that made it.
    pub fn page(&self, kind: &str) -> Result<PageRequest, ApiError> {
        let limit = match self.get("limit") {
            None => DEFAULT_LIMIT,
            Some(v) => match v.parse::<usize>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
                _ => {
                    return Err(invalid(format!(
                        "`limit` {v:?} must be a whole number from 1 to {MAX_LIMIT}"
                    )));
                }
            },
        };
        let after = self
            .get("cursor")
            .map(|c| decode_cursor(kind, c))
            .transpose()?;
        Ok(PageRequest { limit, after })
    }
}

fn filter_error(e: FilterError) -> ApiError {
    invalid(e.to_string())
}

/// The cursor kind of `GET /v1/events`.
pub(super) const EVENTS_CURSOR: &str = "e";
/// The cursor kind of `GET /v1/errors`.
pub(super) const ERRORS_CURSOR: &str = "x";
/// The cursor kind of `GET /v1/sessions/{session_id}/events`. Not tied to the
/// session: a cursor reused on another session only skips ahead.
pub(super) const SESSION_CURSOR: &str = "s";

/// Makes an opaque cursor: lowercase hex of `kind`, `\n` and the key. The
/// OpenAPI document gives each endpoint's pattern: `^650a([2-7][0-9a-f])+$`
/// for `e`, and so on. Keys are printable ASCII (timestamps, `#`, hex).
pub(super) fn encode_cursor(kind: &str, key: &str) -> String {
    let mut out = String::with_capacity((kind.len() + key.len() + 1) * 2);
    for b in kind.bytes().chain([b'\n']).chain(key.bytes()) {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 15)]));
    }
    out
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// The key of a cursor that [`encode_cursor`] made for `kind`: exactly what
/// the document's pattern allows, lowercase hex of `kind`, `\n` and a key of
/// printable ASCII (bytes 0x20 to 0x7f), at least one byte long.
fn decode_cursor(kind: &str, cursor: &str) -> Result<String, ApiError> {
    let bad = || {
        invalid("`cursor` is not a cursor of this query; pass next_cursor from the previous page unchanged".into())
    };
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    if cursor.len() % 2 != 0 {
        return Err(bad());
    }
    let bytes: Vec<u8> = cursor
        .as_bytes()
        .chunks(2)
        .map(|pair| Some(nibble(pair[0])? << 4 | nibble(pair[1])?))
        .collect::<Option<_>>()
        .ok_or_else(bad)?;
    let key = bytes
        .strip_prefix(kind.as_bytes())
        .and_then(|rest| rest.strip_prefix(b"\n"))
        .ok_or_else(bad)?;
    if key.is_empty() || !key.iter().all(|b| (0x20..=0x7f).contains(b)) {
        return Err(bad());
    }
    // Printable ASCII is UTF-8.
    String::from_utf8(key.to_vec()).map_err(|_| bad())
}

/// The session id in a path, percent-decoded and checked as the OpenAPI
/// document says (and as ingest checks a `session_id`): 1 to
/// [`MAX_SESSION_ID_CHARS`] characters, none a control character.
pub(super) fn session_id_in_path(segment: &str) -> Result<String, ApiError> {
    let session = percent_encoding::percent_decode_str(segment)
        .decode_utf8()
        .map(Cow::into_owned)
        .map_err(|_| {
            invalid("the session id in the path is not valid UTF-8 once percent-decoded".into())
        })?;
    let chars = session.chars().count();
    if chars == 0 {
        return Err(invalid(
            "the session id in the path is empty; give one: /v1/sessions/{session_id}/events"
                .into(),
        ));
    }
    if chars > MAX_SESSION_ID_CHARS {
        return Err(invalid(format!(
            "the session id in the path has {chars} characters; the limit is {MAX_SESSION_ID_CHARS}, so no session has this id"
        )));
    }
    if session.chars().any(char::is_control) {
        return Err(invalid(
            "the session id in the path contains a control character, which no session id has; remove it".into(),
        ));
    }
    Ok(session)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trip_and_kind_check() {
        let key = "2021-01-01T00:00:00.000000Z#00ff";
        let c = encode_cursor(SESSION_CURSOR, key);
        assert_eq!(decode_cursor(SESSION_CURSOR, &c).unwrap(), key);
        assert!(decode_cursor(EVENTS_CURSOR, &c).is_err());
        assert!(decode_cursor(ERRORS_CURSOR, &c).is_err());
        for bad in [
            "",
            "zz",
            "abc",
            "00",
            "650a",           // no key
            "65",             // no separator
            "650A32",         // uppercase: not what encode_cursor makes
            "650a1f",         // a control character in the key
            "650a80",         // not ASCII
            "650ac3a9",       // UTF-8, but not ASCII
            "650a320a32",     // a second newline
            "6520a32",        // odd length
            "73",             // a kind alone
            "730a32",         // another endpoint's kind
            "653a61620a3230", // the old per-session kind, `e:ab`
        ] {
            assert!(decode_cursor(EVENTS_CURSOR, bad).is_err(), "{bad:?}");
        }
        assert_eq!(decode_cursor(EVENTS_CURSOR, "650a207f").unwrap(), " \u{7f}");
    }

    /// The patterns the OpenAPI document gives each endpoint's `cursor`
    /// (and its pages' `next_cursor`), against what the server makes and takes.
    #[test]
    fn cursors_match_the_documented_patterns() {
        let doc: serde_json::Value = serde_json::from_str(super::super::OPENAPI_JSON).unwrap();
        let parameter = |name: &str| doc["components"]["parameters"][name]["schema"].clone();
        let next = |response: &str| {
            let mut schema = doc["components"]["responses"][response]["content"]["application/json"]
                ["schema"]["properties"]["next_cursor"]
                .clone();
            // OpenAPI's `nullable` is not JSON Schema: check the string form.
            schema.as_object_mut().unwrap().remove("nullable");
            schema["type"] = "string".into();
            schema
        };
        let real_keys = [
            "2021-01-01T09:15:27.243860Z#0000000000000000000000000000ffff",
            "1970-01-01T00:00:00.000000Z#00000000000000000000000000000000",
            "9999-12-31T23:59:59.999999Z#ffffffffffffffffffffffffffffffff",
        ];
        for (kind, schemas) in [
            (EVENTS_CURSOR, [parameter("eventCursor"), next("EventPage")]),
            (
                SESSION_CURSOR,
                [parameter("sessionCursor"), next("SessionPage")],
            ),
            (ERRORS_CURSOR, [parameter("errorCursor"), next("ErrorPage")]),
        ] {
            for schema in schemas {
                assert!(schema["pattern"].is_string(), "{kind}: {schema}");
                let pattern = jsonschema::validator_for(&schema).unwrap();
                for key in real_keys {
                    let cursor = encode_cursor(kind, key);
                    assert!(pattern.is_valid(&cursor.clone().into()), "{kind}: {cursor}");
                    assert_eq!(decode_cursor(kind, &cursor).unwrap(), key);
                }
                // The server takes a cursor exactly when the pattern does.
                let other = if kind == EVENTS_CURSOR { "x" } else { "e" };
                for candidate in [
                    encode_cursor(kind, " "),
                    encode_cursor(kind, "~\u{7f}"),
                    encode_cursor(kind, "a\nb"),
                    encode_cursor(kind, "\u{1f}"),
                    encode_cursor(kind, "é"),
                    encode_cursor(kind, ""),
                    encode_cursor(other, "2021"),
                    encode_cursor(kind, "2021").to_uppercase(),
                    "00".into(),
                    String::new(),
                ] {
                    assert_eq!(
                        pattern.is_valid(&candidate.clone().into()),
                        decode_cursor(kind, &candidate).is_ok(),
                        "{kind}: {candidate}"
                    );
                }
            }
        }
    }

    #[test]
    fn session_ids_in_paths_are_checked_like_ingest() {
        assert_eq!(
            session_id_in_path("user%2042%2Ftab%231").unwrap(),
            "user 42/tab#1"
        );
        assert_eq!(
            session_id_in_path(&"é".repeat(128))
                .unwrap()
                .chars()
                .count(),
            128
        );
        for bad in [
            "",
            "%ff",
            "a%00b",
            "a%1fb",
            "a%7f",
            "%c2%85",
            &"a".repeat(129),
        ] {
            assert!(session_id_in_path(bad).is_err(), "{bad:?}");
        }
        let long = session_id_in_path(&"a".repeat(129)).unwrap_err();
        assert!(format!("{long:?}").contains("128"), "{long:?}");
    }

    #[test]
    fn unknown_repeated_and_bad_parameters() {
        assert!(Params::parse(Some("catgory=x"), &["category"]).is_err());
        assert!(Params::parse(Some("limit=1&limit=2"), &["limit"]).is_err());
        let p = Params::parse(Some("limit=0"), &["limit"]).unwrap();
        assert!(p.page("e").is_err());
        let p = Params::parse(Some("limit=1001"), &["limit"]).unwrap();
        assert!(p.page("e").is_err());
        let p = Params::parse(Some("limit=1000"), &["limit"]).unwrap();
        assert_eq!(p.page("e").unwrap().limit, 1000);
        let p = Params::parse(None, &["limit"]).unwrap();
        assert_eq!(p.page("e").unwrap().limit, DEFAULT_LIMIT);
    }

    #[test]
    fn filters() {
        let all = ["category", "from", "to"];
        let p = Params::parse(Some("category=page+interaction"), &all).unwrap();
        assert_eq!(
            p.event_filter().unwrap().category.as_deref(),
            Some("page interaction")
        );
        let p = Params::parse(
            Some("from=2021-01-01%2009:00:00&to=2021-01-01T10:00:00Z"),
            &all,
        )
        .unwrap();
        let f = p.event_filter().unwrap();
        assert_eq!(f.from.unwrap().to_rfc3339(), "2021-01-01T09:00:00.000000Z");
        let every = Params::parse(None, &all).unwrap().event_filter().unwrap();
        assert_eq!(every, EventFilter::default(), "every event, by time");
        let p = Params::parse(
            Some("from=2021-01-02T00:00:00Z&to=2021-01-01T00:00:00Z"),
            &all,
        )
        .unwrap();
        let reversed = p.event_filter().unwrap();
        assert!(reversed.reversed_range().is_some(), "valid, and empty");
        let p = Params::parse(Some("code=nope"), &["code"]).unwrap();
        assert!(p.error_filter().is_err());
        let p = Params::parse(Some("code=payload_invalid"), &["code"]).unwrap();
        assert_eq!(
            p.error_filter().unwrap().code,
            Some(ErrorCode::PayloadInvalid)
        );
    }
}
