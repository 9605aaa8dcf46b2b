//! `eye cost`: the monthly AWS bill of The Eye for a given event rate, from
//! the call counts the AWS adapters make (measured against an emulator, see
//! BENCHMARKS.md) and AWS list prices.

use anyhow::{Result, bail};
use clap::Args;
use eye_shared::adapters::aws::dynamodb::{event_item, item_size, write_units};
use eye_shared::adapters::aws::sqs::MAX_MESSAGE_BYTES;
use eye_shared::domain::{Context, Rules, SchemaRegistry, Timestamp, Verdict, judge};
use serde_json::{Value, json};

/// Prices used, us-east-1, as AWS published them. They are inputs, not facts
/// of nature: check <https://aws.amazon.com/pricing/> and override with flags.
pub const PRICES_AS_OF: &str =
    "2025-06 (us-east-1; DynamoDB on-demand after the 2024-11 price cut)";

#[derive(Args)]
pub struct CostArgs {
    /// Average events per second.
    #[arg(long)]
    pub events_per_second: f64,
    /// Events per ingest request (what the client library batches).
    #[arg(long, default_value_t = 100)]
    pub batch: u32,
    /// Bytes of one event as sent (a seed event is about 230).
    #[arg(long, default_value_t = 230)]
    pub event_bytes: u32,
    /// Memory of each Lambda, MB.
    #[arg(long, default_value_t = 256)]
    pub lambda_memory_mb: u32,
    /// Ingest Lambda duration per request, ms (an SQS SendMessageBatch round trip in-region, plus parsing).
    #[arg(long, default_value_t = 15.0)]
    pub ingest_ms: f64,
    /// Processor Lambda duration per invocation, ms, fixed part.
    #[arg(long, default_value_t = 20.0)]
    pub processor_base_ms: f64,
    /// Processor Lambda duration per event, ms (PutItems run 32 at a time).
    #[arg(long, default_value_t = 0.3)]
    pub processor_ms_per_event: f64,
    /// Most SQS messages per processor invocation (the template's BatchSize;
    /// its batching window is 1 s).
    #[arg(long, default_value_t = 100)]
    pub sqs_batch: u32,
    /// Months of events kept (storage grows with it).
    #[arg(long, default_value_t = 1.0)]
    pub months_retained: f64,
    /// Price per million API Gateway REST requests (first 333 million a month).
    #[arg(long, default_value_t = 3.50)]
    pub apigw_per_million: f64,
    /// Price per GB-second of Lambda on arm64.
    #[arg(long, default_value_t = 0.000_013_333_4)]
    pub lambda_gb_second: f64,
    /// Price per million Lambda invocations.
    #[arg(long, default_value_t = 0.20)]
    pub lambda_per_million: f64,
    /// Price per million SQS requests (each 64 KiB of payload is one request).
    #[arg(long, default_value_t = 0.40)]
    pub sqs_per_million: f64,
    /// Price per million DynamoDB on-demand write request units.
    #[arg(long, default_value_t = 0.625)]
    pub dynamodb_per_million_writes: f64,
    /// Price per GB-month of DynamoDB storage.
    #[arg(long, default_value_t = 0.25)]
    pub dynamodb_gb_month: f64,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

const SECONDS_PER_MONTH: f64 = 30.0 * 24.0 * 3600.0;

/// The DynamoDB item of a typical seed event, sized by DynamoDB's rules.
fn typical_item(event_bytes: u32) -> Result<(u64, u64)> {
    let pad = (event_bytes as usize).saturating_sub(230);
    let raw = format!(
        r#"{{"session_id":"e2085be5-9137-4e4e-80b5-f1ffddc25423","category":"page interaction","name":"cta click","data":{{"host":"www.consumeraffairs.com","path":"/{}","element":"chat bubble"}},"timestamp":"2021-01-01 09:15:27.243860"}}"#,
        "p".repeat(pad)
    );
    let raw = serde_json::value::RawValue::from_string(raw)?;
    let ctx = Context {
        app: "shop",
        received_at: Timestamp::now(),
        sent_at: None,
    };
    match judge(
        ctx,
        "0190c3a2-8b1e-7c3d-9f00-123456789abc",
        &raw,
        &SchemaRegistry::builtin()?,
        Rules::default(),
    ) {
        Verdict::Store(event) => {
            let item = event_item(&event, 4, None);
            Ok((item_size(&item), write_units(&item)))
        }
        Verdict::Reject(r) => bail!("the sample event was refused: {}", r.message),
    }
}

pub fn estimate(a: &CostArgs) -> Result<Value> {
    if !(a.events_per_second.is_finite() && a.events_per_second > 0.0) {
        bail!("--events-per-second must be positive");
    }
    if a.batch == 0 || a.batch > 500 {
        bail!("--batch must be 1 to 500");
    }
    let events = a.events_per_second * SECONDS_PER_MONTH;
    let requests = events / f64::from(a.batch);
    let body = f64::from(a.batch) * (f64::from(a.event_bytes) + 60.0) + 120.0;
    let messages_per_request = (body / MAX_MESSAGE_BYTES as f64).ceil().max(1.0);
    let messages = requests * messages_per_request;
    let chunks_per_message = ((body / messages_per_request) / 65536.0).ceil().max(1.0);
    // Sends (billed per 64 KiB chunk), the trigger's receives (10 per call)
    // and deletes (10 per call).
    let sqs_requests = messages * chunks_per_message + messages / 10.0 * 2.0;
    // The trigger invokes with up to --sqs-batch messages, or whatever arrived
    // within its 1 s batching window.
    let per_invocation = (messages / SECONDS_PER_MONTH).clamp(1.0, f64::from(a.sqs_batch));
    let invocations = messages / per_invocation;
    let events_per_invocation = events / invocations;
    let gb = f64::from(a.lambda_memory_mb) / 1024.0;
    let ingest_gb_s = requests * a.ingest_ms / 1000.0 * gb;
    let processor_ms = a.processor_base_ms + a.processor_ms_per_event * events_per_invocation;
    let processor_gb_s = invocations * processor_ms / 1000.0 * gb;
    let (item_bytes, units_per_event) = typical_item(a.event_bytes)?;
    let write_units = events * units_per_event as f64;
    let stored_gb = events * a.months_retained * (item_bytes as f64 + 100.0) * 3.0 / 1e9;

    let m = 1e6;
    let lines = [
        (
            "API Gateway REST",
            requests / m * a.apigw_per_million,
            format!("{:.1} M requests", requests / m),
        ),
        (
            "Lambda ingest",
            requests / m * a.lambda_per_million + ingest_gb_s * a.lambda_gb_second,
            format!("{:.1} M invocations, {:.0} GB-s", requests / m, ingest_gb_s),
        ),
        (
            "SQS",
            sqs_requests / m * a.sqs_per_million,
            format!("{:.1} M requests", sqs_requests / m),
        ),
        (
            "Lambda processor",
            invocations / m * a.lambda_per_million + processor_gb_s * a.lambda_gb_second,
            format!(
                "{:.2} M invocations of {:.0} ms, {:.0} GB-s",
                invocations / m,
                processor_ms,
                processor_gb_s
            ),
        ),
        (
            "DynamoDB writes",
            write_units / m * a.dynamodb_per_million_writes,
            format!(
                "{:.1} M write units ({units_per_event} per event: table + 2 indexes)",
                write_units / m
            ),
        ),
        (
            "DynamoDB storage",
            stored_gb * a.dynamodb_gb_month,
            format!(
                "{stored_gb:.1} GB (table + 2 indexes, {} months)",
                a.months_retained
            ),
        ),
    ];
    let total: f64 = lines.iter().map(|l| l.1).sum();
    Ok(json!({
        "events_per_month": events,
        "batch": a.batch,
        "monthly_usd": lines.iter().map(|(k, v, d)| json!({"item": k, "usd": (v * 100.0).round() / 100.0, "basis": d})).collect::<Vec<_>>(),
        "total_usd": (total * 100.0).round() / 100.0,
        "usd_per_million_events": (total / (events / m) * 1000.0).round() / 1000.0,
        "assumptions": {
            "prices_as_of": PRICES_AS_OF,
            "item_bytes": item_bytes,
            "messages_per_request": messages_per_request,
            "ingest_ms": a.ingest_ms,
            "processor_ms_per_invocation": processor_ms,
            "lambda_memory_mb": a.lambda_memory_mb,
            "free_tiers": "ignored",
            "not_included": "CloudWatch logs and metrics, data transfer out, reads by analysts",
        },
    }))
}

pub fn run(args: CostArgs) -> Result<()> {
    let report = estimate(&args)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!(
        "The Eye on AWS at {} events/s in batches of {} ({:.0} M events a month)\n",
        args.events_per_second,
        args.batch,
        report["events_per_month"].as_f64().unwrap_or(0.0) / 1e6
    );
    for line in report["monthly_usd"].as_array().into_iter().flatten() {
        println!(
            "  {:<18} {:>10.2} USD   {}",
            line["item"].as_str().unwrap_or(""),
            line["usd"].as_f64().unwrap_or(0.0),
            line["basis"].as_str().unwrap_or("")
        );
    }
    println!(
        "  {:<18} {:>10.2} USD / month",
        "total",
        report["total_usd"].as_f64().unwrap_or(0.0)
    );
    println!(
        "  {:<18} {:>10.3} USD per million events\n",
        "",
        report["usd_per_million_events"].as_f64().unwrap_or(0.0)
    );
    println!(
        "Assumptions: {}",
        serde_json::to_string_pretty(&report["assumptions"])?
    );
    println!(
        "Prices: API Gateway REST {} USD/M requests; Lambda arm64 {} USD/GB-s and {} USD/M invocations; \
         SQS {} USD/M requests (64 KiB each); DynamoDB on-demand {} USD/M write units and {} USD/GB-month. \
         As of {PRICES_AS_OF}: check https://aws.amazon.com/pricing/ and override with the --*-per-* flags.",
        args.apigw_per_million,
        args.lambda_gb_second,
        args.lambda_per_million,
        args.sqs_per_million,
        args.dynamodb_per_million_writes,
        args.dynamodb_gb_month
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        cost: CostArgs,
    }

    fn cost(args: &[&str]) -> Value {
        let mut all = vec!["t"];
        all.extend_from_slice(args);
        estimate(&T::parse_from(all).cost).unwrap()
    }

    #[test]
    fn bigger_batches_cut_request_costs_not_write_costs() {
        let one = cost(&["--events-per-second", "100", "--batch", "1"]);
        let hundred = cost(&["--events-per-second", "100", "--batch", "100"]);
        let usd = |r: &Value, item: &str| {
            r["monthly_usd"]
                .as_array()
                .unwrap()
                .iter()
                .find(|l| l["item"] == item)
                .unwrap()["usd"]
                .as_f64()
                .unwrap()
        };
        assert!(usd(&one, "API Gateway REST") > 50.0 * usd(&hundred, "API Gateway REST"));
        assert_eq!(
            usd(&one, "DynamoDB writes"),
            usd(&hundred, "DynamoDB writes")
        );
        // 100 events/s is 259.2 M events a month; 3 write units each at 0.625 USD/M.
        assert!((usd(&one, "DynamoDB writes") - 259.2 * 3.0 * 0.625).abs() < 0.5);
        assert!(one["total_usd"].as_f64().unwrap() > hundred["total_usd"].as_f64().unwrap());
    }

    #[test]
    fn bad_inputs_are_refused() {
        let parsed = T::parse_from(["t", "--events-per-second", "0"]);
        assert!(estimate(&parsed.cost).is_err());
        let parsed = T::parse_from(["t", "--events-per-second", "10", "--batch", "501"]);
        assert!(estimate(&parsed.cost).is_err());
    }
}
