//! What `GET /health` reports of the embedded backend: queue depth and dead letters.

use async_trait::async_trait;

use super::Sqlite;
use super::schema::Db;
use crate::ports::BackendError;
use crate::ports::StatusSource;

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
