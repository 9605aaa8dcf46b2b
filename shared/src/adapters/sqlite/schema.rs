//! The two files' schemas, their version and migration, and how connections
//! to them are opened.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, Transaction, TransactionBehavior};

/// 1: events indexed by session on every insert. 2: `session_index`, in bulk.
/// 3: `api_keys.own_app_only`. 4: `events.user_id`, `anonymous_id`, `context`.
pub(super) const SCHEMA_VERSION: i64 = 4;

/// Columns added after a table was first made: `(table, column, definition)`.
/// A file made before them gains them when it is migrated; each must have a
/// default, so older binaries that do not name them still write valid rows.
const ADDED_COLUMNS: [(&str, &str, &str); 4] = [
    ("api_keys", "own_app_only", "INTEGER NOT NULL DEFAULT 0"),
    ("events", "user_id", "TEXT"),
    ("events", "anonymous_id", "TEXT"),
    ("events", "context", "TEXT"),
];

/// The store file: what analysts open with `sqlite3`.
///
/// Events live in a rowid table, appended in arrival order. Every index on it
/// is written near its end, because event times are close to now: the unique
/// (`ts_seq`, `session_id`), which makes `INSERT OR IGNORE` idempotent, and the
/// two time indexes. The session order is kept apart, in `session_index`, and
/// filled in bulk every 5 s, in chunks by session id
/// ([`super::session_index`]): an index by session written with every
/// transaction rewrote one 4 KB page per session per transaction, about 4 KB
/// per event, which was most of what the disk wrote (BENCHMARKS.md). Events
/// above `session_index_state.indexed_through` are found by session through
/// the writer's in-memory [`super::recent::RecentRows`], or, from another
/// process, by scanning that short end of the table.
const STORE_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS events (
    id                 INTEGER PRIMARY KEY,
    session_id         TEXT NOT NULL,
    ts_seq             TEXT NOT NULL,
    t                  TEXT NOT NULL,
    event_id           TEXT NOT NULL,
    app                TEXT NOT NULL,
    category           TEXT NOT NULL,
    name               TEXT NOT NULL,
    data               TEXT NOT NULL,
    timestamp          TEXT NOT NULL,
    original_timestamp TEXT,
    received_at        TEXT NOT NULL,
    user_id            TEXT,
    anonymous_id       TEXT,
    context            TEXT
);
DROP INDEX IF EXISTS events_by_session;
CREATE UNIQUE INDEX IF NOT EXISTS events_by_key ON events (ts_seq, session_id);
CREATE INDEX IF NOT EXISTS events_by_category ON events (category, t);
CREATE INDEX IF NOT EXISTS events_by_time ON events (t);
CREATE TABLE IF NOT EXISTS session_index (
    session_id TEXT    NOT NULL,
    ts_seq     TEXT    NOT NULL,
    id         INTEGER NOT NULL,
    PRIMARY KEY (session_id, ts_seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS session_index_state (
    only            INTEGER PRIMARY KEY CHECK (only = 1),
    indexed_through INTEGER NOT NULL
);
INSERT OR IGNORE INTO session_index_state (only, indexed_through) VALUES (1, 0);
CREATE TABLE IF NOT EXISTS errors (
    error_id    TEXT PRIMARY KEY,
    t           TEXT NOT NULL,
    code        TEXT NOT NULL,
    message     TEXT NOT NULL,
    field       TEXT,
    app         TEXT NOT NULL,
    received_at TEXT NOT NULL,
    event_id    TEXT NOT NULL,
    event       TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS errors_by_time ON errors (t);
CREATE INDEX IF NOT EXISTS errors_by_code ON errors (code, t);
CREATE TABLE IF NOT EXISTS api_keys (
    id          TEXT PRIMARY KEY,
    app         TEXT NOT NULL,
    scopes      TEXT NOT NULL,
    own_app_only INTEGER NOT NULL DEFAULT 0,
    secret_hash BLOB NOT NULL,
    created_at  TEXT NOT NULL,
    revoked_at  TEXT
);
";

/// The queue file, beside the store. A file of its own has a write lock of its
/// own, so an enqueue never waits behind a large batch of event inserts.
const QUEUE_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS queue (
    id          INTEGER PRIMARY KEY,
    body        TEXT    NOT NULL,
    events      INTEGER NOT NULL,
    enqueued_at TEXT    NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    not_before  INTEGER NOT NULL DEFAULT 0,
    last_error  TEXT
);
CREATE TABLE IF NOT EXISTS dead_letters (
    id         INTEGER PRIMARY KEY,
    body       TEXT    NOT NULL,
    events     INTEGER NOT NULL,
    attempts   INTEGER NOT NULL,
    last_error TEXT    NOT NULL,
    failed_at  TEXT    NOT NULL
);
";

/// The queue file that goes with a store file: `eye.db` → `eye-queue.db`.
pub fn queue_path(store: &Path) -> PathBuf {
    let stem = store
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = match store.extension() {
        Some(ext) => format!("{stem}-queue.{}", ext.to_string_lossy()),
        None => format!("{stem}-queue"),
    };
    store.with_file_name(name)
}

/// Which file a connection serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Db {
    Store,
    Queue,
}

impl Db {
    fn schema(self) -> &'static str {
        match self {
            Db::Store => STORE_SCHEMA,
            Db::Queue => QUEUE_SCHEMA,
        }
    }
}

/// Opens a connection with The Eye's pragmas and the file's schema, creating
/// or migrating it.
pub(super) fn connect(
    path: &Path,
    db: Db,
    fsync_every_commit: bool,
) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(10))?;
    // SQLite opens a file it may not write read-only, silently; every write
    // would then fail after a start that looked fine.
    if conn.is_readonly(rusqlite::MAIN_DB)? {
        return Err(misuse(format!(
            "{} is read-only (to this user); give The Eye a file it may write",
            path.display()
        )));
    }
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(
        None,
        "synchronous",
        if fsync_every_commit { "FULL" } else { "NORMAL" },
    )?;
    // No checkpoint inside a commit, where copying the WAL back stalled every
    // request waiting for that commit: see `super::wal`. A 64 MiB page cache
    // for the store: measured here, it raises the event insert rate markedly,
    // because the pages one batch dirties are read back far less often.
    conn.pragma_update(None, "wal_autocheckpoint", 0)?;
    conn.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024)?;
    if db == Db::Store {
        conn.pragma_update(None, "cache_size", -65536)?;
    }
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version == 0 {
        refuse_foreign(&conn, path)?;
    }
    if version < SCHEMA_VERSION {
        migrate(&conn, db)?;
    }
    Ok(conn)
}

