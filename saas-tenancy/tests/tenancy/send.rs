//! Every operation's future is `Send`, so hosts can call it from an axum
//! handler or `tokio::spawn`. sqlx's `Migrator::run(&mut conn)` is not
//! (a higher-ranked `Acquire` bound), which once made `provision` unusable
//! in a handler; this module fails to compile if any operation regresses.

use saas_core::{TenantContext, TenantId};
use saas_tenancy::NewTenant;
use saas_tenancy::archive::TenantArchive;
use saas_tenancy::migration::MigrationOptions;
use saas_tenancy::postgres::PgTenancy;
use saas_tenancy::sqlite::SqliteTenancy;

fn assert_send<T: Send>(_: &T) {}

#[allow(dead_code)] // type-checked, never called
async fn pg_operations_are_send(
    t: PgTenancy,
    n: NewTenant,
    id: TenantId,
    ctx: TenantContext,
    a: TenantArchive,
) {
    assert_send(&t.provision(n));
    assert_send(&t.begin(&ctx));
    assert_send(&t.acquire(&ctx));
    assert_send(&t.migrate_tenants(MigrationOptions::default()));
    assert_send(&t.delete_tenant(id));
    assert_send(&t.export_tenant(id));
    assert_send(&t.import_tenant(&ctx, &a));
    assert_send(&t.audit());
}

#[allow(dead_code)] // type-checked, never called
async fn sqlite_operations_are_send(
    t: SqliteTenancy,
    n: NewTenant,
    id: TenantId,
    ctx: TenantContext,
    a: TenantArchive,
) {
    assert_send(&t.provision(n));
    assert_send(&t.retry_provisioning(id));
    assert_send(&t.suspend(id));
    assert_send(&t.resume(id));
    assert_send(&t.export_tenant(id));
    assert_send(&t.import_tenant(&ctx, &a));
    assert_send(&t.audit());
    assert_send(&t.begin(&ctx));
    assert_send(&t.acquire(&ctx));
    assert_send(&t.migrate_tenants(MigrationOptions::default()));
    assert_send(&t.delete_tenant(id));
}
