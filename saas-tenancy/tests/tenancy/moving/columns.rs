//! A replicated move between tables whose columns differ: what the
//! subscription would do is what the mover's own copy does.

use std::time::Duration;

use saas_tenancy::postgres::MoveOptions;
use saas_tenancy::{Placement, Strategy};
use sqlx::Executor;

use super::fixture::env;
use super::writers::insert;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_only_column_takes_its_default_and_a_source_only_column_stops_the_move_first() {
    let Some(env) = env("moving::columns").await else {
        return;
    };
    let tenancy = env.tenancy(Duration::from_secs(1), true);
    env.two
        .admin
        .execute("ALTER TABLE notes ADD COLUMN extra text NOT NULL DEFAULT 'target default'")
        .await
        .unwrap();
    let ctx = env
        .tenant(&tenancy, "columns", Strategy::Shared, &env.one.name)
        .await;
    for i in 0..20 {
        insert(&tenancy, &ctx, &format!("row {i}")).await.unwrap();
    }
    let target = Placement::derive(Strategy::Shared, env.two.name.clone(), ctx.tenant_id());
    let report = tenancy
        .move_tenant(ctx.tenant_id(), target, MoveOptions::default())
        .await
        .unwrap();
    assert_eq!(report.copied_by_table_sync, None, "the mover copied");
    let extras: Vec<String> = sqlx::query_scalar("SELECT extra FROM notes WHERE tenant_id = $1")
        .bind(ctx.tenant_id())
        .fetch_all(&env.two.admin)
        .await
        .unwrap();
    assert_eq!(extras.len(), 20);
    assert!(extras.iter().all(|e| e == "target default"), "{extras:?}");

    // A column only the source has would be lost: refused before a slot.
    env.one
        .admin
        .execute("ALTER TABLE notes ADD COLUMN only_here int")
        .await
        .unwrap();
    let other = env
        .tenant(&tenancy, "columns-other", Strategy::Shared, &env.one.name)
        .await;
    insert(&tenancy, &other, "before").await.unwrap();
    let to = Placement::derive(Strategy::Shared, env.two.name.clone(), other.tenant_id());
    let refused = tenancy
        .move_tenant(other.tenant_id(), to, MoveOptions::default())
        .await;
    let Err(e) = refused else {
        panic!("moved although the target lacks a column: {refused:?}");
    };
    assert!(e.to_string().contains("only_here"), "{e}");
    assert_eq!(env.slots_and_subscriptions().await, (0, 0), "no slot made");
    tenancy.abort_move(other.tenant_id()).await.unwrap();
    insert(&tenancy, &other, "still served").await.unwrap();
    assert_eq!(env.replication_leftovers().await, 0);
    env.cleanup().await;
}
