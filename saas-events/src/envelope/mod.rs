//! The CloudEvents 1.0 envelope with this crate's tenant extensions.

mod extension;
mod json;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use saas_core::{Clock, TenantId};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::EventError;
use crate::trace::TraceContext;

pub(crate) use extension::check_name_chars;
pub use extension::{ExtensionValue, MAX_EXTENSION_NAME_LEN};

/// The CloudEvents version this crate reads and writes.
pub const SPEC_VERSION: &str = "1.0";

/// The media type of one event in JSON structured mode.
pub const CLOUDEVENTS_JSON: &str = "application/cloudevents+json";

/// The default payload limit: 1 MiB.
pub const DEFAULT_MAX_PAYLOAD_BYTES: usize = 1024 * 1024;

/// The payload of an event.
#[derive(Debug, Clone, PartialEq)]
pub enum Data {
    /// A JSON value (written as the `data` member in JSON structured mode).
    Json(serde_json::Value),
    /// Raw bytes (written as `data_base64`).
    Binary(Vec<u8>),
}

/// One event: the CloudEvents 1.0 context attributes (`id`, `source`, `type`,
/// `specversion`, `time`, `subject`, `datacontenttype`, `dataschema`), the
/// extensions `tenantid`, `partitionkey`, `traceparent`, `tracestate` plus any
/// others, and the payload.
///
/// Serialises to and from JSON structured mode ([`CLOUDEVENTS_JSON`]) through
/// serde or [`Event::to_json`] / [`Event::from_json_slice`].
///
/// ```
/// use saas_core::TenantId;
/// use saas_events::Event;
///
/// #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
/// struct OrderPlaced { order: u64 }
///
/// let tenant = TenantId::new();
/// let event = Event::new(tenant, "com.example.order.placed", "/orders", &OrderPlaced { order: 7 })?
///     .with_subject("order/7");
/// assert_eq!(event.tenant_id(), Some(tenant));
/// assert_eq!(event.partition_key(), Some(tenant.to_string())); // defaults to the tenant
///
/// let json = event.to_json()?;
/// let back = Event::from_json_slice(&json)?;
/// assert_eq!(back, event);
/// assert_eq!(back.data_as::<OrderPlaced>()?, OrderPlaced { order: 7 });
/// # Ok::<(), saas_events::EventError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub(crate) id: String,
    pub(crate) source: String,
    pub(crate) ty: String,
    pub(crate) time: Option<DateTime<Utc>>,
    pub(crate) subject: Option<String>,
    pub(crate) datacontenttype: Option<String>,
    pub(crate) dataschema: Option<String>,
    pub(crate) tenant_id: Option<TenantId>,
    pub(crate) partition_key: Option<String>,
    pub(crate) traceparent: Option<String>,
    pub(crate) tracestate: Option<String>,
    pub(crate) extensions: BTreeMap<String, ExtensionValue>,
    pub(crate) data: Option<Data>,
}

fn required(attribute: &'static str, value: impl Into<String>) -> Result<String, EventError> {
    let value = value.into();
    if value.is_empty() {
        return Err(EventError::MissingAttribute { attribute });
    }
    Ok(value)
}

impl Event {
    /// An event with a JSON payload, a fresh UUID v7 id and no time yet (a
    /// publisher stamps it from its clock, or call [`Event::with_time_from`]).
    ///
    /// `tenant` is a [`TenantId`] or `None` for events that belong to no tenant.
    ///
    /// With the feature `otel`, this and the other constructors set
    /// `traceparent` / `tracestate` from the current `tracing` span's
    /// OpenTelemetry context, when it has a valid one (see the crate's
    /// "Tracing across the bus").
    ///
    /// # Errors
    /// [`EventError::MissingAttribute`] if `ty` or `source` is empty,
    /// [`EventError::Encode`] if the payload does not serialise to JSON.
    pub fn new(
        tenant: impl Into<Option<TenantId>>,
        ty: impl Into<String>,
        source: impl Into<String>,
        payload: &impl Serialize,
    ) -> Result<Self, EventError> {
        let data = serde_json::to_value(payload).map_err(|source| EventError::Encode { source })?;
        let mut event = Self::empty(tenant.into(), ty, source)?;
        event.datacontenttype = Some("application/json".to_owned());
        event.data = Some(Data::Json(data));
        Ok(event)
    }

    /// An event with a binary payload of the given media type.
    ///
    /// # Errors
    /// [`EventError::MissingAttribute`] if `ty` or `source` is empty.
    pub fn new_binary(
        tenant: impl Into<Option<TenantId>>,
        ty: impl Into<String>,
        source: impl Into<String>,
        content_type: impl Into<String>,
        bytes: Vec<u8>,
    ) -> Result<Self, EventError> {
        let mut event = Self::empty(tenant.into(), ty, source)?;
        event.datacontenttype = Some(content_type.into());
        event.data = Some(Data::Binary(bytes));
        Ok(event)
    }

