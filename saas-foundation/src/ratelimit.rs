//! Per-tenant rate limits as a tower layer: each tenant's requests per
//! second come from its plan, so one noisy tenant is slowed down and
//! nobody else is.

use std::collections::HashMap;
use std::fmt;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock, Reference};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::HashMapStateStore;
use governor::{Quota, RateLimiter};
use http::{HeaderValue, StatusCode, header};
use saas_core::TenantId;
use saas_core::http::problem_response;
use tower_layer::Layer;
use tower_service::Service;

use crate::layers::{BoxFuture, request_tenant, take_ready};
use crate::subscriptions::CurrentSubscriptions;

/// The default rate meaning "no limit".
const UNLIMITED: u64 = u64::MAX;

/// How long a tenant's rate, read from its plan, is trusted.
const RATE_TTL: Duration = Duration::from_secs(5);
/// Requests between sweeps of tenants whose limiter state is back to fresh.
const SWEEP_EVERY: u64 = 4_096;

/// A tenant's requests per second (`None`: unlimited), and when it was
/// read from the plan.
type KnownRate<C> = (Option<u32>, <C as Clock>::Instant);

type TenantLimiter<C> =
    RateLimiter<TenantId, HashMapStateStore<TenantId>, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// Limits each tenant to the requests per second its plan allows: the
/// plan's limit on `feature` (`PlanVersion::builder(…).limit("api_rate",
/// dec!(20))`), as a GCRA bucket of that many requests refilled over a
/// second (a tenant may burst its whole second at once). A request over
/// it gets 429 (`rate_limited`) with `Retry-After` (whole seconds, at
/// least 1), and its handler does not run. Tenants are limited apart: one
/// tenant's flood never uses another's allowance.
///
/// A plan that lists no limit on `feature`, or a tenant with no current
/// subscription (or one whose plan cannot be read), gets
/// [`RateLimitLayer::default_rate`] — unlimited unless set. A limit of 0
/// refuses every request. Rates are read through [`CurrentSubscriptions`]
/// and trusted for 5 s, so a plan change takes effect within that.
///
/// Put it inside [`TenantLayer`](saas_core::http::TenantLayer) (added
/// before it); a request without a resolved tenant is refused (500).
///
/// ```no_run
/// use std::sync::Arc;
/// use axum::{Router, routing::get};
/// use saas_foundation::ratelimit::RateLimitLayer;
/// use saas_foundation::subscriptions::CurrentSubscriptions;
///
/// fn routes(current: Arc<CurrentSubscriptions>, resolver: saas_core::RequestResolver) -> Router {
///     Router::new()
///         .route("/projects", get(|| async { "[]" }))
///         .layer(RateLimitLayer::new(current, "api_rate").default_rate(10))
///         .layer(saas_core::http::TenantLayer::new(resolver))
/// }
/// ```
pub struct RateLimitLayer<C: Clock = DefaultClock> {
    limits: Arc<Limits<C>>,
}

struct Limits<C: Clock> {
    current: Arc<CurrentSubscriptions>,
    feature: String,
    /// Requests per second without a plan limit; [`UNLIMITED`] for none.
    default_rate: AtomicU64,
    clock: C,
    /// Tenant → its rate and when it was read.
    rates: Mutex<HashMap<TenantId, KnownRate<C>>>,
    /// One limiter per distinct rate, keyed by tenant.
    limiters: Mutex<HashMap<NonZeroU32, Arc<TenantLimiter<C>>>>,
    requests: AtomicU64,
}

impl RateLimitLayer<DefaultClock> {
    /// Limits by the plan's limit on `feature`, timed by the monotonic
    /// clock.
    pub fn new(current: Arc<CurrentSubscriptions>, feature: &str) -> Self {
        Self::with_clock(current, feature, DefaultClock::default())
    }
}

impl<C: Clock + Clone + Send + Sync + 'static> RateLimitLayer<C> {
    /// Limits by the plan's limit on `feature`, timed by `clock` (a
    /// `governor::clock::FakeRelativeClock` in tests).
    pub fn with_clock(current: Arc<CurrentSubscriptions>, feature: &str, clock: C) -> Self {
        RateLimitLayer {
            limits: Arc::new(Limits {
                current,
                feature: feature.to_owned(),
                default_rate: AtomicU64::new(UNLIMITED),
                clock,
                rates: Mutex::default(),
                limiters: Mutex::default(),
                requests: AtomicU64::new(0),
            }),
        }
    }

    /// The requests per second of a tenant whose plan sets none (default:
    /// unlimited). Clones of a layer share its limits and state, this
    /// setting included.
    pub fn default_rate(self, per_second: u32) -> Self {
        let rate = u64::from(per_second);
        self.limits.default_rate.store(rate, Ordering::Relaxed);
        self
    }
}

impl<C: Clock> Clone for RateLimitLayer<C> {
    fn clone(&self) -> Self {
        RateLimitLayer {
            limits: Arc::clone(&self.limits),
        }
    }
}

impl<C: Clock> fmt::Debug for RateLimitLayer<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitLayer")
            .field("feature", &self.limits.feature)
            .field("default_rate", &self.limits.default())
            .finish_non_exhaustive()
    }
}

