//! Redelivery policy: after a queue message fails, wait and deliver it again,
//! or give it up as a dead letter.
//!
//! The embedded queue applies [`RetryPolicy::after_failure`] itself. SQS
//! applies the same count through the queue's `maxReceiveCount` (set from
//! [`crate::config::MAX_ATTEMPTS`]): a message gets at most that many
//! deliveries, then moves to the dead-letter queue, on either backend.

use std::time::Duration;

/// The first wait before a redelivery; each later one doubles it.
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// The longest wait: doubling stops after 8 steps (256 s), under this ceiling.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// What becomes of a message that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redelivery {
    /// Deliver it again after this wait.
    RetryAfter(Duration),
    /// It has had every delivery it may have: move it to the dead letters.
    DeadLetter,
}

/// How many deliveries a message gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Deliveries before a message becomes a dead letter (SQS's `maxReceiveCount`).
    pub max_attempts: u32,
}

impl RetryPolicy {
    /// The decision after a message's `attempts`-th delivery (1 for the first)
    /// failed: exponential backoff (1 s, 2 s, 4 s… 256 s), and a dead letter
    /// once `attempts` reaches `max_attempts`.
    pub fn after_failure(self, attempts: u32) -> Redelivery {
        if attempts >= self.max_attempts {
            return Redelivery::DeadLetter;
        }
        let doubled = FIRST_BACKOFF * (1u32 << attempts.saturating_sub(1).min(8));
        Redelivery::RetryAfter(doubled.min(MAX_BACKOFF))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_one_second_and_stops_growing() {
        let policy = RetryPolicy { max_attempts: 20 };
        let waits: Vec<u64> = (1..=11)
            .map(|n| match policy.after_failure(n) {
                Redelivery::RetryAfter(d) => d.as_secs(),
                Redelivery::DeadLetter => panic!("attempt {n} is not the last"),
            })
            .collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 64, 128, 256, 256, 256]);
    }

    /// SQS with `maxReceiveCount = N` delivers a failing message N times, then
    /// moves it to the DLQ; the embedded queue must do the same.
    #[test]
    fn a_message_gets_max_attempts_deliveries_as_with_sqs_max_receive_count() {
        for max in [1, 2, 5] {
            let policy = RetryPolicy { max_attempts: max };
            let deliveries = (1..)
                .find(|&n| policy.after_failure(n) == Redelivery::DeadLetter)
                .unwrap();
            assert_eq!(deliveries, max, "max_attempts {max}");
        }
    }
}
