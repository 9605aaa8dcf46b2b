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
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use eye_shared::domain::Timestamp;
use hdrhistogram::Histogram;
use serde_json::Value;

mod generator;
mod report;

use generator::Generator;
use report::{build_report, human, proc_sample};

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
    let statuses = lock(&tally.status).clone();
    if !statuses.contains_key("202") {
        let seen: Vec<String> = statuses.iter().map(|(s, n)| format!("{n} × {s}")).collect();
        bail!(
            "no request was accepted ({}); check that a server runs at {} and that --key may ingest",
            if seen.is_empty() {
                "none was sent".to_owned()
            } else {
                seen.join(", ")
            },
            args.url
        );
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
}
