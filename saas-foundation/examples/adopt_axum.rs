//! Adopting saas-foundation in an existing axum + sqlx app on SQLite: the
//! code that `ADOPTING.md` walks through, run end to end.
//!
//! The app before: a `tenants` table with its own uuids, a `notes` table
//! with a tenant column, and handlers that filter by tenant by hand. The
//! app after: the same tenants under the same ids in the saas-tenancy
//! catalog, `notes` scoped per request, the tenant resolved by a layer,
//! handlers on a request-scoped transaction, one usage event per request
//! and a quota.
//!
//! ```text
//! cargo run -p saas-foundation --example adopt_axum --features sqlite,axum
//! ```
//!
//! Everything lives in a temporary directory, removed at the end; no
//! server is started (requests go through the router in-process).

use std::collections::HashMap;
use std::error::Error;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path as UrlPath, Request, State};
use axum::routing::{get, post, put};
use http::{HeaderMap, StatusCode};
use saas_foundation::billing::{
    Aggregation, BillingEngine, BillingStores, Catalog, Charge, Currency, Decimal, Meter, MeterKey,
    Money, NewSubscription, PlanId, PlanRef, PlanVersion, Product, ProductId, SharedClock,
    SystemClock, dec,
};
use saas_foundation::core::http::TenantLayer;
use saas_foundation::core::{
    AuthMode, ErrorKind, HeaderResolver, RequestResolver, TenantId, TenantSlug,
};
use saas_foundation::metering::MeterLayer;
use saas_foundation::problem::Problem;
use saas_foundation::subscriptions::CurrentSubscriptions;
use saas_foundation::tenancy::sqlite::{SqliteClusterConfig, SqliteTenancy};
use saas_foundation::tenancy::{
    CatalogLookup, ClusterName, DynCatalog, NewTenant, SqliteCatalog, Strategy, TenancyError,
    TenantRecord, TenantTable,
};
use saas_foundation::transaction::{ScopedTx, TransactionLayer};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::{SqlSafeStr, SqliteConnection, SqlitePool};
use tower::ServiceExt;

// ---------------------------------------------------------------------
// The app before adoption.
// ---------------------------------------------------------------------

/// The old schema: tenant ids are uuids as sqlx stores them in SQLite
/// (16-byte BLOBs), which is also how saas-tenancy compares them.
const OLD_SCHEMA: &str = "
    CREATE TABLE tenants (id BLOB PRIMARY KEY, slug TEXT NOT NULL UNIQUE, name TEXT NOT NULL);
    CREATE TABLE notes (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        tenant_id BLOB NOT NULL,
        body TEXT NOT NULL
    );
    CREATE INDEX notes_by_tenant ON notes (tenant_id);
";

/// An old handler: the tenant comes from a header, and every query
/// repeats the filter by hand (forget it once and one tenant reads
/// another's notes).
async fn old_list_notes(
    State(db): State<SqlitePool>,
    headers: HeaderMap,
) -> Result<String, StatusCode> {
    let slug = headers
        .get("x-tenant")
        .and_then(|v| v.to_str().ok())
        .ok_or(StatusCode::BAD_REQUEST)?;
    let notes: Vec<(i64, String)> = sqlx::query_as(
        "SELECT notes.id, notes.body FROM notes JOIN tenants ON tenants.id = notes.tenant_id \
         WHERE tenants.slug = ? ORDER BY notes.id",
    )
    .bind(slug)
    .fetch_all(&db)
    .await
    .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?;
    Ok(lines(&notes))
}

fn lines(notes: &[(i64, String)]) -> String {
    notes
        .iter()
        .map(|(id, body)| format!("{id}: {body}"))
        .collect::<Vec<_>>()
        .join(" | ")
}

