//! `eye bench`: a load generator for any endpoint that speaks The Eye's HTTP
//! contract (`eye serve`, API Gateway, or another implementation).
//!
//! Open loop (`--rate`): requests are scheduled at fixed intended times and
//! latency is measured from the *intended* send time, so a stalled server shows
//! up as latency instead of silently slowing the generator (no coordinated
//! omission). Closed loop (`--concurrency`): that many senders, back to back.
//!
//! With `--query-key`, some requests are probes: all their events go to a fresh
//! session, which is polled until the events are queryable, giving the
//! end-to-end lag, and the sustained stored rate once the load stops.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use eye_shared::domain::Timestamp;
use hdrhistogram::Histogram;
use serde_json::{Value, json};

#[derive(Args, Clone)]
pub struct BenchArgs {
    /// Base URL of the endpoint (for API Gateway: https://…/Prod).
    #[arg(long, default_value = "http://127.0.0.1:3000")]
    pub url: String,
    /// An API key with the ingest scope.
    #[arg(long, env = "EYE_BENCH_KEY")]
    pub key: String,
    /// A key with the query scope: measures the lag until events are queryable.
    #[arg(long, env = "EYE_BENCH_QUERY_KEY")]
    pub query_key: Option<String>,
    /// Open loop: events per second to offer (divided into requests of --batch).
    #[arg(long, conflicts_with = "concurrency")]
    pub rate: Option<f64>,
    /// Closed loop: senders sending back to back (default 16 without --rate).
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Events per request.
    #[arg(long, default_value_t = 50)]
    pub batch: usize,
    /// How long to send, e.g. 30s or 2m.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Distinct sessions the events are spread over.
    #[arg(long, default_value_t = 1000)]
    pub sessions: usize,
    /// Share of events with a payload that breaks its schema.
    #[arg(long, default_value_t = 0.0)]
    pub invalid_ratio: f64,
    /// Share of events with a timestamp an hour in the future.
    #[arg(long, default_value_t = 0.0)]
    pub future_ratio: f64,
    /// Requests in flight at most (open loop); beyond it sends are counted as skipped.
    #[arg(long, default_value_t = 4096)]
    pub max_in_flight: usize,
    /// Probes per second when measuring lag.
    #[arg(long, default_value_t = 10.0)]
    pub probes_per_second: f64,
    /// Also sample this process's CPU time and memory (the server's PID).
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Write the report as JSON here too.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Do not print progress every second.
    #[arg(long)]
    pub quiet: bool,
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let (number, unit) = s.trim().split_at(
        s.trim()
            .find(|c: char| c.is_ascii_alphabetic())
            .unwrap_or(s.trim().len()),
    );
    let n: f64 = number
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 30s, 500ms or 2m"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("{s:?}: unknown unit {unit:?}; use ms, s, m or h")),
    };
    if !secs.is_finite() || secs <= 0.0 {
        return Err(format!("{s:?} must be positive"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Builds request bodies: seed-style events, unique per event.
struct Generator {
    run: String,
    sessions: usize,
    invalid_ratio: f64,
    future_ratio: f64,
    counter: AtomicU64,
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
    fn body(&self, batch: usize, probe: Option<&str>) -> (String, u64) {
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

#[derive(Default)]
struct Tally {
    latency: Mutex<Option<Histogram<u64>>>,
    status: Mutex<BTreeMap<String, u64>>,
    requests: AtomicU64,
    accepted_events: AtomicU64,
    accepted_valid: AtomicU64,
    skipped: AtomicU64,
    in_flight: AtomicUsize,
}

impl Tally {
    fn new() -> Self {
        let t = Tally::default();
        *lock(&t.latency) = Histogram::new_with_bounds(1, 120_000_000, 3).ok();
        t
    }

    fn record(&self, latency: Duration, status: &str, events: u64, valid: u64) {
        if let Some(h) = lock(&self.latency).as_mut() {
            let _ = h.record((latency.as_micros() as u64).max(1));
        }
        *lock(&self.status).entry(status.to_owned()).or_default() += 1;
        self.requests.fetch_add(1, Ordering::Relaxed);
        if status == "202" {
            self.accepted_events.fetch_add(events, Ordering::Relaxed);
            self.accepted_valid.fetch_add(valid, Ordering::Relaxed);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

struct Probe {
    session: String,
    accepted_at: Instant,
}

/// CPU time (ms) and peak/current RSS (KiB) of a process, from /proc.
fn proc_sample(pid: u32) -> Option<(f64, u64, u64)> {
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

pub async fn run(args: BenchArgs) -> Result<()> {
    if args.batch == 0 || args.batch > 500 {
        bail!("--batch must be 1 to 500");
    }
    if args.sessions == 0 {
        bail!("--sessions must be at least 1");
    }
    if let Some(rate) = args.rate {
        if !(rate.is_finite() && rate > 0.0) {
            bail!("--rate must be a positive number of events per second");
        }
    }
    // One TLS provider for the process (ignore "already installed").
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.max_in_flight)
        .timeout(Duration::from_secs(30))
        .build()
        .context("building the HTTP client")?;
    let url = format!("{}/v1/events", args.url.trim_end_matches('/'));
    let run_id = format!("bench{}", Timestamp::now().as_micros() % 1_000_000_000);
    let generator = Arc::new(Generator {
        run: run_id.clone(),
        sessions: args.sessions,
        invalid_ratio: args.invalid_ratio,
        future_ratio: args.future_ratio,
        counter: AtomicU64::new(0),
    });
    let tally = Arc::new(Tally::new());
    let probes: Arc<Mutex<Vec<Probe>>> = Arc::default();
    let lags: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let cpu_before = args.server_pid.and_then(proc_sample);

    let prober = args.query_key.clone().map(|qk| {
        let (http, base, probes, lags) = (
            http.clone(),
            args.url.trim_end_matches('/').to_owned(),
            probes.clone(),
            lags.clone(),
        );
        tokio::spawn(poll_probes(http, base, qk, probes, lags))
    });

    let start = Instant::now();
    let deadline = start + args.duration;
    let progress = (!args.quiet).then(|| tokio::spawn(progress(tally.clone(), start)));
    let probe_every = (args.query_key.is_some() && args.probes_per_second > 0.0)
        .then(|| Duration::from_secs_f64(1.0 / args.probes_per_second));
    let next_probe = Arc::new(Mutex::new(start));

    let send = {
        let (http, url, key, tally, generator, probes, next_probe, run_id) = (
            http.clone(),
            url.clone(),
            args.key.clone(),
            tally.clone(),
            generator.clone(),
            probes.clone(),
            next_probe.clone(),
            run_id.clone(),
        );
        let batch = args.batch;
        move |intended: Instant| {
            let probe = probe_every.and_then(|every| {
                let mut next = lock(&next_probe);
                (Instant::now() >= *next).then(|| {
                    *next += every;
                    format!(
                        "{run_id}-probe-{}",
                        generator.counter.load(Ordering::Relaxed)
                    )
                })
            });
            let (body, valid) = generator.body(batch, probe.as_deref());
            let (http, url, key, tally, probes) = (
                http.clone(),
                url.clone(),
                key.clone(),
                tally.clone(),
                probes.clone(),
            );
            async move {
                tally.in_flight.fetch_add(1, Ordering::Relaxed);
                let result = http
                    .post(&url)
                    .header("x-api-key", key)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await;
                let status = match result {
                    Ok(r) => {
                        let s = r.status().as_u16().to_string();
                        let _ = r.bytes().await;
                        s
                    }
                    Err(e) if e.is_timeout() => "timeout".to_owned(),
                    Err(_) => "error".to_owned(),
                };
                let latency = intended.elapsed();
                if status == "202" {
                    if let Some(session) = probe {
                        lock(&probes).push(Probe {
                            session,
                            accepted_at: Instant::now(),
                        });
                    }
                }
                tally.record(latency, &status, batch as u64, valid);
                tally.in_flight.fetch_sub(1, Ordering::Relaxed);
            }
        }
    };

    match args.rate {
        Some(rate) => {
            // Open loop: request i is due at start + i × interval.
            let interval = Duration::from_secs_f64(args.batch as f64 / rate);
            let mut tasks = tokio::task::JoinSet::new();
            let mut i: u32 = 0;
            loop {
                let intended = start + interval * i;
                if intended >= deadline {
                    break;
                }
                tokio::time::sleep_until(intended.into()).await;
                if tally.in_flight.load(Ordering::Relaxed) >= args.max_in_flight {
                    tally.skipped.fetch_add(1, Ordering::Relaxed);
                } else {
                    tasks.spawn(send(intended));
                }
                while tasks.try_join_next().is_some() {}
                i += 1;
            }
            while tasks.join_next().await.is_some() {}
        }
        None => {
            let senders = args.concurrency.unwrap_or(16).max(1);
            let mut tasks = tokio::task::JoinSet::new();
            for _ in 0..senders {
                let send = send.clone();
                tasks.spawn(async move {
                    while Instant::now() < deadline {
                        send(Instant::now()).await;
                    }
                });
            }
            while tasks.join_next().await.is_some() {}
        }
    }
    let sending = start.elapsed();
    if let Some(p) = progress {
        p.abort();
    }

    // Wait for the last probe: the load has then been processed.
    let mut drained = None;
    if let Some(prober) = prober {
        let wait_until = Instant::now() + Duration::from_secs(120);
        while !lock(&probes).is_empty() && Instant::now() < wait_until {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if lock(&probes).is_empty() {
            drained = Some(start.elapsed());
        }
        prober.abort();
    }
    let cpu_after = args.server_pid.and_then(proc_sample);

    let report = build_report(
        &args,
        &tally,
        sending,
        drained,
        &lock(&lags),
        cpu_before,
        cpu_after,
    );
    println!("{}", human(&report));
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// Polls the oldest pending probe's session until it shows up.
async fn poll_probes(
    http: reqwest::Client,
    base: String,
    key: String,
    probes: Arc<Mutex<Vec<Probe>>>,
    lags: Arc<Mutex<Vec<Duration>>>,
) {
    loop {
        let next = lock(&probes)
            .first()
            .map(|p| (p.session.clone(), p.accepted_at));
        let Some((session, accepted_at)) = next else {
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        };
        let found = http
            .get(format!("{base}/v1/sessions/{session}/events?limit=1"))
            .header("x-api-key", &key)
            .send()
            .await
            .ok()
            .filter(|r| r.status().is_success());
        let visible = match found {
            Some(r) => r
                .bytes()
                .await
                .ok()
                .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
                .and_then(|v| v["events"].as_array().map(|a| !a.is_empty()))
                .unwrap_or(false),
            None => false,
        };
        if visible {
            lock(&lags).push(accepted_at.elapsed());
            lock(&probes).remove(0);
        } else {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

async fn progress(tally: Arc<Tally>, start: Instant) {
    let mut last = (0u64, 0u64);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    loop {
        tick.tick().await;
        let requests = tally.requests.load(Ordering::Relaxed);
        let events = tally.accepted_events.load(Ordering::Relaxed);
        let p99 = lock(&tally.latency)
            .as_ref()
            .map_or(0.0, |h| h.value_at_quantile(0.99) as f64 / 1000.0);
        let statuses: Vec<String> = lock(&tally.status)
            .iter()
            .map(|(k, v)| format!("{k}:{v}"))
            .collect();
        eprintln!(
            "[{:>5.1}s] {:>7} req/s {:>8} events/s accepted  p99 {:>7.2} ms  in flight {:>4}  {}",
            start.elapsed().as_secs_f64(),
            requests - last.0,
            events - last.1,
            p99,
            tally.in_flight.load(Ordering::Relaxed),
            statuses.join(" ")
        );
        last = (requests, events);
    }
}

fn build_report(
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

fn human(r: &Value) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("5"), Ok(Duration::from_secs(5)));
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("3y").is_err());
    }

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
