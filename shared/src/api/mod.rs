//! The HTTP API: one handler, `http::Request<Bytes> -> http::Response<Bytes>`,
//! that maps requests to use cases and errors to responses. Routes are here;
//! [`error`] and [`response`] shape the answers, [`query`] reads parameters
//! and cursors, [`auth`] finds the caller.
//!
//! The local server (axum) and the ingest Lambda (`lambda_http`) both call
//! [`Api::handle`], so they answer every request the same way.

mod auth;
mod encoding;
mod error;
mod query;
mod response;
mod route;
mod segment;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use serde_json::json;

pub use auth::{ApiKeyAuth, Authenticator, GatewayAuth, GatewayIdentity};
pub use error::ApiError;
pub use response::json_response;

use crate::app::ingest::{Ingest, IngestError};
use crate::domain::Limits;
use crate::ports::{DEGRADED, ErrorQuery, EventQuery, EventQueue, Principal, Scope, StatusSource};
use error::{envelope_error, queries_not_served, unavailable};
use response::{html, page_response, raw_json};
use route::Route;

/// The landing page.
const INDEX_HTML: &str = include_str!("index.html");
/// The OpenAPI 3 document of this API.
pub const OPENAPI_JSON: &str = include_str!("openapi.json");

/// A request whose route and key [`Api::admit`] checked.
#[derive(Debug)]
pub struct Admitted {
    route: Route,
    principal: Option<Principal>,
}

impl Admitted {
    /// Who sent the request; `None` on the public routes, and when the key
    /// is in the body ([`Admitted::key_in_body`]).
    pub fn principal(&self) -> Option<&Principal> {
        self.principal.as_ref()
    }

