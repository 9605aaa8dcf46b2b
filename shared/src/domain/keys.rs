//! Key encoding, shared by every store.
//!
//! An event is keyed by `session_id` and `ts_seq = "<timestamp>#<seq>"`:
//! - `<timestamp>` is the fixed-width UTC form of [`Timestamp::to_rfc3339`], so the
//!   byte order of keys is time order;
//! - `<seq>` is 32 hex digits (128 bits) derived only from the app and the event's
//!   `event_id`. The same event therefore always gets the same key, on a queue
//!   redelivery and on a client's retry alike, and a conditional put (or
//!   `INSERT OR IGNORE`) stores it once. Different events get different keys.
//!
//! How `seq` is derived keeps the send order of events that share a timestamp:
//! - an `event_id` that is a UUID keeps its own bit order (UUIDv7 ids, like the
//!   ones the client library makes, are time-ordered); its lowest 32 bits, which
//!   are random in every UUIDv7 layout, are mixed with the app so two apps never
//!   share a key;
//! - when the client sent no `event_id`, ingest makes one (see
//!   [`generated_event_id`]) whose top 16 bits are the event's position in the
//!   request;
//! - any other `event_id` is hashed with the app (SHA-256).

use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::time::{TIMESTAMP_LEN, Timestamp};

/// The 128-bit tie-breaker of an event's sort key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Seq(pub u128);

/// Length of a `ts_seq` key.
pub const TS_SEQ_LEN: usize = TIMESTAMP_LEN + 1 + 32;

impl Seq {
    /// The seq of the event `event_id` sent by `app`.
    pub fn derive(app: &str, event_id: &str) -> Seq {
        match Uuid::try_parse(event_id) {
            Ok(uuid) => Seq(uuid.as_u128() ^ u128::from(app_mix(app))),
            Err(_) => {
                let digest = sha256(&[b"eye/event-id/v1", app.as_bytes(), event_id.as_bytes()]);
                Seq(u128::from_be_bytes(first_16(&digest)))
            }
        }
    }

    /// 32 lowercase hex digits.
    pub fn to_hex(self) -> String {
        format!("{:032x}", self.0)
    }

    /// The write shard among `shards` (at least 1) for the AWS indexes. Spread
    /// evenly because the low bits of every seq are random or hashed.
    pub fn shard(self, shards: u16) -> u16 {
        (self.0 as u32 % u32::from(shards.max(1))) as u16
    }
}

/// The sort key `"<timestamp>#<seq>"`.
pub fn ts_seq(timestamp: Timestamp, seq: Seq) -> String {
    let mut key = String::with_capacity(TS_SEQ_LEN);
    timestamp.write_rfc3339(&mut key);
    key.push('#');
    key.push_str(&seq.to_hex());
    key
}

/// The smallest key at or after `t`: for inclusive lower bounds of range queries.
pub fn time_floor(t: Timestamp) -> String {
    let mut key = t.to_rfc3339();
    key.push('#');
    key
}

/// The event id ingest gives an event that came without one: a UUID (version 8)
/// made of the event's position in the request (16 bits) and a hash of the app
/// and the event exactly as sent. A client that resends the same request gets the
/// same ids, so even a naive retry is stored once.
pub fn generated_event_id(app: &str, index: usize, raw_event: &str) -> String {
    let digest = sha256(&[b"eye/generated-id/v1", app.as_bytes(), raw_event.as_bytes()]);
    let mut bytes = first_16(&digest);
    let position = u16::try_from(index).unwrap_or(u16::MAX).to_be_bytes();
    bytes[0] = position[0];
    bytes[1] = position[1];
    uuid::Builder::from_custom_bytes(bytes)
        .into_uuid()
        .hyphenated()
        .to_string()
}

fn app_mix(app: &str) -> u32 {
    let digest = sha256(&[b"eye/app/v1", app.as_bytes()]);
    u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
}

fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    for part in parts {
        // Length-prefixed, so ("ab","c") and ("a","bc") differ.
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part);
    }
    hasher.finalize().into()
}

