//! Write health: whether each file's last commit failed (a full disk, an I/O
//! error), for `/health`; and warnings that a persistent fault would repeat
//! many times a second, limited to one per interval.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::lock;

/// The last commit's failure of one file's writer, or `None` if it succeeded.
#[derive(Clone, Default)]
pub(super) struct WriteHealth(Arc<Mutex<Option<String>>>);

impl WriteHealth {
    /// Records how the latest commit went.
    pub(super) fn record(&self, failure: Option<&dyn std::fmt::Display>) {
        *lock(&self.0) = failure.map(|e| e.to_string());
    }

    /// Why writes fail now, if they do.
    pub(super) fn failing(&self) -> Option<String> {
        lock(&self.0).clone()
    }
}

/// How often a repeated warning is logged at most.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// A warning logged at most once per [`WARN_EVERY`], with how many times it
/// was suppressed meanwhile.
pub(super) struct RateLimitedWarning {
    what: &'static str,
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLimitedWarning {
    pub(super) const fn new(what: &'static str) -> Self {
        Self {
            what,
            last: None,
            suppressed: 0,
        }
    }

    /// Logs `error` now, or counts it if the last one was logged recently.
    /// Returns whether it was logged.
    pub(super) fn warn(&mut self, error: &dyn std::fmt::Display) -> bool {
        self.warn_at(error, Instant::now())
    }

    fn warn_at(&mut self, error: &dyn std::fmt::Display, now: Instant) -> bool {
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < WARN_EVERY)
        {
            self.suppressed += 1;
            return false;
        }
        tracing::warn!(
            error = %error,
            repeated = self.suppressed,
            "{} failed; it is retried (repeats are logged at most every {}s)",
            self.what,
            WARN_EVERY.as_secs()
        );
        self.last = Some(now);
        self.suppressed = 0;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_warning_is_logged_once_per_interval() {
        let mut w = RateLimitedWarning::new("a checkpoint");
        let t0 = Instant::now();
        let logged: Vec<bool> = (0..200)
            .map(|i| w.warn_at(&"disk full", t0 + Duration::from_millis(50 * i)))
            .collect();
        // 200 failures over 10 s: the first, then one more at 10 s.
        assert_eq!(logged.iter().filter(|l| **l).count(), 1);
        assert!(w.warn_at(&"disk full", t0 + WARN_EVERY));
        assert_eq!(w.suppressed, 0);
    }

    #[test]
    fn health_follows_the_latest_commit() {
        let h = WriteHealth::default();
        assert_eq!(h.failing(), None);
        h.record(Some(&"database or disk is full"));
        assert_eq!(h.failing().as_deref(), Some("database or disk is full"));
        h.record(None);
        assert_eq!(h.failing(), None);
    }
}
