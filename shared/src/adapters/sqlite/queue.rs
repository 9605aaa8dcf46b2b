//! The queue file's writer and readers: enqueue, receive, acknowledge, and
//! the dead letters. The backlog limit and the redelivery policy are the
//! domain's ([`crate::domain::admission`], [`crate::domain::redelivery`]).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::{Notify, OwnedSemaphorePermit, mpsc, oneshot};

use super::group_commit::{Reply, Role, call, no_reply, savepoint};
use super::schema::{Db, connect};
use super::{Sqlite, failed};
use crate::domain::admission::admit;
use crate::domain::redelivery::{Redelivery, RetryPolicy};
use crate::domain::{QueuedBatch, Timestamp};
use crate::ports::{BackendError, DeadLetter, DeadLetters, EventQueue, QueueMessage, QueueSource};

/// Largest batch the embedded worker takes at once, in events.
pub const RECEIVE_MAX_EVENTS: usize = 5000;

/// What the queue's writer is asked to do.
pub(super) enum QueueCommand {
    /// Add one request's events.
    Enqueue {
        body: String,
        events: usize,
        /// Holds the body's share of the pending-bytes budget until answered.
        _permit: OwnedSemaphorePermit,
        reply: oneshot::Sender<Result<(), BackendError>>,
    },
    /// Delete the processed messages; retry or dead-letter the failed ones.
    Complete {
        processed: Vec<i64>,
        failed: Vec<(i64, String)>,
        reply: oneshot::Sender<Result<(), BackendError>>,
    },
    /// Re-read the backlog count (another process may have added messages).
    Recount,
}

/// The queue writer's state.
pub(super) struct QueueRole {
    /// Events queued and not yet processed.
    backlog: u64,
    /// `backlog` when the open transaction began, restored if it rolls back.
    backlog_at_begin: u64,
    max_backlog: u64,
    retry: RetryPolicy,
    /// Whether the open transaction enqueued anything.
    enqueued: bool,
    /// Wakes the worker once an enqueue is committed.
    notify: Arc<Notify>,
}

impl QueueRole {
    /// The role of the writer of `conn`, whose backlog it counts now.
    pub(super) fn new(
        conn: &Connection,
        max_backlog: u64,
        retry: RetryPolicy,
        notify: Arc<Notify>,
    ) -> rusqlite::Result<Self> {
        let backlog = count_backlog(conn)?;
        Ok(Self {
            backlog,
            backlog_at_begin: backlog,
            max_backlog,
            retry,
            enqueued: false,
            notify,
        })
    }
}

fn count_backlog(conn: &Connection) -> rusqlite::Result<u64> {
    let n: i64 = conn.query_row("SELECT COALESCE(SUM(events), 0) FROM queue", [], |r| {
        r.get(0)
    })?;
    Ok(u64::try_from(n).unwrap_or(0))
}

impl Role for QueueRole {
    type Command = QueueCommand;

    fn commit_every(&self) -> Duration {
        Duration::ZERO
    }

    fn is_wake_up(_: &QueueCommand) -> bool {
        false
    }

    fn begin(&mut self) {
        self.backlog_at_begin = self.backlog;
        self.enqueued = false;
    }

    fn apply(&mut self, conn: &Connection, cmd: QueueCommand) -> Reply {
        match cmd {
            QueueCommand::Enqueue {
                body,
                events,
                _permit,
                reply,
            } => {
                let events = events as u64;
                let (backlog, limit) = (self.backlog, self.max_backlog);
                let r = savepoint(conn, || insert_message(conn, &body, events, backlog, limit));
                if r.is_ok() {
                    self.backlog += events;
                    self.enqueued = true;
                }
                Box::new(move |commit_err| {
                    drop(_permit);
                    let _ = reply.send(commit_err.map_or(r, |e| Err(e.clone())));
                })
            }
            QueueCommand::Complete {
                processed,
                failed: fails,
                reply,
            } => {
                let retry = self.retry;
                let r = savepoint(conn, || complete(conn, &processed, &fails, retry));
                let r = r.map(|done| {
                    self.backlog = self.backlog.saturating_sub(done);
                });
                Box::new(move |commit_err| {
                    let _ = reply.send(commit_err.map_or(r, |e| Err(e.clone())));
                })
            }
            QueueCommand::Recount => {
                match count_backlog(conn) {
                    Ok(n) => self.backlog = n,
                    Err(e) => tracing::warn!(error = %e, "recounting the queue failed"),
                }
                no_reply()
            }
        }
    }

