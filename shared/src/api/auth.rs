//! Who is calling. Locally, the key is checked against the key store; it
//! comes in the `x-api-key` header or as the user name of HTTP Basic (as the
//! Segment and RudderStack SDKs send their write key), or, on the Segment
//! endpoints, as `writeKey` in the body. Behind API Gateway, the gateway has
//! already checked the key; its id arrives in the request context and is
//! mapped to an app by configuration.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;

use crate::ports::{BackendError, KeyStore, Principal};

/// Identifies the caller of a request.
#[async_trait]
pub trait Authenticator: Send + Sync {
    /// The caller, or `None` when the request carries no valid credentials.
    async fn authenticate(
        &self,
        parts: &http::request::Parts,
    ) -> Result<Option<Principal>, BackendError>;

    /// The caller of a key sent in a request's body (Segment's `writeKey`),
    /// or `None` when it is not valid, or this authenticator cannot check
    /// keys it is handed (API Gateway's checks only headers).
    async fn authenticate_key(&self, key: &str) -> Result<Option<Principal>, BackendError> {
        let _ = key;
        Ok(None)
    }
}

/// Whether the request's head carries a key at all (`x-api-key` or an
/// `Authorization` header).
pub(super) fn has_credentials(parts: &http::request::Parts) -> bool {
    parts.headers.contains_key("x-api-key")
        || parts.headers.contains_key(http::header::AUTHORIZATION)
}

/// The key in the request's head: `x-api-key`, else the user name of HTTP
/// Basic (the password is ignored: the SDKs send it empty).
pub(super) fn presented_key(parts: &http::request::Parts) -> Option<String> {
    if let Some(key) = parts.headers.get("x-api-key") {
        return key.to_str().ok().map(|k| k.trim().to_owned());
    }
    let value = parts
        .headers
        .get(http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    use base64::Engine as _;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let user = decoded.split_once(':').map_or(decoded.as_str(), |(u, _)| u);
    Some(user.trim().to_owned())
}

/// Checks the key of a request against a [`KeyStore`].
pub struct ApiKeyAuth(pub Arc<dyn KeyStore>);

#[async_trait]
impl Authenticator for ApiKeyAuth {
    async fn authenticate(
        &self,
        parts: &http::request::Parts,
    ) -> Result<Option<Principal>, BackendError> {
        match presented_key(parts) {
            Some(key) => self.0.verify(&key).await,
            None => Ok(None),
        }
    }

    async fn authenticate_key(&self, key: &str) -> Result<Option<Principal>, BackendError> {
        self.0.verify(key.trim()).await
    }
}

/// The API Gateway identity of a request, put into the request's extensions by
/// the ingest Lambda.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayIdentity {
    /// `requestContext.identity.apiKeyId`.
    pub api_key_id: Option<String>,
}

/// Maps the API Gateway key id to an app. Never reads the app from the body.
pub struct GatewayAuth {
    keys: HashMap<String, Principal>,
}

impl GatewayAuth {
    /// From `apiKeyId → principal` pairs.
    pub fn new(keys: HashMap<String, Principal>) -> Self {
        Self { keys }
    }
}

#[async_trait]
impl Authenticator for GatewayAuth {
    async fn authenticate(
        &self,
        parts: &http::request::Parts,
    ) -> Result<Option<Principal>, BackendError> {
        Ok(parts
            .extensions
            .get::<GatewayIdentity>()
            .and_then(|id| id.api_key_id.as_deref())
            .and_then(|id| self.keys.get(id))
            .cloned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(name: &str, value: &str) -> http::request::Parts {
        let (parts, ()) = http::Request::builder()
            .header(name, value)
            .body(())
            .unwrap()
            .into_parts();
        parts
    }

    #[test]
    fn the_key_comes_from_x_api_key_or_basic_user_name() {
        assert_eq!(
            presented_key(&parts("x-api-key", " eye_k ")).as_deref(),
            Some("eye_k")
        );
        // "eye_k:" and "eye_k" (no colon), base64.
        assert_eq!(
            presented_key(&parts("authorization", "Basic ZXllX2s6")).as_deref(),
            Some("eye_k")
        );
        assert_eq!(
            presented_key(&parts("authorization", "basic ZXllX2s=")).as_deref(),
            Some("eye_k")
        );
        assert_eq!(
            presented_key(&parts("authorization", "Bearer ZXllX2s6")),
            None
        );
        assert_eq!(presented_key(&parts("authorization", "Basic !!!")), None);
        assert!(has_credentials(&parts("authorization", "Basic !!!")));
        assert!(!has_credentials(&parts("content-type", "text/plain")));
    }
}
