//! Tenants spread over two real PostgreSQL servers by a placement policy.

use std::str::FromStr;
use std::sync::Arc;

use saas_core::{TenantContext, TenantSlug};
use saas_tenancy::postgres::{PgClusterConfig, PgTenancy, SqlIdent, TenantTable};
use saas_tenancy::testing::pg::{NOTES_SHARED, NOTES_TENANT};
use saas_tenancy::testing::unique_name;
use saas_tenancy::{ClusterName, DynCatalog, NewTenant, PgCatalog, PlacementPolicy, Strategy};
use saas_test_support::{Service, service_url};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{AssertSqlSafe, Executor, PgPool, SqlSafeStr};

/// A cluster for a test: a fresh schema of its own on a real server.
pub(crate) struct Server {
    pub(crate) name: ClusterName,
    pub(crate) admin: PgPool,
    pub(crate) options: PgConnectOptions,
    pub(crate) schema: String,
}

/// Both servers' URLs, or `None` (skipped, or failed when required).
pub(crate) fn urls(test: &str) -> Option<(String, String)> {
    Some((
        service_url(Service::Postgres, test)?,
        service_url(Service::Postgres2, test)?,
    ))
}

/// A fresh schema on `url`, named cluster `name`, with the shared `notes`.
async fn server(url: &str, name: &str) -> Server {
    let s = bare_server(url, name).await;
    s.admin.execute(NOTES_SHARED).await.unwrap();
    s
}

/// A fresh, empty schema on `url`, named cluster `name`.
pub(crate) async fn bare_server(url: &str, name: &str) -> Server {
    let schema = unique_name("saas_two");
    let base = PgConnectOptions::from_str(url).unwrap();
    let bootstrap = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(base.clone())
        .await
        .unwrap();
    bootstrap
        .execute(AssertSqlSafe(format!("CREATE SCHEMA \"{schema}\"")))
        .await
        .unwrap();
    bootstrap.close().await;
    let options = base.options([("search_path", schema.as_str())]);
    let admin = PgPoolOptions::new()
        .max_connections(2)
        .connect_with(options.clone())
        .await
        .unwrap();
    Server {
        name: ClusterName::new(name).unwrap(),
        admin,
        options,
        schema,
    }
}

fn tenancy(
    catalog: DynCatalog,
    servers: &[&Server],
    role: &str,
    policy: PlacementPolicy,
) -> PgTenancy {
    tenancy_with(catalog, servers, role, policy, Vec::new())
}

fn tenancy_with(
    catalog: DynCatalog,
    servers: &[&Server],
    role: &str,
    policy: PlacementPolicy,
    later: Vec<Migration>,
) -> PgTenancy {
    let mut migrations = vec![Migration::new(
        1,
        "notes".into(),
        MigrationType::Simple,
        NOTES_TENANT.into_sql_str(),
        false,
    )];
    migrations.extend(later);
    let mut builder = PgTenancy::builder(catalog)
        .tenant_table(TenantTable::new("notes").unwrap())
        .tenant_migrations(Migrator::with_migrations(migrations))
        .placement_policy(policy);
    for s in servers {
        builder = builder.cluster(PgClusterConfig::new(
            s.name.clone(),
            s.options.clone(),
            SqlIdent::new(role).unwrap(),
        ));
    }
    builder.build().unwrap()
}