/// The old app's data: two tenants with ids of their own, and their notes.
async fn old_app(shared_file: &Path) -> Result<SqlitePool, Box<dyn Error>> {
    let db = SqlitePoolOptions::new()
        .connect_with(
            SqliteConnectOptions::new()
                .filename(shared_file)
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal),
        )
        .await?;
    sqlx::raw_sql(OLD_SCHEMA).execute(&db).await?;
    for (slug, name, notes) in [
        ("acme", "Acme Corp", &["kick-off", "budget", "hiring"][..]),
        ("globex", "Globex", &["roadmap"][..]),
    ] {
        let id = TenantId::new();
        sqlx::query("INSERT INTO tenants (id, slug, name) VALUES (?, ?, ?)")
            .bind(id)
            .bind(slug)
            .bind(name)
            .execute(&db)
            .await?;
        for body in notes {
            sqlx::query("INSERT INTO notes (tenant_id, body) VALUES (?, ?)")
                .bind(id)
                .bind(body)
                .execute(&db)
                .await?;
        }
    }
    Ok(db)
}

// ---------------------------------------------------------------------
// Steps (a) and (b): the tenants enter the catalog under their own ids,
// and `notes` becomes a tenant table.
// ---------------------------------------------------------------------

/// The one migration of the shared file: `notes` keeps every row under a
/// new physical name, `notes_rows`, and each tenant connection sees a
/// `notes` view of its own rows. The old `tenants` table goes: the catalog
/// holds the tenants now, and SQLite would show an undeclared table to
/// every tenant connection in full.
const ADOPT: &str = "
    ALTER TABLE notes RENAME TO notes_rows;
    DROP TABLE tenants;
";

/// The tenancy: a catalog file of its own, the app's database as the
/// shared file of cluster `local`, `notes` declared as a tenant table.
async fn tenancy(dir: &Path, shared_file: &Path) -> Result<SqliteTenancy, Box<dyn Error>> {
    let catalog = SqliteCatalog::new(
        SqlitePoolOptions::new()
            .connect_with(
                SqliteConnectOptions::new()
                    .filename(dir.join("catalog.sqlite"))
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal),
            )
            .await?,
    );
    catalog.migrate().await?;
    let catalog: DynCatalog = Arc::new(catalog);
    let adopt = Migration::new(
        1,
        "adopt saas-tenancy".into(),
        MigrationType::Simple,
        ADOPT.into_sql_str(),
        false,
    );
    Ok(SqliteTenancy::builder(catalog)
        .cluster(SqliteClusterConfig::new(
            ClusterName::new("local")?,
            shared_file,
            dir,
        ))
        .tenant_table(TenantTable::new("notes")?)
        .shared_migrations(Migrator::with_migrations(vec![adopt]))
        .build()?)
}

/// Enters every row of the old `tenants` table into the catalog under its
/// own id, as a row (`Shared`) tenant. Safe to run again: a tenant already
/// entered is kept as it is.
async fn enter_tenants(
    tenancy: &SqliteTenancy,
    db: &mut SqliteConnection,
) -> Result<Vec<TenantRecord>, Box<dyn Error>> {
    let rows: Vec<(TenantId, String, String)> =
        sqlx::query_as("SELECT id, slug, name FROM tenants ORDER BY slug")
            .fetch_all(db)
            .await?;
    let mut records = Vec::new();
    for (id, slug, name) in rows {
        let new = NewTenant::new(
            TenantSlug::parse(&slug)?,
            name,
            Strategy::Shared,
            ClusterName::new("local")?,
        )?
        .with_id(id)
        .active();
        let record = match tenancy.provision(new).await {
            Ok(record) => record,
            Err(TenancyError::AlreadyExists { .. }) => tenancy
                .catalog()
                .get(id)
                .await?
                .ok_or_else(|| format!("the slug {slug} belongs to another catalog tenant"))?,
            Err(e) => return Err(e.into()),
        };
        records.push(record);
    }
    Ok(records)
}

// ---------------------------------------------------------------------
// Step (d): handlers on the request tenant's transaction.
// ---------------------------------------------------------------------

type Tx = ScopedTx<SqliteTenancy>;

/// No tenant in the SQL: `notes` is this tenant's view.
async fn list_notes(mut tx: Tx) -> Result<String, Problem> {
    let notes: Vec<(i64, String)> = sqlx::query_as("SELECT id, body FROM notes ORDER BY id")
        .fetch_all(&mut *tx)
        .await
        .map_err(TenancyError::from)?;
    Ok(lines(&notes))
}

