//! The processor Lambda: builds its clients once and hands the handler to the runtime.

use std::sync::Arc;

use eye_shared::adapters::aws::dynamodb::{DynamoConfig, DynamoStore};
use eye_shared::adapters::aws::{DynamoClient, SqsEvent, sdk_config};
use eye_shared::app::process::Processor;
use eye_shared::config::{self, flag_from_env, number_from_env, text_from_env};
use eye_shared::domain::{Rules, SchemaRegistry};
use lambda_runtime::{Error, LambdaEvent, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    eye_shared::lambda::init_json_logs();
    let store_config = DynamoConfig {
        events_table: text_from_env("EYE_EVENTS_TABLE")?,
        errors_table: text_from_env("EYE_ERRORS_TABLE")?,
        shards: number_from_env("EYE_GSI_SHARDS", config::GSI_SHARDS)?,
        retention_days: config::retention(number_from_env(
            "EYE_RETENTION_DAYS",
            config::RETENTION_FOREVER,
        )?),
    };
    let rules = Rules {
        max_skew_micros: i64::from(number_from_env("EYE_MAX_SKEW_SECS", config::MAX_SKEW_SECS)?)
            * 1_000_000,
        strict_types: flag_from_env("EYE_STRICT_TYPES"),
    };
    let store = Arc::new(DynamoStore::new(
        DynamoClient::new(&sdk_config(None).await),
        store_config,
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
