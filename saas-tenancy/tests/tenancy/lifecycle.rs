//! Deleting tenants: the data is gone for every placement, including rows
//! in tables added after the tenancy was configured.

use saas_core::TenantStatus;
use saas_tenancy::postgres::ScopeMode;
use saas_tenancy::{Strategy, TenancyError, TenantObjectName};
use sqlx::Executor;

use crate::pg_env::sandbox;

#[tokio::test]
async fn deleting_removes_the_data_of_every_placement() {
    let Some(mut env) = sandbox("lifecycle::delete", ScopeMode::Shared).await else {
        return;
    };
    let gone = env.tenant("gone", Strategy::Shared).await.unwrap();
    let kept = env.tenant("kept", Strategy::Shared).await.unwrap();
    let schema = env.tenant("schema", Strategy::Schema).await.unwrap();
    let database = env.tenant("database", Strategy::Database).await.unwrap();

    // A tenant table the tenancy was never told about, with a foreign key
    // into a declared one (so the delete must find an order).
    env.admin
        .execute(
            "CREATE TABLE comments (tenant_id uuid NOT NULL, note_id bigint NOT NULL, \
             text text NOT NULL, FOREIGN KEY (tenant_id, note_id) REFERENCES notes (tenant_id, id))",
        )
        .await
        .unwrap();
    for ctx in [&gone, &kept] {
        let id: i64 =
            sqlx::query_scalar("INSERT INTO notes (tenant_id, body) VALUES ($1, 'n') RETURNING id")
                .bind(ctx.tenant_id())
                .fetch_one(&env.admin)
                .await
                .unwrap();
        sqlx::query("INSERT INTO comments VALUES ($1, $2, 'c')")
            .bind(ctx.tenant_id())
            .bind(id)
            .execute(&env.admin)
            .await
            .unwrap();
    }

    for ctx in [&gone, &schema, &database] {
        let record = env.tenancy.delete_tenant(ctx.tenant_id()).await.unwrap();
        assert_eq!(record.status, TenantStatus::Deleted);
        // Again: nothing to do, still fine.
        env.tenancy.delete_tenant(ctx.tenant_id()).await.unwrap();
        assert!(matches!(
            env.tenancy.begin(ctx).await.unwrap_err(),
            TenancyError::TenantNotServable { .. }
        ));
    }

    let count = |table: &'static str, ctx: saas_core::TenantId| {
        let admin = env.admin.clone();
        async move {
            let sql = format!("SELECT count(*) FROM {table} WHERE tenant_id = $1");
            sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql))
                .bind(ctx)
                .fetch_one(&admin)
                .await
                .unwrap()
        }
    };
    // The admin pool is a superuser here; it sees through RLS.
    assert_eq!(count("notes", gone.tenant_id()).await, 0);
    assert_eq!(count("comments", gone.tenant_id()).await, 0);
    assert_eq!(count("notes", kept.tenant_id()).await, 1);
    assert_eq!(count("comments", kept.tenant_id()).await, 1);

    let schema_name = TenantObjectName::for_tenant(schema.tenant_id());
    let db_name = TenantObjectName::for_tenant(database.tenant_id());
    let (schemas, roles, databases): (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM pg_namespace WHERE nspname = $1), \
                (SELECT count(*) FROM pg_roles WHERE rolname = $1), \
                (SELECT count(*) FROM pg_database WHERE datname = $2)",
    )
    .bind(schema_name.as_str())
    .bind(db_name.as_str())
    .fetch_one(&env.admin)
    .await
    .unwrap();
    assert_eq!((schemas, roles, databases), (0, 0, 0));

    env.admin.execute("DROP TABLE comments").await.unwrap();
    env.cleanup().await;
}