fn first_16(digest: &[u8; 32]) -> [u8; 16] {
    let mut out = [0u8; 16];
    out.copy_from_slice(&digest[..16]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        Timestamp::parse(s).unwrap()
    }

    #[test]
    fn key_is_fixed_width_and_time_ordered() {
        let seqs = [Seq(0), Seq(u128::MAX), Seq::derive("a", "x")];
        let times = [
            ts("1999-12-31 23:59:59.999999"),
            ts("2021-01-01 09:15:27"),
            ts("2021-01-01 09:15:27.000001"),
        ];
        let mut keys = Vec::new();
        for t in times {
            for s in seqs {
                let k = ts_seq(t, s);
                assert_eq!(k.len(), TS_SEQ_LEN, "{k}");
                keys.push((t, k));
            }
        }
        for (ta, ka) in &keys {
            for (tb, kb) in &keys {
                if ta < tb {
                    assert!(ka < kb, "{ka} should sort before {kb}");
                }
            }
        }
    }

    #[test]
    fn time_floor_bounds_every_key_of_that_instant() {
        let t = ts("2021-01-01 09:15:27");
        let floor = time_floor(t);
        assert!(floor <= ts_seq(t, Seq(0)));
        assert!(ts_seq(t.add_micros(-1), Seq(u128::MAX)) < floor);
    }

    #[test]
    fn seq_is_deterministic_and_app_scoped() {
        assert_eq!(Seq::derive("shop", "abc"), Seq::derive("shop", "abc"));
        assert_ne!(Seq::derive("shop", "abc"), Seq::derive("blog", "abc"));
        assert_ne!(Seq::derive("shop", "abc"), Seq::derive("shop", "abd"));
        let uuid = "0190c3a2-8b1e-7c3d-9f00-123456789abc";
        assert_eq!(Seq::derive("shop", uuid), Seq::derive("shop", uuid));
        assert_ne!(Seq::derive("shop", uuid), Seq::derive("blog", uuid));
        // Case and hyphens do not make another UUID.
        assert_eq!(
            Seq::derive("shop", uuid),
            Seq::derive("shop", &uuid.to_uppercase().replace('-', ""))
        );
    }

    #[test]
    fn uuid_v7_ids_keep_creation_order() {
        let ids: Vec<Uuid> = (0..2000).map(|_| Uuid::now_v7()).collect();
        let seqs: Vec<Seq> = ids
            .iter()
            .map(|u| Seq::derive("shop", &u.to_string()))
            .collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn generated_ids_keep_request_order_and_repeat_on_resend() {
        let raw = r#"{"session_id":"s","category":"c","name":"n","data":{},"timestamp":"2021-01-01 00:00:00"}"#;
        let ids: Vec<String> = (0..500)
            .map(|i| generated_event_id("shop", i, raw))
            .collect();
        let seqs: Vec<Seq> = ids.iter().map(|id| Seq::derive("shop", id)).collect();
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "position orders identical events"
        );
        assert_eq!(ids[7], generated_event_id("shop", 7, raw));
        assert_ne!(ids[7], generated_event_id("blog", 7, raw));
        assert_ne!(
            ids[7],
            generated_event_id("shop", 7, &raw.replace("\"n\"", "\"m\""))
        );
        assert!(Uuid::try_parse(&ids[0]).is_ok());
        assert_eq!(Uuid::try_parse(&ids[0]).unwrap().get_version_num(), 8);
    }

    #[test]
    fn shards_are_spread_and_in_range() {
        let mut counts = [0u32; 4];
        for i in 0..4000 {
            let s = Seq::derive("shop", &format!("event-{i}")).shard(4);
            counts[usize::from(s)] += 1;
        }
        assert!(
            counts.iter().all(|&c| (800..1200).contains(&c)),
            "{counts:?}"
        );
        assert_eq!(Seq(12345).shard(1), 0);
        assert_eq!(Seq(12345).shard(0), 0);
    }
}
