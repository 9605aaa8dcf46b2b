//! Splitting the queue into requests within the server's limits, and writing
//! a request body from the events' pre-serialized JSON.

use std::collections::VecDeque;

use chrono::{DateTime, Utc};

use crate::event::{Prepared, format_timestamp};

/// Length of `sent_at` as written: `2021-01-01T09:15:27.243860Z`.
const SENT_AT_LEN: usize = 27;
const HEAD: &str = "{\"events\":[";
const TAIL_OPEN: &str = "],\"sent_at\":\"";
const TAIL_CLOSE: &str = "\"}";

/// Bytes of a body around its events (without the commas between them).
pub(crate) const BODY_OVERHEAD: usize =
    HEAD.len() + TAIL_OPEN.len() + SENT_AT_LEN + TAIL_CLOSE.len();

/// Size of a body holding events of these JSON sizes.
pub(crate) fn body_len(event_bytes: usize, count: usize) -> usize {
    BODY_OVERHEAD + event_bytes + count.saturating_sub(1)
}

/// Takes from the front of `pending` the longest run of events that fits in
/// one request: at most `max_events` events and `max_bytes` bytes of body.
/// Always takes at least one event when there is one (each event is at most
/// 32 KiB, far below the body limit).
pub(crate) fn take_batch(
    pending: &mut VecDeque<Prepared>,
    max_events: usize,
    max_bytes: usize,
) -> Vec<Prepared> {
    let mut batch = Vec::new();
    let mut bytes = 0;
    while let Some(next) = pending.front() {
        if batch.len() >= max_events
            || (!batch.is_empty() && body_len(bytes + next.json.len(), batch.len() + 1) > max_bytes)
        {
            break;
        }
        bytes += next.json.len();
        if let Some(event) = pending.pop_front() {
            batch.push(event);
        }
    }
    batch
}

/// The request body `{"events":[...],"sent_at":"..."}`, from the events' JSON.
pub(crate) fn body(batch: &[Prepared], sent_at: DateTime<Utc>) -> String {
    let bytes: usize = batch.iter().map(|e| e.json.len()).sum();
    let mut out = String::with_capacity(body_len(bytes, batch.len()));
    out.push_str(HEAD);
    for (i, event) in batch.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&event.json);
    }
    out.push_str(TAIL_OPEN);
    out.push_str(&format_timestamp(sent_at));
    out.push_str(TAIL_CLOSE);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{MAX_BATCH_EVENTS, MAX_BODY_BYTES, MAX_EVENT_BYTES, prepare};
    use serde_json::{Value, json};
    use uuid::Uuid;

    fn event(i: usize, pad: usize) -> Prepared {
        prepare(
            "s",
            "c",
            "n",
            &json!({"i": i, "pad": "x".repeat(pad)}),
            Utc::now(),
            Uuid::now_v7(),
        )
        .unwrap()
    }

    #[test]
    fn splits_by_count() {
        let mut q: VecDeque<Prepared> = (0..1234).map(|i| event(i, 0)).collect();
        let sizes: Vec<usize> = std::iter::from_fn(|| {
            let b = take_batch(&mut q, MAX_BATCH_EVENTS, MAX_BODY_BYTES);
            (!b.is_empty()).then_some(b.len())
        })
        .collect();
        assert_eq!(sizes, [500, 500, 234]);
    }

    #[test]
    fn splits_by_bytes_and_every_body_fits() {
        // Events of ~30.1 KiB: 33 fit in 1 MiB, so 100 events make 4 bodies.
        let mut q: VecDeque<Prepared> = (0..100).map(|i| event(i, 30 * 1024)).collect();
        let first = q[0].event_id;
        let mut seen = 0;
        let mut batches = 0;
        loop {
            let b = take_batch(&mut q, MAX_BATCH_EVENTS, MAX_BODY_BYTES);
            if b.is_empty() {
                break;
            }
            if batches == 0 {
                assert_eq!(b[0].event_id, first, "the queue's order is kept");
                assert_eq!(b.len(), 33);
            }
            batches += 1;
            let text = body(&b, Utc::now());
            assert!(text.len() <= MAX_BODY_BYTES, "{} bytes", text.len());
            let bytes: usize = b.iter().map(|e| e.json.len()).sum();
            assert_eq!(text.len(), body_len(bytes, b.len()), "the size is exact");
            // One more event would not have fitted.
            if !q.is_empty() {
                assert!(body_len(bytes + q[0].json.len(), b.len() + 1) > MAX_BODY_BYTES);
            }
            let v: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(v["events"].as_array().unwrap().len(), b.len());
            assert_eq!(v["events"][0]["data"]["i"], seen);
            seen += b.len();
        }
        assert_eq!(seen, 100);
        assert_eq!(batches, 4);
    }

    #[test]
    fn largest_events_at_the_byte_limit() {
        // Events of exactly 32 KiB: 31 per body (32 would be 1 MiB + 84 bytes).
        let base = event(0, 0).json.len();
        let mut q: VecDeque<Prepared> = (0..64)
            .map(|i| event(i, MAX_EVENT_BYTES - base - if i >= 10 { 1 } else { 0 }))
            .filter(|e| e.json.len() == MAX_EVENT_BYTES)
            .collect();
        let n = q.len();
        assert!(n >= 32);
        let b = take_batch(&mut q, MAX_BATCH_EVENTS, MAX_BODY_BYTES);
        assert_eq!(b.len(), 31);
        assert!(body(&b, Utc::now()).len() <= MAX_BODY_BYTES);
    }

    #[test]
    fn body_is_the_batch_shape_with_sent_at() {
        let b = vec![event(0, 0), event(1, 0)];
        let at = DateTime::parse_from_rfc3339("2021-01-01T09:15:27.000001Z")
            .unwrap()
            .to_utc();
        let v: Value = serde_json::from_str(&body(&b, at)).unwrap();
        assert_eq!(v["sent_at"], "2021-01-01T09:15:27.000001Z");
        assert_eq!(v["events"][1]["event_id"], b[1].event_id.to_string());
        assert_eq!(v.as_object().unwrap().len(), 2);
    }
}
