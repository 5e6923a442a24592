//! Where endpoints, the delivery log and dead letters live, per tenant.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use saas_core::TenantId;

use super::WebhookError;
use super::endpoint::{DisableReason, EndpointId, EndpointStatus, WebhookEndpoint};
use crate::envelope::Event;

/// One delivery attempt, as the tenant sees it in the delivery log.
/// (Exhaustive on purpose: stores in other crates build it from rows.)
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryAttempt {
    /// The endpoint tried.
    pub endpoint: EndpointId,
    /// The event's CloudEvents id.
    pub event_id: String,
    /// The event's type.
    pub event_type: String,
    /// The `webhook-id` sent (the same on every attempt of a delivery).
    pub webhook_id: String,
    /// The attempt, from 1.
    pub attempt: u32,
    /// The HTTP status answered, if any.
    pub status: Option<u16>,
    /// Why the attempt failed (no answer, a refused address…), if it did
    /// without a status.
    pub error: Option<String>,
    /// Whether the endpoint took the delivery (a 2xx answer).
    pub delivered: bool,
    /// How long the request took.
    pub duration: Duration,
    /// When it was sent (from the injected clock).
    pub at: DateTime<Utc>,
    /// The delay before the next attempt, if one is scheduled.
    pub next_attempt_in: Option<Duration>,
}

/// A delivery whose attempts are used up (or whose endpoint went away),
/// kept for [`WebhookDispatcher::redrive`](super::WebhookDispatcher::redrive).
/// (Exhaustive on purpose: stores in other crates build it from rows.)
#[derive(Debug, Clone, PartialEq)]
pub struct DeadDelivery {
    /// The delivery's `webhook-id`, which names it.
    pub webhook_id: String,
    /// The endpoint it was for.
    pub endpoint: EndpointId,
    /// The event.
    pub event: Arc<Event>,
    /// Attempts made.
    pub attempts: u32,
    /// Why it was given up.
    pub reason: String,
    /// When (from the injected clock).
    pub at: DateTime<Utc>,
}

/// How an endpoint has been failing: attempts failed in a row and since
/// when.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FailureState {
    /// Failed attempts since the last success (or enable).
    pub consecutive: u32,
    /// When the first of them was made.
    pub failing_since: Option<DateTime<Utc>>,
}

/// Storage for webhook endpoints, the delivery log and dead letters.
///
/// Contract of every method: it acts on the given tenant's data only —
/// an endpoint id of another tenant is [`WebhookError::NotFound`], and
/// lists never contain another tenant's endpoints, log entries or dead
/// letters. Ids are unique across tenants.
#[async_trait]
pub trait WebhookStore: Send + Sync + std::fmt::Debug {
    /// Stores a new endpoint of `tenant`.
    ///
    /// Errors: [`WebhookError::TenantMismatch`] if the endpoint belongs to
    /// another tenant; [`WebhookError::AlreadyExists`] if its id is taken.
    async fn register(
        &self,
        tenant: TenantId,
        endpoint: WebhookEndpoint,
    ) -> Result<(), WebhookError>;

    /// The tenant's endpoint `id`, if it has one.
    async fn endpoint(
        &self,
        tenant: TenantId,
        id: EndpointId,
    ) -> Result<Option<WebhookEndpoint>, WebhookError>;

    /// The tenant's endpoints, oldest first.
    async fn endpoints(&self, tenant: TenantId) -> Result<Vec<WebhookEndpoint>, WebhookError>;

    /// Replaces the tenant's endpoint of the same id (URL, filters,
    /// secrets, bound); its status and failure state are kept.
    ///
    /// Errors: [`WebhookError::NotFound`]; [`WebhookError::TenantMismatch`].
    async fn update(&self, tenant: TenantId, endpoint: WebhookEndpoint)
    -> Result<(), WebhookError>;

    /// Deletes the tenant's endpoint (its log stays).
    ///
    /// Errors: [`WebhookError::NotFound`].
    async fn remove(&self, tenant: TenantId, id: EndpointId) -> Result<(), WebhookError>;

    /// Disables the endpoint for `reason` at `at`; a disabled endpoint
    /// stays disabled with its first reason.
    ///
    /// Errors: [`WebhookError::NotFound`].
    async fn disable(
        &self,
        tenant: TenantId,
        id: EndpointId,
        reason: DisableReason,
        at: DateTime<Utc>,
    ) -> Result<(), WebhookError>;

