//! The OpenAPI document against the server it describes (issue 12): the
//! schema-driven fuzzer schemathesis (pinned in `scripts/requirements-dev.txt`,
//! installed by `scripts/test`, which sets `EYE_TEST_SCHEMATHESIS`) generates
//! requests from the document that `eye serve` itself serves, sends them to a
//! real `eye serve`, and fails on a 5xx, on a response the document does not
//! describe, on a request the document allows that the server refuses
//! (`positive_data_acceptance`), and on one it forbids that the server takes
//! (`negative_data_rejection`).

mod common;

use std::process::Command;
use std::time::Instant;

use common::{Server, create_key};
use tempfile::TempDir;

/// Test cases per operation and phase, in Hypothesis's deterministic mode
/// (`--generation-deterministic`: no seed, no example database, the same
/// requests on every run, so a failure reproduces with the same command).
/// About 15 s on two cores when nothing fails.
const MAX_EXAMPLES: &str = "200";

/// schemathesis's configuration, stricter than its defaults.
const CONFIG: &str = r#"# Written by cli/tests/openapi_fuzz.rs.
[checks.positive_data_acceptance]
# The key has both scopes and the server is idle: a request that the document
# allows gets a 2xx. The default would also take 401, 403, 404, 409 and 429.
expected-statuses = ["2xx"]

[warnings]
# Fail on every warning it shows, such as a pattern it cannot generate from
# (unsupported_regex) or most valid requests refused (validation_mismatch).
fail-on = true
"#;

fn schemathesis() -> String {
    std::env::var("EYE_TEST_SCHEMATHESIS").expect(
        "EYE_TEST_SCHEMATHESIS is not set: run ./scripts/test, which installs the pinned schemathesis into .venv and points this variable at it",
    )
}

#[test]
fn the_openapi_document_and_the_server_agree() {
    let exe = schemathesis();
    let dir = TempDir::new().unwrap();
    let db = dir.path().join("eye.db");
    let key = create_key(&db, "fuzz", &["ingest", "query"]);
    let server = Server::start(&db, &["--no-fsync"]);
    let url = server.url.clone();
    let schema = format!("{url}/openapi.json");
    let auth = format!("x-api-key: {key}");
    let config = dir.path().join("schemathesis.toml");
    std::fs::write(&config, CONFIG).unwrap();
    let config = config.to_str().unwrap();
    let args = [
        "--config-file",
        config,
        "run",
        &schema,
        "--url",
        &url,
        "--header",
        &auth,
        // Every response check, and the two that compare what the document
        // allows with what the server takes.
        "--checks",
        "all",
        "--mode",
        "all",
        "--phases",
        "examples,coverage,fuzzing,stateful",
        "--max-examples",
        MAX_EXAMPLES,
        "--generation-deterministic",
        // Every failure, not only the first of each operation.
        "--continue-on-failure",
        "--workers",
        "1",
        "--request-timeout",
        "10",
        "--max-failures",
        "50",
        "--no-color",
        "--output-truncate",
        "false",
    ];
    let start = Instant::now();
    let out = Command::new(&exe)
        .args(args)
        // Whatever it writes (a report, a Hypothesis directory) goes to the
        // temporary directory, not to the work tree.
        .current_dir(dir.path())
        .env("NO_COLOR", "1")
        .output()
        .unwrap_or_else(|e| panic!("could not run {exe}: {e}"));
    let took = start.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    drop(server);
    let command: Vec<String> = args
        .iter()
        .map(|a| {
            let a = a.replace(&key, "KEY");
            if a.contains(' ') { format!("'{a}'") } else { a }
        })
        .collect();
    assert!(
        out.status.success(),
        "schemathesis failed ({}, after {took:?}): the document and the server disagree, or it could not run.\n\
         It ran (with {config} as below, and KEY a key with both scopes):\n  {exe} {}\n\
         {CONFIG}\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}",
        out.status,
        command.join(" "),
    );
    println!("schemathesis passed in {took:?}:\n{stdout}");
}