    /// An event without a payload.
    ///
    /// # Errors
    /// [`EventError::MissingAttribute`] if `ty` or `source` is empty.
    pub fn without_data(
        tenant: impl Into<Option<TenantId>>,
        ty: impl Into<String>,
        source: impl Into<String>,
    ) -> Result<Self, EventError> {
        Self::empty(tenant.into(), ty, source)
    }

    fn empty(
        tenant: Option<TenantId>,
        ty: impl Into<String>,
        source: impl Into<String>,
    ) -> Result<Self, EventError> {
        #[cfg_attr(not(feature = "otel"), allow(unused_mut))]
        let mut event = Self {
            id: uuid::Uuid::now_v7().to_string(),
            source: required("source", source)?,
            ty: required("type", ty)?,
            time: None,
            subject: None,
            datacontenttype: None,
            dataschema: None,
            tenant_id: tenant,
            partition_key: None,
            traceparent: None,
            tracestate: None,
            extensions: BTreeMap::new(),
            data: None,
        };
        // The one place events are born (every constructor comes here, a
        // decoded or relayed event does not): the producer's span is the
        // current one now, whichever backend or outbox publishes it later.
        #[cfg(feature = "otel")]
        crate::otel::inject_current_span(&mut event);
        Ok(event)
    }

    /// Replaces the id (for example to re-emit an event idempotently).
    ///
    /// # Errors
    /// [`EventError::MissingAttribute`] if `id` is empty.
    pub fn with_id(mut self, id: impl Into<String>) -> Result<Self, EventError> {
        self.id = required("id", id)?;
        Ok(self)
    }

    /// Sets the time.
    pub fn with_time(mut self, time: DateTime<Utc>) -> Self {
        self.time = Some(time);
        self
    }

    /// Sets the time from `clock`.
    pub fn with_time_from(self, clock: &dyn Clock) -> Self {
        self.with_time(clock.now())
    }

    /// Sets the time from `clock` if the event has none (what publishers do).
    pub fn stamp_time(&mut self, clock: &dyn Clock) {
        if self.time.is_none() {
            self.time = Some(clock.now());
        }
    }

    /// Sets the subject (the thing in the source the event is about).
    pub fn with_subject(mut self, subject: impl Into<String>) -> Self {
        self.subject = Some(subject.into()).filter(|s| !s.is_empty());
        self
    }

    /// Sets `dataschema`: an absolute URI (`https://…`, `urn:…`), as
    /// CloudEvents 1.0 types it — consumers that check (the Rust
    /// `cloudevents-sdk`) refuse a whole event whose `dataschema` is a
    /// relative reference. Empty unsets it.
    ///
    /// # Errors
    /// [`EventError::InvalidAttribute`] for a value without a scheme.
    pub fn with_dataschema(mut self, schema: impl Into<String>) -> Result<Self, EventError> {
        let schema = schema.into();
        if !schema.is_empty() && !is_absolute_uri(&schema) {
            return Err(EventError::invalid(
                "dataschema",
                "it must be an absolute URI with a scheme (https://…, urn:…), not a relative reference",
            ));
        }
        self.dataschema = Some(schema).filter(|s| !s.is_empty());
        Ok(self)
    }

    /// Sets or clears the tenant (the `tenantid` extension).
    pub fn with_tenant(mut self, tenant: impl Into<Option<TenantId>>) -> Self {
        self.tenant_id = tenant.into();
        self
    }

    /// Sets the partition key (events with one key are delivered in order).
    /// Without it the key is the tenant id.
    pub fn with_partition_key(mut self, key: impl Into<String>) -> Self {
        self.partition_key = Some(key.into()).filter(|s| !s.is_empty());
        self
    }

    /// Sets `traceparent` from a trace context, replacing one taken from
    /// the current span (feature `otel`); a `tracestate` taken with it
    /// stays — replace or clear it with [`Event::with_tracestate`].
    pub fn with_trace_context(mut self, trace: TraceContext) -> Self {
        self.traceparent = Some(trace.to_string());
        self
    }

    /// Sets `traceparent` from its text form.
    ///
    /// # Errors
    /// [`EventError::InvalidAttribute`] if it is not a valid W3C traceparent.
    pub fn with_traceparent(self, traceparent: &str) -> Result<Self, EventError> {
        let trace: TraceContext = traceparent.parse()?;
        Ok(self.with_trace_context(trace))
    }

    /// Sets `tracestate` (vendor-specific trace data, passed through as
    /// is); empty clears it.
    pub fn with_tracestate(mut self, tracestate: impl Into<String>) -> Self {
        self.tracestate = Some(tracestate.into()).filter(|s| !s.is_empty());
        self
    }

