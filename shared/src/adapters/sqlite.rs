//! The embedded backend: one SQLite file (WAL) is the durable queue, the event
//! store, the error store, the dead letters and the API keys.
//!
//! All writes go through one writer thread that owns the only write connection.
//! It takes every command waiting in its channel, applies them in one
//! transaction (each in its own savepoint, so one failure does not undo the
//! others), commits once, and only then answers. That is group commit: one
//! fsync serves every request that arrived meanwhile, and no caller hears "done"
//! before its data is on disk. Reads use a small pool of read-only connections,
//! which WAL lets run beside the writer.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use serde_json::value::RawValue;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

use crate::config;
use crate::domain::admission::admit;
use crate::domain::api_key::{self, ApiKey, NewKey};
use crate::domain::keys::time_floor;
use crate::domain::redelivery::{Redelivery, RetryPolicy};
use crate::domain::{ErrorCode, ErrorRecord, QueuedBatch, StoredEvent, Timestamp};
use crate::http::StatusSource;
use crate::ports::{
    BackendError, ErrorFilter, ErrorQuery, ErrorStore, EventFilter, EventQuery, EventQueue,
    EventStore, KeyStore, Page, PageRequest, Principal, PutOutcome, QueueMessage, QueueSource,
    Scope,
};

/// Settings of the embedded backend.
#[derive(Debug, Clone)]
pub struct SqliteConfig {
    /// The database file.
    pub path: PathBuf,
    /// `synchronous=FULL` (fsync at every commit: survives power loss) rather
    /// than `NORMAL` (survives a process crash; a power loss may lose the last
    /// commits).
    pub fsync_every_commit: bool,
    /// Queued-but-unprocessed events above which ingest answers 503.
    pub max_backlog_events: u64,
    /// Deliveries of a queue message before it moves to the dead letters.
    pub max_attempts: u32,
    /// Bytes of request bodies waiting for the writer, above which ingest
    /// answers 503 at once instead of queueing more in memory.
    pub max_pending_bytes: usize,
    /// How often the store's writer moves new events into the session index
    /// (queries find them before that too).
    pub session_index_every: Duration,
}

impl SqliteConfig {
    /// Defaults for a database at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            fsync_every_commit: true,
            max_backlog_events: config::MAX_BACKLOG_EVENTS,
            max_attempts: config::MAX_ATTEMPTS,
            max_pending_bytes: config::MAX_PENDING_BYTES,
            session_index_every: config::SESSION_INDEX_EVERY,
        }
    }
}

/// 1: events indexed by session on every insert. 2: `session_index`, in bulk.
const SCHEMA_VERSION: i64 = 2;

/// The store file: what analysts open with `sqlite3`.
///
/// Events live in a rowid table, appended in arrival order. Every index on it
/// is written near its end, because event times are close to now: the unique
/// (`ts_seq`, `session_id`), which makes `INSERT OR IGNORE` idempotent, and the
/// two time indexes. The session order is kept apart, in `session_index`, and
/// filled in bulk every 5 s, in chunks by session id ([`Writer::index_chunk`]): an index by
/// session written with every transaction rewrote one 4 KB page per session
/// per transaction, about 4 KB per event, which was most of what the disk wrote
/// (BENCHMARKS.md). Events above `session_index_state.indexed_through` are
/// found by session through the writer's in-memory [`Tail`], or, from another
/// process, by scanning that short tail of the table.
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
    received_at        TEXT NOT NULL
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
enum Db {
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

fn failed(e: impl std::fmt::Display) -> BackendError {
    BackendError::Failed(format!("sqlite: {e}"))
}

/// Opens a connection with The Eye's pragmas and the file's schema.
fn connect(path: &Path, db: Db, fsync_every_commit: bool) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(
        None,
        "synchronous",
        if fsync_every_commit { "FULL" } else { "NORMAL" },
    )?;
    // No checkpoint inside a commit, where copying the WAL back stalled every
    // request waiting for that commit: see `checkpoint_loop`. A 64 MiB page
    // cache for the store: measured here, it raises the event insert rate
    // markedly, because the pages one batch dirties are read back far less often.
    conn.pragma_update(None, "wal_autocheckpoint", 0)?;
    conn.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024)?;
    if db == Db::Store {
        conn.pragma_update(None, "cache_size", -65536)?;
    }
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version < SCHEMA_VERSION {
        conn.execute_batch(&format!(
            "BEGIN IMMEDIATE; {} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;",
            db.schema()
        ))?;
    }
    Ok(conn)
}

fn connect_reader(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(Duration::from_secs(10))?;
    Ok(conn)
}

/// The embedded backend. Cheap to clone; every clone shares one writer.
#[derive(Clone)]
pub struct Sqlite {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    queue_path: PathBuf,
    /// The writer of the store file (events, errors).
    store_tx: mpsc::Sender<Command>,
    /// The writer of the queue file.
    queue_tx: mpsc::Sender<Command>,
    pending_bytes: Arc<Semaphore>,
    readers: Mutex<Vec<Connection>>,
    queue_readers: Mutex<Vec<Connection>>,
    enqueued: Notify,
    keys: Mutex<HashMap<String, (CachedKey, Instant)>>,
    /// The session order of the events `session_index` does not hold yet.
    tail: Arc<Mutex<Tail>>,
    /// Session queries that had to scan the unindexed end of the table.
    session_scans: std::sync::atomic::AtomicU64,
}

/// The session order of the newest events, in memory, until
/// [`Writer::index_sessions`] moves them into `session_index`. The store's
/// writer adds each event here right after its commit, before it answers, so
/// an event is found by session as soon as it is stored.
///
/// It knows only this process's events. Rowids are given in order and never
/// freed (events are never deleted), so rows another process wrote show up as
/// a gap in the rowids; from the gap on, readers scan the table instead.
#[derive(Default)]
struct Tail {
    /// Per session: the rowids, in commit order. Only the rowids, to keep
    /// it small: the rows are read to order them.
    by_session: HashMap<String, Vec<i64>>,
    /// Entries at or below this rowid have been dropped.
    pruned_through: i64,
    /// Every event with a rowid in (watermark, `known_through`] is here.
    known_through: i64,
}

/// Where a session query finds the events above the watermark.
#[derive(Debug, PartialEq, Eq)]
struct TailAnswer {
    /// Rowids from the in-memory tail.
    ids: Vec<i64>,
    /// Scan the table above this rowid, for the rows the tail does not know.
    scan_after: Option<i64>,
}

impl Tail {
    /// Takes in the events of a commit, in rowid order.
    fn add(&mut self, rows: impl IntoIterator<Item = (String, i64)>) {
        for (session, id) in rows {
            if id == self.known_through + 1 {
                self.known_through = id;
            }
            self.by_session.entry(session).or_default().push(id);
        }
    }

    /// Session ids that split the sessions it holds into `chunks` ranges of
    /// about as many sessions each.
    fn split(&self, chunks: usize) -> Vec<String> {
        let mut sessions: Vec<&String> = self.by_session.keys().collect();
        sessions.sort_unstable();
        let mut bounds: Vec<String> = (1..chunks)
            .filter_map(|i| sessions.get(sessions.len() * i / chunks))
            .map(|s| (*s).clone())
            .collect();
        bounds.dedup();
        bounds
    }

