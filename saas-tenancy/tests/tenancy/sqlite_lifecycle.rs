//! SQLite lifecycle: hooks at each step, suspend/resume, retries after a
//! failure midway, and operations on one tenant serialised across
//! instances sharing the files.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use saas_core::{TenantContext, TenantSlug, TenantStatus};
use saas_tenancy::sqlite::SqliteTenancy;
use saas_tenancy::testing::sqlite::{SqliteSandbox, sqlite_migrations};
use saas_tenancy::{DynCatalog, LifecycleEvent, LifecycleHooks, NewTenant, Strategy, TenancyError};

/// Records events; seeds a note on `Provisioned`; can fail the first
/// `fail_first` calls; checks that the catalog still says what the event
/// says after a pause (it would not if another operation slipped in).
#[derive(Debug, Default)]
struct Recorder {
    events: Mutex<Vec<LifecycleEvent>>,
    fail_first: AtomicUsize,
    tenancy: OnceLock<SqliteTenancy>,
    catalog: OnceLock<DynCatalog>,
    pause: Option<Duration>,
    interleaved: Mutex<Vec<String>>,
}

#[async_trait]
impl LifecycleHooks for Recorder {
    async fn on_event(&self, event: &LifecycleEvent) -> Result<(), TenancyError> {
        self.events.lock().unwrap().push(event.clone());
        if self
            .fail_first
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(TenancyError::InvalidInput("hook failed".to_owned()));
        }
        if let (LifecycleEvent::Provisioned(record), Some(tenancy)) = (event, self.tenancy.get()) {
            let ctx = TenantContext::new(record.id, record.slug.clone());
            let mut tx = tenancy.begin(&ctx).await?;
            sqlx::query("INSERT INTO notes (tenant_id, id, body) VALUES (?, 1, 'welcome')")
                .bind(record.id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        }
        if let (LifecycleEvent::StatusChanged { record, .. }, Some(catalog), Some(pause)) =
            (event, self.catalog.get(), self.pause)
        {
            tokio::time::sleep(pause).await;
            let now = catalog.get(record.id).await?.map(|r| r.status);
            if now != Some(record.status) {
                self.interleaved.lock().unwrap().push(format!(
                    "hook for {} ran while the tenant was {now:?}",
                    record.status
                ));
            }
        }
        Ok(())
    }
}

fn kinds(events: &[LifecycleEvent]) -> Vec<String> {
    events
        .iter()
        .map(|e| match e {
            LifecycleEvent::Provisioned(r) => format!("provisioned {} {}", r.slug, r.status),
            LifecycleEvent::StatusChanged { record, from } => {
                format!("{} {from}->{}", record.slug, record.status)
            }
            LifecycleEvent::Deleted(r) => format!("deleted {} {}", r.slug, r.status),
            other => format!("{other:?}"),
        })
        .collect()
}

async fn provision(
    tenancy: &SqliteTenancy,
    sandbox: &SqliteSandbox,
    slug: &str,
    strategy: Strategy,
) -> TenantContext {
    let new = NewTenant::new(
        TenantSlug::parse(slug).unwrap(),
        slug,
        strategy,
        sandbox.cluster.clone(),
    )
    .unwrap();
    let record = tenancy.provision(new).await.unwrap();
    TenantContext::new(record.id, record.slug)
}

async fn bodies(tenancy: &SqliteTenancy, ctx: &TenantContext) -> Vec<String> {
    let mut conn = tenancy.acquire(ctx).await.unwrap();
    sqlx::query_scalar("SELECT body FROM notes ORDER BY id")
        .fetch_all(&mut *conn)
        .await
        .unwrap()
}

#[tokio::test]
async fn sqlite_hooks_run_at_each_step_and_suspension_keeps_data() {
    let sandbox = SqliteSandbox::new().await.unwrap();
    let hooks = Arc::new(Recorder::default());
    let tenancy = sandbox
        .builder(sqlite_migrations())
        .unwrap()
        .hooks(hooks.clone())
        .build()
        .unwrap();
    hooks.tenancy.set(tenancy.clone()).unwrap();
    for (slug, strategy) in [("row", Strategy::Shared), ("file", Strategy::Database)] {
        let ctx = provision(&tenancy, &sandbox, slug, strategy).await;
        let neighbour = provision(&tenancy, &sandbox, &format!("{slug}-n"), strategy).await;
        // The Provisioned hook seeded the tenant's data.
        assert_eq!(bodies(&tenancy, &ctx).await, vec!["welcome".to_owned()]);

        let suspended = tenancy.suspend(ctx.tenant_id()).await.unwrap();
        assert_eq!(suspended.status, TenantStatus::Suspended);
        for err in [
            tenancy.acquire(&ctx).await.map(drop).unwrap_err(),
            tenancy.begin(&ctx).await.map(drop).unwrap_err(),
        ] {
            assert!(
                matches!(
                    err,
                    TenancyError::TenantNotServable {
                        status: TenantStatus::Suspended,
                        ..
                    }
                ),
                "{err}"
            );
        }
        // Suspending A does not touch B.
        assert_eq!(
            bodies(&tenancy, &neighbour).await,
            vec!["welcome".to_owned()]
        );
        // Idempotent: a second suspend succeeds (and calls the hooks again).
        tenancy.suspend(ctx.tenant_id()).await.unwrap();
        tenancy.resume(ctx.tenant_id()).await.unwrap();
        assert_eq!(
            bodies(&tenancy, &ctx).await,
            vec!["welcome".to_owned()],
            "data kept"
        );

        tenancy.delete_tenant(ctx.tenant_id()).await.unwrap();
        // Deleting A leaves B's data.
        assert_eq!(
            bodies(&tenancy, &neighbour).await,
            vec!["welcome".to_owned()]
        );
        let events: Vec<LifecycleEvent> = hooks
            .events
            .lock()
            .unwrap()
            .drain(..)
            .filter(|e| match e {
                LifecycleEvent::Provisioned(r) | LifecycleEvent::Deleted(r) => {
                    r.id == ctx.tenant_id()
                }
                LifecycleEvent::StatusChanged { record, .. } => record.id == ctx.tenant_id(),
                _ => false,
            })
            .collect();
        assert_eq!(
            kinds(&events),
            vec![
                format!("provisioned {slug} active"),
                format!("{slug} active->suspended"),
                format!("{slug} active->suspended"),
                format!("{slug} suspended->active"),
                format!("deleted {slug} deleted"),
            ]
        );
    }
    // Only suspend and resume go through set_status.
    let other = provision(&tenancy, &sandbox, "other", Strategy::Shared).await;
    assert!(matches!(
        tenancy
            .set_status(other.tenant_id(), TenantStatus::Deleted)
            .await,
        Err(TenancyError::InvalidInput(_))
    ));
    sandbox.cleanup().await;
}

