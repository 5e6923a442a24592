//! The world of the PostgreSQL → SQLite move tests: the PostgreSQL
//! sandbox with a `kinds` table of every mapped type, the SQLite cluster
//! `edge` on its catalog, and the admin's view of either side.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use saas_core::{TenantContext, TenantSlug};
use saas_tenancy::postgres::{PgTenancy, ScopeMode};
use saas_tenancy::sqlite::{SqliteClusterConfig, SqliteTenancy};
use saas_tenancy::testing::pg::{PgSandbox, tenant_migrations};
use saas_tenancy::{ClusterName, DynCatalog, NewTenant, Placement, Strategy};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode};
use sqlx::{AssertSqlSafe, Connection, Executor, PgPool, SqlSafeStr, SqliteConnection};

use crate::pg_env::sandbox;

/// Every type of the mapping, on PostgreSQL (row tenants: shared; schema
/// tenants: tenant migration 2).
pub(super) const KINDS_PG: &str = "CREATE TABLE kinds (tenant_id uuid NOT NULL, id bigint NOT NULL, \
    flag boolean, ref uuid, at timestamptz, amount numeric(14,4), raw bytea, label text, \
    big bigint, ratio double precision, PRIMARY KEY (tenant_id, id))";
pub(super) const SHARED_SQLITE: &str = "CREATE TABLE notes_rows (tenant_id BLOB NOT NULL, \
    id INTEGER NOT NULL, body TEXT NOT NULL, PRIMARY KEY (tenant_id, id)); \
    CREATE TABLE kinds_rows (tenant_id BLOB NOT NULL, id INTEGER NOT NULL, flag INTEGER, \
    ref BLOB, at TEXT, amount TEXT, raw BLOB, label TEXT, big INTEGER, ratio REAL, \
    PRIMARY KEY (tenant_id, id))";
/// A tenant file's tables: `kinds` without a tenant column (the copy
/// leaves the source's out).
pub(super) const TENANT_SQLITE: &str = "CREATE TABLE notes (tenant_id BLOB NOT NULL, \
    id INTEGER NOT NULL, body TEXT NOT NULL, PRIMARY KEY (tenant_id, id)); \
    CREATE TABLE kinds (id INTEGER PRIMARY KEY, flag INTEGER, ref BLOB, at TEXT, \
    amount TEXT, raw BLOB, label TEXT, big INTEGER, ratio REAL)";

/// A row of `kinds` as both sides read it back with sqlx (the numeric as
/// its text).
pub(super) type Kinds = (
    i64,
    Option<bool>,
    Option<uuid::Uuid>,
    Option<DateTime<Utc>>,
    Option<String>,
    Option<Vec<u8>>,
    Option<String>,
    Option<i64>,
    Option<f64>,
);

/// More than two of the copy's 1,000-row chunks.
pub(super) const SEEDED: i64 = 2_500;

pub(super) fn migration(version: i64, sql: &'static str) -> Migration {
    Migration::new(
        version,
        format!("m{version}").into(),
        MigrationType::Simple,
        sql.into_sql_str(),
        false,
    )
}

/// The SQLite side: cluster `edge` in a temporary directory, on the
/// PostgreSQL sandbox's catalog.
pub(super) struct Edge {
    pub(super) dir: PathBuf,
    pub(super) cluster: ClusterName,
    pub(super) sqlite: SqliteTenancy,
}

