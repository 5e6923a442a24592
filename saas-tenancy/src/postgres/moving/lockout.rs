//! The fence's second half: the source placement made unwritable for the
//! moving tenant, durably, for every process — including one whose cached
//! record still names the source (it missed the notification and its TTL
//! has not run out):
//!
//! - **row**: a restrictive policy per shared table, for the runtime role,
//!   `USING/WITH CHECK (<tenant column> <> '<tenant>')`: the tenant's rows
//!   can be neither read nor written through any scoped handle (other
//!   tenants' rows are untouched). It stays after the source is purged,
//!   until the tenant is moved back there.
//! - **schema**: the tenant role is revoked from the runtime role, so the
//!   `SET ROLE` of every scope (and a tenant pool's startup) fails.
//! - **database**: `CONNECT` on the tenant database is revoked from the
//!   runtime role.
//!
//! Before the change, the tenant's open handles are waited for (the
//! move's fence grace) and then cut, as a deletion does (see `fence.rs`):
//! the handle lock is taken exclusively — in the same transaction as the
//! row policies or the revoke, so nothing starts in between — and
//! sessions queued for it are terminated before it is released; tenant
//! pool connections of every process are waited for while busy and then
//! terminated. In-flight transactions thus either commit before the
//! fence (and are replicated or copied) or are cut (their client sees an
//! error: nothing of them was acknowledged).

use std::time::Duration;

use saas_core::TenantId;
use sqlx::{AssertSqlSafe, Executor, PgConnection};

use super::plan::Table;
use crate::error::TenancyError;
use crate::placement::Placement;
use crate::postgres::PgTenancy;
use crate::postgres::fence::Cutter;
use crate::postgres::sql::quote_ident;

/// The name of the policy that locks `tenant` out of a shared table.
fn policy(tenant: TenantId) -> String {
    format!("saas_moved_{}", tenant.simple())
}

/// Waits for and cuts the tenant's handles on the source, then locks the
/// source out for it.
pub(super) async fn lock_out(
    tenancy: &PgTenancy,
    from: &Placement,
    tables: &[Table],
    tenant: TenantId,
    grace: Duration,
) -> Result<(), TenancyError> {
    let cluster = tenancy.cluster(from.cluster())?;
    let runtime = cluster.config.runtime_role.quoted();
    let cutter = Cutter::new(tenant, grace, cluster.config.admin.get_username());
    // This process first: kept connections back through their reset, its
    // tenant pool closed and waited for.
    if let Some(affinity) = &cluster.affinity {
        affinity.release_tenant(tenant);
    }
    tenancy
        .inner
        .registry
        .close_within(tenant, cutter.remaining())
        .await;
    let admin = &cluster.admin;
    if let Placement::Database { database, .. } = from {
        admin
            .execute(AssertSqlSafe(format!(
                "REVOKE CONNECT, TEMPORARY ON DATABASE {} FROM {runtime}",
                database.quoted()
            )))
            .await?;
        cutter.wait_for_pool_sessions(admin).await?;
        cutter.cut_pool_sessions(admin).await?;
        // Any other session of the runtime role there (a pool of an older
        // version without the application name).
        sqlx::query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = $1 AND usename = $2 AND pid <> pg_backend_pid()",
        )
        .bind(database.as_str())
        .bind(cluster.config.runtime_role.as_str())
        .execute(admin)
        .await?;
        // A terminated session may still be finishing a commit: the fence's
        // WAL position is read only once every one has exited.
        return wait_for_exit(
            admin,
            database.as_str(),
            cluster.config.runtime_role.as_str(),
        )
        .await;
    }
    let mut tx = admin.begin().await?;
    cutter.hold_handle_lock(&mut tx, admin).await?;
    // The policies' DDL waits for other tenants' transactions on the
    // table; bounded like the rest of the fence.
    sqlx::query("SELECT set_config('lock_timeout', $1, true)")
        .bind(format!("{}ms", grace.as_millis().max(1)))
        .execute(&mut *tx)
        .await?;
    match from {
        Placement::Schema { schema, .. } => {
            tx.execute(AssertSqlSafe(format!(
                "REVOKE {} FROM {runtime}",
                schema.quoted()
            )))
            .await?;
        }
        _ => {
            for statement in policy_statements(tables, tenant, &runtime) {
                tx.execute(AssertSqlSafe(statement)).await?;
            }
        }
    }
    cutter.cut_lock_sessions(&mut tx, false).await?;
    tx.commit().await?;
    Ok(())
}

