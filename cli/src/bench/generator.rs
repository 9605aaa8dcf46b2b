//! The bodies `eye bench` sends: seed-style events, unique per event, with
//! the requested share of invalid and future ones.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use eye_shared::domain::Timestamp;

/// Builds request bodies: seed-style events, unique per event.
pub(super) struct Generator {
    pub(super) run: String,
    pub(super) sessions: usize,
    pub(super) invalid_ratio: f64,
    pub(super) future_ratio: f64,
    pub(super) counter: AtomicU64,
}

impl Generator {
    /// A cheap, deterministic pseudo-random number in [0, 1) for event `n`.
    fn unit(n: u64, salt: u64) -> f64 {
        let mut x = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ salt;
        x ^= x >> 31;
        x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x ^= x >> 27;
        (x >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A JSON array of `batch` events; `probe` puts them all in one fresh session.
    pub(super) fn body(&self, batch: usize, probe: Option<&str>) -> (String, u64) {
        let mut out = String::with_capacity(batch * 260 + 2);
        let mut valid = 0;
        out.push('[');
        let now = Timestamp::now();
        for i in 0..batch {
            let n = self.counter.fetch_add(1, Ordering::Relaxed);
            if i > 0 {
                out.push(',');
            }
            let session = match probe {
                Some(p) => p.to_owned(),
                None => format!(
                    "{}-s{}",
                    self.run,
                    (Self::unit(n, 1) * self.sessions as f64) as usize
                ),
            };
            let invalid = probe.is_none() && Self::unit(n, 2) < self.invalid_ratio;
            let future = probe.is_none() && !invalid && Self::unit(n, 3) < self.future_ratio;
            let timestamp = if future {
                now.add_micros(3_600_000_000)
            } else {
                now.add_micros(i as i64)
            };
            let kind = Self::unit(n, 4);
            let (category, name, extra) = if kind < 0.6 {
                ("page interaction", "pageview", String::new())
            } else if kind < 0.9 {
                (
                    "page interaction",
                    "cta click",
                    if invalid {
                        String::new()
                    } else {
                        r#","element":"chat bubble""#.into()
                    },
                )
            } else {
                (
                    "form interaction",
                    "submit",
                    if invalid {
                        String::new()
                    } else {
                        r#","form":{"first_name":"John","last_name":"Doe"}"#.into()
                    },
                )
            };
            let host = if invalid && name == "pageview" {
                ""
            } else {
                r#""host":"www.consumeraffairs.com","#
            };
            let _ = write!(
                out,
                r#"{{"session_id":"{session}","category":"{category}","name":"{name}","data":{{{host}"path":"/p/{n}"{extra}}},"timestamp":"{timestamp}"}}"#
            );
            if !invalid && !future {
                valid += 1;
            }
        }
        out.push(']');
        (out, valid)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    #[test]
    fn generated_events_are_unique_valid_json_and_follow_the_mix() {
        let g = Generator {
            run: "r".into(),
            sessions: 10,
            invalid_ratio: 0.2,
            future_ratio: 0.1,
            counter: AtomicU64::new(0),
        };
        let mut invalid = 0;
        let mut future = 0;
        let mut paths = std::collections::HashSet::new();
        let registry = eye_shared::domain::SchemaRegistry::builtin().unwrap();
        for _ in 0..100 {
            let (body, valid) = g.body(50, None);
            let env = eye_shared::domain::parse_body(body.as_bytes(), &Default::default())
                .expect("the envelope is valid");
            let mut counted_valid = 0;
            for e in &env.events {
                assert!(paths.insert(e.data.get().to_owned()), "every event differs");
                let data: Value = serde_json::from_str(e.data.get()).unwrap();
                let ok = registry.check(&e.category, &e.name, &data)
                    == eye_shared::domain::SchemaCheck::Valid;
                let ahead = e.timestamp > Timestamp::now().add_micros(60_000_000);
                invalid += usize::from(!ok);
                future += usize::from(ahead);
                counted_valid += u64::from(ok && !ahead);
            }
            assert_eq!(counted_valid, valid);
        }
        assert!((800..1200).contains(&invalid), "{invalid} invalid of 5000");
        assert!((300..700).contains(&future), "{future} future of 5000");
        let (probe, _) = g.body(3, Some("probe-1"));
        assert_eq!(probe.matches(r#""session_id":"probe-1""#).count(), 3);
    }
}
