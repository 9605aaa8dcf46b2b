//! DynamoDB: the event store and the error store, and their queries.
//!
//! Events: partition key `session_id`, sort key `ts_seq`; written with a
//! conditional `PutItem` (`attribute_not_exists`), where a failed condition
//! means "already stored". Two indexes serve the other queries:
//! - `by_category`: `cat_pk = "<category>#<shard>"`, sort key `t`;
//! - `by_time`: `day_pk = "<YYYY-MM-DD>#<shard>"`, sort key `t`.
//!
//! The shard (0..shards) comes from the event's seq, so one category's or one
//! day's writes spread over `shards` index partitions (each takes about 1,000
//! writes/s). Queries ask every shard and merge by `t`; callers never see shards.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;
use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;
use serde_json::Value;
use serde_json::value::RawValue;

use super::{CallCounts, classify};
use crate::domain::keys::Seq;
use crate::domain::range::KeyRange;
use crate::domain::{ErrorCode, ErrorRecord, StoredEvent, Timestamp};
use crate::ports::{
    BackendError, ErrorFilter, ErrorQuery, ErrorStore, EventFilter, EventQuery, EventStore, Page,
    PageRequest, PutOutcome,
};

type Item = HashMap<String, AttributeValue>;

/// Puts in flight at once per batch.
const PUT_CONCURRENCY: usize = 32;

/// Settings of the DynamoDB stores.
#[derive(Debug, Clone)]
pub struct DynamoConfig {
    /// Events table name.
    pub events_table: String,
    /// Error records table name.
    pub errors_table: String,
    /// Write shards per index partition key. Only ever raise it: queries ask
    /// shards `0..shards`, which covers items written with fewer.
    pub shards: u16,
    /// Keep items this many days (DynamoDB TTL), or forever.
    pub retention_days: Option<u32>,
}

/// Events and error records in DynamoDB.
#[derive(Clone)]
pub struct DynamoStore {
    client: aws_sdk_dynamodb::Client,
    config: DynamoConfig,
    counts: Arc<CallCounts>,
}

impl DynamoStore {
    /// A store over existing tables.
    pub fn new(
        client: aws_sdk_dynamodb::Client,
        config: DynamoConfig,
        counts: Arc<CallCounts>,
    ) -> Self {
        Self {
            client,
            config: DynamoConfig {
                shards: config.shards.max(1),
                ..config
            },
            counts,
        }
    }

    fn expires_at(&self, received_at: Timestamp) -> Option<AttributeValue> {
        self.config.retention_days.map(|days| {
            let secs = received_at.as_micros() / 1_000_000 + i64::from(days) * 86_400;
            AttributeValue::N(secs.to_string())
        })
    }

