//! What `eye bench` measured, as a JSON report and a summary for people, and
//! how a server's CPU and memory are read from /proc.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{Value, json};

use super::{BenchArgs, Tally, lock};

/// CPU time (ms) and peak/current RSS (KiB) of a process, from /proc.
pub(super) fn proc_sample(pid: u32) -> Option<(f64, u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
    };
    // Linux reports CPU time in clock ticks of 1/100 s on every common configuration.
    Some((ticks * 10.0, kib("VmHWM:")?, kib("VmRSS:")?))
}

pub(super) fn build_report(
    args: &BenchArgs,
    tally: &Tally,
    sending: Duration,
    drained: Option<Duration>,
    lags: &[Duration],
    cpu_before: Option<(f64, u64, u64)>,
    cpu_after: Option<(f64, u64, u64)>,
) -> Value {
    let secs = sending.as_secs_f64();
    let requests = tally.requests.load(Ordering::Relaxed);
    let accepted = tally.accepted_events.load(Ordering::Relaxed);
    let valid = tally.accepted_valid.load(Ordering::Relaxed);
    let ms = |us: u64| us as f64 / 1000.0;
    let latency = lock(&tally.latency).as_ref().map(|h| {
        json!({
            "p50": ms(h.value_at_quantile(0.50)),
            "p90": ms(h.value_at_quantile(0.90)),
            "p99": ms(h.value_at_quantile(0.99)),
            "p99_9": ms(h.value_at_quantile(0.999)),
            "max": ms(h.max()),
        })
    });
    let mut sorted: Vec<f64> = lags.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    sorted.sort_by(f64::total_cmp);
    let pct = |q: f64| {
        sorted
            .get(((sorted.len() as f64 - 1.0) * q).round() as usize)
            .copied()
    };
    let server = match (cpu_before, cpu_after) {
        (Some((cpu0, _, _)), Some((cpu1, hwm, rss))) => json!({
            "cpu_ms": cpu1 - cpu0,
            "cpu_ms_per_stored_event": if valid > 0 { Some((cpu1 - cpu0) / valid as f64) } else { None },
            "peak_rss_mib": hwm as f64 / 1024.0,
            "rss_mib_at_end": rss as f64 / 1024.0,
        }),
        _ => Value::Null,
    };
    json!({
        "config": {
            "url": args.url,
            "mode": if args.rate.is_some() { "open-loop" } else { "closed-loop" },
            "rate_events_per_s": args.rate,
            "concurrency": if args.rate.is_none() { Some(args.concurrency.unwrap_or(16)) } else { None },
            "batch": args.batch,
            "duration_s": args.duration.as_secs_f64(),
            "sessions": args.sessions,
            "invalid_ratio": args.invalid_ratio,
            "future_ratio": args.future_ratio,
        },
        "requests": requests,
        "requests_per_s": requests as f64 / secs,
        "events_accepted": accepted,
        "events_per_s_accepted": accepted as f64 / secs,
        "skipped_by_generator": tally.skipped.load(Ordering::Relaxed),
        "latency_ms": latency,
        "status": *lock(&tally.status),
        "lag_ms": if sorted.is_empty() { Value::Null } else { json!({"p50": pct(0.5), "p99": pct(0.99), "max": sorted.last(), "samples": sorted.len()}) },
        "stored_events_per_s": drained.map(|d| valid as f64 / d.as_secs_f64()),
        "drained_after_s": drained.map(|d| d.as_secs_f64()),
        "server": server,
    })
}

pub(super) fn human(r: &Value) -> String {
    let f = |v: &Value| v.as_f64().map_or("-".to_owned(), |x| format!("{x:.2}"));
    let mut out = String::new();
    let c = &r["config"];
    let _ = writeln!(
        out,
        "\n{} run: batch {}, {} sessions, {} s{}",
        c["mode"].as_str().unwrap_or(""),
        c["batch"],
        c["sessions"],
        f(&c["duration_s"]),
        c["rate_events_per_s"]
            .as_f64()
            .map_or(String::new(), |r| format!(", offered {r:.0} events/s"))
    );
    let _ = writeln!(
        out,
        "  requests/s            {:>12}",
        f(&r["requests_per_s"])
    );
    let _ = writeln!(
        out,
        "  events/s accepted     {:>12}",
        f(&r["events_per_s_accepted"])
    );
    let l = &r["latency_ms"];
    let _ = writeln!(
        out,
        "  accept latency (ms)   p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
        f(&l["p50"]),
        f(&l["p90"]),
        f(&l["p99"]),
        f(&l["p99_9"]),
        f(&l["max"])
    );
    let _ = writeln!(out, "  status                {}", r["status"]);
    if r["skipped_by_generator"].as_u64().unwrap_or(0) > 0 {
        let _ = writeln!(
            out,
            "  skipped (in-flight limit) {}",
            r["skipped_by_generator"]
        );
    }
    if !r["lag_ms"].is_null() {
        let lag = &r["lag_ms"];
        let _ = writeln!(
            out,
            "  lag to queryable (ms) p50 {}  p99 {}  max {}  ({} probes)",
            f(&lag["p50"]),
            f(&lag["p99"]),
            f(&lag["max"]),
            lag["samples"]
        );
        let _ = writeln!(
            out,
            "  stored events/s       {:>12}",
            f(&r["stored_events_per_s"])
        );
    }
    if !r["server"].is_null() {
        let s = &r["server"];
        let _ = writeln!(
            out,
            "  server CPU ms/event   {:>12}",
            s["cpu_ms_per_stored_event"]
                .as_f64()
                .map_or("-".into(), |x| format!("{x:.4}"))
        );
        let _ = writeln!(out, "  server peak RSS MiB   {:>12}", f(&s["peak_rss_mib"]));
    }
    out
}