    /// After a bulk index that moved the watermark from `before` to `through`
    /// (the newest rowid then). Drops the entries at or below `before`, one
    /// step behind, so a reader whose snapshot still sees `before` finds its
    /// entries here. If rows of another process made a gap, drops everything
    /// up to `through` instead: readers of older snapshots then scan.
    fn indexed(&mut self, before: i64, through: i64) {
        let gap = self.known_through < through;
        let drop_through = if gap { through } else { before };
        if drop_through > self.pruned_through {
            self.by_session.retain(|_, entries| {
                entries.retain(|id| *id > drop_through);
                !entries.is_empty()
            });
            self.pruned_through = drop_through;
        }
        if gap {
            // Whole again from `through` on, as far as this process's rows
            // committed during the run follow on from it.
            self.known_through = through;
            let mut after: Vec<i64> = self.by_session.values().flatten().copied().collect();
            after.sort_unstable();
            for id in after {
                if id != self.known_through + 1 {
                    break;
                }
                self.known_through = id;
            }
        }
    }

    /// For a snapshot whose watermark is `indexed` and newest rowid `newest`:
    /// `session`'s events above the watermark, and from where the table must
    /// be scanned for the rest.
    fn lookup(&self, session: &str, indexed: i64, newest: i64) -> TailAnswer {
        if indexed < self.pruned_through {
            return TailAnswer {
                ids: Vec::new(),
                scan_after: Some(indexed),
            };
        }
        let upto = self.known_through.min(newest);
        TailAnswer {
            ids: self
                .by_session
                .get(session)
                .into_iter()
                .flatten()
                .copied()
                .filter(|id| *id > indexed && *id <= upto)
                .collect(),
            scan_after: (upto < newest).then_some(upto.max(indexed)),
        }
    }
}

#[derive(Clone)]
struct CachedKey {
    app: String,
    scopes: Vec<Scope>,
    secret_hash: Vec<u8>,
    revoked: bool,
}

/// How long a verified key is trusted from memory before it is read again
/// (so `eye keys revoke` takes effect within this time).
const KEY_CACHE_TTL: Duration = Duration::from_secs(2);
/// Largest group of commands in one transaction.
const MAX_GROUP: usize = 512;

enum Command {
    Enqueue {
        body: String,
        events: usize,
        _permit: OwnedSemaphorePermit,
        reply: oneshot::Sender<Result<(), BackendError>>,
    },
    PutEvents {
        events: Vec<StoredEvent>,
        reply: oneshot::Sender<Vec<Result<PutOutcome, BackendError>>>,
    },
    PutErrors {
        errors: Vec<ErrorRecord>,
        reply: oneshot::Sender<Vec<Result<PutOutcome, BackendError>>>,
    },
    /// Re-read the backlog count (another process may have added messages).
    Recount,
    /// Index the sessions of every stored event now.
    IndexSessions {
        reply: oneshot::Sender<Result<(), BackendError>>,
    },
    /// Sent every 100 ms by the checkpoint thread, so the store's writer
    /// goes on with a bulk index of sessions while nothing else comes.
    Tick,
    Complete {
        processed: Vec<i64>,
        failed: Vec<(i64, String)>,
        reply: oneshot::Sender<Result<(), BackendError>>,
    },
}

impl Sqlite {
    /// Opens (and creates, or migrates) the store and queue files and starts
    /// their writers.
    pub fn open(config: SqliteConfig) -> Result<Self, BackendError> {
        if let Some(dir) = config.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(failed)?;
        }
        let queue_file = queue_path(&config.path);
        let fsync = config.fsync_every_commit;
        let store_conn = connect(&config.path, Db::Store, fsync).map_err(failed)?;
        let queue_conn = connect(&queue_file, Db::Queue, fsync).map_err(failed)?;
        let (store_tx, store_rx) = mpsc::channel(4096);
        let (queue_tx, queue_rx) = mpsc::channel(4096);
        let tails = [
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
        ];
        let tail = Arc::new(Mutex::new(Tail::default()));
        let mut store_writer = Writer::new(
            store_conn,
            WriterRole::Store(Arc::clone(&tail), config.session_index_every),
            config.max_attempts,
            tails[0].clone(),
        )
        .map_err(failed)?;
        // Events the last run stored but did not index (or all of them, in a
        // file written by schema version 1).
        store_writer.index_sessions().map_err(failed)?;
        let queue_writer = Writer::new(
            queue_conn,
            WriterRole::Queue {
                max_backlog: config.max_backlog_events,
            },
            config.max_attempts,
            tails[1].clone(),
        )
        .map_err(failed)?;
        let inner = Arc::new(Inner {
            path: config.path.clone(),
            queue_path: queue_file,
            pending_bytes: Arc::new(Semaphore::new(config.max_pending_bytes / 1024)),
            store_tx,
            queue_tx,
            readers: Mutex::new(Vec::new()),
            queue_readers: Mutex::new(Vec::new()),
            enqueued: Notify::new(),
            keys: Mutex::new(HashMap::new()),
            tail,
            session_scans: std::sync::atomic::AtomicU64::new(0),
        });
        for (name, mut writer, rx) in [
            ("eye-sqlite-store", store_writer, store_rx),
            ("eye-sqlite-queue", queue_writer, queue_rx),
        ] {
            let weak = Arc::downgrade(&inner);
            std::thread::Builder::new()
                .name(name.into())
                .spawn(move || writer.run(rx, weak))
                .map_err(failed)?;
        }
        let checkpointers = [
            connect(&inner.path, Db::Store, fsync).map_err(failed)?,
            connect(&inner.queue_path, Db::Queue, fsync).map_err(failed)?,
        ];
        #[cfg(target_os = "linux")]
        {
            let mut paths = Vec::new();
            for file in [&inner.path, &inner.queue_path] {
                let mut wal = file.as_os_str().to_owned();
                wal.push("-wal");
                paths.extend([file.to_path_buf(), PathBuf::from(wal)]);
            }
            let weak = Arc::downgrade(&inner);
            std::thread::Builder::new()
                .name("eye-sqlite-writeback".into())
                .spawn(move || writeback_loop(&paths, &weak))
                .map_err(failed)?;
        }
        let weak = Arc::downgrade(&inner);
        std::thread::Builder::new()
            .name("eye-sqlite-checkpoint".into())
            .spawn(move || checkpoint_loop(&checkpointers, &tails, &weak))
            .map_err(failed)?;
        Ok(Self { inner })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Moves every stored event into the session index now, instead of within
    /// [`SqliteConfig::session_index_every`]. Queries find events either way.
    pub async fn index_sessions(&self) -> Result<(), BackendError> {
        self.call(Db::Store, |reply| Command::IndexSessions { reply })
            .await?
    }

    /// How many session queries of this handle had to scan the unindexed end
    /// of the table, rather than find the newest events in memory: those
    /// another process wrote, or that a snapshot older than the last bulk
    /// index needed.
    pub fn session_scans(&self) -> u64 {
        self.inner.session_scans.load(Ordering::Relaxed)
    }

