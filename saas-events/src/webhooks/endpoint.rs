//! A tenant's webhook endpoint: where to send, what, and how it is doing.

use std::fmt;

use chrono::{DateTime, Utc};
use saas_core::TenantId;
use uuid::Uuid;

use super::WebhookError;
use super::signature::WebhookSecret;

/// The most requests one endpoint may have in flight at once.
pub const MAX_IN_FLIGHT: usize = 256;

/// An endpoint's id (a UUID v7), unique across tenants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EndpointId(Uuid);

impl EndpointId {
    /// A new time-ordered id.
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }

    /// An id from its UUID (as stored or sent by an API client).
    pub fn from_uuid(uuid: Uuid) -> Self {
        Self(uuid)
    }

    /// The UUID.
    pub fn as_uuid(&self) -> &Uuid {
        &self.0
    }
}

impl Default for EndpointId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for EndpointId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ep_{}", self.0.simple())
    }
}

/// Which event types an endpoint receives: `*` for all, `order.*` for
/// every type starting `order.`, else the exact type.
///
/// ```
/// use saas_events::webhooks::EventFilter;
///
/// let filter = EventFilter::parse("order.*")?;
/// assert!(filter.matches("order.placed"));
/// assert!(!filter.matches("orders.placed"));
/// assert!(EventFilter::parse("invoice.paid")?.matches("invoice.paid"));
/// assert!(EventFilter::parse("*")?.matches("anything"));
/// # Ok::<(), saas_events::webhooks::WebhookError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum EventFilter {
    /// Every event type.
    All,
    /// Types starting with this prefix (kept with its trailing dot).
    Prefix(String),
    /// Exactly this type.
    Exact(String),
}

impl EventFilter {
    /// Reads `*`, `prefix.*` or an exact type.
    ///
    /// # Errors
    /// [`WebhookError::InvalidFilter`] for an empty filter or a `*`
    /// anywhere but as the whole last segment.
    pub fn parse(text: &str) -> Result<Self, WebhookError> {
        let invalid = |reason| WebhookError::InvalidFilter {
            filter: text.to_owned(),
            reason,
        };
        if text == "*" {
            return Ok(Self::All);
        }
        if text.is_empty() || text.chars().any(char::is_whitespace) {
            return Err(invalid("a filter is a non-empty event type without spaces"));
        }
        match text.strip_suffix('*') {
            Some(prefix) if prefix.ends_with('.') && !prefix.contains('*') => {
                Ok(Self::Prefix(prefix.to_owned()))
            }
            Some(_) => Err(invalid("`*` may only end a filter, after a `.`")),
            None if text.contains('*') => Err(invalid("`*` may only end a filter, after a `.`")),
            None => Ok(Self::Exact(text.to_owned())),
        }
    }

    /// Whether an event of `event_type` passes.
    pub fn matches(&self, event_type: &str) -> bool {
        match self {
            Self::All => true,
            Self::Prefix(prefix) => event_type.starts_with(prefix.as_str()),
            Self::Exact(exact) => exact == event_type,
        }
    }
}

/// Why an endpoint is disabled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DisableReason {
    /// The tenant (or an operator) disabled it.
    Manual,
    /// It answered `410 Gone`: the receiver says it is gone for good.
    Gone,
    /// Every attempt failed for the configured window.
    SustainedFailure,
}

/// Whether an endpoint receives deliveries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndpointStatus {
    /// Deliveries are sent.
    Enabled,
    /// No deliveries are sent until the tenant enables it again.
    Disabled {
        /// Why.
        reason: DisableReason,
        /// When (from the injected clock).
        at: DateTime<Utc>,
    },
}

/// An endpoint a tenant registered: URL, filters, secrets and status.
///
/// ```
/// use saas_core::TenantId;
/// use saas_events::webhooks::{WebhookEndpoint, WebhookSecret};
///
/// let secret = WebhookSecret::generate()?;
/// let endpoint = WebhookEndpoint::new(TenantId::new(), "https://example.com/hooks", secret)?
///     .with_filters(["order.*", "invoice.paid"])?
///     .with_max_in_flight(4);
/// assert!(endpoint.wants("order.placed"));
/// assert!(!endpoint.wants("user.created"));
/// # Ok::<(), saas_events::webhooks::WebhookError>(())
/// ```
#[derive(Debug, Clone)]
pub struct WebhookEndpoint {
    id: EndpointId,
    tenant: TenantId,
    url: reqwest::Url,
    filters: Vec<EventFilter>,
    secret: WebhookSecret,
    previous_secret: Option<WebhookSecret>,
    status: EndpointStatus,
    max_in_flight: usize,
}

