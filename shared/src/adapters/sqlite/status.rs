//! What `GET /health` reports of the embedded backend: queue depth, dead
//! letters, and `degraded` with the reason while a file's writes fail.

use async_trait::async_trait;

use super::Sqlite;
use super::schema::Db;
use crate::ports::BackendError;
use crate::ports::{DEGRADED, StatusSource};

#[async_trait]
impl StatusSource for Sqlite {
    async fn status(&self) -> Result<serde_json::Value, BackendError> {
        let failing = [
            ("the queue", self.inner.queue_health.failing()),
            ("the store", self.inner.store_health.failing()),
        ];
        let degraded: Vec<String> = failing
            .into_iter()
            .filter_map(|(file, e)| e.map(|e| format!("writes to {file} fail: {e}")))
            .collect();
        let mut status = self.read_from(Db::Queue, |conn| {
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
        .await?;
        if !degraded.is_empty() {
            status[DEGRADED] = serde_json::Value::from(degraded.join("; "));
        }
        Ok(status)
    }
}