#[tokio::test]
async fn tenants_spread_over_two_servers_stay_isolated() {
    let Some((url1, url2)) = urls("two_servers") else {
        return;
    };
    let one = server(&url1, "one").await;
    let two = server(&url2, "two").await;
    let role = unique_name("saas_rt");
    let catalog = PgCatalog::new(one.admin.clone());
    catalog.migrate().await.unwrap();
    let catalog: DynCatalog = Arc::new(catalog);
    let round_robin = tenancy(
        Arc::clone(&catalog),
        &[&one, &two],
        &role,
        PlacementPolicy::RoundRobin,
    );
    round_robin.setup().await.unwrap();

    let mut tenants = Vec::new();
    for (i, strategy) in [
        Strategy::Schema,
        Strategy::Schema,
        Strategy::Shared,
        Strategy::Shared,
    ]
    .into_iter()
    .enumerate()
    {
        let new = round_robin
            .new_tenant(TenantSlug::parse(&format!("t{i}")).unwrap(), "T", strategy)
            .await
            .unwrap();
        let record = round_robin.provision(new).await.unwrap();
        tenants.push(record);
    }
    let on = |name: &str| {
        tenants
            .iter()
            .filter(|t| t.placement.cluster().as_str() == name)
            .count()
    };
    assert_eq!((on("one"), on("two")), (2, 2), "round-robin alternates");

    for t in &tenants {
        let ctx = TenantContext::new(t.id, t.slug.clone());
        let mut tx = round_robin.begin(&ctx).await.unwrap();
        sqlx::query("INSERT INTO notes (tenant_id, body) VALUES ($1, $2)")
            .bind(t.id)
            .bind(t.slug.as_str())
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }
    for t in &tenants {
        let ctx = TenantContext::new(t.id, t.slug.clone());
        let mut conn = round_robin.acquire(&ctx).await.unwrap();
        let seen: Vec<String> = sqlx::query_scalar("SELECT body FROM notes")
            .fetch_all(&mut *conn)
            .await
            .unwrap();
        assert_eq!(seen, vec![t.slug.to_string()]);
        // The data is physically on the tenant's server.
        let server = if t.placement.cluster().as_str() == "one" {
            &one
        } else {
            &two
        };
        let where_sql = match t.placement.object_name() {
            Some(schema) => format!("SELECT count(*) FROM {}.notes", schema.quoted()),
            None => format!("SELECT count(*) FROM notes WHERE tenant_id = '{}'", t.id),
        };
        let n: i64 = sqlx::query_scalar(AssertSqlSafe(where_sql))
            .fetch_one(&server.admin)
            .await
            .unwrap();
        assert_eq!(n, 1, "{} is on {}", t.slug, t.placement.cluster());
    }

    // Fewest tenants: after deleting one on `two`, the next goes there.
    let on_two = tenants
        .iter()
        .find(|t| t.placement.cluster().as_str() == "two")
        .unwrap();
    round_robin.delete_tenant(on_two.id).await.unwrap();
    let fewest = tenancy(
        Arc::clone(&catalog),
        &[&one, &two],
        &role,
        PlacementPolicy::FewestTenants,
    );
    assert_eq!(fewest.choose_cluster().await.unwrap().as_str(), "two");
    let explicit = tenancy(
        Arc::clone(&catalog),
        &[&one, &two],
        &role,
        PlacementPolicy::Explicit(ClusterName::new("one").unwrap()),
    );
    assert_eq!(explicit.choose_cluster().await.unwrap().as_str(), "one");

    for t in &tenants {
        round_robin.delete_tenant(t.id).await.unwrap();
    }
    drop_servers(&[&one, &two], &role).await;
}

