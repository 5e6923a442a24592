//! SQLite → PostgreSQL moves that fail or are refused: a copy into the
//! shared tables failing half-way, a target cluster that cannot be
//! routed, shared tables without forced row-level security.

use std::sync::Arc;

use saas_tenancy::postgres::ScopeMode;
use saas_tenancy::sqlite::SqliteMoveOptions;
use saas_tenancy::{MovePhase, Placement, Strategy, TenancyError};
use sqlx::Executor;

use super::fixture::Fixture;
use super::pg_side::{Neighbour, pg_rows, shared_rows, target_left};
use crate::pg_env::sandbox;

/// A copy into the shared tables that fails half-way (a trigger refuses
/// one row after others of the tenant went in) leaves nothing of the
/// tenant there — the copy is one PostgreSQL transaction — and the
/// neighbour untouched; the move then resumes, or aborts with the source
/// serving.
#[tokio::test]
async fn sqlite_to_postgres_row_copy_failing_half_way_leaves_nothing_and_resumes_or_aborts() {
    let Some(mut pg) = sandbox("sqlite_moving::to_postgres_row_half_way", ScopeMode::Shared).await
    else {
        return;
    };
    let next_door = Neighbour::new(&mut pg).await;
    let fx = Fixture::over(Some(Arc::clone(pg.tenancy.catalog()))).await;
    sqlx::raw_sql(
        "CREATE FUNCTION refuse_seed_77() RETURNS trigger LANGUAGE plpgsql AS $$ \
         BEGIN IF NEW.body = 'seed 77' THEN RAISE EXCEPTION 'injected: row 77 refused'; \
         END IF; RETURN NEW; END $$; \
         CREATE TRIGGER refuse_seed_77 BEFORE INSERT ON notes \
         FOR EACH ROW EXECUTE FUNCTION refuse_seed_77()",
    )
    .execute(&pg.admin)
    .await
    .unwrap();
    let mut moves = Vec::new();
    for slug in ["half-way-resumed", "half-way-aborted"] {
        let ctx = fx.tenant(slug, Strategy::Shared, &fx.a).await;
        fx.seed(&ctx, 200).await;
        let from = Placement::Shared {
            cluster: fx.a.clone(),
        };
        let to = Placement::derive(Strategy::Shared, pg.cluster.clone(), ctx.tenant_id());
        let before = fx.raw_rows(&from, ctx.tenant_id()).await;
        let stopped = fx
            .tenancy
            .move_tenant_to_postgres(
                ctx.tenant_id(),
                &pg.tenancy,
                to.clone(),
                SqliteMoveOptions::default(),
            )
            .await
            .unwrap_err();
        match &stopped {
            TenancyError::MoveStopped { phase, detail, .. } => {
                assert_eq!(*phase, MovePhase::Fenced.to_string());
                assert!(detail.contains("row 77 refused"), "{detail}");
            }
            other => panic!("expected MoveStopped, got {other:?}"),
        }
        assert!(shared_rows(&pg, ctx.tenant_id()).await.is_empty());
        assert_eq!(fx.raw_rows(&from, ctx.tenant_id()).await, before);
        next_door.check(&pg, slug).await;
        moves.push((ctx, from, to, before));
    }
    let (aborted, from, to, before) = moves.pop().unwrap();
    fx.tenancy
        .abort_move_to_postgres(aborted.tenant_id(), &pg.tenancy)
        .await
        .unwrap();
    assert!(!target_left(&pg, &to, aborted.tenant_id()).await);
    assert_eq!(fx.raw_rows(&from, aborted.tenant_id()).await, before);
    assert_eq!(fx.rows(&fx.tenancy, &aborted).await, before);

    sqlx::raw_sql("DROP TRIGGER refuse_seed_77 ON notes; DROP FUNCTION refuse_seed_77()")
        .execute(&pg.admin)
        .await
        .unwrap();
    let (resumed, _, _, before) = moves.pop().unwrap();
    fx.tenancy
        .resume_move_to_postgres(
            resumed.tenant_id(),
            &pg.tenancy,
            SqliteMoveOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(pg_rows(&pg, &resumed).await, before);
    assert_eq!(shared_rows(&pg, resumed.tenant_id()).await, before);
    next_door.check(&pg, "after the resumed move").await;

    pg.tenancy.delete_tenant(resumed.tenant_id()).await.unwrap();
    fx.cleanup().await;
    pg.cleanup().await;
}

/// A target on a cluster that is also one of the SQLite tenancy's is
/// refused (the SQLite side would serve the tenant from a file of that
/// cluster after the cut-over), as is one on a cluster PostgreSQL does
/// not have; nothing starts. Shared tables without forced RLS stop the
/// move before its fence.
#[tokio::test]
async fn sqlite_to_postgres_move_refuses_a_target_cluster_it_cannot_route() {
    let Some(pg) = sandbox("sqlite_moving::to_postgres_routing", ScopeMode::Shared).await else {
        return;
    };
    let fx = Fixture::over(Some(Arc::clone(pg.tenancy.catalog()))).await;
    let ctx = fx.tenant("unroutable", Strategy::Shared, &fx.a).await;
    fx.seed(&ctx, 10).await;
    let elsewhere = saas_tenancy::ClusterName::new("elsewhere").unwrap();
    for strategy in [Strategy::Shared, Strategy::Database] {
        let on_sqlite = Placement::derive(strategy, fx.b.clone(), ctx.tenant_id());
        let refused = fx
            .tenancy
            .move_tenant_to_postgres(
                ctx.tenant_id(),
                &pg.tenancy,
                on_sqlite,
                SqliteMoveOptions::default(),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(&refused, TenancyError::InvalidInput(m) if m.contains("SQLite cluster")),
            "{refused}"
        );
        let unknown = Placement::derive(strategy, elsewhere.clone(), ctx.tenant_id());
        let refused = fx
            .tenancy
            .move_tenant_to_postgres(
                ctx.tenant_id(),
                &pg.tenancy,
                unknown,
                SqliteMoveOptions::default(),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(refused, TenancyError::UnknownCluster(_)),
            "{refused}"
        );
    }
    assert!(
        fx.tenancy
            .open_move(ctx.tenant_id())
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(fx.rows(&fx.tenancy, &ctx).await.len(), 10);

    // Shared tables whose row-level security is not forced cannot keep
    // the tenant apart: the move stops before its fence.
    pg.admin
        .execute("ALTER TABLE notes NO FORCE ROW LEVEL SECURITY")
        .await
        .unwrap();
    let to = Placement::derive(Strategy::Shared, pg.cluster.clone(), ctx.tenant_id());
    let stopped = fx
        .tenancy
        .move_tenant_to_postgres(
            ctx.tenant_id(),
            &pg.tenancy,
            to.clone(),
            SqliteMoveOptions::default(),
        )
        .await
        .unwrap_err();
    match &stopped {
        TenancyError::MoveStopped { phase, detail, .. } => {
            assert_eq!(*phase, MovePhase::Started.to_string());
            assert!(detail.contains("row-level security"), "{detail}");
        }
        other => panic!("expected MoveStopped, got {other:?}"),
    }
    assert_eq!(fx.rows(&fx.tenancy, &ctx).await.len(), 10);
    fx.tenancy
        .abort_move_to_postgres(ctx.tenant_id(), &pg.tenancy)
        .await
        .unwrap();
    pg.admin
        .execute("ALTER TABLE notes FORCE ROW LEVEL SECURITY")
        .await
        .unwrap();
    assert!(!target_left(&pg, &to, ctx.tenant_id()).await);
    assert_eq!(fx.rows(&fx.tenancy, &ctx).await.len(), 10);
    fx.cleanup().await;
    pg.cleanup().await;
}
