//! Sending deliveries: one task per (event, endpoint), retried on the
//! schedule, bounded per endpoint.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use saas_core::{SharedClock, SystemClock, TenantId};
use sha2::{Digest, Sha256};
use tokio::sync::{Semaphore, watch};

use super::WebhookError;
use super::attempt::{Outcome, Sender, scheme_supported};
use super::endpoint::{DisableReason, EndpointId, WebhookEndpoint};
use super::schedule::{DisablePolicy, RetrySchedule, RetryTimer, TokioTimer};
use super::ssrf::{CheckedResolver, SsrfPolicy};
use super::store::{DeadDelivery, DeliveryAttempt, WebhookStore};
use crate::envelope::Event;
use crate::error::EventError;
use crate::router::{Handler, ReceivedEvent};

/// Builds a [`WebhookDispatcher`]; see [`WebhookDispatcher::builder`].
pub struct WebhookDispatcherBuilder {
    store: Arc<dyn WebhookStore>,
    policy: SsrfPolicy,
    overrides: HashMap<String, Vec<IpAddr>>,
    schedule: RetrySchedule,
    disable: DisablePolicy,
    request_timeout: Duration,
    timer: Arc<dyn RetryTimer>,
    clock: SharedClock,
}

impl fmt::Debug for WebhookDispatcherBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookDispatcherBuilder")
            .field("policy", &self.policy)
            .field("schedule", &self.schedule)
            .field("disable", &self.disable)
            .field("request_timeout", &self.request_timeout)
            .finish_non_exhaustive()
    }
}

impl WebhookDispatcherBuilder {
    /// Sets the SSRF policy (default: only globally routable addresses).
    pub fn ssrf_policy(mut self, policy: SsrfPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Answers lookups of `host` with `addresses` instead of DNS (split
    /// horizon, tests); the SSRF policy still checks them.
    pub fn resolve_host(mut self, host: &str, addresses: impl IntoIterator<Item = IpAddr>) -> Self {
        self.overrides
            .insert(host.to_ascii_lowercase(), addresses.into_iter().collect());
        self
    }

    /// Sets the retry schedule (default [`RetrySchedule::default`]).
    pub fn schedule(mut self, schedule: RetrySchedule) -> Self {
        self.schedule = schedule;
        self
    }

    /// Sets when a failing endpoint is disabled.
    pub fn disable_policy(mut self, policy: DisablePolicy) -> Self {
        self.disable = policy;
        self
    }

    /// Sets the time limit of one request, connecting included (default 15 s).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Sets how retry delays are waited out (default [`TokioTimer`]).
    pub fn timer(mut self, timer: Arc<dyn RetryTimer>) -> Self {
        self.timer = timer;
        self
    }

    /// Sets the clock for `webhook-timestamp`, the log and the disable
    /// window (default the system clock).
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// The dispatcher.
    ///
    /// # Errors
    /// [`WebhookError::Client`] if the HTTP client cannot be built.
    pub fn build(self) -> Result<WebhookDispatcher, WebhookError> {
        let resolver = CheckedResolver::new(self.policy, self.overrides);
        let client = reqwest::Client::builder()
            // A redirect could lead anywhere, a proxy would be the address
            // actually connected to: neither passes the SSRF check.
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(Arc::new(resolver.clone()))
            .timeout(self.request_timeout)
            .user_agent(concat!("saas-events-webhooks/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|source| WebhookError::Client {
                source: Box::new(source),
            })?;
        let (pending, _) = watch::channel(0);
        Ok(WebhookDispatcher {
            inner: Arc::new(Inner {
                store: self.store,
                client,
                resolver,
                schedule: self.schedule,
                disable: self.disable,
                timer: self.timer,
                clock: self.clock,
                limits: Mutex::default(),
                pending,
            }),
        })
    }
}

/// Delivers tenants' events to their webhook endpoints; cheap to clone.
/// See the [module docs](super) for the whole picture.
#[derive(Clone)]
pub struct WebhookDispatcher {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn WebhookStore>,
    client: reqwest::Client,
    resolver: CheckedResolver,
    schedule: RetrySchedule,
    disable: DisablePolicy,
    timer: Arc<dyn RetryTimer>,
    clock: SharedClock,
    /// Per endpoint: its bound on requests in flight and the semaphore.
    limits: Mutex<HashMap<EndpointId, (usize, Arc<Semaphore>)>>,
    /// Deliveries running or waiting for a retry.
    pending: watch::Sender<usize>,
}

impl fmt::Debug for WebhookDispatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookDispatcher")
            .field("store", &self.inner.store)
            .field("schedule", &self.inner.schedule)
            .field("disable", &self.inner.disable)
            .field("pending", &*self.inner.pending.borrow())
            .finish_non_exhaustive()
    }
}

