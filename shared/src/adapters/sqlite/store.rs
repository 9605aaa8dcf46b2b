//! The store file's writer: event and error-record writes, idempotent by key,
//! and the session index that follows them.

use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, params};
use tokio::sync::oneshot;

use super::group_commit::{Reply, Role, call, no_reply, savepoint};
use super::session_index::SessionIndexer;
use super::{Sqlite, failed};
use crate::domain::{ErrorRecord, StoredEvent};
use crate::ports::{BackendError, ErrorStore, EventStore, PutOutcome};

/// The store's writer commits at most this often (the queue's writer as often
/// as it can, since ingest waits for it). A busy worker then stores larger
/// batches, which write fewer pages per event (BENCHMARKS.md); an event may
/// become queryable up to this much later.
const STORE_COMMIT_EVERY: Duration = Duration::from_millis(10);

/// Per-item answers of a write.
type PutReply = oneshot::Sender<Vec<Result<PutOutcome, BackendError>>>;

/// What the store's writer is asked to do.
pub(super) enum StoreCommand {
    /// Store events.
    PutEvents {
        events: Vec<StoredEvent>,
        reply: PutReply,
    },
    /// Store error records.
    PutErrors {
        errors: Vec<ErrorRecord>,
        reply: PutReply,
    },
    /// Index the sessions of every stored event now.
    IndexSessions {
        reply: oneshot::Sender<Result<(), BackendError>>,
    },
    /// Sent every 100 ms by the checkpoint thread, so the writer goes on with
    /// a bulk index of sessions while nothing else comes.
    Tick,
}

/// The store writer's state.
pub(super) struct StoreRole {
    /// Events inserted in the open transaction: (session, rowid).
    fresh: Vec<(String, i64)>,
    indexer: SessionIndexer,
    /// Answered after the group's commit and the index that follows it.
    index_now: Vec<oneshot::Sender<Result<(), BackendError>>>,
}

impl StoreRole {
    pub(super) fn new(indexer: SessionIndexer) -> Self {
        Self {
            fresh: Vec::new(),
            indexer,
            index_now: Vec::new(),
        }
    }
}

impl Role for StoreRole {
    type Command = StoreCommand;

    fn commit_every(&self) -> Duration {
        STORE_COMMIT_EVERY
    }

    fn is_wake_up(cmd: &StoreCommand) -> bool {
        matches!(cmd, StoreCommand::Tick)
    }

    fn begin(&mut self) {}

    fn apply(&mut self, conn: &Connection, cmd: StoreCommand) -> Reply {
        match cmd {
            StoreCommand::PutEvents { events, reply } => {
                let mark = self.fresh.len();
                let r = savepoint(conn, || insert_events(conn, &events, &mut self.fresh));
                if r.is_err() {
                    self.fresh.truncate(mark);
                }
                Box::new(move |commit_err| {
                    let _ = reply.send(per_item(r, events.len(), commit_err));
                })
            }
            StoreCommand::PutErrors { errors, reply } => {
                let r = savepoint(conn, || insert_errors(conn, &errors));
                Box::new(move |commit_err| {
                    let _ = reply.send(per_item(r, errors.len(), commit_err));
                })
            }
            StoreCommand::IndexSessions { reply } => {
                self.index_now.push(reply);
                no_reply()
            }
            StoreCommand::Tick => no_reply(),
        }
    }

    fn refuse(cmd: StoreCommand, e: &BackendError) {
        match cmd {
            StoreCommand::PutEvents { events, reply } => {
                let _ = reply.send(vec![Err(e.clone()); events.len()]);
            }
            StoreCommand::PutErrors { errors, reply } => {
                let _ = reply.send(vec![Err(e.clone()); errors.len()]);
            }
            StoreCommand::IndexSessions { reply } => {
                let _ = reply.send(Err(e.clone()));
            }
            StoreCommand::Tick => {}
        }
    }

    fn finish(&mut self, conn: &mut Connection, commit_err: Option<&BackendError>) {
        if commit_err.is_some() {
            self.fresh.clear();
        } else {
            self.indexer.committed(std::mem::take(&mut self.fresh));
        }
        if !self.index_now.is_empty() {
            let result = match commit_err {
                Some(e) => Err(e.clone()),
                None => self.indexer.index_all(conn).map_err(failed),
            };
            for reply in self.index_now.drain(..) {
                let _ = reply.send(result.clone());
            }
        }
    }

    fn idle(&mut self, conn: &mut Connection) {
        self.indexer.index_if_due(conn);
    }
}

/// Inserts events, ignoring those whose key exists; records the new rows in `fresh`.
fn insert_events(
    conn: &Connection,
    events: &[StoredEvent],
    fresh: &mut Vec<(String, i64)>,
) -> Result<Vec<PutOutcome>, BackendError> {
    let mut stmt = conn
        .prepare_cached(
            "INSERT OR IGNORE INTO events (session_id, ts_seq, t, event_id, app, category, name, data, timestamp, original_timestamp, received_at, user_id, anonymous_id, context)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
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
                    e.user_id,
                    e.anonymous_id,
                    e.context.as_ref().map(|c| c.get()),
                ])
                .map_err(failed)?;
            if changed != 1 {
                return Ok(PutOutcome::Duplicate);
            }
            fresh.push((e.session_id.clone(), conn.last_insert_rowid()));
            Ok(PutOutcome::Stored)
        })
        .collect()
}

/// Inserts error records, ignoring those whose id exists.
fn insert_errors(
    conn: &Connection,
    errors: &[ErrorRecord],
) -> Result<Vec<PutOutcome>, BackendError> {
    let mut stmt = conn
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

/// One answer per item: the write's, unless the write or the commit failed.
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

#[async_trait]
impl EventStore for Sqlite {
    async fn put_events(&self, events: Vec<StoredEvent>) -> Vec<Result<PutOutcome, BackendError>> {
        let n = events.len();
        call(&self.inner.store_tx, |reply| StoreCommand::PutEvents {
            events,
            reply,
        })
        .await
        .unwrap_or_else(|e| vec![Err(e); n])
    }
}

#[async_trait]
impl ErrorStore for Sqlite {
    async fn put_errors(&self, errors: Vec<ErrorRecord>) -> Vec<Result<PutOutcome, BackendError>> {
        let n = errors.len();
        call(&self.inner.store_tx, |reply| StoreCommand::PutErrors {
            errors,
            reply,
        })
        .await
        .unwrap_or_else(|e| vec![Err(e); n])
    }
}
