//! The AWS resources The Eye needs, described once. `eye bootstrap` creates them
//! from these specs, and a test checks `template.yaml` against the same specs,
//! so the two cannot drift apart.

use std::time::Duration;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType,
    PointInTimeRecoverySpecification, Projection, ProjectionType, ScalarAttributeType,
    TimeToLiveSpecification,
};
use aws_sdk_sqs::types::QueueAttributeName;

use super::classify;
use crate::ports::BackendError;

/// Name of the TTL attribute of both tables.
pub const TTL_ATTRIBUTE: &str = "expires_at";

/// A global secondary index: name, partition key, sort key (all strings),
/// projecting every attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexSpec {
    /// Index name.
    pub name: &'static str,
    /// Partition key attribute.
    pub hash_key: &'static str,
    /// Sort key attribute.
    pub range_key: &'static str,
}

/// A DynamoDB table: string keys, on-demand, PITR, TTL on [`TTL_ATTRIBUTE`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSpec {
    /// Table name.
    pub name: String,
    /// Partition key attribute.
    pub hash_key: &'static str,
    /// Sort key attribute, if any.
    pub range_key: Option<&'static str>,
    /// Global secondary indexes.
    pub indexes: Vec<IndexSpec>,
}

impl TableSpec {
    /// Every key attribute (table and indexes), sorted, each once: all are `S`.
    pub fn key_attributes(&self) -> Vec<&'static str> {
        let mut names: Vec<&'static str> = [Some(self.hash_key), self.range_key]
            .into_iter()
            .flatten()
            .chain(self.indexes.iter().flat_map(|i| [i.hash_key, i.range_key]))
            .collect();
        names.sort_unstable();
        names.dedup();
        names
    }
}

/// The events table: `session_id` + `ts_seq`, with the category and time indexes.
pub fn events_table(name: &str) -> TableSpec {
    TableSpec {
        name: name.to_owned(),
        hash_key: "session_id",
        range_key: Some("ts_seq"),
        indexes: vec![
            IndexSpec {
                name: "by_category",
                hash_key: "cat_pk",
                range_key: "t",
            },
            IndexSpec {
                name: "by_time",
                hash_key: "day_pk",
                range_key: "t",
            },
        ],
    }
}

/// The error records table: `error_id`, with the time and code indexes.
pub fn errors_table(name: &str) -> TableSpec {
    TableSpec {
        name: name.to_owned(),
        hash_key: "error_id",
        range_key: None,
        indexes: vec![
            IndexSpec {
                name: "by_time",
                hash_key: "day_pk",
                range_key: "t",
            },
            IndexSpec {
                name: "by_code",
                hash_key: "code_pk",
                range_key: "t",
            },
        ],
    }
}

/// The queue and its dead-letter queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueSpec {
    /// Queue name.
    pub name: String,
    /// Dead-letter queue name.
    pub dlq_name: String,
    /// Seconds a received message stays invisible: at least 6× the processor's
    /// timeout, as AWS advises for Lambda triggers.
    pub visibility_timeout_secs: u32,
    /// Receives before a message moves to the dead-letter queue.
    pub max_receive_count: u32,
    /// How long messages are kept, in seconds (4 days on the queue).
    pub retention_secs: u32,
    /// How long dead letters are kept, in seconds (14 days, the maximum).
    pub dlq_retention_secs: u32,
}

/// The processor Lambda's timeout in `template.yaml`, in seconds.
pub const PROCESSOR_TIMEOUT_SECS: u32 = 30;

impl QueueSpec {
    /// The deployed settings, named after `prefix`.
    pub fn new(prefix: &str) -> Self {
        Self {
            name: format!("{prefix}-queue"),
            dlq_name: format!("{prefix}-dlq"),
            visibility_timeout_secs: 6 * PROCESSOR_TIMEOUT_SECS,
            max_receive_count: crate::config::MAX_ATTEMPTS,
            retention_secs: 4 * 24 * 3600,
            dlq_retention_secs: 14 * 24 * 3600,
        }
    }
}

/// Every resource of one deployment, named after a prefix (the stack name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resources {
    /// Events table.
    pub events: TableSpec,
    /// Error records table.
    pub errors: TableSpec,
    /// Queue and dead-letter queue.
    pub queue: QueueSpec,
}

impl Resources {
    /// The names `template.yaml` gives a stack called `prefix`.
    pub fn new(prefix: &str) -> Self {
        Self {
            events: events_table(&format!("{prefix}-events")),
            errors: errors_table(&format!("{prefix}-errors")),
            queue: QueueSpec::new(prefix),
        }
    }
}

/// What bootstrap did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Bootstrapped {
    /// The queue's URL.
    pub queue_url: String,
    /// The dead-letter queue's URL.
    pub dlq_url: String,
    /// Resources created now (the others existed).
    pub created: Vec<String>,
}

