//! The leak harness's PostgreSQL target: a [`PgTenancy`] and one of the
//! host's tenant tables.

use async_trait::async_trait;
use saas_core::{TenantContext, TenantId};
use sqlx::{AssertSqlSafe, Executor, PgConnection};

use super::leak::{LeakRow, LeakStatements, LeakTarget, SessionTamper};
use crate::placement::{ClusterName, Placement};
use crate::postgres::{PgTenancy, PgTenantConn, PgTenantTx, SqlIdent};

/// Drives a [`PgTenancy`] on a table with a `uuid` tenant column, a
/// `bigint` key and a `text` value (names given by the host, validated).
#[derive(Debug)]
pub struct PgLeakTarget {
    tenancy: PgTenancy,
    cluster: ClusterName,
    sql: LeakStatements,
    table: String,
}

impl PgLeakTarget {
    /// A target for `table(tenant_column, key_column, value_column)`;
    /// `cluster` is where the unscoped check looks.
    pub fn new(
        tenancy: PgTenancy,
        cluster: ClusterName,
        table: &SqlIdent,
        tenant_column: &SqlIdent,
        key_column: &SqlIdent,
        value_column: &SqlIdent,
    ) -> Self {
        let t = table.quoted();
        let sql = LeakStatements::new(
            &t,
            &tenant_column.quoted(),
            &key_column.quoted(),
            &value_column.quoted(),
            |n| format!("${n}"),
        );
        Self {
            tenancy,
            cluster,
            sql,
            table: t,
        }
    }
}

fn text(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// A step's scoped handle: a connection — or, in transaction-pooling mode
/// (where `acquire` is refused), a transaction committed by `finish`. Raw
/// SQL in that transaction leaves the same session state on the server
/// connection as through a connection.
enum StepHandle {
    Conn(PgTenantConn),
    Tx(PgTenantTx),
}

impl StepHandle {
    async fn open(tenancy: &PgTenancy, ctx: &TenantContext) -> Result<Self, String> {
        if tenancy.transaction_pooling() {
            return tenancy.begin(ctx).await.map(Self::Tx).map_err(text);
        }
        tenancy.acquire(ctx).await.map(Self::Conn).map_err(text)
    }

    fn on_shared_connection(&self) -> bool {
        match self {
            Self::Conn(c) => c.on_shared_connection(),
            Self::Tx(t) => t.on_shared_connection(),
        }
    }

    fn placement(&self) -> &Placement {
        match self {
            Self::Conn(c) => c.placement(),
            Self::Tx(t) => t.placement(),
        }
    }

    async fn finish(self) -> Result<(), String> {
        match self {
            Self::Conn(_) => Ok(()),
            Self::Tx(t) => t.commit().await.map_err(text),
        }
    }
}

impl std::ops::Deref for StepHandle {
    type Target = PgConnection;
    fn deref(&self) -> &PgConnection {
        match self {
            Self::Conn(c) => c,
            Self::Tx(t) => t,
        }
    }
}

impl std::ops::DerefMut for StepHandle {
    fn deref_mut(&mut self) -> &mut PgConnection {
        match self {
            Self::Conn(c) => c,
            Self::Tx(t) => t,
        }
    }
}

/// Runs a tenant-less count in a transaction of its own: behind a
/// transaction pooler, a statement outside one may be prepared on one
/// server connection and run on another.
async fn count_in_transaction(pool: &sqlx::PgPool, sql: &str) -> Result<i64, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let counted = sqlx::query_scalar::<_, i64>(AssertSqlSafe(sql.to_owned()))
        .fetch_one(&mut *tx)
        .await;
    tx.rollback().await?;
    counted
}

/// Runs `sql` on a tenant-less runtime connection and expects PostgreSQL
/// to refuse it with `code`: 0 rows seen. Rows read instead are an error.
async fn expect_refused(
    pool: &sqlx::PgPool,
    sql: String,
    code: &str,
    what: &str,
) -> Result<i64, String> {
    match count_in_transaction(pool, &sql).await {
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some(code) => Ok(0),
        Ok(n) => Err(format!(
            "a connection without a tenant ran `{sql}` ({n} rows) instead of getting {what}"
        )),
        Err(e) => Err(format!("`{sql}`: expected {what} ({code}), got {e}")),
    }
}

