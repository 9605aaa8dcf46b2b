//! API keys: create, list, revoke and verify. Only each secret's hash is
//! stored; the key format and the check are the domain's
//! ([`crate::domain::api_key`]).

use std::time::{Duration, Instant};

use async_trait::async_trait;
use rusqlite::{OptionalExtension, params};

use super::schema::{Db, connect};
use super::{Sqlite, failed, lock};
use crate::domain::Timestamp;
use crate::domain::api_key::{self, ApiKey, NewKey};
use crate::ports::{BackendError, KeyStore, Principal, Reach, Scope};

#[derive(Clone)]
pub(super) struct CachedKey {
    app: String,
    scopes: Vec<Scope>,
    reach: Reach,
    secret_hash: Vec<u8>,
    revoked: bool,
}

/// How long a verified key is trusted from memory before it is read again
/// (so `eye keys revoke` takes effect within this time).
const KEY_CACHE_TTL: Duration = Duration::from_secs(2);

impl Sqlite {
    /// Creates a key for `app` with `scopes`, whose queries read what `reach`
    /// says, returning the key in clear. Only its SHA-256 is stored.
    pub fn create_key(
        &self,
        app: &str,
        scopes: &[Scope],
        reach: Reach,
    ) -> Result<String, BackendError> {
        let conn = connect(&self.inner.path, Db::Store, true).map_err(failed)?;
        let mut random = [0u8; api_key::ID_BYTES + api_key::SECRET_BYTES];
        getrandom::fill(&mut random).map_err(failed)?;
        let new = NewKey::from_random(&random);
        let scopes: Vec<&str> = scopes.iter().map(|s| s.as_str()).collect();
        conn.execute(
            "INSERT INTO api_keys (id, app, scopes, own_app_only, secret_hash, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                new.id,
                app,
                scopes.join(","),
                reach == Reach::OwnApp,
                new.secret_hash,
                Timestamp::now().to_rfc3339()
            ],
        )
        .map_err(failed)?;
        Ok(new.key)
    }

    /// Every key, without secrets.
    pub fn list_keys(&self) -> Result<Vec<KeyInfo>, BackendError> {
        let conn = connect(&self.inner.path, Db::Store, true).map_err(failed)?;
        let mut stmt = conn
            .prepare("SELECT id, app, scopes, own_app_only, created_at, revoked_at FROM api_keys ORDER BY created_at, id")
            .map_err(failed)?;
        let rows = stmt
            .query_map([], |r| {
                Ok(KeyInfo {
                    id: r.get(0)?,
                    app: r.get(1)?,
                    scopes: r
                        .get::<_, String>(2)?
                        .split(',')
                        .filter_map(Scope::parse)
                        .collect(),
                    own_app_only: r.get(3)?,
                    created_at: r.get(4)?,
                    revoked_at: r.get(5)?,
                })
            })
            .map_err(failed)?;
        rows.collect::<Result<_, _>>().map_err(failed)
    }

    /// Revokes a key by its id (the part after `eye_`) or the whole key.
    /// Returns whether a live key was revoked.
    pub fn revoke_key(&self, id_or_key: &str) -> Result<bool, BackendError> {
        let id = api_key::key_id(id_or_key);
        let conn = connect(&self.inner.path, Db::Store, true).map_err(failed)?;
        let n = conn
            .execute(
                "UPDATE api_keys SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
                params![id, Timestamp::now().to_rfc3339()],
            )
            .map_err(failed)?;
        lock(&self.inner.keys).remove(id);
        Ok(n > 0)
    }

    /// Whether any live key exists.
    pub fn has_keys(&self) -> Result<bool, BackendError> {
        let conn = connect(&self.inner.path, Db::Store, true).map_err(failed)?;
        conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM api_keys WHERE revoked_at IS NULL)",
            [],
            |r| r.get(0),
        )
        .map_err(failed)
    }
}

/// An API key's public facts.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct KeyInfo {
    /// The key's public id.
    pub id: String,
    /// Its application.
    pub app: String,
    /// What it allows.
    #[serde(serialize_with = "scope_names")]
    pub scopes: Vec<Scope>,
    /// Whether its queries read only its own app's data.
    pub own_app_only: bool,
    /// When it was made.
    pub created_at: String,
    /// When it was revoked, if it was.
    pub revoked_at: Option<String>,
}

fn scope_names<S: serde::Serializer>(scopes: &[Scope], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(scopes.iter().map(|sc| sc.as_str()))
}

#[async_trait]
impl KeyStore for Sqlite {
    async fn verify(&self, presented: &str) -> Result<Option<Principal>, BackendError> {
        let Some(presented) = ApiKey::parse(presented) else {
            return Ok(None);
        };
        let id = presented.id;
        let cached = lock(&self.inner.keys)
            .get(id)
            .filter(|(_, at)| at.elapsed() < KEY_CACHE_TTL)
            .map(|(k, _)| k.clone());
        let key = match cached {
            Some(k) => Some(k),
            None => {
                let id_owned = id.to_owned();
                let found = self
                    .read(move |conn| {
                        conn.query_row(
                            "SELECT app, scopes, own_app_only, secret_hash, revoked_at IS NOT NULL FROM api_keys WHERE id = ?1",
                            [id_owned],
                            |r| {
                                Ok(CachedKey {
                                    app: r.get(0)?,
                                    scopes: r.get::<_, String>(1)?.split(',').filter_map(Scope::parse).collect(),
                                    reach: if r.get(2)? { Reach::OwnApp } else { Reach::AllApps },
                                    secret_hash: r.get(3)?,
                                    revoked: r.get(4)?,
                                })
                            },
                        )
                        .optional()
                    })
                    .await?;
                if let Some(k) = &found {
                    lock(&self.inner.keys).insert(id.to_owned(), (k.clone(), Instant::now()));
                }
                found
            }
        };
        Ok(key.and_then(|k| {
            (presented.matches(&k.secret_hash) && !k.revoked).then(|| Principal {
                key_id: id.to_owned(),
                app: k.app,
                scopes: k.scopes,
                reach: k.reach,
            })
        }))
    }
}
