//! The processor Lambda: builds its clients once and hands the handler to the runtime.

use std::sync::Arc;

use eye_processor::env_number;
use eye_shared::adapters::aws::dynamodb::{DynamoConfig, DynamoStore};
use eye_shared::adapters::aws::{DynamoClient, SqsEvent, sdk_config};
use eye_shared::domain::{Rules, SchemaRegistry};
use eye_shared::processor::Processor;
use lambda_runtime::{Error, LambdaEvent, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    tracing_subscriber::fmt()
        .json()
        .with_ansi(false)
        .without_time()
        .with_current_span(false)
        .init();
    let var = |name: &str| std::env::var(name).map_err(|_| format!("{name} is not set"));
    let retention: u32 = env_number("EYE_RETENTION_DAYS", 0)?;
    let config = DynamoConfig {
        events_table: var("EYE_EVENTS_TABLE")?,
        errors_table: var("EYE_ERRORS_TABLE")?,
        shards: env_number("EYE_GSI_SHARDS", 4)?,
        retention_days: (retention > 0).then_some(retention),
    };
    let rules = Rules {
        max_skew_micros: env_number::<i64>("EYE_MAX_SKEW_SECS", 300)? * 1_000_000,
        strict_types: std::env::var("EYE_STRICT_TYPES").is_ok_and(|v| v == "true" || v == "1"),
    };
    let store = Arc::new(DynamoStore::new(
        DynamoClient::new(&sdk_config(None).await),
        config,
        Arc::default(),
    ));
    let processor = Processor::new(
        store.clone(),
        store,
        Arc::new(SchemaRegistry::builtin()?),
        rules,
    );
    lambda_runtime::run(service_fn(|event: LambdaEvent<SqsEvent>| {
        let processor = &processor;
        async move { Ok::<_, Error>(eye_processor::handle(processor, event.payload).await) }
    }))
    .await
}