    /// Waits until something is enqueued, or `timeout` passes.
    pub async fn wait_for_work(&self, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, self.inner.enqueued.notified()).await;
    }

    async fn call<T>(
        &self,
        db: Db,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, BackendError> {
        let (reply, rx) = oneshot::channel();
        let tx = match db {
            Db::Store => &self.inner.store_tx,
            Db::Queue => &self.inner.queue_tx,
        };
        tx.send(make(reply))
            .await
            .map_err(|_| failed("the writer has stopped"))?;
        rx.await.map_err(|_| failed("the writer has stopped"))
    }

    /// Runs `f` on a pooled read-only connection of the store, off the async threads.
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, BackendError> {
        self.read_from(Db::Store, f).await
    }

    async fn read_from<T: Send + 'static>(
        &self,
        db: Db,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, BackendError> {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            let (pool, path) = match db {
                Db::Store => (&inner.readers, &inner.path),
                Db::Queue => (&inner.queue_readers, &inner.queue_path),
            };
            let pooled = lock(pool).pop();
            let conn = match pooled {
                Some(c) => c,
                None => connect_reader(path).map_err(failed)?,
            };
            let result = f(&conn).map_err(failed);
            let mut pool = lock(pool);
            if pool.len() < 8 {
                pool.push(conn);
            }
            result
        })
        .await
        .map_err(failed)?
    }

    // ----- API keys (used by the `eye keys` commands) -----

    /// Creates a key for `app` with `scopes`, returning the key in clear. Only
    /// its SHA-256 is stored.
    pub fn create_key(&self, app: &str, scopes: &[Scope]) -> Result<String, BackendError> {
        let conn = connect(&self.inner.path, Db::Store, true).map_err(failed)?;
        let mut random = [0u8; api_key::ID_BYTES + api_key::SECRET_BYTES];
        getrandom::fill(&mut random).map_err(failed)?;
        let new = NewKey::from_random(&random);
        let scopes: Vec<&str> = scopes.iter().map(|s| s.as_str()).collect();
        conn.execute(
            "INSERT INTO api_keys (id, app, scopes, secret_hash, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![new.id, app, scopes.join(","), new.secret_hash, Timestamp::now().to_rfc3339()],
        )
        .map_err(failed)?;
        Ok(new.key)
    }

    /// Every key, without secrets.
    pub fn list_keys(&self) -> Result<Vec<KeyInfo>, BackendError> {
        let conn = connect(&self.inner.path, Db::Store, true).map_err(failed)?;
        let mut stmt = conn
            .prepare("SELECT id, app, scopes, created_at, revoked_at FROM api_keys ORDER BY created_at, id")
            .map_err(failed)?;
        let rows = stmt
            .query_map([], |r| {
                Ok(KeyInfo {
                    id: r.get(0)?,
                    app: r.get(1)?,
                    scopes: r
                        .get::<_, String>(2)?
                        .split(',')
                        .filter_map(Scope::parse)
                        .collect(),
                    created_at: r.get(3)?,
                    revoked_at: r.get(4)?,
                })
            })
            .map_err(failed)?;
        rows.collect::<Result<_, _>>().map_err(failed)
    }

    /// Revokes a key by its id (the part after `eye_`) or the whole key.
    /// Returns whether a live key was revoked.
    pub fn revoke_key(&self, id_or_key: &str) -> Result<bool, BackendError> {
        let id = api_key::key_id(id_or_key);
        let conn = connect(&self.inner.path, Db::Store, true).map_err(failed)?;
        let n = conn
            .execute(
                "UPDATE api_keys SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
                params![id, Timestamp::now().to_rfc3339()],
            )
            .map_err(failed)?;
        lock(&self.inner.keys).remove(id);
        Ok(n > 0)
    }

    /// Whether any live key exists.
    pub fn has_keys(&self) -> Result<bool, BackendError> {
        let conn = connect(&self.inner.path, Db::Store, true).map_err(failed)?;
        conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM api_keys WHERE revoked_at IS NULL)",
            [],
            |r| r.get(0),
        )
        .map_err(failed)
    }

    // ----- Dead letters (used by `eye dlq`) -----

    /// The dead letters, oldest first.
    pub fn dead_letters(&self) -> Result<Vec<DeadLetter>, BackendError> {
        let conn = connect(&self.inner.queue_path, Db::Queue, true).map_err(failed)?;
        let mut stmt = conn
            .prepare("SELECT id, body, events, attempts, last_error, failed_at FROM dead_letters ORDER BY id")
            .map_err(failed)?;
        let rows = stmt
            .query_map([], |r| {
                Ok(DeadLetter {
                    id: r.get(0)?,
                    body: r.get(1)?,
                    events: r.get(2)?,
                    attempts: r.get(3)?,
                    last_error: r.get(4)?,
                    failed_at: r.get(5)?,
                })
            })
            .map_err(failed)?;
        rows.collect::<Result<_, _>>().map_err(failed)
    }

    /// Moves every dead letter back to the queue, with a fresh attempt count.
    /// Returns how many moved. Replayed events are deduplicated by their keys.
    pub fn redrive_dead_letters(&self) -> Result<usize, BackendError> {
        let mut conn = connect(&self.inner.queue_path, Db::Queue, true).map_err(failed)?;
        let tx = conn.transaction().map_err(failed)?;
        let now = Timestamp::now().to_rfc3339();
        let n = tx
            .execute(
                "INSERT INTO queue (body, events, enqueued_at) SELECT body, events, ?1 FROM dead_letters ORDER BY id",
                [now],
            )
            .map_err(failed)?;
        tx.execute("DELETE FROM dead_letters", []).map_err(failed)?;
        tx.commit().map_err(failed)?;
        Ok(n)
    }
}

/// An API key's public facts.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct KeyInfo {
    /// The key's public id.
    pub id: String,
    /// Its application.
    pub app: String,
    /// What it allows.
    #[serde(serialize_with = "scope_names")]
    pub scopes: Vec<Scope>,
    /// When it was made.
    pub created_at: String,
    /// When it was revoked, if it was.
    pub revoked_at: Option<String>,
}

fn scope_names<S: serde::Serializer>(scopes: &[Scope], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(scopes.iter().map(|sc| sc.as_str()))
}

/// A queue message that failed too often.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DeadLetter {
    /// Its id in the dead letters.
    pub id: i64,
    /// The message body.
    pub body: String,
    /// Events it carries.
    pub events: i64,
    /// Deliveries it had.
    pub attempts: i64,
    /// The last failure.
    pub last_error: String,
    /// When it was given up.
    pub failed_at: String,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Starts writing back, without waiting, whatever the kernel holds dirty of the
/// database files, every few milliseconds: large commits and checkpoints then
/// reach the disk as a steady stream rather than as bursts that a queue
/// commit's fdatasync would have to wait behind (the reason PostgreSQL has
/// `checkpoint_flush_after`).
#[cfg(target_os = "linux")]
fn writeback_loop(paths: &[PathBuf], alive: &std::sync::Weak<Inner>) {
    use std::os::fd::AsRawFd;
    let mut files: Vec<Option<std::fs::File>> = paths.iter().map(|_| None).collect();
    while alive.strong_count() > 0 {
        std::thread::sleep(Duration::from_millis(5));
        for (path, file) in paths.iter().zip(files.iter_mut()) {
            if file.is_none() {
                *file = std::fs::File::open(path).ok();
            }
            if let Some(f) = file {
                // SAFETY: a valid open descriptor; SYNC_FILE_RANGE_WRITE only
                // starts writeback of already-dirty pages and changes no data.
                unsafe {
                    libc::sync_file_range(f.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE);
                }
            }
        }
    }
}