/// The view's trigger stamps the row with the request's tenant.
async fn add_note(mut tx: Tx, body: String) -> Result<(StatusCode, String), Problem> {
    sqlx::query("INSERT INTO notes (body) VALUES (?)")
        .bind(body)
        .execute(&mut *tx)
        .await
        .map_err(TenancyError::from)?;
    // `RETURNING` is not available through the view. Ids are AUTOINCREMENT
    // and this transaction now holds the file's write lock, so the largest
    // id the tenant sees is the one just inserted.
    let id: i64 = sqlx::query_scalar("SELECT max(id) FROM notes")
        .fetch_one(&mut *tx)
        .await
        .map_err(TenancyError::from)?;
    Ok((StatusCode::CREATED, id.to_string()))
}

/// One note per line, all or none: an empty line answers 400 and the
/// `TransactionLayer` rolls back the lines inserted before it.
async fn import_notes(mut tx: Tx, body: String) -> Result<StatusCode, Problem> {
    for (n, line) in body.lines().enumerate() {
        if line.trim().is_empty() {
            return Err(Problem::new(
                ErrorKind::InvalidInput,
                format!("line {} is empty", n + 1),
            ));
        }
        sqlx::query("INSERT INTO notes (body) VALUES (?)")
            .bind(line)
            .execute(&mut *tx)
            .await
            .map_err(TenancyError::from)?;
    }
    Ok(StatusCode::CREATED)
}

/// Another tenant's note is not in the view: nothing changes, 404.
async fn edit_note(
    mut tx: Tx,
    UrlPath(id): UrlPath<i64>,
    body: String,
) -> Result<StatusCode, Problem> {
    // Through a view SQLite reports 0 rows affected; count the changes
    // the trigger made instead.
    let before = total_changes(&mut tx).await?;
    sqlx::query("UPDATE notes SET body = ? WHERE id = ?")
        .bind(body)
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(TenancyError::from)?;
    if total_changes(&mut tx).await? == before {
        return Err(Problem::new(ErrorKind::NotFound, format!("no note {id}")));
    }
    Ok(StatusCode::NO_CONTENT)
}

async fn total_changes(tx: &mut Tx) -> Result<i64, Problem> {
    Ok(sqlx::query_scalar("SELECT total_changes()")
        .fetch_one(&mut **tx)
        .await
        .map_err(TenancyError::from)?)
}

// ---------------------------------------------------------------------
// Step (e): one usage event per request, and a quota.
// ---------------------------------------------------------------------

const API_CALLS: &str = "api_calls";

/// Free: 4 API calls a month (tiny, to reach it here). Pro: 49.00 a month
/// and 0.01 a call, no quota.
fn price_list() -> Result<Catalog, Box<dyn Error>> {
    let usd = |amount| Money::new(amount, Currency::USD);
    let product = ProductId::new("notes")?;
    let calls = |price| Charge::per_unit(usd(price));
    Ok(Catalog::builder()
        .product(Product::new(product.clone(), "Notes"))
        .meter(Meter::new(MeterKey::new(API_CALLS)?, Aggregation::Count))
        .plan(
            PlanVersion::builder(PlanId::new("free")?, 1, product.clone())
                .recurring("base", "Free plan", [Charge::flat(usd(dec!(0)))?])
                .metered("calls", "API calls", API_CALLS, [calls(dec!(0))?])
                .quota(API_CALLS, API_CALLS, dec!(4))
                .build()?,
        )
        .plan(
            PlanVersion::builder(PlanId::new("pro")?, 1, product)
                .recurring("base", "Pro plan", [Charge::flat(usd(dec!(49)))?])
                .metered("calls", "API calls", API_CALLS, [calls(dec!(0.01))?])
                .build()?,
        )
        .build()?)
}