    fn refuse(cmd: QueueCommand, e: &BackendError) {
        match cmd {
            QueueCommand::Enqueue { reply, .. } | QueueCommand::Complete { reply, .. } => {
                let _ = reply.send(Err(e.clone()));
            }
            QueueCommand::Recount => {}
        }
    }

    fn finish(&mut self, _conn: &mut Connection, commit_err: Option<&BackendError>) {
        if commit_err.is_some() {
            self.backlog = self.backlog_at_begin;
        } else if self.enqueued {
            self.notify.notify_one();
        }
    }

    fn idle(&mut self, _conn: &mut Connection) {}
}

/// Adds a message of `events` events, if the backlog admits them.
fn insert_message(
    conn: &Connection,
    body: &str,
    events: u64,
    backlog: u64,
    limit: u64,
) -> Result<(), BackendError> {
    admit(backlog, events, limit).map_err(|e| BackendError::Busy(e.to_string()))?;
    conn.prepare_cached("INSERT INTO queue (body, events, enqueued_at) VALUES (?1, ?2, ?3)")
        .and_then(|mut s| s.execute(params![body, events as i64, Timestamp::now().to_rfc3339()]))
        .map_err(failed)?;
    Ok(())
}

/// Deletes the processed messages and applies the redelivery policy to the
/// failed ones. Returns how many events left the queue.
fn complete(
    conn: &Connection,
    processed: &[i64],
    fails: &[(i64, String)],
    retry: RetryPolicy,
) -> Result<u64, BackendError> {
    let mut delete = conn
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
        let attempts: Option<u32> = conn
            .query_row(
                "UPDATE queue SET attempts = attempts + 1, last_error = ?2 WHERE id = ?1 RETURNING attempts",
                params![id, error],
                |r| r.get(0),
            )
            .optional()
            .map_err(failed)?;
        let Some(attempts) = attempts else { continue };
        match retry.after_failure(attempts) {
            Redelivery::RetryAfter(wait) => {
                let wait = i64::try_from(wait.as_micros()).unwrap_or(i64::MAX);
                conn.execute(
                    "UPDATE queue SET not_before = ?2 WHERE id = ?1",
                    params![id, now.add_micros(wait).as_micros()],
                )
                .map_err(failed)?;
            }
            Redelivery::DeadLetter => {
                let n: i64 = conn
                    .query_row(
                        "INSERT INTO dead_letters (body, events, attempts, last_error, failed_at)
                         SELECT body, events, attempts, last_error, ?2 FROM queue WHERE id = ?1 RETURNING events",
                        params![id, now.to_rfc3339()],
                        |r| r.get(0),
                    )
                    .map_err(failed)?;
                conn.execute("DELETE FROM queue WHERE id = ?1", [id])
                    .map_err(failed)?;
                done += n as u64;
                tracing::error!(queue_id = id, attempts, error = %error, "queue message moved to the dead letters");
            }
        }
    }
    Ok(done)
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
            .try_send(QueueCommand::Enqueue {
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
            let _ = self.inner.queue_tx.try_send(QueueCommand::Recount);
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
        call(&self.inner.queue_tx, |reply| QueueCommand::Complete {
            processed,
            failed: fails,
            reply,
        })
        .await?
    }

    async fn wait_for_work(&self, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, self.inner.enqueued.notified()).await;
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

#[async_trait]
impl DeadLetters for Sqlite {
    async fn list_dead_letters(&self, max: usize) -> Result<Vec<DeadLetter>, BackendError> {
        let max = i64::try_from(max).unwrap_or(i64::MAX);
        self.read_from(Db::Queue, move |conn| {
            conn.prepare(
                "SELECT id, body, events, attempts, last_error, failed_at FROM dead_letters ORDER BY id LIMIT ?1",
            )?
            .query_map([max], |r| {
                Ok(DeadLetter {
                    id: r.get::<_, i64>(0)?.to_string(),
                    body: r.get(1)?,
                    events: u64::try_from(r.get::<_, i64>(2)?).ok(),
                    attempts: r.get(3)?,
                    last_error: r.get(4)?,
                    failed_at: r.get(5)?,
                })
            })?
            .collect()
        })
        .await
    }

    async fn redrive_dead_letters(&self) -> Result<usize, BackendError> {
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
