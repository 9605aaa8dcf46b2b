//! The ingest Lambda's glue: API Gateway (REST) request in, the shared
//! [`Api::handle`] answer out. Nothing is decided here that `eye serve` does
//! not decide the same way.

use std::collections::HashMap;

use bytes::Bytes;
use eye_shared::api::{Api, GatewayIdentity};
use eye_shared::ports::{Principal, Reach, Scope};
use lambda_http::request::RequestContext;
use lambda_http::{Body, Request, RequestExt, Response};

/// Parses the `apiKeyId → app` maps (JSON objects) given in the environment.
/// API Gateway has checked the key; this only names its app. Keys behind API
/// Gateway may only ingest: queries are served from DynamoDB to operators.
pub fn gateway_keys(maps: &[Option<&str>]) -> Result<HashMap<String, Principal>, String> {
    let mut keys = HashMap::new();
    for json in maps.iter().flatten().filter(|j| !j.trim().is_empty()) {
        let map: HashMap<String, String> = serde_json::from_str(json)
            .map_err(|e| format!("an API key map is not a JSON object of strings: {e}"))?;
        for (id, app) in map {
            let principal = Principal {
                key_id: id.clone(),
                app,
                scopes: vec![Scope::Ingest],
                reach: Reach::AllApps,
            };
            keys.insert(id, principal);
        }
    }
    Ok(keys)
}

/// Answers one API Gateway request with the shared handler.
pub async fn handle(api: &Api, req: Request) -> Response<Body> {
    let (api_key_id, stage) = match req.request_context_ref() {
        Some(RequestContext::ApiGatewayV1(ctx)) => {
            (ctx.identity.api_key_id.clone(), ctx.stage.clone())
        }
        _ => (None, None),
    };
    let (mut parts, body) = req.into_parts();
    // lambda_http puts the stage in front of the path ("/Prod/v1/events"); the
    // routes do not know stages.
    if let Some(stage) = stage.filter(|s| s != "$default") {
        let prefix = format!("/{stage}");
        let path = parts.uri.path();
        if let Some(rest) = path.strip_prefix(&prefix).filter(|r| r.starts_with('/')) {
            let rebuilt = match parts.uri.query() {
                Some(q) => format!("{rest}?{q}"),
                None => rest.to_owned(),
            };
            if let Ok(uri) = rebuilt.parse() {
                parts.uri = uri;
            }
        }
    }
    parts.extensions.insert(GatewayIdentity { api_key_id });
    let body = match body {
        Body::Empty => Bytes::new(),
        Body::Text(text) => Bytes::from(text),
        Body::Binary(bytes) => Bytes::from(bytes),
        _ => Bytes::new(),
    };
    let response = api.handle(http::Request::from_parts(parts, body)).await;
    response.map(|bytes| match String::from_utf8(bytes.to_vec()) {
        Ok(text) => Body::Text(text),
        Err(e) => Body::Binary(e.into_bytes()),
    })
}
