//! The embedded backend: two SQLite files in WAL mode. `eye.db` is the event
//! store, the error store and the API keys; `eye-queue.db` beside it is the
//! durable queue and its dead letters.
//!
//! Each file has one writer thread that owns its only write connection and
//! commits in groups ([`group_commit`]); reads use pools of read-only
//! connections beside them ([`read`]). One file per concept:
//! - [`schema`]: DDL, schema version and migration, connections;
//! - [`group_commit`]: the writer engine, generic over its file's commands;
//! - [`queue`]: enqueue, receive, acknowledge, dead letters (the queue's writer);
//! - [`store`]: event and error-record writes (the store's writer);
//! - [`session_index`]: the bulk session index the store's writer keeps;
//! - [`recent`]: the in-memory index of recent rows per session;
//! - [`read`]: readers, row decoding and the query ports;
//! - [`keys`]: API keys;
//! - [`wal`]: checkpoints and write-back;
//! - [`health`]: whether writes fail, and rate-limited warnings;
//! - [`status`]: what `/health` reports.

mod group_commit;
mod health;
mod keys;
mod queue;
mod read;
mod recent;
mod schema;
mod session_index;
mod status;
mod store;
mod wal;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rusqlite::Connection;
use tokio::sync::{Notify, Semaphore, mpsc};

pub use keys::KeyInfo;
pub use queue::RECEIVE_MAX_EVENTS;
pub use schema::queue_path;

use crate::config;
use crate::domain::redelivery::RetryPolicy;
use crate::ports::BackendError;
use group_commit::Writer;
use health::WriteHealth;
use queue::{QueueCommand, QueueRole};
use recent::RecentRows;
use schema::{Db, connect};
use session_index::SessionIndexer;
use store::{StoreCommand, StoreRole};
use wal::CheckpointDue;

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

/// The embedded backend. Cheap to clone; every clone shares the writers.
#[derive(Clone)]
pub struct Sqlite {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    queue_path: PathBuf,
    /// The writer of the store file (events, errors).
    store_tx: mpsc::Sender<StoreCommand>,
    /// The writer of the queue file.
    queue_tx: mpsc::Sender<QueueCommand>,
    pending_bytes: Arc<Semaphore>,
    readers: Mutex<Vec<Connection>>,
    queue_readers: Mutex<Vec<Connection>>,
    enqueued: Arc<Notify>,
    keys: Mutex<HashMap<String, (keys::CachedKey, Instant)>>,
    /// The session order of the events `session_index` does not hold yet.
    recent: Arc<Mutex<RecentRows>>,
    /// Session queries that had to scan the unindexed end of the table.
    session_scans: AtomicU64,
    /// How the writers' latest commits went.
    store_health: WriteHealth,
    queue_health: WriteHealth,
}

fn failed(e: impl std::fmt::Display) -> BackendError {
    BackendError::Failed(format!("sqlite: {e}"))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
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
        let mut store_conn = connect(&config.path, Db::Store, fsync).map_err(failed)?;
        let queue_conn = connect(&queue_file, Db::Queue, fsync).map_err(failed)?;
        let (store_tx, store_rx) = mpsc::channel(4096);
        let (queue_tx, queue_rx) = mpsc::channel(4096);
        let due = [CheckpointDue::default(), CheckpointDue::default()];
        let recent = Arc::new(Mutex::new(RecentRows::default()));
        let mut indexer = SessionIndexer::new(Arc::clone(&recent), config.session_index_every);
        // Events the last run stored but did not index (or all of them, in a
        // file written by schema version 1).
        indexer.index_all(&mut store_conn).map_err(failed)?;
        let enqueued = Arc::new(Notify::new());
        let retry = RetryPolicy {
            max_attempts: config.max_attempts,
        };
        let queue_role = QueueRole::new(
            &queue_conn,
            config.max_backlog_events,
            retry,
            Arc::clone(&enqueued),
        )
        .map_err(failed)?;
        let (store_health, queue_health) = (WriteHealth::default(), WriteHealth::default());
        let store_writer = Writer::new(
            store_conn,
            StoreRole::new(indexer),
            due[0].clone(),
            store_health.clone(),
        );
        let queue_writer =
            Writer::new(queue_conn, queue_role, due[1].clone(), queue_health.clone());
        let inner = Arc::new(Inner {
            path: config.path.clone(),
            queue_path: queue_file,
            pending_bytes: Arc::new(Semaphore::new(config.max_pending_bytes / 1024)),
            store_tx,
            queue_tx,
            readers: Mutex::new(Vec::new()),
            queue_readers: Mutex::new(Vec::new()),
            enqueued,
            keys: Mutex::new(HashMap::new()),
            recent,
            session_scans: AtomicU64::new(0),
            store_health,
            queue_health,
        });
        spawn("eye-sqlite-store", move || store_writer.run(store_rx))?;
        spawn("eye-sqlite-queue", move || queue_writer.run(queue_rx))?;
        let checkpointers = [
            (
                connect(&inner.path, Db::Store, fsync).map_err(failed)?,
                due[0].clone(),
            ),
            (
                connect(&inner.queue_path, Db::Queue, fsync).map_err(failed)?,
                due[1].clone(),
            ),
        ];
        #[cfg(target_os = "linux")]
        {
            let paths = wal::files_and_wals(&[&inner.path, &inner.queue_path]);
            let weak = Arc::downgrade(&inner);
            spawn("eye-sqlite-writeback", move || {
                wal::writeback_loop(&paths, &weak)
            })?;
        }
        let weak = Arc::downgrade(&inner);
        spawn("eye-sqlite-checkpoint", move || {
            wal::checkpoint_loop(&checkpointers, &weak)
        })?;
        Ok(Self { inner })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Moves every stored event into the session index now, instead of within
    /// [`SqliteConfig::session_index_every`]. Queries find events either way.
    pub async fn index_sessions(&self) -> Result<(), BackendError> {
        group_commit::call(&self.inner.store_tx, |reply| StoreCommand::IndexSessions {
            reply,
        })
        .await?
    }

    /// How many session queries of this handle had to scan the unindexed end
    /// of the table, rather than find the newest events in memory: those
    /// another process wrote, or that a snapshot older than the last bulk
    /// index needed.
    pub fn session_scans(&self) -> u64 {
        self.inner
            .session_scans
            .load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Starts a named thread.
fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Result<(), BackendError> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .map(drop)
        .map_err(failed)
}