/// Checkpoints in two steps, so that no commit waits for a large copy and the
/// WAL still wraps around instead of growing:
/// 1. every 100 ms this thread copies the WAL of each file back into it
///    (PASSIVE: beside the writer, never blocking it);
/// 2. it then asks the file's writer to copy the few frames written meanwhile,
///    right after its next commit ([`Writer::checkpoint_tail`]). The WAL is
///    then fully copied, and the writer's next transaction starts it afresh.
///
/// It also sends the store's writer a [`Command::Tick`] every 100 ms.
fn checkpoint_loop(
    conns: &[Connection],
    tails: &[Arc<AtomicBool>],
    alive: &std::sync::Weak<Inner>,
) {
    while let Some(inner) = alive.upgrade() {
        // A full channel means the writer is busy, and will look anyway.
        let _ = inner.store_tx.try_send(Command::Tick);
        drop(inner);
        std::thread::sleep(Duration::from_millis(100));
        for (conn, tail) in conns.iter().zip(tails) {
            match conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(1)) {
                Ok(frames) if frames > 0 => tail.store(true, Ordering::Release),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "WAL checkpoint failed; it is retried"),
            }
        }
    }
}

/// The store's session-index watermark (every event up to this rowid is in
/// `session_index`) and its newest event's rowid.
fn watermarks(conn: &Connection) -> rusqlite::Result<(i64, i64)> {
    conn.prepare_cached(
        "SELECT indexed_through, (SELECT COALESCE(MAX(id), 0) FROM events) FROM session_index_state",
    )?
    .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
}

/// Answers one command once the group's commit is known (`Some` if it failed).
type Reply = Box<dyn FnOnce(Option<&BackendError>)>;

/// Events stored since the last bulk index of sessions, above which the next
/// one runs at once rather than at [`SqliteConfig::session_index_every`].
const INDEX_SESSIONS_AFTER: usize = 200_000;
/// The store's writer commits at most this often (the queue's writer as often
/// as it can, since ingest waits for it). A busy worker then stores larger
/// batches, which write fewer pages per event (BENCHMARKS.md); an event may
/// become queryable up to this much later.
const STORE_COMMIT_EVERY: Duration = Duration::from_millis(10);
/// Most rowids one bulk index of sessions covers, which bounds its sort (a
/// store migrated from schema 1 is indexed in runs of this size).
const INDEX_RUN_MAX_ROWS: i64 = 400_000;
/// Chunks, by session id, that a bulk index of sessions is split into and
/// spread over its interval: the disk then gets small bursts of page writes
/// instead of one large one, which a queue commit's flush would wait behind.
const INDEX_CHUNKS: usize = 8;

/// Which file a writer serves, with what only that file needs.
enum WriterRole {
    /// The store, the in-memory session order of its newest events, and how
    /// often they go into the session index.
    Store(Arc<Mutex<Tail>>, Duration),
    /// The queue, and its backlog limit in events.
    Queue { max_backlog: u64 },
}

/// The writer thread's state.
struct Writer {
    conn: Connection,
    backlog: u64,
    /// `Some` for the queue file's writer.
    max_backlog: Option<u64>,
    max_attempts: u32,
    /// Set by `checkpoint_loop` when the tail of the WAL is to be copied.
    tail_due: Arc<AtomicBool>,
    /// `Some` for the store file's writer.
    tail: Option<Arc<Mutex<Tail>>>,
    /// Events inserted in the open transaction: (session, rowid).
    fresh: Vec<(String, i64)>,
    /// Events committed since the last bulk index of sessions.
    unindexed: usize,
    /// When the last bulk index of sessions began.
    last_index: Instant,
    index_every: Duration,
    index_run: Option<IndexRun>,
    last_commit: Instant,
}

/// A bulk index of sessions in progress.
struct IndexRun {
    /// The newest rowid when it began: the watermark it moves to.
    through: i64,
    /// Session ids that split it into chunks: chunk `i` is the ids from
    /// `bounds[i - 1]` (or the first) up to `bounds[i]` (or the last).
    bounds: Vec<String>,
    /// The next chunk.
    next: usize,
    /// When the last chunk was written.
    last: Instant,
}

impl Writer {
    fn new(
        conn: Connection,
        role: WriterRole,
        max_attempts: u32,
        tail_due: Arc<AtomicBool>,
    ) -> rusqlite::Result<Self> {
        let (max_backlog, tail, index_every) = match role {
            WriterRole::Store(tail, every) => (None, Some(tail), every),
            WriterRole::Queue { max_backlog } => (Some(max_backlog), None, Duration::MAX),
        };
        let mut w = Self {
            conn,
            backlog: 0,
            max_backlog,
            max_attempts,
            tail_due,
            tail,
            fresh: Vec::new(),
            unindexed: 0,
            last_index: Instant::now(),
            index_every,
            index_run: None,
            last_commit: Instant::now(),
        };
        if w.max_backlog.is_some() {
            w.recount()?;
        }
        Ok(w)
    }

    /// Moves every event above the watermark into `session_index` now, in
    /// one transaction (abandoning a run in progress: its chunks are written
    /// again, and ignored).
    fn index_sessions(&mut self) -> rusqlite::Result<()> {
        loop {
            let all = self.start_index_run(false)?;
            self.index_chunk()?;
            if all {
                return Ok(());
            }
        }
    }

    /// Begins a bulk index of the events stored so far, up to
    /// [`INDEX_RUN_MAX_ROWS`] of them, in chunks by session id when
    /// `chunked`. Returns whether it covers every stored event.
    fn start_index_run(&mut self, chunked: bool) -> rusqlite::Result<bool> {
        let (watermark, newest) = watermarks(&self.conn)?;
        let through = newest.min(watermark.saturating_add(INDEX_RUN_MAX_ROWS));
        let bounds = match (&self.tail, chunked) {
            (Some(tail), true) => lock(tail).split(INDEX_CHUNKS),
            _ => Vec::new(),
        };
        // What this run leaves counts towards the next.
        self.unindexed = usize::try_from(newest - through).unwrap_or(0);
        self.last_index = Instant::now();
        self.index_run = Some(IndexRun {
            through,
            bounds,
            next: 0,
            last: Instant::now(),
        });
        Ok(through == newest)
    }

    /// Writes the next chunk of the run in progress: the events up to the
    /// run's rowid whose session ids fall in the chunk's range, sorted, so
    /// each session's page is written once per run rather than once per
    /// transaction. After the last chunk, moves the watermark, and drops from
    /// the in-memory tail what the previous run indexed. Readers ignore index
    /// entries above the watermark, so a partly written run shows nothing
    /// twice.
    fn index_chunk(&mut self) -> rusqlite::Result<()> {
        let Some(run) = &self.index_run else {
            return Ok(());
        };
        let lo = run.next.checked_sub(1).and_then(|i| run.bounds.get(i));
        let hi = run.bounds.get(run.next);
        let last_chunk = run.next >= run.bounds.len();
        let through = run.through;
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let (before, _) = watermarks(&tx)?;
        if through > before {
            tx.execute(
                "INSERT OR IGNORE INTO session_index (session_id, ts_seq, id)
                 SELECT session_id, ts_seq, id FROM events
                 WHERE id > ?1 AND id <= ?2
                   AND (?3 IS NULL OR session_id >= ?3) AND (?4 IS NULL OR session_id < ?4)
                 ORDER BY session_id, ts_seq",
                params![before, through, lo, hi],
            )?;
            if last_chunk {
                tx.execute(
                    "UPDATE session_index_state SET indexed_through = ?1",
                    [through],
                )?;
            }
        }
        tx.commit()?;
        if last_chunk {
            self.index_run = None;
            if let Some(tail) = &self.tail {
                lock(tail).indexed(before, through.max(before));
            }
        } else if let Some(run) = &mut self.index_run {
            run.next += 1;
            run.last = Instant::now();
        }
        Ok(())
    }