impl<S, C: Clock> Layer<S> for RateLimitLayer<C> {
    type Service = RateLimitService<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimitService {
            inner,
            limits: Arc::clone(&self.limits),
        }
    }
}

/// The service [`RateLimitLayer`] wraps routes in.
pub struct RateLimitService<S, C: Clock = DefaultClock> {
    inner: S,
    limits: Arc<Limits<C>>,
}

impl<S: Clone, C: Clock> Clone for RateLimitService<S, C> {
    fn clone(&self) -> Self {
        RateLimitService {
            inner: self.inner.clone(),
            limits: Arc::clone(&self.limits),
        }
    }
}

impl<S, C: Clock> fmt::Debug for RateLimitService<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitService").finish_non_exhaustive()
    }
}

impl<S, C> Service<Request> for RateLimitService<S, C>
where
    S: Service<Request, Response = Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
    C: Clock + Clone + Send + Sync + 'static,
    C::Instant: Send,
{
    type Response = Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let limits = Arc::clone(&self.limits);
        let mut inner = take_ready(&mut self.inner);
        Box::pin(async move {
            let ctx = match request_tenant(&request, "RateLimitLayer", "rate limiting") {
                Ok(ctx) => ctx,
                Err(refusal) => return Ok(refusal.into_response()),
            };
            match limits.admit(ctx.tenant_id()).await {
                Ok(()) => inner.call(request).await,
                Err(refusal) => Ok(refusal),
            }
        })
    }
}

impl<C: Clock> Limits<C> {
    /// The default rate (`None`: unlimited).
    fn default(&self) -> Option<u32> {
        u32::try_from(self.default_rate.load(Ordering::Relaxed)).ok()
    }
}

impl<C: Clock + Clone> Limits<C> {
    /// Lets the request through, or the 429 refusing it.
    async fn admit(&self, tenant: TenantId) -> Result<(), Response> {
        let Some(rate) = self.rate(tenant).await else {
            return Ok(()); // unlimited
        };
        let Some(rate) = NonZeroU32::new(rate) else {
            #[cfg(feature = "metrics")]
            crate::metrics::rate_limited(tenant, false);
            return Err(too_many(
                "the plan allows no requests; upgrade to use the API",
                None,
            ));
        };
        let limiter = self.limiter(rate);
        if self.requests.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            // Tenants back to a full bucket need no state.
            for limiter in self.all_limiters() {
                limiter.retain_recent();
            }
        }
        let checked = limiter.check_key(&tenant);
        #[cfg(feature = "metrics")]
        crate::metrics::rate_limited(tenant, checked.is_ok());
        match checked {
            Ok(()) => Ok(()),
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.clock.now());
                Err(too_many(
                    &format!("over the plan's {rate} requests per second; slow down"),
                    Some(wait),
                ))
            }
        }
    }

    /// The tenant's requests per second (`None`: unlimited), from the
    /// plan, remembered for [`RATE_TTL`].
    async fn rate(&self, tenant: TenantId) -> Option<u32> {
        let now = self.clock.now();
        if let Ok(rates) = self.rates.lock()
            && let Some((rate, at)) = rates.get(&tenant)
            && Duration::from(now.duration_since(*at)) < RATE_TTL
        {
            return *rate;
        }
        let rate = match self.current.entitlement(tenant, &self.feature).await {
            Ok((_, Some(limit))) => limit
                .max()
                .map(|max| u32::try_from(max.trunc()).unwrap_or(u32::MAX)),
            Ok((_, None)) => self.default(),
            Err(e) => {
                tracing::debug!(%tenant, error = %e, "no plan rate; the default applies");
                self.default()
            }
        };
        if let Ok(mut rates) = self.rates.lock() {
            if rates.len() >= 100_000 {
                rates.clear(); // re-read on demand; bounded memory
            }
            rates.insert(tenant, (rate, now));
        }
        rate
    }

    fn limiter(&self, rate: NonZeroU32) -> Arc<TenantLimiter<C>> {
        let mut limiters = match self.limiters.lock() {
            Ok(limiters) => limiters,
            Err(poisoned) => poisoned.into_inner(),
        };
        let clock = self.clock.clone();
        Arc::clone(limiters.entry(rate).or_insert_with(|| {
            Arc::new(RateLimiter::hashmap_with_clock(
                Quota::per_second(rate),
                clock,
            ))
        }))
    }

    fn all_limiters(&self) -> Vec<Arc<TenantLimiter<C>>> {
        match self.limiters.lock() {
            Ok(limiters) => limiters.values().cloned().collect(),
            Err(_) => Vec::new(),
        }
    }
}

/// A 429 problem, with `Retry-After` in whole seconds (at least 1).
fn too_many(detail: &str, wait: Option<Duration>) -> Response {
    let mut response = problem_response(StatusCode::TOO_MANY_REQUESTS, "rate_limited", detail);
    let seconds = wait
        .map_or(1, |w| w.as_secs() + u64::from(w.subsec_nanos() > 0))
        .max(1);
    if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}
