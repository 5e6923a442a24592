//! JSON structured mode (`application/cloudevents+json`), CloudEvents 1.0.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use super::{Data, Event, ExtensionValue, SPEC_VERSION, check_name_chars};
use crate::error::EventError;

/// Whether `content_type` (absent = JSON, per the JSON format spec) is JSON.
pub(super) fn is_json_media_type(content_type: Option<&str>) -> bool {
    let Some(ct) = content_type else {
        return true;
    };
    let essence = ct
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json" || essence == "text/json" || essence.ends_with("+json")
}

/// The length of `value` encoded as compact JSON, without allocating it.
pub(super) fn encoded_len(value: &Value) -> usize {
    struct Counter(usize);
    impl std::io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    // Writing a `Value` into an infallible writer cannot fail.
    let _ = serde_json::to_writer(&mut counter, value);
    counter.0
}

fn format_time(time: &DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

impl Serialize for Event {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("specversion", SPEC_VERSION)?;
        map.serialize_entry("id", &self.id)?;
        map.serialize_entry("source", &self.source)?;
        map.serialize_entry("type", &self.ty)?;
        if let Some(time) = &self.time {
            map.serialize_entry("time", &format_time(time))?;
        }
        for (name, value) in [
            ("subject", &self.subject),
            ("datacontenttype", &self.datacontenttype),
            ("dataschema", &self.dataschema),
        ] {
            if let Some(value) = value {
                map.serialize_entry(name, value)?;
            }
        }
        if let Some(tenant) = &self.tenant_id {
            map.serialize_entry("tenantid", &tenant.to_string())?;
        }
        if let Some(key) = self.partition_key() {
            map.serialize_entry("partitionkey", &key)?;
        }
        for (name, value) in [
            ("traceparent", &self.traceparent),
            ("tracestate", &self.tracestate),
        ] {
            if let Some(value) = value {
                map.serialize_entry(name, value)?;
            }
        }
        for (name, value) in &self.extensions {
            map.serialize_entry(name, value)?;
        }
        match &self.data {
            None => {}
            Some(Data::Json(value)) => map.serialize_entry("data", value)?,
            Some(Data::Binary(bytes)) => {
                map.serialize_entry("data_base64", &BASE64.encode(bytes))?
            }
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Event {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let map = Map::<String, Value>::deserialize(deserializer)?;
        Event::from_map(map).map_err(serde::de::Error::custom)
    }
}

/// Takes an optional string attribute; JSON `null` counts as absent.
fn take_string(map: &mut Map<String, Value>, name: &str) -> Result<Option<String>, EventError> {
    match map.remove(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(EventError::invalid(name, "must be a JSON string")),
    }
}

/// Takes an optional attribute that must be non-empty when present.
fn take_non_empty(map: &mut Map<String, Value>, name: &str) -> Result<Option<String>, EventError> {
    match take_string(map, name)? {
        Some(s) if s.is_empty() => Err(EventError::invalid(name, "must not be empty when present")),
        other => Ok(other),
    }
}

fn take_required(map: &mut Map<String, Value>, name: &'static str) -> Result<String, EventError> {
    match take_string(map, name)? {
        Some(s) if !s.is_empty() => Ok(s),
        _ => Err(EventError::MissingAttribute { attribute: name }),
    }
}

impl Event {
    /// Encodes the event in JSON structured mode.
    ///
    /// # Errors
    /// [`EventError::Encode`] only if serde_json fails (it does not for
    /// events built through this crate).
    pub fn to_json(&self) -> Result<Vec<u8>, EventError> {
        serde_json::to_vec(self).map_err(|source| EventError::Encode { source })
    }

    /// Decodes one event in JSON structured mode, checking the spec's rules:
    /// `specversion` is `"1.0"`; `id`, `source` and `type` are non-empty
    /// strings; `time` is RFC 3339; extension names are lowercase ASCII
    /// letters and digits; `data` and `data_base64` are not both present.
    ///
    /// # Errors
    /// [`EventError::Malformed`], [`EventError::MissingAttribute`],
    /// [`EventError::InvalidAttribute`], [`EventError::InvalidExtensionName`]
    /// or [`EventError::UnsupportedSpecVersion`].
    pub fn from_json_slice(bytes: &[u8]) -> Result<Self, EventError> {
        match serde_json::from_slice::<Value>(bytes) {
            Ok(Value::Object(map)) => Self::from_map(map),
            Ok(_) => Err(EventError::malformed("a CloudEvent must be a JSON object")),
            Err(e) => Err(EventError::malformed(e.to_string())),
        }
    }

    /// [`Event::from_json_slice`] for a string.
    ///
    /// # Errors
    /// As [`Event::from_json_slice`].
    pub fn from_json_str(json: &str) -> Result<Self, EventError> {
        Self::from_json_slice(json.as_bytes())
    }

    pub(crate) fn from_map(mut map: Map<String, Value>) -> Result<Self, EventError> {
        let specversion = take_required(&mut map, "specversion")?;
        if specversion != SPEC_VERSION {
            return Err(EventError::UnsupportedSpecVersion { found: specversion });
        }
        let id = take_required(&mut map, "id")?;
        let source = take_required(&mut map, "source")?;
        let ty = take_required(&mut map, "type")?;
        let time = take_string(&mut map, "time")?
            .map(|t| {
                DateTime::parse_from_rfc3339(&t)
                    .map(|t| t.with_timezone(&Utc))
                    .map_err(|e| EventError::invalid("time", format!("not RFC 3339: {e}")))
            })
            .transpose()?;
        let subject = take_non_empty(&mut map, "subject")?;
        let datacontenttype = take_non_empty(&mut map, "datacontenttype")?;
        let dataschema = take_non_empty(&mut map, "dataschema")?;
        let tenant_id = take_non_empty(&mut map, "tenantid")?
            .map(|t| {
                t.parse()
                    .map_err(|e: saas_core::Error| EventError::invalid("tenantid", e.message()))
            })
            .transpose()?;
        let partition_key = take_non_empty(&mut map, "partitionkey")?;
        let traceparent = take_non_empty(&mut map, "traceparent")?;
        let tracestate = take_non_empty(&mut map, "tracestate")?;
        let json_data = map.remove("data").filter(|v| !v.is_null());
        let base64_data = map.remove("data_base64").filter(|v| !v.is_null());
        let data = match (json_data, base64_data) {
            (Some(_), Some(_)) => {
                return Err(EventError::malformed(
                    "`data` and `data_base64` must not both be present",
                ));
            }
            (Some(value), None) => Some(Data::Json(value)),
            (None, Some(Value::String(b64))) => {
                Some(Data::Binary(BASE64.decode(b64.as_bytes()).map_err(
                    |e| EventError::invalid("data_base64", e.to_string()),
                )?))
            }
            (None, Some(_)) => {
                return Err(EventError::invalid("data_base64", "must be a JSON string"));
            }
            (None, None) => None,
        };
        let mut extensions = std::collections::BTreeMap::new();
        for (name, value) in map {
            check_name_chars(&name)?;
            if let Some(value) = ExtensionValue::from_json(&name, value)? {
                extensions.insert(name, value);
            }
        }
        let mut event = Event {
            id,
            source,
            ty,
            time,
            subject,
            datacontenttype,
            dataschema,
            tenant_id,
            partition_key: None,
            traceparent,
            tracestate,
            extensions,
            data,
        };
        // Keep an explicit key only where it differs from the tenant default,
        // so a round trip compares equal to the original.
        if partition_key != event.partition_key() {
            event.partition_key = partition_key;
        }
        Ok(event)
    }
}
