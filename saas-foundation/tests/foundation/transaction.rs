//! `ScopedTx` through a real router on SQLite tenants: committed on
//! success, rolled back on an error response, a panic and a client that
//! goes away; one tenant's request never sees another's rows.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Request};
use axum::middleware::Next;
use axum::routing::{get, post};
use http::StatusCode;
use saas_core::{ErrorKind, TenantContext};
use saas_foundation::problem::Problem;
use saas_foundation::transaction::{ScopedTx, TransactionLayer};
use saas_tenancy::sqlite::SqliteTenancy;
use saas_tenancy::testing::sqlite::SqliteSandbox;
use saas_tenancy::{Strategy, TenancyError};
use tower::ServiceExt;

type Tx = ScopedTx<SqliteTenancy>;

async fn insert(tx: &mut Tx, id: i64) -> Result<(), Problem> {
    sqlx::query("INSERT INTO notes (id, body) VALUES (?, 'note')")
        .bind(id)
        .execute(&mut **tx)
        .await
        .map_err(TenancyError::from)?;
    Ok(())
}

async fn created(mut tx: Tx, Path(id): Path<i64>) -> Result<StatusCode, Problem> {
    insert(&mut tx, id).await?;
    Ok(StatusCode::CREATED)
}

async fn refused(mut tx: Tx, Path(id): Path<i64>) -> Result<StatusCode, Problem> {
    insert(&mut tx, id).await?;
    Err(Problem::new(ErrorKind::Forbidden, "over the plan's limit"))
}

async fn bad_status(mut tx: Tx, Path(id): Path<i64>) -> Result<StatusCode, Problem> {
    insert(&mut tx, id).await?;
    Ok(StatusCode::UNPROCESSABLE_ENTITY)
}

async fn panics(mut tx: Tx, Path(id): Path<i64>) -> Result<StatusCode, Problem> {
    insert(&mut tx, id).await?;
    panic!("the handler fails after writing");
}

async fn hangs(mut tx: Tx, Path(id): Path<i64>) -> Result<StatusCode, Problem> {
    insert(&mut tx, id).await?;
    std::future::pending::<()>().await;
    Ok(StatusCode::CREATED)
}

async fn count(mut tx: Tx) -> Result<String, Problem> {
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM notes")
        .fetch_one(&mut *tx)
        .await
        .map_err(TenancyError::from)?;
    Ok(n.to_string())
}

pub(crate) struct App {
    pub(crate) sandbox: SqliteSandbox,
    pub(crate) router: Router,
    pub(crate) tenants: Vec<TenantContext>,
}

/// Two row tenants; the `x-tenant` header picks one.
async fn app() -> App {
    let sandbox = SqliteSandbox::new().await.unwrap();
    let mut tenants = Vec::new();
    for slug in ["acme", "globex"] {
        tenants.push(sandbox.tenant(slug, Strategy::Shared).await.unwrap());
    }
    App::new(sandbox, tenants)
}

/// The test routes behind a `TransactionLayer`, with the `x-tenant` header
/// naming the tenant by slug (standing in for the TenantLayer, which
/// resolves it from a token or a host name).
pub(crate) fn router(tenancy: SqliteTenancy, tenants: &[TenantContext]) -> Router {
    router_with(TransactionLayer::new(tenancy), tenants)
}

fn router_with(layer: TransactionLayer<SqliteTenancy>, tenants: &[TenantContext]) -> Router {
    let by_slug: Arc<HashMap<String, TenantContext>> = Arc::new(
        tenants
            .iter()
            .map(|t| (t.slug().as_str().to_owned(), t.clone()))
            .collect(),
    );
    let resolve = move |mut request: Request, next: Next| {
        let by_slug = Arc::clone(&by_slug);
        async move {
            let tenant = request
                .headers()
                .get("x-tenant")
                .and_then(|v| v.to_str().ok())
                .and_then(|slug| by_slug.get(slug).cloned());
            if let Some(ctx) = tenant {
                request.extensions_mut().insert(ctx);
            }
            next.run(request).await
        }
    };
    Router::new()
        .route("/created/{id}", post(created))
        .route("/refused/{id}", post(refused))
        .route("/bad-status/{id}", post(bad_status))
        .route("/panics/{id}", post(panics))
        .route("/hangs/{id}", post(hangs))
        .route("/count", get(count))
        .layer(layer)
        .layer(axum::middleware::from_fn(resolve))
}