    /// Adds or replaces an extension attribute.
    ///
    /// # Errors
    /// [`EventError::InvalidExtensionName`] unless `name` is 1 to 20
    /// lowercase ASCII letters and digits and not a name this crate
    /// reserves; [`EventError::InvalidAttribute`] for an integer outside
    /// 32 bits (CloudEvents integers are; send a larger one as a string).
    pub fn with_extension(
        mut self,
        name: &str,
        value: impl Into<ExtensionValue>,
    ) -> Result<Self, EventError> {
        extension::check_new_name(name)?;
        let value = value.into();
        extension::check_new_value(name, &value)?;
        self.extensions.insert(name.to_owned(), value);
        Ok(self)
    }

    /// Removes an extension attribute, returning its value.
    pub fn remove_extension(&mut self, name: &str) -> Option<ExtensionValue> {
        self.extensions.remove(name)
    }

    /// The id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The source (a URI reference).
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The type (`type` attribute).
    pub fn event_type(&self) -> &str {
        &self.ty
    }

    /// Always `"1.0"`.
    pub fn specversion(&self) -> &'static str {
        SPEC_VERSION
    }

    /// The time, if set.
    pub fn time(&self) -> Option<DateTime<Utc>> {
        self.time
    }

    /// The subject, if set.
    pub fn subject(&self) -> Option<&str> {
        self.subject.as_deref()
    }

    /// The media type of the data, if set.
    pub fn datacontenttype(&self) -> Option<&str> {
        self.datacontenttype.as_deref()
    }

    /// The data schema, if set.
    pub fn dataschema(&self) -> Option<&str> {
        self.dataschema.as_deref()
    }

    /// The tenant, if any.
    pub fn tenant_id(&self) -> Option<TenantId> {
        self.tenant_id
    }

    /// The partition key: the one set, else the tenant id, else `None`.
    pub fn partition_key(&self) -> Option<String> {
        self.partition_key
            .clone()
            .or_else(|| self.tenant_id.map(|t| t.to_string()))
    }

    /// The raw `traceparent`, if any (as received; may be invalid if another
    /// producer wrote it).
    pub fn traceparent(&self) -> Option<&str> {
        self.traceparent.as_deref()
    }

    /// The parsed `traceparent`, if present and valid.
    pub fn trace_context(&self) -> Option<TraceContext> {
        self.traceparent.as_deref().and_then(|t| t.parse().ok())
    }

    /// The `tracestate`, if any.
    pub fn tracestate(&self) -> Option<&str> {
        self.tracestate.as_deref()
    }

    /// One extension attribute (other than the typed ones).
    pub fn extension(&self, name: &str) -> Option<&ExtensionValue> {
        self.extensions.get(name)
    }

    /// All extension attributes other than the typed ones, by name.
    pub fn extensions(&self) -> impl Iterator<Item = (&str, &ExtensionValue)> {
        self.extensions.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// The payload, if any.
    pub fn data(&self) -> Option<&Data> {
        self.data.as_ref()
    }

    /// Decodes the payload into `T`: JSON data directly, binary data if its
    /// content type is JSON.
    ///
    /// # Errors
    /// [`EventError::NoData`] without data, [`EventError::Decode`] if it does
    /// not decode into `T`.
    pub fn data_as<T: DeserializeOwned>(&self) -> Result<T, EventError> {
        let decode = |e: serde_json::Error| EventError::Decode {
            reason: e.to_string(),
        };
        match &self.data {
            None => Err(EventError::NoData),
            Some(Data::Json(value)) => T::deserialize(value).map_err(decode),
            Some(Data::Binary(bytes)) if json::is_json_media_type(self.datacontenttype()) => {
                serde_json::from_slice(bytes).map_err(decode)
            }
            Some(Data::Binary(_)) => Err(EventError::Decode {
                reason: format!(
                    "binary data of type `{}` is not JSON",
                    self.datacontenttype().unwrap_or("unknown")
                ),
            }),
        }
    }

    /// The payload size in bytes: the JSON encoding of `data`, or the raw
    /// length of binary data.
    pub fn payload_size(&self) -> usize {
        match &self.data {
            None => 0,
            Some(Data::Binary(bytes)) => bytes.len(),
            Some(Data::Json(value)) => json::encoded_len(value),
        }
    }

    /// Checks the payload against `limit` bytes.
    ///
    /// # Errors
    /// [`EventError::PayloadTooLarge`] if [`Event::payload_size`] exceeds it.
    pub fn check_payload_size(&self, limit: usize) -> Result<(), EventError> {
        let size = self.payload_size();
        if size > limit {
            return Err(EventError::PayloadTooLarge { size, limit });
        }
        Ok(())
    }
}

/// Whether `uri` starts with a scheme (RFC 3986: a letter, then letters,
/// digits, `+`, `-` or `.`, then `:`) and has something after it.
fn is_absolute_uri(uri: &str) -> bool {
    let Some((scheme, rest)) = uri.split_once(':') else {
        return false;
    };
    let mut chars = scheme.chars();
    let starts_with_letter = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
    starts_with_letter
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        && !rest.is_empty()
        && !uri.chars().any(char::is_whitespace)
}