    /// Whether the key can only be checked once the body is read (a Segment
    /// request with no key in its head, whose body may hold a `writeKey`).
    pub fn key_in_body(&self) -> bool {
        matches!(self.route, Route::Segment(_)) && self.principal.is_none()
    }
}

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

    /// Checks what can be checked from the request's head alone: the route
    /// (404, 405) and the key (403, or 503 if the key store is down). A
    /// server calls this before it takes an in-flight slot or reads a byte
    /// of the body, so a request without a valid key costs neither.
    pub async fn admit(&self, parts: &http::request::Parts) -> Result<Admitted, Response<Bytes>> {
        let route =
            Route::resolve(&parts.method, parts.uri.path()).map_err(ApiError::into_response)?;
        let principal = match (&route, route.scope()) {
            // The key may be in the body (Segment's writeKey).
            (Route::Segment(_), _) => segment::admit(self, parts).await?,
            (_, Some(scope)) => Some(
                self.authorize(parts, scope)
                    .await
                    .map_err(ApiError::into_response)?,
            ),
            (_, None) => None,
        };
        Ok(Admitted { route, principal })
    }

    /// The answer to an admitted request whose body is over
    /// [`Limits::max_body_bytes`], and so was not read.
    pub fn payload_too_large(&self) -> Response<Bytes> {
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

    /// Answers one request: [`Api::admit`], then [`Api::handle_admitted`].
    pub async fn handle(&self, req: Request<Bytes>) -> Response<Bytes> {
        let (parts, body) = req.into_parts();
        match self.admit(&parts).await {
            Ok(admitted) => {
                self.handle_admitted(admitted, Request::from_parts(parts, body))
                    .await
            }
            Err(refused) => refused,
        }
    }

    /// Answers a request that [`Api::admit`] let through.
    pub async fn handle_admitted(
        &self,
        admitted: Admitted,
        req: Request<Bytes>,
    ) -> Response<Bytes> {
        let (parts, body) = req.into_parts();
        let Admitted { route, principal } = admitted;
        let result = match (route, principal) {
            (Route::Index, _) => Ok(html(INDEX_HTML)),
            (Route::Health, _) => Ok(self.health().await),
            (Route::OpenApi, _) => Ok(raw_json(StatusCode::OK, OPENAPI_JSON)),
            (Route::Ingest, Some(principal)) => self.ingest(&parts, &principal, body).await,
            (Route::FindEvents, Some(p)) => self.find_events(&parts, p.query_app()).await,
            (Route::SessionEvents(session), Some(p)) => {
                self.session_events(&parts, &session, p.query_app()).await
            }
            (Route::FindErrors, Some(p)) => self.find_errors(&parts, p.query_app()).await,
            (Route::Segment(call), principal) => {
                Ok(segment::handle(self, &parts, call, principal, body).await)
            }
            // Admitted without a principal: only public routes are.
            (_, None) => Err(ApiError::Forbidden),
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
                    // Still up (reads are served), but some writes fail.
                    let fault = body.as_object_mut().and_then(|o| o.remove(DEGRADED));
                    if let Some(reason) = fault {
                        body["status"] = DEGRADED.into();
                        body["reason"] = reason;
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
        principal: &Principal,
        body: Bytes,
    ) -> Result<Response<Bytes>, ApiError> {
        check_content_type(parts)?;
        let body = encoding::decoded_body(parts, body, self.limits().max_body_bytes)?;
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
        app: Option<&str>,
    ) -> Result<Response<Bytes>, ApiError> {
        let store = self.events.as_ref().ok_or_else(queries_not_served)?;
        let session = query::session_id_in_path(session)?;
        let params = query::Params::parse(parts.uri.query(), &["limit", "cursor"])?;
        let kind = query::SESSION_CURSOR;
        let page = params.page(kind)?;
        let found = store
            .session_events(&session, app, page)
            .await
            .map_err(|e| unavailable("the event store", &e, self.retry_after_secs))?;
        Ok(page_response("events", found, kind))
    }

    async fn find_events(
        &self,
        parts: &http::request::Parts,
        app: Option<&str>,
    ) -> Result<Response<Bytes>, ApiError> {
        let store = self.events.as_ref().ok_or_else(queries_not_served)?;
        let params = query::Params::parse(
            parts.uri.query(),
            &["category", "from", "to", "limit", "cursor"],
        )?;
        let filter = params.event_filter()?.only_app(app);
        let kind = query::EVENTS_CURSOR;
        let page = params.page(kind)?;
        if let Some(warning) = filter.reversed_range() {
            return Ok(empty_page("events", &warning));
        }
        let found = store
            .find_events(&filter, page)
            .await
            .map_err(|e| unavailable("the event store", &e, self.retry_after_secs))?;
        Ok(page_response("events", found, kind))
    }

    async fn find_errors(
        &self,
        parts: &http::request::Parts,
        app: Option<&str>,
    ) -> Result<Response<Bytes>, ApiError> {
        let store = self.errors.as_ref().ok_or_else(queries_not_served)?;
        let params = query::Params::parse(
            parts.uri.query(),
            &["code", "from", "to", "limit", "cursor"],
        )?;
        let filter = params.error_filter()?.only_app(app);
        let kind = query::ERRORS_CURSOR;
        let page = params.page(kind)?;
        if let Some(warning) = filter.reversed_range() {
            return Ok(empty_page("errors", &warning));
        }
        let found = store
            .find_errors(&filter, page)
            .await
            .map_err(|e| unavailable("the error store", &e, self.retry_after_secs))?;
        Ok(page_response("errors", found, kind))
    }
}

/// The answer to a query whose range is empty because `from` is after `to`:
/// no page to fetch, and a `warning` that says why (the cursor, if any, was
/// checked all the same).
fn empty_page(name: &str, warning: &str) -> Response<Bytes> {
    json_response(
        StatusCode::OK,
        &json!({name: [], "next_cursor": null, "warning": warning}),
    )
}

fn check_content_type(parts: &http::request::Parts) -> Result<(), ApiError> {
    match media_type(parts) {
        None => Ok(()),
        Some((essence, _)) if is_json(&essence) => Ok(()),
        Some((_, text)) => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!(
                "Content-Type {text:?} is not JSON; send the body as application/json (or leave Content-Type out)"
            ),
        )),
    }
}

/// The request's `Content-Type`, if any: its essence (lower case, without
/// parameters) and the header as sent.
pub(super) fn media_type(parts: &http::request::Parts) -> Option<(String, String)> {
    let value = parts.headers.get(header::CONTENT_TYPE)?;
    let text = value.to_str().unwrap_or("<not text>").to_owned();
    let essence = text
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    Some((essence, text))
}

/// `application/json`, or any `application/*+json`.
pub(super) fn is_json(essence: &str) -> bool {
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}
