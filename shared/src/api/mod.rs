//! The HTTP API: one handler, `http::Request<Bytes> -> http::Response<Bytes>`,
//! that maps requests to use cases and errors to responses. Routes are here;
//! [`error`] and [`response`] shape the answers, [`query`] reads parameters
//! and cursors, [`auth`] finds the caller.
//!
//! The local server (axum) and the ingest Lambda (`lambda_http`) both call
//! [`Api::handle`], so they answer every request the same way.

mod auth;
mod error;
mod query;
mod response;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use serde_json::json;

pub use auth::{ApiKeyAuth, Authenticator, GatewayAuth, GatewayIdentity};
pub use error::ApiError;
pub use response::json_response;

use crate::app::ingest::{Ingest, IngestError};
use crate::domain::Limits;
use crate::ports::{ErrorQuery, EventQuery, EventQueue, Principal, Scope, StatusSource};
use error::{envelope_error, method_not_allowed, queries_not_served, unavailable};
use response::{html, page_response, raw_json};

/// The landing page.
const INDEX_HTML: &str = include_str!("index.html");
/// The OpenAPI 3 document of this API.
pub const OPENAPI_JSON: &str = include_str!("openapi.json");

/// The HTTP API over the ports.
#[derive(Clone)]
pub struct Api {
    auth: Arc<dyn Authenticator>,
    ingest: Ingest,
    events: Option<Arc<dyn EventQuery>>,
    errors: Option<Arc<dyn ErrorQuery>>,
    status: Option<Arc<dyn StatusSource>>,
    retry_after_secs: u32,
}

impl Api {
    /// An ingest-only API: queries answer 404 until [`Api::with_queries`] adds them.
    pub fn new(auth: Arc<dyn Authenticator>, queue: Arc<dyn EventQueue>) -> Self {
        Self {
            auth,
            ingest: Ingest::new(queue),
            events: None,
            errors: None,
            status: None,
            retry_after_secs: crate::config::RETRY_AFTER_SECS,
        }
    }

    /// Serves the query endpoints from these stores.
    pub fn with_queries(
        mut self,
        events: Arc<dyn EventQuery>,
        errors: Arc<dyn ErrorQuery>,
    ) -> Self {
        self.events = Some(events);
        self.errors = Some(errors);
        self
    }

    /// Adds backend status to `GET /health`.
    pub fn with_status(mut self, status: Arc<dyn StatusSource>) -> Self {
        self.status = Some(status);
        self
    }