    /// Writes the next chunk of the session index when it is due: a run
    /// starts every `index_every` (at once past [`INDEX_SESSIONS_AFTER`]
    /// events), and its chunks are spread over that time.
    fn index_sessions_if_due(&mut self) {
        if self.tail.is_none() {
            return;
        }
        let hurry = self.unindexed >= INDEX_SESSIONS_AFTER;
        let result = match &self.index_run {
            Some(run) => {
                let gap = if hurry {
                    Duration::ZERO
                } else {
                    self.index_every / INDEX_CHUNKS as u32
                };
                if run.last.elapsed() >= gap {
                    self.index_chunk()
                } else {
                    Ok(())
                }
            }
            None if hurry
                || (self.unindexed > 0 && self.last_index.elapsed() >= self.index_every) =>
            {
                self.start_index_run(true).and_then(|_| self.index_chunk())
            }
            None => Ok(()),
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "indexing sessions failed; it is retried");
        }
    }

    fn recount(&mut self) -> rusqlite::Result<()> {
        let n: i64 =
            self.conn
                .query_row("SELECT COALESCE(SUM(events), 0) FROM queue", [], |r| {
                    r.get(0)
                })?;
        self.backlog = u64::try_from(n).unwrap_or(0);
        Ok(())
    }

    fn run(&mut self, mut rx: mpsc::Receiver<Command>, inner: std::sync::Weak<Inner>) {
        while let Some(first) = rx.blocking_recv() {
            if self.tail.is_some() {
                // The store's writer commits at most every STORE_COMMIT_EVERY.
                let since = self.last_commit.elapsed();
                if since < STORE_COMMIT_EVERY {
                    std::thread::sleep(STORE_COMMIT_EVERY - since);
                }
            }
            let mut group = vec![first];
            while group.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(cmd) => group.push(cmd),
                    Err(_) => break,
                }
            }
            group.retain(|cmd| !matches!(cmd, Command::Tick));
            if group.is_empty() {
                self.index_sessions_if_due();
                continue;
            }
            let enqueued = self.apply_group(group);
            self.last_commit = Instant::now();
            if enqueued {
                if let Some(inner) = inner.upgrade() {
                    inner.enqueued.notify_one();
                }
            }
            self.checkpoint_tail();
            self.index_sessions_if_due();
        }
    }

    /// Copies what the background checkpoint left in the WAL (a few commits'
    /// worth), after the answers are sent, so the next transaction can wrap
    /// the WAL around.
    fn checkpoint_tail(&mut self) {
        if self.tail_due.swap(false, Ordering::AcqRel) {
            if let Err(e) = self
                .conn
                .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
            {
                tracing::warn!(error = %e, "WAL checkpoint failed; it is retried");
            }
        }
    }

    /// Applies a group in one transaction and answers after the commit.
    /// Returns whether anything was enqueued.
    fn apply_group(&mut self, group: Vec<Command>) -> bool {
        let mut replies: Vec<Reply> = Vec::with_capacity(group.len());
        let backlog_before = self.backlog;
        let mut enqueued = false;
        // Answered after the group's commit and the index that follows it.
        let mut index_now: Vec<oneshot::Sender<Result<(), BackendError>>> = Vec::new();
        if let Err(e) = self.conn.execute_batch("BEGIN IMMEDIATE") {
            let e = failed(e);
            for cmd in group {
                answer_all(cmd, &e);
            }
            return false;
        }
        for cmd in group {
            match cmd {
                Command::Enqueue {
                    body,
                    events,
                    _permit,
                    reply,
                } => {
                    let r = self.savepoint(|w| w.enqueue(&body, events));
                    enqueued |= r.is_ok();
                    replies.push(Box::new(move |commit_err| {
                        drop(_permit);
                        let _ = reply.send(match commit_err {
                            Some(e) => Err(e.clone()),
                            None => r,
                        });
                    }));
                }
                Command::PutEvents { events, reply } => {
                    let mark = self.fresh.len();
                    let r = self.savepoint(|w| w.put_events(&events));
                    if r.is_err() {
                        self.fresh.truncate(mark);
                    }
                    replies.push(Box::new(move |commit_err| {
                        let _ = reply.send(per_item(r, events.len(), commit_err));
                    }));
                }
                Command::PutErrors { errors, reply } => {
                    let r = self.savepoint(|w| w.put_errors(&errors));
                    replies.push(Box::new(move |commit_err| {
                        let _ = reply.send(per_item(r, errors.len(), commit_err));
                    }));
                }
                Command::Recount => {
                    if let Err(e) = self.recount() {
                        tracing::warn!(error = %e, "recounting the queue failed");
                    }
                }
                Command::IndexSessions { reply } => index_now.push(reply),
                Command::Tick => {}
                Command::Complete {
                    processed,
                    failed: fails,
                    reply,
                } => {
                    let r = self.savepoint(|w| w.complete(&processed, &fails));
                    replies.push(Box::new(move |commit_err| {
                        let _ = reply.send(match commit_err {
                            Some(e) => Err(e.clone()),
                            None => r,
                        });
                    }));
                }
            }
        }
        let commit_err = self.conn.execute_batch("COMMIT").err().map(failed);
        if commit_err.is_some() {
            let _ = self.conn.execute_batch("ROLLBACK");
            self.backlog = backlog_before;
            enqueued = false;
            self.fresh.clear();
        } else if let Some(tail) = &self.tail {
            self.unindexed += self.fresh.len();
            lock(tail).add(self.fresh.drain(..));
        }
        if !index_now.is_empty() {
            let result = match &commit_err {
                Some(e) => Err(e.clone()),
                None => self.index_sessions().map_err(failed),
            };
            for reply in index_now {
                let _ = reply.send(result.clone());
            }
        }
        for reply in replies {
            reply(commit_err.as_ref());
        }
        enqueued
    }

    fn savepoint<T>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<T, BackendError>,
    ) -> Result<T, BackendError> {
        let backlog = self.backlog;
        self.conn.execute_batch("SAVEPOINT cmd").map_err(failed)?;
        match f(self) {
            Ok(v) => {
                self.conn.execute_batch("RELEASE cmd").map_err(failed)?;
                Ok(v)
            }
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK TO cmd; RELEASE cmd");
                self.backlog = backlog;
                Err(e)
            }
        }
    }

    fn enqueue(&mut self, body: &str, events: usize) -> Result<(), BackendError> {
        let events = events as u64;
        admit(self.backlog, events, self.max_backlog.unwrap_or(u64::MAX))
            .map_err(|e| BackendError::Busy(e.to_string()))?;
        self.conn
            .prepare_cached("INSERT INTO queue (body, events, enqueued_at) VALUES (?1, ?2, ?3)")
            .and_then(|mut s| {
                s.execute(params![body, events as i64, Timestamp::now().to_rfc3339()])
            })
            .map_err(failed)?;
        self.backlog += events;
        Ok(())
    }

    fn put_events(&mut self, events: &[StoredEvent]) -> Result<Vec<PutOutcome>, BackendError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "INSERT OR IGNORE INTO events (session_id, ts_seq, t, event_id, app, category, name, data, timestamp, original_timestamp, received_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            )
            .map_err(failed)?;
        events
            .iter()
            .map(|e| {
                let changed = stmt
                    .execute(params![
                        e.session_id,
                        e.session_key(),
                        e.time_key(),
                        e.event_id,
                        e.app,
                        e.category,
                        e.name,
                        e.data.get(),
                        e.timestamp.to_rfc3339(),
                        e.original_timestamp.map(|t| t.to_rfc3339()),
                        e.received_at.to_rfc3339(),
                    ])
                    .map_err(failed)?;
                if changed != 1 {
                    return Ok(PutOutcome::Duplicate);
                }
                self.fresh
                    .push((e.session_id.clone(), self.conn.last_insert_rowid()));
                Ok(PutOutcome::Stored)
            })
            .collect()
    }

    fn put_errors(&mut self, errors: &[ErrorRecord]) -> Result<Vec<PutOutcome>, BackendError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "INSERT OR IGNORE INTO errors (error_id, t, code, message, field, app, received_at, event_id, event)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )
            .map_err(failed)?;
        errors
            .iter()
            .map(|r| {
                let changed = stmt
                    .execute(params![
                        r.error_id,
                        r.time_key(),
                        r.code.as_str(),
                        r.message,
                        r.field,
                        r.app,
                        r.received_at.to_rfc3339(),
                        r.event_id,
                        r.event.get(),
                    ])
                    .map_err(failed)?;
                Ok(if changed == 1 {
                    PutOutcome::Stored
                } else {
                    PutOutcome::Duplicate
                })
            })
            .collect()
    }

    fn complete(&mut self, processed: &[i64], fails: &[(i64, String)]) -> Result<(), BackendError> {
        let mut delete = self
            .conn
            .prepare_cached("DELETE FROM queue WHERE id = ?1 RETURNING events")
            .map_err(failed)?;
        let mut done = 0u64;
        for id in processed {
            let n: Option<i64> = delete
                .query_row([id], |r| r.get(0))
                .optional()
                .map_err(failed)?;
            done += n.unwrap_or(0) as u64;
        }
        drop(delete);
        let now = Timestamp::now();
        for (id, error) in fails {
            let attempts: Option<u32> = self
                .conn
                .query_row("UPDATE queue SET attempts = attempts + 1, last_error = ?2 WHERE id = ?1 RETURNING attempts", params![id, error], |r| r.get(0))
                .optional()
                .map_err(failed)?;
            let Some(attempts) = attempts else { continue };
            let retry = RetryPolicy {
                max_attempts: self.max_attempts,
            };
            if let Redelivery::RetryAfter(wait) = retry.after_failure(attempts) {
                let wait = i64::try_from(wait.as_micros()).unwrap_or(i64::MAX);
                let not_before = now.add_micros(wait).as_micros();
                self.conn
                    .execute(
                        "UPDATE queue SET not_before = ?2 WHERE id = ?1",
                        params![id, not_before],
                    )
                    .map_err(failed)?;
            } else {
                let n: i64 = self
                    .conn
                    .query_row(
                        "INSERT INTO dead_letters (body, events, attempts, last_error, failed_at)
                         SELECT body, events, attempts, last_error, ?2 FROM queue WHERE id = ?1 RETURNING events",
                        params![id, now.to_rfc3339()],
                        |r| r.get(0),
                    )
                    .map_err(failed)?;
                self.conn
                    .execute("DELETE FROM queue WHERE id = ?1", [id])
                    .map_err(failed)?;
                done += n as u64;
                tracing::error!(queue_id = id, attempts, error = %error, "queue message moved to the dead letters");
            }
        }
        self.backlog = self.backlog.saturating_sub(done);
        Ok(())
    }
}

