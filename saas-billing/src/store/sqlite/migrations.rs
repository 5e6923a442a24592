//! The SQLite schema as numbered migrations, applied in order in one
//! `BEGIN IMMEDIATE` transaction and recorded in
//! `billing_schema_migrations` (a ledger of this crate's own: the host's
//! `_sqlx_migrations` and `PRAGMA user_version` stay the host's).
//!
//! 1. The tables, indexes and triggers. Every statement is `IF NOT
//!    EXISTS`, so a database created before the ledger existed takes it as
//!    a no-op and moves on.

use sqlx::{Executor, SqlitePool};

use super::{BACKEND, begin_write, db_error};
use crate::error::BillingError;

const LEDGER: &str = "CREATE TABLE IF NOT EXISTS billing_schema_migrations (\
     version INTEGER PRIMARY KEY NOT NULL, \
     description TEXT NOT NULL, \
     applied_at TEXT NOT NULL) STRICT";

/// Version 1, as first released.
const V1_TABLES: &str = r#"
CREATE TABLE IF NOT EXISTS billing_subscriptions (
    id TEXT PRIMARY KEY NOT NULL,
    tenant_id TEXT NOT NULL,
    version INTEGER NOT NULL CHECK (version >= 1),
    created_at TEXT NOT NULL,
    next_due_at TEXT,
    state TEXT NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS billing_subscriptions_tenant_idx
    ON billing_subscriptions (tenant_id, created_at, id);
CREATE INDEX IF NOT EXISTS billing_subscriptions_due_idx
    ON billing_subscriptions (next_due_at, id) WHERE next_due_at IS NOT NULL;

CREATE TABLE IF NOT EXISTS billing_usage_events (
    sequence INTEGER PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    subscription_id TEXT NOT NULL,
    meter TEXT NOT NULL,
    value TEXT NOT NULL,
    occurred_at INTEGER NOT NULL,
    occurred_nanos INTEGER NOT NULL,
    properties TEXT NOT NULL,
    period INTEGER NOT NULL,
    billed_in INTEGER NOT NULL CHECK (billed_in >= period),
    UNIQUE (tenant_id, idempotency_key)
) STRICT;
CREATE INDEX IF NOT EXISTS billing_usage_events_billing_idx
    ON billing_usage_events (tenant_id, subscription_id, billed_in, sequence);
CREATE INDEX IF NOT EXISTS billing_usage_events_time_idx
    ON billing_usage_events (tenant_id, occurred_at);

CREATE TABLE IF NOT EXISTS billing_usage_seals (
    tenant_id TEXT NOT NULL,
    subscription_id TEXT NOT NULL,
    sealed_through INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, subscription_id)
) STRICT, WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS billing_invoices (
    id TEXT PRIMARY KEY NOT NULL,
    tenant_id TEXT NOT NULL,
    subscription_id TEXT NOT NULL,
    period_index INTEGER NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('draft', 'finalized')),
    currency TEXT NOT NULL,
    total TEXT NOT NULL,
    created_at TEXT NOT NULL,
    finalize_after TEXT NOT NULL,
    finalized_at TEXT,
    body TEXT NOT NULL,
    UNIQUE (subscription_id, period_index)
) STRICT;
CREATE INDEX IF NOT EXISTS billing_invoices_drafts_idx
    ON billing_invoices (finalize_after, id) WHERE status = 'draft';

CREATE TRIGGER IF NOT EXISTS billing_invoices_immutable
    BEFORE UPDATE ON billing_invoices WHEN OLD.status = 'finalized'
BEGIN
    SELECT RAISE(ABORT, 'invoice is finalized');
END;
CREATE TRIGGER IF NOT EXISTS billing_invoices_undeletable
    BEFORE DELETE ON billing_invoices WHEN OLD.status = 'finalized'
BEGIN
    SELECT RAISE(ABORT, 'invoice is finalized');
END;
"#;

/// What a migration does.
enum Step {
    /// Runs this SQL.
    Sql(&'static str),
}

/// The migrations in order: version, description, step.
const MIGRATIONS: [(i64, &str, Step); 1] = [(1, "create billing tables", Step::Sql(V1_TABLES))];

/// The schema version [`migrate_to`] reaches at most.
pub(crate) const LATEST: i64 = MIGRATIONS.len() as i64;

/// A refusal to migrate; nothing was changed.
fn refused(message: String) -> BillingError {
    BillingError::Backend {
        backend: BACKEND,
        retryable: false,
        message,
    }
}

/// Applies the migrations after the recorded version, up to `target`, in
/// one write transaction (all or nothing); returns the version the
/// database is at (never lowered: there are no down migrations).
pub(crate) async fn migrate_to(pool: &SqlitePool, target: i64) -> Result<i64, BillingError> {
    if !(1..=LATEST).contains(&target) {
        return Err(BillingError::invalid(
            "schema version",
            format!("{target} is not between 1 and {LATEST}"),
        ));
    }
    let mut tx = begin_write(pool).await?;
    tx.execute(LEDGER).await.map_err(db_error)?;
    let current: i64 =
        sqlx::query_scalar("SELECT coalesce(max(version), 0) FROM billing_schema_migrations")
            .fetch_one(&mut *tx)
            .await
            .map_err(db_error)?;
    if current > LATEST {
        return Err(refused(format!(
            "the schema is at version {current}, newer than this saas-billing knows ({LATEST})"
        )));
    }
    for (version, description, step) in &MIGRATIONS {
        if *version <= current || *version > target {
            continue;
        }
        match step {
            Step::Sql(sql) => {
                tx.execute(*sql).await.map_err(db_error)?;
            }
        }
        sqlx::query(
            "INSERT INTO billing_schema_migrations (version, description, applied_at) \
             VALUES (?1, ?2, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))",
        )
        .bind(version)
        .bind(description)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
    }
    tx.commit().await.map_err(db_error)?;
    Ok(current.max(target))
}
