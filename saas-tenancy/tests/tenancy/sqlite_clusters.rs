//! SQLite clusters (a shared file and a tenant directory each) chosen by a
//! placement policy, as PostgreSQL servers are.

use std::path::PathBuf;
use std::sync::Arc;

use saas_core::{SystemClock, TenantContext, TenantSlug};
use saas_tenancy::postgres::TenantTable;
use saas_tenancy::sqlite::{SqliteClusterConfig, SqliteTenancy};
use saas_tenancy::testing::sqlite::{SQLITE_NOTES_SHARED, sqlite_migrations};
use saas_tenancy::testing::unique_name;
use saas_tenancy::{
    ClusterName, DynCatalog, InMemoryCatalog, PlacementPolicy, Strategy, TenancyError,
};
use sqlx::migrate::Migrator;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{Connection, Executor};

struct Cluster {
    name: ClusterName,
    shared_file: PathBuf,
    dir: PathBuf,
}

async fn cluster(root: &std::path::Path, name: &str) -> Cluster {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let shared_file = dir.join("shared.sqlite");
    let options = SqliteConnectOptions::new()
        .filename(&shared_file)
        .create_if_missing(true);
    let mut conn = SqliteConnection::connect_with(&options).await.unwrap();
    conn.execute(SQLITE_NOTES_SHARED).await.unwrap();
    conn.close().await.unwrap();
    Cluster {
        name: ClusterName::new(name).unwrap(),
        shared_file,
        dir,
    }
}

fn tenancy(catalog: &DynCatalog, clusters: &[&Cluster], policy: PlacementPolicy) -> SqliteTenancy {
    let mut builder = SqliteTenancy::builder(Arc::clone(catalog))
        .tenant_table(TenantTable::new("notes").unwrap())
        .tenant_migrations(Migrator::with_migrations(sqlite_migrations()))
        .placement_policy(policy);
    for c in clusters {
        builder = builder.cluster(SqliteClusterConfig::new(
            c.name.clone(),
            c.shared_file.clone(),
            c.dir.clone(),
        ));
    }
    builder.build().unwrap()
}

#[tokio::test]
async fn placement_policies_spread_sqlite_tenants_over_clusters() {
    let root = std::env::temp_dir().join(unique_name("saas_sqlite_clusters"));
    let a = cluster(&root, "a").await;
    let b = cluster(&root, "b").await;
    let catalog: DynCatalog = Arc::new(InMemoryCatalog::new(Arc::new(SystemClock)));
    let round_robin = tenancy(&catalog, &[&b, &a], PlacementPolicy::RoundRobin);
    round_robin.setup().await.unwrap();
    assert_eq!(round_robin.clusters(), vec![a.name.clone(), b.name.clone()]);

    let mut records = Vec::new();
    for (i, strategy) in [Strategy::Database, Strategy::Database, Strategy::Shared]
        .into_iter()
        .enumerate()
    {
        let new = round_robin
            .new_tenant(TenantSlug::parse(&format!("t{i}")).unwrap(), "T", strategy)
            .await
            .unwrap();
        records.push(round_robin.provision(new).await.unwrap());
    }
    let clusters: Vec<&str> = records
        .iter()
        .map(|r| r.placement.cluster().as_str())
        .collect();
    assert_eq!(
        clusters,
        vec!["a", "b", "a"],
        "round-robin alternates by name"
    );
    // A database tenant's file is in its cluster's directory, not the other's.
    for (record, own, other) in [(&records[0], &a, &b), (&records[1], &b, &a)] {
        let file = format!(
            "{}.sqlite",
            record.placement.object_name().unwrap().as_str()
        );
        assert!(own.dir.join(&file).is_file(), "{file} in {}", own.name);
        assert!(
            !other.dir.join(&file).exists(),
            "{file} not in {}",
            other.name
        );
        let ctx = TenantContext::new(record.id, record.slug.clone());
        let mut tx = round_robin.begin(&ctx).await.unwrap();
        sqlx::query("INSERT INTO notes (tenant_id, id, body) VALUES (?, 1, 'x')")
            .bind(record.id)
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }

    // Two tenants on `a`, one on `b`: the fewest-tenants policy picks `b`;
    // after deleting the one on `b` it still does, and with it deleted
    // and one more on `a` deleted too, the tie goes to `a` (first by name).
    let fewest = tenancy(&catalog, &[&a, &b], PlacementPolicy::FewestTenants);
    assert_eq!(fewest.choose_cluster().await.unwrap(), b.name);
    fewest.delete_tenant(records[1].id).await.unwrap();
    assert_eq!(fewest.choose_cluster().await.unwrap(), b.name);
    fewest.delete_tenant(records[0].id).await.unwrap();
    fewest.delete_tenant(records[2].id).await.unwrap();
    assert_eq!(fewest.choose_cluster().await.unwrap(), a.name);

    let explicit = tenancy(
        &catalog,
        &[&a, &b],
        PlacementPolicy::Explicit(b.name.clone()),
    );
    assert_eq!(explicit.choose_cluster().await.unwrap(), b.name);
    let unknown = tenancy(
        &catalog,
        &[&a, &b],
        PlacementPolicy::Explicit(ClusterName::new("nowhere").unwrap()),
    );
    assert!(matches!(
        unknown.choose_cluster().await,
        Err(TenancyError::UnknownCluster(name)) if name == "nowhere"
    ));
    std::fs::remove_dir_all(&root).unwrap();
}
