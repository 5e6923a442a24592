//! PostgreSQL stores (feature `postgres`), on a [`PgPool`] whose
//! `search_path` holds the billing tables.
//!
//! Schema and its reasons:
//! - `billing_subscriptions`: the subscription as JSON (`state`) plus the
//!   columns queries need (`tenant_id`, `version`, `created_at`,
//!   `next_due_at`, partially indexed for the billing cycle). Updates are
//!   one conditional `UPDATE … WHERE version = $expected`.
//! - `billing_usage_events`: primary key `(tenant_id, idempotency_key)` —
//!   idempotency is this constraint, checked by the same `INSERT … ON
//!   CONFLICT DO NOTHING` that stores the event; one B-tree
//!   `(tenant_id, subscription_id, billed_in, sequence)` serves both
//!   invoice queries (`billed_in >= period` always holds, so a period's
//!   events are a range of it); a BRIN index on `occurred_at` serves time
//!   ranges at almost no ingestion cost, since arrival follows time. Every
//!   key starts with `tenant_id`, so the table can be distributed by
//!   tenant (Citus). It is not range-partitioned by time: PostgreSQL
//!   requires a unique constraint to contain the partition key, which
//!   would let one idempotency key repeat across time partitions.
//!   Amounts are `numeric`, never floating point; the instant is kept as
//!   `timestamptz` plus its nanoseconds so events read back exactly.
//! - `billing_usage_seals`: sealed-through index per subscription; sealing
//!   takes a transaction-scoped advisory lock per subscription exclusively,
//!   ingestion takes it shared, so the two are serialized.
//! - `billing_invoices`: the invoice as JSON (`body`) plus `status`,
//!   `currency`, `total numeric`, a unique `(subscription_id,
//!   period_index)` (of racing creations one commits, the others get a
//!   unique violation → `AlreadyExists`), and a trigger refusing any
//!   change to a finalized row but to its payment state, below the
//!   store's own check; `issuer` and `number` (unique together) once
//!   finalized.
//! - `billing_coupons` (the coupon as JSON and its redemption count) and
//!   `billing_coupon_redemptions` (primary key `(coupon_id,
//!   subscription_id)`); a redemption locks the coupon's row, so its
//!   limit holds under concurrency.
//! - `billing_credit_notes`: each note as JSON, `(issuer, number)` unique,
//!   written in the transaction holding its invoice's row; a trigger
//!   refuses any update or delete.
//! - `billing_credit_grants` and `billing_credit_consumptions`: the
//!   prepaid credit ledger, append-only (triggers); balances are computed
//!   from it, never stored.
//! - `billing_invoice_numbers`: the last number per issuer, incremented by
//!   an upsert in the finalizing transaction; its row lock serializes an
//!   issuer's finalizers and a rollback returns the number, so numbers
//!   have no gap.

mod coupons;
mod dialect;
mod invoices;
mod subscriptions;
mod usage;

pub use coupons::PgCouponStore;
pub use invoices::PgInvoiceStore;
pub use subscriptions::PgSubscriptionStore;
pub use usage::PgUsageStore;

use std::sync::Arc;

use sqlx::{Executor, PgPool};

use crate::engine::BillingStores;
use crate::error::BillingError;

pub(crate) const BACKEND: &str = "postgres";

pub(crate) fn db_error(error: sqlx::Error) -> BillingError {
    super::sql::backend_error(BACKEND, error)
}

/// Runs `migration` (several statements) in one transaction under the
/// advisory lock every saas-billing migration takes, so that processes
/// migrating at once wait for each other instead of racing on `CREATE`.
pub(crate) async fn migrate_locked(
    pool: &PgPool,
    migration: &'static str,
) -> Result<(), BillingError> {
    let mut tx = pool.begin().await.map_err(db_error)?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('saas_billing.migrate'))")
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
    tx.execute(migration).await.map_err(db_error)?;
    tx.commit().await.map_err(db_error)
}

const MIGRATION: &str = r#"
CREATE TABLE IF NOT EXISTS billing_subscriptions (
    id uuid PRIMARY KEY,
    tenant_id uuid NOT NULL,
    version bigint NOT NULL CHECK (version >= 1),
    created_at timestamptz NOT NULL,
    next_due_at timestamptz,
    state jsonb NOT NULL
);
CREATE INDEX IF NOT EXISTS billing_subscriptions_tenant_idx
    ON billing_subscriptions (tenant_id, created_at, id);
CREATE INDEX IF NOT EXISTS billing_subscriptions_due_idx
    ON billing_subscriptions (next_due_at, id) WHERE next_due_at IS NOT NULL;

