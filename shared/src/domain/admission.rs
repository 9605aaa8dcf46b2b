//! Backlog admission: whether the queue takes a request's events, decided in
//! one place. A refusal becomes 503 with `Retry-After` at the HTTP edge, like
//! every other [`crate::ports::BackendError::Busy`].

/// The queue is full: the request was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the queue holds {queued} unprocessed events, its limit is {limit}")]
pub struct Overloaded {
    /// Events queued and not yet processed.
    pub queued: u64,
    /// The limit.
    pub limit: u64,
}

/// Takes `incoming` events into a queue holding `queued`, or refuses them all
/// if that would pass `limit`.
pub fn admit(queued: u64, incoming: u64, limit: u64) -> Result<(), Overloaded> {
    if queued.saturating_add(incoming) > limit {
        return Err(Overloaded { queued, limit });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_up_to_the_limit_and_refuses_a_request_past_it_whole() {
        assert_eq!(admit(0, 10, 10), Ok(()));
        assert_eq!(admit(5, 5, 10), Ok(()));
        assert_eq!(
            admit(5, 6, 10),
            Err(Overloaded {
                queued: 5,
                limit: 10
            })
        );
        assert!(admit(u64::MAX, 1, u64::MAX - 1).is_err(), "no overflow");
        assert_eq!(admit(u64::MAX, 1, u64::MAX), Ok(()), "u64::MAX is no limit");
        assert_eq!(
            admit(9, 2, 10).unwrap_err().to_string(),
            "the queue holds 9 unprocessed events, its limit is 10"
        );
    }
}
