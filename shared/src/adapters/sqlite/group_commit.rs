//! The group-commit engine: one writer thread per file, which owns that file's
//! only write connection.
//!
//! It takes every command waiting in its channel, applies them in one
//! transaction (each in its own savepoint, so one failure does not undo the
//! others), commits once, and only then answers. One fsync serves every
//! request that arrived meanwhile, and no caller hears "done" before its data
//! is on disk. What a command does is its file's [`Role`]: the store's
//! ([`super::store`]) and the queue's ([`super::queue`]) each have their own
//! command type, so a command cannot reach the wrong file's writer.

use std::time::{Duration, Instant};

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use super::failed;
use super::health::{RateLimitedWarning, WriteHealth};
use super::wal::CheckpointDue;
use crate::ports::BackendError;

/// Largest group of commands in one transaction.
const MAX_GROUP: usize = 512;

/// Answers one command once its group's commit is known (`Some` if it failed).
pub(super) type Reply = Box<dyn FnOnce(Option<&BackendError>)>;

/// A reply for a command that has nothing to answer.
pub(super) fn no_reply() -> Reply {
    Box::new(|_| {})
}

/// What one file's writer does with its commands.
pub(super) trait Role: Send + 'static {
    /// The commands its channel carries.
    type Command: Send + 'static;

    /// The shortest time between two commits.
    fn commit_every(&self) -> Duration;

    /// Whether a command only wakes the writer up, with nothing to apply.
    fn is_wake_up(cmd: &Self::Command) -> bool;

    /// Called once a group's transaction has begun.
    fn begin(&mut self);

    /// Applies one command in the open transaction; the answer is sent after
    /// the commit.
    fn apply(&mut self, conn: &Connection, cmd: Self::Command) -> Reply;

    /// Answers a command that never ran, because its transaction could not begin.
    fn refuse(cmd: Self::Command, e: &BackendError);

    /// After the group's commit (`commit_err` is `None`) or its rollback,
    /// before the answers go out.
    fn finish(&mut self, conn: &mut Connection, commit_err: Option<&BackendError>);

    /// Background work between groups, and when woken up.
    fn idle(&mut self, conn: &mut Connection);
}

/// One file's writer thread.
pub(super) struct Writer<R: Role> {
    conn: Connection,
    role: R,
    checkpoint: CheckpointDue,
    checkpoint_warning: RateLimitedWarning,
    health: WriteHealth,
    last_commit: Instant,
}

impl<R: Role> Writer<R> {
    /// A writer of `conn`; `checkpoint` tells it when to copy the rest of the
    /// WAL, and it records in `health` how each commit went.
    pub(super) fn new(
        conn: Connection,
        role: R,
        checkpoint: CheckpointDue,
        health: WriteHealth,
    ) -> Self {
        Self {
            conn,
            role,
            checkpoint,
            checkpoint_warning: RateLimitedWarning::new("copying the rest of the WAL"),
            health,
            last_commit: Instant::now(),
        }
    }

    /// Runs until every sender of `rx` is gone.
    pub(super) fn run(mut self, mut rx: mpsc::Receiver<R::Command>) {
        while let Some(first) = rx.blocking_recv() {
            let since = self.last_commit.elapsed();
            let every = self.role.commit_every();
            if since < every {
                std::thread::sleep(every - since);
            }
            let mut group = vec![first];
            while group.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(cmd) => group.push(cmd),
                    Err(_) => break,
                }
            }
            group.retain(|cmd| !R::is_wake_up(cmd));
            if group.is_empty() {
                self.role.idle(&mut self.conn);
                continue;
            }
            self.apply_group(group);
            self.last_commit = Instant::now();
            self.checkpoint
                .copy_rest_if_due(&self.conn, &mut self.checkpoint_warning);
            self.role.idle(&mut self.conn);
        }
    }

    /// Applies a group in one transaction and answers after the commit.
    fn apply_group(&mut self, group: Vec<R::Command>) {
        if let Err(e) = self.conn.execute_batch("BEGIN IMMEDIATE") {
            let e = failed(e);
            self.health.record(Some(&e));
            for cmd in group {
                R::refuse(cmd, &e);
            }
            return;
        }
        self.role.begin();
        let replies: Vec<Reply> = group
            .into_iter()
            .map(|cmd| self.role.apply(&self.conn, cmd))
            .collect();
        let commit_err = self.conn.execute_batch("COMMIT").err().map(failed);
        if commit_err.is_some() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
        self.health
            .record(commit_err.as_ref().map(|e| e as &dyn std::fmt::Display));
        self.role.finish(&mut self.conn, commit_err.as_ref());
        for reply in replies {
            reply(commit_err.as_ref());
        }
    }
}

/// Runs `f` in a savepoint of the open transaction: if it fails, its writes
/// are undone and the rest of the group's are kept.
pub(super) fn savepoint<T>(
    conn: &Connection,
    f: impl FnOnce() -> Result<T, BackendError>,
) -> Result<T, BackendError> {
    conn.execute_batch("SAVEPOINT cmd").map_err(failed)?;
    match f() {
        Ok(v) => {
            conn.execute_batch("RELEASE cmd").map_err(failed)?;
            Ok(v)
        }
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK TO cmd; RELEASE cmd");
            Err(e)
        }
    }
}

/// Sends a command to a writer and waits for its answer.
pub(super) async fn call<C, T>(
    tx: &mpsc::Sender<C>,
    make: impl FnOnce(oneshot::Sender<T>) -> C,
) -> Result<T, BackendError> {
    let (reply, rx) = oneshot::channel();
    tx.send(make(reply))
        .await
        .map_err(|_| failed("the writer has stopped"))?;
    rx.await.map_err(|_| failed("the writer has stopped"))
}
