//! The HTTP API: sign-up (public) and the tenant's projects, notes,
//! invoice and audit log (authenticated, tenant-scoped, metered).

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use rust_decimal::Decimal;
use saas_billing::{Currency, NewSubscription};
use saas_core::http::{Tenant, TenantLayer};
use saas_core::{RequestResolver, TenantKey, TenantSlug, TokenClaims, TokenIssuer};
use saas_events::Event;
use saas_events::postgres::PgOutbox;
use saas_tenancy::postgres::{PgTenancy, TenantTx};
use saas_tenancy::{ClusterName, NewTenant, Strategy};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::audit::TOPIC;
use super::billing::{Billing, plan_ref};
use super::error::ApiError;

/// What every handler shares.
#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) tenancy: Arc<PgTenancy>,
    pub(crate) billing: Billing,
    pub(crate) issuer: Arc<TokenIssuer>,
    pub(crate) outbox: PgOutbox,
    pub(crate) strategy: Strategy,
    pub(crate) cluster: ClusterName,
}

pub(crate) fn router(state: AppState, resolver: RequestResolver) -> Router {
    let tenant_routes = Router::new()
        .route("/projects", get(list_projects).post(create_project))
        .route("/projects/{id}", get(get_project))
        .route("/projects/{id}/notes", get(list_notes).post(add_note))
        .route("/invoice", get(invoice))
        .route("/audit", get(audit_log))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), meter))
        .layer(TenantLayer::new(resolver));
    Router::new()
        .route("/signup", post(sign_up))
        .merge(tenant_routes)
        .with_state(state)
}

/// Counts every authenticated call against the tenant's `api_calls` meter.
async fn meter(
    State(app): State<AppState>,
    Tenant(ctx): Tenant,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let request_id = Uuid::now_v7().to_string();
    app.billing.meter_call(ctx.tenant_id(), request_id).await?;
    Ok(next.run(request).await)
}

#[derive(Deserialize)]
struct SignUp {
    slug: String,
    name: String,
    #[serde(default = "free")]
    plan: String,
    email: Option<String>,
}

fn free() -> String {
    "free".to_owned()
}

async fn sign_up(
    State(app): State<AppState>,
    Json(req): Json<SignUp>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let slug = TenantSlug::parse(&req.slug).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let plan = plan_ref(&req.plan)?;
    let new = NewTenant::new(slug.clone(), req.name, app.strategy, app.cluster.clone())?;
    let record = app.tenancy.provision(new).await?;
    let subscription = match app
        .billing
        .engine
        .create_subscription(NewSubscription::new(record.id, plan, Currency::USD))
        .await
    {
        Ok(sub) => sub,
        Err(e) => {
            // No tenant without a subscription: undo the provisioning.
            if let Err(undo) = app.tenancy.delete_tenant(record.id).await {
                tracing::error!(error = %undo, tenant = %record.id, "could not undo a sign-up");
            }
            return Err(e.into());
        }
    };
    app.billing.remember(record.id, subscription.id()).await;
    let subject = req.email.unwrap_or_else(|| format!("owner@{slug}"));
    let token = app
        .issuer
        .issue(
            &TokenClaims::new(subject)
                .tenant(TenantKey::Id(record.id))
                .role("owner"),
        )
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "tenant_id": record.id,
            "slug": record.slug.as_str(),
            "plan": req.plan,
            "placement": format!("{:?}", app.strategy).to_lowercase(),
            "token": token,
        })),
    ))
}

#[derive(Deserialize)]
struct NewProject {
    name: String,
}

#[derive(Deserialize)]
struct NewNote {
    body: String,
}

fn check_text(what: &str, text: &str, max: usize) -> Result<(), ApiError> {
    let len = text.trim().chars().count();
    if len == 0 || text.chars().count() > max {
        return Err(ApiError::bad_request(format!(
            "{what} must be 1-{max} characters and not blank"
        )));
    }
    Ok(())
}

/// Publishes `event_type` about `subject` through the outbox, inside `tx`:
/// it leaves if and only if the transaction commits.
async fn publish(
    app: &AppState,
    tx: &mut TenantTx,
    event_type: &str,
    subject: String,
    data: &Value,
) -> Result<(), ApiError> {
    let event =
        Event::new(Some(tx.tenant_id()), event_type, "/notes-api", data)?.with_subject(subject);
    app.outbox.publish(tx, TOPIC, event).await?;
    Ok(())
}

