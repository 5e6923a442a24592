//! The HTTP API: sign-up (public) and the tenant's projects, notes,
//! invoice and audit log (authenticated, tenant-scoped, metered).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use saas_billing::{Currency, NewSubscription};
use saas_core::http::Tenant;
use saas_core::{ErrorKind, TenantKey, TenantSlug, TokenClaims};
use saas_foundation::identity::Identity;
use saas_foundation::problem::Problem;
use saas_tenancy::{NewTenant, Strategy};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::billing::{plan_ref, project_limit};
use super::store::{Store, StoreBackend};

/// What every handler shares.
pub(crate) struct AppState<T: StoreBackend> {
    pub(crate) store: Arc<Store<T>>,
    pub(crate) identity: Identity,
    pub(crate) strategy: Strategy,
}

/// The routes of signed-up tenants' own data: the server puts them behind
/// the tenant's resolution and meter.
pub(crate) fn tenant_routes<T: StoreBackend>() -> Router<Arc<AppState<T>>> {
    Router::new()
        .route(
            "/projects",
            get(list_projects::<T>).post(create_project::<T>),
        )
        .route("/projects/{id}", get(get_project::<T>))
        .route(
            "/projects/{id}/notes",
            get(list_notes::<T>).post(add_note::<T>),
        )
        .route("/invoice", get(invoice::<T>))
        .route("/audit", get(audit_log::<T>))
}

/// The public routes: sign-up.
pub(crate) fn public_routes<T: StoreBackend>() -> Router<Arc<AppState<T>>> {
    Router::new().route("/signup", post(sign_up::<T>))
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

async fn sign_up<T: StoreBackend>(
    State(app): State<Arc<AppState<T>>>,
    Json(req): Json<SignUp>,
) -> Result<(StatusCode, Json<Value>), Problem> {
    let slug = TenantSlug::parse(&req.slug)?;
    let plan = plan_ref(&req.plan)?;
    let cluster = app.store.cluster().clone();
    let new = NewTenant::new(slug.clone(), req.name, app.strategy, cluster)?;
    // Provisioned and subscribed, or neither (see saas-foundation's SignUps).
    let subscription = NewSubscription::new(new.id(), plan, Currency::USD);
    let signed_up = app.store.sign_up(new, subscription).await?;
    let record = signed_up.tenant;
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

async fn create_project<T: StoreBackend>(
    State(app): State<Arc<AppState<T>>>,
    Tenant(ctx): Tenant,
    Json(req): Json<NewProject>,
) -> Result<(StatusCode, Json<Value>), Problem> {
    check_text("a project name", &req.name, 200)?;
    let check = project_limit(&app.store.current, ctx.tenant_id()).await?;
    let project = app.store.create_project(&ctx, &req.name, &check).await?;
    Ok((StatusCode::CREATED, Json(json!(project))))
}

async fn list_projects<T: StoreBackend>(
    State(app): State<Arc<AppState<T>>>,
    Tenant(ctx): Tenant,
) -> Result<Json<Value>, Problem> {
    let projects = app.store.projects(&ctx).await?;
    Ok(Json(json!({ "projects": projects })))
}

async fn get_project<T: StoreBackend>(
    State(app): State<Arc<AppState<T>>>,
    Tenant(ctx): Tenant,
    Path(id): Path<Uuid>,
) -> Result<Json<Value>, Problem> {
    Ok(Json(json!(app.store.project(&ctx, id).await?)))
}

async fn add_note<T: StoreBackend>(
    State(app): State<Arc<AppState<T>>>,
    Tenant(ctx): Tenant,
    Path(project): Path<Uuid>,
    Json(req): Json<NewNote>,
) -> Result<(StatusCode, Json<Value>), Problem> {
    check_text("a note", &req.body, 10_000)?;
    let note = app.store.add_note(&ctx, project, &req.body).await?;
    Ok((StatusCode::CREATED, Json(json!(note))))
}

async fn list_notes<T: StoreBackend>(
    State(app): State<Arc<AppState<T>>>,
    Tenant(ctx): Tenant,
    Path(project): Path<Uuid>,
) -> Result<Json<Value>, Problem> {
    let notes = app.store.notes(&ctx, project).await?;
    Ok(Json(json!({ "notes": notes })))
}

/// What the open billing period would cost if it ended now.
async fn invoice<T: StoreBackend>(
    State(app): State<Arc<AppState<T>>>,
    Tenant(ctx): Tenant,
) -> Result<Json<Value>, Problem> {
    let subscription = app.store.current.id(ctx.tenant_id()).await?;
    let billing = app.store.current.billing();
    let invoice = billing
        .upcoming_invoice(ctx.tenant_id(), subscription)
        .await?;
    Ok(Json(json!(invoice)))
}

async fn audit_log<T: StoreBackend>(
    State(app): State<Arc<AppState<T>>>,
    Tenant(ctx): Tenant,
) -> Result<Json<Value>, Problem> {
    let events = app.store.audit_log(&ctx).await?;
    Ok(Json(json!({ "events": events })))
}
