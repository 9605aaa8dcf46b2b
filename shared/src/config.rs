//! Every default of The Eye, defined once, and how the Lambdas read theirs.
//!
//! `eye`'s flags (clap `default_value_t`), the Lambdas' environment
//! ([`number_from_env`], [`flag_from_env`]), the adapters' settings and the
//! SAM template all take their defaults from here; `shared/tests/template.rs`
//! checks that `template.yaml`'s parameter defaults are these values.

use std::time::Duration;

/// Deliveries of a queue message before it becomes a dead letter: the SQLite
/// queue's limit, and SQS's `maxReceiveCount` in `template.yaml` and
/// `eye bootstrap`.
pub const MAX_ATTEMPTS: u32 = 5;

/// Queued but unprocessed events above which ingest answers 503 (the embedded
/// queue; SQS has no limit of its own).
pub const MAX_BACKLOG_EVENTS: u64 = 2_000_000;

/// Bytes of request bodies waiting for the embedded queue's writer, above which
/// ingest answers 503 at once instead of holding more in memory.
pub const MAX_PENDING_BYTES: usize = 64 * 1024 * 1024;

/// Seconds a timestamp may be ahead of its arrival before it is refused as
/// `timestamp_in_future` (clocks drift).
pub const MAX_SKEW_SECS: u32 = 300;

/// Write shards per DynamoDB index partition key (the stack's `GsiShards`).
pub const GSI_SHARDS: u16 = 4;

/// Days to keep events and error records; this value keeps them forever.
pub const RETENTION_FOREVER: u32 = 0;

/// Requests the local server handles at once; more get 503 at once.
pub const MAX_IN_FLIGHT: usize = 2048;

/// Requests one key may have in flight at once, so that one client cannot
/// take every slot of [`MAX_IN_FLIGHT`].
pub const MAX_IN_FLIGHT_PER_KEY: usize = 1024;

/// Requests in flight whose key is in the body (Segment's `writeKey`), so
/// not checked before the body is read: a pool of their own, so that clients
/// without a key cannot take the slots of [`MAX_IN_FLIGHT`].
pub const MAX_IN_FLIGHT_KEY_IN_BODY: usize = 256;

/// Open connections the local server keeps; past it, a new connection is
/// closed at once and the open ones go on being served.
pub const MAX_CONNECTIONS: usize = 1024;

/// Open connections from one address.
pub const MAX_CONNECTIONS_PER_ADDRESS: usize = 256;

/// Time a client has to send a request's headers, on a new connection and
/// between the requests of a kept-alive one (hyper's `header_read_timeout`,
/// which is both): a silent or idle connection is closed after it.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Time a client has to send a whole request body (at most 1 MiB).
pub const BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// Time a stopping server gives the requests in flight before it exits anyway.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// How long ingest waits for the queue before answering 503.
pub const ENQUEUE_TIMEOUT: Duration = Duration::from_secs(5);

/// The `Retry-After` of every 503, in seconds.
pub const RETRY_AFTER_SECS: u32 = 1;

/// How often the embedded store moves new events into its session index
/// (queries find them before that too).
pub const SESSION_INDEX_EVERY: Duration = Duration::from_secs(5);

/// A retention in days as the stores take it: `None` keeps forever.
pub fn retention(days: u32) -> Option<u32> {
    (days != RETENTION_FOREVER).then_some(days)
}

/// A setting that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{name}={value:?} is not {expected}")]
pub struct ConfigError {
    /// The environment variable.
    pub name: String,
    /// What it held.
    pub value: String,
    /// What it should hold.
    pub expected: &'static str,
}

/// Whether a flag's text means "on": anything but empty, `0`, `false`, `f`,
/// `no`, `n` or `off` (any case). This is clap's rule for a boolean flag set
/// from the environment, so `EYE_STRICT_TYPES` means the same to `eye serve`
/// and to the processor Lambda.
pub fn flag(value: &str) -> bool {
    let v = value.trim().to_ascii_lowercase();
    !matches!(v.as_str(), "" | "0" | "false" | "f" | "no" | "n" | "off")
}

/// A boolean flag from the environment; unset is off.
pub fn flag_from_env(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| flag(&v))
}

/// A number from the environment, or `default` when unset or empty.
pub fn number_from_env<T: std::str::FromStr>(name: &str, default: T) -> Result<T, ConfigError> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v.trim().parse().map_err(|_| ConfigError {
            name: name.to_owned(),
            value: v,
            expected: "a valid number",
        }),
        _ => Ok(default),
    }
}

/// A required text setting from the environment.
pub fn text_from_env(name: &str) -> Result<String, ConfigError> {
    std::env::var(name)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .ok_or_else(|| ConfigError {
            name: name.to_owned(),
            value: String::new(),
            expected: "set",
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_follow_clap_falsey_rule() {
        for on in ["true", "1", "yes", "TRUE", "on", "anything"] {
            assert!(flag(on), "{on}");
        }
        for off in ["", "0", "false", "False", "f", "no", "n", "off", " false "] {
            assert!(!flag(off), "{off:?}");
        }
    }

    #[test]
    fn zero_days_keeps_forever() {
        assert_eq!(retention(RETENTION_FOREVER), None);
        assert_eq!(retention(30), Some(30));
    }
}
