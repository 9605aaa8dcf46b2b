//! Start-up failures of `eye serve`: each prints one clear line and exits
//! non-zero at once, instead of hanging (issue 12). And commands that only
//! read a database never create one.

mod common;

use std::io::Read;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::{EYE, Server};
use tempfile::TempDir;

/// How long a failed start may take; the bug it guards against was a process
/// that never exited. It exits in milliseconds; the margin is for a loaded CI.
const FAILS_WITHIN: Duration = Duration::from_secs(3);

/// Runs `eye` with `args` and waits for it to exit, killing it after 10 s.
fn run(cmd: &mut Command) -> (ExitStatus, String, Duration) {
    let start = Instant::now();
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start eye");
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            let mut stderr = String::new();
            if let Some(mut pipe) = child.stderr.take() {
                pipe.read_to_string(&mut stderr).expect("read stderr");
            }
            return (status, stderr, start.elapsed());
        }
        if start.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            panic!("eye is still running after 10 s: it hangs instead of exiting");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn serve(db: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(EYE);
    cmd.args(["serve", "--db"]).arg(db).args(extra);
    cmd
}

/// Asserts a failed start: non-zero, fast, and one line that says `expected`.
fn assert_fails(cmd: &mut Command, expected: &[&str]) {
    let (status, stderr, took) = run(cmd);
    assert!(!status.success(), "exit status {status}; stderr: {stderr}");
    assert!(took < FAILS_WITHIN, "took {took:?} to fail");
    let last = stderr.lines().last().unwrap_or_default();
    for part in expected {
        assert!(
            last.contains(part),
            "{part:?} not in the last line: {stderr}"
        );
    }
    assert!(last.starts_with("eye: "), "one line, named: {last}");
}

#[test]
fn the_port_in_use_is_one_clear_line_and_an_exit() {
    let dir = TempDir::new().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    assert_fails(
        &mut serve(&dir.path().join("eye.db"), &["--listen", &addr]),
        &[
            &format!("cannot listen on {addr}"),
            "another process is listening there",
        ],
    );
}

#[test]
fn an_address_not_on_this_machine_is_refused() {
    let dir = TempDir::new().unwrap();
    // TEST-NET-1 (RFC 5737): never assigned to a host; binding fails at once.
    assert_fails(
        &mut serve(&dir.path().join("eye.db"), &["--listen", "192.0.2.1:3000"]),
        &["cannot listen on 192.0.2.1:3000", "not on this machine"],
    );
}

#[test]
fn a_file_that_is_not_a_database_is_refused() {
    let dir = TempDir::new().unwrap();
    let db = dir.path().join("eye.db");
    std::fs::write(&db, "these are notes, not a database\n".repeat(200)).unwrap();
    assert_fails(
        &mut serve(&db, &["--listen", "127.0.0.1:0"]),
        &["opening", "not a database"],
    );
}

#[test]
fn another_applications_sqlite_database_is_refused_and_left_alone() {
    let dir = TempDir::new().unwrap();
    let db = dir.path().join("app.db");
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL);")
        .unwrap();
    drop(conn);
    assert_fails(
        &mut serve(&db, &["--listen", "127.0.0.1:0"]),
        &["another application", "invoices"],
    );
    let conn = rusqlite::Connection::open(&db).unwrap();
    let tables: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(tables, 1, "nothing was added to it");
}

#[test]
fn a_corrupt_database_is_refused() {
    let dir = TempDir::new().unwrap();
    let db = dir.path().join("eye.db");
    // A database in rollback-journal mode, so that everything is in the one
    // file (an eye.db keeps its newest pages in the WAL beside it).
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch("CREATE TABLE events (id INTEGER PRIMARY KEY);")
        .unwrap();
    drop(conn);
    assert!(!dir.path().join("eye.db-wal").exists());
    // Overwrite the schema page after the 100-byte file header.
    let mut bytes = std::fs::read(&db).unwrap();
    for b in &mut bytes[100..4096] {
        *b = 0xA5;
    }
    std::fs::write(&db, bytes).unwrap();
    assert_fails(
        &mut serve(&db, &["--listen", "127.0.0.1:0"]),
        &["opening", "malformed"],
    );
}

