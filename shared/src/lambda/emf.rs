//! CloudWatch Embedded Metric Format: the processor's metrics as log lines.

use std::collections::BTreeSet;

use serde_json::json;

use crate::app::process::BatchReport;
use crate::domain::ErrorCode;

/// One CloudWatch Embedded Metric Format line (namespace `TheEye`) of a
/// batch's report, which the Lambda prints and CloudWatch turns into metrics.
pub fn batch_metrics(report: &BatchReport, timestamp_ms: i64) -> String {
    let mut metrics = vec![
        json!({"Name": "BatchSize", "Unit": "Count"}),
        json!({"Name": "EventsStored", "Unit": "Count"}),
        json!({"Name": "Duplicates", "Unit": "Count"}),
        json!({"Name": "ErrorRecords", "Unit": "Count"}),
        json!({"Name": "FailedMessages", "Unit": "Count"}),
        json!({"Name": "ProcessingLag", "Unit": "Milliseconds"}),
    ];
    let mut line = json!({
        "BatchSize": report.messages,
        "EventsStored": report.stored,
        "Duplicates": report.duplicates,
        "ErrorRecords": report.errors.values().sum::<usize>(),
        "FailedMessages": report.failed_messages,
        "ProcessingLag": report.max_lag_ms,
    });
    let codes: BTreeSet<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
    for code in codes {
        let name = format!("Errors_{code}");
        metrics.push(json!({"Name": name, "Unit": "Count"}));
        line[name] = json!(report.errors.get(code).copied().unwrap_or(0));
    }
    line["_aws"] = json!({
        "Timestamp": timestamp_ms,
        "CloudWatchMetrics": [{
            "Namespace": "TheEye",
            "Dimensions": [[]],
            "Metrics": metrics,
        }],
    });
    line.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_becomes_one_metric_line_with_every_error_code() {
        let report = BatchReport {
            messages: 3,
            events: 4,
            stored: 2,
            duplicates: 1,
            errors: [("payload_invalid", 1)].into(),
            failed_messages: 2,
            max_lag_ms: 40,
        };
        let line: serde_json::Value = serde_json::from_str(&batch_metrics(&report, 7)).unwrap();
        assert_eq!(line["EventsStored"], 2);
        assert_eq!(line["Errors_payload_invalid"], 1);
        assert_eq!(
            line["Errors_timestamp_in_future"], 0,
            "every code, zero included"
        );
        assert_eq!(line["FailedMessages"], 2);
        assert_eq!(line["ProcessingLag"], 40);
        let aws = &line["_aws"];
        assert_eq!(aws["Timestamp"], 7);
        assert_eq!(aws["CloudWatchMetrics"][0]["Namespace"], "TheEye");
        let names = aws["CloudWatchMetrics"][0]["Metrics"]
            .as_array()
            .unwrap()
            .len();
        assert_eq!(names, 6 + ErrorCode::ALL.len());
    }
}