/// Waits (up to 10 s) until no session of `role` is left on `database`.
async fn wait_for_exit(
    admin: &sqlx::PgPool,
    database: &str,
    role: &str,
) -> Result<(), TenancyError> {
    for _ in 0..400 {
        let left: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND usename = $2",
        )
        .bind(database)
        .bind(role)
        .fetch_one(admin)
        .await?;
        if left == 0 {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    Err(TenancyError::Timeout(format!(
        "sessions of {role} on database {database} did not end within 10 s of being \
         terminated; resume the move to try again"
    )))
}

fn policy_statements(tables: &[Table], tenant: TenantId, runtime: &str) -> Vec<String> {
    let p = quote_ident(&policy(tenant));
    let mut statements = Vec::new();
    for table in tables {
        let Some(column) = &table.column else {
            continue;
        };
        let t = table.qualified();
        let c = quote_ident(column);
        statements.push(format!("DROP POLICY IF EXISTS {p} ON {t}"));
        statements.push(format!(
            "CREATE POLICY {p} ON {t} AS RESTRICTIVE FOR ALL TO {runtime} \
             USING ({c} <> '{tenant}'::uuid) WITH CHECK ({c} <> '{tenant}'::uuid)"
        ));
    }
    statements
}

/// Keeps a move's target closed to the runtime role until the cut-over:
/// a schema target's role is revoked, a database target's `CONNECT`. A row
/// target keeps the lock-out policies an earlier move away from it left
/// (a process whose record is that old must not write into the rows the
/// move is bringing). So a kept source the tenant moves back into stays
/// locked out while the move clears and fills it; [`restore`] opens it
/// under the fence, just before the catalog names it.
pub(super) async fn seal(tenancy: &PgTenancy, to: &Placement) -> Result<(), TenancyError> {
    let cluster = tenancy.cluster(to.cluster())?;
    let runtime = cluster.config.runtime_role.quoted();
    let statement = match to {
        Placement::Database { database, .. } => format!(
            "REVOKE CONNECT, TEMPORARY ON DATABASE {} FROM {runtime}",
            database.quoted()
        ),
        Placement::Schema { schema, .. } => format!("REVOKE {} FROM {runtime}", schema.quoted()),
        Placement::Shared { .. } => return Ok(()),
    };
    cluster.admin.execute(AssertSqlSafe(statement)).await?;
    Ok(())
}

/// Undoes [`lock_out`] (an abort: the tenant is served on its source
/// again) or [`seal`] (a cut-over: the tenant is served on its target).
pub(super) async fn restore(
    tenancy: &PgTenancy,
    from: &Placement,
    tables: &[Table],
    tenant: TenantId,
) -> Result<(), TenancyError> {
    let cluster = tenancy.cluster(from.cluster())?;
    let runtime = cluster.config.runtime_role.quoted();
    let admin = &cluster.admin;
    match from {
        Placement::Database { database, .. } => {
            admin
                .execute(AssertSqlSafe(format!(
                    "GRANT CONNECT, TEMPORARY ON DATABASE {} TO {runtime}",
                    database.quoted()
                )))
                .await?;
        }
        Placement::Schema { schema, .. } => {
            admin
                .execute(AssertSqlSafe(format!(
                    "GRANT {} TO {runtime}",
                    schema.quoted()
                )))
                .await?;
        }
        Placement::Shared { .. } => {
            let mut conn = admin.acquire().await?;
            drop_policies(&mut conn, tables, tenant).await?;
        }
    }
    Ok(())
}

/// Drops the tenant's row lock-out policies where they exist (after an
/// abort, or when the tenant is moved back). Tables without one are not
/// touched: `DROP POLICY` locks its table, which other tenants are using.
pub(super) async fn drop_policies(
    conn: &mut PgConnection,
    tables: &[Table],
    tenant: TenantId,
) -> Result<(), TenancyError> {
    let name = policy(tenant);
    let with: Vec<(String, String)> = sqlx::query_as(
        "SELECT schemaname::text, tablename::text FROM pg_policies WHERE policyname = $1",
    )
    .bind(&name)
    .fetch_all(&mut *conn)
    .await?;
    let p = quote_ident(&name);
    for table in tables
        .iter()
        .filter(|t| t.column.is_some() && with.contains(&(t.schema.clone(), t.name.clone())))
    {
        conn.execute(AssertSqlSafe(format!(
            "DROP POLICY IF EXISTS {p} ON {}",
            table.qualified()
        )))
        .await?;
    }
    Ok(())
}
