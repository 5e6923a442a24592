//! SQLite tenant ids: the billing tables store `tenant_id` as `TenantId`'s
//! own sqlx encoding (a 16-byte BLOB), the form saas-tenancy and
//! saas-events store, so joins across the crates' tables match.

use chrono::{DateTime, SecondsFormat, Utc};
use saas_billing::store::sqlite::SqliteBillingStores;
use saas_billing::store::{IngestOutcome, StoredUsage};
use saas_billing::testing::fixtures;
use saas_billing::{
    BillingError, Invoice, InvoiceStatus, InvoiceStore, Subscription, SubscriptionStore, UsageStore,
};
use saas_core::TenantId;
use sqlx::{AssertSqlSafe, Executor, SqlitePool};

use crate::sql_stores::{sqlite_stores, unmigrated_sqlite_stores};

const TENANT_TABLES: [&str; 4] = [
    "billing_subscriptions",
    "billing_usage_events",
    "billing_usage_seals",
    "billing_invoices",
];

/// One row of `tenant` in each billing table, written through the stores.
async fn one_row_each(stores: &SqliteBillingStores, tenant: TenantId) {
    let subscription = stores
        .subscriptions()
        .insert(fixtures::subscription(tenant, fixtures::start()))
        .await
        .unwrap();
    let id = subscription.id();
    let usage = stores.usage();
    let out = usage
        .ingest(vec![fixtures::usage(tenant, id, "k-1", 0)])
        .await
        .unwrap();
    assert!(out[0].is_ok());
    usage.seal(tenant, id, 0).await.unwrap();
    stores
        .invoices()
        .create(fixtures::draft(tenant, id, 0))
        .await
        .unwrap();
}

/// A table keyed by tenant the way saas-tenancy's catalog and
/// saas-events' SQLite tables are: `TenantId` bound through sqlx.
async fn tenants_table(pool: &SqlitePool, tenant: TenantId) {
    pool.execute(
        "CREATE TABLE app_tenants (id BLOB PRIMARY KEY NOT NULL, name TEXT NOT NULL) STRICT",
    )
    .await
    .unwrap();
    sqlx::query("INSERT INTO app_tenants (id, name) VALUES (?1, 'acme')")
        .bind(tenant)
        .execute(pool)
        .await
        .unwrap();
}

#[tokio::test]
async fn sqlite_billing_rows_join_tables_keyed_by_tenant_id() {
    let (stores, cleanup) = sqlite_stores().await;
    let tenant = TenantId::new();
    tenants_table(stores.pool(), tenant).await;
    one_row_each(&stores, tenant).await;
    for table in TENANT_TABLES {
        let joined: Vec<String> = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT t.name FROM {table} b JOIN app_tenants t ON t.id = b.tenant_id"
        )))
        .fetch_all(stores.pool())
        .await
        .unwrap();
        assert_eq!(joined, ["acme"], "{table} joins app_tenants on tenant_id");
        let bound: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT count(*) FROM {table} WHERE tenant_id = ?1"
        )))
        .bind(tenant)
        .fetch_one(stores.pool())
        .await
        .unwrap();
        assert_eq!(bound, 1, "{table} matches a TenantId bound through sqlx");
    }
    cleanup.run().await;
}

#[tokio::test]
async fn sqlite_billing_tenant_ids_are_blobs_that_decode_as_tenant_id() {
    let (stores, cleanup) = sqlite_stores().await;
    let tenant = TenantId::new();
    one_row_each(&stores, tenant).await;
    for table in TENANT_TABLES {
        let types: Vec<String> = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT DISTINCT typeof(tenant_id) FROM {table}"
        )))
        .fetch_all(stores.pool())
        .await
        .unwrap();
        assert_eq!(types, ["blob"], "{table}.tenant_id");
        let decoded: TenantId =
            sqlx::query_scalar(AssertSqlSafe(format!("SELECT tenant_id FROM {table}")))
                .fetch_one(stores.pool())
                .await
                .unwrap();
        assert_eq!(decoded, tenant, "{table}.tenant_id decodes as TenantId");
    }
    cleanup.run().await;
}