/// Creates whatever is missing. Safe to run again.
pub async fn bootstrap(
    sdk: &aws_config::SdkConfig,
    resources: &Resources,
) -> Result<Bootstrapped, BackendError> {
    let mut done = Bootstrapped::default();
    let sqs = aws_sdk_sqs::Client::new(sdk);
    let q = &resources.queue;

    let (dlq_url, created) = ensure_queue(
        &sqs,
        &q.dlq_name,
        vec![(
            QueueAttributeName::MessageRetentionPeriod,
            q.dlq_retention_secs.to_string(),
        )],
    )
    .await?;
    if created {
        done.created.push(format!("queue {}", q.dlq_name));
    }
    let dlq_arn = super::sqs::queue_arn(&sqs, &dlq_url).await?;
    let redrive = serde_json::json!({
        "deadLetterTargetArn": dlq_arn,
        "maxReceiveCount": q.max_receive_count,
    })
    .to_string();
    let (queue_url, created) = ensure_queue(
        &sqs,
        &q.name,
        vec![
            (
                QueueAttributeName::VisibilityTimeout,
                q.visibility_timeout_secs.to_string(),
            ),
            (
                QueueAttributeName::MessageRetentionPeriod,
                q.retention_secs.to_string(),
            ),
            (QueueAttributeName::RedrivePolicy, redrive),
        ],
    )
    .await?;
    if created {
        done.created.push(format!("queue {}", q.name));
    }
    done.queue_url = queue_url;
    done.dlq_url = dlq_url;

    let ddb = aws_sdk_dynamodb::Client::new(sdk);
    for table in [&resources.events, &resources.errors] {
        if ensure_table(&ddb, table).await? {
            done.created.push(format!("table {}", table.name));
        }
    }
    Ok(done)
}

async fn ensure_queue(
    sqs: &aws_sdk_sqs::Client,
    name: &str,
    attributes: Vec<(QueueAttributeName, String)>,
) -> Result<(String, bool), BackendError> {
    if let Ok(found) = sqs.get_queue_url().queue_name(name).send().await {
        if let Some(url) = found.queue_url() {
            // Bring the settings in line with the spec.
            let mut set = sqs.set_queue_attributes().queue_url(url);
            for (k, v) in &attributes {
                set = set.attributes(k.clone(), v.clone());
            }
            set.send()
                .await
                .map_err(|e| classify("SetQueueAttributes", &e))?;
            return Ok((url.to_owned(), false));
        }
    }
    let mut create = sqs.create_queue().queue_name(name);
    for (k, v) in attributes {
        create = create.attributes(k, v);
    }
    let out = create
        .send()
        .await
        .map_err(|e| classify("CreateQueue", &e))?;
    let url = out
        .queue_url()
        .ok_or_else(|| BackendError::Failed(format!("CreateQueue {name} returned no URL")))?;
    Ok((url.to_owned(), true))
}

fn build<T, E: std::fmt::Display>(r: Result<T, E>) -> Result<T, BackendError> {
    r.map_err(|e| BackendError::Failed(format!("building a request: {e}")))
}

fn key(name: &str, key_type: KeyType) -> Result<KeySchemaElement, BackendError> {
    build(
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(key_type)
            .build(),
    )
}

async fn ensure_table(
    ddb: &aws_sdk_dynamodb::Client,
    spec: &TableSpec,
) -> Result<bool, BackendError> {
    let exists = ddb
        .describe_table()
        .table_name(&spec.name)
        .send()
        .await
        .is_ok();
    if !exists {
        let mut create = ddb
            .create_table()
            .table_name(&spec.name)
            .billing_mode(BillingMode::PayPerRequest)
            .key_schema(key(spec.hash_key, KeyType::Hash)?);
        if let Some(range) = spec.range_key {
            create = create.key_schema(key(range, KeyType::Range)?);
        }
        for name in spec.key_attributes() {
            create = create.attribute_definitions(build(
                AttributeDefinition::builder()
                    .attribute_name(name)
                    .attribute_type(ScalarAttributeType::S)
                    .build(),
            )?);
        }
        for index in &spec.indexes {
            create = create.global_secondary_indexes(build(
                GlobalSecondaryIndex::builder()
                    .index_name(index.name)
                    .key_schema(key(index.hash_key, KeyType::Hash)?)
                    .key_schema(key(index.range_key, KeyType::Range)?)
                    .projection(
                        Projection::builder()
                            .projection_type(ProjectionType::All)
                            .build(),
                    )
                    .build(),
            )?);
        }
        create
            .send()
            .await
            .map_err(|e| classify("CreateTable", &e))?;
        wait_active(ddb, &spec.name).await?;
    }
    let ttl = ddb
        .update_time_to_live()
        .table_name(&spec.name)
        .time_to_live_specification(build(
            TimeToLiveSpecification::builder()
                .attribute_name(TTL_ATTRIBUTE)
                .enabled(true)
                .build(),
        )?)
        .send()
        .await;
    if let Err(e) = ttl {
        let e = classify("UpdateTimeToLive", &e);
        // Enabling TTL twice is refused by DynamoDB; that is fine.
        if !e.to_string().contains("already enabled") {
            return Err(e);
        }
    }
    if let Err(e) = ddb
        .update_continuous_backups()
        .table_name(&spec.name)
        .point_in_time_recovery_specification(build(
            PointInTimeRecoverySpecification::builder()
                .point_in_time_recovery_enabled(true)
                .build(),
        )?)
        .send()
        .await
    {
        tracing::warn!(table = %spec.name, error = %classify("UpdateContinuousBackups", &e), "point-in-time recovery not enabled");
    }
    Ok(!exists)
}

async fn wait_active(ddb: &aws_sdk_dynamodb::Client, table: &str) -> Result<(), BackendError> {
    for _ in 0..120 {
        let out = ddb
            .describe_table()
            .table_name(table)
            .send()
            .await
            .map_err(|e| classify("DescribeTable", &e))?;
        let status = out
            .table()
            .and_then(|t| t.table_status())
            .map(|s| s.as_str().to_owned());
        if status.as_deref() == Some("ACTIVE") {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(BackendError::Failed(format!(
        "table {table} did not become ACTIVE within 60s"
    )))
}
