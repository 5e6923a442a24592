//! Usage, quota consumption and a business write in one caller's
//! transaction (`record_usage_in`, `try_consume_in`), on PostgreSQL and
//! SQLite: a rollback leaves none of the three, a commit all three; the
//! idempotency key holds across transactions; tenants stay apart; on
//! PostgreSQL the transaction's `search_path` decides which schema's
//! tables receive the usage.
//!
//! PostgreSQL tests need `SAAS_TEST_POSTGRES_URL` (a schema of their own);
//! SQLite tests run on a temporary database file.

use std::sync::Arc;

use saas_billing::quota::{PgQuotaStore, QuotaKey, QuotaStore, SqliteQuotaStore};
use saas_billing::testing::{BillingHarness, Cleanup, run_with_cleanup};
use saas_billing::{
    BillingConfig, BillingError, BillingStores, Currency, IngestOutcome, MeterKey, NewSubscription,
    SubscriptionId, TenantId, UncommittedUsage, UsageEvent, dec,
};
use sqlx::{PgPool, SqlitePool};

use crate::fixtures::{at, catalog, plan};
use crate::sql_stores::{pg_stores, sqlite_stores};

/// The `api_calls` quota of the `basic` plan (count meter `calls`).
const LIMIT: u64 = 10_000;

/// An engine on `stores` at 2024-01-16 with one `basic` subscription per
/// tenant, started 2024-01-01 (usage of 2024-01-15 is period 0).
pub(crate) struct Billing {
    pub(crate) h: BillingHarness,
    pub(crate) a: (TenantId, SubscriptionId),
    pub(crate) b: (TenantId, SubscriptionId),
}

impl Billing {
    async fn new(stores: BillingStores) -> Billing {
        let h = BillingHarness::with_stores(
            catalog(),
            at(2024, 1, 1, 0),
            BillingConfig::default(),
            stores,
        );
        let mut subs = Vec::new();
        for _ in 0..2 {
            let tenant = TenantId::new();
            let new = NewSubscription::new(tenant, plan("basic", 1), Currency::USD);
            let sub = h.engine().create_subscription(new).await.unwrap();
            subs.push((tenant, sub.id()));
        }
        h.set_time(at(2024, 1, 16, 0));
        Billing {
            h,
            a: subs[0],
            b: subs[1],
        }
    }

    /// One API call of `(tenant, subscription)` with idempotency key `key`.
    fn call(&self, (tenant, sub): (TenantId, SubscriptionId), key: &str) -> UsageEvent {
        let calls = MeterKey::new("calls").unwrap();
        UsageEvent::new(tenant, sub, calls, dec!(1), at(2024, 1, 15, 0), key)
    }

    /// The durable quota counter of `tenant`'s calls this period.
    pub(crate) fn quota(&self, tenant: TenantId) -> QuotaKey {
        QuotaKey::new(tenant, "api_calls", "2024-01").unwrap()
    }

    /// The idempotency keys of the stored usage of period 0.
    async fn stored_keys(&self, (tenant, sub): (TenantId, SubscriptionId)) -> Vec<String> {
        let usage = self.h.engine().stores().usage.clone();
        keys_in(&*usage, tenant, sub).await
    }

    /// What the in-memory entitlement counter leaves of `api_calls`
    /// after one more call (9,999 when nothing was counted).
    fn remaining_after_one(&self, tenant: TenantId) -> saas_billing::Decimal {
        self.h
            .engine()
            .check(tenant, "api_calls", dec!(1))
            .remaining()
            .unwrap()
    }
}

async fn keys_in(
    usage: &dyn saas_billing::UsageStore,
    tenant: TenantId,
    sub: SubscriptionId,
) -> Vec<String> {
    usage
        .for_period(tenant, sub, 0, i64::MAX)
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.event.idempotency_key)
        .collect()
}

fn recorded() -> IngestOutcome {
    IngestOutcome::Recorded { billed_in: 0 }
}

// ---------------------------------------------------------------- PostgreSQL

pub(crate) struct Pg {
    pub(crate) billing: Billing,
    pub(crate) pool: PgPool,
    pub(crate) quotas: PgQuotaStore,
}

