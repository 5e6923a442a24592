//! What the SQL outbox and inbox do the PostgreSQL way.

use async_trait::async_trait;
use sqlx::postgres::PgQueryResult;
use sqlx::{AssertSqlSafe, PgConnection, Postgres};

use super::error::pg_error;
use super::wake::WAKE_CHANNEL;
use crate::envelope::Event;
use crate::error::EventError;
use crate::outbox_core::OutboxSettings;
use crate::sql::dialect::Dialect;

#[async_trait]
impl Dialect for Postgres {
    const PREFIX: &'static str = "Pg";
    const TEXT: &'static str = "text";
    const UUID: &'static str = "uuid";
    const INSTANT: &'static str = "timestamptz";
    const SEQ_KEY: &'static str = "bigserial PRIMARY KEY";
    const CREATED_AT: &'static str = "timestamptz NOT NULL DEFAULT now()";
    const BEGIN_WRITE: Option<&'static str> = None;

    fn param(n: usize) -> String {
        format!("${n}")
    }

    fn millis_param(n: usize) -> String {
        format!("to_timestamp(${n}::float8 / 1000)")
    }

    fn error(error: sqlx::Error) -> EventError {
        pg_error(error)
    }

    fn rows_affected(done: &PgQueryResult) -> u64 {
        done.rows_affected()
    }

    async fn insert_outbox_rows(
        settings: &OutboxSettings,
        conn: &mut PgConnection,
        topic: &str,
        events: Vec<Event>,
    ) -> Result<(), EventError> {
        let rows = settings.rows(topic, events)?;
        if rows.is_empty() {
            return Ok(());
        }
        let (tenants, bodies): (Vec<_>, Vec<_>) =
            rows.into_iter().map(|row| (row.tenant, row.body)).unzip();
        // One statement; WITH ORDINALITY keeps the batch's order in the
        // sequence.
        let table = &settings.table;
        let insert = format!(
            "INSERT INTO \"{table}\" (tenant_id, topic, event) \
             SELECT t, $3, e FROM unnest($1::uuid[], $2::text[]) WITH ORDINALITY AS u(t, e, n) \
             ORDER BY n"
        );
        // With notifications on, the same statement tells listening relays
        // which schema's outbox has rows — delivered at commit, dropped on
        // rollback, no extra round trip — but only when it saw the table
        // empty (the subquery sees the rows committed before the
        // statement, not its own): a relay keeps visiting a location that
        // had rows for a while (`relay_task::LINGER`), so writers into a
        // busy outbox skip the notification and the commit serialisation
        // it costs. Under row-level security "empty" means "none of this
        // tenant's": more notifications, never fewer.
        let sql = if settings.notify {
            format!(
                "WITH written AS ({insert} RETURNING tableoid) \
                 SELECT pg_notify('{WAKE_CHANNEL}', n.nspname::text) \
                 FROM (SELECT DISTINCT tableoid FROM written) w \
                 JOIN pg_catalog.pg_class c ON c.oid = w.tableoid \
                 JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                 WHERE (SELECT min(seq) FROM \"{table}\") IS NULL"
            )
        } else {
            insert
        };
        sqlx::query(AssertSqlSafe(sql))
            .bind(tenants)
            .bind(bodies)
            .bind(topic)
            .execute(conn)
            .await
            .map(|_| ())
            .map_err(pg_error)
    }
}