/// Counts every request the tenant's plan allows and the app serves: one
/// `api_calls` unit after a successful response (after its commit: this
/// layer wraps the `TransactionLayer`), a request over the free plan's
/// quota refused with 429 before its handler runs.
fn metering(engine: BillingEngine, clock: SharedClock) -> Result<MeterLayer, Box<dyn Error>> {
    let current = Arc::new(CurrentSubscriptions::new(engine));
    let layer = MeterLayer::new(current, MeterKey::new(API_CALLS)?, clock);
    Ok(layer.enforcing().after_success())
}

// ---------------------------------------------------------------------
// Step (c): the router, with the tenant resolved per request.
// ---------------------------------------------------------------------

fn router(tenancy: SqliteTenancy, metering: MeterLayer) -> Result<Router, Box<dyn Error>> {
    // The catalog answers "which tenant is `acme`?"; the header carries a
    // tenant id or slug. A bare header lets a client name any tenant: in
    // production add your authentication (a JwtVerifier and
    // TokenClaimResolver, or your own check) before trusting it.
    let resolver =
        RequestResolver::builder(Arc::new(CatalogLookup::new(Arc::clone(tenancy.catalog()))))
            .auth(AuthMode::Optional)
            .resolver(HeaderResolver::new("x-tenant")?)
            .build()?;
    Ok(Router::new()
        .route("/notes", get(list_notes).post(add_note))
        .route("/notes/import", post(import_notes))
        .route("/notes/{id}", put(edit_note))
        // The last layer added runs first: tenant, then metering, then
        // the transaction around the handler.
        .layer(TransactionLayer::new(tenancy))
        .layer(metering)
        .layer(TenantLayer::new(resolver)))
}

/// One request through the router, in-process.
async fn call(
    router: &Router,
    method: &str,
    path: &str,
    tenant: Option<&str>,
    body: &str,
) -> Result<(StatusCode, String), Box<dyn Error>> {
    let mut request = Request::builder().method(method).uri(path);
    if let Some(tenant) = tenant {
        request = request.header("x-tenant", tenant);
    }
    let response = router
        .clone()
        .oneshot(request.body(Body::from(body.to_owned()))?)
        .await?;
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 16).await?;
    Ok((status, String::from_utf8(bytes.to_vec())?))
}