impl App {
    pub(crate) fn new(sandbox: SqliteSandbox, tenants: Vec<TenantContext>) -> Self {
        let router = router(sandbox.tenancy.clone(), &tenants);
        App {
            sandbox,
            router,
            tenants,
        }
    }

    pub(crate) async fn call(
        &self,
        method: &str,
        path: &str,
        tenant: &str,
    ) -> (StatusCode, String) {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header("x-tenant", tenant)
            .body(Body::empty())
            .unwrap();
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        (status, String::from_utf8(bytes.to_vec()).unwrap())
    }

    pub(crate) async fn notes(&self, tenant: &str) -> String {
        let (status, body) = self.call("GET", "/count", tenant).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }
}

#[tokio::test]
async fn a_successful_handler_commits_and_a_failing_one_rolls_back() {
    let app = app().await;
    assert_eq!(
        app.call("POST", "/created/1", "acme").await.0,
        StatusCode::CREATED
    );
    let (status, body) = app.call("POST", "/refused/2", "acme").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(body.contains("over the plan's limit"), "{body}");
    let (status, _) = app.call("POST", "/bad-status/3", "acme").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        app.notes("acme").await,
        "1",
        "only the created note is kept"
    );
    app.sandbox.cleanup().await;
}

#[tokio::test]
async fn a_panicking_handler_rolls_back() {
    let app = app().await;
    let router = app.router.clone();
    let request = Request::builder()
        .method("POST")
        .uri("/panics/1")
        .header("x-tenant", "acme")
        .body(Body::empty())
        .unwrap();
    let outcome = tokio::spawn(router.oneshot(request)).await;
    assert!(outcome.unwrap_err().is_panic());
    assert_eq!(app.notes("acme").await, "0");
    app.sandbox.cleanup().await;
}

#[tokio::test]
async fn a_client_that_goes_away_rolls_back() {
    let app = app().await;
    let request = Request::builder()
        .method("POST")
        .uri("/hangs/1")
        .header("x-tenant", "acme")
        .body(Body::empty())
        .unwrap();
    // The server drops the request's future when the client disconnects.
    let call = app.router.clone().oneshot(request);
    assert!(
        tokio::time::timeout(Duration::from_millis(200), call)
            .await
            .is_err()
    );
    assert_eq!(app.notes("acme").await, "0");
    assert_eq!(
        app.call("POST", "/created/2", "acme").await.0,
        StatusCode::CREATED,
        "the abandoned transaction holds no lock"
    );
    app.sandbox.cleanup().await;
}

#[tokio::test]
async fn each_request_sees_only_its_tenants_rows() {
    let app = app().await;
    for id in 1..=3 {
        app.call("POST", &format!("/created/{id}"), "acme").await;
    }
    app.call("POST", "/created/1", "globex").await;
    assert_eq!(app.notes("acme").await, "3");
    assert_eq!(app.notes("globex").await, "1");
    assert_eq!(app.tenants.len(), 2);
    app.sandbox.cleanup().await;
}

#[tokio::test]
async fn without_a_tenant_there_is_no_transaction() {
    let app = app().await;
    let (status, body) = app.call("GET", "/count", "nobody").await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    assert!(body.contains("TenantLayer"), "{body}");
    app.sandbox.cleanup().await;
}

#[tokio::test]
async fn a_database_refusal_is_its_kind_without_the_databases_message() {
    let app = app().await;
    assert_eq!(
        app.call("POST", "/created/1", "acme").await.0,
        StatusCode::CREATED
    );
    let (status, body) = app.call("POST", "/created/1", "acme").await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(body.contains("already_exists"), "{body}");
    for secret in ["UNIQUE", "notes", "constraint"] {
        assert!(!body.contains(secret), "{secret:?} leaked: {body}");
    }
    app.sandbox.cleanup().await;
}

#[tokio::test]
async fn a_layer_for_writes_commits_like_the_default() {
    let sandbox = SqliteSandbox::new().await.unwrap();
    let acme = sandbox.tenant("acme", Strategy::Shared).await.unwrap();
    let tenants = vec![acme];
    let router = router_with(
        TransactionLayer::new(sandbox.tenancy.clone()).for_writes(),
        &tenants,
    );
    let app = App {
        sandbox,
        router,
        tenants,
    };
    assert_eq!(
        app.call("POST", "/created/1", "acme").await.0,
        StatusCode::CREATED
    );
    assert_eq!(
        app.call("POST", "/refused/2", "acme").await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(app.notes("acme").await, "1");
    app.sandbox.cleanup().await;
}
