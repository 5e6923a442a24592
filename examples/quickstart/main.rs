//! Quickstart: a small multi-tenant SaaS on embedded SQLite, end to end.
//!
//! Three tenants — two sharing tables, one with a database file of its own —
//! sign in with JWTs, create projects through tenant-scoped connections,
//! call a metered API, hit the free plan's project limit, get an invoice,
//! and every change lands in an audit log through the event bus.
//!
//! Run with `cargo run --example quickstart`. No server needed; everything
//! lives in a temporary directory that is removed at the end.

mod setup;

use std::error::Error;
use std::sync::{Arc, Mutex};

use chrono::{Duration, TimeZone, Utc};
use saas_billing::{Decimal, MeterKey, UsageEvent};
use saas_core::{Clock, TenantContext, TenantKey, TokenClaims};
use saas_events::router::{ReceivedEvent, Router, handler_fn};
use saas_events::sqlite::RelayConfig;
use saas_events::{Event, EventError, SubscribeOptions};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct ProjectCreated {
    name: String,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let mut app = setup::App::start().await?;
    println!("== saas-foundation quickstart ({})", app.dir.display());

    // Every change is published to the transactional outbox in the same
    // tenant transaction as the change; a relay forwards committed events
    // to the bus, where an audit-log consumer group receives all tenants'
    // events and writes one line per event.
    let audit = Arc::new(Mutex::new(Vec::<String>::new()));
    let sink = Arc::clone(&audit);
    let router = Router::new().route(
        "com.example.project.created",
        handler_fn(move |event: ReceivedEvent| {
            let sink = Arc::clone(&sink);
            async move {
                let created: ProjectCreated = event.data_as()?;
                let tenant = event
                    .event()
                    .tenant_id()
                    .map(|t| t.to_string())
                    .unwrap_or_default();
                sink.lock()
                    .map_err(|_| EventError::handler("audit log poisoned"))?
                    .push(format!(
                        "tenant {tenant} created project {:?}",
                        created.name
                    ));
                Ok(())
            }
        }),
    );
    let running = router
        .run(
            &app.bus,
            "projects",
            SubscribeOptions::new().with_group("audit-log"),
        )
        .await?;

    // The consumer first, then the relay over every tenant's outbox (the
    // shared file's and each database tenant's own file).
    app.services.start("audit log", running);
    let relay = RelayConfig::default().with_poll_interval(std::time::Duration::from_millis(20));
    app.stack
        .start_relay(Arc::new(app.bus.clone()), relay, &mut app.services);
    let mut published = 0;
    for tenant in &app.tenants {
        // 1. Identity: a token for a user of this tenant, verified on a
        //    request to the tenant's own host.
        let token = app.issuer.issue(
            &TokenClaims::new(format!("owner@{}", tenant.slug))
                .tenant(TenantKey::Id(tenant.ctx.tenant_id()))
                .role("owner"),
        )?;
        let ctx = app
            .resolve(
                &format!("https://{}.quickstart.test/projects", tenant.slug),
                &token,
            )
            .await?;
        println!(
            "\n-- {} ({}, plan {}): signed in as {}",
            ctx.slug(),
            tenant.placement,
            tenant.plan,
            ctx.principal().map(|p| p.subject.as_str()).unwrap_or("?")
        );

        // 2. Tenant-scoped data, limited by the plan.
        for name in ["website", "mobile app", "api", "data pipeline"] {
            match create_project(&app, &ctx, name).await? {
                Created::Yes => published += 1,
                Created::OverLimit(limit) => println!(
                    "   project {name:?} refused: the {} plan allows {limit} projects",
                    tenant.plan
                ),
            }
        }
        let visible = list_projects(&app, &ctx).await?;
        println!("   sees {} projects: {visible:?}", visible.len());

        // 3. Metered API calls, recorded idempotently.
        let now = app.clock.now();
        for call in 0..tenant.api_calls {
            let event = UsageEvent::new(
                ctx.tenant_id(),
                tenant.subscription,
                MeterKey::new("api_calls")?,
                Decimal::ONE,
                now,
                format!("call-{call}"),
            );
            app.billing.record_usage(event).await?;
        }
        let quota = app
            .billing
            .check(ctx.tenant_id(), "api_calls", Decimal::ONE);
        println!(
            "   made {} API calls; quota left: {}",
            tenant.api_calls,
            quota
                .remaining()
                .map_or("unlimited".to_owned(), |r| r.to_string())
        );
    }

    // 4. The month ends: the billing cycle invoices every subscription.
    app.clock.set(
        Utc.with_ymd_and_hms(2026, 2, 1, 0, 0, 0)
            .single()
            .ok_or("date")?
            + Duration::hours(25),
    );
    app.billing.run_billing_cycle().await?;
    println!("\n-- invoices for January 2026");
    for tenant in &app.tenants {
        let invoices = app
            .billing
            .invoices(tenant.ctx.tenant_id(), tenant.subscription)
            .await?;
        for invoice in invoices {
            println!(
                "   {}: {} ({:?})",
                tenant.slug, invoice.total, invoice.status
            );
            for line in &invoice.lines {
                println!("      {:<40} {}", line.description, line.amount);
            }
        }
    }

    // 5. The audit log, fed through the event bus (delivery is
    //    asynchronous: wait, boundedly, for every published event).
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    while audit.lock().map_err(|_| "audit log poisoned")?.len() < published
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let lines = audit.lock().map_err(|_| "audit log poisoned")?.clone();
    println!("\n-- audit log ({} events)", lines.len());
    for line in &lines {
        println!("   {line}");
    }
    app.stop().await;
    if lines.len() != published {
        return Err(format!("{published} events published, {} audited", lines.len()).into());
    }
    Ok(())
}