    /// Enables the endpoint and clears its failure state.
    ///
    /// Errors: [`WebhookError::NotFound`].
    async fn enable(&self, tenant: TenantId, id: EndpointId) -> Result<(), WebhookError>;

    /// Appends an attempt to the tenant's log and updates the endpoint's
    /// failure state (a delivered attempt clears it, a failed one adds
    /// to it); returns the new state. Works for a removed endpoint too.
    async fn record_attempt(
        &self,
        tenant: TenantId,
        attempt: DeliveryAttempt,
    ) -> Result<FailureState, WebhookError>;

    /// The tenant's delivery log, oldest first, of one endpoint or all.
    async fn delivery_log(
        &self,
        tenant: TenantId,
        endpoint: Option<EndpointId>,
    ) -> Result<Vec<DeliveryAttempt>, WebhookError>;

    /// Keeps a dead delivery of the tenant (replacing one of the same
    /// `webhook_id`).
    async fn park(&self, tenant: TenantId, dead: DeadDelivery) -> Result<(), WebhookError>;

    /// The tenant's dead deliveries, oldest first.
    async fn dead_letters(&self, tenant: TenantId) -> Result<Vec<DeadDelivery>, WebhookError>;

    /// Removes and returns the tenant's dead delivery `webhook_id`, if any.
    async fn take_dead_letter(
        &self,
        tenant: TenantId,
        webhook_id: &str,
    ) -> Result<Option<DeadDelivery>, WebhookError>;
}

/// A [`WebhookStore`] in memory: for tests, examples and single-process
/// hosts (nothing survives a restart). The log keeps the newest
/// `max_log_entries` attempts per tenant.
#[derive(Debug, Clone)]
pub struct InMemoryWebhookStore {
    inner: Arc<Mutex<Tenants>>,
    max_log_entries: usize,
}

#[derive(Debug, Default)]
struct Tenants {
    by_tenant: HashMap<TenantId, TenantData>,
}

#[derive(Debug, Default)]
struct TenantData {
    /// In registration order.
    endpoints: Vec<(WebhookEndpoint, FailureState)>,
    log: VecDeque<DeliveryAttempt>,
    dead: Vec<DeadDelivery>,
}

impl TenantData {
    fn find(
        &mut self,
        id: EndpointId,
    ) -> Result<&mut (WebhookEndpoint, FailureState), WebhookError> {
        self.endpoints
            .iter_mut()
            .find(|(e, _)| e.id() == id)
            .ok_or_else(|| WebhookError::not_found("endpoint", id))
    }
}

impl Default for InMemoryWebhookStore {
    fn default() -> Self {
        Self::new()
    }
}

impl InMemoryWebhookStore {
    /// An empty store keeping 10,000 log entries per tenant.
    pub fn new() -> Self {
        Self {
            inner: Arc::default(),
            max_log_entries: 10_000,
        }
    }

    /// Sets how many log entries are kept per tenant (at least 1).
    pub fn with_max_log_entries(mut self, max: usize) -> Self {
        self.max_log_entries = max.max(1);
        self
    }