/// Prints a request and its answer; fails unless the status is `expected`.
async fn show(
    router: &Router,
    (method, path, tenant, body): (&str, &str, Option<&str>, &str),
    expected: StatusCode,
) -> Result<String, Box<dyn Error>> {
    let (status, answer) = call(router, method, path, tenant, body).await?;
    println!(
        "   {method} {path} as {}: {status} {answer}",
        tenant.unwrap_or("nobody")
    );
    if status != expected {
        return Err(format!("expected {expected}, got {status}").into());
    }
    Ok(answer)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let dir: PathBuf = std::env::temp_dir().join(format!("adopt-axum-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir)?;
    let result = run(&dir).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn run(dir: &Path) -> Result<(), Box<dyn Error>> {
    let shared_file = dir.join("app.sqlite");

    println!("== before: the app filters by tenant by hand");
    let old_db = old_app(&shared_file).await?;
    let old = Router::new()
        .route("/notes", get(old_list_notes))
        .with_state(old_db.clone());
    let mut before = HashMap::new();
    for slug in ["acme", "globex"] {
        before.insert(
            slug,
            show(&old, ("GET", "/notes", Some(slug), ""), StatusCode::OK).await?,
        );
    }
    let old_ids: Vec<TenantId> = sqlx::query_scalar("SELECT id FROM tenants")
        .fetch_all(&old_db)
        .await?;

    println!("== adoption");
    let tenancy = tenancy(dir, &shared_file).await?;
    // (a) tenants enter the catalog under their own ids, before the
    // migration drops the old table.
    let mut db = old_db.acquire().await?;
    let records = enter_tenants(&tenancy, &mut db).await?;
    drop(db);
    // The old app is stopped: no other connection while the file migrates.
    old_db.close().await;
    for record in &records {
        let kept = old_ids.contains(&record.id);
        println!(
            "   {} entered as {} ({}), id kept: {kept}",
            record.slug, record.id, record.status
        );
        if !kept {
            return Err("a tenant changed its id".into());
        }
    }
    // (b) notes -> notes_rows, then a check of every declared table.
    tenancy.migrate_shared().await?;
    println!("   notes is a tenant table (rows in notes_rows)");

    // (e) billing: acme on pro, globex on free.
    let clock: SharedClock = Arc::new(SystemClock);
    let engine = BillingEngine::new(
        Arc::new(price_list()?),
        BillingStores::in_memory(),
        Arc::clone(&clock),
    );
    let mut subscriptions = HashMap::new();
    for record in &records {
        let plan = if record.slug.as_str() == "acme" {
            "pro"
        } else {
            "free"
        };
        let plan = PlanRef::new(PlanId::new(plan)?, 1);
        let new = NewSubscription::new(record.id, plan, Currency::USD);
        let subscription = engine.create_subscription(new).await?;
        subscriptions.insert(record.id, subscription.id());
    }
    let metering = metering(engine.clone(), clock)?;

    println!("== after: the same requests, scoped by the library");
    let app = router(tenancy.clone(), metering)?;
    for slug in ["acme", "globex"] {
        let after = show(&app, ("GET", "/notes", Some(slug), ""), StatusCode::OK).await?;
        if Some(&after) != before.get(slug) {
            return Err(format!("{slug} sees other notes than before").into());
        }
    }
    let id = show(
        &app,
        ("POST", "/notes", Some("globex"), "launch plan"),
        StatusCode::CREATED,
    )
    .await?;
    show(
        &app,
        ("POST", "/notes/import", Some("acme"), "one\n\nthree"),
        StatusCode::BAD_REQUEST,
    )
    .await?;
    // The import was rolled back as a whole: "one" is not there.
    let acme = show(&app, ("GET", "/notes", Some("acme"), ""), StatusCode::OK).await?;
    if Some(&acme) != before.get("acme") {
        return Err("a failed import left notes behind".into());
    }
    // Note 1 is acme's: globex cannot change it.
    show(
        &app,
        ("PUT", "/notes/1", Some("globex"), "mine now"),
        StatusCode::NOT_FOUND,
    )
    .await?;
    show(
        &app,
        (
            "PUT",
            &format!("/notes/{id}"),
            Some("globex"),
            "launch plan v2",
        ),
        StatusCode::NO_CONTENT,
    )
    .await?;
    show(&app, ("GET", "/notes", Some("globex"), ""), StatusCode::OK).await?;
    show(&app, ("GET", "/notes", None, ""), StatusCode::BAD_REQUEST).await?;
    show(
        &app,
        ("GET", "/notes", Some("initech"), ""),
        StatusCode::NOT_FOUND,
    )
    .await?;

    println!("== usage");
    // globex has used 4 successful calls of its free plan's 4.
    show(
        &app,
        ("GET", "/notes", Some("globex"), ""),
        StatusCode::TOO_MANY_REQUESTS,
    )
    .await?;
    for record in &records {
        // Events billed on the first invoice (period 0: this month).
        let recorded = engine
            .stores()
            .usage
            .billed_in(record.id, subscriptions[&record.id], 0)
            .await?
            .len();
        let left = engine.check(record.id, API_CALLS, Decimal::ZERO);
        println!(
            "   {}: {recorded} API calls recorded, left this month: {}",
            record.slug,
            left.remaining()
                .map_or_else(|| "no quota".to_owned(), |n| n.to_string())
        );
    }
    let summary: Vec<(String, i64)> = {
        let mut admin = tenancy
            .unscoped_admin_connection(&ClusterName::new("local")?, "adopt_axum: summary")
            .await?;
        let mut counts = Vec::new();
        for record in &records {
            let n: i64 = sqlx::query_scalar("SELECT count(*) FROM notes_rows WHERE tenant_id = ?")
                .bind(record.id)
                .fetch_one(&mut admin)
                .await?;
            counts.push((record.slug.as_str().to_owned(), n));
        }
        counts
    };
    println!("   rows in notes_rows by tenant: {summary:?}");
    drop(tenancy);
    Ok(())
}