/// Instants as version 1 stored them.
fn sortable(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Nanos, true)
}

/// What a version-1 database holds: two tenants, a subscription each,
/// usage with its sequence numbers, a seal, a draft and a finalized
/// invoice — written as the version-1 stores wrote them (tenant ids as
/// hyphenated text).
struct V1Rows {
    a: TenantId,
    b: TenantId,
    subscriptions: Vec<Subscription>,
    usage: Vec<StoredUsage>,
    invoices: Vec<Invoice>,
}

async fn insert_v1_rows(pool: &SqlitePool) -> V1Rows {
    let (a, b) = (TenantId::new(), TenantId::new());
    let mut subscriptions = Vec::new();
    for tenant in [a, b] {
        let mut state =
            serde_json::to_value(fixtures::subscription(tenant, fixtures::start())).unwrap();
        state["version"] = 1.into();
        let subscription: Subscription = serde_json::from_value(state.clone()).unwrap();
        sqlx::query(
            "INSERT INTO billing_subscriptions \
             (id, tenant_id, version, created_at, next_due_at, state) \
             VALUES (?1, ?2, 1, ?3, ?4, ?5)",
        )
        .bind(subscription.id().to_string())
        .bind(tenant.to_string())
        .bind(sortable(subscription.created_at()))
        .bind(subscription.next_due_at().map(sortable))
        .bind(state.to_string())
        .execute(pool)
        .await
        .unwrap();
        subscriptions.push(subscription);
    }
    let (sub_a, sub_b) = (subscriptions[0].id(), subscriptions[1].id());
    // Sequences with a gap, to see them kept rather than renumbered.
    let usage: Vec<StoredUsage> = [
        (a, sub_a, "a-1", 3),
        (a, sub_a, "a-2", 7),
        (b, sub_b, "b-1", 9),
    ]
    .into_iter()
    .map(|(tenant, sub, key, sequence)| StoredUsage {
        event: fixtures::usage(tenant, sub, key, 0).event,
        period: 0,
        billed_in: 0,
        sequence,
    })
    .collect();
    for stored in &usage {
        let e = &stored.event;
        sqlx::query(
            "INSERT INTO billing_usage_events (sequence, tenant_id, idempotency_key, \
             subscription_id, meter, value, occurred_at, occurred_nanos, properties, period, \
             billed_in) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, '{}', 0, 0)",
        )
        .bind(i64::try_from(stored.sequence).unwrap())
        .bind(e.tenant_id.to_string())
        .bind(&e.idempotency_key)
        .bind(e.subscription_id.to_string())
        .bind(e.meter.as_str())
        .bind(e.value.to_string())
        .bind(e.timestamp.timestamp())
        .bind(i64::from(e.timestamp.timestamp_subsec_nanos()))
        .execute(pool)
        .await
        .unwrap();
    }
    sqlx::query(
        "INSERT INTO billing_usage_seals (tenant_id, subscription_id, sealed_through) \
         VALUES (?1, ?2, 0)",
    )
    .bind(a.to_string())
    .bind(sub_a.to_string())
    .execute(pool)
    .await
    .unwrap();
    let draft = fixtures::draft(a, sub_a, 0);
    let mut finalized = fixtures::draft(b, sub_b, 0);
    // As version 1 stored it: finalized, with no number or payment state.
    finalized.status = InvoiceStatus::Finalized;
    finalized.finalized_at = Some(fixtures::start());
    for invoice in [&draft, &finalized] {
        let status = if invoice.status == InvoiceStatus::Draft {
            "draft"
        } else {
            "finalized"
        };
        sqlx::query(
            "INSERT INTO billing_invoices (id, tenant_id, subscription_id, period_index, \
             status, currency, total, created_at, finalize_after, finalized_at, body) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        )
        .bind(invoice.id.to_string())
        .bind(invoice.tenant_id.to_string())
        .bind(invoice.subscription_id.to_string())
        .bind(invoice.period_index)
        .bind(status)
        .bind(invoice.currency.code())
        .bind(invoice.total.amount().to_string())
        .bind(sortable(invoice.created_at))
        .bind(sortable(invoice.finalize_after))
        .bind(invoice.finalized_at.map(sortable))
        .bind(serde_json::to_string(invoice).unwrap())
        .execute(pool)
        .await
        .unwrap();
    }
    V1Rows {
        a,
        b,
        subscriptions,
        usage,
        invoices: vec![draft, finalized],
    }
}

async fn names(pool: &SqlitePool, kind: &str) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT name FROM sqlite_schema WHERE type = ?1 AND name LIKE 'billing%' ORDER BY name",
    )
    .bind(kind)
    .fetch_all(pool)
    .await
    .unwrap()
}

