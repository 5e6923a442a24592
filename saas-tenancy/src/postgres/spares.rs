//! Spare schemas: a schema tenant's storage made before anyone signs up.
//!
//! Why: provisioning a schema tenant is mostly DDL — its role, schema,
//! grants, sqlx's ledger table and every table of the tenant migrations —
//! about 8 ms of server time per tenant at 10,000 tenants (BENCHMARKS.md),
//! all of it on the sign-up path. A spare is exactly that storage, made
//! ahead of time under a neutral name (`saas_spare_<32 hex digits>`, a
//! role of the same name, default privileges and migrations applied) and
//! recorded in `saas_spare_schemas` with a fingerprint of the migrations
//! that made it (every version and checksum). A sign-up then claims the
//! oldest spare with the tenancy's fingerprint, renames schema and role to
//! the tenant's names and grants the role to the runtime role, in the
//! provisioning transaction: three catalog updates instead of the DDL.
//! Renaming keeps everything that refers to them by OID — the grants, the
//! default privileges, sqlx's ledger inside the schema. (What a migration
//! stored as text keeps the spare's name: a `SET search_path FROM
//! CURRENT` function, a `current_schema()` saved in a row.)
//!
//! Safety: a spare is in no tenant's record and its role is granted to
//! nobody until claimed, so nothing can reach it — not even SQL injected
//! into a handle, which can `SET ROLE` to any role the runtime role is a
//! member of — and it holds only what the migrations put there; a
//! claim and the rename commit together with the tenant's migrations, or
//! not at all (the spare stays a spare); concurrent sign-ups skip each
//! other's spares (`FOR UPDATE SKIP LOCKED`); a spare is only claimed for
//! a tenant whose schema and role do not exist yet. A spare made by other
//! migrations than the tenancy's (an older version, an edited one) is
//! never claimed: the sign-up provisions from scratch, and the next
//! [`PgTenancy::prepare_spare_schemas`] replaces it. A claim that fails
//! all the same (a spare's schema dropped by hand, sqlx refusing its
//! ledger) is undone to a savepoint, the spare dropped, and the tenant
//! provisioned from scratch in the same transaction.

use std::sync::atomic::{AtomicBool, Ordering};

use sqlx::migrate::Migrator;
use sqlx::{AssertSqlSafe, Connection, Executor, PgConnection};
use uuid::Uuid;

use super::{Cluster, PgTenancy, lifecycle, provision, sql};
use crate::error::TenancyError;
use crate::ident::SqlIdent;
use crate::placement::{ClusterName, SqlName, TenantObjectName};

/// The table that lists a cluster's spares, in the admin connection's
/// schema (next to the catalog and the migration ledger).
pub(super) const SPARES_TABLE: &str = "saas_spare_schemas";

/// The list, and the index a claim reads it by (without it every claim
/// sorts the whole list: 2 ms of a sign-up with 10,000 spares).
const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS saas_spare_schemas (\
    name text PRIMARY KEY, migrations bigint NOT NULL, created_at timestamptz NOT NULL); \
    CREATE INDEX IF NOT EXISTS saas_spare_schemas_claim \
    ON saas_spare_schemas (migrations, created_at, name)";

/// Takes the oldest spare made by the migrations of fingerprint `$1` for
/// the tenant schema `$2`, unless that schema or role exists already (a
/// retried provisioning): the row is deleted in the provisioning
/// transaction, so a rollback returns the spare.
const CLAIM: &str = "DELETE FROM saas_spare_schemas WHERE name = (\
    SELECT name FROM saas_spare_schemas WHERE migrations = $1 \
    ORDER BY created_at, name LIMIT 1 FOR UPDATE SKIP LOCKED) \
    AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = $2) \
    AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = $2) \
    RETURNING name";

/// Serialises preparations of spares between processes (a session lock on
/// the preparing connection).
const PREPARE_LOCK: &str =
    "SELECT pg_catalog.pg_advisory_lock(pg_catalog.hashtext('saas_tenancy.spares'))";

/// A spare's name (schema and role): only ever made from a fresh UUID or
/// parsed back from that exact shape, so it never carries SQL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SpareName(String);

impl SpareName {
    const PREFIX: &'static str = "saas_spare_";