fn per_item(
    result: Result<Vec<PutOutcome>, BackendError>,
    n: usize,
    commit_err: Option<&BackendError>,
) -> Vec<Result<PutOutcome, BackendError>> {
    match (commit_err, result) {
        (Some(e), _) => vec![Err(e.clone()); n],
        (None, Err(e)) => vec![Err(e); n],
        (None, Ok(outcomes)) => outcomes.into_iter().map(Ok).collect(),
    }
}

fn answer_all(cmd: Command, e: &BackendError) {
    match cmd {
        Command::Enqueue { reply, .. } | Command::Complete { reply, .. } => {
            let _ = reply.send(Err(e.clone()));
        }
        Command::PutEvents { events, reply } => {
            let _ = reply.send(vec![Err(e.clone()); events.len()]);
        }
        Command::PutErrors { errors, reply } => {
            let _ = reply.send(vec![Err(e.clone()); errors.len()]);
        }
        Command::Recount | Command::Tick => {}
        Command::IndexSessions { reply } => {
            let _ = reply.send(Err(e.clone()));
        }
    }
}

#[async_trait]
impl EventQueue for Sqlite {
    async fn enqueue(&self, batch: &QueuedBatch<'_>) -> Result<(), BackendError> {
        // One request is one queue row: its body is at most about 1 MiB.
        let mut messages = batch.encode(usize::MAX);
        let Some(message) = messages.pop() else {
            return Ok(());
        };
        let kib = u32::try_from(message.body.len() / 1024 + 1).unwrap_or(u32::MAX);
        let permit = Arc::clone(&self.inner.pending_bytes)
            .try_acquire_many_owned(kib)
            .map_err(|_| {
                BackendError::Busy("too many request bodies are waiting for the disk".into())
            })?;
        let (reply, rx) = oneshot::channel();
        self.inner
            .queue_tx
            .try_send(Command::Enqueue {
                body: message.body,
                events: message.events,
                _permit: permit,
                reply,
            })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => {
                    BackendError::Busy("the writer's queue is full".into())
                }
                mpsc::error::TrySendError::Closed(_) => failed("the writer has stopped"),
            })?;
        rx.await.map_err(|_| failed("the writer has stopped"))?
    }
}

#[async_trait]
impl EventStore for Sqlite {
    async fn put_events(&self, events: Vec<StoredEvent>) -> Vec<Result<PutOutcome, BackendError>> {
        let n = events.len();
        self.call(Db::Store, |reply| Command::PutEvents { events, reply })
            .await
            .unwrap_or_else(|e| vec![Err(e); n])
    }
}

#[async_trait]
impl ErrorStore for Sqlite {
    async fn put_errors(&self, errors: Vec<ErrorRecord>) -> Vec<Result<PutOutcome, BackendError>> {
        let n = errors.len();
        self.call(Db::Store, |reply| Command::PutErrors { errors, reply })
            .await
            .unwrap_or_else(|e| vec![Err(e); n])
    }
}

/// Largest batch the embedded worker takes at once, in events.
pub const RECEIVE_MAX_EVENTS: usize = 5000;

#[async_trait]
impl QueueSource for Sqlite {
    async fn receive(&self, max_messages: usize) -> Result<Vec<QueueMessage>, BackendError> {
        // A read connection: the queue's writer stays free for enqueues.
        let got = self
            .read_from(Db::Queue, move |conn| {
                receive_due(conn, max_messages, RECEIVE_MAX_EVENTS)
            })
            .await?;
        if got.is_empty() {
            // Nothing due: a good moment to correct the backlog count for
            // messages another process (eye dlq redrive) added.
            let _ = self.inner.queue_tx.try_send(Command::Recount);
        }
        Ok(got)
    }

    async fn complete(
        &self,
        processed: Vec<String>,
        failed_msgs: Vec<(String, String)>,
    ) -> Result<(), BackendError> {
        let id = |s: &str| {
            s.parse::<i64>()
                .map_err(|_| failed(format!("bad queue id {s:?}")))
        };
        let processed = processed.iter().map(|s| id(s)).collect::<Result<_, _>>()?;
        let fails = failed_msgs
            .into_iter()
            .map(|(s, e)| Ok((id(&s)?, e)))
            .collect::<Result<_, BackendError>>()?;
        self.call(Db::Queue, |reply| Command::Complete {
            processed,
            failed: fails,
            reply,
        })
        .await?
    }
}