/// Creates what is missing, in one transaction: tables and indexes, then the
/// columns added since the file was made. Safe when two processes race: the
/// second finds everything there.
fn migrate(conn: &Connection, db: Db) -> rusqlite::Result<()> {
    let tx = Transaction::new_unchecked(conn, TransactionBehavior::Immediate)?;
    tx.execute_batch(db.schema())?;
    for (table, column, definition) in ADDED_COLUMNS {
        let present: bool = tx.query_row(
            "SELECT EXISTS (SELECT 1 FROM pragma_table_info(?1) WHERE name = ?2)",
            [table, column],
            |r| r.get(0),
        )?;
        let table_here: bool = tx.query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1)",
            [table],
            |r| r.get(0),
        )?;
        if table_here && !present {
            tx.execute_batch(&format!(
                "ALTER TABLE {table} ADD COLUMN {column} {definition}"
            ))?;
        }
    }
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    tx.commit()
}

/// Tables a file of The Eye may hold before its schema is versioned.
const OWN_TABLES: [&str; 7] = [
    "events",
    "session_index",
    "session_index_state",
    "errors",
    "api_keys",
    "queue",
    "dead_letters",
];

/// Refuses a SQLite file that another application made: The Eye would
/// otherwise add its tables to someone else's database.
fn refuse_foreign(conn: &Connection, path: &Path) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name",
    )?;
    let foreign: Vec<String> = stmt
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?
        .into_iter()
        .filter(|t| !OWN_TABLES.contains(&t.as_str()))
        .collect();
    if foreign.is_empty() {
        return Ok(());
    }
    Err(misuse(format!(
        "{} is a SQLite database of another application (tables: {}); give The Eye a file of its own with --db",
        path.display(),
        foreign.join(", ")
    )))
}

/// An error of ours, in rusqlite's type.
fn misuse(message: String) -> rusqlite::Error {
    rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_MISUSE),
        Some(message),
    )
}

/// Opens a read-only connection.
pub(super) fn connect_reader(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(Duration::from_secs(10))?;
    Ok(conn)
}