    fn new() -> Self {
        Self(format!("{}{}", Self::PREFIX, Uuid::new_v4().simple()))
    }

    fn parse(s: &str) -> Result<Self, TenancyError> {
        let valid = s.strip_prefix(Self::PREFIX).is_some_and(|hex| {
            hex.len() == 32
                && hex
                    .chars()
                    .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
        });
        if valid {
            Ok(Self(s.to_owned()))
        } else {
            Err(TenancyError::Corrupt(format!(
                "{SPARES_TABLE} lists {s:?}, which is not of the form {}<32 hex digits>",
                Self::PREFIX
            )))
        }
    }
}

impl SqlName for SpareName {
    fn as_str(&self) -> &str {
        &self.0
    }
}

/// Whether a cluster's spares table has been seen (it is never dropped,
/// so once seen a provisioning goes straight to the claim).
#[derive(Debug, Default)]
pub(super) struct SpareTable {
    seen: AtomicBool,
}

/// What [`PgTenancy::prepare_spare_schemas`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct SpareReport {
    /// Spares made by this call.
    pub created: usize,
    /// Spares of other migrations than the tenancy's, dropped.
    pub dropped_stale: usize,
    /// Spares ready for sign-ups when the call returned.
    pub ready: usize,
}

/// A fingerprint of the tenant migrations a spare is made by: FNV-1a over
/// every up migration's version and checksum, in order — so an added,
/// removed or edited migration changes it (sqlx would refuse the spare's
/// ledger), and it is the same in every process and build.
pub(super) fn fingerprint(migrator: Option<&Migrator>) -> i64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = OFFSET;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            hash = (hash ^ u64::from(*b)).wrapping_mul(PRIME);
        }
    };
    for m in migrator
        .into_iter()
        .flat_map(|m| m.iter())
        .filter(|m| m.migration_type.is_up_migration())
    {
        feed(&m.version.to_le_bytes());
        feed(&m.checksum);
    }
    i64::from_ne_bytes(hash.to_ne_bytes())
}

/// Provisions `schema` from a spare, in the provisioning transaction open
/// on `tx` (its search path not set yet): claims the oldest spare made by
/// `migrator`, renames it to the tenant's schema and role, grants the role
/// to the runtime role and runs the migrations (which find nothing to
/// apply). `false` when there is no such spare or the tenant's storage
/// exists already — or when the claim failed: then it is undone to a
/// savepoint, the spare dropped (the next sign-up would fail on it too),
/// and the caller provisions from scratch in the same transaction.
pub(super) async fn claim(
    cluster: &Cluster,
    tx: &mut PgConnection,
    schema: &TenantObjectName,
    migrator: Option<&Migrator>,
) -> Result<bool, TenancyError> {
    if !cluster.spares.seen.load(Ordering::Acquire) {
        let present: bool =
            sqlx::query_scalar("SELECT pg_catalog.to_regclass('saas_spare_schemas') IS NOT NULL")
                .fetch_one(&mut *tx)
                .await?;
        if !present {
            return Ok(false);
        }
        cluster.spares.seen.store(true, Ordering::Release);
    }
    let claimed: Option<String> = sqlx::query_scalar(CLAIM)
        .bind(fingerprint(migrator))
        .bind(schema.as_str())
        .fetch_optional(&mut *tx)
        .await?;
    let Some(claimed) = claimed else {
        return Ok(false);
    };
    // Its row is deleted already: whatever happens next, no other sign-up
    // takes this spare.
    let spare = match SpareName::parse(&claimed) {
        Ok(spare) => spare,
        Err(error) => {
            tracing::warn!(spare = %claimed, %error, "a listed spare schema was skipped");
            return Ok(false);
        }
    };
    let Err(error) = rename(&spare, schema, &cluster.config.runtime_role, migrator, tx).await
    else {
        return Ok(true);
    };
    tracing::warn!(spare = %claimed, %error,
        "a spare schema could not be claimed: dropped, provisioning from scratch");
    tx.execute("ROLLBACK TO SAVEPOINT saas_spare").await?;
    lifecycle::drop_schema(tx, &spare).await?;
    Ok(false)
}

