//! The capture log of a move replication cannot carry (row → schema on
//! one server): the tenant writing through it cannot read or change it,
//! and an abort leaves neither triggers nor keys behind.

use std::time::Duration;

use saas_tenancy::postgres::{MoveOptions, MovePhase};
use saas_tenancy::{Placement, Strategy, TenancyError};

use super::fixture::env;
use super::writers::insert;

#[tokio::test]
async fn the_tenant_cannot_touch_the_capture_log_and_an_abort_removes_it() {
    let Some(env) = env("moving::capture").await else {
        return;
    };
    let tenancy = env.tenancy(Duration::from_secs(1), false);
    let one = env.one.name.clone();
    let ctx = env.tenant(&tenancy, "cap", Strategy::Shared, &one).await;
    let to = Placement::derive(Strategy::Schema, one.clone(), ctx.tenant_id());
    let stopped = tenancy
        .move_tenant(
            ctx.tenant_id(),
            to,
            MoveOptions::default().stop_after(MovePhase::Copying),
        )
        .await;
    assert!(matches!(stopped, Err(TenancyError::MoveStopped { .. })));
    let open = tenancy.open_move(ctx.tenant_id()).await.unwrap();
    assert!(open.is_some());

    // Before the fence the tenant writes; its write is captured...
    insert(&tenancy, &ctx, "captured").await.unwrap();
    let captured: i64 = sqlx::query_scalar("SELECT count(*) FROM saas_tenancy_capture.changes")
        .fetch_one(&env.one.admin)
        .await
        .unwrap();
    assert!(captured >= 1, "the tenant's write left no key");

    // ...but the log is not the tenant's to read, change or empty.
    for statement in [
        "SELECT count(*) FROM saas_tenancy_capture.changes",
        "DELETE FROM saas_tenancy_capture.changes",
        "INSERT INTO saas_tenancy_capture.changes (move_id, relid, key) \
         VALUES (gen_random_uuid(), 0, '{}')",
    ] {
        let mut tx = tenancy.begin(&ctx).await.unwrap();
        let err = sqlx::query(statement)
            .execute(&mut *tx)
            .await
            .expect_err(statement);
        let code = err
            .as_database_error()
            .and_then(|e| e.code())
            .map(|c| c.into_owned());
        assert_eq!(code.as_deref(), Some("42501"), "{statement}: {err}");
    }

    tenancy.abort_move(ctx.tenant_id()).await.unwrap();
    assert_eq!(env.replication_leftovers().await, 0);
    env.cleanup().await;
}

#[tokio::test]
async fn a_table_without_a_key_is_refused_before_a_captured_copy_starts() {
    let Some(env) = env("moving::capture_keyless").await else {
        return;
    };
    // Replica identity FULL passes replication's check, but a replay
    // needs a key to find its row.
    sqlx::raw_sql(
        "CREATE TABLE public.tags (tenant_id uuid NOT NULL, tag text NOT NULL); \
         ALTER TABLE public.tags REPLICA IDENTITY FULL",
    )
    .execute(&env.one.admin)
    .await
    .unwrap();
    let tenancy = env.tenancy(Duration::from_secs(1), false);
    let one = env.one.name.clone();
    let ctx = env
        .tenant(&tenancy, "keyless", Strategy::Shared, &one)
        .await;
    let to = Placement::derive(Strategy::Schema, one.clone(), ctx.tenant_id());
    let err = tenancy
        .move_tenant(ctx.tenant_id(), to, MoveOptions::default())
        .await
        .unwrap_err();
    match err {
        TenancyError::NoReplicaIdentity { table } => assert!(table.contains("tags"), "{table}"),
        other => panic!("expected NoReplicaIdentity, got {other:?}"),
    }
    assert!(tenancy.open_move(ctx.tenant_id()).await.unwrap().is_none());
    env.cleanup().await;
}