    fn with<T>(&self, f: impl FnOnce(&mut Tenants) -> T) -> T {
        f(&mut self.inner.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn with_tenant<T>(&self, tenant: TenantId, f: impl FnOnce(&mut TenantData) -> T) -> T {
        self.with(|all| f(all.by_tenant.entry(tenant).or_default()))
    }
}

fn same_tenant(tenant: TenantId, endpoint: &WebhookEndpoint) -> Result<(), WebhookError> {
    if endpoint.tenant() == tenant {
        Ok(())
    } else {
        Err(WebhookError::TenantMismatch)
    }
}

#[async_trait]
impl WebhookStore for InMemoryWebhookStore {
    async fn register(
        &self,
        tenant: TenantId,
        endpoint: WebhookEndpoint,
    ) -> Result<(), WebhookError> {
        same_tenant(tenant, &endpoint)?;
        self.with(|all| {
            let taken = all
                .by_tenant
                .values()
                .flat_map(|t| &t.endpoints)
                .any(|(e, _)| e.id() == endpoint.id());
            if taken {
                return Err(WebhookError::AlreadyExists {
                    id: endpoint.id().to_string(),
                });
            }
            let data = all.by_tenant.entry(tenant).or_default();
            data.endpoints.push((endpoint, FailureState::default()));
            Ok(())
        })
    }

    async fn endpoint(
        &self,
        tenant: TenantId,
        id: EndpointId,
    ) -> Result<Option<WebhookEndpoint>, WebhookError> {
        Ok(self.with_tenant(tenant, |data| data.find(id).ok().map(|(e, _)| e.clone())))
    }

    async fn endpoints(&self, tenant: TenantId) -> Result<Vec<WebhookEndpoint>, WebhookError> {
        Ok(self.with_tenant(tenant, |data| {
            data.endpoints.iter().map(|(e, _)| e.clone()).collect()
        }))
    }

    async fn update(
        &self,
        tenant: TenantId,
        mut endpoint: WebhookEndpoint,
    ) -> Result<(), WebhookError> {
        same_tenant(tenant, &endpoint)?;
        self.with_tenant(tenant, |data| {
            let (stored, _) = data.find(endpoint.id())?;
            endpoint.set_status(stored.status().clone());
            *stored = endpoint;
            Ok(())
        })
    }

    async fn remove(&self, tenant: TenantId, id: EndpointId) -> Result<(), WebhookError> {
        self.with_tenant(tenant, |data| {
            data.find(id)?;
            data.endpoints.retain(|(e, _)| e.id() != id);
            Ok(())
        })
    }

    async fn disable(
        &self,
        tenant: TenantId,
        id: EndpointId,
        reason: DisableReason,
        at: DateTime<Utc>,
    ) -> Result<(), WebhookError> {
        self.with_tenant(tenant, |data| {
            let (endpoint, _) = data.find(id)?;
            if endpoint.is_enabled() {
                endpoint.set_status(EndpointStatus::Disabled { reason, at });
            }
            Ok(())
        })
    }

    async fn enable(&self, tenant: TenantId, id: EndpointId) -> Result<(), WebhookError> {
        self.with_tenant(tenant, |data| {
            let (endpoint, failures) = data.find(id)?;
            endpoint.set_status(EndpointStatus::Enabled);
            *failures = FailureState::default();
            Ok(())
        })
    }

    async fn record_attempt(
        &self,
        tenant: TenantId,
        attempt: DeliveryAttempt,
    ) -> Result<FailureState, WebhookError> {
        let max = self.max_log_entries;
        Ok(self.with_tenant(tenant, |data| {
            let state = match data.find(attempt.endpoint) {
                Ok((_, failures)) => {
                    if attempt.delivered {
                        *failures = FailureState::default();
                    } else {
                        failures.consecutive = failures.consecutive.saturating_add(1);
                        failures.failing_since.get_or_insert(attempt.at);
                    }
                    *failures
                }
                // Removed meanwhile: the attempt is still logged.
                Err(_) => FailureState::default(),
            };
            if data.log.len() == max {
                data.log.pop_front();
            }
            data.log.push_back(attempt);
            state
        }))
    }

    async fn delivery_log(
        &self,
        tenant: TenantId,
        endpoint: Option<EndpointId>,
    ) -> Result<Vec<DeliveryAttempt>, WebhookError> {
        Ok(self.with_tenant(tenant, |data| {
            data.log
                .iter()
                .filter(|a| endpoint.is_none_or(|id| a.endpoint == id))
                .cloned()
                .collect()
        }))
    }

    async fn park(&self, tenant: TenantId, dead: DeadDelivery) -> Result<(), WebhookError> {
        self.with_tenant(tenant, |data| {
            data.dead.retain(|d| d.webhook_id != dead.webhook_id);
            data.dead.push(dead);
        });
        Ok(())
    }

    async fn dead_letters(&self, tenant: TenantId) -> Result<Vec<DeadDelivery>, WebhookError> {
        Ok(self.with_tenant(tenant, |data| data.dead.clone()))
    }

    async fn take_dead_letter(
        &self,
        tenant: TenantId,
        webhook_id: &str,
    ) -> Result<Option<DeadDelivery>, WebhookError> {
        Ok(self.with_tenant(tenant, |data| {
            let index = data.dead.iter().position(|d| d.webhook_id == webhook_id)?;
            Some(data.dead.remove(index))
        }))
    }
}