/// Up to `max_messages` due messages, oldest first, stopping before
/// `max_events` events (but taking at least one message).
fn receive_due(
    conn: &Connection,
    max_messages: usize,
    max_events: usize,
) -> rusqlite::Result<Vec<QueueMessage>> {
    let now = Timestamp::now().as_micros();
    let mut stmt = conn.prepare_cached(
        "SELECT id, body, events, attempts FROM queue WHERE not_before <= ?1 ORDER BY id LIMIT ?2",
    )?;
    let mut rows = stmt.query(params![now, max_messages as i64])?;
    let mut out = Vec::new();
    let mut events = 0usize;
    while let Some(row) = rows.next()? {
        let n = usize::try_from(row.get::<_, i64>(2)?).unwrap_or(0);
        if !out.is_empty() && events + n > max_events {
            break;
        }
        events += n;
        let attempts: u32 = row.get(3)?;
        out.push(QueueMessage {
            id: row.get::<_, i64>(0)?.to_string(),
            body: row.get(1)?,
            receive_count: attempts + 1,
        });
    }
    Ok(out)
}

/// The columns [`event_from_row`] reads, of `events` aliased `e`.
const EVENT_COLUMNS: &str = "e.event_id, e.app, e.session_id, e.category, e.name, e.data, e.timestamp, e.original_timestamp, e.received_at, e.ts_seq, e.t";

fn event_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(StoredEvent, String, String)> {
    let ts = |i: usize| -> rusqlite::Result<Timestamp> {
        let s: String = r.get(i)?;
        Timestamp::parse(&s).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e))
        })
    };
    let data: String = r.get(5)?;
    let data = RawValue::from_string(data).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(5, rusqlite::types::Type::Text, Box::new(e))
    })?;
    let original: Option<String> = r.get(7)?;
    let original = match original {
        Some(s) => Some(Timestamp::parse(&s).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(7, rusqlite::types::Type::Text, Box::new(e))
        })?),
        None => None,
    };
    Ok((
        StoredEvent {
            event_id: r.get(0)?,
            app: r.get(1)?,
            session_id: r.get(2)?,
            category: r.get(3)?,
            name: r.get(4)?,
            data,
            timestamp: ts(6)?,
            original_timestamp: original,
            received_at: ts(8)?,
        },
        r.get(9)?,
        r.get(10)?,
    ))
}

/// Bounds of a time range as `t` keys.
fn bounds(from: Option<Timestamp>, to: Option<Timestamp>) -> (String, String) {
    (
        from.map(time_floor).unwrap_or_default(),
        to.map(time_floor).unwrap_or_else(|| "~".into()),
    )
}

#[async_trait]
impl EventQuery for Sqlite {
    async fn session_events(
        &self,
        session_id: &str,
        page: PageRequest,
    ) -> Result<Page<StoredEvent>, BackendError> {
        let session_id = session_id.to_owned();
        let inner = Arc::clone(&self.inner);
        self.read(move |conn| {
            let after = page.after.unwrap_or_default();
            let limit = page.limit + 1;
            // One snapshot for the watermark and both halves.
            let tx = conn.unchecked_transaction()?;
            let (indexed, newest) = watermarks(&tx)?;
            let mut rows = tx
                .prepare_cached(&format!(
                    "SELECT {EVENT_COLUMNS} FROM session_index s JOIN events e ON e.id = s.id AND e.session_id = s.session_id
                     WHERE s.session_id = ?1 AND s.ts_seq > ?2 AND s.id <= ?3 ORDER BY s.ts_seq LIMIT ?4"
                ))?
                .query_map(params![session_id, after, indexed, limit as i64], event_from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let answer = lock(&inner.tail).lookup(&session_id, indexed, newest);
            let mut by_id = tx.prepare_cached(&format!(
                "SELECT {EVENT_COLUMNS} FROM events e WHERE e.id = ?1 AND e.session_id = ?2"
            ))?;
            for id in answer.ids {
                // Not there if committed after this snapshot began.
                let row = by_id
                    .query_row(params![id, session_id], event_from_row)
                    .optional()?;
                rows.extend(row.filter(|(_, key, _)| key.as_str() > after.as_str()));
            }
            drop(by_id);
            if let Some(scan_after) = answer.scan_after {
                inner.session_scans.fetch_add(1, Ordering::Relaxed);
                // Rows another process wrote, or that this snapshot needs and
                // the tail no longer holds: scan the unindexed end of the table.
                let scanned = tx
                    .prepare_cached(&format!(
                        "SELECT {EVENT_COLUMNS} FROM events e NOT INDEXED
                         WHERE e.id > ?1 AND e.session_id = ?2 AND e.ts_seq > ?3 ORDER BY e.ts_seq LIMIT ?4"
                    ))?
                    .query_map(params![scan_after, session_id, after, limit as i64], event_from_row)?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                rows.extend(scanned);
            }
            tx.commit()?;
            rows.sort_by(|a, b| a.1.cmp(&b.1));
            rows.truncate(limit);
            let page = Page::from_fetched(rows, page.limit, |(_, session_key, _)| session_key.clone());
            Ok(Page {
                items: page.items.into_iter().map(|(e, _, _)| e).collect(),
                next: page.next,
            })
        })
        .await
    }

    async fn find_events(
        &self,
        filter: &EventFilter,
        page: PageRequest,
    ) -> Result<Page<StoredEvent>, BackendError> {
        let filter = filter.clone();
        self.read(move |conn| {
            let (lo, hi) = bounds(filter.from, filter.to);
            let lo = match page.after {
                Some(after) if after >= lo => after,
                _ => lo,
            };
            let limit = page.limit as i64 + 1;
            // `t > lo` misses an event whose key equals the floor exactly; the
            // floor ends with '#' and every key has 32 hex digits after it, so
            // no key equals it.
            let rows = match &filter.category {
                Some(category) => {
                    let mut stmt = conn.prepare_cached(&format!(
                        "SELECT {EVENT_COLUMNS} FROM events e WHERE category = ?1 AND t > ?2 AND t < ?3 ORDER BY t LIMIT ?4"
                    ))?;
                    stmt.query_map(params![category, lo, hi, limit], event_from_row)?
                        .collect::<rusqlite::Result<Vec<_>>>()?
                }
                None => {
                    let mut stmt = conn.prepare_cached(&format!(
                        "SELECT {EVENT_COLUMNS} FROM events e WHERE t > ?1 AND t < ?2 ORDER BY t LIMIT ?3"
                    ))?;
                    stmt.query_map(params![lo, hi, limit], event_from_row)?
                        .collect::<rusqlite::Result<Vec<_>>>()?
                }
            };
            let page = Page::from_fetched(rows, page.limit, |(_, _, t)| t.clone());
            Ok(Page {
                items: page.items.into_iter().map(|(e, _, _)| e).collect(),
                next: page.next,
            })
        })
        .await
    }
}

fn error_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(ErrorRecord, String)> {
    let conv = |i: usize, e: Box<dyn std::error::Error + Send + Sync>| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, e)
    };
    let code: String = r.get(1)?;
    let received_at: String = r.get(5)?;
    let event: String = r.get(7)?;
    Ok((
        ErrorRecord {
            error_id: r.get(0)?,
            code: ErrorCode::parse(&code)
                .ok_or_else(|| conv(1, format!("unknown code {code}").into()))?,
            message: r.get(2)?,
            field: r.get(3)?,
            app: r.get(4)?,
            received_at: Timestamp::parse(&received_at).map_err(|e| conv(5, Box::new(e)))?,
            event_id: r.get(6)?,
            event: RawValue::from_string(event).map_err(|e| conv(7, Box::new(e)))?,
        },
        r.get(8)?,
    ))
}

