//! API keys: their format `eye_<id>_<secret>`, what a store keeps (the
//! secret's SHA-256, never the secret), and the constant-time check.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// What every key starts with.
pub const PREFIX: &str = "eye_";
/// Random bytes of a key's public id (12 hex digits).
pub const ID_BYTES: usize = 6;
/// Random bytes of a key's secret (64 hex digits).
pub const SECRET_BYTES: usize = 32;

/// A presented key, split into its parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiKey<'a> {
    /// The public id, as `eye keys list` shows it.
    pub id: &'a str,
    /// The secret.
    pub secret: &'a str,
}

impl<'a> ApiKey<'a> {
    /// Splits `eye_<id>_<secret>`; `None` for anything else.
    pub fn parse(presented: &'a str) -> Option<Self> {
        let rest = presented.strip_prefix(PREFIX)?;
        let (id, secret) = rest.split_once('_')?;
        (id.len() == ID_BYTES * 2 && secret.len() == SECRET_BYTES * 2)
            .then_some(ApiKey { id, secret })
    }

    /// Whether the secret is the one whose hash is `stored_hash`, compared in
    /// constant time.
    pub fn matches(&self, stored_hash: &[u8]) -> bool {
        hash_secret(self.secret).ct_eq(stored_hash).into()
    }
}

/// The id of a key given by its id or as the whole key (`eye keys revoke`).
pub fn key_id(id_or_key: &str) -> &str {
    ApiKey::parse(id_or_key).map_or(id_or_key, |k| k.id)
}

/// What a store keeps of a secret.
pub fn hash_secret(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

/// A key made from random bytes; the caller supplies the randomness, so the
/// domain stays pure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewKey {
    /// The public id.
    pub id: String,
    /// The whole key, to show once.
    pub key: String,
    /// What the store keeps.
    pub secret_hash: Vec<u8>,
}

impl NewKey {
    /// A key from `ID_BYTES + SECRET_BYTES` random bytes.
    pub fn from_random(random: &[u8; ID_BYTES + SECRET_BYTES]) -> Self {
        let (id, secret) = random.split_at(ID_BYTES);
        let (id, secret) = (hex(id), hex(secret));
        NewKey {
            key: format!("{PREFIX}{id}_{secret}"),
            secret_hash: hash_secret(&secret),
            id,
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_key_parses_and_matches_only_its_own_hash() {
        let made = NewKey::from_random(&[7; ID_BYTES + SECRET_BYTES]);
        let key = ApiKey::parse(&made.key).unwrap();
        assert_eq!(key.id, made.id);
        assert_eq!(key.id, "070707070707");
        assert!(key.matches(&made.secret_hash));
        let other = NewKey::from_random(&[8; ID_BYTES + SECRET_BYTES]);
        assert!(!key.matches(&other.secret_hash));
        assert!(
            !made.key.contains(&hex(&made.secret_hash)),
            "the key is not its hash"
        );
    }

    #[test]
    fn only_the_exact_format_parses() {
        let good = format!("eye_{}_{}", "a".repeat(12), "b".repeat(64));
        assert!(ApiKey::parse(&good).is_some());
        for bad in [
            String::new(),
            "eye_".into(),
            format!("key_{}_{}", "a".repeat(12), "b".repeat(64)),
            format!("eye_{}_{}", "a".repeat(11), "b".repeat(64)),
            format!("eye_{}_{}", "a".repeat(12), "b".repeat(63)),
            format!("eye_{}{}", "a".repeat(12), "b".repeat(64)),
        ] {
            assert_eq!(ApiKey::parse(&bad), None, "{bad:?}");
        }
        assert_eq!(key_id(&good), "a".repeat(12));
        assert_eq!(key_id("abc123"), "abc123");
    }
}
