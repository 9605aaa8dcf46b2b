//! The retry policy: which answers to retry, exponential backoff with full
//! jitter, and `Retry-After`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, Utc};

/// What to do with an HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    /// 2xx: the server has the events.
    Accepted,
    /// 408, 429, 5xx: try again later.
    Retry,
    /// Any other status: a retry would get the same answer.
    Reject,
}

/// Classifies an HTTP status.
pub(crate) fn classify(status: u16) -> Class {
    match status {
        200..=299 => Class::Accepted,
        408 | 429 | 500..=599 => Class::Retry,
        _ => Class::Reject,
    }
}

/// Exponential backoff with full jitter: the delay before retry `n` (1 for the
/// first retry) is uniform in `[0, min(cap, base * 2^(n-1))]`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Backoff {
    pub(crate) base: Duration,
    pub(crate) cap: Duration,
}

impl Backoff {
    /// The largest delay before retry `retry` (1-based).
    pub(crate) fn ceiling(&self, retry: u32) -> Duration {
        let factor = 1u32
            .checked_shl(retry.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// A random delay before retry `retry` (1-based).
    pub(crate) fn delay(&self, retry: u32, rng: &mut Rng) -> Duration {
        let ceiling = u64::try_from(self.ceiling(retry).as_micros()).unwrap_or(u64::MAX);
        Duration::from_micros(rng.below_inclusive(ceiling))
    }
}

/// The wait before the next attempt: the server's `Retry-After` if it gave
/// one (never less), else the jittered backoff.
pub(crate) fn next_delay(backoff: Duration, retry_after: Option<Duration>) -> Duration {
    match retry_after {
        Some(wait) => wait.max(backoff),
        None => backoff,
    }
}

/// Parses a `Retry-After` value: delay seconds, or an HTTP date.
pub(crate) fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = DateTime::parse_from_rfc2822(value).ok()?;
    Some((at.to_utc() - now).to_std().unwrap_or(Duration::ZERO))
}

/// xorshift64*: enough randomness to spread retries, with no dependency.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    /// Seeded from the clock and an address, so two clients started together differ.
    pub(crate) fn from_time() -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let local = 0u8;
        let addr = std::ptr::addr_of!(local) as u64;
        Rng::seeded(nanos ^ addr.rotate_left(32))
    }

    pub(crate) fn seeded(seed: u64) -> Self {
        // splitmix64 step, so that close seeds give unrelated states; never 0.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        Rng(if z == 0 { 0x2545_F491_4F6C_DD1D } else { z })
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform-enough in `0..=max`.
    pub(crate) fn below_inclusive(&mut self, max: u64) -> u64 {
        match max.checked_add(1) {
            Some(bound) => self.next_u64() % bound,
            None => self.next_u64(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: Backoff = Backoff {
        base: Duration::from_millis(100),
        cap: Duration::from_secs(10),
    };

    #[test]
    fn statuses() {
        assert_eq!(classify(202), Class::Accepted);
        for s in [408, 429, 500, 502, 503, 504] {
            assert_eq!(classify(s), Class::Retry, "{s}");
        }
        for s in [301, 400, 401, 403, 404, 413, 415, 422] {
            assert_eq!(classify(s), Class::Reject, "{s}");
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        assert_eq!(B.ceiling(1), Duration::from_millis(100));
        assert_eq!(B.ceiling(2), Duration::from_millis(200));
        assert_eq!(B.ceiling(4), Duration::from_millis(800));
        assert_eq!(B.ceiling(7), Duration::from_millis(6400));
        assert_eq!(B.ceiling(8), Duration::from_secs(10));
        assert_eq!(B.ceiling(40), Duration::from_secs(10));
        assert_eq!(B.ceiling(u32::MAX), Duration::from_secs(10));
    }

    #[test]
    fn jittered_delays_stay_in_bounds_and_spread() {
        let mut rng = Rng::seeded(42);
        for retry in 1..20 {
            let mut min = Duration::MAX;
            let mut max = Duration::ZERO;
            for _ in 0..500 {
                let d = B.delay(retry, &mut rng);
                assert!(d <= B.ceiling(retry), "{d:?} > {:?}", B.ceiling(retry));
                min = min.min(d);
                max = max.max(d);
            }
            // Full jitter: the delays cover most of [0, ceiling].
            assert!(min < B.ceiling(retry) / 10, "{retry}: min {min:?}");
            assert!(max > B.ceiling(retry) * 9 / 10, "{retry}: max {max:?}");
        }
        assert_ne!(Rng::seeded(1).next_u64(), Rng::seeded(2).next_u64());
        assert_eq!(Rng::seeded(0).below_inclusive(0), 0);
    }

    #[test]
    fn retry_after_is_honoured() {
        let now = DateTime::parse_from_rfc3339("2015-10-21T07:28:00Z")
            .unwrap()
            .to_utc();
        assert_eq!(parse_retry_after("1", now), Some(Duration::from_secs(1)));
        assert_eq!(
            parse_retry_after(" 120 ", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:27:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-1", now), None);
        assert_eq!(parse_retry_after("", now), None);

        let small = Duration::from_millis(30);
        assert_eq!(
            next_delay(small, Some(Duration::from_secs(1))),
            Duration::from_secs(1)
        );
        assert_eq!(
            next_delay(Duration::from_secs(3), Some(Duration::from_secs(1))),
            Duration::from_secs(3)
        );
        assert_eq!(next_delay(small, None), small);
    }
}
