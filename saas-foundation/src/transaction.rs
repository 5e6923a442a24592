//! The request tenant's scoped transaction as an axum extractor:
//! committed when the handler answers with success, rolled back when it
//! answers with an error, panics, or the client goes away.

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::{FromRequestParts, Request};
use axum::response::{IntoResponse, Response};
use saas_core::{ErrorKind, TenantContext};
use saas_tenancy::{Tenancy, TenantTransaction};
use tokio::sync::{Mutex, OwnedMutexGuard};
use tower_layer::Layer;
use tower_service::Service;

use crate::layers::{BoxFuture, take_ready};
use crate::problem::Problem;

/// One request's transaction: not begun, or begun by the extractor.
type Slot<T> = Arc<Mutex<Option<<T as Tenancy>::Tx>>>;

/// What the layer leaves in the request for the extractor.
struct Pending<T: Tenancy> {
    tenancy: Arc<T>,
    slot: Slot<T>,
    for_writes: bool,
}

impl<T: Tenancy> Clone for Pending<T> {
    fn clone(&self) -> Self {
        Pending {
            tenancy: Arc::clone(&self.tenancy),
            slot: Arc::clone(&self.slot),
            for_writes: self.for_writes,
        }
    }
}

/// Makes [`ScopedTx`] available to the routes it wraps, and ends each
/// request's transaction: **commit** when the handler's response is a
/// success (1xx–3xx), **rollback** otherwise. A panicking handler or a
/// client that disconnects drops the transaction unfinished, which rolls
/// it back. If the commit fails, the response is replaced by the error's
/// [`Problem`], so the client does not hear "created" for a change that
/// was not kept (but see [`ScopedTx`] on swallowed statement errors).
///
/// Put it inside [`TenantLayer`](saas_core::http::TenantLayer) (added
/// before it, so it runs after the tenant is resolved):
///
/// ```no_run
/// use axum::{Router, routing::post};
/// use saas_foundation::problem::Problem;
/// use saas_foundation::transaction::{ScopedTx, TransactionLayer};
/// use saas_tenancy::sqlite::SqliteTenancy;
///
/// async fn add_note(mut tx: ScopedTx<SqliteTenancy>) -> Result<&'static str, Problem> {
///     sqlx::query("INSERT INTO notes (id, body) VALUES (1, 'hi')")
///         .execute(&mut *tx)
///         .await
///         .map_err(saas_tenancy::TenancyError::from)?;
///     Ok("added") // committed after this returns
/// }
///
/// fn routes(tenancy: SqliteTenancy, resolver: saas_core::RequestResolver) -> Router {
///     Router::new()
///         .route("/notes", post(add_note))
///         .layer(TransactionLayer::new(tenancy))
///         .layer(saas_core::http::TenantLayer::new(resolver))
/// }
/// ```
pub struct TransactionLayer<T> {
    tenancy: Arc<T>,
    for_writes: bool,
}

impl<T> TransactionLayer<T> {
    /// A layer beginning transactions on `tenancy`.
    pub fn new(tenancy: T) -> Self {
        Self::shared(Arc::new(tenancy))
    }

    /// A layer beginning transactions on a tenancy the host shares.
    pub fn shared(tenancy: Arc<T>) -> Self {
        TransactionLayer {
            tenancy,
            for_writes: false,
        }
    }

    /// Begins each transaction for work that reads and then writes
    /// ([`Tenancy::begin_for_write`]): on SQLite `BEGIN IMMEDIATE`, without
    /// which a check-then-insert (a plan limit) fails at once with
    /// "database is locked" when another writer committed in between; it
    /// makes the file's writers take turns for the whole request. The
    /// same as the default on PostgreSQL.
    pub fn for_writes(mut self) -> Self {
        self.for_writes = true;
        self
    }
}

impl<T> Clone for TransactionLayer<T> {
    fn clone(&self) -> Self {
        TransactionLayer {
            tenancy: Arc::clone(&self.tenancy),
            for_writes: self.for_writes,
        }
    }
}

impl<T> fmt::Debug for TransactionLayer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TransactionLayer").finish_non_exhaustive()
    }
}

impl<S, T> Layer<S> for TransactionLayer<T> {
    type Service = TransactionService<S, T>;

    fn layer(&self, inner: S) -> Self::Service {
        TransactionService {
            inner,
            tenancy: Arc::clone(&self.tenancy),
            for_writes: self.for_writes,
        }
    }
}

/// The service [`TransactionLayer`] wraps routes in.
pub struct TransactionService<S, T> {
    inner: S,
    tenancy: Arc<T>,
    for_writes: bool,
}

impl<S: Clone, T> Clone for TransactionService<S, T> {
    fn clone(&self) -> Self {
        TransactionService {
            inner: self.inner.clone(),
            tenancy: Arc::clone(&self.tenancy),
            for_writes: self.for_writes,
        }
    }
}

