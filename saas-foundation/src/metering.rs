//! Every request counted against its tenant's meter: a tower layer for
//! the routes a plan meters ("API calls").

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use saas_billing::{Decimal, DenyReason, MeterKey, SubscriptionId, UsageEvent};
use saas_core::http::problem_response;
use saas_core::{ErrorKind, SharedClock, TenantContext, TenantId};
use tower_layer::Layer;
use tower_service::Service;

use crate::layers::{BoxFuture, request_tenant, take_ready};
use crate::problem::Problem;
use crate::subscriptions::CurrentSubscriptions;

/// Records one unit of `meter` for each request, against the request
/// tenant's current subscription, before the handler runs — whatever the
/// handler answers, the call is counted (or, with
/// [`MeterLayer::after_success`], only a request answered with success,
/// after it). Each request's usage is keyed by an id the layer makes
/// (UUIDv7), never by a header the client could repeat to be counted
/// once.
///
/// Put it inside [`TenantLayer`](saas_core::http::TenantLayer) (added
/// before it), which resolves the tenant; a request that reaches it
/// without a tenant is refused (500), never counted against nobody. A
/// tenant with no current subscription gets 404 from
/// [`CurrentSubscriptions`].
///
/// With [`MeterLayer::enforcing`], a request over the plan's quota for
/// the meter is refused with 429 (`quota_exceeded`), one on a
/// subscription that is not served with 403 (`subscription_not_served`),
/// one of a tenant whose entitlements this process has not loaded with
/// 403 (`no_entitlements`), none counted. The engine knows the
/// subscriptions it created or changed and those loaded by
/// `BillingEngine::restore_entitlements` (at startup:
/// `Stack::billing_engine`): a tenant subscribed through another server
/// is refused here until they are restored again — run it periodically
/// when several servers take sign-ups. The check
/// reads the engine's in-process counters, so concurrent requests
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
    after_success: bool,
}

impl MeterLayer {
    /// Counts each request as one unit of `meter`, at `clock`'s time.
    pub fn new(current: Arc<CurrentSubscriptions>, meter: MeterKey, clock: SharedClock) -> Self {
        MeterLayer {
            current,
            key: meter,
            clock,
            enforcing: false,
            after_success: false,
        }
    }

    /// Refuses, before the handler, a request the plan does not allow:
    /// over its quota for the meter (429, `quota_exceeded`), or on a
    /// subscription not served — paused, unpaid, canceled (403,
    /// `subscription_not_served`). A plan with no quota on the meter lets
    /// every request through (its calls are billed, not limited).
    pub fn enforcing(mut self) -> Self {
        self.enforcing = true;
        self
    }

    /// Counts only the requests answered with success (2xx, 3xx), after
    /// the handler — for a meter of work done rather than of calls. Put
    /// it outside a `TransactionLayer` (added after it) so what is counted
    /// is committed. The unit is recorded in a task of its own, so it is
    /// recorded even if the client goes away once the handler is done; a
    /// failure to record is logged, and the answer kept.
    pub fn after_success(mut self) -> Self {
        self.after_success = true;
        self
    }
}

impl fmt::Debug for MeterLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MeterLayer")
            .field("meter", &self.key)
            .field("enforcing", &self.enforcing)
            .field("after_success", &self.after_success)
            .finish_non_exhaustive()
    }
}

