//! The SQLite crash test: a child "server" provisioning, suspending and
//! deleting tenants with a relay and a consumer running is SIGKILLed
//! mid-way; restarted, the relay delivers every committed change exactly
//! once to the inbox-deduplicated consumer, also when rows come twice.

use std::path::PathBuf;
use std::time::Duration;

use saas_foundation::catalog_events::TENANT_TOPIC;
use saas_foundation::events::InMemoryBus;

use crate::catalog_events::{SERVER_VAR, assert_exactly_once, run_server_and_kill, script_steps};
use crate::catalog_events_sqlite::{open, temp_dir};

/// The child's loop: provision, suspend and delete tenants one after the
/// other with a relay and a slow consumer running, until it is killed.
async fn sqlite_server(dir: PathBuf) {
    let site = open(&dir).await;
    let bus = InMemoryBus::new();
    let _router = site.consume(&bus, Duration::from_millis(5)).await;
    let _relay = site.relay(&bus).spawn();
    for i in 0.. {
        let record = site.new_tenant(&format!("crash-{i}")).await;
        println!("committed provision {i}");
        site.tenancy.suspend(record.id).await.unwrap();
        println!("committed suspend {i}");
        site.tenancy.delete_tenant(record.id).await.unwrap();
        println!("committed delete {i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_lifecycle_events_survive_a_crash_between_commit_and_relay() {
    if let Ok(dir) = std::env::var(SERVER_VAR) {
        return sqlite_server(PathBuf::from(dir)).await;
    }
    let dir = temp_dir();
    drop(open(&dir).await);
    let test = concat!(
        module_path!(),
        "::sqlite_lifecycle_events_survive_a_crash_between_commit_and_relay"
    );
    let target = dir.to_str().unwrap().to_owned();
    tokio::task::spawn_blocking(move || run_server_and_kill(test, &target, 60))
        .await
        .unwrap();

    // Restarted: what the killed server left behind.
    let site = open(&dir).await;
    let catalog = site.catalog_statuses().await;
    let handled_before = site.handled().await.len();
    let left = site.outbox().await;
    assert!(
        !left.is_empty(),
        "the kill left no event between commit and relay"
    );
    let committed: usize = catalog.iter().map(|(_, s)| script_steps(s).len()).sum();
    assert!(handled_before < committed);
    eprintln!(
        "after the kill: {committed} committed changes, {handled_before} handled, {} in the outbox",
        left.len()
    );

    site.deliver_all().await;
    let handled = site.handled().await;
    assert_exactly_once(&catalog, &handled);

    // The same rows relayed again (a relay that died after publishing,
    // before deleting): the inbox acknowledges them without handling.
    let mut conn = site.catalog.acquire().await.unwrap();
    for event in &left {
        let body = String::from_utf8(event.to_json().unwrap()).unwrap();
        sqlx::query(
            "INSERT INTO saas_events_outbox (tenant_id, topic, event, created_at) \
             VALUES (?, ?, ?, 0)",
        )
        .bind(event.tenant_id().map(|t| *t.as_uuid()))
        .bind(TENANT_TOPIC)
        .bind(body)
        .execute(&mut *conn)
        .await
        .unwrap();
    }
    drop(conn);
    site.deliver_all().await;
    assert_eq!(site.handled().await.len(), handled.len());
    assert_exactly_once(&catalog, &site.handled().await);
    drop(site);
    let _ = std::fs::remove_dir_all(&dir);
}