#[test]
fn a_read_only_database_is_refused() {
    let dir = TempDir::new().unwrap();
    let db = dir.path().join("eye.db");
    let made = Command::new(EYE)
        .args(["keys", "create", "--app", "a", "--db"])
        .arg(&db)
        .output()
        .unwrap();
    assert!(made.status.success());
    use std::os::unix::fs::PermissionsExt;
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o444)).unwrap();
    }
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o555)).unwrap();
    // Root writes whatever the permissions say: run as nobody then.
    let mut cmd = if is_root() {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", EYE]);
        c
    } else {
        Command::new(EYE)
    };
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--db"])
        .arg(&db);
    assert_fails(&mut cmd, &["opening", "read-only"]);
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn is_root() -> bool {
    let out = Command::new("id").arg("-u").output().expect("id -u");
    String::from_utf8_lossy(&out.stdout).trim() == "0"
}

#[test]
fn bad_schemas_are_refused() {
    let dir = TempDir::new().unwrap();
    let schemas = dir.path().join("schemas");
    std::fs::create_dir(&schemas).unwrap();
    std::fs::write(schemas.join("pageview.json"), "{ not json").unwrap();
    let schemas = schemas.to_str().unwrap();
    assert_fails(
        &mut serve(
            &dir.path().join("eye.db"),
            &["--listen", "127.0.0.1:0", "--schemas", schemas],
        ),
        &["pageview.json"],
    );
}

/// With stderr closed (Rust's runtime reopens it on /dev/null, so the logs
/// are lost but nothing panics), a failed start still exits at once. This
/// was one of the starts that spun at 100% CPU for minutes.
#[test]
fn with_stderr_closed_a_failed_start_still_exits() {
    let dir = TempDir::new().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let mut cmd = Command::new("sh");
    cmd.args([
        "-c",
        r#"exec "$0" serve --listen "$1" --db "$2" 2>&-"#,
        EYE,
        &addr,
    ])
    .arg(dir.path().join("eye.db"));
    let (status, _, took) = run(&mut cmd);
    assert_eq!(status.code(), Some(1), "{status}");
    assert!(took < FAILS_WITHIN, "took {took:?}");
}

#[test]
fn sigterm_ends_the_server_soon_and_cleanly() {
    let dir = TempDir::new().unwrap();
    let mut server = Server::start(&dir.path().join("eye.db"), &[]);
    let pid = server.child.id().to_string();
    let start = Instant::now();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            assert!(status.success(), "{status}");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "still running after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn read_only_commands_on_a_missing_database_create_nothing() {
    let dir = TempDir::new().unwrap();
    let missing_dir = dir.path().join("nonexistent");
    let db = missing_dir.join("eye.db");
    let db = db.to_str().unwrap();
    for args in [
        vec!["keys", "list", "--db", db],
        vec!["keys", "revoke", "abc", "--db", db],
        vec!["events", "--category", "c", "--db", db],
        vec!["errors", "--db", db],
        vec!["dlq", "list", "--db", db],
        vec!["dlq", "redrive", "--db", db],
    ] {
        let (status, stderr, _) = run(Command::new(EYE).args(&args));
        assert!(!status.success(), "{args:?} succeeded");
        assert!(stderr.contains("no database at"), "{args:?}: {stderr}");
        assert!(
            !missing_dir.exists(),
            "{args:?} created {}",
            missing_dir.display()
        );
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn eye_bench_against_a_closed_port_fails() {
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", free.local_addr().unwrap());
    drop(free);
    let (status, stderr, _) = run(Command::new(EYE).args([
        "bench",
        "--url",
        &url,
        "--key",
        "k",
        "--rate",
        "100",
        "--duration",
        "1s",
        "--quiet",
    ]));
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains("no request was accepted"), "{stderr}");
}

#[test]
fn an_empty_schemas_directory_is_warned_about() {
    let dir = TempDir::new().unwrap();
    let schemas = dir.path().join("schemas");
    std::fs::create_dir(&schemas).unwrap();
    let mut child = serve(
        &dir.path().join("eye.db"),
        &[
            "--listen",
            "127.0.0.1:0",
            "--schemas",
            schemas.to_str().unwrap(),
        ],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let mut warned = false;
    let deadline = Instant::now() + Duration::from_secs(10);
    while let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        if line.contains("no schemas in") {
            warned = true;
        }
        if line.contains("listening") {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(warned, "no warning about the empty schemas directory");
}
