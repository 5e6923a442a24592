//! PostgreSQL → SQLite (`PgTenancy::move_tenant_to_sqlite`), the two
//! tenancies sharing the PostgreSQL catalog: a row tenant into the SQLite
//! shared file, a schema and a database tenant into tenant files, eight
//! writers throughout (routed by the record: PostgreSQL until it refuses
//! the tenant with `PlacementNotServedHere`, SQLite after), every type of
//! the mapping read back through the SQLite tenancy, other PostgreSQL
//! processes — one following moves, one not — refused afterwards, the
//! source unchanged after the fence, neighbours (on PostgreSQL and in the
//! SQLite shared file) untouched; stopped moves resumed or aborted;
//! unsupported and unmatched columns refused before the fence.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use saas_core::{ManualClock, TenantContext, TenantSlug};
use saas_tenancy::TenancyError;
use saas_tenancy::postgres::{MoveOptions, PgTenancy, ScopeMode};
use saas_tenancy::sqlite::{SqliteClusterConfig, SqliteTenancy};
use saas_tenancy::testing::pg::{PgSandbox, tenant_migrations};
use saas_tenancy::{ClusterName, DynCatalog, MovePhase, NewTenant, Placement, Strategy};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode};
use sqlx::{AssertSqlSafe, Connection, Executor, PgPool, SqlSafeStr, SqliteConnection};

use crate::pg_env::sandbox;

/// Every type of the mapping, on PostgreSQL (row tenants: shared; schema
/// tenants: tenant migration 2).
const KINDS_PG: &str = "CREATE TABLE kinds (tenant_id uuid NOT NULL, id bigint NOT NULL, \
    flag boolean, ref uuid, at timestamptz, amount numeric(14,4), raw bytea, label text, \
    big bigint, PRIMARY KEY (tenant_id, id))";
const SHARED_SQLITE: &str = "CREATE TABLE notes_rows (tenant_id BLOB NOT NULL, \
    id INTEGER NOT NULL, body TEXT NOT NULL, PRIMARY KEY (tenant_id, id)); \
    CREATE TABLE kinds_rows (tenant_id BLOB NOT NULL, id INTEGER NOT NULL, flag INTEGER, \
    ref BLOB, at TEXT, amount TEXT, raw BLOB, label TEXT, big INTEGER, \
    PRIMARY KEY (tenant_id, id))";
/// A tenant file's tables: `kinds` without a tenant column (the copy
/// leaves the source's out).
const TENANT_SQLITE: &str = "CREATE TABLE notes (tenant_id BLOB NOT NULL, \
    id INTEGER NOT NULL, body TEXT NOT NULL, PRIMARY KEY (tenant_id, id)); \
    CREATE TABLE kinds (id INTEGER PRIMARY KEY, flag INTEGER, ref BLOB, at TEXT, \
    amount TEXT, raw BLOB, label TEXT, big INTEGER)";

/// A row of `kinds` as both sides read it back with sqlx (the numeric as
/// its text).
type Kinds = (
    i64,
    Option<bool>,
    Option<uuid::Uuid>,
    Option<DateTime<Utc>>,
    Option<String>,
    Option<Vec<u8>>,
    Option<String>,
    Option<i64>,
);

/// More than two of the copy's 1,000-row chunks.
const SEEDED: i64 = 2_500;

