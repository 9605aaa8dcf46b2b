//! What the Lambdas share beyond the HTTP handler: the SQS trigger's event
//! mapping ([`sqs_trigger`]), the metric lines ([`emf`]) and their logs.

pub mod emf;
pub mod sqs_trigger;

/// JSON logs on stdout, as CloudWatch reads them: no colours, no timestamps
/// (CloudWatch adds its own), `RUST_LOG` filters when set.
pub fn init_json_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_ansi(false)
        .without_time()
        .with_current_span(false)
        .init();
}
