//! Every request counted against its tenant's meter: a tower layer for
//! the routes a plan meters ("API calls").

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use saas_billing::{Decimal, DenyReason, MeterKey, UsageEvent};
use saas_core::http::problem_response;
use saas_core::{ErrorKind, SharedClock, TenantContext};
use tower_layer::Layer;
use tower_service::Service;

use crate::problem::Problem;
use crate::subscriptions::CurrentSubscriptions;

/// Records one unit of `meter` for each request, against the request
/// tenant's current subscription, before the handler runs — whatever the
/// handler answers, the call is counted. Each request's usage is keyed by
/// an id the layer makes (UUIDv7), never by a header the client could
/// repeat to be counted once.
///
/// Put it inside [`TenantLayer`](saas_core::http::TenantLayer) (added
/// before it), which resolves the tenant; a request that reaches it
/// without a tenant is refused (500), never counted against nobody. A
/// tenant with no current subscription gets 404 from
/// [`CurrentSubscriptions`].
///
/// With [`MeterLayer::enforcing`], a request over the plan's quota for
/// the meter is refused with 429 (`quota_exceeded`) and not counted. The
/// check reads the engine's in-process counters, so concurrent requests
/// at the edge may all pass it: a soft limit, exact per process. (An
/// exact limit across servers takes the billing crate's quota stores.)
///
/// ```no_run
/// use std::sync::Arc;
/// use axum::{Router, routing::get};
/// use saas_billing::MeterKey;
/// use saas_core::SystemClock;
/// use saas_foundation::metering::MeterLayer;
/// use saas_foundation::subscriptions::CurrentSubscriptions;
///
/// fn routes(current: Arc<CurrentSubscriptions>, resolver: saas_core::RequestResolver) -> Router {
///     let meter = MeterKey::new("api_calls").unwrap();
///     Router::new()
///         .route("/projects", get(|| async { "[]" }))
///         .layer(MeterLayer::new(current, meter, Arc::new(SystemClock)).enforcing())
///         .layer(saas_core::http::TenantLayer::new(resolver))
/// }
/// ```
#[derive(Clone)]
pub struct MeterLayer {
    current: Arc<CurrentSubscriptions>,
    key: MeterKey,
    clock: SharedClock,
    enforcing: bool,
}

impl MeterLayer {
    /// Counts each request as one unit of `meter`, at `clock`'s time.
    pub fn new(current: Arc<CurrentSubscriptions>, meter: MeterKey, clock: SharedClock) -> Self {
        MeterLayer {
            current,
            key: meter,
            clock,
            enforcing: false,
        }
    }

    /// Refuses requests over the plan's quota for the meter (429).
    pub fn enforcing(mut self) -> Self {
        self.enforcing = true;
        self
    }
}

impl fmt::Debug for MeterLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MeterLayer")
            .field("meter", &self.key)
            .field("enforcing", &self.enforcing)
            .finish_non_exhaustive()
    }
}

/// What every request through one [`MeterLayer`] shares.
struct Meter {
    current: Arc<CurrentSubscriptions>,
    key: MeterKey,
    clock: SharedClock,
    enforcing: bool,
}

impl<S> Layer<S> for MeterLayer {
    type Service = MeterService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        MeterService {
            inner,
            meter: Arc::new(Meter {
                current: Arc::clone(&self.current),
                key: self.key.clone(),
                clock: Arc::clone(&self.clock),
                enforcing: self.enforcing,
            }),
        }
    }
}

/// The service [`MeterLayer`] wraps routes in.
#[derive(Clone)]
pub struct MeterService<S> {
    inner: S,
    meter: Arc<Meter>,
}

impl<S> fmt::Debug for MeterService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MeterService").finish_non_exhaustive()
    }
}

type BoxFuture<O> = std::pin::Pin<Box<dyn std::future::Future<Output = O> + Send>>;

impl<S> Service<Request> for MeterService<S>
where
    S: Service<Request, Response = Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let meter = Arc::clone(&self.meter);
        // The clone that was made ready is the one to call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let ctx = request.extensions().get::<TenantContext>().cloned();
            match meter.count(ctx).await {
                Ok(()) => inner.call(request).await,
                Err(refusal) => Ok(refusal),
            }
        })
    }
}

impl Meter {
    /// Records the request's unit, or the response refusing it.
    async fn count(&self, ctx: Option<TenantContext>) -> Result<(), Response> {
        let Some(ctx) = ctx else {
            tracing::error!("MeterLayer reached without a tenant: add TenantLayer after it");
            return Err(Problem::new(
                ErrorKind::Internal,
                "the request's tenant was not resolved before metering",
            )
            .into_response());
        };
        let tenant = ctx.tenant_id();
        let subscription = self
            .current
            .id(tenant)
            .await
            .map_err(|e| Problem::from(e).into_response())?;
        if self.enforcing {
            let decision = self
                .current
                .billing()
                .check(tenant, self.key.as_str(), Decimal::ONE);
            if decision.reason() == Some(DenyReason::OverLimit) {
                let detail = format!(
                    "the plan's quota of {} is used up for this period; upgrade or wait for the next",
                    self.key.as_str()
                );
                return Err(problem_response(
                    StatusCode::TOO_MANY_REQUESTS,
                    "quota_exceeded",
                    &detail,
                ));
            }
        }
        let id = uuid::Uuid::now_v7().to_string();
        let usage = UsageEvent::new(
            tenant,
            subscription,
            self.key.clone(),
            Decimal::ONE,
            self.clock.now(),
            id,
        );
        self.current
            .billing()
            .record_usage(usage)
            .await
            .map_err(|e| Problem::from(e).into_response())?;
        Ok(())
    }
}
