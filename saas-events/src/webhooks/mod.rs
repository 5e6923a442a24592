//! Outbound webhooks per tenant: the events of each tenant delivered to
//! the HTTP endpoints that tenant registered, as Stripe does.
//!
//! - [`WebhookEndpoint`]s belong to a tenant and choose event types with
//!   [`EventFilter`]s (`order.*`); a [`WebhookStore`] keeps them, the
//!   per-tenant delivery log and the dead deliveries
//!   ([`InMemoryWebhookStore`] here; SQL stores are yet to come).
//! - Requests follow [Standard Webhooks](https://www.standardwebhooks.com):
//!   the CloudEvents JSON as the body and `webhook-id`,
//!   `webhook-timestamp`, `webhook-signature` (HMAC-SHA256, one signature
//!   per valid secret during a rotation). Receivers check them with
//!   [`verify`].
//! - The [`WebhookDispatcher`] sends them. Its [`WebhookDispatcher::handler`]
//!   goes on a [`Router`](crate::router::Router): for each event of a
//!   tenant it starts one delivery per matching enabled endpoint and acks
//!   the bus delivery. Each delivery then runs on its own task, retrying
//!   on the [`RetrySchedule`] (failures of one endpoint never redeliver
//!   the event to the others, as nacking the bus delivery would). A
//!   delivery whose attempts are used up is parked as a [`DeadDelivery`]
//!   for [`WebhookDispatcher::redrive`]. An endpoint answering `410 Gone`
//!   is disabled at once, one failing for the [`DisablePolicy`] window
//!   too; [`WebhookStore::enable`] brings it back.
//! - Requests go only to addresses the [`SsrfPolicy`] allows, checked on
//!   the address connected to; each endpoint has at most
//!   [`WebhookEndpoint::max_in_flight`] requests in flight, so a slow
//!   receiver holds up only its own deliveries.
//!
//! `https` endpoints need the `webhooks-tls` feature (rustls); without it
//! a delivery to one is refused at once, not retried.
//!
//! Scheduled retries live in the dispatcher's tasks: a process that stops
//! loses the retries it had pending (the bus delivery was acked when the
//! deliveries started). Dead deliveries and the log live in the store.
//!
//! ```
//! use std::sync::Arc;
//! use saas_core::TenantId;
//! use saas_events::{Event, InMemoryBus, SubscribeOptions};
//! use saas_events::router::Router;
//! use saas_events::webhooks::{
//!     InMemoryWebhookStore, WebhookDispatcher, WebhookEndpoint, WebhookSecret, WebhookStore,
//! };
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let store = Arc::new(InMemoryWebhookStore::new());
//! let tenant = TenantId::new();
//! let secret = WebhookSecret::generate()?;
//! println!("show the tenant once: {}", secret.expose());
//! let endpoint = WebhookEndpoint::new(tenant, "https://hooks.example.com/in", secret)?
//!     .with_filters(["order.*"])?;
//! store.register(tenant, endpoint).await?;
//!
//! let webhooks = WebhookDispatcher::builder(store.clone()).build()?;
//! let bus = InMemoryBus::new();
//! let running = Router::new()
//!     .fallback(webhooks.handler())
//!     .concurrency(4)
//!     .run(&bus, "domain-events", SubscribeOptions::new().with_group("webhooks"))
//!     .await?;
//! # running.shutdown().await;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```

mod attempt;
mod dispatcher;
mod endpoint;
mod schedule;
mod signature;
mod ssrf;
mod store;

use std::net::IpAddr;

pub use dispatcher::{WebhookDispatcher, WebhookDispatcherBuilder, WebhookHandler};
pub use endpoint::{
    DisableReason, EndpointId, EndpointStatus, EventFilter, MAX_IN_FLIGHT, WebhookEndpoint,
};
pub use schedule::{DisablePolicy, RetrySchedule, RetryTimer, Sleep, TokioTimer};
pub use signature::{
    WEBHOOK_ID, WEBHOOK_SIGNATURE, WEBHOOK_TIMESTAMP, WebhookSecret, signature_header, verify,
};
pub use ssrf::SsrfPolicy;
pub use store::{DeadDelivery, DeliveryAttempt, FailureState, InMemoryWebhookStore, WebhookStore};

use crate::error::{BoxError, EventError};
use saas_core::ErrorKind;

