//! Successful answers: JSON, pages of results, and static documents.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use serde::Serialize;

use super::query;

pub(super) fn page_response<T: Serialize>(
    name: &str,
    page: crate::ports::Page<T>,
    kind: &str,
) -> Response<Bytes> {
    // Written directly rather than through serde_json::Value, which would
    // re-order the keys of each raw `data` and `event` object.
    let next = page.next.map(|key| query::encode_cursor(kind, &key));
    let mut body = Vec::with_capacity(256 * page.items.len() + 64);
    body.extend_from_slice(b"{\"");
    body.extend_from_slice(name.as_bytes());
    body.extend_from_slice(b"\":");
    // Serialising stored events and records cannot fail.
    let _ = serde_json::to_writer(&mut body, &page.items);
    body.extend_from_slice(b",\"next_cursor\":");
    let _ = serde_json::to_writer(&mut body, &next);
    body.push(b'}');
    raw_json_owned(StatusCode::OK, body)
}

/// A JSON answer.
pub fn json_response<T: Serialize + ?Sized>(status: StatusCode, body: &T) -> Response<Bytes> {
    // Serialising our own answer types cannot fail.
    raw_json_owned(status, serde_json::to_vec(body).unwrap_or_default())
}

pub(super) fn raw_json(status: StatusCode, body: &'static str) -> Response<Bytes> {
    respond(
        status,
        "application/json",
        Bytes::from_static(body.as_bytes()),
    )
}

fn raw_json_owned(status: StatusCode, body: Vec<u8>) -> Response<Bytes> {
    respond(status, "application/json", Bytes::from(body))
}

pub(super) fn html(body: &'static str) -> Response<Bytes> {
    respond(
        StatusCode::OK,
        "text/html; charset=utf-8",
        Bytes::from_static(body.as_bytes()),
    )
}

fn respond(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Bytes> {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}