pub(crate) async fn pg(test: &str) -> Option<(Pg, Cleanup)> {
    let (stores, cleanup) = pg_stores(test).await?;
    let pool = stores.pool().clone();
    sqlx::query("CREATE TABLE orders (id text PRIMARY KEY, tenant_id uuid NOT NULL)")
        .execute(&pool)
        .await
        .unwrap();
    let billing = Billing::new(stores.billing_stores()).await;
    let quotas = PgQuotaStore::with_clock(pool.clone(), Arc::new(billing.h.clock().clone()));
    quotas.migrate().await.unwrap();
    Some((
        Pg {
            billing,
            pool,
            quotas,
        },
        cleanup,
    ))
}

async fn pg_orders(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar("SELECT id FROM orders ORDER BY id")
        .fetch_all(pool)
        .await
        .unwrap()
}

/// Order, usage and quota grant in one transaction, then `commit` or not.
/// Returns what `usage_committed` returned, or `None` after a rollback.
async fn pg_order(
    db: &Pg,
    tenant: (TenantId, SubscriptionId),
    key: &str,
    commit: bool,
) -> Option<IngestOutcome> {
    let engine = db.billing.h.engine();
    let mut tx = db.pool.begin().await.unwrap();
    sqlx::query("INSERT INTO orders (id, tenant_id) VALUES ($1, $2)")
        .bind(key)
        .bind(tenant.0.as_uuid())
        .execute(&mut *tx)
        .await
        .unwrap();
    let usage = engine
        .record_usage_in(&mut *tx, db.billing.call(tenant, key))
        .await
        .unwrap();
    let quota = db.billing.quota(tenant.0);
    let granted = db
        .quotas
        .try_consume_in(&mut tx, &quota, 1, LIMIT)
        .await
        .unwrap();
    assert!(granted.is_granted());
    if commit {
        tx.commit().await.unwrap();
        Some(engine.usage_committed(usage).await)
    } else {
        // Inside the transaction, its grant is visible.
        assert_eq!(db.quotas.used_in(&mut tx, &quota).await.unwrap(), 1);
        tx.rollback().await.unwrap();
        drop(usage);
        None
    }
}

#[tokio::test]
async fn postgres_rollback_leaves_no_order_usage_or_quota_consumption() {
    let Some((db, cleanup)) = pg("in_tx_rollback").await else {
        return;
    };
    run_with_cleanup(
        async move {
            let a = db.billing.a;
            assert_eq!(pg_order(&db, a, "order-1", false).await, None);
            assert!(pg_orders(&db.pool).await.is_empty());
            assert!(db.billing.stored_keys(a).await.is_empty());
            assert_eq!(db.quotas.used(&db.billing.quota(a.0)).await.unwrap(), 0);
            assert_eq!(db.billing.remaining_after_one(a.0), dec!(9999));
            // The key of the rolled-back usage is free: recorded, not a duplicate.
            let again = db
                .billing
                .h
                .engine()
                .record_usage(db.billing.call(a, "order-1"));
            assert_eq!(again.await.unwrap(), recorded());
        },
        cleanup,
    )
    .await;
}

#[tokio::test]
async fn postgres_commit_keeps_order_usage_and_quota_consumption() {
    let Some((db, cleanup)) = pg("in_tx_commit").await else {
        return;
    };
    run_with_cleanup(
        async move {
            let a = db.billing.a;
            assert_eq!(pg_order(&db, a, "order-1", true).await, Some(recorded()));
            assert_eq!(pg_orders(&db.pool).await, ["order-1"]);
            assert_eq!(db.billing.stored_keys(a).await, ["order-1"]);
            assert_eq!(db.quotas.used(&db.billing.quota(a.0)).await.unwrap(), 1);
            assert_eq!(db.billing.remaining_after_one(a.0), dec!(9998));
        },
        cleanup,
    )
    .await;
}

