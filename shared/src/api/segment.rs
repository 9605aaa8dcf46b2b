//! Segment's tracking API on The Eye (`/v1/batch`, `/v1/track`, ...), for
//! the Segment and RudderStack SDKs unchanged but for the host.
//!
//! What differs from `POST /v1/events`, because the SDKs expect it:
//! - the key may come as HTTP Basic's user name or as `writeKey` in the
//!   body, as well as in `x-api-key`; a missing or unknown key is 401, a key
//!   that may not ingest 403;
//! - the answer is `200 {"success": true}`, once every message is queued
//!   (an SDK resends on anything else);
//! - one bad message costs no other: it becomes an error record;
//! - errors carry `code` and `message` at the top level (analytics-python
//!   reads those), beside the usual `error` object;
//! - beacons send their JSON as `text/plain`;
//! - bodies may be gzip (as on `/v1/events`).

use bytes::Bytes;
use http::{Response, StatusCode};
use serde_json::json;

use super::auth::has_credentials;
use super::error::{envelope_error, unavailable};
use super::response::json_response;
use super::{Api, ApiError, is_json, media_type};
use crate::app::ingest::IngestError;
use crate::domain::segment::SegmentCall;
use crate::ports::{Principal, Scope};

/// Checks the key in the request's head, if there is one: without one, the
/// key may still be in the body, and is checked once the body is read.
pub(super) async fn admit(
    api: &Api,
    parts: &http::request::Parts,
) -> Result<Option<Principal>, Response<Bytes>> {
    if !has_credentials(parts) {
        return Ok(None);
    }
    match api.auth.authenticate(parts).await {
        Ok(found) => permitted(found, "the key in the x-api-key or Authorization header")
            .map(Some)
            .map_err(ApiError::into_sdk_response),
        Err(e) => Err(unavailable("the key store", &e, api.retry_after_secs).into_sdk_response()),
    }
}

/// Answers one Segment request whose head [`admit`] let through.
pub(super) async fn handle(
    api: &Api,
    parts: &http::request::Parts,
    call: SegmentCall,
    principal: Option<Principal>,
    body: Bytes,
) -> Response<Bytes> {
    match accept(api, parts, call, principal, body).await {
        Ok(()) => json_response(StatusCode::OK, &json!({"success": true})),
        Err(e) => e.into_sdk_response(),
    }
}

async fn accept(
    api: &Api,
    parts: &http::request::Parts,
    call: SegmentCall,
    principal: Option<Principal>,
    body: Bytes,
) -> Result<(), ApiError> {
    check_content_type(parts)?;
    let max = api.ingest.segment_limits().max_body_bytes;
    let body = super::encoding::decoded_body(parts, body, max)?;
    let parsed = api
        .ingest
        .parse_segment(call, &body)
        .map_err(|e| ingest_error(api, e))?;
    let principal = match (principal, &parsed.write_key) {
        (Some(p), _) => p,
        (None, Some(key)) => {
            let found = api
                .auth
                .authenticate_key(key)
                .await
                .map_err(|e| unavailable("the key store", &e, api.retry_after_secs))?;
            permitted(found, "the body's writeKey")?
        }
        (None, None) => {
            return Err(unauthorized(
                "no key: send your Eye key as the HTTP Basic user name (the SDKs' write key), as writeKey in the body, or in x-api-key"
                    .into(),
            ));
        }
    };
    api.ingest
        .accept_segment(&principal.app, &parsed)
        .await
        .map_err(|e| ingest_error(api, e))?;
    Ok(())
}

fn permitted(found: Option<Principal>, what: &str) -> Result<Principal, ApiError> {
    match found {
        Some(p) if p.can(Scope::Ingest) => Ok(p),
        Some(_) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("{what} may not ingest; use a key made with --scope ingest"),
        )),
        None => Err(unauthorized(format!(
            "{what} is not a valid key of The Eye (unknown or revoked); use a key from `eye keys create`"
        ))),
    }
}

fn unauthorized(message: String) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
}

fn ingest_error(api: &Api, e: IngestError) -> ApiError {
    match e {
        IngestError::Invalid(e) => envelope_error(e),
        IngestError::Unavailable(e) => unavailable("the queue", &e, api.retry_after_secs),
    }
}

/// JSON, or `text/plain` (beacons and keepalive fetches), or none.
fn check_content_type(parts: &http::request::Parts) -> Result<(), ApiError> {
    match media_type(parts) {
        None => Ok(()),
        Some((essence, _)) if is_json(&essence) || essence == "text/plain" => Ok(()),
        Some((_, text)) => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!(
                "Content-Type {text:?} is neither JSON nor text/plain; send the body as application/json"
            ),
        )),
    }
}
