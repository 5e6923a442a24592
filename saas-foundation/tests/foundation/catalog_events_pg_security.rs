//! Whoever writes the catalog, its event is written: a role with no right
//! on the outbox changes a tenant's status while the outbox has the
//! tenancy's row-level security forced on it and the trigger function's
//! owner does not bypass it.

use saas_foundation::catalog_events::TENANT_STATUS_CHANGED;
use saas_tenancy::postgres::row_security_statements;
use saas_tenancy::{SqlIdent, TenantTable};
use saas_test_support::{Service, service_url, unique_name};
use sqlx::{AssertSqlSafe, Connection, Executor};

use crate::catalog_events::{owned, step};
use crate::catalog_events_pg::open;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_events_are_written_whoever_writes_the_catalog() {
    let Some(url) = service_url(Service::Postgres, "pg_events_are_written_whoever_writes") else {
        return;
    };
    let schema = unique_name("saas_cat_rls");
    let site = open(&url, &schema, &unique_name("saas_rt")).await;
    let other = site.new_tenant("globex").await;
    let before = site.outbox().await.len();
    let mut conn = site.admin.acquire().await.unwrap();
    // A writer with no right on the outbox, under forced row-level
    // security, through a function owned by a role without BYPASSRLS: the
    // event is written for the changed tenant, and the writer's own tenant
    // setting is as it was afterwards.
    let owner = unique_name("saas_ev_owner");
    let writer = unique_name("saas_ev_writer");
    let s = &schema;
    let ev = format!("{schema}_ev");
    for sql in [
        format!("CREATE ROLE \"{owner}\" NOLOGIN NOSUPERUSER NOBYPASSRLS"),
        format!("CREATE ROLE \"{writer}\" NOLOGIN NOSUPERUSER NOBYPASSRLS"),
        format!("GRANT USAGE ON SCHEMA \"{s}\" TO \"{writer}\""),
        format!("GRANT USAGE ON SCHEMA \"{ev}\" TO \"{owner}\""),
        format!("GRANT INSERT ON \"{ev}\".saas_events_outbox TO \"{owner}\""),
        format!("GRANT USAGE ON SEQUENCE \"{ev}\".saas_events_outbox_seq_seq TO \"{owner}\""),
        format!("ALTER FUNCTION \"{s}\".saas_tenant_events_outbox() OWNER TO \"{owner}\""),
        format!("GRANT SELECT, UPDATE ON \"{s}\".saas_tenants TO \"{writer}\""),
    ] {
        conn.execute(AssertSqlSafe(sql)).await.unwrap();
    }
    // The tenancy's own statements (unqualified): run in the outbox's schema.
    let outbox_table = TenantTable::new("saas_events_outbox").unwrap();
    let mut tx = conn.begin().await.unwrap();
    tx.execute(AssertSqlSafe(format!("SET LOCAL search_path TO \"{ev}\"")))
        .await
        .unwrap();
    for sql in row_security_statements(&outbox_table, &SqlIdent::new(&site.role).unwrap()) {
        tx.execute(AssertSqlSafe(sql)).await.unwrap();
    }
    tx.commit().await.unwrap();
    // The control: the function's owner inserting by itself is refused.
    let mut tx = conn.begin().await.unwrap();
    tx.execute(AssertSqlSafe(format!("SET LOCAL ROLE \"{owner}\"")))
        .await
        .unwrap();
    let refused = sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO \"{ev}\".saas_events_outbox (tenant_id, topic, event) VALUES ($1, 'x', '{{}}')"
    )))
    .bind(other.id)
    .execute(&mut *tx)
    .await;
    assert!(refused.is_err(), "row-level security is not in force");
    drop(tx);
    let unrelated = uuid::Uuid::now_v7().to_string();
    let mut tx = conn.begin().await.unwrap();
    tx.execute(AssertSqlSafe(format!("SET LOCAL ROLE \"{writer}\"")))
        .await
        .unwrap();
    sqlx::query("SELECT set_config('saas.tenant_id', $1, true)")
        .bind(&unrelated)
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("UPDATE saas_tenants SET status = 'suspended' WHERE id = $1")
        .bind(other.id)
        .execute(&mut *tx)
        .await
        .unwrap();
    let setting: String = sqlx::query_scalar("SELECT current_setting('saas.tenant_id')")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(setting, unrelated);
    // The writer itself cannot touch the outbox.
    let refused = tx
        .execute(AssertSqlSafe(format!(
            "SELECT count(*) FROM \"{ev}\".saas_events_outbox"
        )))
        .await;
    assert!(refused.is_err(), "the writer read the outbox");
    drop(tx);
    // Not committed: the refused read aborted it. Again, committing.
    let mut tx = conn.begin().await.unwrap();
    tx.execute(AssertSqlSafe(format!("SET LOCAL ROLE \"{writer}\"")))
        .await
        .unwrap();
    sqlx::query("UPDATE saas_tenants SET status = 'suspended' WHERE id = $1")
        .bind(other.id)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    drop(conn);
    let rows = site.outbox().await;
    assert_eq!(rows.len(), before + 1, "one event, not one per install");
    let (tenant, event) = &rows[before];
    assert_eq!(*tenant, Some(*other.id.as_uuid()));
    assert_eq!(
        step(event),
        owned(TENANT_STATUS_CHANGED, Some("active"), Some("suspended"))
    );
    site.cleanup(&[&owner, &writer]).await;
}