/// Renames `spare` to the tenant's schema and role, grants the role to
/// `runtime`, sets the search path and runs the migrations, after a
/// savepoint `saas_spare` (left open: the commit releases it).
async fn rename(
    spare: &SpareName,
    schema: &TenantObjectName,
    runtime: &SqlIdent,
    migrator: Option<&Migrator>,
    tx: &mut PgConnection,
) -> Result<(), TenancyError> {
    let (from, to) = (spare.quoted(), schema.quoted());
    // The savepoint goes in the same round trip: a failure after it is
    // undone to it (the transaction is left as the claim left it).
    let statements = [
        "SAVEPOINT saas_spare".to_owned(),
        format!("ALTER SCHEMA {from} RENAME TO {to}"),
        format!("ALTER ROLE {from} RENAME TO {to}"),
        sql::grant_tenant_role(schema, runtime),
        format!("SET LOCAL search_path TO {to}"),
    ];
    sqlx::raw_sql(AssertSqlSafe(statements.join("; ")))
        .execute(&mut *tx)
        .await?;
    if let Some(migrator) = migrator {
        provision::migrate_schema(migrator, tx).await?;
    }
    Ok(())
}

impl PgTenancy {
    /// Makes spare schemas on `cluster` until `count` are ready for
    /// sign-ups, so that [`provision`](Self::provision) of a schema tenant
    /// claims one and renames it to the tenant's schema and role instead
    /// of creating role, schema, grants and tables on the sign-up path.
    ///
    /// A spare is the storage a schema tenant's provisioning makes —
    /// schema and role `saas_spare_<32 hex digits>`, default privileges,
    /// the tenant migrations applied — listed in `saas_spare_schemas` (in
    /// the admin connection's schema), in no tenant's record, its role
    /// granted to the runtime role only when a sign-up claims it: nothing
    /// reaches it before, not even SQL injected into a handle. The claim,
    /// the renames and the grant commit with the tenant's provisioning or
    /// not at all; concurrent sign-ups take different spares; a spare is
    /// claimed only by a tenancy with the same tenant migrations (a
    /// fingerprint of every version and checksum), and only for a tenant
    /// whose schema and role do not exist yet. Spares made by other
    /// migrations are dropped here first. Returns what it did.
    ///
    /// Run it from a periodic job (like
    /// [`migrate_tenants`](Self::migrate_tenants)), sized to the sign-ups
    /// expected between two runs: a sign-up that finds no spare
    /// provisions from scratch, as without spares. Each spare costs what a
    /// schema tenant's provisioning costs, off the sign-up path (and about
    /// as much disk). Concurrent calls on one cluster take turns (an
    /// advisory lock on a connection of their own).
    ///
    /// ```no_run
    /// # async fn run(tenancy: saas_tenancy::postgres::PgTenancy)
    /// # -> Result<(), saas_tenancy::TenancyError> {
    /// let main = saas_tenancy::ClusterName::new("main")?;
    /// // Every minute, say: keep 50 sign-ups' worth of schemas ready.
    /// let report = tenancy.prepare_spare_schemas(&main, 50).await?;
    /// assert!(report.ready >= 50);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// [`TenancyError::UnknownCluster`]; a failing tenant migration as
    /// [`TenancyError::InvalidInput`], or a database error (the spare being
    /// made is rolled back, those made before it stay).
    pub async fn prepare_spare_schemas(
        &self,
        cluster: &ClusterName,
        count: usize,
    ) -> Result<SpareReport, TenancyError> {
        let c = self.cluster(cluster)?;
        // A connection of its own: the session lock goes with it.
        let mut conn = PgConnection::connect_with(&c.config.admin).await?;
        let result = self.prepare_on(c, &mut conn, count).await;
        let _ = conn.close().await;
        result
    }