    async fn put(
        &self,
        table: &str,
        item: Item,
        key_attr: &str,
    ) -> Result<PutOutcome, BackendError> {
        let units = write_units(&item);
        let result = self
            .client
            .put_item()
            .table_name(table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(#k)")
            .expression_attribute_names("#k", key_attr)
            .send()
            .await;
        CallCounts::add(&self.counts.dynamodb_puts, 1);
        CallCounts::add(&self.counts.dynamodb_write_units, units);
        match result {
            Ok(_) => Ok(PutOutcome::Stored),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
            {
                Ok(PutOutcome::Duplicate)
            }
            Err(e) => Err(classify("PutItem", &e)),
        }
    }

    async fn put_all(
        &self,
        table: &str,
        items: Vec<Item>,
        key_attr: &str,
    ) -> Vec<Result<PutOutcome, BackendError>> {
        let mut results = Vec::with_capacity(items.len());
        let mut in_flight = FuturesOrdered::new();
        for item in items {
            if in_flight.len() >= PUT_CONCURRENCY {
                if let Some(r) = in_flight.next().await {
                    results.push(r);
                }
            }
            in_flight.push_back(self.put(table, item, key_attr));
        }
        while let Some(r) = in_flight.next().await {
            results.push(r);
        }
        results
    }

    /// Queries one partition of `index` for sort keys in `[lo, hi]`, up to
    /// `want` items, only those of `app` when it is given. (DynamoDB filters
    /// after it reads, so a filtered page may take more than one call.)
    async fn query_partition(
        &self,
        table: &str,
        index: Option<&str>,
        (pk_name, pk): (&str, String),
        (sk_name, lo, hi): (&str, &str, &str),
        app: Option<&str>,
        want: usize,
    ) -> Result<Vec<Item>, BackendError> {
        let mut names = HashMap::from([
            ("#pk".to_owned(), pk_name.to_owned()),
            ("#sk".to_owned(), sk_name.to_owned()),
        ]);
        let mut values = HashMap::from([
            (":pk".to_owned(), AttributeValue::S(pk)),
            (":lo".to_owned(), AttributeValue::S(lo.to_owned())),
            (":hi".to_owned(), AttributeValue::S(hi.to_owned())),
        ]);
        if let Some(app) = app {
            names.insert("#app".to_owned(), "app".to_owned());
            values.insert(":app".to_owned(), AttributeValue::S(app.to_owned()));
        }
        let mut items = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(table)
                .set_index_name(index.map(str::to_owned))
                .key_condition_expression("#pk = :pk AND #sk BETWEEN :lo AND :hi")
                .set_filter_expression(app.map(|_| "#app = :app".to_owned()))
                .set_expression_attribute_names(Some(names.clone()))
                .set_expression_attribute_values(Some(values.clone()))
                .limit(i32::try_from(want - items.len()).unwrap_or(i32::MAX))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| classify("Query", &e))?;
            CallCounts::add(&self.counts.dynamodb_queries, 1);
            items.extend(out.items().iter().cloned());
            match out.last_evaluated_key() {
                Some(key) if items.len() < want => start = Some(key.clone()),
                _ => return Ok(items),
            }
        }
    }

    /// Queries every shard of `prefixes` (`"<prefix>#<shard>"`) and merges by
    /// `t`, returning at most `want` items in order.
    async fn fan_out(
        &self,
        table: &str,
        index: &str,
        (pk_name, prefixes): (&str, &[String]),
        (lo, hi): (&str, &str),
        app: Option<&str>,
        want: usize,
    ) -> Result<Vec<Item>, BackendError> {
        let mut merged = Vec::new();
        for prefix in prefixes {
            let queries = (0..self.config.shards).map(|shard| {
                self.query_partition(
                    table,
                    Some(index),
                    (pk_name, format!("{prefix}#{shard}")),
                    ("t", lo, hi),
                    app,
                    want,
                )
            });
            let mut found = Vec::new();
            for r in futures_util::future::join_all(queries).await {
                found.extend(r?);
            }
            found.sort_by(|a, b| s(a, "t").cmp(s(b, "t")));
            merged.extend(found);
            // Prefixes are visited in key order (days in order), so once this
            // many are found, later prefixes cannot come before them.
            if merged.len() >= want {
                break;
            }
        }
        merged.truncate(want);
        Ok(merged)
    }
}

fn s<'a>(item: &'a Item, name: &str) -> &'a str {
    match item.get(name) {
        Some(AttributeValue::S(v)) => v,
        _ => "",
    }
}

fn optional(item: &Item, name: &str) -> Option<String> {
    match item.get(name) {
        Some(AttributeValue::S(v)) => Some(v.clone()),
        _ => None,
    }
}

fn required(item: &Item, name: &str) -> Result<String, BackendError> {
    match item.get(name) {
        Some(AttributeValue::S(v)) => Ok(v.clone()),
        _ => Err(BackendError::Failed(format!(
            "item without string attribute {name}"
        ))),
    }
}

fn time(item: &Item, name: &str) -> Result<Timestamp, BackendError> {
    Timestamp::parse(&required(item, name)?)
        .map_err(|e| BackendError::Failed(format!("attribute {name}: {e}")))
}