async fn create_project(
    State(app): State<AppState>,
    Tenant(ctx): Tenant,
    Json(req): Json<NewProject>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    check_text("a project name", &req.name, 200)?;
    let mut tx = app.tenancy.begin(&ctx).await?;
    // One project creation at a time per tenant, so two concurrent
    // requests cannot both pass the plan's limit.
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1::text, 0))")
        .bind(ctx.tenant_id())
        .execute(&mut *tx)
        .await?;
    let used: i64 = sqlx::query_scalar("SELECT count(*) FROM projects")
        .fetch_one(&mut *tx)
        .await?;
    let (plan, decision) = app
        .billing
        .may_add_project(ctx.tenant_id(), Decimal::from(used))
        .await?;
    if !decision.is_allowed() {
        let limit = decision.limit().unwrap_or_default();
        return Err(ApiError::forbidden(
            "plan_limit",
            format!("the {plan} plan allows {limit} projects; upgrade to pro for more"),
        ));
    }
    let id = Uuid::now_v7();
    sqlx::query("INSERT INTO projects (tenant_id, id, name) VALUES ($1, $2, $3)")
        .bind(ctx.tenant_id())
        .bind(id)
        .bind(&req.name)
        .execute(&mut *tx)
        .await?;
    let project = json!({ "id": id, "name": req.name });
    publish(
        &app,
        &mut tx,
        "com.example.notes.project.created",
        format!("projects/{id}"),
        &project,
    )
    .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(project)))
}

async fn list_projects(
    State(app): State<AppState>,
    Tenant(ctx): Tenant,
) -> Result<Json<Value>, ApiError> {
    let mut tx = app.tenancy.begin(&ctx).await?;
    let rows: Vec<(Uuid, String)> =
        sqlx::query_as("SELECT id, name FROM projects ORDER BY created_at, id")
            .fetch_all(&mut *tx)
            .await?;
    tx.commit().await?;
    let projects: Vec<Value> = rows
        .into_iter()
        .map(|(id, name)| json!({ "id": id, "name": name }))
        .collect();
    Ok(Json(json!({ "projects": projects })))
}

/// The project's name, if the tenant can see it. Row tenants see only their
/// rows (RLS); schema and database tenants only their own tables.
async fn find_project(tx: &mut TenantTx, id: Uuid) -> Result<String, ApiError> {
    sqlx::query_scalar("SELECT name FROM projects WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?
        .ok_or_else(|| ApiError::not_found("project"))
}

async fn get_project(
    State(app): State<AppState>,
    Tenant(ctx): Tenant,
    Path(id): Path<Uuid>,
) -> Result<Json<Value>, ApiError> {
    let mut tx = app.tenancy.begin(&ctx).await?;
    let name = find_project(&mut tx, id).await?;
    tx.commit().await?;
    Ok(Json(json!({ "id": id, "name": name })))
}

async fn add_note(
    State(app): State<AppState>,
    Tenant(ctx): Tenant,
    Path(project): Path<Uuid>,
    Json(req): Json<NewNote>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    check_text("a note", &req.body, 10_000)?;
    let mut tx = app.tenancy.begin(&ctx).await?;
    find_project(&mut tx, project).await?;
    let id = Uuid::now_v7();
    sqlx::query("INSERT INTO notes (tenant_id, id, project_id, body) VALUES ($1, $2, $3, $4)")
        .bind(ctx.tenant_id())
        .bind(id)
        .bind(project)
        .bind(&req.body)
        .execute(&mut *tx)
        .await?;
    let note = json!({ "id": id, "project_id": project, "body": req.body });
    publish(
        &app,
        &mut tx,
        "com.example.notes.note.added",
        format!("notes/{id}"),
        &note,
    )
    .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(note)))
}

async fn list_notes(
    State(app): State<AppState>,
    Tenant(ctx): Tenant,
    Path(project): Path<Uuid>,
) -> Result<Json<Value>, ApiError> {
    let mut tx = app.tenancy.begin(&ctx).await?;
    find_project(&mut tx, project).await?;
    let rows: Vec<(Uuid, String)> =
        sqlx::query_as("SELECT id, body FROM notes WHERE project_id = $1 ORDER BY created_at, id")
            .bind(project)
            .fetch_all(&mut *tx)
            .await?;
    tx.commit().await?;
    let notes: Vec<Value> = rows
        .into_iter()
        .map(|(id, body)| json!({ "id": id, "body": body }))
        .collect();
    Ok(Json(json!({ "notes": notes })))
}

/// What the open billing period would cost if it ended now.
async fn invoice(
    State(app): State<AppState>,
    Tenant(ctx): Tenant,
) -> Result<Json<Value>, ApiError> {
    let subscription = app.billing.subscription(ctx.tenant_id()).await?;
    let invoice = app
        .billing
        .engine
        .upcoming_invoice(ctx.tenant_id(), subscription)
        .await?;
    Ok(Json(json!(invoice)))
}

async fn audit_log(
    State(app): State<AppState>,
    Tenant(ctx): Tenant,
) -> Result<Json<Value>, ApiError> {
    let mut tx = app.tenancy.begin(&ctx).await?;
    let rows: Vec<(
        String,
        Option<String>,
        Option<chrono::DateTime<chrono::Utc>>,
    )> = sqlx::query_as(
        "SELECT event_type, subject, occurred_at FROM audit_log \
             ORDER BY occurred_at, event_id",
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    let events: Vec<Value> = rows
        .into_iter()
        .map(|(kind, subject, at)| json!({ "type": kind, "subject": subject, "time": at }))
        .collect();
    Ok(Json(json!({ "events": events })))
}