#[tokio::test]
async fn postgres_the_same_event_in_a_later_transaction_is_a_duplicate() {
    let Some((db, cleanup)) = pg("in_tx_duplicate").await else {
        return;
    };
    run_with_cleanup(
        async move {
            let (a, engine) = (db.billing.a, db.billing.h.engine());
            let mut tx = db.pool.begin().await.unwrap();
            let first = engine
                .record_usage_in(&mut *tx, db.billing.call(a, "k"))
                .await;
            tx.commit().await.unwrap();
            assert_eq!(engine.usage_committed(first.unwrap()).await, recorded());

            let mut tx = db.pool.begin().await.unwrap();
            let second = engine
                .record_usage_in(&mut *tx, db.billing.call(a, "k"))
                .await
                .unwrap();
            assert_eq!(second.recorded(), 0);
            tx.commit().await.unwrap();
            let outcome = engine.usage_committed(second).await;
            assert_eq!(outcome, IngestOutcome::Duplicate { billed_in: 0 });
            assert_eq!(db.billing.stored_keys(a).await, ["k"]);
            assert_eq!(db.billing.remaining_after_one(a.0), dec!(9998));

            // The same key with another payload, in a transaction: a conflict.
            let mut other = db.billing.call(a, "k");
            other.value = dec!(2);
            let mut tx = db.pool.begin().await.unwrap();
            let conflict = engine.record_usage_in(&mut *tx, other).await;
            assert!(matches!(
                conflict,
                Err(BillingError::IdempotencyConflict { ref key }) if key == "k"
            ));
            tx.rollback().await.unwrap();
            assert_eq!(db.billing.stored_keys(a).await, ["k"]);
        },
        cleanup,
    )
    .await;
}

#[tokio::test]
async fn postgres_usage_in_tenant_as_transaction_is_not_tenant_bs() {
    let Some((db, cleanup)) = pg("in_tx_tenants").await else {
        return;
    };
    run_with_cleanup(
        async move {
            let (a, b) = (db.billing.a, db.billing.b);
            assert_eq!(pg_order(&db, a, "shared-key", true).await, Some(recorded()));
            assert!(db.billing.stored_keys(b).await.is_empty());
            assert_eq!(db.quotas.used(&db.billing.quota(b.0)).await.unwrap(), 0);
            assert_eq!(db.billing.remaining_after_one(b.0), dec!(9999));
            // B's use of the same key is B's own, not a duplicate of A's.
            let engine = db.billing.h.engine();
            let mut tx = db.pool.begin().await.unwrap();
            let b_same_key = engine
                .record_usage_in(&mut *tx, db.billing.call(b, "shared-key"))
                .await
                .unwrap();
            tx.commit().await.unwrap();
            assert_eq!(engine.usage_committed(b_same_key).await, recorded());
            // A's subscription is not found as B's.
            let mut tx = db.pool.begin().await.unwrap();
            let crossed = db.billing.call((b.0, a.1), "crossed");
            let refused = engine.record_usage_in(&mut *tx, crossed).await;
            assert!(matches!(refused, Err(BillingError::NotFound { .. })));
            tx.rollback().await.unwrap();
            assert_eq!(db.billing.stored_keys(a).await, ["shared-key"]);
            assert_eq!(db.billing.stored_keys(b).await, ["shared-key"]);
            assert_eq!(db.billing.remaining_after_one(a.0), dec!(9998));
        },
        cleanup,
    )
    .await;
}

