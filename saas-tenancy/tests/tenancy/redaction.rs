//! Debug output of configurations that hold credentials never shows them.

use std::sync::Arc;

use saas_tenancy::postgres::{PgClusterConfig, PgTenancy, SqlIdent};
use saas_tenancy::sqlite::{SqliteClusterConfig, SqliteTenancy};
use saas_tenancy::{ClusterName, DynCatalog, InMemoryCatalog, TenancyError};
use sqlx::postgres::PgConnectOptions;

const PASSWORD: &str = "pw-Sekr1t-42";

fn cluster(admin: PgConnectOptions) -> PgClusterConfig {
    PgClusterConfig::new(
        ClusterName::new("main").unwrap(),
        admin,
        SqlIdent::new("app_runtime").unwrap(),
    )
}

/// The same credentials given as a URL and through the setter.
fn admin_options() -> [PgConnectOptions; 2] {
    [
        format!("postgres://tenancy_admin:{PASSWORD}@db.internal:6543/app")
            .parse()
            .unwrap(),
        PgConnectOptions::new_without_pgpass()
            .host("db.internal")
            .port(6543)
            .database("app")
            .username("tenancy_admin")
            .password(PASSWORD),
    ]
}

fn assert_redacted(text: &str) {
    assert!(!text.contains(PASSWORD), "password shown: {text}");
    for shown in ["db.internal", "6543", "app", "tenancy_admin", "app_runtime"] {
        assert!(text.contains(shown), "{shown} missing from {text}");
    }
}

#[test]
fn cluster_config_debug_hides_the_admin_password() {
    for admin in admin_options() {
        let config = cluster(admin);
        assert_redacted(&format!("{config:?}"));
        assert_redacted(&format!("{config:#?}"));
    }
}

/// A move's replication connection string carries its own password.
#[test]
fn cluster_config_debug_hides_the_replication_conninfo() {
    for admin in admin_options() {
        let config = cluster(admin).with_replication_conninfo(format!(
            "host=replica.internal user=replicator password={PASSWORD}"
        ));
        for text in [format!("{config:?}"), format!("{config:#?}")] {
            assert_redacted(&text);
            assert!(!text.contains("replicator"), "conninfo shown: {text}");
        }
    }
}

#[tokio::test]
async fn tenancy_builder_and_tenancy_debug_hide_the_admin_password() {
    for admin in admin_options() {
        let catalog: DynCatalog = Arc::new(InMemoryCatalog::default());
        let builder = PgTenancy::builder(catalog).cluster(cluster(admin));
        assert_redacted(&format!("{builder:?}"));
        assert_redacted(&format!("{builder:#?}"));
        let tenancy = builder.build().unwrap();
        assert!(!format!("{tenancy:?}").contains(PASSWORD));
    }
}

/// `tenant_tables` by name: valid names are declared as `tenant_table`
/// would declare them; an invalid one fails `build` with its name, on both
/// backends, rather than being dropped.
#[tokio::test]
async fn tenant_tables_by_name_declare_them_or_fail_the_build() {
    let catalog = || -> DynCatalog { Arc::new(InMemoryCatalog::default()) };
    let [admin, _] = admin_options();
    let tenancy = PgTenancy::builder(catalog())
        .cluster(cluster(admin.clone()))
        .tenant_tables(["projects", "notes"])
        .build()
        .unwrap();
    let names: Vec<&str> = tenancy
        .tenant_tables()
        .iter()
        .map(|t| t.table.as_str())
        .collect();
    assert_eq!(names, ["projects", "notes"]);
    let refused = PgTenancy::builder(catalog())
        .cluster(cluster(admin))
        .tenant_tables(["projects", "notes; DROP TABLE x"])
        .build();
    assert!(
        matches!(&refused, Err(TenancyError::InvalidInput(m)) if m.contains("notes; DROP TABLE x")),
        "{refused:?}"
    );

    let dir = std::env::temp_dir().join(saas_tenancy::testing::unique_name("tables_by_name"));
    let sqlite = |names: &[&str]| {
        SqliteTenancy::builder(catalog())
            .cluster(SqliteClusterConfig::new(
                ClusterName::new("local").unwrap(),
                dir.join("shared.sqlite"),
                dir.clone(),
            ))
            .tenant_tables(names.iter().copied())
            .build()
    };
    let tenancy = sqlite(&["projects"]).unwrap();
    assert_eq!(tenancy.tenant_tables()[0].table.as_str(), "projects");
    let refused = sqlite(&["projects", "bad name"]);
    assert!(
        matches!(&refused, Err(TenancyError::InvalidInput(m)) if m.contains("bad name")),
        "{refused:?}"
    );
}
