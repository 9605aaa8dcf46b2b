//! The write-ahead logs: checkpoints that never stall a commit, and a steady
//! write-back of dirty pages.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use rusqlite::Connection;

use super::Inner;
use super::health::RateLimitedWarning;
use super::store::StoreCommand;

/// Set by the checkpoint thread when a file's writer is to copy what is left
/// in its WAL, right after its next commit.
#[derive(Clone, Default)]
pub(super) struct CheckpointDue(Arc<AtomicBool>);

impl CheckpointDue {
    /// Copies what the background checkpoint left in the WAL (a few commits'
    /// worth), after the answers are sent, so the next transaction can wrap
    /// the WAL around.
    pub(super) fn copy_rest_if_due(&self, conn: &Connection, warning: &mut RateLimitedWarning) {
        if self.0.swap(false, Ordering::AcqRel) {
            if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                warning.warn(&e);
            }
        }
    }

    fn set(&self) {
        self.0.store(true, Ordering::Release);
    }
}

/// Checkpoints in two steps, so that no commit waits for a large copy and the
/// WAL still wraps around instead of growing:
/// 1. every 100 ms this thread copies the WAL of each file back into it
///    (PASSIVE: beside the writer, never blocking it);
/// 2. it then asks the file's writer to copy the few frames written meanwhile,
///    right after its next commit ([`CheckpointDue`]). The WAL is then fully
///    copied, and the writer's next transaction starts it afresh.
///
/// It also wakes the store's writer every 100 ms ([`StoreCommand::Tick`]), so
/// a bulk index of sessions goes on while nothing else comes. It stops when
/// the last handle is dropped.
pub(super) fn checkpoint_loop(conns: &[(Connection, CheckpointDue)], alive: &Weak<Inner>) {
    // Under a full disk this fails every 100 ms, for each file.
    let mut warning = RateLimitedWarning::new("a WAL checkpoint");
    while let Some(inner) = alive.upgrade() {
        // A full channel means the writer is busy, and will look anyway.
        let _ = inner.store_tx.try_send(StoreCommand::Tick);
        drop(inner);
        std::thread::sleep(Duration::from_millis(100));
        for (conn, due) in conns {
            match conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(1)) {
                Ok(frames) if frames > 0 => due.set(),
                Ok(_) => {}
                Err(e) => {
                    warning.warn(&e);
                }
            }
        }
    }
}

/// Each database file and its WAL: what [`writeback_loop`] writes back.
pub(super) fn files_and_wals(files: &[&PathBuf]) -> Vec<PathBuf> {
    let mut paths = Vec::new();
    for file in files {
        let mut wal = file.as_os_str().to_owned();
        wal.push("-wal");
        paths.extend([file.to_path_buf(), PathBuf::from(wal)]);
    }
    paths
}

/// Starts writing back, without waiting, whatever the kernel holds dirty of the
/// database files, every few milliseconds: large commits and checkpoints then
/// reach the disk as a steady stream rather than as bursts that a queue
/// commit's fdatasync would have to wait behind (the reason PostgreSQL has
/// `checkpoint_flush_after`).
#[cfg(target_os = "linux")]
pub(super) fn writeback_loop(paths: &[PathBuf], alive: &Weak<Inner>) {
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
