//! `--backend aws`: the same commands against SQS and DynamoDB, on real AWS or
//! any emulator (LocalStack, moto) given by `--endpoint-url`/`AWS_ENDPOINT_URL`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use eye_shared::adapters::aws::dynamodb::{DynamoConfig, DynamoStore};
use eye_shared::adapters::aws::resources::{Resources, bootstrap};
use eye_shared::adapters::aws::sqs::SqsPoller;
use eye_shared::adapters::aws::{CallCounts, DynamoClient, SdkConfig, SqsClient, sdk_config};
use eye_shared::app::process::Processor;
use eye_shared::config;
use eye_shared::lambda::sqs_trigger;
use eye_shared::ports::BackendError;
use eye_shared::ports::StatusSource;
use tokio::sync::watch;

/// Where the AWS resources are.
#[derive(Args, Clone, Debug)]
pub struct AwsArgs {
    /// An AWS-compatible endpoint (LocalStack, moto). Without it, real AWS.
    #[arg(long, env = "AWS_ENDPOINT_URL")]
    pub endpoint_url: Option<String>,
    /// The stack name: resources are <prefix>-queue, <prefix>-dlq,
    /// <prefix>-events and <prefix>-errors, as template.yaml names them.
    #[arg(long, default_value = "the-eye", env = "EYE_STACK")]
    pub prefix: String,
    /// Write shards per index partition (as the stack's GsiShards).
    #[arg(long, default_value_t = config::GSI_SHARDS, env = "EYE_GSI_SHARDS")]
    pub shards: u16,
    /// Days to keep items (DynamoDB TTL); 0 keeps them forever.
    #[arg(long, default_value_t = config::RETENTION_FOREVER, env = "EYE_RETENTION_DAYS")]
    pub retention_days: u32,
}

/// Clients and names of one deployment.
pub struct Aws {
    pub sdk: SdkConfig,
    pub sqs: SqsClient,
    pub resources: Resources,
    pub args: AwsArgs,
    pub counts: Arc<CallCounts>,
}

impl Aws {
    pub async fn connect(args: &AwsArgs) -> Self {
        let sdk = sdk_config(args.endpoint_url.as_deref()).await;
        Self {
            sqs: SqsClient::new(&sdk),
            resources: Resources::new(&args.prefix),
            sdk,
            args: args.clone(),
            counts: Arc::default(),
        }
    }

    pub fn store(&self) -> DynamoStore {
        DynamoStore::new(
            DynamoClient::new(&self.sdk),
            DynamoConfig {
                events_table: self.resources.events.name.clone(),
                errors_table: self.resources.errors.name.clone(),
                shards: self.args.shards,
                retention_days: config::retention(self.args.retention_days),
            },
            self.counts.clone(),
        )
    }

    async fn url_of(&self, name: &str) -> Result<String> {
        self.sqs
            .get_queue_url()
            .queue_name(name)
            .send()
            .await
            .map_err(|e| eye_shared::adapters::aws::classify("GetQueueUrl", &e))
            .with_context(|| {
                format!("finding queue {name}; run `eye bootstrap --backend aws` first")
            })?
            .queue_url
            .with_context(|| format!("queue {name} has no URL"))
    }

    pub async fn queue_url(&self) -> Result<String> {
        self.url_of(&self.resources.queue.name).await
    }

    pub async fn dlq_url(&self) -> Result<String> {
        self.url_of(&self.resources.queue.dlq_name).await
    }

    pub fn region(&self) -> String {
        self.sdk
            .region()
            .map_or_else(|| "us-east-1".to_owned(), |r| r.to_string())
    }
}

/// What `eye bootstrap --backend aws` creates, with test overrides.
pub struct Bootstrap {
    pub aws: AwsArgs,
    pub visibility_timeout: Option<u32>,
    pub max_receive_count: Option<u32>,
}

pub async fn run_bootstrap(args: Bootstrap) -> Result<()> {
    let aws = Aws::connect(&args.aws).await;
    let mut resources = aws.resources.clone();
    if let Some(v) = args.visibility_timeout {
        resources.queue.visibility_timeout_secs = v;
    }
    if let Some(n) = args.max_receive_count {
        resources.queue.max_receive_count = n;
    }
    let done = bootstrap(&aws.sdk, &resources)
        .await
        .context("bootstrapping the AWS resources")?;
    for what in &done.created {
        println!("created {what}");
    }
    println!("queue: {}", done.queue_url);
    println!("dead-letter queue: {}", done.dlq_url);
    println!(
        "tables: {}, {}",
        resources.events.name, resources.errors.name
    );
    Ok(())
}

/// Queue depth for `GET /health`, in messages (SQS does not count events).
pub struct SqsStatus {
    pub sqs: SqsClient,
    pub queue_url: String,
    pub dlq_url: String,
    /// This process's AWS calls, for `eye bench` and cost estimates.
    pub counts: Arc<CallCounts>,
}

#[async_trait::async_trait]
impl StatusSource for SqsStatus {
    async fn status(&self) -> Result<serde_json::Value, BackendError> {
        use aws_sdk_sqs::types::QueueAttributeName as A;
        let count = |url: &str| {
            let sqs = self.sqs.clone();
            let url = url.to_owned();
            async move {
                let out = sqs
                    .get_queue_attributes()
                    .queue_url(url)
                    .attribute_names(A::ApproximateNumberOfMessages)
                    .attribute_names(A::ApproximateNumberOfMessagesNotVisible)
                    .send()
                    .await
                    .map_err(|e| eye_shared::adapters::aws::classify("GetQueueAttributes", &e))?;
                let attrs = out.attributes().cloned().unwrap_or_default();
                let get = |k: &A| {
                    attrs
                        .get(k)
                        .and_then(|v| v.parse::<u64>().ok())
                        .unwrap_or(0)
                };
                Ok::<_, BackendError>(
                    get(&A::ApproximateNumberOfMessages)
                        + get(&A::ApproximateNumberOfMessagesNotVisible),
                )
            }
        };
        Ok(serde_json::json!({
            "queue_depth": count(&self.queue_url).await?,
            "dead_letters": count(&self.dlq_url).await?,
            "queue_unit": "messages",
            "aws_calls": self.counts.snapshot(),
        }))
    }
}

/// Receives from SQS and runs the processor on each batch, in the SQS event
/// shape the Lambda gets, until `stop` turns true.
pub async fn poll_and_process(
    poller: SqsPoller,
    processor: Processor,
    mut stop: watch::Receiver<bool>,
) {
    while !*stop.borrow() {
        let polled = tokio::select! {
            r = poller.poll(1) => r,
            _ = stop.changed() => break,
        };
        match polled {
            Ok(event) if event.records.is_empty() => {}
            Ok(event) => {
                let (response, report) = sqs_trigger::handle(&processor, &event).await;
                tracing::debug!(?report, "batch processed");
                if let Err(e) = poller.delete_done(&event, &response).await {
                    tracing::error!(error = %e, "deleting processed messages failed; they will be redelivered and deduplicated");
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "receiving from SQS failed; retrying in 1s");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}