/// A row the tenant writes between the copy and the fence is replayed
/// into a target whose key is a `GENERATED ALWAYS` identity: with its
/// source key, not refused.
#[tokio::test]
async fn a_replayed_row_keeps_its_key_in_an_always_identity() {
    let Some(env) = env("moving::capture_identity").await else {
        return;
    };
    sqlx::raw_sql(
        "ALTER TABLE public.notes ALTER COLUMN id DROP DEFAULT; \
         ALTER TABLE public.notes ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY",
    )
    .execute(&env.one.admin)
    .await
    .unwrap();
    let tenancy = env.tenancy(Duration::from_secs(1), false);
    let one = env.one.name.clone();
    let ctx = env.tenant(&tenancy, "ident", Strategy::Schema, &one).await;
    insert(&tenancy, &ctx, "copied").await.unwrap();
    let to = Placement::Shared {
        cluster: one.clone(),
    };
    let stopped = tenancy
        .move_tenant(
            ctx.tenant_id(),
            to.clone(),
            MoveOptions::default().stop_after(MovePhase::Copying),
        )
        .await;
    assert!(matches!(stopped, Err(TenancyError::MoveStopped { .. })));
    // Served from its schema still; this row only reaches the target by
    // the replay under the fence.
    insert(&tenancy, &ctx, "replayed").await.unwrap();
    let from = tenancy
        .catalog()
        .get(ctx.tenant_id())
        .await
        .unwrap()
        .unwrap()
        .placement;
    let source = env.stored(&from, ctx.tenant_id()).await;
    tenancy
        .resume_move(ctx.tenant_id(), MoveOptions::default())
        .await
        .unwrap();
    assert_eq!(env.stored(&to, ctx.tenant_id()).await, source);
    assert_eq!(source.len(), 2);
    env.cleanup().await;
}

/// A schema or database tenant may store any tenant id in its own
/// tables. Moved into shared tables, such a row must not join another
/// tenant's rows: a captured copy writes the tenant's id, replication
/// filters the row out (its counts then differ and the move stops).
#[tokio::test]
async fn a_planted_tenant_id_never_reaches_another_tenants_rows() {
    let Some(env) = env("moving::capture_planted").await else {
        return;
    };
    let tenancy = env.tenancy(Duration::from_secs(1), false);
    let (one, two) = (env.one.name.clone(), env.two.name.clone());
    let victim_one = env
        .tenant(&tenancy, "victim1", Strategy::Shared, &one)
        .await;
    let victim_two = env
        .tenant(&tenancy, "victim2", Strategy::Shared, &two)
        .await;
    let schema = env
        .tenant(&tenancy, "planter1", Strategy::Schema, &one)
        .await;
    let database = env
        .tenant(&tenancy, "planter2", Strategy::Database, &one)
        .await;
    for (planter, victim) in [(&schema, &victim_one), (&database, &victim_two)] {
        let mut tx = tenancy.begin(planter).await.unwrap();
        for (owner, body) in [(planter, "own"), (victim, "planted")] {
            sqlx::query("INSERT INTO notes (tenant_id, body) VALUES ($1, $2)")
                .bind(owner.tenant_id())
                .bind(body)
                .execute(&mut *tx)
                .await
                .unwrap();
        }
        tx.commit().await.unwrap();
    }
    let shared = |cluster: &saas_tenancy::ClusterName| Placement::Shared {
        cluster: cluster.clone(),
    };

    // Captured copy (schema → row, one database): both rows arrive as the
    // mover's own; the victim has none.
    tenancy
        .move_tenant(schema.tenant_id(), shared(&one), MoveOptions::default())
        .await
        .unwrap();
    let moved = env.stored(&shared(&one), schema.tenant_id()).await;
    assert_eq!(moved.len(), 2, "{moved:?}");
    assert!(
        env.stored(&shared(&one), victim_one.tenant_id())
            .await
            .is_empty()
    );

    // Replication (database → row on the other server): the planted row
    // is not replicated, so the fence's counts differ and the move stops;
    // the abort leaves the victim without it.
    let stopped = tenancy
        .move_tenant(
            database.tenant_id(),
            shared(&two),
            // The counts never agree: waiting for them is bounded by this.
            MoveOptions::default().catch_up_timeout(Duration::from_secs(3)),
        )
        .await;
    assert!(
        matches!(stopped, Err(TenancyError::MoveStopped { .. })),
        "{stopped:?}"
    );
    assert!(
        env.stored(&shared(&two), victim_two.tenant_id())
            .await
            .is_empty()
    );
    tenancy.abort_move(database.tenant_id()).await.unwrap();
    assert!(
        env.stored(&shared(&two), victim_two.tenant_id())
            .await
            .is_empty()
    );
    assert!(
        env.stored(&shared(&two), database.tenant_id())
            .await
            .is_empty()
    );
    env.cleanup().await;
}