impl<S, T> fmt::Debug for TransactionService<S, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TransactionService").finish_non_exhaustive()
    }
}

impl<S, T> Service<Request> for TransactionService<S, T>
where
    S: Service<Request, Response = Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
    T: Tenancy,
{
    type Response = Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        let slot: Slot<T> = Arc::new(Mutex::new(None));
        request.extensions_mut().insert(Pending {
            tenancy: Arc::clone(&self.tenancy),
            slot: Arc::clone(&slot),
            for_writes: self.for_writes,
        });
        let mut inner = take_ready(&mut self.inner);
        Box::pin(async move {
            let response = inner.call(request).await?;
            Ok(finish::<T>(slot, response).await)
        })
    }
}

/// Ends the request's transaction by the handler's response.
async fn finish<T: Tenancy>(slot: Slot<T>, response: Response) -> Response {
    let Ok(mut held) = slot.try_lock() else {
        // The handler kept its ScopedTx alive (moved into a task): what it
        // will still do cannot be committed with this response.
        tracing::error!("a ScopedTx outlived its handler; its transaction is rolled back");
        return Problem::new(
            ErrorKind::Internal,
            "the request's transaction was still in use when the handler returned",
        )
        .into_response();
    };
    let Some(tx) = held.take() else {
        return response; // the handler used no transaction
    };
    drop(held);
    if response.status().is_success()
        || response.status().is_redirection()
        || response.status().is_informational()
    {
        match tx.commit().await {
            Ok(()) => response,
            Err(error) => Problem::from_error(&error).into_response(),
        }
    } else {
        if let Err(error) = tx.rollback().await {
            // Rolled back anyway when the connection goes; worth a log.
            tracing::warn!(%error, "rolling back a failed request's transaction failed");
        }
        response
    }
}

/// The request tenant's transaction, begun when the handler's arguments
/// are extracted.
///
/// Derefs to the backend's sqlx connection (`&mut *tx` is an executor).
/// Ended by the [`TransactionLayer`] after the handler returns, by the
/// response's status; the handler never commits it. One per request.
///
/// It holds a connection from extraction on — also while a body extractor
/// after it (`Json`) receives the body — so put a request-size limit in
/// front of routes that take one. On PostgreSQL a statement error aborts
/// the transaction: a handler that swallows such an error and answers with
/// success gets a COMMIT that the server turns into a rollback, so let
/// statement errors end the handler (`?`).
pub struct ScopedTx<T: Tenancy> {
    guard: OwnedMutexGuard<Option<T::Tx>>,
}

impl<T: Tenancy> ScopedTx<T> {
    /// The tenant's transaction handle itself (for APIs that take it).
    pub fn handle(&mut self) -> &mut T::Tx {
        self.guard
            .as_mut()
            .expect("a ScopedTx is only made around a begun transaction")
    }
}

impl<T: Tenancy> Deref for ScopedTx<T> {
    type Target = <T::Database as sqlx::Database>::Connection;

    fn deref(&self) -> &Self::Target {
        self.guard
            .as_ref()
            .expect("a ScopedTx is only made around a begun transaction")
    }
}

impl<T: Tenancy> DerefMut for ScopedTx<T> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        self.handle()
    }
}

impl<T: Tenancy> fmt::Debug for ScopedTx<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScopedTx")
            .field("tx", &*self.guard)
            .finish()
    }
}

impl<S: Send + Sync, T: Tenancy> FromRequestParts<S> for ScopedTx<T> {
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        _state: &S,
    ) -> Result<Self, Problem> {
        let Some(pending) = parts.extensions.get::<Pending<T>>().cloned() else {
            return Err(wiring(
                "this route is not behind a TransactionLayer for this tenancy",
            ));
        };
        let Some(ctx) = parts.extensions.get::<TenantContext>().cloned() else {
            return Err(wiring(
                "this route is not behind a TenantLayer; add it outside the TransactionLayer",
            ));
        };
        let Ok(mut guard) = Arc::clone(&pending.slot).try_lock_owned() else {
            return Err(wiring("a handler may take one ScopedTx per request"));
        };
        if guard.is_some() {
            return Err(wiring("a handler may take one ScopedTx per request"));
        }
        let tx = if pending.for_writes {
            pending.tenancy.begin_for_write(&ctx).await?
        } else {
            pending.tenancy.begin(&ctx).await?
        };
        *guard = Some(tx);
        Ok(ScopedTx { guard })
    }
}

/// A mistake in how the router is put together: a 500, never mistaken
/// for a client error.
fn wiring(detail: &'static str) -> Problem {
    tracing::error!(detail, "ScopedTx cannot be extracted");
    Problem::new(ErrorKind::Internal, detail)
}