impl WebhookDispatcher {
    /// A builder over `store`, with the defaults: strict SSRF policy,
    /// [`RetrySchedule::default`], [`DisablePolicy::default`], 15 s per
    /// request, tokio's timer and the system clock.
    pub fn builder(store: Arc<dyn WebhookStore>) -> WebhookDispatcherBuilder {
        WebhookDispatcherBuilder {
            store,
            policy: SsrfPolicy::default(),
            overrides: HashMap::new(),
            schedule: RetrySchedule::default(),
            disable: DisablePolicy::default(),
            request_timeout: Duration::from_secs(15),
            timer: Arc::new(TokioTimer),
            clock: Arc::new(SystemClock),
        }
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn WebhookStore> {
        &self.inner.store
    }

    /// A router [`Handler`] that [dispatches](Self::dispatch) each event.
    pub fn handler(&self) -> WebhookHandler {
        WebhookHandler {
            dispatcher: self.clone(),
        }
    }

    /// Starts one delivery of `event` per enabled endpoint of its tenant
    /// whose filters match its type, and returns how many. An event
    /// without a tenant goes nowhere. Deliveries run on their own tasks.
    ///
    /// # Errors
    /// A store error listing the endpoints (nothing was started).
    pub async fn dispatch(&self, event: Arc<Event>) -> Result<usize, WebhookError> {
        let Some(tenant) = event.tenant_id() else {
            return Ok(0);
        };
        let endpoints = self.inner.store.endpoints(tenant).await?;
        let mut started = 0;
        for endpoint in endpoints
            .iter()
            .filter(|e| e.is_enabled() && e.wants(event.event_type()))
        {
            let webhook_id = webhook_id(&event, endpoint.id());
            self.start(tenant, endpoint.id(), Arc::clone(&event), webhook_id);
            started += 1;
        }
        Ok(started)
    }

    /// Delivers the tenant's dead delivery `webhook_id` again, from a
    /// first attempt, with the same `webhook-id` (receivers deduplicate on
    /// it).
    ///
    /// # Errors
    /// [`WebhookError::NotFound`] if the tenant has no such dead delivery
    /// or its endpoint is gone; [`WebhookError::Disabled`] if the endpoint
    /// is disabled (the dead delivery stays).
    pub async fn redrive(&self, tenant: TenantId, webhook_id: &str) -> Result<(), WebhookError> {
        let store = &self.inner.store;
        let dead = store
            .take_dead_letter(tenant, webhook_id)
            .await?
            .ok_or_else(|| WebhookError::not_found("dead delivery", webhook_id))?;
        // Until it is started again, the dead delivery goes back on any
        // refusal or failure: a redrive never loses it.
        let found = match store.endpoint(tenant, dead.endpoint).await {
            Ok(found) => found,
            Err(e) => {
                store.park(tenant, dead).await?;
                return Err(e);
            }
        };
        let refusal = match found {
            Some(endpoint) if endpoint.is_enabled() => None,
            Some(endpoint) => Some(WebhookError::Disabled {
                id: endpoint.id().to_string(),
            }),
            None => Some(WebhookError::not_found("endpoint", dead.endpoint)),
        };
        if let Some(refusal) = refusal {
            store.park(tenant, dead).await?;
            return Err(refusal);
        }
        self.start(tenant, dead.endpoint, dead.event, dead.webhook_id);
        Ok(())
    }

    /// Checks that `endpoint`'s host resolves to addresses the SSRF policy
    /// allows, without connecting: call it when a tenant registers or
    /// changes an endpoint to refuse a bad URL at once. Deliveries check
    /// again on every attempt (DNS answers change).
    ///
    /// # Errors
    /// [`WebhookError::Forbidden`] for a refused address;
    /// [`WebhookError::Resolve`] if the host does not resolve.
    pub async fn check_endpoint(&self, endpoint: &WebhookEndpoint) -> Result<(), WebhookError> {
        let url = endpoint.url();
        scheme_supported(url)?;
        let host = url.host_str().unwrap_or_default();
        let port = url.port_or_known_default().unwrap_or(80);
        self.inner.resolver.resolve_checked(host, port).await?;
        Ok(())
    }

    /// How many deliveries are running or waiting for a retry.
    pub fn pending(&self) -> usize {
        *self.inner.pending.borrow()
    }

    /// Waits until no delivery is running or waiting for a retry.
    pub async fn wait_idle(&self) {
        let mut pending = self.inner.pending.subscribe();
        // The sender lives in `self`, so the channel cannot close here.
        let _ = pending.wait_for(|n| *n == 0).await;
    }

    fn start(&self, tenant: TenantId, endpoint: EndpointId, event: Arc<Event>, webhook_id: String) {
        self.inner.pending.send_modify(|n| *n += 1);
        let inner = Arc::clone(&self.inner);
        tokio::spawn(async move {
            inner.deliver(tenant, endpoint, event, webhook_id).await;
            inner.pending.send_modify(|n| *n -= 1);
        });
    }
}

/// The `webhook-id` of an event at an endpoint: stable, so every attempt
/// and a redrive carry the same id. CloudEvents ids are unique per
/// source, so (source, id, endpoint) names a delivery.
fn webhook_id(event: &Event, endpoint: EndpointId) -> String {
    let mut hasher = Sha256::new();
    for part in [event.source().as_bytes(), event.id().as_bytes()] {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part);
    }
    hasher.update(endpoint.as_uuid().as_bytes());
    let digest = hasher.finalize();
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("msg_{hex}")
}

