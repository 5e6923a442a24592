//! Tenant migrations across the fleet: bounded fan-out, canaries first,
//! a per-tenant ledger, skip-and-report, resumable.

use sqlx::{AssertSqlSafe, Connection, Executor, PgConnection};

use super::audit::current_version;
use super::{PgTenancy, sql, tenant_database_options};
use crate::error::TenancyError;
use crate::fleet::{self, Attempt, LedgerEntry, is_migratable};
use crate::migration::{MigrationOptions, MigrationReport};
use crate::placement::Placement;
use crate::record::{ListOptions, TenantRecord};

const LEDGER: &str = "CREATE TABLE IF NOT EXISTS saas_tenant_migrations (\
    id bigserial PRIMARY KEY, tenant_id uuid NOT NULL, version bigint, \
    status text NOT NULL CHECK (status IN ('applied', 'current', 'failed')), \
    error text, started_at timestamptz NOT NULL, finished_at timestamptz NOT NULL)";

impl PgTenancy {
    /// Applies the tenant migrations to every active or suspended schema
    /// and database tenant.
    ///
    /// - Each tenant migrates under its lock, serialised with every other
    ///   operation on it (provisioning, status changes, deletion, export,
    ///   import): its status is read again under the lock, and a tenant
    ///   deleted (or otherwise no longer active or suspended) since the run
    ///   listed it is skipped and reported as not attempted.
    /// - Each tenant migrates in one transaction (a failure leaves it
    ///   unchanged), and its result (tenant, version, status, error, start
    ///   and finish from the injected clock) is appended to the
    ///   `saas_tenant_migrations` ledger of its cluster — a table of the
    ///   admin connection's schema that is the library's bookkeeping, never
    ///   tenant data (not exported, imported or deleted with a tenant, not
    ///   audited).
    /// - A run killed at any point is resumed by running again: each
    ///   tenant's `_sqlx_migrations` table says what it has, so nothing is
    ///   applied twice.
    /// - After the canaries (one at a time), at most
    ///   [`MigrationOptions::concurrency`] tenants migrate at once, and never
    ///   more than the [`PoolLimits`](super::PoolLimits) budget: each tenant
    ///   in flight holds its own lock connection and migration connection.
    pub async fn migrate_tenants(
        &self,
        options: MigrationOptions,
    ) -> Result<MigrationReport, TenancyError> {
        for cluster in self.inner.clusters.values() {
            let mut tx = cluster.admin.begin().await?;
            tx.execute("SELECT pg_advisory_xact_lock(hashtext('saas_tenancy.ledger'))")
                .await?;
            tx.execute(LEDGER).await?;
            tx.commit().await?;
        }
        let tenants = self.migratable_tenants().await?;
        // Tied to the connection budget: a tenant in flight holds
        // connections of its own (its lock, its migration), so a run never
        // opens more of them than the budget the pool registry gives all
        // tenant pools.
        let limit = options
            .concurrency
            .min(self.inner.registry.limits().budget as usize);
        fleet::run(&tenants, &options, limit, |record| {
            self.migrate_logged(record)
        })
        .await
    }

    async fn migratable_tenants(&self) -> Result<Vec<TenantRecord>, TenancyError> {
        let mut all = self
            .inner
            .catalog
            .list_all(&ListOptions::default().with_limit(1000))
            .await?;
        all.retain(|t| t.placement.object_name().is_some() && is_migratable(t.status));
        Ok(all)
    }

    /// Migrates one tenant under its lock and appends the result to the
    /// ledger (a failure to append is the tenant's failure); `None` when
    /// the tenant is gone or no longer migratable (never an `Err`: a
    /// failure here is the tenant's).
    async fn migrate_logged(&self, listed: &TenantRecord) -> Result<Attempt, TenancyError> {
        let started = self.inner.clock.now();
        let outcome = match self.lock_tenant(listed.id).await {
            Ok((lock, record)) => {
                // The record as it is now, under the lock: a delete that
                // ran since the listing has dropped the storage.
                if !is_migratable(record.status) {
                    lock.release().await;
                    tracing::info!(tenant = %record.id, status = %record.status,
                        "tenant migration skipped: no longer active or suspended");
                    return Ok(Attempt::Gone);
                }
                let outcome = self.migrate_one(&record).await;
                lock.release().await;
                outcome
            }
            Err(TenancyError::TenantNotFound(_)) => return Ok(Attempt::Gone),
            Err(e) => Err(e),
        };
        let entry = LedgerEntry::new(listed.id, &outcome, started, self.inner.clock.now());
        let logged = match self.cluster(listed.placement.cluster()) {
            Ok(cluster) => log(&cluster.admin, entry).await,
            Err(e) => Err(e),
        };
        Ok(Attempt::Done(logged.and(outcome)))
    }