#[async_trait]
impl LeakTarget for PgLeakTarget {
    async fn insert(
        &self,
        ctx: &TenantContext,
        claimed: TenantId,
        key: i64,
        value: &str,
    ) -> Result<bool, String> {
        let mut tx = self.tenancy.begin(ctx).await.map_err(text)?;
        let result = sqlx::query(AssertSqlSafe(self.sql.insert.as_str()))
            .bind(claimed)
            .bind(key)
            .bind(value)
            .execute(&mut *tx)
            .await;
        match result {
            Ok(_) => {
                tx.commit().await.map_err(text)?;
                Ok(true)
            }
            // 42501: the row-level security policy (WITH CHECK) refused it.
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42501") => Ok(false),
            Err(e) => Err(e.to_string()),
        }
    }

    async fn read_all(&self, ctx: &TenantContext) -> Result<Vec<LeakRow>, String> {
        let mut conn = StepHandle::open(&self.tenancy, ctx).await?;
        let role = match conn.placement() {
            Placement::Schema { schema, .. } => Some(schema.as_str().to_owned()),
            _ => None,
        };
        let left: String = sqlx::query_scalar(LEFTOVERS)
            .bind(role)
            .fetch_one(&mut *conn)
            .await
            .map_err(text)?;
        if !left.is_empty() {
            return Err(format!(
                "{} met session state an earlier handle left: {left}",
                ctx.slug()
            ));
        }
        let rows = sqlx::query_as(AssertSqlSafe(self.sql.read_all.as_str()))
            .fetch_all(&mut *conn)
            .await
            .map_err(text)?;
        conn.finish().await?;
        Ok(rows)
    }

    async fn tamper(
        &self,
        ctx: &TenantContext,
        tamper: SessionTamper,
        via_transaction: bool,
    ) -> Result<(), String> {
        if via_transaction {
            let mut tx = self.tenancy.begin(ctx).await.map_err(text)?;
            if !tx.on_shared_connection() {
                // A tenant's own pool never serves another tenant: what its
                // raw SQL leaves meets only its own later requests (see
                // `PgTenantConn`), which is not what this harness checks.
                return Ok(());
            }
            let placement = tx.placement().clone();
            let ended = self
                .tamper_on(&mut tx, ctx, &placement, tamper, true)
                .await?;
            if !ended {
                tx.commit().await.map_err(text)?;
            }
        } else {
            let mut conn = StepHandle::open(&self.tenancy, ctx).await?;
            if !conn.on_shared_connection() {
                return Ok(());
            }
            let placement = conn.placement().clone();
            let in_transaction = matches!(conn, StepHandle::Tx(_));
            let ended = self
                .tamper_on(&mut conn, ctx, &placement, tamper, in_transaction)
                .await?;
            if !ended {
                conn.finish().await?;
            }
        }
        // What raw SQL leaves on a session handle's connection stays with
        // its tenant while the connection is kept for it, by design (see
        // `PgTenancyBuilder::connection_affinity`): hand the kept
        // connections back, through the full reset, so that they are
        // checked the way another tenant would meet them.
        self.tenancy.release_kept_connections();
        Ok(())
    }

    async fn read_key(&self, ctx: &TenantContext, key: i64) -> Result<Vec<LeakRow>, String> {
        let mut tx = self.tenancy.begin(ctx).await.map_err(text)?;
        let rows = sqlx::query_as(AssertSqlSafe(self.sql.read_key.as_str()))
            .bind(key)
            .fetch_all(&mut *tx)
            .await
            .map_err(text)?;
        tx.commit().await.map_err(text)?;
        Ok(rows)
    }

    async fn update_all(&self, ctx: &TenantContext, value: &str) -> Result<u64, String> {
        let mut conn = StepHandle::open(&self.tenancy, ctx).await?;
        let done = sqlx::query(AssertSqlSafe(self.sql.update_all.as_str()))
            .bind(value)
            .execute(&mut *conn)
            .await
            .map_err(text)?;
        conn.finish().await?;
        Ok(done.rows_affected())
    }