/// What can go wrong with webhooks.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WebhookError {
    /// A signing secret is malformed.
    #[error("invalid webhook secret: {reason}")]
    InvalidSecret {
        /// Which rule it breaks.
        reason: &'static str,
    },

    /// An event-type filter is malformed.
    #[error("invalid event filter `{filter}`: {reason}")]
    InvalidFilter {
        /// The filter.
        filter: String,
        /// Which rule it breaks.
        reason: &'static str,
    },

    /// An endpoint URL is malformed or not allowed.
    #[error("invalid webhook URL `{url}`: {reason}")]
    InvalidUrl {
        /// The URL.
        url: String,
        /// Which rule it breaks.
        reason: &'static str,
    },

    /// The SSRF policy refuses an address the endpoint's host is (or
    /// resolves to); no connection was made.
    #[error("refused to connect to {host} ({address}): {reason}")]
    Forbidden {
        /// The URL's host.
        host: String,
        /// The refused address.
        address: IpAddr,
        /// Its class (loopback, private…).
        reason: &'static str,
    },

    /// The endpoint's host could not be resolved.
    #[error("could not resolve {host}: {reason}")]
    Resolve {
        /// The host.
        host: String,
        /// Why.
        reason: String,
    },

    /// A received webhook failed verification.
    #[error("webhook verification failed: {reason}")]
    Verification {
        /// Which check failed.
        reason: &'static str,
    },

    /// No such endpoint or dead delivery for this tenant.
    #[error("no {what} `{id}` for this tenant")]
    NotFound {
        /// What was looked for.
        what: &'static str,
        /// Its id.
        id: String,
    },

    /// An endpoint with this id exists.
    #[error("an endpoint `{id}` exists already")]
    AlreadyExists {
        /// The id.
        id: String,
    },

    /// An endpoint was given for a tenant other than its own.
    #[error("the endpoint belongs to another tenant")]
    TenantMismatch,

    /// The endpoint is disabled (enable it before redriving to it).
    #[error("endpoint `{id}` is disabled")]
    Disabled {
        /// The endpoint.
        id: String,
    },

    /// The operating system's random source failed.
    #[error("no randomness for a webhook secret: {reason}")]
    Random {
        /// The operating system's error.
        reason: String,
    },

    /// The event could not be encoded.
    #[error(transparent)]
    Event(#[from] EventError),

    /// The HTTP client could not be built.
    #[error("could not build the webhook HTTP client: {source}")]
    Client {
        /// The client's error.
        #[source]
        source: BoxError,
    },

    /// A store failed.
    #[error("webhook store error: {source}")]
    Store {
        /// Whether the same call may succeed later.
        retryable: bool,
        /// The store's error.
        #[source]
        source: BoxError,
    },
}

impl WebhookError {
    pub(crate) fn not_found(what: &'static str, id: impl ToString) -> Self {
        Self::NotFound {
            what,
            id: id.to_string(),
        }
    }

    /// The workspace-wide kind of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::InvalidSecret { .. }
            | Self::InvalidFilter { .. }
            | Self::InvalidUrl { .. }
            | Self::TenantMismatch => ErrorKind::InvalidInput,
            Self::Forbidden { .. } => ErrorKind::Forbidden,
            Self::Verification { .. } => ErrorKind::Unauthorized,
            Self::Resolve { .. } => ErrorKind::Unavailable,
            Self::NotFound { .. } => ErrorKind::NotFound,
            Self::AlreadyExists { .. } => ErrorKind::AlreadyExists,
            Self::Disabled { .. } => ErrorKind::Conflict,
            Self::Event(error) => error.kind(),
            Self::Client { .. } | Self::Random { .. } => ErrorKind::Internal,
            Self::Store {
                retryable: true, ..
            } => ErrorKind::Unavailable,
            Self::Store { .. } => ErrorKind::Internal,
        }
    }

    /// Whether the same call may succeed later.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Event(error) => error.is_retryable(),
            Self::Store { retryable, .. } => *retryable,
            other => other.kind().is_retryable(),
        }
    }
}

impl From<WebhookError> for EventError {
    /// A handler's view: retryable errors nack the bus delivery, others
    /// reject it.
    fn from(error: WebhookError) -> Self {
        match error {
            WebhookError::Event(error) => error,
            error if error.is_retryable() => EventError::handler(error),
            error => EventError::rejected(error.to_string()),
        }
    }
}