/// Every day-two operation on tenants of the second server: a database
/// tenant there, export from a row tenant on the first into schema and
/// database tenants on the second, a fleet migration across both, a
/// clean audit of both, deletion.
#[tokio::test]
async fn operations_reach_tenants_on_the_second_server() {
    let Some((url1, url2)) = urls("two_servers_ops") else {
        return;
    };
    let one = server(&url1, "one").await;
    let two = server(&url2, "two").await;
    let role = unique_name("saas_rt");
    let catalog = PgCatalog::new(one.admin.clone());
    catalog.migrate().await.unwrap();
    let catalog: DynCatalog = Arc::new(catalog);
    let v1 = tenancy(
        Arc::clone(&catalog),
        &[&one, &two],
        &role,
        PlacementPolicy::RoundRobin,
    );
    v1.setup().await.unwrap();
    let provision = |slug: &str, strategy: Strategy, cluster: &Server| {
        let new = NewTenant::new(
            TenantSlug::parse(slug).unwrap(),
            slug,
            strategy,
            cluster.name.clone(),
        )
        .unwrap();
        let v1 = v1.clone();
        async move { v1.provision(new).await.unwrap() }
    };
    let source = provision("src", Strategy::Shared, &one).await;
    let schema = provision("sch", Strategy::Schema, &two).await;
    let database = provision("dbt", Strategy::Database, &two).await;
    assert_eq!(database.placement.cluster().as_str(), "two");
    let ctx = |r: &saas_tenancy::TenantRecord| TenantContext::new(r.id, r.slug.clone());

    let mut tx = v1.begin(&ctx(&source)).await.unwrap();
    sqlx::query(
        "INSERT INTO notes (tenant_id, body) SELECT $1, 'note ' || g FROM generate_series(1, 5) g",
    )
    .bind(source.id)
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();

    // Export on server one, import into both tenants on server two.
    let archive = v1.export_tenant(source.id).await.unwrap();
    for target in [&schema, &database] {
        assert_eq!(v1.import_tenant(&ctx(target), &archive).await.unwrap(), 5);
        let mut conn = v1.acquire(&ctx(target)).await.unwrap();
        let bodies: Vec<String> = sqlx::query_scalar("SELECT body FROM notes ORDER BY id")
            .fetch_all(&mut *conn)
            .await
            .unwrap();
        let expected: Vec<String> = (1..=5).map(|i| format!("note {i}")).collect();
        assert_eq!(bodies, expected, "{} on server two", target.slug);
    }
    // The database tenant's data is physically on server two.
    let on_two: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(database.placement.object_name().unwrap().as_str())
            .fetch_one(&two.admin)
            .await
            .unwrap();
    assert!(on_two);

    // A fleet migration reaches the schema and database tenants of the
    // second server; the row tenant has no tenant migrations.
    let v2 = tenancy_with(
        Arc::clone(&catalog),
        &[&one, &two],
        &role,
        PlacementPolicy::RoundRobin,
        vec![Migration::new(
            2,
            "pinned".into(),
            MigrationType::Simple,
            "ALTER TABLE notes ADD COLUMN pinned boolean NOT NULL DEFAULT false".into_sql_str(),
            false,
        )],
    );
    let report = v2
        .migrate_tenants(saas_tenancy::postgres::MigrationOptions::default())
        .await
        .unwrap();
    let mut migrated = report.migrated.clone();
    migrated.sort();
    let mut expected = vec![schema.id, database.id];
    expected.sort();
    assert_eq!(migrated, expected, "{:?}", report.failed);
    for target in [&schema, &database] {
        let mut conn = v2.acquire(&ctx(target)).await.unwrap();
        let pinned: i64 = sqlx::query_scalar("SELECT count(*) FROM notes WHERE NOT pinned")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert_eq!(pinned, 5, "{} migrated on server two", target.slug);
    }

    // Both servers audit clean.
    let findings = v2.audit().await.unwrap();
    assert!(findings.is_empty(), "{findings:#?}");

    for t in [&source, &schema, &database] {
        v2.delete_tenant(t.id).await.unwrap();
    }
    let gone: bool =
        sqlx::query_scalar("SELECT NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(database.placement.object_name().unwrap().as_str())
            .fetch_one(&two.admin)
            .await
            .unwrap();
    assert!(
        gone,
        "the database tenant's database is dropped on server two"
    );
    drop_servers(&[&one, &two], &role).await;
}

/// Drops the test schemas and the runtime role on every server.
pub(crate) async fn drop_servers(servers: &[&Server], role: &str) {
    for s in servers {
        s.admin
            .execute(AssertSqlSafe(format!(
                "DROP SCHEMA \"{}\" CASCADE; DROP OWNED BY \"{role}\"; DROP ROLE \"{role}\"",
                s.schema
            )))
            .await
            .unwrap();
        s.admin.close().await;
    }
}