/// An item's size by DynamoDB's rules: attribute names plus values (strings
/// by their UTF-8 length, numbers by about one byte per two digits, maps and
/// lists with 3 bytes of overhead plus one per element).
pub fn item_size(item: &Item) -> u64 {
    fn value(v: &AttributeValue) -> u64 {
        match v {
            AttributeValue::S(s) => s.len() as u64,
            AttributeValue::N(n) => (n.trim_start_matches('-').len() as u64).div_ceil(2) + 1,
            AttributeValue::Bool(_) | AttributeValue::Null(_) => 1,
            AttributeValue::L(l) => 3 + l.iter().map(|v| 1 + value(v)).sum::<u64>(),
            AttributeValue::M(m) => {
                3 + m
                    .iter()
                    .map(|(k, v)| 1 + k.len() as u64 + value(v))
                    .sum::<u64>()
            }
            _ => 0,
        }
    }
    item.iter().map(|(k, v)| k.len() as u64 + value(v)).sum()
}

/// Write request units of one put: 1 per KB in the table, and the same in each
/// index whose keys the item carries (every index projects all attributes).
/// A put refused by its condition costs the same.
pub fn write_units(item: &Item) -> u64 {
    let per_copy = item_size(item).div_ceil(1024).max(1);
    let indexes = ["cat_pk", "day_pk", "code_pk"]
        .iter()
        .filter(|k| item.contains_key(**k))
        .count() as u64;
    per_copy * (1 + indexes)
}

/// JSON → a native DynamoDB value (objects become maps).
pub fn to_attribute(value: &Value) -> AttributeValue {
    match value {
        Value::Null => AttributeValue::Null(true),
        Value::Bool(b) => AttributeValue::Bool(*b),
        Value::Number(n) => AttributeValue::N(n.to_string()),
        Value::String(s) => AttributeValue::S(s.clone()),
        Value::Array(a) => AttributeValue::L(a.iter().map(to_attribute).collect()),
        Value::Object(o) => AttributeValue::M(
            o.iter()
                .map(|(k, v)| (k.clone(), to_attribute(v)))
                .collect(),
        ),
    }
}

/// A native DynamoDB value → JSON.
pub fn from_attribute(value: &AttributeValue) -> Value {
    match value {
        AttributeValue::Bool(b) => Value::Bool(*b),
        AttributeValue::N(n) => {
            serde_json::from_str(n).unwrap_or_else(|_| Value::String(n.clone()))
        }
        AttributeValue::S(s) => Value::String(s.clone()),
        AttributeValue::L(l) => Value::Array(l.iter().map(from_attribute).collect()),
        AttributeValue::M(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (k.clone(), from_attribute(v)))
                .collect(),
        ),
        _ => Value::Null,
    }
}

/// The item of an event.
pub fn event_item(e: &StoredEvent, shards: u16, expires_at: Option<AttributeValue>) -> Item {
    let shard = e.seq().shard(shards);
    let data: Value = serde_json::from_str(e.data.get()).unwrap_or(Value::Null);
    let mut item: Item = [
        ("session_id", e.session_id.clone()),
        ("ts_seq", e.session_key()),
        ("t", e.time_key()),
        ("event_id", e.event_id.clone()),
        ("app", e.app.clone()),
        ("category", e.category.clone()),
        ("name", e.name.clone()),
        ("timestamp", e.timestamp.to_rfc3339()),
        ("received_at", e.received_at.to_rfc3339()),
        ("cat_pk", format!("{}#{shard}", e.category)),
        ("day_pk", format!("{}#{shard}", e.timestamp.day())),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), AttributeValue::S(v)))
    .collect();
    item.insert("data".into(), to_attribute(&data));
    for (name, id) in [("user_id", &e.user_id), ("anonymous_id", &e.anonymous_id)] {
        if let Some(id) = id {
            item.insert(name.into(), AttributeValue::S(id.clone()));
        }
    }
    if let Some(context) = &e.context {
        let context: Value = serde_json::from_str(context.get()).unwrap_or(Value::Null);
        item.insert("context".into(), to_attribute(&context));
    }
    if let Some(original) = e.original_timestamp {
        item.insert(
            "original_timestamp".into(),
            AttributeValue::S(original.to_rfc3339()),
        );
    }
    if let Some(exp) = expires_at {
        item.insert(super::resources::TTL_ATTRIBUTE.into(), exp);
    }
    item
}