#[tokio::test]
async fn sqlite_steps_that_failed_midway_complete_when_retried() {
    let sandbox = SqliteSandbox::new().await.unwrap();
    let hooks = Arc::new(Recorder::default());
    let tenancy = sandbox
        .builder(sqlite_migrations())
        .unwrap()
        .hooks(hooks.clone())
        .build()
        .unwrap();
    let ctx = provision(&tenancy, &sandbox, "retry", Strategy::Database).await;

    // The status change is durable, the hook failed: the retry calls it again.
    hooks.fail_first.store(1, Ordering::SeqCst);
    assert!(tenancy.suspend(ctx.tenant_id()).await.is_err());
    let record = tenancy
        .catalog()
        .get(ctx.tenant_id())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.status, TenantStatus::Suspended);
    tenancy.suspend(ctx.tenant_id()).await.unwrap();
    let changes = hooks
        .events
        .lock()
        .unwrap()
        .iter()
        .filter(|e| matches!(e, LifecycleEvent::StatusChanged { .. }))
        .count();
    assert_eq!(changes, 2, "the hook ran again on retry");

    // A provisioning cut short after the catalog row: the tenant is refused
    // until retry_provisioning creates and migrates its file.
    let new = NewTenant::new(
        TenantSlug::parse("half").unwrap(),
        "half",
        Strategy::Database,
        sandbox.cluster.clone(),
    )
    .unwrap();
    let record = tenancy.catalog().create(new).await.unwrap();
    let half = TenantContext::new(record.id, record.slug.clone());
    assert!(tenancy.acquire(&half).await.is_err());
    let record = tenancy.retry_provisioning(record.id).await.unwrap();
    assert_eq!(record.status, TenantStatus::Active);
    let mut tx = tenancy.begin(&half).await.unwrap();
    sqlx::query("INSERT INTO notes (tenant_id, id, body) VALUES (?, 1, 'after retry')")
        .bind(half.tenant_id())
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert!(
        hooks
            .events
            .lock()
            .unwrap()
            .contains(&LifecycleEvent::Provisioned(record.clone()))
    );
    // Retrying an active tenant changes nothing.
    assert_eq!(
        tenancy.retry_provisioning(record.id).await.unwrap().status,
        TenantStatus::Active
    );
    // A delete whose hook failed is finished by calling it again.
    hooks.fail_first.store(1, Ordering::SeqCst);
    assert!(tenancy.delete_tenant(record.id).await.is_err());
    assert_eq!(
        tenancy.delete_tenant(record.id).await.unwrap().status,
        TenantStatus::Deleted
    );
    assert!(
        !sandbox
            .dir
            .join(format!(
                "{}.sqlite",
                record.placement.object_name().unwrap().as_str()
            ))
            .exists()
    );
    sandbox.cleanup().await;
}

#[tokio::test]
async fn sqlite_operations_on_one_tenant_never_interleave_across_instances() {
    let sandbox = SqliteSandbox::new().await.unwrap();
    let hooks = Arc::new(Recorder {
        pause: Some(Duration::from_millis(15)),
        ..Recorder::default()
    });
    hooks
        .catalog
        .set(Arc::clone(sandbox.tenancy.catalog()))
        .unwrap();
    // Two instances over the same files: they share no in-process lock,
    // as two processes would not.
    let first = sandbox
        .builder(sqlite_migrations())
        .unwrap()
        .hooks(hooks.clone())
        .build()
        .unwrap();
    let second = sandbox
        .builder(sqlite_migrations())
        .unwrap()
        .hooks(hooks.clone())
        .build()
        .unwrap();
    let a = sandbox.tenant("a", Strategy::Shared).await.unwrap();
    let b = sandbox.tenant("b", Strategy::Shared).await.unwrap();
    for _ in 0..8 {
        let (suspended, resumed, again) = tokio::join!(
            first.suspend(a.tenant_id()),
            second.resume(a.tenant_id()),
            first.resume(a.tenant_id()),
        );
        suspended.unwrap();
        resumed.unwrap();
        again.unwrap();
    }
    assert_eq!(
        hooks.interleaved.lock().unwrap().clone(),
        Vec::<String>::new()
    );
    assert_eq!(hooks.events.lock().unwrap().len(), 24);
    // B was never touched.
    let b_record = sandbox
        .tenancy
        .catalog()
        .get(b.tenant_id())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(b_record.status, TenantStatus::Active);
    assert!(hooks.events.lock().unwrap().iter().all(
        |e| matches!(e, LifecycleEvent::StatusChanged { record, .. } if record.id == a.tenant_id())
    ));
    sandbox.cleanup().await;
}
