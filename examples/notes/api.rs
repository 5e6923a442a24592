//! The HTTP API: sign-up (public) and the tenant's projects, notes,
//! invoice and audit log (authenticated, tenant-scoped, metered).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use saas_billing::{BillingError, Currency, MeterKey, NewSubscription};
use saas_core::http::{Tenant, TenantLayer};
use saas_core::{ErrorKind, RequestResolver, SharedClock, TenantKey, TenantSlug, TokenClaims};
use saas_foundation::identity::Identity;
use saas_foundation::metering::MeterLayer;
use saas_foundation::problem::Problem;
use saas_foundation::subscriptions::CurrentSubscriptions;
use saas_tenancy::{ClusterName, NewTenant, Strategy};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::billing::{API_CALLS, plan_ref, project_limit};
use super::store::NotesStore;

/// What every handler shares.
#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) store: Arc<dyn NotesStore>,
    pub(crate) current: Arc<CurrentSubscriptions>,
    pub(crate) identity: Identity,
    pub(crate) strategy: Strategy,
    pub(crate) cluster: ClusterName,
}

/// Sign-up is public; every other route is authenticated, tenant-scoped
/// and counted against the tenant's `api_calls` meter.
pub(crate) fn router(
    state: AppState,
    resolver: RequestResolver,
    clock: SharedClock,
) -> Result<Router, BillingError> {
    let meter = MeterLayer::new(Arc::clone(&state.current), MeterKey::new(API_CALLS)?, clock);
    let tenant_routes = Router::new()
        .route("/projects", get(list_projects).post(create_project))
        .route("/projects/{id}", get(get_project))
        .route("/projects/{id}/notes", get(list_notes).post(add_note))
        .route("/invoice", get(invoice))
        .route("/audit", get(audit_log))
        .route_layer(meter)
        .layer(TenantLayer::new(resolver));
    Ok(Router::new()
        .route("/signup", post(sign_up))
        .merge(tenant_routes)
        .with_state(state))
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
) -> Result<(StatusCode, Json<Value>), Problem> {
    let slug = TenantSlug::parse(&req.slug)?;
    let plan = plan_ref(&req.plan)?;
    let new = NewTenant::new(slug.clone(), req.name, app.strategy, app.cluster.clone())?;
    // Provisioned and subscribed, or neither (see saas-foundation's SignUps).
    let subscription = NewSubscription::new(new.id(), plan, Currency::USD);
    let signed_up = app.store.sign_up(new, subscription).await?;
    let record = signed_up.tenant;
    app.current.remember(&signed_up.subscription).await;
    let subject = req.email.unwrap_or_else(|| format!("owner@{slug}"));
    let claims = TokenClaims::new(subject).tenant(TenantKey::Id(record.id));
    let token = app.identity.issuer().issue(&claims.role("owner"))?;
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

fn check_text(what: &str, text: &str, max: usize) -> Result<(), Problem> {
    let len = text.trim().chars().count();
    if len == 0 || text.chars().count() > max {
        let detail = format!("{what} must be 1-{max} characters and not blank");
        return Err(Problem::new(ErrorKind::InvalidInput, detail));
    }
    Ok(())
}

async fn create_project(
    State(app): State<AppState>,
    Tenant(ctx): Tenant,
    Json(req): Json<NewProject>,
) -> Result<(StatusCode, Json<Value>), Problem> {
    check_text("a project name", &req.name, 200)?;
    let check = project_limit(&app.current, ctx.tenant_id()).await?;
    let project = app.store.create_project(&ctx, &req.name, &check).await?;
    Ok((StatusCode::CREATED, Json(json!(project))))
}

async fn list_projects(
    State(app): State<AppState>,
    Tenant(ctx): Tenant,
) -> Result<Json<Value>, Problem> {
    let projects = app.store.projects(&ctx).await?;
    Ok(Json(json!({ "projects": projects })))
}

async fn get_project(
    State(app): State<AppState>,
    Tenant(ctx): Tenant,
    Path(id): Path<Uuid>,
) -> Result<Json<Value>, Problem> {
    Ok(Json(json!(app.store.project(&ctx, id).await?)))
}

async fn add_note(
    State(app): State<AppState>,
    Tenant(ctx): Tenant,
    Path(project): Path<Uuid>,
    Json(req): Json<NewNote>,
) -> Result<(StatusCode, Json<Value>), Problem> {
    check_text("a note", &req.body, 10_000)?;
    let note = app.store.add_note(&ctx, project, &req.body).await?;
    Ok((StatusCode::CREATED, Json(json!(note))))
}

async fn list_notes(
    State(app): State<AppState>,
    Tenant(ctx): Tenant,
    Path(project): Path<Uuid>,
) -> Result<Json<Value>, Problem> {
    let notes = app.store.notes(&ctx, project).await?;
    Ok(Json(json!({ "notes": notes })))
}

/// What the open billing period would cost if it ended now.
async fn invoice(State(app): State<AppState>, Tenant(ctx): Tenant) -> Result<Json<Value>, Problem> {
    let subscription = app.current.id(ctx.tenant_id()).await?;
    let billing = app.current.billing();
    let invoice = billing
        .upcoming_invoice(ctx.tenant_id(), subscription)
        .await?;
    Ok(Json(json!(invoice)))
}

async fn audit_log(
    State(app): State<AppState>,
    Tenant(ctx): Tenant,
) -> Result<Json<Value>, Problem> {
    let events = app.store.audit_log(&ctx).await?;
    Ok(Json(json!({ "events": events })))
}