/// What every request through one [`MeterLayer`] shares.
struct Meter {
    current: Arc<CurrentSubscriptions>,
    key: MeterKey,
    clock: SharedClock,
    enforcing: bool,
    after_success: bool,
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
                after_success: self.after_success,
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
        let mut inner = take_ready(&mut self.inner);
        Box::pin(async move {
            let ctx = request_tenant(&request, "MeterLayer", "metering");
            let (tenant, subscription) = match meter.admit(ctx).await {
                Ok(admitted) => admitted,
                Err(refusal) => return Ok(refusal),
            };
            if !meter.after_success {
                if let Err(e) = meter.record(tenant, subscription).await {
                    return Ok(Problem::from(e).into_response());
                }
                return inner.call(request).await;
            }
            let response = inner.call(request).await?;
            let served = response.status().is_success() || response.status().is_redirection();
            if served {
                // The request's work is done (and committed, inside this
                // layer): the recording runs in a task of its own, so a
                // client that goes away now cannot skip it; a failure is
                // logged and the answer stands.
                tokio::spawn(async move {
                    if let Err(error) = meter.record(tenant, subscription).await {
                        tracing::error!(%tenant, %error, "usage of a served request not recorded");
                    }
                });
            }
            Ok(response)
        })
    }
}

impl Meter {
    /// The request's tenant and subscription, refused over the quota when
    /// enforcing; or the response refusing the request.
    async fn admit(
        &self,
        ctx: Result<TenantContext, Problem>,
    ) -> Result<(TenantId, SubscriptionId), Response> {
        let tenant = ctx.map_err(IntoResponse::into_response)?.tenant_id();
        let subscription = self
            .current
            .id(tenant)
            .await
            .map_err(|e| Problem::from(e).into_response())?;
        if self.enforcing {
            let billing = self.current.billing();
            let decision = billing.check(tenant, self.key.as_str(), Decimal::ONE);
            if let Some(refusal) = decision.reason().and_then(|r| refusal(&self.key, r)) {
                return Err(refusal);
            }
        }
        Ok((tenant, subscription))
    }

    /// Records one unit for the request, against `subscription` or, if
    /// that one has ended meanwhile, the tenant's current one.
    async fn record(
        &self,
        tenant: TenantId,
        subscription: SubscriptionId,
    ) -> Result<(), saas_billing::BillingError> {
        match self.record_on(tenant, subscription).await {
            // The remembered subscription may have ended since (canceled,
            // replaced by another): look it up afresh and, if it is
            // another one, record there.
            Err(refused) if refused.kind() == ErrorKind::InvalidInput => {
                self.current.forget(tenant).await;
                let current = self.current.id(tenant).await?;
                if current == subscription {
                    return Err(refused);
                }
                self.record_on(tenant, current).await
            }
            other => other,
        }
    }

    /// Records one unit against `subscription`.
    async fn record_on(
        &self,
        tenant: TenantId,
        subscription: SubscriptionId,
    ) -> Result<(), saas_billing::BillingError> {
        let id = uuid::Uuid::now_v7().to_string();
        let usage = UsageEvent::new(
            tenant,
            subscription,
            self.key.clone(),
            Decimal::ONE,
            self.clock.now(),
            id,
        );
        self.current.billing().record_usage(usage).await.map(drop)
    }
}

/// The answer to a request the plan does not allow; `None` for a plan
/// that does not limit this meter (it bills the calls, if anything).
fn refusal(meter: &MeterKey, reason: DenyReason) -> Option<Response> {
    let meter = meter.as_str();
    match reason {
        DenyReason::UnknownFeature => None,
        DenyReason::OverLimit => Some(problem_response(
            StatusCode::TOO_MANY_REQUESTS,
            "quota_exceeded",
            &format!(
                "the plan's quota of {meter} is used up for this period; upgrade or wait for the next"
            ),
        )),
        DenyReason::NotServed(status) => {
            let detail =
                format!("the subscription is {status}: no {meter} until it is served again");
            let problem = Problem::new(ErrorKind::Forbidden, detail);
            Some(problem.with_code("subscription_not_served").into_response())
        }
        // No entitlements loaded (or a reason added later): fail closed.
        other => {
            tracing::error!(%other, "metered request refused; were the entitlements restored?");
            Some(
                Problem::new(ErrorKind::Forbidden, format!("{meter}: {other}"))
                    .with_code("no_entitlements")
                    .into_response(),
            )
        }
    }
}