    #[tracing::instrument(name = "tenancy.migrate_tenant", skip_all, fields(tenant_id = %record.id, backend = "postgres"))]
    async fn migrate_one(&self, record: &TenantRecord) -> Result<(i64, bool), TenancyError> {
        let Some(migrator) = self.inner.tenant_migrator.clone() else {
            return Ok((0, false));
        };
        crate::catalog::check_placement(record)?;
        let cluster = self.cluster(record.placement.cluster())?;
        match &record.placement {
            Placement::Schema { schema, .. } => {
                // Pooled admin connections: the search path is transaction-local.
                let mut conn = cluster.admin.acquire().await?;
                let s = schema.quoted();
                let ledger = format!("{s}._sqlx_migrations");
                let grants = Grants::new(&s, &s);
                migrate_in(&mut conn, &migrator, Some(&s), &ledger, &grants).await
            }
            Placement::Database { database, .. } => {
                let options = tenant_database_options(cluster.config.admin.clone(), database);
                let mut conn = PgConnection::connect_with(&options).await?;
                let runtime = cluster.config.runtime_role.quoted();
                let grants = Grants::new("public", &runtime);
                let result =
                    migrate_in(&mut conn, &migrator, None, "_sqlx_migrations", &grants).await;
                let _ = conn.close().await;
                result
            }
            Placement::Shared { .. } => Ok((0, false)),
        }
    }
}

/// Migrates one tenant in one transaction on `conn` (the caller holds the
/// tenant's lock): returns the version reached and whether anything was
/// applied.
async fn migrate_in(
    conn: &mut PgConnection,
    migrator: &sqlx::migrate::Migrator,
    search_path: Option<&str>,
    ledger: &str,
    grants: &Grants,
) -> Result<(i64, bool), TenancyError> {
    let mut tx = conn.begin().await?;
    if let Some(s) = search_path {
        tx.execute(AssertSqlSafe(format!("SET LOCAL search_path TO {s}")))
            .await?;
    }
    let before = current_version(&mut tx, ledger).await?.unwrap_or(0);
    migrator
        .run_direct(None, &mut *tx, false)
        .await
        .map_err(|e| TenancyError::InvalidInput(format!("tenant migration failed: {e}")))?;
    let after = current_version(&mut tx, ledger).await?.unwrap_or(0);
    if !grants.in_place(&mut tx).await? {
        for statement in sql::grant_schema_objects(&grants.schema, &grants.role) {
            tx.execute(AssertSqlSafe(statement)).await?;
        }
    }
    tx.commit().await?;
    Ok((after, after > before))
}

/// Who must be able to use what a tenant's migrations create: `role`, the
/// tables and sequences of `schema` (both quoted).
pub(super) struct Grants {
    schema: String,
    role: String,
}

impl Grants {
    fn new(schema: &str, role: &str) -> Self {
        Self {
            schema: schema.to_owned(),
            role: role.to_owned(),
        }
    }

    /// Whether the admin role's default privileges in the schema already
    /// give `role` what the migrations create (provisioning sets them
    /// before the first migration): then the `GRANT … ON ALL … IN SCHEMA`
    /// statements are not run — they scan the whole `pg_class`, which grows
    /// with every tenant (24 ms per tenant at 10,000 schema tenants, most
    /// of a fleet migration's time). A tenant provisioned before default
    /// privileges existed gets both once, and is found in place after.
    async fn in_place(&self, conn: &mut PgConnection) -> Result<bool, TenancyError> {
        let granted: i64 = sqlx::query_scalar(
            "SELECT pg_catalog.count(*) FROM pg_catalog.pg_default_acl d \
             WHERE d.defaclrole = (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = current_user) \
             AND d.defaclnamespace = $1::pg_catalog.regnamespace \
             AND d.defaclobjtype IN ('r', 'S') \
             AND EXISTS (SELECT 1 FROM pg_catalog.aclexplode(d.defaclacl) a \
                 WHERE a.grantee = $2::pg_catalog.regrole)",
        )
        .bind(&self.schema)
        .bind(&self.role)
        .fetch_one(&mut *conn)
        .await?;
        Ok(granted == 2)
    }
}

/// Appends `entry` to the ledger; both times come from the injected clock
/// (never the server's `now()`).
async fn log(pool: &sqlx::PgPool, entry: LedgerEntry) -> Result<(), TenancyError> {
    sqlx::query(
        "INSERT INTO saas_tenant_migrations \
         (tenant_id, version, status, error, started_at, finished_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(entry.tenant)
    .bind(entry.version)
    .bind(entry.status)
    .bind(entry.error)
    .bind(entry.started)
    .bind(entry.finished)
    .execute(pool)
    .await?;
    Ok(())
}