/// The host keeps tenant A's billing tables in A's own schema: a
/// transaction whose `search_path` is that schema records A's usage and
/// quota there, and the shared schema's tables stay empty.
#[tokio::test]
async fn postgres_usage_goes_to_the_schema_on_the_transactions_search_path() {
    let Some((db, shared_cleanup)) = pg("in_tx_schema").await else {
        return;
    };
    let Some((tenant_stores, tenant_cleanup)) = pg_stores("in_tx_schema_tenant").await else {
        return;
    };
    let cleanup = Cleanup::new(async move {
        shared_cleanup.run().await;
        tenant_cleanup.run().await;
    });
    run_with_cleanup(
        async move {
            let a = db.billing.a;
            let tenant_pool = tenant_stores.pool().clone();
            let tenant_quotas = PgQuotaStore::new(tenant_pool.clone());
            tenant_quotas.migrate().await.unwrap();
            let schema: String = sqlx::query_scalar("SELECT current_schema()")
                .fetch_one(&tenant_pool)
                .await
                .unwrap();

            let engine = db.billing.h.engine();
            let mut tx = db.pool.begin().await.unwrap();
            sqlx::query("SELECT set_config('search_path', $1, true)")
                .bind(format!("\"{schema}\""))
                .execute(&mut *tx)
                .await
                .unwrap();
            let usage = engine
                .record_usage_in(&mut *tx, db.billing.call(a, "k"))
                .await
                .unwrap();
            let quota = db.billing.quota(a.0);
            let granted = db.quotas.try_consume_in(&mut tx, &quota, 1, LIMIT).await;
            assert!(granted.unwrap().is_granted());
            tx.commit().await.unwrap();
            assert_eq!(engine.usage_committed(usage).await, recorded());

            let tenant_usage = tenant_stores.billing_stores().usage;
            assert_eq!(keys_in(&*tenant_usage, a.0, a.1).await, ["k"]);
            assert_eq!(tenant_quotas.used(&quota).await.unwrap(), 1);
            assert!(db.billing.stored_keys(a).await.is_empty());
            assert_eq!(db.quotas.used(&quota).await.unwrap(), 0);
            tenant_pool.close().await;
        },
        cleanup,
    )
    .await;
}

/// A usage write that fails inside the caller's transaction (here: its
/// `search_path` reaches no billing tables) rolls back its savepoint only:
/// the caller's transaction goes on and commits its own rows.
#[tokio::test]
async fn postgres_a_failed_usage_write_leaves_the_callers_transaction_usable() {
    let Some((db, cleanup)) = pg("in_tx_failure").await else {
        return;
    };
    run_with_cleanup(
        async move {
            let (a, engine) = (db.billing.a, db.billing.h.engine());
            let mut tx = db.pool.begin().await.unwrap();
            let schema: String = sqlx::query_scalar("SELECT current_schema()")
                .fetch_one(&mut *tx)
                .await
                .unwrap();
            sqlx::query("INSERT INTO orders (id, tenant_id) VALUES ('before', $1)")
                .bind(a.0.as_uuid())
                .execute(&mut *tx)
                .await
                .unwrap();
            sqlx::query("SELECT set_config('search_path', 'no_billing_tables_here', true)")
                .execute(&mut *tx)
                .await
                .unwrap();
            let failed = engine
                .record_usage_in(&mut *tx, db.billing.call(a, "k"))
                .await;
            assert!(
                matches!(failed, Err(BillingError::Backend { .. })),
                "{failed:?}"
            );
            sqlx::query("SELECT set_config('search_path', $1, true)")
                .bind(format!("\"{schema}\""))
                .execute(&mut *tx)
                .await
                .unwrap();
            sqlx::query("INSERT INTO orders (id, tenant_id) VALUES ('after', $1)")
                .bind(a.0.as_uuid())
                .execute(&mut *tx)
                .await
                .unwrap();
            tx.commit().await.unwrap();
            assert_eq!(pg_orders(&db.pool).await, ["after", "before"]);
            assert!(db.billing.stored_keys(a).await.is_empty());
        },
        cleanup,
    )
    .await;
}

// -------------------------------------------------------------------- SQLite

pub(crate) struct Lite {
    pub(crate) billing: Billing,
    pub(crate) pool: SqlitePool,
    pub(crate) quotas: SqliteQuotaStore,
}

pub(crate) async fn lite() -> (Lite, Cleanup) {
    let (stores, cleanup) = sqlite_stores().await;
    let pool = stores.pool().clone();
    sqlx::query("CREATE TABLE orders (id TEXT PRIMARY KEY, tenant_id BLOB NOT NULL) STRICT")
        .execute(&pool)
        .await
        .unwrap();
    let billing = Billing::new(stores.billing_stores()).await;
    let quotas = SqliteQuotaStore::with_clock(pool.clone(), Arc::new(billing.h.clock().clone()));
    quotas.migrate().await.unwrap();
    (
        Lite {
            billing,
            pool,
            quotas,
        },
        cleanup,
    )
}

async fn lite_orders(pool: &SqlitePool) -> Vec<String> {
    sqlx::query_scalar("SELECT id FROM orders ORDER BY id")
        .fetch_all(pool)
        .await
        .unwrap()
}