    /// Sets the request limits.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.ingest = self.ingest.with_limits(limits);
        self
    }

    /// How long ingest waits for the queue before answering 503.
    pub fn with_enqueue_timeout(mut self, timeout: Duration) -> Self {
        self.ingest = self.ingest.with_timeout(timeout);
        self
    }

    /// The request limits in force.
    pub fn limits(&self) -> Limits {
        self.ingest.limits()
    }

    /// Answers a request whose body was not read because it is over
    /// [`Limits::max_body_bytes`]: 403 for a bad key, as always, else 413.
    pub async fn handle_oversized(&self, req: Request<()>) -> Response<Bytes> {
        let (parts, ()) = req.into_parts();
        let scope = if parts.method == Method::POST {
            Scope::Ingest
        } else {
            Scope::Query
        };
        if let Err(e) = self.authorize(&parts, scope).await {
            return e.into_response();
        }
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!(
                "the request body is over {} bytes, the limit; split the events over several requests",
                self.limits().max_body_bytes
            ),
        )
        .into_response()
    }

    /// Answers one request.
    pub async fn handle(&self, req: Request<Bytes>) -> Response<Bytes> {
        let (parts, body) = req.into_parts();
        let path = parts.uri.path();
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        let method = &parts.method;
        let result = match (segments.as_slice(), method) {
            ([""], &Method::GET) => Ok(html(INDEX_HTML)),
            (["health"], &Method::GET) => Ok(self.health().await),
            (["openapi.json"], &Method::GET) => Ok(raw_json(StatusCode::OK, OPENAPI_JSON)),
            (["v1", "events"], &Method::POST) => self.ingest(&parts, body).await,
            (["v1", "events"], &Method::GET) => self.find_events(&parts).await,
            (["v1", "sessions", session, "events"], &Method::GET) => {
                self.session_events(&parts, session).await
            }
            (["v1", "errors"], &Method::GET) => self.find_errors(&parts).await,
            (
                [""]
                | ["health"]
                | ["openapi.json"]
                | ["v1", "errors"]
                | ["v1", "sessions", _, "events"],
                _,
            ) => Err(method_not_allowed("GET")),
            (["v1", "events"], _) => Err(method_not_allowed("GET, POST")),
            _ => Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no route for {method} {path}; see GET /openapi.json"),
            )),
        };
        result.unwrap_or_else(ApiError::into_response)
    }

    async fn authorize(
        &self,
        parts: &http::request::Parts,
        scope: Scope,
    ) -> Result<Principal, ApiError> {
        match self.auth.authenticate(parts).await {
            Ok(Some(principal)) if principal.can(scope) => Ok(principal),
            Ok(_) => Err(ApiError::Forbidden),
            Err(e) => Err(unavailable("the key store", &e, self.retry_after_secs)),
        }
    }

    async fn health(&self) -> Response<Bytes> {
        let mut body = json!({"status": "ok"});
        if let Some(status) = &self.status {
            match status.status().await {
                Ok(serde_json::Value::Object(extra)) => {
                    for (k, v) in extra {
                        body[k] = v;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    return json_response(
                        StatusCode::SERVICE_UNAVAILABLE,
                        &json!({"status": "unavailable", "reason": e.to_string()}),
                    );
                }
            }
        }
        json_response(StatusCode::OK, &body)
    }

    async fn ingest(
        &self,
        parts: &http::request::Parts,
        body: Bytes,
    ) -> Result<Response<Bytes>, ApiError> {
        let principal = self.authorize(parts, Scope::Ingest).await?;
        check_content_type(parts)?;
        match self.ingest.accept(&principal.app, &body).await {
            Ok(accepted) => Ok(json_response(
                StatusCode::ACCEPTED,
                &json!({"accepted": accepted.event_ids.len(), "event_ids": accepted.event_ids}),
            )),
            Err(IngestError::Invalid(e)) => Err(envelope_error(e)),
            Err(IngestError::Unavailable(e)) => {
                Err(unavailable("the queue", &e, self.retry_after_secs))
            }
        }
    }

    async fn session_events(
        &self,
        parts: &http::request::Parts,
        session: &str,
    ) -> Result<Response<Bytes>, ApiError> {
        self.authorize(parts, Scope::Query).await?;
        let store = self.events.as_ref().ok_or_else(queries_not_served)?;
        let session = query::decode_path_segment(session)?;
        let params = query::Params::parse(parts.uri.query(), &["limit", "cursor"])?;
        let page = params.page(&format!("s:{session}"))?;
        let found = store
            .session_events(&session, page)
            .await
            .map_err(|e| unavailable("the event store", &e, self.retry_after_secs))?;
        Ok(page_response("events", found, &format!("s:{session}")))
    }

    async fn find_events(&self, parts: &http::request::Parts) -> Result<Response<Bytes>, ApiError> {
        self.authorize(parts, Scope::Query).await?;
        let store = self.events.as_ref().ok_or_else(queries_not_served)?;
        let params = query::Params::parse(
            parts.uri.query(),
            &["category", "from", "to", "limit", "cursor"],
        )?;
        let filter = params.event_filter()?;
        let kind = "e";
        let page = params.page(kind)?;
        let found = store
            .find_events(&filter, page)
            .await
            .map_err(|e| unavailable("the event store", &e, self.retry_after_secs))?;
        Ok(page_response("events", found, kind))
    }

    async fn find_errors(&self, parts: &http::request::Parts) -> Result<Response<Bytes>, ApiError> {
        self.authorize(parts, Scope::Query).await?;
        let store = self.errors.as_ref().ok_or_else(queries_not_served)?;
        let params = query::Params::parse(
            parts.uri.query(),
            &["code", "from", "to", "limit", "cursor"],
        )?;
        let filter = params.error_filter()?;
        let kind = "x";
        let page = params.page(kind)?;
        let found = store
            .find_errors(&filter, page)
            .await
            .map_err(|e| unavailable("the error store", &e, self.retry_after_secs))?;
        Ok(page_response("errors", found, kind))
    }
}

fn check_content_type(parts: &http::request::Parts) -> Result<(), ApiError> {
    let Some(value) = parts.headers.get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let essence = value
        .to_str()
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let json = essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"));
    if json {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!(
                "Content-Type {:?} is not JSON; send the body as application/json (or leave Content-Type out)",
                value.to_str().unwrap_or("<not text>")
            ),
        ))
    }
}
