//! `template.yaml` and `eye bootstrap` create the same resources: both are
//! checked here against the one spec in `adapters::aws::resources`.

#![cfg(feature = "aws")]

use eye_shared::adapters::aws::resources::{
    PROCESSOR_TIMEOUT_SECS, Resources, TTL_ATTRIBUTE, TableSpec,
};
use serde_yaml_ng::Value;

fn root(file: &str) -> String {
    std::fs::read_to_string(format!("{}/../{file}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

fn stack_name() -> String {
    let config = root("samconfig.toml");
    let line = config
        .lines()
        .find(|l| l.trim_start().starts_with("stack_name"))
        .expect("stack_name in samconfig.toml");
    line.split('"').nth(1).unwrap().to_owned()
}

/// A value with CloudFormation's `!Sub "${AWS::StackName}…"` resolved.
fn text(v: &Value, stack: &str) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Tagged(t) if t.tag == "Sub" => {
            text(&t.value, stack).replace("${AWS::StackName}", stack)
        }
        other => panic!("expected a string, got {other:?}"),
    }
}

fn number(v: &Value) -> u64 {
    match v {
        Value::Number(n) => n.as_u64().unwrap(),
        Value::String(s) => s.parse().unwrap(),
        other => panic!("expected a number, got {other:?}"),
    }
}

fn key_schema(v: &Value) -> (String, Option<String>) {
    let mut hash = None;
    let mut range = None;
    for k in v.as_sequence().unwrap() {
        let name = k["AttributeName"].as_str().unwrap().to_owned();
        match k["KeyType"].as_str().unwrap() {
            "HASH" => hash = Some(name),
            "RANGE" => range = Some(name),
            other => panic!("key type {other}"),
        }
    }
    (hash.unwrap(), range)
}

fn table_from_template(template: &Value, logical: &str, stack: &str) -> TableSpec {
    let props = &template["Resources"][logical]["Properties"];
    assert_eq!(
        props["BillingMode"].as_str(),
        Some("PAY_PER_REQUEST"),
        "{logical} is on-demand"
    );
    assert_eq!(
        props["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"].as_bool(),
        Some(true),
        "{logical} has PITR"
    );
    assert_eq!(
        props["TimeToLiveSpecification"]["AttributeName"].as_str(),
        Some(TTL_ATTRIBUTE)
    );
    let (hash, range) = key_schema(&props["KeySchema"]);
    let mut attributes: Vec<String> = Vec::new();
    for a in props["AttributeDefinitions"].as_sequence().unwrap() {
        assert_eq!(
            a["AttributeType"].as_str(),
            Some("S"),
            "every key is a string: {a:?}"
        );
        attributes.push(a["AttributeName"].as_str().unwrap().to_owned());
    }
    let indexes: Vec<(String, String, String)> = props["GlobalSecondaryIndexes"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|g| {
            assert_eq!(g["Projection"]["ProjectionType"].as_str(), Some("ALL"));
            let (h, r) = key_schema(&g["KeySchema"]);
            (g["IndexName"].as_str().unwrap().to_owned(), h, r.unwrap())
        })
        .collect();
    let spec = Resources::new(stack);
    let expected = [&spec.events, &spec.errors]
        .into_iter()
        .find(|t| t.hash_key == hash)
        .unwrap()
        .clone();
    let mut expected_attributes: Vec<String> = expected
        .key_attributes()
        .iter()
        .map(|s| s.to_string())
        .collect();
    expected_attributes.sort();
    attributes.sort();
    assert_eq!(
        attributes, expected_attributes,
        "{logical} attribute definitions"
    );
    let expected_indexes: Vec<(String, String, String)> = expected
        .indexes
        .iter()
        .map(|i| {
            (
                i.name.to_owned(),
                i.hash_key.to_owned(),
                i.range_key.to_owned(),
            )
        })
        .collect();
    assert_eq!(indexes, expected_indexes, "{logical} indexes");
    assert_eq!(range.as_deref(), expected.range_key, "{logical} sort key");
    assert_eq!(
        text(&props["TableName"], stack),
        expected.name,
        "{logical} name"
    );
    expected
}

#[test]
fn template_and_bootstrap_define_the_same_resources() {
    let template: Value = serde_yaml_ng::from_str(&root("template.yaml")).unwrap();
    let stack = stack_name();
    let spec = Resources::new(&stack);

    assert_eq!(
        table_from_template(&template, "EventsTable", &stack),
        spec.events
    );
    assert_eq!(
        table_from_template(&template, "ErrorsTable", &stack),
        spec.errors
    );

    let queue = &template["Resources"]["EventQueue"]["Properties"];
    assert_eq!(text(&queue["QueueName"], &stack), spec.queue.name);
    assert_eq!(
        number(&queue["VisibilityTimeout"]),
        u64::from(spec.queue.visibility_timeout_secs)
    );
    assert_eq!(
        number(&queue["MessageRetentionPeriod"]),
        u64::from(spec.queue.retention_secs)
    );
    assert_eq!(
        number(&queue["RedrivePolicy"]["maxReceiveCount"]),
        u64::from(spec.queue.max_receive_count)
    );
    let dlq = &template["Resources"]["DeadLetterQueue"]["Properties"];
    assert_eq!(text(&dlq["QueueName"], &stack), spec.queue.dlq_name);
    assert_eq!(
        number(&dlq["MessageRetentionPeriod"]),
        u64::from(spec.queue.dlq_retention_secs)
    );

    let processor = &template["Resources"]["ProcessorFunction"]["Properties"];
    assert_eq!(
        number(&processor["Timeout"]),
        u64::from(PROCESSOR_TIMEOUT_SECS)
    );
    assert!(spec.queue.visibility_timeout_secs >= 6 * PROCESSOR_TIMEOUT_SECS);
    let trigger = &processor["Events"]["Queue"]["Properties"];
    assert_eq!(
        trigger["FunctionResponseTypes"][0].as_str(),
        Some("ReportBatchItemFailures")
    );
    assert!(number(&trigger["MaximumBatchingWindowInSeconds"]) > 0);
}

#[test]
fn each_function_gets_only_what_it_needs() {
    let template: Value = serde_yaml_ng::from_str(&root("template.yaml")).unwrap();
    let actions = |logical: &str| -> Vec<String> {
        template["Resources"][logical]["Properties"]["Policies"]
            .as_sequence()
            .unwrap()
            .iter()
            .flat_map(|p| p["Statement"].as_sequence().unwrap().clone())
            .map(|s| s["Action"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(actions("IngestFunction"), ["sqs:SendMessage"]);
    assert_eq!(actions("ProcessorFunction"), ["dynamodb:PutItem"]);
    for f in ["IngestFunction", "ProcessorFunction"] {
        let meta = &template["Resources"][f]["Metadata"];
        assert_eq!(meta["BuildMethod"].as_str(), Some("rust-cargolambda"));
    }
    assert_eq!(
        template["Globals"]["Function"]["Runtime"].as_str(),
        Some("provided.al2023")
    );
    assert_eq!(
        template["Globals"]["Function"]["Architectures"][0].as_str(),
        Some("arm64")
    );
}

#[test]
fn template_defaults_are_the_config_defaults() {
    use eye_shared::config;
    let template: Value = serde_yaml_ng::from_str(&root("template.yaml")).unwrap();
    let default = |name: &str| template["Parameters"][name]["Default"].clone();
    assert_eq!(number(&default("GsiShards")), u64::from(config::GSI_SHARDS));
    assert_eq!(
        number(&default("RetentionDays")),
        u64::from(config::RETENTION_FOREVER)
    );
    assert_eq!(
        number(&default("MaxSkewSeconds")),
        u64::from(config::MAX_SKEW_SECS)
    );
    assert!(!config::flag(default("StrictEventTypes").as_str().unwrap()));
    let redrive = &template["Resources"]["EventQueue"]["Properties"]["RedrivePolicy"];
    assert_eq!(
        number(&redrive["maxReceiveCount"]),
        u64::from(config::MAX_ATTEMPTS)
    );
}