impl Inner {
    async fn deliver(
        &self,
        tenant: TenantId,
        id: EndpointId,
        event: Arc<Event>,
        webhook_id: String,
    ) {
        let body = match event.to_json() {
            Ok(body) => Bytes::from(body),
            Err(error) => {
                return self
                    .give_up(tenant, id, &event, &webhook_id, 0, error.to_string())
                    .await;
            }
        };
        let mut attempt = 1;
        loop {
            let endpoint = match self.store.endpoint(tenant, id).await {
                Ok(Some(endpoint)) if endpoint.is_enabled() => endpoint,
                Ok(Some(_)) => {
                    let reason = "endpoint disabled".to_owned();
                    return self
                        .give_up(tenant, id, &event, &webhook_id, attempt - 1, reason)
                        .await;
                }
                Ok(None) => {
                    tracing::info!(%tenant, endpoint = %id, "webhook endpoint removed; delivery dropped");
                    return;
                }
                Err(error) => {
                    // The store may come back: wait as after a failed attempt.
                    tracing::warn!(%error, "webhook store unavailable");
                    match self.schedule.delay_before(attempt + 1) {
                        Some(delay) => {
                            self.timer.sleep(delay).await;
                            attempt += 1;
                            continue;
                        }
                        None => return,
                    }
                }
            };
            let started_at = self.clock.now();
            let started = Instant::now();
            let outcome = {
                let permit = self.limit(&endpoint).acquire_owned().await;
                let sender = Sender {
                    client: &self.client,
                    resolver: &self.resolver,
                    clock: &self.clock,
                };
                let outcome = sender.send(&endpoint, &webhook_id, &body).await;
                drop(permit);
                outcome
            };
            let retry_in = match &outcome {
                Outcome::Failed { .. } => self.schedule.delay_before(attempt + 1),
                _ => None,
            };
            let (status, error, delivered) = match &outcome {
                Outcome::Delivered(status) => (Some(*status), None, true),
                Outcome::Gone => (Some(410), None, false),
                Outcome::Refused(error) => (None, Some(error.to_string()), false),
                Outcome::Failed { status, error } => (*status, error.clone(), false),
            };
            let record = DeliveryAttempt {
                endpoint: id,
                event_id: event.id().to_owned(),
                event_type: event.event_type().to_owned(),
                webhook_id: webhook_id.clone(),
                attempt,
                status,
                error,
                delivered,
                duration: started.elapsed(),
                at: started_at,
                next_attempt_in: retry_in,
            };
            let failures = match self.store.record_attempt(tenant, record).await {
                Ok(failures) => failures,
                Err(error) => {
                    tracing::warn!(%error, "could not log a webhook attempt");
                    Default::default()
                }
            };
            match outcome {
                Outcome::Delivered(_) => return,
                Outcome::Gone => {
                    self.disable(tenant, id, DisableReason::Gone).await;
                    let reason = "endpoint answered 410 Gone".to_owned();
                    return self
                        .give_up(tenant, id, &event, &webhook_id, attempt, reason)
                        .await;
                }
                Outcome::Refused(error) => {
                    return self
                        .give_up(tenant, id, &event, &webhook_id, attempt, error.to_string())
                        .await;
                }
                Outcome::Failed { .. } => {}
            }
            let now = self.clock.now();
            let window =
                chrono::Duration::from_std(self.disable.window).unwrap_or(chrono::Duration::MAX);
            let sustained = failures.consecutive >= self.disable.min_failures
                && failures
                    .failing_since
                    .is_some_and(|since| now - since >= window);
            if sustained {
                self.disable(tenant, id, DisableReason::SustainedFailure)
                    .await;
                let reason = "endpoint disabled after sustained failure".to_owned();
                return self
                    .give_up(tenant, id, &event, &webhook_id, attempt, reason)
                    .await;
            }
            let Some(delay) = retry_in else {
                let reason = format!("no success after {attempt} attempts");
                return self
                    .give_up(tenant, id, &event, &webhook_id, attempt, reason)
                    .await;
            };
            self.timer.sleep(delay).await;
            attempt += 1;
        }
    }