/// As [`pg_order`], in a `BEGIN IMMEDIATE` transaction.
async fn lite_order(
    db: &Lite,
    tenant: (TenantId, SubscriptionId),
    key: &str,
    commit: bool,
) -> Option<IngestOutcome> {
    let engine = db.billing.h.engine();
    let mut tx = db.pool.begin_with("BEGIN IMMEDIATE").await.unwrap();
    sqlx::query("INSERT INTO orders (id, tenant_id) VALUES (?1, ?2)")
        .bind(key)
        .bind(tenant.0)
        .execute(&mut *tx)
        .await
        .unwrap();
    let usage = engine
        .record_usage_in(&mut *tx, db.billing.call(tenant, key))
        .await
        .unwrap();
    let quota = db.billing.quota(tenant.0);
    let granted = db
        .quotas
        .try_consume_in(&mut tx, &quota, 1, LIMIT)
        .await
        .unwrap();
    assert!(granted.is_granted());
    if commit {
        tx.commit().await.unwrap();
        Some(engine.usage_committed(usage).await)
    } else {
        assert_eq!(db.quotas.used_in(&mut tx, &quota).await.unwrap(), 1);
        tx.rollback().await.unwrap();
        drop(usage);
        None
    }
}

#[tokio::test]
async fn sqlite_rollback_leaves_no_order_usage_or_quota_consumption() {
    let (db, cleanup) = lite().await;
    run_with_cleanup(
        async move {
            let a = db.billing.a;
            assert_eq!(lite_order(&db, a, "order-1", false).await, None);
            assert!(lite_orders(&db.pool).await.is_empty());
            assert!(db.billing.stored_keys(a).await.is_empty());
            assert_eq!(db.quotas.used(&db.billing.quota(a.0)).await.unwrap(), 0);
            assert_eq!(db.billing.remaining_after_one(a.0), dec!(9999));
            let again = db
                .billing
                .h
                .engine()
                .record_usage(db.billing.call(a, "order-1"));
            assert_eq!(again.await.unwrap(), recorded());
        },
        cleanup,
    )
    .await;
}

#[tokio::test]
async fn sqlite_commit_keeps_order_usage_and_quota_consumption() {
    let (db, cleanup) = lite().await;
    run_with_cleanup(
        async move {
            let a = db.billing.a;
            assert_eq!(lite_order(&db, a, "order-1", true).await, Some(recorded()));
            assert_eq!(lite_orders(&db.pool).await, ["order-1"]);
            assert_eq!(db.billing.stored_keys(a).await, ["order-1"]);
            assert_eq!(db.quotas.used(&db.billing.quota(a.0)).await.unwrap(), 1);
            assert_eq!(db.billing.remaining_after_one(a.0), dec!(9998));
        },
        cleanup,
    )
    .await;
}

#[tokio::test]
async fn sqlite_the_same_event_in_a_later_transaction_is_a_duplicate() {
    let (db, cleanup) = lite().await;
    run_with_cleanup(
        async move {
            let (a, engine) = (db.billing.a, db.billing.h.engine());
            let mut tx = db.pool.begin_with("BEGIN IMMEDIATE").await.unwrap();
            let first = engine
                .record_usage_in(&mut *tx, db.billing.call(a, "k"))
                .await;
            tx.commit().await.unwrap();
            assert_eq!(engine.usage_committed(first.unwrap()).await, recorded());

            let mut tx = db.pool.begin_with("BEGIN IMMEDIATE").await.unwrap();
            let second = engine
                .record_usage_in(&mut *tx, db.billing.call(a, "k"))
                .await
                .unwrap();
            assert_eq!(second.recorded(), 0);
            tx.commit().await.unwrap();
            let outcome = engine.usage_committed(second).await;
            assert_eq!(outcome, IngestOutcome::Duplicate { billed_in: 0 });
            assert_eq!(db.billing.stored_keys(a).await, ["k"]);
            assert_eq!(db.billing.remaining_after_one(a.0), dec!(9998));
        },
        cleanup,
    )
    .await;
}