    async fn delete_key(&self, ctx: &TenantContext, key: i64) -> Result<u64, String> {
        let mut tx = self.tenancy.begin(ctx).await.map_err(text)?;
        let done = sqlx::query(AssertSqlSafe(self.sql.delete_key.as_str()))
            .bind(key)
            .execute(&mut *tx)
            .await
            .map_err(text)?;
        tx.commit().await.map_err(text)?;
        Ok(done.rows_affected())
    }

    async fn unscoped_count(&self, tenants: &[TenantContext]) -> Result<i64, String> {
        let pool = self.tenancy.runtime_pool(&self.cluster).map_err(text)?;
        // Row tenants: the shared table, under RLS with no tenant setting.
        let mut seen = match count_in_transaction(pool, &self.sql.count).await {
            Ok(n) => n,
            // No such table where a tenant-less connection looks: nothing seen.
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P01") => 0,
            Err(e) => return Err(e.to_string()),
        };
        for ctx in tenants {
            let record = self
                .tenancy
                .catalog()
                .get(ctx.tenant_id())
                .await
                .map_err(text)?
                .ok_or_else(|| format!("tenant {} is not in the catalog", ctx.tenant_id()))?;
            seen += match &record.placement {
                Placement::Shared { .. } => 0,
                // The runtime role holds no privilege of its own on a
                // tenant schema (NOINHERIT): reading it by name is refused.
                Placement::Schema { schema, .. } => {
                    let sql = format!("SELECT count(*) FROM {}.{}", schema.quoted(), self.table);
                    expect_refused(pool, sql, "42501", "permission denied").await?
                }
                Placement::Database { database, .. } => {
                    // Not reachable from the shared database's connections...
                    let sql = format!(
                        "SELECT count(*) FROM {}.public.{}",
                        database.quoted(),
                        self.table
                    );
                    let refused =
                        expect_refused(pool, sql, "0A000", "cross-database reference").await?;
                    // ...and no role without a grant may connect to it.
                    let mut tx = pool.begin().await.map_err(text)?;
                    let public: bool = sqlx::query_scalar(
                        "SELECT has_database_privilege('public', $1, 'CONNECT')",
                    )
                    .bind(database.as_str())
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(text)?;
                    tx.rollback().await.map_err(text)?;
                    if public {
                        return Err(format!("PUBLIC may connect to tenant database {database}"));
                    }
                    refused
                }
            };
        }
        Ok(seen)
    }

    async fn clear(&self, ctx: &TenantContext) -> Result<(), String> {
        let mut tx = self.tenancy.begin(ctx).await.map_err(text)?;
        sqlx::query(AssertSqlSafe(self.sql.clear.as_str()))
            .execute(&mut *tx)
            .await
            .map_err(text)?;
        tx.commit().await.map_err(text)
    }
}

/// What a scoped connection shows of state an earlier user left (see
/// [`SessionTamper`]), as a comma-separated list; empty when clean. `$1`:
/// the role the handle should run as (`NULL`: the login role). It runs
/// after the scope is set, so it cannot see a stray tenant setting or
/// search path (the scope overrides both); what those would do shows in
/// the rows the harness reads.
const LEFTOVERS: &str = "SELECT concat_ws(', ', \
    CASE WHEN current_setting('saas_leak.mark', true) <> '' THEN 'a custom setting' END, \
    CASE WHEN current_setting('TimeZone') <> (SELECT reset_val FROM pg_settings \
        WHERE name = 'TimeZone') THEN 'a time zone' END, \
    CASE WHEN current_setting('default_transaction_read_only') = 'on' \
        THEN 'read-only transaction characteristics' END, \
    CASE WHEN EXISTS (SELECT 1 FROM pg_prepared_statements WHERE from_sql) \
        THEN 'a PREPAREd statement' END, \
    CASE WHEN EXISTS (SELECT 1 FROM pg_listening_channels()) THEN 'a listener' END, \
    CASE WHEN EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' \
        AND classid = 4242 AND pid = pg_backend_pid()) THEN 'an advisory lock' END, \
    CASE WHEN EXISTS (SELECT 1 FROM pg_cursors WHERE is_holdable) THEN 'a held cursor' END, \
    CASE WHEN to_regclass('pg_temp.saas_leak_stage') IS NOT NULL \
        THEN 'a temporary table' END, \
    CASE WHEN current_user::text <> coalesce($1, session_user::text) \
        THEN 'the role ' || current_user END)";

