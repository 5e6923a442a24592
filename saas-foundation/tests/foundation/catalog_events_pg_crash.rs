//! The PostgreSQL crash test, as on SQLite: a child "server" is SIGKILLed
//! mid-way; restarted, every committed change is handled exactly once.

use std::time::Duration;

use saas_core::TenantStatus;
use saas_foundation::catalog_events::TENANT_TOPIC;
use saas_foundation::events::InMemoryBus;
use saas_test_support::{Service, service_url, unique_name};
use sqlx::AssertSqlSafe;

use crate::catalog_events::{SERVER_VAR, assert_exactly_once, run_server_and_kill, script_steps};
use crate::catalog_events_pg::open;

/// The child's loop, as on SQLite.
async fn pg_server(url: &str, target: &str) {
    let (schema, role) = target.split_once(',').unwrap();
    let site = open(url, schema, role).await;
    let bus = InMemoryBus::new();
    // Slower than on SQLite: PostgreSQL's relay keeps up otherwise.
    let _router = site.consume(&bus, Duration::from_millis(20)).await;
    let _relay = site.relay(&bus).spawn();
    for i in 0.. {
        let record = site.new_tenant(&format!("crash-{i}")).await;
        println!("committed provision {i}");
        site.tenancy
            .set_status(record.id, TenantStatus::Suspended)
            .await
            .unwrap();
        println!("committed suspend {i}");
        site.tenancy.delete_tenant(record.id).await.unwrap();
        println!("committed delete {i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_lifecycle_events_survive_a_crash_between_commit_and_relay() {
    let Some(url) = service_url(Service::Postgres, "pg_lifecycle_events_survive_a_crash") else {
        return;
    };
    if let Ok(target) = std::env::var(SERVER_VAR) {
        return pg_server(&url, &target).await;
    }
    let (schema, role) = (unique_name("saas_cat_crash"), unique_name("saas_rt"));
    let site = open(&url, &schema, &role).await;
    site.admin.close().await;
    drop(site);
    let test = concat!(
        module_path!(),
        "::pg_lifecycle_events_survive_a_crash_between_commit_and_relay"
    );
    let target = format!("{schema},{role}");
    tokio::task::spawn_blocking(move || run_server_and_kill(test, &target, 60))
        .await
        .unwrap();

    let site = open(&url, &schema, &role).await;
    let catalog = site.catalog_statuses().await;
    let handled_before = site.handled().await.len();
    let left = site.outbox().await;
    assert!(
        !left.is_empty(),
        "the kill left no event between commit and relay"
    );
    let committed: usize = catalog.iter().map(|(_, s)| script_steps(s).len()).sum();
    eprintln!(
        "after the kill: {committed} committed changes, {handled_before} handled, {} in the outbox",
        left.len()
    );

    site.deliver_all().await;
    let handled = site.handled().await;
    assert_exactly_once(&catalog, &handled);

    // The same rows relayed again: acknowledged by the inbox, not handled.
    for (tenant, event) in &left {
        let body = String::from_utf8(event.to_json().unwrap()).unwrap();
        let sql = format!(
            "INSERT INTO \"{schema}_ev\".saas_events_outbox (tenant_id, topic, event) \
             VALUES ($1, $2, $3)"
        );
        sqlx::query(AssertSqlSafe(sql))
            .bind(tenant)
            .bind(TENANT_TOPIC)
            .bind(body)
            .execute(&site.admin)
            .await
            .unwrap();
    }
    site.deliver_all().await;
    assert_eq!(site.handled().await.len(), handled.len());
    assert_exactly_once(&catalog, &site.handled().await);
    site.cleanup(&[]).await;
}