/// Two deletes of one tenant, the second started from 0 to 11 ms after the
/// first (so it arrives before, during and after the first's work, also
/// after the first marked the tenant deleted): both return the deleted
/// record, and the deletion — its hook — happens once per tenant.
#[tokio::test]
async fn concurrent_deletes_of_one_tenant_do_not_interleave() {
    let Some(mut env) = sandbox("lifecycle::concurrent", ScopeMode::Shared).await else {
        return;
    };
    let recorder = std::sync::Arc::new(Recorder::default());
    let tenancy = env.tenancy_with(|b| b.hooks(recorder.clone())).unwrap();
    for lag in 0..12u64 {
        let strategy = if lag % 3 == 0 {
            Strategy::Database
        } else {
            Strategy::Schema
        };
        let slug = format!("twice{lag}");
        let t = env.tenant(&slug, strategy).await.unwrap();
        let (a, b) = tokio::join!(tenancy.delete_tenant(t.tenant_id()), async {
            tokio::time::sleep(std::time::Duration::from_millis(lag)).await;
            tenancy.delete_tenant(t.tenant_id()).await
        });
        assert_eq!(a.unwrap().status, TenantStatus::Deleted, "lag {lag}");
        assert_eq!(b.unwrap().status, TenantStatus::Deleted, "lag {lag}");
        // Serialised, not merely idempotent: the second delete waited for
        // the first and found nothing left to do, so the deletion ran once.
        assert_eq!(recorder.count(&format!("deleted {slug}")), 1, "lag {lag}");
    }
    env.cleanup().await;
}

/// Records each lifecycle event as a line (`deleted <slug>`, …).
#[derive(Debug, Default)]
pub(crate) struct Recorder(std::sync::Mutex<Vec<String>>);

impl Recorder {
    /// How many recorded lines are exactly `line`.
    pub(crate) fn count(&self, line: &str) -> usize {
        self.0.lock().unwrap().iter().filter(|l| *l == line).count()
    }
}

#[async_trait::async_trait]
impl saas_tenancy::LifecycleHooks for Recorder {
    async fn on_event(&self, event: &saas_tenancy::LifecycleEvent) -> Result<(), TenancyError> {
        use saas_tenancy::LifecycleEvent as E;
        let line = match event {
            E::Provisioned(r) => format!("provisioned {}", r.slug),
            E::StatusChanged { record, from } => {
                format!("{} {from} -> {}", record.slug, record.status)
            }
            E::Deleted(r) => format!("deleted {}", r.slug),
            _ => "other".to_owned(),
        };
        self.0.lock().unwrap().push(line);
        Ok(())
    }
}

#[tokio::test]
async fn hooks_see_every_lifecycle_step() {
    let Some(env) = sandbox("lifecycle::hooks", ScopeMode::Shared).await else {
        return;
    };
    let recorder = std::sync::Arc::new(Recorder::default());
    let tenancy = env.tenancy_with(|b| b.hooks(recorder.clone())).unwrap();
    let new = tenancy
        .new_tenant(
            saas_core::TenantSlug::parse("hooked").unwrap(),
            "H",
            Strategy::Schema,
        )
        .await
        .unwrap();
    let record = tenancy.provision(new).await.unwrap();
    tenancy
        .set_status(record.id, TenantStatus::Suspended)
        .await
        .unwrap();
    tenancy
        .set_status(record.id, TenantStatus::Suspended)
        .await
        .unwrap();
    tenancy
        .set_status(record.id, TenantStatus::Active)
        .await
        .unwrap();
    tenancy.delete_tenant(record.id).await.unwrap();
    assert_eq!(
        *recorder.0.lock().unwrap(),
        vec![
            "provisioned hooked",
            "hooked active -> suspended",
            "hooked suspended -> active",
            "hooked active -> deleting",
            "deleted hooked",
        ]
    );
    env.cleanup().await;
}

/// A tenant placed on a cluster this tenancy does not know is refused
/// before the catalog records it: the slug stays free.
#[tokio::test]
async fn provisioning_on_an_unknown_cluster_leaves_nothing() {
    let Some(env) = sandbox("lifecycle::unknown_cluster", ScopeMode::Shared).await else {
        return;
    };
    let slug = saas_core::TenantSlug::parse("nowhere-co").unwrap();
    let new = saas_tenancy::NewTenant::new(
        slug.clone(),
        "N",
        Strategy::Schema,
        saas_tenancy::ClusterName::new("nowhere").unwrap(),
    )
    .unwrap();
    let err = env.tenancy.provision(new).await.unwrap_err();
    assert!(
        matches!(&err, saas_tenancy::TenancyError::UnknownCluster(c) if c == "nowhere"),
        "{err}"
    );
    assert!(
        env.tenancy
            .catalog()
            .get_by_slug(&slug)
            .await
            .unwrap()
            .is_none(),
        "the slug is not taken"
    );
    env.cleanup().await;
}