impl PgLeakTarget {
    /// Runs `tamper` on a scoped handle's connection; `Ok(true)` when it
    /// ended the transaction itself (the caller must not commit).
    async fn tamper_on(
        &self,
        conn: &mut PgConnection,
        ctx: &TenantContext,
        placement: &Placement,
        tamper: SessionTamper,
        in_transaction: bool,
    ) -> Result<bool, String> {
        let run = |sql: String| AssertSqlSafe(sql);
        let statements: Vec<String> = match tamper {
            SessionTamper::Settings => vec![
                "SET saas_leak.mark = 'tampered'".into(),
                "SET TIME ZONE 'Pacific/Chatham'".into(),
                "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY".into(),
            ],
            SessionTamper::TenantSetting => vec![format!(
                "SELECT set_config('saas.tenant_id', '{}', false)",
                ctx.tenant_id()
            )],
            SessionTamper::RoleAndSearchPath => match placement {
                Placement::Schema { schema, .. } => vec![
                    format!("SET ROLE {}", schema.quoted()),
                    format!("SET search_path TO {}", schema.quoted()),
                ],
                _ => vec!["SET search_path TO pg_catalog".into()],
            },
            SessionTamper::Prepare => {
                vec!["PREPARE saas_leak_prepared AS SELECT 1".into()]
            }
            SessionTamper::DeallocateAll => {
                self.cache_read_all(conn).await?;
                vec!["DEALLOCATE ALL".into()]
            }
            SessionTamper::ReplaceCachedStatements => {
                self.cache_read_all(conn).await?;
                let names: Vec<String> = sqlx::query_scalar(
                    "SELECT name FROM pg_prepared_statements WHERE statement = $1",
                )
                .bind(&self.sql.read_all)
                .fetch_all(&mut *conn)
                .await
                .map_err(text)?;
                // A forged row in the read's own shape: whoever runs the
                // replaced statement reads it as theirs.
                names
                    .into_iter()
                    .flat_map(|name| {
                        let name = name.replace('"', "");
                        [
                            format!("DEALLOCATE \"{name}\""),
                            format!(
                                "PREPARE \"{name}\" AS SELECT '{}'::uuid, -1::bigint, 'forged'::text",
                                ctx.tenant_id()
                            ),
                        ]
                    })
                    .collect()
            }
            SessionTamper::Listen => vec!["LISTEN saas_leak_channel".into()],
            SessionTamper::AdvisoryLock => {
                vec!["SELECT pg_try_advisory_lock(4242, pg_backend_pid())".into()]
            }
            SessionTamper::TemporaryTable => {
                vec!["CREATE TEMP TABLE IF NOT EXISTS saas_leak_stage AS SELECT 1 AS x".into()]
            }
            SessionTamper::HeldCursor if in_transaction => {
                vec!["DECLARE saas_leak_cursor CURSOR WITH HOLD FOR SELECT 1".into()]
            }
            SessionTamper::HeldCursor => Vec::new(),
            SessionTamper::RefusedCopy => {
                // Refused (the runtime role reads no server catalog of
                // passwords); what sqlx's raw copy leaves behind is the point.
                let refused = conn
                    .copy_out_raw("COPY pg_catalog.pg_authid TO STDOUT")
                    .await
                    .is_err();
                if !refused {
                    return Err("COPY of pg_authid was not refused".to_owned());
                }
                if in_transaction {
                    // What the refusal did to the exchange is unknown; end
                    // the transaction as a host would, whatever it says.
                    let _ = conn.execute("ROLLBACK").await;
                    return Ok(true);
                }
                Vec::new()
            }
            SessionTamper::OpenTransaction if !in_transaction => vec!["BEGIN".into()],
            SessionTamper::OpenTransaction => Vec::new(),
        };
        for sql in statements {
            conn.execute(run(sql)).await.map_err(text)?;
        }
        Ok(false)
    }

    /// Runs the read through the handle so that sqlx caches its statement.
    async fn cache_read_all(&self, conn: &mut PgConnection) -> Result<(), String> {
        sqlx::query(AssertSqlSafe(self.sql.read_all.as_str()))
            .fetch_all(&mut *conn)
            .await
            .map(drop)
            .map_err(text)
    }
}