fn event_from_item(item: &Item) -> Result<StoredEvent, BackendError> {
    let data = item.get("data").map(from_attribute).unwrap_or(Value::Null);
    let data = RawValue::from_string(data.to_string())
        .map_err(|e| BackendError::Failed(format!("attribute data: {e}")))?;
    Ok(StoredEvent {
        event_id: required(item, "event_id")?,
        app: required(item, "app")?,
        session_id: required(item, "session_id")?,
        category: required(item, "category")?,
        name: required(item, "name")?,
        data,
        timestamp: time(item, "timestamp")?,
        original_timestamp: match item.get("original_timestamp") {
            Some(_) => Some(time(item, "original_timestamp")?),
            None => None,
        },
        received_at: time(item, "received_at")?,
        user_id: optional(item, "user_id"),
        anonymous_id: optional(item, "anonymous_id"),
        context: match item.get("context") {
            Some(c) => Some(
                RawValue::from_string(from_attribute(c).to_string())
                    .map_err(|e| BackendError::Failed(format!("attribute context: {e}")))?,
            ),
            None => None,
        },
    })
}

fn error_shard(r: &ErrorRecord, shards: u16) -> u16 {
    u128::from_str_radix(&r.error_id, 16).map_or(0, |n| Seq(n).shard(shards))
}

/// The item of an error record. The raw event is kept as the exact JSON text
/// that was received, so it can be fixed and replayed byte for byte.
pub fn error_item(r: &ErrorRecord, shards: u16, expires_at: Option<AttributeValue>) -> Item {
    let shard = error_shard(r, shards);
    let mut item: Item = [
        ("error_id", r.error_id.clone()),
        ("t", r.time_key()),
        ("code", r.code.as_str().to_owned()),
        ("message", r.message.clone()),
        ("app", r.app.clone()),
        ("received_at", r.received_at.to_rfc3339()),
        ("event_id", r.event_id.clone()),
        ("event", r.event.get().to_owned()),
        ("day_pk", format!("{}#{shard}", r.received_at.day())),
        ("code_pk", format!("{}#{shard}", r.code.as_str())),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), AttributeValue::S(v)))
    .collect();
    if let Some(field) = &r.field {
        item.insert("field".into(), AttributeValue::S(field.clone()));
    }
    if let Some(exp) = expires_at {
        item.insert(super::resources::TTL_ATTRIBUTE.into(), exp);
    }
    item
}

fn error_from_item(item: &Item) -> Result<ErrorRecord, BackendError> {
    let code = required(item, "code")?;
    Ok(ErrorRecord {
        error_id: required(item, "error_id")?,
        code: ErrorCode::parse(&code)
            .ok_or_else(|| BackendError::Failed(format!("unknown error code {code}")))?,
        message: required(item, "message")?,
        field: item.get("field").map(|_| s(item, "field").to_owned()),
        app: required(item, "app")?,
        received_at: time(item, "received_at")?,
        event_id: required(item, "event_id")?,
        event: RawValue::from_string(required(item, "event")?)
            .map_err(|e| BackendError::Failed(format!("attribute event: {e}")))?,
    })
}

#[async_trait]
impl EventStore for DynamoStore {
    async fn put_events(&self, events: Vec<StoredEvent>) -> Vec<Result<PutOutcome, BackendError>> {
        let items = events
            .iter()
            .map(|e| event_item(e, self.config.shards, self.expires_at(e.received_at)))
            .collect();
        self.put_all(&self.config.events_table, items, "session_id")
            .await
    }
}

#[async_trait]
impl ErrorStore for DynamoStore {
    async fn put_errors(&self, errors: Vec<ErrorRecord>) -> Vec<Result<PutOutcome, BackendError>> {
        let items = errors
            .iter()
            .map(|r| error_item(r, self.config.shards, self.expires_at(r.received_at)))
            .collect();
        self.put_all(&self.config.errors_table, items, "error_id")
            .await
    }
}

