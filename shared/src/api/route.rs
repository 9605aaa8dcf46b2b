//! The routes: which handler a method and path reach, and what key scope each
//! needs. Decided from the request line alone, before any body is read.

use http::{Method, StatusCode};

use super::error::{ApiError, method_not_allowed};
use crate::domain::segment::SegmentCall;
use crate::ports::Scope;

/// Where a request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Route {
    /// `GET /`: the landing page.
    Index,
    /// `GET /health`.
    Health,
    /// `GET /openapi.json`.
    OpenApi,
    /// `POST /v1/events`.
    Ingest,
    /// `GET /v1/events`.
    FindEvents,
    /// `GET /v1/sessions/{id}/events`, with the id as it is in the path.
    SessionEvents(String),
    /// `GET /v1/errors`.
    FindErrors,
    /// `POST /v1/batch`, `/v1/track`, ...: Segment's tracking API.
    Segment(SegmentCall),
}

impl Route {
    /// The route of `method` and `path`, or the 404/405 answer.
    pub(super) fn resolve(method: &Method, path: &str) -> Result<Route, ApiError> {
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        match (segments.as_slice(), method) {
            ([""], &Method::GET) => Ok(Route::Index),
            (["health"], &Method::GET) => Ok(Route::Health),
            (["openapi.json"], &Method::GET) => Ok(Route::OpenApi),
            (["v1", "events"], &Method::POST) => Ok(Route::Ingest),
            (["v1", "events"], &Method::GET) => Ok(Route::FindEvents),
            (["v1", "sessions", session, "events"], &Method::GET) => {
                Ok(Route::SessionEvents((*session).to_owned()))
            }
            (["v1", "errors"], &Method::GET) => Ok(Route::FindErrors),
            (
                [""]
                | ["health"]
                | ["openapi.json"]
                | ["v1", "errors"]
                | ["v1", "sessions", _, "events"],
                _,
            ) => Err(method_not_allowed("GET")),
            (["v1", "events"], _) => Err(method_not_allowed("GET, POST")),
            (["v1", name], method) if SegmentCall::from_path(name).is_some() => {
                match (SegmentCall::from_path(name), method) {
                    (Some(call), &Method::POST) => Ok(Route::Segment(call)),
                    _ => Err(method_not_allowed("POST")),
                }
            }
            _ => Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no route for {method} {path}; see GET /openapi.json"),
            )),
        }
    }

    /// The scope a key needs here; `None` for the public documents.
    pub(super) fn scope(&self) -> Option<Scope> {
        match self {
            Route::Index | Route::Health | Route::OpenApi => None,
            Route::Ingest | Route::Segment(_) => Some(Scope::Ingest),
            Route::FindEvents | Route::SessionEvents(_) | Route::FindErrors => Some(Scope::Query),
        }
    }
}