#[tokio::test]
async fn sqlite_usage_in_tenant_as_transaction_is_not_tenant_bs() {
    let (db, cleanup) = lite().await;
    run_with_cleanup(
        async move {
            let (a, b) = (db.billing.a, db.billing.b);
            assert_eq!(
                lite_order(&db, a, "shared-key", true).await,
                Some(recorded())
            );
            assert!(db.billing.stored_keys(b).await.is_empty());
            assert_eq!(db.quotas.used(&db.billing.quota(b.0)).await.unwrap(), 0);
            assert_eq!(db.billing.remaining_after_one(b.0), dec!(9999));
            let engine = db.billing.h.engine();
            let mut tx = db.pool.begin_with("BEGIN IMMEDIATE").await.unwrap();
            let b_same_key = engine
                .record_usage_in(&mut *tx, db.billing.call(b, "shared-key"))
                .await
                .unwrap();
            tx.commit().await.unwrap();
            assert_eq!(engine.usage_committed(b_same_key).await, recorded());
            assert_eq!(db.billing.stored_keys(a).await, ["shared-key"]);
            assert_eq!(db.billing.stored_keys(b).await, ["shared-key"]);
            assert_eq!(db.billing.remaining_after_one(a.0), dec!(9998));
        },
        cleanup,
    )
    .await;
}

/// A batch in one transaction: one outcome per event (a refused event, a
/// repeat within the batch), the valid ones stored at commit, and
/// `usage_committed` counting each newly recorded event once.
async fn batch_in_one_transaction(
    billing: &Billing,
    writer: &mut dyn saas_billing::UsageWriter,
) -> UncommittedUsage<Vec<Result<IngestOutcome, BillingError>>> {
    let a = billing.a;
    let mut negative = billing.call(a, "negative");
    negative.value = dec!(-1);
    let batch = vec![
        billing.call(a, "b-1"),
        negative,
        billing.call(a, "b-2"),
        billing.call(a, "b-1"),
    ];
    let usage = billing
        .h
        .engine()
        .record_usage_batch_in(writer, batch)
        .await
        .unwrap();
    let outcomes = usage.outcome();
    assert_eq!(outcomes.len(), 4);
    assert_eq!(outcomes[0], Ok(recorded()));
    assert!(matches!(
        outcomes[1],
        Err(BillingError::InvalidInput { field: "value", .. })
    ));
    assert_eq!(outcomes[2], Ok(recorded()));
    assert_eq!(outcomes[3], Ok(IngestOutcome::Duplicate { billed_in: 0 }));
    assert_eq!(usage.recorded(), 2);
    usage
}

#[tokio::test]
async fn postgres_a_batch_in_a_transaction_has_one_outcome_per_event() {
    let Some((db, cleanup)) = pg("in_tx_batch").await else {
        return;
    };
    run_with_cleanup(
        async move {
            let a = db.billing.a;
            let mut tx = db.pool.begin().await.unwrap();
            let usage = batch_in_one_transaction(&db.billing, &mut *tx).await;
            tx.commit().await.unwrap();
            let outcomes = db.billing.h.engine().usage_committed(usage).await;
            assert_eq!(outcomes.len(), 4);
            assert_eq!(db.billing.stored_keys(a).await, ["b-1", "b-2"]);
            assert_eq!(db.billing.remaining_after_one(a.0), dec!(9997));
        },
        cleanup,
    )
    .await;
}

#[tokio::test]
async fn sqlite_a_batch_in_a_transaction_has_one_outcome_per_event() {
    let (db, cleanup) = lite().await;
    run_with_cleanup(
        async move {
            let a = db.billing.a;
            let mut tx = db.pool.begin_with("BEGIN IMMEDIATE").await.unwrap();
            let usage = batch_in_one_transaction(&db.billing, &mut *tx).await;
            tx.commit().await.unwrap();
            let outcomes = db.billing.h.engine().usage_committed(usage).await;
            assert_eq!(outcomes.len(), 4);
            assert_eq!(db.billing.stored_keys(a).await, ["b-1", "b-2"]);
            assert_eq!(db.billing.remaining_after_one(a.0), dec!(9997));
        },
        cleanup,
    )
    .await;
}
