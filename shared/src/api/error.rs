//! Error answers: one shape, `{"error": {"code", "message", "details"}}`, with
//! a machine-readable code and a message that says what to fix.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use serde_json::json;

use super::response::json_response;
use crate::domain::{EnvelopeError, FieldError};
use crate::ports::BackendError;

pub(super) fn envelope_error(e: EnvelopeError) -> ApiError {
    let message = e.to_string();
    match e {
        EnvelopeError::BodyTooLarge { .. } => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("{message}; split the events over several requests"),
        ),
        EnvelopeError::EventTooLarge { index, .. } => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("{message}; keep large data out of events"),
        )
        .with_details(vec![FieldError {
            index: Some(index),
            field: None,
            message,
        }]),
        EnvelopeError::MalformedJson { .. } => ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed_json",
            format!("{message}; fix the JSON syntax and send it again"),
        ),
        EnvelopeError::InvalidBody { field, .. } => {
            ApiError::new(StatusCode::BAD_REQUEST, "invalid_body", message.clone()).with_details(
                vec![FieldError {
                    index: None,
                    field,
                    message,
                }],
            )
        }
        EnvelopeError::EmptyBatch => ApiError::new(
            StatusCode::BAD_REQUEST,
            "empty_batch",
            "the request has no events; send at least one".to_owned(),
        ),
        EnvelopeError::TooManyEvents { .. } => ApiError::new(
            StatusCode::BAD_REQUEST,
            "too_many_events",
            format!("{message}; split the events over several requests"),
        ),
        EnvelopeError::InvalidEvents(details) => {
            let events: std::collections::BTreeSet<_> =
                details.iter().filter_map(|d| d.index).collect();
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_event",
                format!(
                    "{} event(s) are invalid and nothing was accepted; fix the fields listed in details and send the request again",
                    events.len()
                ),
            )
            .with_details(details)
        }
    }
}

pub(super) fn queries_not_served() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "this deployment does not serve queries; query with `eye events` / `eye errors` or the AWS CLI".to_owned(),
    )
}

pub(super) fn method_not_allowed(allow: &'static str) -> ApiError {
    ApiError::MethodNotAllowed(allow)
}

pub(super) fn unavailable(what: &str, e: &BackendError, retry_after: u32) -> ApiError {
    if let BackendError::Unsupported(message) = e {
        return ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", message.clone());
    }
    tracing::warn!(error = %e, "{what} is unavailable");
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        format!("{what} cannot take this request right now ({e}); nothing was accepted, retry after {retry_after}s"),
    )
    .with_retry_after(retry_after)
}

/// An error answer. Every one but [`ApiError::Forbidden`] has the shape
/// `{"error": {"code", "message", "details"}}`.
#[derive(Debug)]
pub enum ApiError {
    /// `403 {"message": "Forbidden"}`, as API Gateway answers.
    Forbidden,
    /// `405`, with the allowed methods.
    MethodNotAllowed(&'static str),
    /// Any other error.
    Error {
        /// HTTP status.
        status: StatusCode,
        /// Machine-readable code.
        code: &'static str,
        /// What to fix.
        message: String,
        /// Per-field problems.
        details: Vec<FieldError>,
        /// Seconds for the `Retry-After` header.
        retry_after: Option<u32>,
    },
}

impl ApiError {
    /// An error with no details.
    pub fn new(status: StatusCode, code: &'static str, message: String) -> Self {
        ApiError::Error {
            status,
            code,
            message,
            details: Vec::new(),
            retry_after: None,
        }
    }

    /// Adds per-field problems.
    pub fn with_details(mut self, more: Vec<FieldError>) -> Self {
        if let ApiError::Error { details, .. } = &mut self {
            *details = more;
        }
        self
    }

    /// Adds a `Retry-After` header of `secs` seconds.
    pub fn with_retry_after(mut self, secs: u32) -> Self {
        if let ApiError::Error { retry_after, .. } = &mut self {
            *retry_after = Some(secs);
        }
        self
    }

    /// The HTTP answer.
    pub fn into_response(self) -> Response<Bytes> {
        self.render(false)
    }

    /// The answer in the shape the analytics SDKs read: `code` and `message`
    /// at the top level as well as in `error`, and a 403 like any other error.
    pub(super) fn into_sdk_response(self) -> Response<Bytes> {
        let e = match self {
            ApiError::Forbidden => ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "this key may not do this".to_owned(),
            ),
            other => other,
        };
        e.render(true)
    }

    fn render(self, top_level: bool) -> Response<Bytes> {
        let body = |code: &str, message: String, details: Vec<FieldError>| {
            let mut body = json!({"error": {"code": code, "message": message, "details": details}});
            if top_level {
                body["code"] = code.into();
                body["message"] = message.into();
            }
            body
        };
        match self {
            ApiError::Forbidden => {
                json_response(StatusCode::FORBIDDEN, &json!({"message": "Forbidden"}))
            }
            ApiError::MethodNotAllowed(allow) => {
                let mut r = json_response(
                    StatusCode::METHOD_NOT_ALLOWED,
                    &body(
                        "method_not_allowed",
                        format!("use {allow} on this path"),
                        Vec::new(),
                    ),
                );
                r.headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static(allow));
                r
            }
            ApiError::Error {
                status,
                code,
                message,
                details,
                retry_after,
            } => {
                let mut r = json_response(status, &body(code, message, details));
                if let Some(secs) = retry_after {
                    r.headers_mut()
                        .insert(header::RETRY_AFTER, HeaderValue::from(secs));
                }
                r
            }
        }
    }
}
