//! After moves — a row tenant to another server and back again, a schema
//! tenant into a database, a database tenant into shared tables — the
//! leak harness finds no read or write crossing tenants.

use std::sync::Arc;
use std::time::Duration;

use saas_tenancy::postgres::{MoveOptions, SqlIdent};
use saas_tenancy::testing::leak::run_leak_harness;
use saas_tenancy::testing::pg_leak::PgLeakTarget;
use saas_tenancy::{Placement, Strategy};

use super::fixture::env;

#[test]
fn the_leak_harness_passes_after_moves() {
    let runtime = crate::fixtures::harness_runtime();
    // Pools are built (lazily) inside the runtime.
    let _inside = runtime.enter();
    let Some(env) = runtime.block_on(env("moving::isolation")) else {
        return;
    };
    let tenancy = env.tenancy(Duration::from_secs(1), true);
    let tenants = runtime.block_on(async {
        let (one, two) = (env.one.name.clone(), env.two.name.clone());
        let a = env.tenant(&tenancy, "leak-a", Strategy::Shared, &one).await;
        let b = env.tenant(&tenancy, "leak-b", Strategy::Schema, &one).await;
        let c = env
            .tenant(&tenancy, "leak-c", Strategy::Database, &one)
            .await;
        let d = env.tenant(&tenancy, "leak-d", Strategy::Shared, &one).await;
        let moves = [
            (&a, Strategy::Shared, &two),
            (&a, Strategy::Shared, &one),
            (&b, Strategy::Database, &one),
            (&c, Strategy::Shared, &one),
        ];
        for (ctx, strategy, cluster) in moves {
            let to = Placement::derive(strategy, cluster.clone(), ctx.tenant_id());
            tenancy
                .move_tenant(ctx.tenant_id(), to, MoveOptions::default())
                .await
                .unwrap();
        }
        vec![a, b, c, d]
    });
    let ident = |s: &str| SqlIdent::new(s).unwrap();
    let target = PgLeakTarget::new(
        tenancy.clone(),
        env.one.name.clone(),
        &ident("notes"),
        &ident("tenant_id"),
        &ident("id"),
        &ident("body"),
    );
    // Fewer cases than `leak.rs` runs per placement: the placements are
    // the same, what is new here is what the moves left behind.
    let result = run_leak_harness(runtime.handle(), Arc::new(target), tenants, 300);
    runtime.block_on(env.cleanup());
    if let Err(failure) = result {
        panic!("{failure}");
    }
}