#[async_trait]
impl ErrorQuery for Sqlite {
    async fn find_errors(
        &self,
        filter: &ErrorFilter,
        page: PageRequest,
    ) -> Result<Page<ErrorRecord>, BackendError> {
        let filter = filter.clone();
        self.read(move |conn| {
            let (lo, hi) = bounds(filter.from, filter.to);
            let lo = match page.after {
                Some(after) if after >= lo => after,
                _ => lo,
            };
            let code = filter.code.map(|c| c.as_str());
            let mut stmt = conn.prepare_cached(
                "SELECT error_id, code, message, field, app, received_at, event_id, event, t FROM errors
                 WHERE (?1 IS NULL OR code = ?1) AND t > ?2 AND t < ?3 ORDER BY t LIMIT ?4",
            )?;
            let rows = stmt
                .query_map(params![code, lo, hi, page.limit as i64 + 1], error_from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let page = Page::from_fetched(rows, page.limit, |(_, t)| t.clone());
            Ok(Page {
                items: page.items.into_iter().map(|(r, _)| r).collect(),
                next: page.next,
            })
        })
        .await
    }
}

#[async_trait]
impl KeyStore for Sqlite {
    async fn verify(&self, presented: &str) -> Result<Option<Principal>, BackendError> {
        let Some(presented) = ApiKey::parse(presented) else {
            return Ok(None);
        };
        let id = presented.id;
        let cached = lock(&self.inner.keys)
            .get(id)
            .filter(|(_, at)| at.elapsed() < KEY_CACHE_TTL)
            .map(|(k, _)| k.clone());
        let key = match cached {
            Some(k) => Some(k),
            None => {
                let id_owned = id.to_owned();
                let found = self
                    .read(move |conn| {
                        conn.query_row(
                            "SELECT app, scopes, secret_hash, revoked_at IS NOT NULL FROM api_keys WHERE id = ?1",
                            [id_owned],
                            |r| {
                                Ok(CachedKey {
                                    app: r.get(0)?,
                                    scopes: r.get::<_, String>(1)?.split(',').filter_map(Scope::parse).collect(),
                                    secret_hash: r.get(2)?,
                                    revoked: r.get(3)?,
                                })
                            },
                        )
                        .optional()
                    })
                    .await?;
                if let Some(k) = &found {
                    lock(&self.inner.keys).insert(id.to_owned(), (k.clone(), Instant::now()));
                }
                found
            }
        };
        Ok(key.and_then(|k| {
            (presented.matches(&k.secret_hash) && !k.revoked).then_some(Principal {
                app: k.app,
                scopes: k.scopes,
            })
        }))
    }
}

#[async_trait]
impl StatusSource for Sqlite {
    async fn status(&self) -> Result<serde_json::Value, BackendError> {
        self.read_from(Db::Queue, |conn| {
            conn.query_row(
                "SELECT (SELECT COALESCE(SUM(events), 0) FROM queue), (SELECT COUNT(*) FROM dead_letters)",
                [],
                |r| {
                    Ok(serde_json::json!({
                        "queue_depth": r.get::<_, i64>(0)?,
                        "dead_letters": r.get::<_, i64>(1)?,
                    }))
                },
            )
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::{Tail, TailAnswer};

    fn rows(session: &str, ids: std::ops::RangeInclusive<i64>) -> Vec<(String, i64)> {
        ids.map(|id| (session.to_owned(), id)).collect()
    }

    #[test]
    fn the_tail_answers_alone_while_it_knows_every_row() {
        let mut tail = Tail::default();
        tail.add(rows("a", 1..=3));
        tail.add(rows("b", 4..=4));
        tail.add(rows("a", 5..=5));
        let answer = tail.lookup("a", 0, 5);
        assert_eq!(
            answer,
            TailAnswer {
                ids: vec![1, 2, 3, 5],
                scan_after: None
            }
        );
        // Above the snapshot's watermark, and not past its newest row.
        assert_eq!(tail.lookup("a", 2, 3).ids, [3]);
        // Rows the writer has committed but not yet handed over: scanned.
        assert_eq!(tail.lookup("a", 0, 7).scan_after, Some(5));
    }

    #[test]
    fn a_gap_in_the_rowids_means_another_writer_and_a_scan() {
        let mut tail = Tail::default();
        tail.add(rows("a", 1..=2));
        tail.add(rows("a", 6..=7)); // 3..=5 are another process's
        let answer = tail.lookup("a", 0, 7);
        assert_eq!(answer.ids, [1, 2]);
        assert_eq!(answer.scan_after, Some(2));
        // An index run through 7 covers the gap; the tail is whole again.
        tail.indexed(0, 7);
        tail.add(rows("a", 8..=8));
        assert_eq!(
            tail.lookup("a", 7, 8),
            TailAnswer {
                ids: vec![8],
                scan_after: None
            }
        );
        // A snapshot from before that run cannot be answered from the tail.
        assert_eq!(tail.lookup("a", 0, 7).scan_after, Some(0));
    }

    #[test]
    fn chunks_split_the_sessions_evenly_and_cover_them_all() {
        let mut tail = Tail::default();
        assert!(tail.split(8).is_empty(), "nothing to split: one chunk");
        for (i, s) in ["d", "a", "c", "b"].iter().enumerate() {
            tail.add([(s.to_string(), i as i64 + 1)]);
        }
        assert_eq!(tail.split(2), ["c"]);
        assert_eq!(tail.split(4), ["b", "c", "d"]);
        // More chunks than sessions: no empty duplicates.
        assert_eq!(tail.split(8), ["a", "b", "c", "d"]);
    }

    #[test]
    fn after_a_gap_the_tail_is_whole_again_with_what_came_during_the_run() {
        let mut tail = Tail::default();
        tail.add(rows("a", 1..=2));
        tail.add(rows("b", 5..=6)); // 3 and 4 are another process's
        // A run through 6 began; this process committed 7 and 8 meanwhile.
        tail.add(rows("a", 7..=8));
        tail.indexed(0, 6);
        assert_eq!(
            tail.lookup("a", 6, 8),
            TailAnswer {
                ids: vec![7, 8],
                scan_after: None
            }
        );
        tail.add(rows("b", 9..=9));
        assert_eq!(tail.lookup("b", 6, 9).scan_after, None);
    }

    #[test]
    fn pruning_stays_one_index_run_behind() {
        let mut tail = Tail::default();
        tail.add(rows("a", 1..=4));
        tail.indexed(0, 4);
        tail.add(rows("a", 5..=6));
        tail.indexed(4, 6);
        // A reader still on watermark 4 finds 5 and 6 here.
        assert_eq!(
            tail.lookup("a", 4, 6),
            TailAnswer {
                ids: vec![5, 6],
                scan_after: None
            }
        );
        // One on watermark 0 is told to scan: 1..=4 are gone.
        assert_eq!(tail.lookup("a", 0, 6).scan_after, Some(0));
        tail.indexed(6, 6);
        assert!(tail.by_session.is_empty());
    }
}