fn migration(version: i64, sql: &'static str) -> Migration {
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
struct Edge {
    dir: PathBuf,
    cluster: ClusterName,
    sqlite: SqliteTenancy,
}

impl Edge {
    async fn new(catalog: &DynCatalog) -> Self {
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
    fn target(&self, to: Strategy, ctx: &TenantContext) -> Placement {
        Placement::derive(to, self.cluster.clone(), ctx.tenant_id())
    }

    async fn notes(&self, ctx: &TenantContext) -> Vec<(i64, String)> {
        let mut conn = self.sqlite.acquire(ctx).await.unwrap();
        sqlx::query_as("SELECT id, body FROM notes ORDER BY id")
            .fetch_all(&mut *conn)
            .await
            .unwrap()
    }

    async fn kinds(&self, ctx: &TenantContext) -> Vec<Kinds> {
        let mut conn = self.sqlite.acquire(ctx).await.unwrap();
        sqlx::query_as("SELECT id, flag, ref, at, amount, raw, label, big FROM kinds ORDER BY id")
            .fetch_all(&mut *conn)
            .await
            .unwrap()
    }

    /// The tenant's rows in the shared file's `notes_rows`, read without
    /// the library.
    async fn raw_shared(&self, ctx: &TenantContext) -> i64 {
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

    fn cleanup(self) {
        drop(self.sqlite);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The sandbox with `kinds` shared, and a PostgreSQL tenancy ("a
/// process") whose tenant migrations create `notes` and `kinds`, caching
/// records for `ttl`, following moves if `follow`.
async fn world(test: &str) -> Option<(PgSandbox, Edge)> {
    let pg = sandbox(test, ScopeMode::Shared).await?;
    Some(world_over(pg).await)
}

async fn world_over(pg: PgSandbox) -> (PgSandbox, Edge) {
    pg.admin.execute(KINDS_PG).await.unwrap();
    let edge = Edge::new(pg.tenancy.catalog()).await;
    (pg, edge)
}

fn process(pg: &PgSandbox, ttl: Duration, follow: bool) -> PgTenancy {
    let mut migrations = tenant_migrations();
    migrations.push(migration(2, KINDS_PG));
    pg.tenancy_with(|b| {
        b.tenant_migrations(Migrator::with_migrations(migrations))
            .record_ttl(ttl)
            .follow_moves(follow)
    })
    .unwrap()
}

async fn provision(pg: &PgSandbox, tenancy: &PgTenancy, slug: &str, s: Strategy) -> TenantContext {
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
struct At {
    pool: PgPool,
    table: String,
    filter: &'static str,
}

async fn pg_at(pg: &PgSandbox, ctx: &TenantContext, table: &str) -> At {
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
async fn pg_notes(ctx: &TenantContext, at: &At) -> Vec<(i64, String)> {
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
async fn write_kinds(pg: &PgSandbox, ctx: &TenantContext) -> Vec<Kinds> {
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
        ),
        (3, None, None, None, None, None, None, None),
    ];
    for r in rows {
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO {into} (tenant_id, id, flag, ref, at, amount, raw, label, big) \
             VALUES ($1, $2, $3, $4, $5, $6::numeric, $7, $8, $9)"
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
        .execute(&at.pool)
        .await
        .unwrap();
    }
    sqlx::query_as(AssertSqlSafe(format!(
        "SELECT id, flag, ref, at, amount::text, raw, label, big FROM {} {} ORDER BY id",
        at.table, at.filter
    )))
    .bind(ctx.tenant_id())
    .fetch_all(&at.pool)
    .await
    .unwrap()
}

/// What the writers saw.
#[derive(Default, Debug)]
struct Seen {
    /// Row id → its last acknowledged body.
    rows: BTreeMap<i64, String>,
    /// Row id → bodies written after that whose commit failed.
    maybe: BTreeMap<i64, Vec<String>>,
    /// Updates acknowledged that found no row.
    lost: Vec<i64>,
    acked: usize,
    refused: usize,
    /// Acknowledged on SQLite.
    on_sqlite: usize,
}

enum Outcome {
    Acked(u64),
    Refused,
    Unknown,
}

/// One write, routed by the record: PostgreSQL, or SQLite once
/// PostgreSQL says the tenant is placed there.
async fn write(
    pg: &PgTenancy,
    sqlite: &SqliteTenancy,
    ctx: &TenantContext,
    id: i64,
    body: &str,
    insert: bool,
) -> (Outcome, bool) {
    match pg.begin(ctx).await {
        Ok(mut tx) => {
            let sql = if insert {
                "INSERT INTO notes (tenant_id, id, body) VALUES ($1, $2, $3)"
            } else {
                "UPDATE notes SET body = $3 WHERE tenant_id = $1 AND id = $2"
            };
            let done = sqlx::query(sql)
                .bind(ctx.tenant_id())
                .bind(id)
                .bind(body)
                .execute(&mut *tx)
                .await;
            let Ok(done) = done else {
                return (Outcome::Refused, false);
            };
            match tx.commit().await {
                Ok(()) => (Outcome::Acked(done.rows_affected()), false),
                Err(_) => (Outcome::Unknown, false),
            }
        }
        Err(TenancyError::PlacementNotServedHere { .. }) => {
            let Ok(mut tx) = sqlite.begin_immediate(ctx).await else {
                return (Outcome::Refused, true);
            };
            let sql = if insert {
                "INSERT INTO notes (tenant_id, id, body) VALUES (?1, ?2, ?3)"
            } else {
                "UPDATE notes SET body = ?3 WHERE tenant_id = ?1 AND id = ?2"
            };
            let done = sqlx::query(sql)
                .bind(ctx.tenant_id())
                .bind(id)
                .bind(body)
                .execute(&mut *tx)
                .await;
            let Ok(done) = done else {
                return (Outcome::Refused, true);
            };
            // An update through a shared file's view counts no changes
            // (its INSTEAD OF trigger does the work): a lost row shows in
            // `check` as an acknowledged row missing instead.
            let _ = done;
            match tx.commit().await {
                Ok(()) => (Outcome::Acked(1), true),
                Err(_) => (Outcome::Unknown, true),
            }
        }
        Err(_) => (Outcome::Refused, false),
    }
}

/// Eight writers until `stop`: each inserts rows with ids of its own and
/// every other step updates one of its acknowledged rows.
fn writers(
    pg: &PgTenancy,
    sqlite: &SqliteTenancy,
    ctx: &TenantContext,
    stop: &Arc<AtomicBool>,
    ops: &Arc<AtomicUsize>,
) -> Vec<tokio::task::JoinHandle<Seen>> {
    (0..8i64)
        .map(|w| {
            let (pg, sqlite, ctx) = (pg.clone(), sqlite.clone(), ctx.clone());
            let (stop, ops) = (Arc::clone(stop), Arc::clone(ops));
            tokio::spawn(async move {
                let mut seen = Seen::default();
                let (mut next, mut step) = (0i64, 0u64);
                while !stop.load(Ordering::Acquire) {
                    step += 1;
                    let own: Vec<i64> = seen.rows.keys().copied().collect();
                    let (id, insert) = if step.is_multiple_of(2) && !own.is_empty() {
                        (own[(step as usize / 2) % own.len()], false)
                    } else {
                        next += 1;
                        (1_000_000 * (w + 1) + next, true)
                    };
                    let body = format!("w{w} s{step}");
                    match write(&pg, &sqlite, &ctx, id, &body, insert).await {
                        (Outcome::Acked(n), on_sqlite) => {
                            seen.acked += 1;
                            seen.on_sqlite += usize::from(on_sqlite);
                            if n == 0 {
                                seen.lost.push(id);
                            }
                            seen.rows.insert(id, body);
                            seen.maybe.remove(&id);
                        }
                        (Outcome::Refused, _) => {
                            seen.refused += 1;
                            tokio::time::sleep(Duration::from_millis(2)).await;
                        }
                        (Outcome::Unknown, _) => seen.maybe.entry(id).or_default().push(body),
                    }
                    ops.fetch_add(1, Ordering::AcqRel);
                }
                seen
            })
        })
        .collect()
}

/// Waits for the writers' next `more` operations.
async fn progress(ops: &AtomicUsize, more: usize) {
    let target = ops.load(Ordering::Acquire) + more;
    for _ in 0..3000 {
        if ops.load(Ordering::Acquire) >= target {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("writers made no progress");
}

/// Every acknowledged write is stored once with its last acknowledged
/// body (or a later one whose commit failed), no seeded row is lost, and
/// no writer row appears that no writer wrote.
fn check(stored: &[(i64, String)], seen: &[Seen]) {
    let by_id: BTreeMap<i64, &String> = stored.iter().map(|(id, b)| (*id, b)).collect();
    assert_eq!(by_id.len(), stored.len(), "a row stored twice");
    for id in 1..=SEEDED {
        assert!(by_id.contains_key(&id), "seeded row {id} lost");
    }
    let mut expected = 0;
    for s in seen {
        assert!(s.lost.is_empty(), "updates found no row: {:?}", s.lost);
        for (id, body) in &s.rows {
            expected += 1;
            let found = by_id
                .get(id)
                .unwrap_or_else(|| panic!("acknowledged row {id} lost"));
            let maybe = s.maybe.get(id).cloned().unwrap_or_default();
            assert!(
                *found == body || maybe.contains(found),
                "row {id}: stored {found:?}, last acknowledged {body:?}"
            );
        }
    }
    let unknown: usize = seen.iter().map(|s| s.maybe.len()).sum();
    let writer_rows = by_id.keys().filter(|id| **id > SEEDED).count();
    assert!(
        writer_rows >= expected && writer_rows <= expected + unknown,
        "{writer_rows} writer rows stored, {expected} acknowledged, {unknown} unknown"
    );
}

async fn seed(tenancy: &PgTenancy, ctx: &TenantContext, n: i64) {
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

async fn move_while_writing(test: &str, from: Strategy, to: Strategy) {
    let Some((pg, edge)) = world(test).await else {
        return;
    };
    let mover = process(&pg, Duration::from_secs(1), true);
    // "Other processes" with a warm record cache: one follows moves, one
    // does not (only the source's lock-out stops it).
    let follower = process(&pg, Duration::from_secs(3600), true);
    let deaf = process(&pg, Duration::from_secs(3600), false);
    let ctx = provision(&pg, &mover, "p2s-mover", from).await;
    let neighbour = provision(&pg, &mover, "p2s-neighbour", Strategy::Shared).await;
    seed(&mover, &ctx, SEEDED).await;
    seed(&mover, &neighbour, 20).await;
    let kinds = write_kinds(&pg, &ctx).await;
    // A SQLite neighbour in the shared file the row tenant moves into.
    let sqlite_neighbour = {
        let slug = TenantSlug::parse("p2s-sqlite-neighbour").unwrap();
        let new = NewTenant::new(slug, "n", Strategy::Shared, edge.cluster.clone()).unwrap();
        let record = edge.sqlite.provision(new).await.unwrap();
        let ctx = TenantContext::new(record.id, record.slug);
        let mut tx = edge.sqlite.begin_immediate(&ctx).await.unwrap();
        for id in 1..=20i64 {
            sqlx::query("INSERT INTO notes (tenant_id, id, body) VALUES (?, ?, 'sqlite')")
                .bind(ctx.tenant_id())
                .bind(id)
                .execute(&mut *tx)
                .await
                .unwrap();
        }
        tx.commit().await.unwrap();
        ctx
    };
    let sqlite_neighbour_before = edge.notes(&sqlite_neighbour).await;
    let neighbour_at = pg_at(&pg, &neighbour, "notes").await;
    let neighbour_before = pg_notes(&neighbour, &neighbour_at).await;
    let source_at = pg_at(&pg, &ctx, "notes").await;
    for (tenancy, body) in [(&follower, "follower warm-up"), (&deaf, "deaf warm-up")] {
        let mut tx = tenancy.begin(&ctx).await.unwrap();
        sqlx::query("INSERT INTO notes (tenant_id, id, body) VALUES ($1, $2, $3)")
            .bind(ctx.tenant_id())
            .bind(if body.starts_with('f') {
                SEEDED + 1
            } else {
                SEEDED + 2
            })
            .bind(body)
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }

    let stop = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(AtomicUsize::new(0));
    let handles = writers(&mover, &edge.sqlite, &ctx, &stop, &ops);
    progress(&ops, 200).await;
    let target = edge.target(to, &ctx);
    let report = mover
        .move_tenant_to_sqlite(
            ctx.tenant_id(),
            &edge.sqlite,
            target.clone(),
            MoveOptions::default().keep_source(true),
        )
        .await
        .unwrap();
    let source_at_cut_over = pg_notes(&ctx, &source_at).await;
    progress(&ops, 200).await;
    stop.store(true, Ordering::Release);
    let mut seen = Vec::new();
    for h in handles {
        seen.push(h.await.unwrap());
    }
    eprintln!(
        "{test}: rows {:?}, fence {:?}, phases {:?}; writers acknowledged {} ({} on SQLite), \
         refused {}",
        report.rows,
        report.fence,
        report.phases,
        seen.iter().map(|s| s.acked).sum::<usize>(),
        seen.iter().map(|s| s.on_sqlite).sum::<usize>(),
        seen.iter().map(|s| s.refused).sum::<usize>()
    );
    assert_eq!(report.to, target);
    assert!(report.phases.iter().any(|(p, _)| *p == MovePhase::Done));
    assert!(seen.iter().map(|s| s.on_sqlite).sum::<usize>() > 0);
    assert_eq!(
        report.rows["notes"],
        source_at_cut_over.len() as u64,
        "the copy holds what the source held at the fence"
    );

    // Every acknowledged write, once, served by SQLite.
    let stored: Vec<(i64, String)> = edge
        .notes(&ctx)
        .await
        .into_iter()
        .filter(|(id, _)| *id <= SEEDED || *id > SEEDED + 2)
        .collect();
    check(&stored, &seen);
    // Every type round trip, read through the SQLite tenancy with sqlx,
    // stored in the forms the mapping names.
    assert_eq!(edge.kinds(&ctx).await, kinds);
    let mut conn = edge.sqlite.acquire(&ctx).await.unwrap();
    let stored: (String, String, i64, String, String, String, String, String) = sqlx::query_as(
        "SELECT typeof(flag), typeof(ref), length(ref), typeof(at), at, typeof(amount), \
         typeof(raw), typeof(big) FROM kinds WHERE id = 1",
    )
    .fetch_one(&mut *conn)
    .await
    .unwrap();
    drop(conn);
    assert_eq!(
        stored,
        (
            "integer".into(),
            "blob".into(),
            16,
            "text".into(),
            "2026-12-06T13:55:53.123456+00:00".into(),
            "text".into(),
            "blob".into(),
            "integer".into()
        )
    );

    // PostgreSQL refuses the tenant, saying where it is — the mover at
    // once, the follower once notified; the deaf process's write by its
    // stale record is refused by the lock-out.
    for tenancy in [&mover, &follower] {
        let mut refused = None;
        for _ in 0..200 {
            match tenancy.begin(&ctx).await {
                Err(TenancyError::PlacementNotServedHere { placement, .. }) => {
                    refused = Some(placement);
                    break;
                }
                Ok(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                Err(e) => panic!("expected PlacementNotServedHere, got {e}"),
            }
        }
        assert_eq!(refused, Some(target.clone()));
    }
    let stale = async {
        let mut tx = deaf.begin(&ctx).await?;
        sqlx::query("INSERT INTO notes (tenant_id, id, body) VALUES ($1, 99999999, 'stale')")
            .bind(ctx.tenant_id())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok::<(), TenancyError>(())
    }
    .await;
    assert!(stale.is_err(), "a stale process wrote to the old placement");
    assert_eq!(
        pg_notes(&ctx, &source_at).await,
        source_at_cut_over,
        "no write on the old placement after the fence"
    );
    // The neighbour: untouched, still served by PostgreSQL.
    assert_eq!(pg_notes(&neighbour, &neighbour_at).await, neighbour_before);
    assert!(mover.begin(&neighbour).await.is_ok());
    assert_eq!(edge.notes(&sqlite_neighbour).await, sqlite_neighbour_before);
    // The kept source goes when asked.
    assert_eq!(mover.kept_sources(ctx.tenant_id()).await.unwrap().len(), 1);
    mover.purge_moved_source(ctx.tenant_id()).await.unwrap();
    match from {
        Strategy::Shared => assert!(pg_notes(&ctx, &source_at).await.is_empty()),
        _ => {
            if from == Strategy::Database {
                source_at.pool.close().await;
            }
            let name = format!("t_{}", ctx.tenant_id().simple());
            let exists: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1) \
                 OR EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)",
            )
            .bind(name)
            .fetch_one(&pg.admin)
            .await
            .unwrap();
            assert!(!exists, "the kept schema or database was purged");
        }
    }
    // SQLite keeps serving it.
    assert_eq!(edge.kinds(&ctx).await, kinds);

    edge.sqlite.delete_tenant(ctx.tenant_id()).await.unwrap();
    edge.sqlite
        .delete_tenant(sqlite_neighbour.tenant_id())
        .await
        .unwrap();
    mover.delete_tenant(neighbour.tenant_id()).await.unwrap();
    edge.cleanup();
    pg.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pg_row_tenant_moves_to_the_sqlite_shared_file_while_eight_writers_run() {
    move_while_writing("moving::to_sqlite_row", Strategy::Shared, Strategy::Shared).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pg_schema_tenant_moves_to_a_sqlite_tenant_file_while_eight_writers_run() {
    move_while_writing(
        "moving::to_sqlite_schema",
        Strategy::Schema,
        Strategy::Database,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pg_database_tenant_moves_to_a_sqlite_tenant_file_while_eight_writers_run() {
    move_while_writing(
        "moving::to_sqlite_database",
        Strategy::Database,
        Strategy::Database,
    )
    .await;
}

#[tokio::test]
async fn pg_to_sqlite_move_stopped_in_each_phase_resumes_or_aborts() {
    let Some((pg, edge)) = world("moving::to_sqlite_kill").await else {
        return;
    };
    let mover = process(&pg, Duration::from_secs(1), true);
    let phases = [
        MovePhase::Started,
        MovePhase::Prepared,
        MovePhase::Fenced,
        MovePhase::Synced,
        MovePhase::CutOver,
    ];
    for (i, phase) in phases.into_iter().enumerate() {
        for abort in [false, true] {
            if abort && phase == MovePhase::CutOver {
                continue;
            }
            // Row → shared file and schema → tenant file in turn.
            let (from, to) = match (i + usize::from(abort)) % 2 {
                0 => (Strategy::Shared, Strategy::Shared),
                _ => (Strategy::Schema, Strategy::Database),
            };
            let ctx = provision(&pg, &mover, &format!("p2s-kill-{i}-{abort}"), from).await;
            seed(&mover, &ctx, 30).await;
            let kinds = write_kinds(&pg, &ctx).await;
            let at = pg_at(&pg, &ctx, "notes").await;
            let before = pg_notes(&ctx, &at).await;
            let target = edge.target(to, &ctx);
            let stopped = mover
                .move_tenant_to_sqlite(
                    ctx.tenant_id(),
                    &edge.sqlite,
                    target.clone(),
                    MoveOptions::default().stop_after(phase),
                )
                .await
                .unwrap_err();
            assert!(
                matches!(stopped, TenancyError::MoveStopped { .. }),
                "{stopped}"
            );
            assert_eq!(
                mover.open_move(ctx.tenant_id()).await.unwrap().unwrap().1,
                phase
            );
            // The PostgreSQL-only entry points point to the right ones.
            let wrong = mover
                .resume_move(ctx.tenant_id(), MoveOptions::default())
                .await
                .unwrap_err();
            assert!(wrong.to_string().contains("to_sqlite"), "{wrong}");
            if abort {
                mover
                    .abort_move_to_sqlite(ctx.tenant_id(), &edge.sqlite)
                    .await
                    .unwrap();
                assert_eq!(pg_notes(&ctx, &at).await, before, "after {phase}");
                // The source serves and takes writes again.
                let mut tx = mover.begin(&ctx).await.unwrap();
                sqlx::query("INSERT INTO notes (tenant_id, id, body) VALUES ($1, 1000, 'after')")
                    .bind(ctx.tenant_id())
                    .execute(&mut *tx)
                    .await
                    .unwrap();
                tx.commit().await.unwrap();
                // Nothing is left on the SQLite side.
                match &target {
                    Placement::Database { database, .. } => assert!(
                        !edge.dir.join(format!("{database}.sqlite")).exists(),
                        "after {phase}: the tenant file was left"
                    ),
                    _ => assert_eq!(edge.raw_shared(&ctx).await, 0, "after {phase}"),
                }
                assert!(mover.open_move(ctx.tenant_id()).await.unwrap().is_none());
                mover.delete_tenant(ctx.tenant_id()).await.unwrap();
            } else {
                let wrong = mover.abort_move(ctx.tenant_id()).await.unwrap_err();
                assert!(wrong.to_string().contains("to_sqlite"), "{wrong}");
                mover
                    .resume_move_to_sqlite(ctx.tenant_id(), &edge.sqlite, MoveOptions::default())
                    .await
                    .unwrap();
                assert_eq!(edge.notes(&ctx).await, before, "after {phase}");
                assert_eq!(edge.kinds(&ctx).await, kinds, "after {phase}");
                assert!(mover.open_move(ctx.tenant_id()).await.unwrap().is_none());
                if from == Strategy::Shared {
                    assert!(pg_notes(&ctx, &at).await.is_empty(), "source purged");
                }
                edge.sqlite.delete_tenant(ctx.tenant_id()).await.unwrap();
            }
        }
    }
    edge.cleanup();
    pg.cleanup().await;
}

#[tokio::test]
async fn pg_to_sqlite_refuses_unsupported_and_unmatched_columns_before_the_fence() {
    let Some((pg, edge)) = world("moving::to_sqlite_refusals").await else {
        return;
    };
    let mover = process(&pg, Duration::from_secs(1), true);
    let ctx = provision(&pg, &mover, "p2s-odd", Strategy::Shared).await;
    seed(&mover, &ctx, 5).await;
    let at = pg_at(&pg, &ctx, "notes").await;
    let before = pg_notes(&ctx, &at).await;
    let target = edge.target(Strategy::Database, &ctx);

    // An interval has no faithful SQLite form: refused, naming it.
    pg.admin
        .execute("ALTER TABLE notes ADD COLUMN span interval")
        .await
        .unwrap();
    let refused = mover
        .move_tenant_to_sqlite(
            ctx.tenant_id(),
            &edge.sqlite,
            target.clone(),
            MoveOptions::default(),
        )
        .await
        .unwrap_err();
    match &refused {
        TenancyError::UnsupportedColumnType {
            table,
            column,
            type_name,
        } => {
            assert!(table.ends_with(".\"notes\""), "{table}");
            assert_eq!((column.as_str(), type_name.as_str()), ("span", "interval"));
        }
        other => panic!("expected UnsupportedColumnType, got {other}"),
    }
    assert!(mover.open_move(ctx.tenant_id()).await.unwrap().is_none());

    // A column the SQLite table lacks: stopped before the fence.
    pg.admin
        .execute("ALTER TABLE notes DROP COLUMN span, ADD COLUMN extra text")
        .await
        .unwrap();
    let stopped = mover
        .move_tenant_to_sqlite(
            ctx.tenant_id(),
            &edge.sqlite,
            target.clone(),
            MoveOptions::default(),
        )
        .await
        .unwrap_err();
    match &stopped {
        TenancyError::MoveStopped { phase, detail, .. } => {
            assert_eq!(phase, "started");
            assert!(detail.contains("extra"), "{detail}");
        }
        other => panic!("expected MoveStopped, got {other}"),
    }
    // Never fenced: still served by PostgreSQL, untouched.
    let record = pg
        .tenancy
        .catalog()
        .get(ctx.tenant_id())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.status, saas_core::TenantStatus::Active);
    assert!(mover.begin(&ctx).await.is_ok());
    mover
        .abort_move_to_sqlite(ctx.tenant_id(), &edge.sqlite)
        .await
        .unwrap();
    assert_eq!(pg_notes(&ctx, &at).await, before);
    // A target on one of PostgreSQL's own clusters is refused.
    let own = Placement::derive(Strategy::Database, pg.cluster.clone(), ctx.tenant_id());
    let refused = mover
        .move_tenant_to_sqlite(ctx.tenant_id(), &edge.sqlite, own, MoveOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(refused, TenancyError::InvalidInput(_)),
        "{refused}"
    );

    mover.delete_tenant(ctx.tenant_id()).await.unwrap();
    edge.cleanup();
    pg.cleanup().await;
}

#[tokio::test]
async fn pg_to_sqlite_kept_source_is_purged_once_its_retention_has_passed() {
    let start = "2030-01-01T00:00:00Z".parse::<DateTime<Utc>>().unwrap();
    let clock = ManualClock::new(start);
    let Some(pg) = crate::pg_env::sandbox_with_clock(
        "moving::to_sqlite_retention",
        ScopeMode::Shared,
        Arc::new(clock.clone()),
    )
    .await
    else {
        return;
    };
    let (pg, edge) = world_over(pg).await;
    let mover = process(&pg, Duration::from_secs(1), true);
    let ctx = provision(&pg, &mover, "p2s-kept", Strategy::Schema).await;
    seed(&mover, &ctx, 10).await;
    let schema = format!("t_{}", ctx.tenant_id().simple());
    let schema_exists = || async {
        sqlx::query_scalar::<_, bool>(
            "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)",
        )
        .bind(&schema)
        .fetch_one(&pg.admin)
        .await
        .unwrap()
    };
    mover
        .move_tenant_to_sqlite(
            ctx.tenant_id(),
            &edge.sqlite,
            edge.target(Strategy::Database, &ctx),
            MoveOptions::default().keep_source_for(Duration::from_secs(3600)),
        )
        .await
        .unwrap();
    let kept = mover.kept_sources(ctx.tenant_id()).await.unwrap();
    assert_eq!(kept[0].kept_until, Some(start + chrono::Duration::hours(1)));
    // Not before its retention has passed…
    clock.advance(chrono::Duration::minutes(59));
    assert!(
        mover
            .purge_expired_sources()
            .await
            .unwrap()
            .purged
            .is_empty()
    );
    assert!(schema_exists().await);
    // …then purged, though the tenant is served by another backend now.
    clock.advance(chrono::Duration::minutes(2));
    let done = mover.purge_expired_sources().await.unwrap();
    assert_eq!(done.purged.len(), 1, "{done:?}");
    assert!(!schema_exists().await);
    assert_eq!(edge.notes(&ctx).await.len(), 10);

    edge.sqlite.delete_tenant(ctx.tenant_id()).await.unwrap();
    edge.cleanup();
    pg.cleanup().await;
}
