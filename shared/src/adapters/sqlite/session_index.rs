//! The bulk session index: every few seconds the store's writer moves the
//! newest events into `session_index`, sorted by session, in chunks spread
//! over the interval, so each session's page is written once per run rather
//! than once per transaction.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rusqlite::{Connection, params};

use super::health::RateLimitedWarning;
use super::lock;
use super::recent::RecentRows;

/// Events stored since the last bulk index of sessions, above which the next
/// one runs at once rather than at its interval.
const INDEX_SESSIONS_AFTER: usize = 200_000;
/// Most rowids one bulk index of sessions covers, which bounds its sort (a
/// store migrated from schema 1 is indexed in runs of this size).
const INDEX_RUN_MAX_ROWS: i64 = 400_000;
/// Chunks, by session id, that a bulk index of sessions is split into and
/// spread over its interval: the disk then gets small bursts of page writes
/// instead of one large one, which a queue commit's flush would wait behind.
const INDEX_CHUNKS: usize = 8;

/// The store's session-index watermark (every event up to this rowid is in
/// `session_index`) and its newest event's rowid.
pub(super) fn watermarks(conn: &Connection) -> rusqlite::Result<(i64, i64)> {
    conn.prepare_cached(
        "SELECT indexed_through, (SELECT COALESCE(MAX(id), 0) FROM events) FROM session_index_state",
    )?
    .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
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

/// The store writer's bulk indexer of sessions.
pub(super) struct SessionIndexer {
    /// The session order of the events above the watermark.
    recent: Arc<Mutex<RecentRows>>,
    /// How often a run starts.
    every: Duration,
    /// Events committed since the last run began.
    unindexed: usize,
    /// When the last run began.
    last_index: Instant,
    run: Option<IndexRun>,
    warning: RateLimitedWarning,
}

impl SessionIndexer {
    /// An indexer that starts a run every `every`.
    pub(super) fn new(recent: Arc<Mutex<RecentRows>>, every: Duration) -> Self {
        Self {
            recent,
            every,
            unindexed: 0,
            last_index: Instant::now(),
            run: None,
            warning: RateLimitedWarning::new("indexing sessions"),
        }
    }

    /// Takes in the events of a commit, in rowid order.
    pub(super) fn committed(&mut self, rows: Vec<(String, i64)>) {
        self.unindexed += rows.len();
        lock(&self.recent).add(rows);
    }

    /// Moves every event above the watermark into `session_index` now, in
    /// one transaction per run (abandoning a run in progress: its chunks are
    /// written again, and ignored).
    pub(super) fn index_all(&mut self, conn: &mut Connection) -> rusqlite::Result<()> {
        loop {
            let all = self.start_run(conn, false)?;
            self.index_chunk(conn)?;
            if all {
                return Ok(());
            }
        }
    }

    /// Writes the next chunk of the session index when it is due: a run
    /// starts every `every` (at once past [`INDEX_SESSIONS_AFTER`] events),
    /// and its chunks are spread over that time.
    pub(super) fn index_if_due(&mut self, conn: &mut Connection) {
        let hurry = self.unindexed >= INDEX_SESSIONS_AFTER;
        let result = match &self.run {
            Some(run) => {
                let gap = if hurry {
                    Duration::ZERO
                } else {
                    self.every / INDEX_CHUNKS as u32
                };
                if run.last.elapsed() >= gap {
                    self.index_chunk(conn)
                } else {
                    Ok(())
                }
            }
            None if hurry || (self.unindexed > 0 && self.last_index.elapsed() >= self.every) => {
                self.start_run(conn, true)
                    .and_then(|_| self.index_chunk(conn))
            }
            None => Ok(()),
        };
        if let Err(e) = result {
            self.warning.warn(&e);
        }
    }

    /// Begins a bulk index of the events stored so far, up to
    /// [`INDEX_RUN_MAX_ROWS`] of them, in chunks by session id when
    /// `chunked`. Returns whether it covers every stored event.
    fn start_run(&mut self, conn: &Connection, chunked: bool) -> rusqlite::Result<bool> {
        let (watermark, newest) = watermarks(conn)?;
        let through = newest.min(watermark.saturating_add(INDEX_RUN_MAX_ROWS));
        let bounds = if chunked {
            lock(&self.recent).split(INDEX_CHUNKS)
        } else {
            Vec::new()
        };
        // What this run leaves counts towards the next.
        self.unindexed = usize::try_from(newest - through).unwrap_or(0);
        self.last_index = Instant::now();
        self.run = Some(IndexRun {
            through,
            bounds,
            next: 0,
            last: Instant::now(),
        });
        Ok(through == newest)
    }

    /// Writes the next chunk of the run in progress: the events up to the
    /// run's rowid whose session ids fall in the chunk's range, sorted. After
    /// the last chunk, moves the watermark, and drops from the recent rows
    /// what the previous run indexed. Readers ignore index entries above the
    /// watermark, so a partly written run shows nothing twice.
    fn index_chunk(&mut self, conn: &mut Connection) -> rusqlite::Result<()> {
        let Some(run) = &self.run else {
            return Ok(());
        };
        let lo = run.next.checked_sub(1).and_then(|i| run.bounds.get(i));
        let hi = run.bounds.get(run.next);
        let last_chunk = run.next >= run.bounds.len();
        let through = run.through;
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
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
            self.run = None;
            lock(&self.recent).indexed(before, through.max(before));
        } else if let Some(run) = &mut self.run {
            run.next += 1;
            run.last = Instant::now();
        }
        Ok(())
    }
}
