//! Counters, updated with atomics by `track` and the background task.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use serde::Serialize;

/// A snapshot of the client's counters, from [`Client::stats`](crate::Client::stats).
/// Every count is of events, except `requests`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Stats {
    /// Events the server acknowledged (202).
    pub sent: u64,
    /// Event sends that were retries: a batch of 100 events sent three times
    /// adds 200.
    pub retried: u64,
    /// Events that failed for good (refused by the server, or retries
    /// exhausted), each reported to the failure callback.
    pub failed: u64,
    /// Events `track` refused because the queue was full or the client was
    /// shut down.
    pub dropped: u64,
    /// Events `track` refused because they break the server's rules (field
    /// lengths, a non-object `data`, more than 32 KiB of JSON).
    pub invalid: u64,
    /// HTTP requests made, retries included.
    pub requests: u64,
    /// Events accepted by `track` and not yet acknowledged or failed: in the
    /// queue, or in a request in flight or waiting for a retry.
    pub queue_depth: usize,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) sent: AtomicU64,
    pub(crate) retried: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) dropped: AtomicU64,
    pub(crate) invalid: AtomicU64,
    pub(crate) requests: AtomicU64,
    pub(crate) queued: AtomicUsize,
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64, n: usize) {
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> Stats {
        Stats {
            sent: self.sent.load(Ordering::Relaxed),
            retried: self.retried.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            invalid: self.invalid.load(Ordering::Relaxed),
            requests: self.requests.load(Ordering::Relaxed),
            queue_depth: self.queued.load(Ordering::Relaxed),
        }
    }
}