async fn row_counts(pool: &SqlitePool) -> Vec<i64> {
    let mut counts = Vec::new();
    for table in TENANT_TABLES {
        let n: i64 = sqlx::query_scalar(AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
            .fetch_one(pool)
            .await
            .unwrap();
        counts.push(n);
    }
    counts
}

/// A database at schema version 1 with text tenant ids — with the ledger,
/// or without it as the releases before the ledger left it — migrates to
/// BLOB tenant ids keeping every row, key, index and trigger, readable
/// and writable through the stores.
#[tokio::test]
async fn sqlite_migration_converts_text_tenant_ids_keeping_every_row() {
    for before_ledger in [false, true] {
        let (stores, cleanup) = unmigrated_sqlite_stores().await;
        let pool = stores.pool();
        assert_eq!(stores.migrate_to(1).await.unwrap(), 1);
        let v1_indexes = names(pool, "index").await;
        let v1_triggers = names(pool, "trigger").await;
        if before_ledger {
            pool.execute("DROP TABLE billing_schema_migrations")
                .await
                .unwrap();
        }
        let old = insert_v1_rows(pool).await;
        let (a, b) = (old.a, old.b);
        let (sub_a, sub_b) = (old.subscriptions[0].id(), old.subscriptions[1].id());
        assert_eq!(row_counts(pool).await, [2, 3, 1, 2]);

        stores.migrate().await.unwrap();

        let versions: Vec<i64> =
            sqlx::query_scalar("SELECT version FROM billing_schema_migrations ORDER BY version")
                .fetch_all(pool)
                .await
                .unwrap();
        assert_eq!(versions, [1, 2, 3, 4, 5, 6]);
        assert_eq!(row_counts(pool).await, [2, 3, 1, 2], "every row kept");
        for table in TENANT_TABLES {
            let types: Vec<String> = sqlx::query_scalar(AssertSqlSafe(format!(
                "SELECT DISTINCT typeof(tenant_id) FROM {table}"
            )))
            .fetch_all(pool)
            .await
            .unwrap();
            assert_eq!(types, ["blob"], "{table}.tenant_id");
        }
        let indexes = names(pool, "index").await;
        assert!(
            v1_indexes.iter().all(|i| indexes.contains(i)),
            "indexes kept: {indexes:?}"
        );
        let triggers = names(pool, "trigger").await;
        assert!(
            v1_triggers.iter().all(|t| triggers.contains(t)),
            "triggers kept: {triggers:?}"
        );

        // Readable through the stores, exactly as written.
        let subscriptions = stores.subscriptions();
        for subscription in &old.subscriptions {
            let got = subscriptions
                .get(subscription.tenant_id(), subscription.id())
                .await
                .unwrap();
            assert_eq!(&got, subscription);
        }
        assert_eq!(subscriptions.list(a).await.unwrap(), old.subscriptions[..1]);
        let usage = stores.usage();
        assert_eq!(usage.billed_in(a, sub_a, 0).await.unwrap(), old.usage[..2]);
        assert_eq!(
            usage.for_period(b, sub_b, 0, 1).await.unwrap(),
            old.usage[2..]
        );
        assert_eq!(usage.sealed_through(a, sub_a).await.unwrap(), Some(0));
        assert_eq!(usage.sealed_through(b, sub_b).await.unwrap(), None);
        let invoices = stores.invoices();
        for invoice in &old.invoices {
            let got = invoices.get(invoice.tenant_id, invoice.id).await.unwrap();
            assert_eq!(&got, invoice);
        }
        assert_eq!(
            invoices.find(a, sub_a, 0).await.unwrap().as_ref(),
            Some(&old.invoices[0])
        );
        assert_eq!(invoices.list(b, sub_b).await.unwrap(), old.invoices[1..]);

        // The keys still hold on converted rows.
        let again = usage
            .ingest(vec![
                fixtures::usage(a, sub_a, "a-1", 0),
                {
                    let mut other = fixtures::usage(a, sub_a, "a-2", 0);
                    other.event.value = saas_billing::dec!(2);
                    other
                },
                fixtures::usage(a, sub_a, "a-3", 0),
            ])
            .await
            .unwrap();
        assert!(matches!(
            again[0],
            Ok(IngestOutcome::Duplicate { billed_in: 0 })
        ));
        assert!(matches!(
            again[1],
            Err(BillingError::IdempotencyConflict { .. })
        ));
        // Period 0 is sealed: the new event is billed in period 1, after
        // the kept sequence numbers.
        assert!(matches!(
            again[2],
            Ok(IngestOutcome::Recorded { billed_in: 1 })
        ));
        let late = usage.billed_in(a, sub_a, 1).await.unwrap();
        assert_eq!(late.len(), 1);
        assert!(late[0].sequence > 9);
        assert!(matches!(
            subscriptions.insert(old.subscriptions[0].clone()).await,
            Err(BillingError::AlreadyExists { .. })
        ));
        assert!(matches!(
            invoices.create(fixtures::draft(a, sub_a, 0)).await,
            Err(BillingError::AlreadyExists { .. })
        ));
        let update = sqlx::query("UPDATE billing_invoices SET total = '0' WHERE id = ?1")
            .bind(old.invoices[1].id.to_string())
            .execute(pool)
            .await;
        assert!(update.is_err(), "the trigger still refuses the update");

        // And the converted rows join tables keyed by TenantId.
        tenants_table(pool, a).await;
        let joined: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM billing_usage_events u JOIN app_tenants t ON t.id = u.tenant_id",
        )
        .fetch_one(pool)
        .await
        .unwrap();
        assert_eq!(joined, 3);

        stores.migrate().await.unwrap();
        assert_eq!(row_counts(pool).await, [2, 4, 1, 2]);
        cleanup.run().await;
    }
}

