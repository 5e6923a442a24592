//! What the SQL outbox and inbox do the SQLite way.

use async_trait::async_trait;
use sqlx::sqlite::SqliteQueryResult;
use sqlx::{AssertSqlSafe, Connection, Sqlite, SqliteConnection};

use super::error::sqlite_error;
use crate::envelope::Event;
use crate::error::EventError;
use crate::outbox_core::OutboxSettings;
use crate::sql::dialect::Dialect;

#[async_trait]
impl Dialect for Sqlite {
    const PREFIX: &'static str = "Sqlite";
    const TEXT: &'static str = "TEXT";
    const UUID: &'static str = "BLOB";
    const INSTANT: &'static str = "INTEGER";
    const SEQ_KEY: &'static str = "INTEGER PRIMARY KEY AUTOINCREMENT";
    const CREATED_AT: &'static str = "INTEGER NOT NULL";
    // The write lock up front: a deferred transaction that reads before
    // writing can fail with SQLITE_BUSY instead of waiting.
    const BEGIN_WRITE: Option<&'static str> = Some("BEGIN IMMEDIATE");

    fn param(_: usize) -> String {
        "?".to_owned()
    }

    fn millis_param(_: usize) -> String {
        "?".to_owned()
    }

    fn error(error: sqlx::Error) -> EventError {
        sqlite_error(error)
    }

    fn rows_affected(done: &SqliteQueryResult) -> u64 {
        done.rows_affected()
    }

    async fn insert_outbox_rows(
        settings: &OutboxSettings,
        conn: &mut SqliteConnection,
        topic: &str,
        events: Vec<Event>,
    ) -> Result<(), EventError> {
        // `created_at` is written explicitly: a tenant view has no column
        // defaults.
        let created_at = settings.clock.now().timestamp_millis();
        let rows = settings.rows(topic, events)?;
        if rows.is_empty() {
            return Ok(());
        }
        // Row by row: a tenant view's INSTEAD OF trigger runs per row
        // anyway, and the statement is prepared once and cached.
        let sql = format!(
            "INSERT INTO \"{}\" (tenant_id, topic, event, created_at) VALUES (?, ?, ?, ?)",
            settings.table
        );
        // A savepoint (a transaction if `conn` has none): all or none.
        let mut tx = conn.begin().await.map_err(sqlite_error)?;
        for row in rows {
            sqlx::query(AssertSqlSafe(sql.as_str()))
                .bind(row.tenant)
                .bind(topic)
                .bind(row.body)
                .bind(created_at)
                .execute(&mut *tx)
                .await
                .map_err(sqlite_error)?;
        }
        tx.commit().await.map_err(sqlite_error)
    }
}