impl Edge {
    pub(super) async fn new(catalog: &DynCatalog) -> Self {
        let dir = std::env::temp_dir().join(format!("saas_p2s_{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let options = SqliteConnectOptions::new()
            .filename(dir.join("shared.sqlite"))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal);
        let mut conn = SqliteConnection::connect_with(&options).await.unwrap();
        sqlx::raw_sql(SHARED_SQLITE)
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
        let cluster = ClusterName::new("edge").unwrap();
        let sqlite = SqliteTenancy::builder(Arc::clone(catalog))
            .cluster(SqliteClusterConfig::new(
                cluster.clone(),
                dir.join("shared.sqlite"),
                &dir,
            ))
            .tenant_tables(["notes", "kinds"])
            .tenant_migrations(Migrator::with_migrations(vec![migration(1, TENANT_SQLITE)]))
            .build()
            .unwrap();
        sqlite.setup().await.unwrap();
        Edge {
            dir,
            cluster,
            sqlite,
        }
    }

    /// Where a move of `ctx` with target strategy `to` goes.
    pub(super) fn target(&self, to: Strategy, ctx: &TenantContext) -> Placement {
        Placement::derive(to, self.cluster.clone(), ctx.tenant_id())
    }

    pub(super) async fn notes(&self, ctx: &TenantContext) -> Vec<(i64, String)> {
        let mut conn = self.sqlite.acquire(ctx).await.unwrap();
        sqlx::query_as("SELECT id, body FROM notes ORDER BY id")
            .fetch_all(&mut *conn)
            .await
            .unwrap()
    }

    pub(super) async fn kinds(&self, ctx: &TenantContext) -> Vec<Kinds> {
        let mut conn = self.sqlite.acquire(ctx).await.unwrap();
        sqlx::query_as(
            "SELECT id, flag, ref, at, amount, raw, label, big, ratio FROM kinds ORDER BY id",
        )
        .fetch_all(&mut *conn)
        .await
        .unwrap()
    }

    /// The tenant's rows in the shared file's `notes_rows`, read without
    /// the library.
    pub(super) async fn raw_shared(&self, ctx: &TenantContext) -> i64 {
        let options = SqliteConnectOptions::new()
            .filename(self.dir.join("shared.sqlite"))
            .read_only(true);
        let mut conn = SqliteConnection::connect_with(&options).await.unwrap();
        let n = sqlx::query_scalar("SELECT count(*) FROM notes_rows WHERE tenant_id = ?")
            .bind(ctx.tenant_id())
            .fetch_one(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
        n
    }

    pub(super) fn cleanup(self) {
        drop(self.sqlite);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A PostgreSQL sandbox and the SQLite side on its catalog, or `None`
/// when skipped.
pub(super) async fn world(test: &str) -> Option<(PgSandbox, Edge)> {
    let pg = sandbox(test, ScopeMode::Shared).await?;
    Some(world_over(pg).await)
}

/// `pg` with `kinds` shared, and the SQLite side on its catalog.
pub(super) async fn world_over(pg: PgSandbox) -> (PgSandbox, Edge) {
    pg.admin.execute(KINDS_PG).await.unwrap();
    let edge = Edge::new(pg.tenancy.catalog()).await;
    (pg, edge)
}

/// A PostgreSQL tenancy ("a process") whose tenant migrations create
/// `notes` and `kinds`, caching records for `ttl`, following moves if
/// `follow`.
pub(super) fn process(pg: &PgSandbox, ttl: Duration, follow: bool) -> PgTenancy {
    let mut migrations = tenant_migrations();
    migrations.push(migration(2, KINDS_PG));
    pg.tenancy_with(|b| {
        b.tenant_migrations(Migrator::with_migrations(migrations))
            .record_ttl(ttl)
            .follow_moves(follow)
    })
    .unwrap()
}

pub(super) async fn provision(
    pg: &PgSandbox,
    tenancy: &PgTenancy,
    slug: &str,
    s: Strategy,
) -> TenantContext {
    let new = NewTenant::new(
        TenantSlug::parse(slug).unwrap(),
        slug,
        s,
        pg.cluster.clone(),
    )
    .unwrap();
    let record = tenancy.provision(new).await.unwrap();
    TenantContext::new(record.id, record.slug)
}

/// Where `ctx`'s PostgreSQL `table` is, as the admin reaches it: a pool
/// on its database, the table, and the filter on the tenant (`$1`).
pub(super) struct At {
    pub(super) pool: PgPool,
    pub(super) table: String,
    pub(super) filter: &'static str,
}

pub(super) async fn pg_at(pg: &PgSandbox, ctx: &TenantContext, table: &str) -> At {
    let record = pg.tenancy.catalog().get(ctx.tenant_id()).await.unwrap();
    let own = "WHERE $1::uuid IS NOT NULL";
    match record.map(|r| r.placement) {
        Some(Placement::Schema { schema, .. }) => At {
            pool: pg.admin.clone(),
            table: format!("{}.{table}", schema.quoted()),
            filter: own,
        },
        Some(Placement::Database { database, .. }) => {
            let options = (*pg.admin.connect_options())
                .clone()
                .database(database.as_str());
            At {
                pool: PgPoolOptions::new()
                    .max_connections(1)
                    .connect_with(options)
                    .await
                    .unwrap(),
                table: format!("public.{table}"),
                filter: own,
            }
        }
        _ => At {
            pool: pg.admin.clone(),
            table: table.to_owned(),
            filter: "WHERE tenant_id = $1",
        },
    }
}

/// The tenant's notes on its PostgreSQL placement, read as the admin.
pub(super) async fn pg_notes(ctx: &TenantContext, at: &At) -> Vec<(i64, String)> {
    sqlx::query_as(AssertSqlSafe(format!(
        "SELECT id, body FROM {} {} ORDER BY id",
        at.table, at.filter
    )))
    .bind(ctx.tenant_id())
    .fetch_all(&at.pool)
    .await
    .unwrap()
}

/// Writes three `kinds` rows on PostgreSQL (every value kind, edge values
/// and NULLs) and returns them as PostgreSQL reads them back.
pub(super) async fn write_kinds(pg: &PgSandbox, ctx: &TenantContext) -> Vec<Kinds> {
    let at = pg_at(pg, ctx, "kinds").await;
    let into = at.table.clone();
    let moment: DateTime<Utc> = "2026-12-06T13:55:53.123456Z".parse().unwrap();
    let old: DateTime<Utc> = "1901-01-01T00:00:00Z".parse().unwrap();
    let rows: [Kinds; 3] = [
        (
            1,
            Some(true),
            Some(uuid::Uuid::new_v4()),
            Some(moment),
            Some("12345.6789".into()),
            Some(vec![0, 1, 2, 255, b'\n', b'\\']),
            Some("tab\there\nnewline 'quote' \"dq\" ü €".into()),
            Some(i64::MAX),
            Some(1.5),
        ),
        (
            2,
            Some(false),
            Some(uuid::Uuid::nil()),
            Some(old),
            Some("-0.0001".into()),
            Some(Vec::new()),
            Some(String::new()),
            Some(i64::MIN),
            Some(f64::NEG_INFINITY),
        ),
        (3, None, None, None, None, None, None, None, None),
    ];
    for r in rows {
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO {into} (tenant_id, id, flag, ref, at, amount, raw, label, big, ratio) \
             VALUES ($1, $2, $3, $4, $5, $6::numeric, $7, $8, $9, $10)"
        )))
        .bind(ctx.tenant_id())
        .bind(r.0)
        .bind(r.1)
        .bind(r.2)
        .bind(r.3)
        .bind(r.4)
        .bind(r.5)
        .bind(r.6)
        .bind(r.7)
        .bind(r.8)
        .execute(&at.pool)
        .await
        .unwrap();
    }
    sqlx::query_as(AssertSqlSafe(format!(
        "SELECT id, flag, ref, at, amount::text, raw, label, big, ratio FROM {} {} ORDER BY id",
        at.table, at.filter
    )))
    .bind(ctx.tenant_id())
    .fetch_all(&at.pool)
    .await
    .unwrap()
}

pub(super) async fn seed(tenancy: &PgTenancy, ctx: &TenantContext, n: i64) {
    let mut tx = tenancy.begin(ctx).await.unwrap();
    sqlx::query(
        "INSERT INTO notes (tenant_id, id, body) \
         SELECT $1, i, 'seed ' || i FROM generate_series(1, $2::bigint) i",
    )
    .bind(ctx.tenant_id())
    .bind(n)
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
}