CREATE TABLE IF NOT EXISTS billing_usage_events (
    tenant_id uuid NOT NULL,
    idempotency_key text NOT NULL,
    subscription_id uuid NOT NULL,
    meter text NOT NULL,
    value numeric NOT NULL,
    occurred_at timestamptz NOT NULL,
    occurred_nanos integer NOT NULL,
    properties jsonb NOT NULL,
    period bigint NOT NULL,
    billed_in bigint NOT NULL CHECK (billed_in >= period),
    sequence bigint GENERATED ALWAYS AS IDENTITY,
    CONSTRAINT billing_usage_events_pkey PRIMARY KEY (tenant_id, idempotency_key)
);
CREATE INDEX IF NOT EXISTS billing_usage_events_billing_idx
    ON billing_usage_events (tenant_id, subscription_id, billed_in, sequence);
CREATE INDEX IF NOT EXISTS billing_usage_events_time_idx
    ON billing_usage_events USING brin (occurred_at);

CREATE TABLE IF NOT EXISTS billing_usage_seals (
    tenant_id uuid NOT NULL,
    subscription_id uuid NOT NULL,
    sealed_through bigint NOT NULL,
    PRIMARY KEY (tenant_id, subscription_id)
);

CREATE TABLE IF NOT EXISTS billing_invoices (
    id uuid PRIMARY KEY,
    tenant_id uuid NOT NULL,
    subscription_id uuid NOT NULL,
    period_index bigint NOT NULL,
    status text NOT NULL CHECK (status IN ('draft', 'finalized')),
    currency text NOT NULL,
    total numeric NOT NULL,
    created_at timestamptz NOT NULL,
    finalize_after timestamptz NOT NULL,
    finalized_at timestamptz,
    body jsonb NOT NULL,
    CONSTRAINT billing_invoices_period_key UNIQUE (subscription_id, period_index)
);
CREATE INDEX IF NOT EXISTS billing_invoices_drafts_idx
    ON billing_invoices (finalize_after, id) WHERE status = 'draft';
CREATE INDEX IF NOT EXISTS billing_invoices_tenant_idx
    ON billing_invoices (tenant_id, subscription_id, period_index);

ALTER TABLE billing_invoices
    ADD COLUMN IF NOT EXISTS issuer text,
    ADD COLUMN IF NOT EXISTS number bigint CHECK (number >= 1),
    ADD COLUMN IF NOT EXISTS payment_status text
        CHECK (payment_status IN ('open', 'paid', 'void', 'uncollectible'));
CREATE UNIQUE INDEX IF NOT EXISTS billing_invoices_number_key
    ON billing_invoices (issuer, number);

CREATE TABLE IF NOT EXISTS billing_invoice_numbers (
    issuer text PRIMARY KEY,
    last_number bigint NOT NULL CHECK (last_number >= 1)
);

CREATE TABLE IF NOT EXISTS billing_coupons (
    id text PRIMARY KEY,
    max_redemptions bigint,
    redeem_by timestamptz,
    times_redeemed bigint NOT NULL CHECK (times_redeemed >= 0),
    body jsonb NOT NULL
);
CREATE TABLE IF NOT EXISTS billing_coupon_redemptions (
    coupon_id text NOT NULL REFERENCES billing_coupons (id),
    tenant_id uuid NOT NULL,
    subscription_id uuid NOT NULL,
    sequence bigint GENERATED ALWAYS AS IDENTITY,
    body jsonb NOT NULL,
    PRIMARY KEY (coupon_id, subscription_id)
);
CREATE INDEX IF NOT EXISTS billing_coupon_redemptions_subscription_idx
    ON billing_coupon_redemptions (tenant_id, subscription_id, sequence);

CREATE TABLE IF NOT EXISTS billing_credit_notes (
    id uuid PRIMARY KEY,
    tenant_id uuid NOT NULL,
    invoice_id uuid NOT NULL REFERENCES billing_invoices (id),
    issuer text NOT NULL,
    number bigint NOT NULL CHECK (number >= 1),
    issued_at timestamptz NOT NULL,
    body jsonb NOT NULL,
    CONSTRAINT billing_credit_notes_number_key UNIQUE (issuer, number)
);
CREATE INDEX IF NOT EXISTS billing_credit_notes_invoice_idx
    ON billing_credit_notes (tenant_id, invoice_id, number);
CREATE OR REPLACE FUNCTION billing_credit_notes_immutable() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% rows are append-only', TG_TABLE_NAME
        USING ERRCODE = 'check_violation';
END $$;
CREATE OR REPLACE TRIGGER billing_credit_notes_immutable
    BEFORE UPDATE OR DELETE ON billing_credit_notes
    FOR EACH ROW EXECUTE FUNCTION billing_credit_notes_immutable();

