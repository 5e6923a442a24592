//! The SQLite schema as numbered migrations, applied in order in one
//! `BEGIN IMMEDIATE` transaction and recorded in
//! `billing_schema_migrations` (a ledger of this crate's own: the host's
//! `_sqlx_migrations` and `PRAGMA user_version` stay the host's).
//!
//! 1. The tables, indexes and triggers (as first released: tenant ids as
//!    text). Every statement is `IF NOT EXISTS`, so a database created
//!    before the ledger existed takes it as a no-op and moves on.
//! 2. Tenant ids as `TenantId`'s sqlx encoding, a 16-byte BLOB (what
//!    saas-tenancy and saas-events store), so joins across the crates'
//!    tables match. SQLite cannot change a column's type, so each table is
//!    rebuilt: create the new table, copy every row (the usage `sequence`
//!    included), drop the old one, rename, recreate its indexes and
//!    triggers. The conversion uses `unhex` (SQLite ≥ 3.41; the bundled
//!    SQLite that sqlx's `sqlite` feature links is newer).
//! 3. Invoice numbers (`issuer`, `number`, unique together, and the
//!    per-issuer counter `billing_invoice_numbers`) and payment state
//!    (`payment_status`); the immutability trigger lets only the payment
//!    state of a finalized invoice change.
//! 4. Coupons (`billing_coupons`) and their redemptions
//!    (`billing_coupon_redemptions`, unique per coupon and subscription).
//! 5. Credit notes (`billing_credit_notes`, `(issuer, number)` unique),
//!    which triggers keep from being changed or deleted.
//! 6. The prepaid credit ledger (`billing_credit_grants`,
//!    `billing_credit_consumptions`), append-only.

use sqlx::{AssertSqlSafe, Executor, Sqlite, SqlitePool, Transaction};

use super::{BACKEND, begin_write, db_error};
use crate::error::BillingError;

const LEDGER: &str = "CREATE TABLE IF NOT EXISTS billing_schema_migrations (\
     version INTEGER PRIMARY KEY NOT NULL, \
     description TEXT NOT NULL, \
     applied_at TEXT NOT NULL) STRICT";

/// The tables holding a tenant id.
const TENANT_TABLES: [&str; 4] = [
    "billing_subscriptions",
    "billing_usage_events",
    "billing_usage_seals",
    "billing_invoices",
];

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

/// Version 2. The ids were checked first (hyphenated UUIDs, the only form
/// version 1 wrote), so `unhex` yields their 16 bytes; the `CHECK` keeps
/// any other length out for good.
const V2_TENANT_BLOBS: &str = r#"
CREATE TABLE billing_subscriptions_v2 (
    id TEXT PRIMARY KEY NOT NULL,
    tenant_id BLOB NOT NULL CHECK (length(tenant_id) = 16),
    version INTEGER NOT NULL CHECK (version >= 1),
    created_at TEXT NOT NULL,
    next_due_at TEXT,
    state TEXT NOT NULL
) STRICT;
INSERT INTO billing_subscriptions_v2 (id, tenant_id, version, created_at, next_due_at, state)
    SELECT id, unhex(replace(tenant_id, '-', '')), version, created_at, next_due_at, state
    FROM billing_subscriptions;
DROP TABLE billing_subscriptions;
ALTER TABLE billing_subscriptions_v2 RENAME TO billing_subscriptions;
CREATE INDEX billing_subscriptions_tenant_idx
    ON billing_subscriptions (tenant_id, created_at, id);
CREATE INDEX billing_subscriptions_due_idx
    ON billing_subscriptions (next_due_at, id) WHERE next_due_at IS NOT NULL;

CREATE TABLE billing_usage_events_v2 (
    sequence INTEGER PRIMARY KEY,
    tenant_id BLOB NOT NULL CHECK (length(tenant_id) = 16),
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
INSERT INTO billing_usage_events_v2 (sequence, tenant_id, idempotency_key, subscription_id,
        meter, value, occurred_at, occurred_nanos, properties, period, billed_in)
    SELECT sequence, unhex(replace(tenant_id, '-', '')), idempotency_key, subscription_id,
        meter, value, occurred_at, occurred_nanos, properties, period, billed_in
    FROM billing_usage_events;
DROP TABLE billing_usage_events;
ALTER TABLE billing_usage_events_v2 RENAME TO billing_usage_events;
CREATE INDEX billing_usage_events_billing_idx
    ON billing_usage_events (tenant_id, subscription_id, billed_in, sequence);
CREATE INDEX billing_usage_events_time_idx
    ON billing_usage_events (tenant_id, occurred_at);

CREATE TABLE billing_usage_seals_v2 (
    tenant_id BLOB NOT NULL CHECK (length(tenant_id) = 16),
    subscription_id TEXT NOT NULL,
    sealed_through INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, subscription_id)
) STRICT, WITHOUT ROWID;
INSERT INTO billing_usage_seals_v2 (tenant_id, subscription_id, sealed_through)
    SELECT unhex(replace(tenant_id, '-', '')), subscription_id, sealed_through
    FROM billing_usage_seals;
