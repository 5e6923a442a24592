//! A source larger than one purge batch: the tenant's rows leave the
//! shared table in several transactions, every one of them, and a
//! neighbour's rows stay.

use std::time::Duration;

use saas_tenancy::postgres::MoveOptions;
use saas_tenancy::{Placement, Strategy};

use super::fixture::env;

/// More rows than the mover deletes per transaction (5,000), not a
/// multiple of it.
const ROWS: i64 = 12_345;

#[tokio::test]
async fn a_source_larger_than_a_purge_batch_is_purged_whole() {
    let Some(env) = env("moving::purge").await else {
        return;
    };
    let tenancy = env.tenancy(Duration::from_secs(1), false);
    let one = env.one.name.clone();
    let moved = env.tenant(&tenancy, "big", Strategy::Shared, &one).await;
    let neighbour = env.tenant(&tenancy, "next", Strategy::Shared, &one).await;
    for (ctx, rows) in [(&moved, ROWS), (&neighbour, 7)] {
        sqlx::query(
            "INSERT INTO public.notes (tenant_id, body) \
             SELECT $1, 'note ' || g FROM generate_series(1, $2) g",
        )
        .bind(ctx.tenant_id())
        .bind(rows)
        .execute(&env.one.admin)
        .await
        .unwrap();
    }
    let from = Placement::Shared {
        cluster: one.clone(),
    };
    let neighbour_before = env.stored(&from, neighbour.tenant_id()).await;

    let to = Placement::derive(Strategy::Schema, one.clone(), moved.tenant_id());
    let report = tenancy
        .move_tenant(moved.tenant_id(), to.clone(), MoveOptions::default())
        .await
        .unwrap();

    assert_eq!(report.rows.get("notes"), Some(&(ROWS as u64)));
    assert_eq!(
        env.stored(&to, moved.tenant_id()).await.len(),
        ROWS as usize
    );
    assert!(
        env.stored(&from, moved.tenant_id()).await.is_empty(),
        "the source kept some of the moved tenant's rows"
    );
    assert_eq!(
        env.stored(&from, neighbour.tenant_id()).await,
        neighbour_before
    );
    env.cleanup().await;
}