/// `set_status` only suspends and resumes: the statuses that need work
/// done (provisioning, deleting, deleted) are refused with nothing
/// changed, and a tenant neither active nor suspended cannot be resumed.
#[tokio::test]
async fn set_status_only_suspends_and_resumes() {
    let Some(mut env) = sandbox("lifecycle::set_status", ScopeMode::Shared).await else {
        return;
    };
    let ctx = env.tenant("statuses", Strategy::Schema).await.unwrap();
    let id = ctx.tenant_id();
    for to in [
        TenantStatus::Provisioning,
        TenantStatus::Deleting,
        TenantStatus::Deleted,
    ] {
        let err = env.tenancy.set_status(id, to).await.unwrap_err();
        assert!(
            matches!(&err, saas_tenancy::TenancyError::InvalidInput(m) if m.contains("delete_tenant")),
            "{to}: {err}"
        );
    }
    let still = env.tenancy.catalog().get(id).await.unwrap().unwrap();
    assert_eq!(still.status, TenantStatus::Active, "nothing changed");
    // The schema is still there and served.
    let mut tx = env.tenancy.begin(&ctx).await.unwrap();
    sqlx::query("SELECT count(*) FROM notes")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();

    env.tenancy.delete_tenant(id).await.unwrap();
    let err = env
        .tenancy
        .set_status(id, TenantStatus::Active)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            saas_tenancy::TenancyError::InvalidTransition {
                from: TenantStatus::Deleted,
                to: TenantStatus::Active,
                ..
            }
        ),
        "a deleted tenant is not resurrected: {err}"
    );
    env.cleanup().await;
}

#[tokio::test]
async fn provisioning_is_exclusive_per_slug_and_resumable() {
    let Some(env) = sandbox("lifecycle::provisioning", ScopeMode::Shared).await else {
        return;
    };
    let tenancy = env.tenancy_with(|b| b).unwrap();
    let slug = || saas_core::TenantSlug::parse("contested").unwrap();
    let a = tenancy
        .new_tenant(slug(), "A", Strategy::Schema)
        .await
        .unwrap();
    let b = tenancy
        .new_tenant(slug(), "B", Strategy::Schema)
        .await
        .unwrap();
    let (ra, rb) = tokio::join!(tenancy.provision(a), tenancy.provision(b));
    let (won, lost) = match (ra, rb) {
        (Ok(w), Err(l)) | (Err(l), Ok(w)) => (w, l),
        other => panic!("exactly one provision must win: {other:?}"),
    };
    assert!(
        matches!(lost, TenancyError::AlreadyExists { .. }),
        "{lost:?}"
    );
    assert_eq!(won.status, TenantStatus::Active);
    let schemas: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_namespace WHERE nspname LIKE 't\\_%'")
            .fetch_one(&env.admin)
            .await
            .unwrap();
    assert!(schemas >= 1);

    // A crash between the catalog row and the storage: the tenant is left
    // `provisioning`; retrying finishes it, and retrying again is harmless.
    let crashed = saas_tenancy::NewTenant::new(
        saas_core::TenantSlug::parse("crashed").unwrap(),
        "C",
        Strategy::Schema,
        env.cluster.clone(),
    )
    .unwrap();
    let record = env.tenancy.catalog().create(crashed).await.unwrap();
    assert_eq!(record.status, TenantStatus::Provisioning);
    let ctx = saas_core::TenantContext::new(record.id, record.slug.clone());
    assert!(tenancy.begin(&ctx).await.is_err(), "not servable yet");
    let done = tenancy.retry_provisioning(record.id).await.unwrap();
    assert_eq!(done.status, TenantStatus::Active);
    assert_eq!(
        tenancy.retry_provisioning(record.id).await.unwrap().status,
        TenantStatus::Active
    );
    tenancy.begin(&ctx).await.unwrap().commit().await.unwrap();
    for id in [won.id, record.id] {
        tenancy.delete_tenant(id).await.unwrap();
    }
    env.cleanup().await;
}