DROP TABLE billing_usage_seals;
ALTER TABLE billing_usage_seals_v2 RENAME TO billing_usage_seals;

CREATE TABLE billing_invoices_v2 (
    id TEXT PRIMARY KEY NOT NULL,
    tenant_id BLOB NOT NULL CHECK (length(tenant_id) = 16),
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
INSERT INTO billing_invoices_v2 (id, tenant_id, subscription_id, period_index, status,
        currency, total, created_at, finalize_after, finalized_at, body)
    SELECT id, unhex(replace(tenant_id, '-', '')), subscription_id, period_index, status,
        currency, total, created_at, finalize_after, finalized_at, body
    FROM billing_invoices;
DROP TABLE billing_invoices;
ALTER TABLE billing_invoices_v2 RENAME TO billing_invoices;
CREATE INDEX billing_invoices_drafts_idx
    ON billing_invoices (finalize_after, id) WHERE status = 'draft';
CREATE TRIGGER billing_invoices_immutable
    BEFORE UPDATE ON billing_invoices WHEN OLD.status = 'finalized'
BEGIN
    SELECT RAISE(ABORT, 'invoice is finalized');
END;
CREATE TRIGGER billing_invoices_undeletable
    BEFORE DELETE ON billing_invoices WHEN OLD.status = 'finalized'
BEGIN
    SELECT RAISE(ABORT, 'invoice is finalized');
END;
"#;

/// Version 3: invoice numbers and payment state. The immutability
/// trigger now lets a finalized invoice's payment state change, and
/// nothing else.
const V3_NUMBERS_AND_PAYMENTS: &str = r#"
ALTER TABLE billing_invoices ADD COLUMN issuer TEXT;
ALTER TABLE billing_invoices ADD COLUMN number INTEGER CHECK (number >= 1);
ALTER TABLE billing_invoices ADD COLUMN payment_status TEXT
    CHECK (payment_status IN ('open', 'paid', 'void', 'uncollectible'));
CREATE UNIQUE INDEX billing_invoices_number_key ON billing_invoices (issuer, number);
CREATE TABLE billing_invoice_numbers (
    issuer TEXT PRIMARY KEY NOT NULL,
    last_number INTEGER NOT NULL CHECK (last_number >= 1)
) STRICT, WITHOUT ROWID;
DROP TRIGGER billing_invoices_immutable;
CREATE TRIGGER billing_invoices_immutable
    BEFORE UPDATE ON billing_invoices WHEN OLD.status = 'finalized' AND (
        NEW.id IS NOT OLD.id OR NEW.tenant_id IS NOT OLD.tenant_id
        OR NEW.subscription_id IS NOT OLD.subscription_id
        OR NEW.period_index IS NOT OLD.period_index OR NEW.status IS NOT OLD.status
        OR NEW.currency IS NOT OLD.currency OR NEW.total IS NOT OLD.total
        OR NEW.created_at IS NOT OLD.created_at
        OR NEW.finalize_after IS NOT OLD.finalize_after
        OR NEW.finalized_at IS NOT OLD.finalized_at
        OR NEW.issuer IS NOT OLD.issuer OR NEW.number IS NOT OLD.number
        OR json_remove(NEW.body, '$.payment') IS NOT json_remove(OLD.body, '$.payment'))
BEGIN
    SELECT RAISE(ABORT, 'invoice is finalized');
END;
"#;

/// Version 4: coupons and their redemptions.
const V4_COUPONS: &str = r#"
CREATE TABLE billing_coupons (
    id TEXT PRIMARY KEY NOT NULL,
    max_redemptions INTEGER,
    redeem_by TEXT,
    times_redeemed INTEGER NOT NULL CHECK (times_redeemed >= 0),
    body TEXT NOT NULL
) STRICT;
CREATE TABLE billing_coupon_redemptions (
    sequence INTEGER PRIMARY KEY,
    coupon_id TEXT NOT NULL REFERENCES billing_coupons (id),
    tenant_id BLOB NOT NULL CHECK (length(tenant_id) = 16),
    subscription_id TEXT NOT NULL,
    body TEXT NOT NULL,
    UNIQUE (coupon_id, subscription_id)
) STRICT;
CREATE INDEX billing_coupon_redemptions_subscription_idx
    ON billing_coupon_redemptions (tenant_id, subscription_id, sequence);
"#;

/// Version 5: credit notes, immutable.
const V5_CREDIT_NOTES: &str = r#"
CREATE TABLE billing_credit_notes (
    id TEXT PRIMARY KEY NOT NULL,
    tenant_id BLOB NOT NULL CHECK (length(tenant_id) = 16),
    invoice_id TEXT NOT NULL REFERENCES billing_invoices (id),
    issuer TEXT NOT NULL,
    number INTEGER NOT NULL CHECK (number >= 1),
    issued_at TEXT NOT NULL,
    body TEXT NOT NULL,
    UNIQUE (issuer, number)
) STRICT;
CREATE INDEX billing_credit_notes_invoice_idx
    ON billing_credit_notes (tenant_id, invoice_id, number);
CREATE TRIGGER billing_credit_notes_immutable
    BEFORE UPDATE ON billing_credit_notes
BEGIN
    SELECT RAISE(ABORT, 'credit note is issued and cannot change');
END;
CREATE TRIGGER billing_credit_notes_undeletable
    BEFORE DELETE ON billing_credit_notes
BEGIN
    SELECT RAISE(ABORT, 'credit note is issued and cannot change');
END;
"#;

/// Version 6: the prepaid credit ledger, append-only.
const V6_CREDIT_LEDGER: &str = r#"
CREATE TABLE billing_credit_grants (
    id TEXT PRIMARY KEY NOT NULL,
    tenant_id BLOB NOT NULL CHECK (length(tenant_id) = 16),
    currency TEXT NOT NULL,
    granted_at TEXT NOT NULL,
    body TEXT NOT NULL
) STRICT;
CREATE INDEX billing_credit_grants_tenant_idx
    ON billing_credit_grants (tenant_id, currency, granted_at, id);
CREATE TABLE billing_credit_consumptions (
    sequence INTEGER PRIMARY KEY,
    grant_id TEXT NOT NULL REFERENCES billing_credit_grants (id),
    tenant_id BLOB NOT NULL CHECK (length(tenant_id) = 16),
    currency TEXT NOT NULL,
    invoice_id TEXT NOT NULL REFERENCES billing_invoices (id),
    body TEXT NOT NULL
) STRICT;
CREATE INDEX billing_credit_consumptions_tenant_idx
    ON billing_credit_consumptions (tenant_id, currency, sequence);
CREATE TRIGGER billing_credit_grants_append_only BEFORE UPDATE ON billing_credit_grants
BEGIN SELECT RAISE(ABORT, 'credit grants are append-only'); END;
CREATE TRIGGER billing_credit_grants_undeletable BEFORE DELETE ON billing_credit_grants
BEGIN SELECT RAISE(ABORT, 'credit grants are append-only'); END;
CREATE TRIGGER billing_credit_consumptions_append_only
    BEFORE UPDATE ON billing_credit_consumptions
BEGIN SELECT RAISE(ABORT, 'credit consumptions are append-only'); END;
CREATE TRIGGER billing_credit_consumptions_undeletable
    BEFORE DELETE ON billing_credit_consumptions
BEGIN SELECT RAISE(ABORT, 'credit consumptions are append-only'); END;
"#;

/// What a migration does.
enum Step {
    /// Runs this SQL.
    Sql(&'static str),
    /// Checks the stored tenant ids, runs [`V2_TENANT_BLOBS`] and checks
    /// that every table kept its rows.
    TenantIdsToBlobs,
}

/// The migrations in order: version, description, step.
const MIGRATIONS: [(i64, &str, Step); 6] = [
    (1, "create billing tables", Step::Sql(V1_TABLES)),
    (2, "tenant ids as BLOB", Step::TenantIdsToBlobs),
    (
        3,
        "invoice numbers and payment state",
        Step::Sql(V3_NUMBERS_AND_PAYMENTS),
    ),
    (4, "coupons and redemptions", Step::Sql(V4_COUPONS)),
    (5, "credit notes", Step::Sql(V5_CREDIT_NOTES)),
    (6, "prepaid credit ledger", Step::Sql(V6_CREDIT_LEDGER)),
];

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
            Step::TenantIdsToBlobs => tenant_ids_to_blobs(&mut tx).await?,
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

/// Migration 2: checks every stored tenant id, rebuilds the tables, and
/// checks that each kept all its rows.
async fn tenant_ids_to_blobs(tx: &mut Transaction<'static, Sqlite>) -> Result<(), BillingError> {
    let mut counts = Vec::with_capacity(TENANT_TABLES.len());
    for table in TENANT_TABLES {
        let ids: Vec<String> = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT DISTINCT tenant_id FROM {table}"
        )))
        .fetch_all(&mut **tx)
        .await
        .map_err(db_error)?;
        if let Some(bad) = ids
            .iter()
            .find(|id| id.len() != 36 || uuid::Uuid::try_parse(id).is_err())
        {
            return Err(refused(format!(
                "{table}.tenant_id {bad:?} is not a hyphenated UUID; \
                 nothing was migrated to BLOB tenant ids"
            )));
        }
        counts.push(row_count(tx, table).await?);
    }
    tx.execute(V2_TENANT_BLOBS).await.map_err(db_error)?;
    for (table, before) in TENANT_TABLES.into_iter().zip(counts) {
        let after = row_count(tx, table).await?;
        if after != before {
            return Err(refused(format!(
                "{table} had {before} rows and would keep {after}; nothing was migrated"
            )));
        }
    }
    Ok(())
}

async fn row_count(
    tx: &mut Transaction<'static, Sqlite>,
    table: &'static str,
) -> Result<i64, BillingError> {
    sqlx::query_scalar(AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
        .fetch_one(&mut **tx)
        .await
        .map_err(db_error)
}