CREATE TABLE IF NOT EXISTS billing_credit_grants (
    id uuid PRIMARY KEY,
    tenant_id uuid NOT NULL,
    currency text NOT NULL,
    granted_at timestamptz NOT NULL,
    body jsonb NOT NULL
);
CREATE INDEX IF NOT EXISTS billing_credit_grants_tenant_idx
    ON billing_credit_grants (tenant_id, currency, granted_at, id);
CREATE TABLE IF NOT EXISTS billing_credit_consumptions (
    sequence bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    grant_id uuid NOT NULL REFERENCES billing_credit_grants (id),
    tenant_id uuid NOT NULL,
    currency text NOT NULL,
    invoice_id uuid NOT NULL REFERENCES billing_invoices (id),
    body jsonb NOT NULL
);
CREATE INDEX IF NOT EXISTS billing_credit_consumptions_tenant_idx
    ON billing_credit_consumptions (tenant_id, currency, sequence);
CREATE OR REPLACE TRIGGER billing_credit_grants_append_only
    BEFORE UPDATE OR DELETE ON billing_credit_grants
    FOR EACH ROW EXECUTE FUNCTION billing_credit_notes_immutable();
CREATE OR REPLACE TRIGGER billing_credit_consumptions_append_only
    BEFORE UPDATE OR DELETE ON billing_credit_consumptions
    FOR EACH ROW EXECUTE FUNCTION billing_credit_notes_immutable();

-- A finalized invoice changes only in its payment state: the
-- payment_status column and the body's "payment" key.
CREATE OR REPLACE FUNCTION billing_invoices_immutable() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.status = 'finalized' THEN
        IF TG_OP = 'DELETE' THEN
            RAISE EXCEPTION 'invoice % is finalized', OLD.id USING ERRCODE = 'check_violation';
        END IF;
        IF (to_jsonb(NEW) - 'payment_status' - 'body') IS DISTINCT FROM
               (to_jsonb(OLD) - 'payment_status' - 'body')
           OR (NEW.body - 'payment') IS DISTINCT FROM (OLD.body - 'payment') THEN
            RAISE EXCEPTION 'invoice % is finalized', OLD.id USING ERRCODE = 'check_violation';
        END IF;
    END IF;
    IF TG_OP = 'DELETE' THEN
        RETURN OLD;
    END IF;
    RETURN NEW;
END $$;
CREATE OR REPLACE TRIGGER billing_invoices_immutable
    BEFORE UPDATE OR DELETE ON billing_invoices
    FOR EACH ROW EXECUTE FUNCTION billing_invoices_immutable();
"#;

/// The PostgreSQL stores on one pool, and their migration.
///
/// ```no_run
/// use saas_billing::store::postgres::PgBillingStores;
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let pool = sqlx::PgPool::connect("postgres://postgres@127.0.0.1/app").await?;
/// let stores = PgBillingStores::new(pool);
/// stores.migrate().await?;
/// let stores = stores.billing_stores(); // for `BillingEngine::new`
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct PgBillingStores {
    pool: PgPool,
}

impl PgBillingStores {
    /// Stores on `pool`; tables live in the pool's `search_path`.
    pub fn new(pool: PgPool) -> PgBillingStores {
        PgBillingStores { pool }
    }

    /// Creates the tables, indexes and trigger if they do not exist.
    /// Idempotent, and safe to run from several processes at once: runs
    /// in one transaction under an advisory lock.
    ///
    /// # Errors
    /// `Backend` if PostgreSQL fails.
    pub async fn migrate(&self) -> Result<(), BillingError> {
        migrate_locked(&self.pool, MIGRATION).await
    }

    /// The pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The subscription store.
    pub fn subscriptions(&self) -> PgSubscriptionStore {
        PgSubscriptionStore::new(self.pool.clone())
    }

    /// The usage store.
    pub fn usage(&self) -> PgUsageStore {
        PgUsageStore::new(self.pool.clone())
    }

    /// The invoice store.
    pub fn invoices(&self) -> PgInvoiceStore {
        PgInvoiceStore::new(self.pool.clone())
    }

    /// The coupon store.
    pub fn coupons(&self) -> PgCouponStore {
        PgCouponStore::new(self.pool.clone())
    }

    /// The stores, ready for [`BillingEngine::new`](crate::BillingEngine::new).
    pub fn billing_stores(&self) -> BillingStores {
        BillingStores {
            subscriptions: Arc::new(self.subscriptions()),
            usage: Arc::new(self.usage()),
            invoices: Arc::new(self.invoices()),
            coupons: Arc::new(self.coupons()),
        }
    }
}
