//! Event consumers that work on the event's tenant: the tenant's context
//! read from the catalog, so the handler goes straight to its scoped
//! transaction.

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use async_trait::async_trait;
use saas_core::{TenantContext, TenantStatus};
use saas_events::EventError;
use saas_events::router::{Handler, ReceivedEvent};
use saas_tenancy::Tenancy;

/// A [`Handler`] that calls `handle` with the context of the event's
/// tenant. An event without a tenant, or of a tenant deleted (or being
/// deleted) since it was published, is acknowledged without calling
/// `handle`: there is nowhere to apply it. A tenant that is suspended or
/// not yet active gets `handle` called all the same; its scoped
/// transaction is refused, so the event is retried (and dead-lettered by
/// the router's policy if that lasts).
///
/// ```
/// use std::sync::Arc;
/// use saas_events::router::Router;
/// use saas_foundation::consumers::tenant_handler;
/// use saas_tenancy::{Tenancy, TenantTransaction};
///
/// fn audit<T: Tenancy>(tenancy: Arc<T>) -> Router {
///     let writer = Arc::clone(&tenancy);
///     Router::new().fallback(tenant_handler(tenancy, move |ctx, event| {
///         let tenancy = Arc::clone(&writer);
///         async move {
///             let tx = tenancy.begin(&ctx).await.map_err(saas_events::EventError::handler)?;
///             // … record `event.event()` in the tenant's audit log …
///             # let _ = event;
///             tx.commit().await.map_err(saas_events::EventError::handler)
///         }
///     }))
/// }
/// ```
pub fn tenant_handler<T, F, Fut>(tenancy: Arc<T>, handle: F) -> TenantHandler<T, F>
where
    T: Tenancy,
    F: Fn(TenantContext, ReceivedEvent) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), EventError>> + Send + 'static,
{
    TenantHandler { tenancy, handle }
}

/// The handler [`tenant_handler`] returns.
pub struct TenantHandler<T, F> {
    tenancy: Arc<T>,
    handle: F,
}

impl<T, F> fmt::Debug for TenantHandler<T, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TenantHandler").finish_non_exhaustive()
    }
}

#[async_trait]
impl<T, F, Fut> Handler for TenantHandler<T, F>
where
    T: Tenancy,
    F: Fn(TenantContext, ReceivedEvent) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), EventError>> + Send + 'static,
{
    async fn handle(&self, received: ReceivedEvent) -> Result<(), EventError> {
        let Some(tenant) = received.event().tenant_id() else {
            return Ok(());
        };
        let record = self
            .tenancy
            .catalog()
            .get(tenant)
            .await
            .map_err(EventError::handler)?;
        match record {
            Some(record)
                if !matches!(
                    record.status,
                    TenantStatus::Deleting | TenantStatus::Deleted
                ) =>
            {
                let ctx = TenantContext::new(record.id, record.slug);
                (self.handle)(ctx, received).await
            }
            _ => {
                tracing::debug!(%tenant, "event of a deleted tenant skipped");
                Ok(())
            }
        }
    }
}