    async fn prepare_on(
        &self,
        cluster: &Cluster,
        conn: &mut PgConnection,
        count: usize,
    ) -> Result<SpareReport, TenancyError> {
        conn.execute(PREPARE_LOCK).await?;
        sqlx::raw_sql(CREATE_TABLE).execute(&mut *conn).await?;
        cluster.spares.seen.store(true, Ordering::Release);
        let migrator = self.inner.tenant_migrator.as_deref();
        let made_by = fingerprint(migrator);
        let stale: Vec<String> =
            sqlx::query_scalar("SELECT name FROM saas_spare_schemas WHERE migrations <> $1")
                .bind(made_by)
                .fetch_all(&mut *conn)
                .await?;
        let mut report = SpareReport::default();
        for name in stale {
            if drop_spare(conn, &SpareName::parse(&name)?).await? {
                report.dropped_stale += 1;
            }
        }
        let ready: i64 =
            sqlx::query_scalar("SELECT count(*) FROM saas_spare_schemas WHERE migrations = $1")
                .bind(made_by)
                .fetch_one(&mut *conn)
                .await?;
        report.ready = usize::try_from(ready).unwrap_or(0);
        while report.ready < count {
            let spare = SpareName::new();
            let mut tx = conn.begin().await?;
            sqlx::query(
                "INSERT INTO saas_spare_schemas (name, migrations, created_at) VALUES ($1, $2, $3)",
            )
            .bind(spare.as_str())
            .bind(made_by)
            .bind(self.inner.clock.now())
            .execute(&mut *tx)
            .await?;
            // Not granted to the runtime role until claimed: nothing reaches
            // a spare, and spares do not lengthen the runtime role's list of
            // memberships (see README "Known gaps").
            provision::create_schema(&mut tx, &spare, None, migrator).await?;
            tx.commit().await?;
            report.created += 1;
            report.ready += 1;
        }
        Ok(report)
    }

    /// Drops the spare schemas of `cluster` (and their roles); returns
    /// how many. It waits for a preparation running elsewhere to end; a
    /// spare a sign-up is claiming at that moment is left to the sign-up
    /// (it becomes the tenant's, or stays a spare if the sign-up fails).
    ///
    /// # Errors
    /// [`TenancyError::UnknownCluster`]; a database error (the spares
    /// dropped before it stay dropped).
    pub async fn drop_spare_schemas(&self, cluster: &ClusterName) -> Result<usize, TenancyError> {
        let c = self.cluster(cluster)?;
        // A connection of its own: the preparation lock goes with it.
        let mut conn = PgConnection::connect_with(&c.config.admin).await?;
        let result = drop_all(&mut conn).await;
        let _ = conn.close().await;
        result
    }
}

/// Drops every spare not being claimed, under the preparation lock.
async fn drop_all(conn: &mut PgConnection) -> Result<usize, TenancyError> {
    conn.execute(PREPARE_LOCK).await?;
    let present: bool =
        sqlx::query_scalar("SELECT pg_catalog.to_regclass('saas_spare_schemas') IS NOT NULL")
            .fetch_one(&mut *conn)
            .await?;
    if !present {
        return Ok(0);
    }
    let names: Vec<String> = sqlx::query_scalar("SELECT name FROM saas_spare_schemas")
        .fetch_all(&mut *conn)
        .await?;
    let mut dropped = 0;
    for name in names {
        if drop_spare(conn, &SpareName::parse(&name)?).await? {
            dropped += 1;
        }
    }
    Ok(dropped)
}

/// Drops one spare — its row, schema and role — in one transaction;
/// `false` when a sign-up claimed it first (its row is gone or locked).
async fn drop_spare(conn: &mut PgConnection, spare: &SpareName) -> Result<bool, TenancyError> {
    let mut tx = conn.begin().await?;
    let taken: Option<String> = sqlx::query_scalar(
        "DELETE FROM saas_spare_schemas WHERE name = (SELECT name FROM saas_spare_schemas \
         WHERE name = $1 FOR UPDATE SKIP LOCKED) RETURNING name",
    )
    .bind(spare.as_str())
    .fetch_optional(&mut *tx)
    .await?;
    if taken.is_none() {
        return Ok(false);
    }
    lifecycle::drop_schema(&mut tx, spare).await?;
    tx.commit().await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spare_names_have_one_shape() {
        let made = SpareName::new();
        assert_eq!(SpareName::parse(made.as_str()).unwrap(), made);
        assert_eq!(made.quoted(), format!("\"{}\"", made.as_str()));
        for bad in [
            "saas_spare_",
            "t_0123456789abcdef0123456789abcdef",
            "saas_spare_0123456789ABCDEF0123456789abcdef",
            "saas_spare_0123456789abcdef0123456789abcde\"",
            "saas_spare_0123456789abcdef0123456789abcdef0",
        ] {
            assert!(SpareName::parse(bad).is_err(), "{bad}");
        }
    }
}
