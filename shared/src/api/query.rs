//! Query-string parameters, filters and opaque cursors.

use std::borrow::Cow;

use http::StatusCode;

use super::ApiError;
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
    let hint = match e {
        FilterError::NoSelection => "; for one session use /v1/sessions/{session_id}/events",
        _ => "",
    };
    invalid(format!("{e}{hint}"))
}

/// Makes an opaque cursor: hex of `kind` and the key.
pub(super) fn encode_cursor(kind: &str, key: &str) -> String {
    let mut out = String::with_capacity((kind.len() + key.len() + 1) * 2);
    for b in kind.bytes().chain([b'\n']).chain(key.bytes()) {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 15)]));
    }
    out
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn decode_cursor(kind: &str, cursor: &str) -> Result<String, ApiError> {
    let bad = || {
        invalid("`cursor` is not a cursor of this query; pass next_cursor from the previous page unchanged".into())
    };
    if cursor.len() % 2 != 0 {
        return Err(bad());
    }
    let bytes: Option<Vec<u8>> = cursor
        .as_bytes()
        .chunks(2)
        .map(|pair| {
            let hi = (pair[0] as char).to_digit(16)?;
            let lo = (pair[1] as char).to_digit(16)?;
            u8::try_from(hi * 16 + lo).ok()
        })
        .collect();
    let text = bytes
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(bad)?;
    let (k, key) = text.split_once('\n').ok_or_else(bad)?;
    if k != kind || key.is_empty() {
        return Err(bad());
    }
    Ok(key.to_owned())
}

/// Percent-decodes one path segment (a session id).
pub(super) fn decode_path_segment(segment: &str) -> Result<String, ApiError> {
    percent_encoding::percent_decode_str(segment)
        .decode_utf8()
        .map(Cow::into_owned)
        .map_err(|_| {
            invalid("the session id in the path is not valid UTF-8 once percent-decoded".into())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trip_and_kind_check() {
        let c = encode_cursor("s:abc", "2021-01-01T00:00:00.000000Z#00ff");
        assert_eq!(
            decode_cursor("s:abc", &c).unwrap(),
            "2021-01-01T00:00:00.000000Z#00ff"
        );
        assert!(decode_cursor("s:other", &c).is_err());
        assert!(decode_cursor("e", "zz").is_err());
        assert!(decode_cursor("e", "abc").is_err());
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
        assert!(Params::parse(None, &all).unwrap().event_filter().is_err());
        let p = Params::parse(
            Some("from=2021-01-02T00:00:00Z&to=2021-01-01T00:00:00Z"),
            &all,
        )
        .unwrap();
        assert!(p.event_filter().is_err());
        let p = Params::parse(Some("code=nope"), &["code"]).unwrap();
        assert!(p.error_filter().is_err());
        let p = Params::parse(Some("code=payload_invalid"), &["code"]).unwrap();
        assert_eq!(
            p.error_filter().unwrap().code,
            Some(ErrorCode::PayloadInvalid)
        );
    }
}
