//! Reads: a pool of read-only connections beside the writers (WAL lets them
//! run at once), row decoding, and the query ports.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::value::RawValue;

use super::schema::{Db, connect_reader};
use super::session_index::watermarks;
use super::{Sqlite, failed, lock};
use crate::domain::range::KeyRange;
use crate::domain::{ErrorCode, ErrorRecord, StoredEvent, Timestamp};
use crate::ports::{
    BackendError, ErrorFilter, ErrorQuery, EventFilter, EventQuery, Page, PageRequest,
};

impl Sqlite {
    /// Runs `f` on a pooled read-only connection of the store, off the async threads.
    pub(super) async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, BackendError> {
        self.read_from(Db::Store, f).await
    }

    pub(super) async fn read_from<T: Send + 'static>(
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
}

/// The columns [`event_from_row`] reads, of `events` aliased `e`.
const EVENT_COLUMNS: &str = "e.event_id, e.app, e.session_id, e.category, e.name, e.data, e.timestamp, e.original_timestamp, e.received_at, e.ts_seq, e.t, e.user_id, e.anonymous_id, e.context";

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
            user_id: r.get(11)?,
            anonymous_id: r.get(12)?,
            context: match r.get::<_, Option<String>>(13)? {
                Some(c) => Some(RawValue::from_string(c).map_err(|e| {
                    rusqlite::Error::FromSqlConversionFailure(
                        13,
                        rusqlite::types::Type::Text,
                        Box::new(e),
                    )
                })?),
                None => None,
            },
        },
        r.get(9)?,
        r.get(10)?,
    ))
}

#[async_trait]
impl EventQuery for Sqlite {
    async fn session_events(
        &self,
        session_id: &str,
        app: Option<&str>,
        page: PageRequest,
    ) -> Result<Page<StoredEvent>, BackendError> {
        let session_id = session_id.to_owned();
        let app = app.map(str::to_owned);
        let inner = Arc::clone(&self.inner);
        self.read(move |conn| {
            let range = KeyRange::new(page.after.as_deref(), None, None);
            let after = range.after();
            let limit = page.limit + 1;
            // One snapshot for the watermark and both halves.
            let tx = conn.unchecked_transaction()?;
            let (indexed, newest) = watermarks(&tx)?;
            let mut rows = tx
                .prepare_cached(&format!(
                    "SELECT {EVENT_COLUMNS} FROM session_index s JOIN events e ON e.id = s.id AND e.session_id = s.session_id
                     WHERE s.session_id = ?1 AND s.ts_seq > ?2 AND s.id <= ?3 AND (?5 IS NULL OR e.app = ?5)
                     ORDER BY s.ts_seq LIMIT ?4"
                ))?
                .query_map(params![session_id, after, indexed, limit as i64, app], event_from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let answer = lock(&inner.recent).lookup(&session_id, indexed, newest);
            let mut by_id = tx.prepare_cached(&format!(
                "SELECT {EVENT_COLUMNS} FROM events e WHERE e.id = ?1 AND e.session_id = ?2"
            ))?;
            for id in answer.ids {
                // Not there if committed after this snapshot began.
                let row = by_id
                    .query_row(params![id, session_id], event_from_row)
                    .optional()?;
                rows.extend(row.filter(|(e, key, _)| {
                    range.contains(key) && app.as_ref().is_none_or(|a| *a == e.app)
                }));
            }
            drop(by_id);
            if let Some(scan_after) = answer.scan_after {
                inner.session_scans.fetch_add(1, Ordering::Relaxed);
                // Rows another process wrote, or that this snapshot needs and
                // the recent rows no longer hold: scan the unindexed end of the table.
                let scanned = tx
                    .prepare_cached(&format!(
                        "SELECT {EVENT_COLUMNS} FROM events e NOT INDEXED
                         WHERE e.id > ?1 AND e.session_id = ?2 AND e.ts_seq > ?3 AND (?5 IS NULL OR e.app = ?5)
                         ORDER BY e.ts_seq LIMIT ?4"
                    ))?
                    .query_map(params![scan_after, session_id, after, limit as i64, app], event_from_row)?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                rows.extend(scanned);
            }
            tx.commit()?;
            rows.sort_by(|a, b| a.1.cmp(&b.1));
            rows.truncate(limit);
            let page = Page::from_fetched(rows, page.limit, |(_, session_key, _)| session_key.clone());
            Ok(page.map(|(e, _, _)| e))
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
            let range = KeyRange::new(page.after.as_deref(), filter.from, filter.to);
            let (lo, hi) = (range.after(), range.before());
            let limit = page.limit as i64 + 1;
            let rows = match &filter.category {
                Some(category) => {
                    let mut stmt = conn.prepare_cached(&format!(
                        "SELECT {EVENT_COLUMNS} FROM events e
                         WHERE category = ?1 AND t > ?2 AND t < ?3 AND (?5 IS NULL OR e.app = ?5) ORDER BY t LIMIT ?4"
                    ))?;
                    stmt.query_map(params![category, lo, hi, limit, filter.app], event_from_row)?
                        .collect::<rusqlite::Result<Vec<_>>>()?
                }
                None => {
                    let mut stmt = conn.prepare_cached(&format!(
                        "SELECT {EVENT_COLUMNS} FROM events e
                         WHERE t > ?1 AND t < ?2 AND (?4 IS NULL OR e.app = ?4) ORDER BY t LIMIT ?3"
                    ))?;
                    stmt.query_map(params![lo, hi, limit, filter.app], event_from_row)?
                        .collect::<rusqlite::Result<Vec<_>>>()?
                }
            };
            Ok(Page::from_fetched(rows, page.limit, |(_, _, t)| t.clone()).map(|(e, _, _)| e))
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
            let range = KeyRange::new(page.after.as_deref(), filter.from, filter.to);
            let (lo, hi) = (range.after(), range.before());
            let code = filter.code.map(|c| c.as_str());
            let mut stmt = conn.prepare_cached(
                "SELECT error_id, code, message, field, app, received_at, event_id, event, t FROM errors
                 WHERE (?1 IS NULL OR code = ?1) AND t > ?2 AND t < ?3 AND (?5 IS NULL OR app = ?5)
                 ORDER BY t LIMIT ?4",
            )?;
            let rows = stmt
                .query_map(params![code, lo, hi, page.limit as i64 + 1, filter.app], error_from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(Page::from_fetched(rows, page.limit, |(_, t)| t.clone()).map(|(r, _)| r))
        })
        .await
    }
}
