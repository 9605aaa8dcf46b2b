//! The AWS backend: SQS as the queue, DynamoDB as the stores. The same code
//! talks to real AWS, LocalStack or moto: only the endpoint differs.

pub mod dynamodb;
pub mod resources;
pub mod sqs;

pub use aws_config::SdkConfig;
pub use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
pub use aws_sdk_dynamodb::Client as DynamoClient;
pub use aws_sdk_sqs::Client as SqsClient;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};

use crate::ports::BackendError;

/// Loads the AWS configuration the standard way (environment, profile, IMDS,
/// and `AWS_ENDPOINT_URL`), optionally pointing every client at `endpoint_url`.
/// With an endpoint (an emulator such as LocalStack or moto), a missing region
/// defaults to `us-east-1` and missing credentials to `test`/`test`.
/// Timeouts are bounded so a stuck backend becomes an error, never a hang.
pub async fn sdk_config(endpoint_url: Option<&str>) -> aws_config::SdkConfig {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
        .build_https();
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(2))
        .operation_attempt_timeout(Duration::from_secs(3))
        .operation_timeout(Duration::from_secs(8))
        .build();
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .http_client(http)
        .timeout_config(timeouts);
    if let Some(url) = endpoint_url {
        loader = loader.endpoint_url(url);
        let set = |name: &str| std::env::var_os(name).is_some_and(|v| !v.is_empty());
        if !set("AWS_REGION") && !set("AWS_DEFAULT_REGION") {
            loader = loader.region(aws_config::Region::new("us-east-1"));
        }
        if !set("AWS_ACCESS_KEY_ID") && !set("AWS_PROFILE") {
            loader = loader.credentials_provider(aws_sdk_sqs::config::Credentials::new(
                "test",
                "test",
                None,
                None,
                "eye-emulator",
            ));
        }
    }
    loader.load().await
}

/// Maps an SDK error to a port error: throttling is [`BackendError::Busy`].
pub fn classify<E, R>(operation: &str, err: &SdkError<E, R>) -> BackendError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let code = err.as_service_error().and_then(|e| e.code()).unwrap_or("");
    let message = match err.as_service_error() {
        Some(e) => format!("{operation}: {code}: {}", e.message().unwrap_or("")),
        None => format!(
            "{operation}: {}",
            aws_sdk_dynamodb::error::DisplayErrorContext(err)
        ),
    };
    let throttled = matches!(
        code,
        "ThrottlingException"
            | "ProvisionedThroughputExceededException"
            | "RequestLimitExceeded"
            | "RequestThrottled"
            | "RequestThrottledException"
            | "Throttling"
            | "SlowDown"
    );
    if throttled {
        BackendError::Busy(message)
    } else {
        BackendError::Failed(message)
    }
}

/// Counts of AWS API calls and units, for the efficiency report of `eye bench`.
#[derive(Debug, Default)]
pub struct CallCounts {
    /// `SendMessageBatch` calls.
    pub sqs_send_batches: AtomicU64,
    /// Messages sent to SQS.
    pub sqs_messages: AtomicU64,
    /// Events those messages carried.
    pub sqs_events: AtomicU64,
    /// `ReceiveMessage` calls (the local poller's; on AWS the Lambda trigger's).
    pub sqs_receives: AtomicU64,
    /// `DeleteMessageBatch` calls.
    pub sqs_deletes: AtomicU64,
    /// `PutItem` calls.
    pub dynamodb_puts: AtomicU64,
    /// Write request units those puts cost, indexes included, computed from
    /// the item sizes by DynamoDB's rules (a failed conditional put costs too).
    pub dynamodb_write_units: AtomicU64,
    /// `Query` calls.
    pub dynamodb_queries: AtomicU64,
}

impl CallCounts {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// The counts as JSON.
    pub fn snapshot(&self) -> serde_json::Value {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        serde_json::json!({
            "sqs_send_batches": get(&self.sqs_send_batches),
            "sqs_messages": get(&self.sqs_messages),
            "sqs_events": get(&self.sqs_events),
            "sqs_receives": get(&self.sqs_receives),
            "sqs_deletes": get(&self.sqs_deletes),
            "dynamodb_puts": get(&self.dynamodb_puts),
            "dynamodb_write_units": get(&self.dynamodb_write_units),
            "dynamodb_queries": get(&self.dynamodb_queries),
        })
    }
}
