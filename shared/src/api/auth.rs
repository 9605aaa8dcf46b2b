//! Who is calling. Locally, the `x-api-key` header is checked against the key
//! store. Behind API Gateway, the gateway has already checked the key; its id
//! arrives in the request context and is mapped to an app by configuration.

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
}

/// Checks the `x-api-key` header against a [`KeyStore`].
pub struct ApiKeyAuth(pub Arc<dyn KeyStore>);

#[async_trait]
impl Authenticator for ApiKeyAuth {
    async fn authenticate(
        &self,
        parts: &http::request::Parts,
    ) -> Result<Option<Principal>, BackendError> {
        let Some(key) = parts.headers.get("x-api-key").and_then(|v| v.to_str().ok()) else {
            return Ok(None);
        };
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