/// A stored tenant id that is not a UUID, or a schema newer than the
/// crate, stops the migration with an error and changes nothing.
#[tokio::test]
async fn sqlite_migration_refuses_what_it_cannot_convert() {
    let (stores, cleanup) = unmigrated_sqlite_stores().await;
    let pool = stores.pool();
    for version in [0, SqliteBillingStores::SCHEMA_VERSION + 1] {
        assert!(matches!(
            stores.migrate_to(version).await,
            Err(BillingError::InvalidInput { .. })
        ));
    }
    stores.migrate_to(1).await.unwrap();
    insert_v1_rows(pool).await;
    sqlx::query("UPDATE billing_usage_seals SET tenant_id = 'tenant-a' WHERE sealed_through = 0")
        .execute(pool)
        .await
        .unwrap();
    let err = stores.migrate().await.unwrap_err();
    assert!(
        matches!(
            err,
            BillingError::Backend {
                retryable: false,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("tenant-a"), "{err}");
    let types: Vec<String> =
        sqlx::query_scalar("SELECT DISTINCT typeof(tenant_id) FROM billing_subscriptions")
            .fetch_all(pool)
            .await
            .unwrap();
    assert_eq!(types, ["text"], "nothing converted");
    assert_eq!(row_counts(pool).await, [2, 3, 1, 2]);
    assert_eq!(stores.migrate_to(1).await.unwrap(), 1);

    pool.execute("DELETE FROM billing_usage_seals")
        .await
        .unwrap();
    stores.migrate().await.unwrap();
    sqlx::query(
        "INSERT INTO billing_schema_migrations (version, description, applied_at) \
         VALUES (?1, 'from the future', '')",
    )
    .bind(SqliteBillingStores::SCHEMA_VERSION + 1)
    .execute(pool)
    .await
    .unwrap();
    assert!(matches!(
        stores.migrate().await,
        Err(BillingError::Backend { .. })
    ));
    cleanup.run().await;
}
