//! saas-billing inside saas-tenancy's scoped transactions: a row tenant
//! whose billing tables are the shared schema's, and a schema tenant whose
//! billing tables are in its own schema. In each, a business row, the
//! usage and the quota grant commit or roll back together, and land where
//! the transaction's placement puts them — never in the other tenant's
//! tables.

use std::str::FromStr;
use std::sync::Arc;

use saas_billing::quota::{PgQuotaStore, QuotaKey, QuotaStore};
use saas_billing::store::postgres::PgBillingStores;
use saas_billing::testing::fixtures;
use saas_billing::{
    BillingEngine, Currency, IngestOutcome, ManualClock, MeterKey, NewSubscription, PlanId,
    PlanRef, SubscriptionId, UsageEvent, UsageStore, dec,
};
use saas_core::TenantContext;
use saas_tenancy::Strategy;
use saas_tenancy::postgres::ScopeMode;
use saas_tenancy::testing::pg::PgSandbox;
use saas_test_support::{Service, service_url};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{AssertSqlSafe, Executor, PgPool};

/// One tenant's billing: its engine (over the stores where its tables
/// are), its subscription and its quota store.
struct Billing {
    engine: BillingEngine,
    stores: PgBillingStores,
    quotas: PgQuotaStore,
    sub: SubscriptionId,
}

/// Billing tables (and quota tables) on `pool`'s search path, and a
/// `basic` subscription of `ctx`'s tenant in them.
async fn billing(pool: PgPool, ctx: &TenantContext, clock: &ManualClock) -> Billing {
    let stores = PgBillingStores::new(pool.clone());
    stores.migrate().await.unwrap();
    let quotas = PgQuotaStore::with_clock(pool, Arc::new(clock.clone()));
    quotas.migrate().await.unwrap();
    let engine = BillingEngine::new(
        Arc::new(fixtures::catalog()),
        stores.billing_stores(),
        Arc::new(clock.clone()),
    );
    let basic = PlanRef::new(PlanId::new("basic").unwrap(), 1);
    let new = NewSubscription::new(ctx.tenant_id(), basic, Currency::USD);
    let sub = engine.create_subscription(new).await.unwrap().id();
    Billing {
        engine,
        stores,
        quotas,
        sub,
    }
}

fn call(ctx: &TenantContext, b: &Billing, key: &str) -> UsageEvent {
    let calls = MeterKey::new("calls").unwrap();
    UsageEvent::new(
        ctx.tenant_id(),
        b.sub,
        calls,
        dec!(1),
        fixtures::start(),
        key,
    )
}

fn quota(ctx: &TenantContext) -> QuotaKey {
    QuotaKey::new(ctx.tenant_id(), "calls", "2024-01").unwrap()
}

async fn keys(usage: &dyn UsageStore, ctx: &TenantContext, sub: SubscriptionId) -> Vec<String> {
    usage
        .for_period(ctx.tenant_id(), sub, 0, i64::MAX)
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.event.idempotency_key)
        .collect()
}

/// In `ctx`'s scoped transaction: a note, the usage and a quota grant,
/// then commit or roll back.
async fn order(env: &PgSandbox, ctx: &TenantContext, b: &Billing, key: &str, commit: bool) {
    let mut tx = env.tenancy.begin(ctx).await.unwrap();
    sqlx::query("INSERT INTO notes (tenant_id, body) VALUES ($1, $2)")
        .bind(ctx.tenant_id().as_uuid())
        .bind(key)
        .execute(&mut *tx)
        .await
        .unwrap();
    let usage = b.engine.record_usage_in(&mut *tx, call(ctx, b, key)).await;
    let usage = usage.unwrap();
    assert_eq!(usage.outcome(), &IngestOutcome::Recorded { billed_in: 0 });
    let granted = b.quotas.try_consume_in(&mut tx, &quota(ctx), 1, 100).await;
    assert!(granted.unwrap().is_granted());
    if commit {
        tx.commit().await.unwrap();
        b.engine.usage_committed(usage).await;
    } else {
        tx.rollback().await.unwrap();
    }
}

async fn notes(env: &PgSandbox, ctx: &TenantContext) -> Vec<String> {
    let mut tx = env.tenancy.begin(ctx).await.unwrap();
    let bodies = sqlx::query_scalar("SELECT body FROM notes ORDER BY body")
        .fetch_all(&mut *tx)
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    bodies
}

#[tokio::test]
async fn usage_and_quota_commit_with_a_tenant_transaction_in_its_placements_tables() {
    let test = "usage_and_quota_commit_with_a_tenant_transaction_in_its_placements_tables";
    let Some(url) = service_url(Service::Postgres, test) else {
        return;
    };
    let mut env = PgSandbox::new(&url, ScopeMode::Shared).await.unwrap();
    let row = env.tenant("billing-row", Strategy::Shared).await.unwrap();
    let schema = env
        .tenant("billing-schema", Strategy::Schema)
        .await
        .unwrap();
    let clock = ManualClock::new(fixtures::start());

    // The row tenant's billing tables: the shared schema's, which the
    // runtime role may use (no RLS on them: every query filters by tenant).
    let shared = billing(env.admin.clone(), &row, &clock).await;
    for table in [
        "billing_usage_events",
        "billing_usage_seals",
        "billing_quota_usage",
        "billing_quota_reservations",
    ] {
        env.admin
            .execute(AssertSqlSafe(format!(
                "GRANT SELECT, INSERT, UPDATE, DELETE ON \"{table}\" TO \"{}\"",
                env.runtime_role
            )))
            .await
            .unwrap();
    }
    // The schema tenant's: in its own schema, created by the admin role,
    // whose default privileges there grant them to the tenant's role.
    let tx = env.tenancy.begin(&schema).await.unwrap();
    let own_schema = tx.placement().object_name().unwrap().as_str().to_owned();
    drop(tx);
    let options = PgConnectOptions::from_str(&url)
        .unwrap()
        .options([("search_path", own_schema.as_str())]);
    let own_pool = PgPoolOptions::new()
        .max_connections(2)
        .connect_with(options)
        .await
        .unwrap();
    let own = billing(own_pool.clone(), &schema, &clock).await;

    for (ctx, b) in [(&row, &shared), (&schema, &own)] {
        order(&env, ctx, b, "rolled-back", false).await;
        order(&env, ctx, b, "committed", true).await;
    }

    for (ctx, b) in [(&row, &shared), (&schema, &own)] {
        let slug = ctx.slug();
        assert_eq!(notes(&env, ctx).await, ["committed"], "{slug}");
        let usage = b.stores.billing_stores().usage;
        assert_eq!(keys(&*usage, ctx, b.sub).await, ["committed"], "{slug}");
        assert_eq!(b.quotas.used(&quota(ctx)).await.unwrap(), 1, "{slug}");
    }
    // Neither tenant's usage or grant is in the other's tables.
    let shared_usage = shared.stores.billing_stores().usage;
    let own_usage = own.stores.billing_stores().usage;
    assert!(keys(&*shared_usage, &schema, own.sub).await.is_empty());
    assert!(keys(&*own_usage, &row, shared.sub).await.is_empty());
    assert_eq!(shared.quotas.used(&quota(&schema)).await.unwrap(), 0);
    assert_eq!(own.quotas.used(&quota(&row)).await.unwrap(), 0);

    own_pool.close().await;
    env.cleanup().await;
}
