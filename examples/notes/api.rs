//! The HTTP API: sign-up (public) and the tenant's projects, notes,
//! invoice and audit log (authenticated, tenant-scoped, metered).

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use saas_billing::Decimal;
use saas_billing::{Currency, NewSubscription};
use saas_core::http::{Tenant, TenantLayer};
use saas_core::{RequestResolver, TenantKey, TenantSlug, TokenClaims, TokenIssuer};
use saas_tenancy::{ClusterName, NewTenant, Strategy};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::billing::{Billing, plan_ref};
use super::error::ApiError;
use super::store::NotesStore;

/// What every handler shares.
#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) store: Arc<dyn NotesStore>,
    pub(crate) billing: Billing,
    pub(crate) issuer: Arc<TokenIssuer>,
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
    // Provisioned and subscribed, or neither (see saas-foundation's SignUps).
    let subscription = NewSubscription::new(new.id(), plan, Currency::USD);
    let signed_up = app.store.sign_up(new, subscription).await?;
    let record = signed_up.tenant;
    app.billing.current.remember(&signed_up.subscription).await;
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

async fn create_project(
    State(app): State<AppState>,
    Tenant(ctx): Tenant,
    Json(req): Json<NewProject>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    check_text("a project name", &req.name, 200)?;
    let (plan, limit) = app.billing.project_limit(ctx.tenant_id()).await?;
    let check = move |used: i64| {
        let decision = limit.decide(Decimal::from(used), Decimal::ONE);
        if decision.is_allowed() {
            return Ok(());
        }
        let max = decision.limit().unwrap_or_default();
        Err(ApiError::forbidden(
            "plan_limit",
            format!("the {plan} plan allows {max} projects; upgrade to pro for more"),
        ))
    };
    let project = app.store.create_project(&ctx, &req.name, &check).await?;
    Ok((StatusCode::CREATED, Json(json!(project))))
}

async fn list_projects(
    State(app): State<AppState>,
    Tenant(ctx): Tenant,
) -> Result<Json<Value>, ApiError> {
    let projects = app.store.projects(&ctx).await?;
    Ok(Json(json!({ "projects": projects })))
}

async fn get_project(
    State(app): State<AppState>,
    Tenant(ctx): Tenant,
    Path(id): Path<Uuid>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!(app.store.project(&ctx, id).await?)))
}

async fn add_note(
    State(app): State<AppState>,
    Tenant(ctx): Tenant,
    Path(project): Path<Uuid>,
    Json(req): Json<NewNote>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    check_text("a note", &req.body, 10_000)?;
    let note = app.store.add_note(&ctx, project, &req.body).await?;
    Ok((StatusCode::CREATED, Json(json!(note))))
}

async fn list_notes(
    State(app): State<AppState>,
    Tenant(ctx): Tenant,
    Path(project): Path<Uuid>,
) -> Result<Json<Value>, ApiError> {
    let notes = app.store.notes(&ctx, project).await?;
    Ok(Json(json!({ "notes": notes })))
}

/// What the open billing period would cost if it ended now.
async fn invoice(
    State(app): State<AppState>,
    Tenant(ctx): Tenant,
) -> Result<Json<Value>, ApiError> {
    let subscription = app.billing.current.id(ctx.tenant_id()).await?;
    let invoice = app
        .billing
        .engine()
        .upcoming_invoice(ctx.tenant_id(), subscription)
        .await?;
    Ok(Json(json!(invoice)))
}

async fn audit_log(
    State(app): State<AppState>,
    Tenant(ctx): Tenant,
) -> Result<Json<Value>, ApiError> {
    let events = app.store.audit_log(&ctx).await?;
    Ok(Json(json!({ "events": events })))
}
