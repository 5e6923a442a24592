//! The tenant's pending outbox rows move with it: the `saas-events`
//! outbox is keyed by a sequence every tenant of a location shares, so its
//! rows are moved under the fence with the target's keys, in order, and
//! leave the source — no collision with the target's other tenants — and
//! are announced to relays that wake on commit.

use std::time::Duration;

use saas_core::TenantContext;
use saas_tenancy::postgres::{MoveOptions, PgTenancy};
use saas_tenancy::{Placement, Strategy};
use sqlx::{Executor, PgPool};

use super::fixture::env;

/// The `saas-events` outbox table, as `PgOutbox::create_table_sql` writes it.
const OUTBOX: &str = "CREATE TABLE IF NOT EXISTS \"saas_events_outbox\" (seq bigserial PRIMARY KEY, \
     tenant_id uuid, topic text NOT NULL, event text NOT NULL, \
     created_at timestamptz NOT NULL DEFAULT now())";

async fn publish(pool: &PgPool, ctx: &TenantContext, n: usize) {
    for i in 0..n {
        sqlx::query(
            "INSERT INTO saas_events_outbox (tenant_id, topic, event) VALUES ($1, 'notes', $2)",
        )
        .bind(ctx.tenant_id())
        .bind(format!("{{\"id\":\"{}-{i}\"}}", ctx.tenant_id()))
        .execute(pool)
        .await
        .unwrap();
    }
}

async fn pending(pool: &PgPool, ctx: &TenantContext) -> Vec<(i64, String)> {
    sqlx::query_as("SELECT seq, event FROM saas_events_outbox WHERE tenant_id = $1 ORDER BY seq")
        .bind(ctx.tenant_id())
        .fetch_all(pool)
        .await
        .unwrap()
}

async fn write(tenancy: &PgTenancy, ctx: &TenantContext) {
    let mut tx = tenancy.begin(ctx).await.unwrap();
    sqlx::query("INSERT INTO notes (tenant_id, body) VALUES ($1, 'a note')")
        .bind(ctx.tenant_id())
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn pending_outbox_rows_move_with_the_tenant_without_key_collisions_and_are_announced() {
    let Some(env) = env("moving::queues").await else {
        return;
    };
    env.one.admin.execute(OUTBOX).await.unwrap();
    env.two.admin.execute(OUTBOX).await.unwrap();
    let tenancy = env.tenancy(Duration::from_secs(1), true);
    let mover = env
        .tenant(&tenancy, "mover", Strategy::Shared, &env.one.name)
        .await;
    let there = env
        .tenant(&tenancy, "there", Strategy::Shared, &env.two.name)
        .await;
    write(&tenancy, &mover).await;
    // The target's outbox already uses the keys the mover's rows have.
    publish(&env.two.admin, &there, 10).await;
    publish(&env.one.admin, &mover, 7).await;
    let before = pending(&env.one.admin, &mover).await;
    let neighbour = pending(&env.two.admin, &there).await;
    assert!(
        before
            .iter()
            .any(|(seq, _)| neighbour.iter().any(|(s, _)| s == seq))
    );

    // A relay woken on commit listens on the target's database.
    let mut relay = sqlx::postgres::PgListener::connect_with(&env.two.admin)
        .await
        .unwrap();
    relay.listen("saas_events_outbox").await.unwrap();
    let to = Placement::derive(Strategy::Shared, env.two.name.clone(), mover.tenant_id());
    let report = tenancy
        .move_tenant(mover.tenant_id(), to, MoveOptions::default())
        .await
        .unwrap();
    assert_eq!(report.queued.get("saas_events_outbox"), Some(&7));
    assert!(
        !report.rows.contains_key("saas_events_outbox"),
        "not replicated"
    );
    let wake = tokio::time::timeout(Duration::from_secs(10), relay.recv())
        .await
        .expect("the moved rows are announced to relays")
        .unwrap();
    assert_eq!(wake.payload(), "public", "the schema of the outbox written");
    let after = pending(&env.two.admin, &mover).await;
    let events = |rows: &[(i64, String)]| rows.iter().map(|(_, e)| e.clone()).collect::<Vec<_>>();
    assert_eq!(
        events(&after),
        events(&before),
        "every pending event, in order, once"
    );
    assert!(
        after
            .iter()
            .all(|(seq, _)| neighbour.iter().all(|(s, _)| s != seq))
    );
    assert!(
        pending(&env.one.admin, &mover).await.is_empty(),
        "gone from the source"
    );
    assert_eq!(
        pending(&env.two.admin, &there).await,
        neighbour,
        "neighbour untouched"
    );
    write(&tenancy, &mover).await;
    env.cleanup().await;
}