    /// The endpoint's semaphore, made anew when its bound changed.
    fn limit(&self, endpoint: &WebhookEndpoint) -> Arc<Semaphore> {
        let mut limits = self.limits.lock().unwrap_or_else(PoisonError::into_inner);
        let max = endpoint.max_in_flight();
        let entry = limits
            .entry(endpoint.id())
            .or_insert_with(|| (max, Arc::new(Semaphore::new(max))));
        if entry.0 != max {
            *entry = (max, Arc::new(Semaphore::new(max)));
        }
        Arc::clone(&entry.1)
    }

    async fn disable(&self, tenant: TenantId, id: EndpointId, reason: DisableReason) {
        tracing::warn!(%tenant, endpoint = %id, ?reason, "webhook endpoint disabled");
        if let Err(error) = self
            .store
            .disable(tenant, id, reason, self.clock.now())
            .await
        {
            tracing::error!(%error, "could not disable a webhook endpoint");
        }
    }

    async fn give_up(
        &self,
        tenant: TenantId,
        endpoint: EndpointId,
        event: &Arc<Event>,
        webhook_id: &str,
        attempts: u32,
        reason: String,
    ) {
        tracing::warn!(%tenant, %endpoint, webhook_id, %reason, "webhook delivery dead-lettered");
        let dead = DeadDelivery {
            webhook_id: webhook_id.to_owned(),
            endpoint,
            event: Arc::clone(event),
            attempts,
            reason,
            at: self.clock.now(),
        };
        if let Err(error) = self.store.park(tenant, dead).await {
            tracing::error!(%error, webhook_id, "could not keep a dead webhook delivery");
        }
    }
}

/// The router [`Handler`] of a [`WebhookDispatcher`]: dispatches each
/// event and acks it once its deliveries started.
#[derive(Debug, Clone)]
pub struct WebhookHandler {
    dispatcher: WebhookDispatcher,
}

#[async_trait]
impl Handler for WebhookHandler {
    async fn handle(&self, event: ReceivedEvent) -> Result<(), EventError> {
        self.dispatcher.dispatch(event.shared_event()).await?;
        Ok(())
    }
}