impl WebhookEndpoint {
    /// An enabled endpoint of `tenant` receiving every event type, at
    /// most one request in flight.
    ///
    /// # Errors
    /// [`WebhookError::InvalidUrl`] unless `url` is an absolute `http` or
    /// `https` URL with a host and without credentials.
    pub fn new(tenant: TenantId, url: &str, secret: WebhookSecret) -> Result<Self, WebhookError> {
        Ok(Self {
            id: EndpointId::new(),
            tenant,
            url: parse_url(url)?,
            filters: vec![EventFilter::All],
            secret,
            previous_secret: None,
            status: EndpointStatus::Enabled,
            max_in_flight: 1,
        })
    }

    /// Sets the event-type filters (see [`EventFilter::parse`]); an event
    /// passes if any matches.
    ///
    /// # Errors
    /// [`WebhookError::InvalidFilter`] for a bad filter or none at all.
    pub fn with_filters<S: AsRef<str>>(
        mut self,
        filters: impl IntoIterator<Item = S>,
    ) -> Result<Self, WebhookError> {
        let filters = filters
            .into_iter()
            .map(|f| EventFilter::parse(f.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        if filters.is_empty() {
            return Err(WebhookError::InvalidFilter {
                filter: String::new(),
                reason: "give at least one filter (`*` for all)",
            });
        }
        self.filters = filters;
        Ok(self)
    }

    /// Sets how many requests to this endpoint may be in flight at once,
    /// between 1 and [`MAX_IN_FLIGHT`] (a value outside is brought into
    /// that range: it may come from a tenant's form).
    pub fn with_max_in_flight(mut self, max: usize) -> Self {
        self.max_in_flight = max.clamp(1, MAX_IN_FLIGHT);
        self
    }

    /// Sets the id (for stores that load endpoints).
    pub fn with_id(mut self, id: EndpointId) -> Self {
        self.id = id;
        self
    }

    /// Rotates the secret: `new` signs from now on and the current one
    /// stays valid (signed with too) until [`Self::retire_previous_secret`],
    /// so receivers can switch at their pace.
    pub fn rotate_secret(&mut self, new: WebhookSecret) {
        self.previous_secret = Some(std::mem::replace(&mut self.secret, new));
    }

    /// Ends a rotation: only the current secret signs.
    pub fn retire_previous_secret(&mut self) {
        self.previous_secret = None;
    }

    /// Sets the status (stores use this; tenants go through
    /// [`WebhookStore::enable`](super::WebhookStore::enable)).
    pub fn set_status(&mut self, status: EndpointStatus) {
        self.status = status;
    }

    /// Whether events of `event_type` go to this endpoint (filters only;
    /// see [`Self::is_enabled`]).
    pub fn wants(&self, event_type: &str) -> bool {
        self.filters.iter().any(|f| f.matches(event_type))
    }

    /// The id.
    pub fn id(&self) -> EndpointId {
        self.id
    }

    /// The owning tenant.
    pub fn tenant(&self) -> TenantId {
        self.tenant
    }

    /// The URL.
    pub fn url(&self) -> &reqwest::Url {
        &self.url
    }

    /// The filters.
    pub fn filters(&self) -> &[EventFilter] {
        &self.filters
    }

    /// The secrets that sign: the current one, then the previous during a
    /// rotation.
    pub fn secrets(&self) -> impl Iterator<Item = &WebhookSecret> {
        std::iter::once(&self.secret).chain(self.previous_secret.as_ref())
    }

    /// The status.
    pub fn status(&self) -> &EndpointStatus {
        &self.status
    }

    /// Whether deliveries are sent.
    pub fn is_enabled(&self) -> bool {
        self.status == EndpointStatus::Enabled
    }

    /// The bound on requests in flight.
    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight
    }
}

fn parse_url(text: &str) -> Result<reqwest::Url, WebhookError> {
    let invalid = |reason| WebhookError::InvalidUrl {
        url: text.to_owned(),
        reason,
    };
    let url = reqwest::Url::parse(text).map_err(|_| invalid("not an absolute URL"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid("the scheme must be http or https"));
    }
    if url.host().is_none() {
        return Err(invalid("the URL has no host"));
    }
    // Credentials in a URL end up in logs; endpoints authenticate us by
    // the signature instead.
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid("the URL must not carry credentials"));
    }
    Ok(url)
}