/// What became of a project creation.
enum Created {
    Yes,
    /// Refused: the plan allows this many.
    OverLimit(Decimal),
}

/// Creates a project within the plan's limit.
///
/// The one pattern for count limits ("3 projects"): count the tenant's own
/// rows inside the transaction that creates one, with writers of the
/// tenant serialised (here `BEGIN IMMEDIATE`; on PostgreSQL an advisory
/// lock, as the notes app does). Exact across servers and restarts, and a
/// deleted project gives its unit back by itself. (Per-period quotas such
/// as API calls a month are counted in a `saas_billing::quota::QuotaStore`.)
async fn create_project(
    app: &setup::App,
    ctx: &TenantContext,
    name: &str,
) -> Result<Created, Box<dyn Error>> {
    // Immediate: this transaction reads (the count, the next id) and then
    // writes, and the outbox relay writes the same file concurrently.
    let mut tx = app.tenancy().begin_immediate(ctx).await?;
    let used: i64 = sqlx::query_scalar("SELECT count(*) FROM projects")
        .fetch_one(&mut *tx)
        .await?;
    // The plan's limit (no usage is counted in memory for it).
    let plan = app
        .billing
        .entitlements()
        .check(ctx.tenant_id(), "projects", Decimal::ZERO);
    if !plan.is_allowed() {
        return Err(format!("{} may not create projects", ctx.slug()).into());
    }
    if let Some(limit) = plan.limit()
        && Decimal::from(used) + Decimal::ONE > limit
    {
        return Ok(Created::OverLimit(limit));
    }
    // No tenant in the SQL: the scoped connection adds and enforces it.
    sqlx::query(
        "INSERT INTO projects (tenant_id, id, name) \
         SELECT ?, coalesce(max(id), 0) + 1, ? FROM projects",
    )
    .bind(ctx.tenant_id())
    .bind(name)
    .execute(&mut *tx)
    .await?;
    // The event leaves if and only if the project is committed.
    let event = Event::new(
        Some(ctx.tenant_id()),
        "com.example.project.created",
        "/quickstart",
        &ProjectCreated {
            name: name.to_owned(),
        },
    )?;
    app.outbox.publish(&mut tx, "projects", event).await?;
    tx.commit().await?;
    Ok(Created::Yes)
}

async fn list_projects(
    app: &setup::App,
    ctx: &TenantContext,
) -> Result<Vec<String>, Box<dyn Error>> {
    let mut conn = app.tenancy().acquire(ctx).await?;
    Ok(sqlx::query_scalar("SELECT name FROM projects ORDER BY id")
        .fetch_all(&mut *conn)
        .await?)
}