#[async_trait]
impl EventQuery for DynamoStore {
    async fn session_events(
        &self,
        session_id: &str,
        app: Option<&str>,
        page: PageRequest,
    ) -> Result<Page<StoredEvent>, BackendError> {
        let (lo, hi) = KeyRange::new(page.after.as_deref(), None, None).inclusive();
        let items = self
            .query_partition(
                &self.config.events_table,
                None,
                ("session_id", session_id.to_owned()),
                ("ts_seq", &lo, &hi),
                app,
                page.limit + 1,
            )
            .await?;
        Page::from_fetched(items, page.limit, |item| s(item, "ts_seq").to_owned())
            .try_map(|item| event_from_item(&item))
    }

    async fn find_events(
        &self,
        filter: &EventFilter,
        page: PageRequest,
    ) -> Result<Page<StoredEvent>, BackendError> {
        let by_category = filter
            .category
            .as_ref()
            .map(|c| ("by_category", "cat_pk", c.clone()));
        let table = &self.config.events_table;
        let app = filter.app.as_deref();
        self.find_in_index(table, by_category, (filter.from, filter.to), app, page)
            .await?
            .try_map(|item| event_from_item(&item))
    }
}

#[async_trait]
impl ErrorQuery for DynamoStore {
    async fn find_errors(
        &self,
        filter: &ErrorFilter,
        page: PageRequest,
    ) -> Result<Page<ErrorRecord>, BackendError> {
        let by_code = filter
            .code
            .map(|c| ("by_code", "code_pk", c.as_str().to_owned()));
        let table = &self.config.errors_table;
        let app = filter.app.as_deref();
        self.find_in_index(table, by_code, (filter.from, filter.to), app, page)
            .await?
            .try_map(|item| error_from_item(&item))
    }
}

impl DynamoStore {
    /// One page of items by `t`, from `[from, to)` after the page's cursor:
    /// from the shards of one key of an index (`(index, key attribute,
    /// value)`: a category, a code), or else from the day buckets of `by_time`.
    async fn find_in_index(
        &self,
        table: &str,
        by_key: Option<(&str, &str, String)>,
        (from, to): (Option<Timestamp>, Option<Timestamp>),
        app: Option<&str>,
        page: PageRequest,
    ) -> Result<Page<Item>, BackendError> {
        let range = KeyRange::new(page.after.as_deref(), from, to);
        if range.is_empty() {
            // A cursor past `to`: DynamoDB would refuse the BETWEEN.
            return Ok(Page {
                items: Vec::new(),
                next: None,
            });
        }
        let (lo, hi) = range.inclusive();
        let want = page.limit + 1;
        let items = match by_key {
            Some((index, attribute, key)) => {
                self.fan_out(table, index, (attribute, &[key]), (&lo, &hi), app, want)
                    .await?
            }
            None => {
                let days = range
                    .days(from, to, Timestamp::now())
                    .map_err(|e| BackendError::Unsupported(e.to_string()))?;
                self.fan_out(table, "by_time", ("day_pk", &days), (&lo, &hi), app, want)
                    .await?
            }
        };
        Ok(Page::from_fetched(items, page.limit, |item| {
            s(item, "t").to_owned()
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trips_through_native_attributes() {
        let v: Value = serde_json::json!({"host": "h", "n": 3, "f": 1.5, "ok": true, "none": null, "list": [1, "a", {"x": []}], "form": {"first_name": "John"}});
        assert_eq!(from_attribute(&to_attribute(&v)), v);
        assert!(matches!(to_attribute(&v), AttributeValue::M(_)));
    }

    #[test]
    fn write_units_count_the_table_and_each_index() {
        let mut item: Item = [
            ("session_id", "s"),
            ("ts_seq", "k"),
            ("cat_pk", "c#0"),
            ("day_pk", "d#0"),
            ("t", "k"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), AttributeValue::S(v.to_owned())))
        .collect();
        assert_eq!(
            write_units(&item),
            3,
            "table + by_category + by_time, 1 KB each"
        );
        item.insert("data".into(), AttributeValue::S("x".repeat(1500)));
        assert_eq!(write_units(&item), 6, "2 KB in each of three copies");
        let n: Item = [("n".to_owned(), AttributeValue::N("12345".into()))].into();
        assert_eq!(item_size(&n), 1 + 4);
    }
}
