//! CloudEvents over HTTP (the HTTP protocol binding 1.0): binary content
//! mode — attributes in `ce-*` headers, the data as the body — and the
//! JSON batch format, both directions, on the `http` crate's types (what
//! axum, hyper and reqwest use). Structured mode is [`Event::to_json`]
//! with [`CLOUDEVENTS_JSON`].
//!
//! ```
//! use saas_events::Event;
//! use saas_events::http::{from_binary, to_binary};
//!
//! let event = Event::new(None, "com.example.note.added", "/notes", &serde_json::json!({"id": 7}))?
//!     .with_subject("notes/7");
//! let (headers, body) = to_binary(&event)?;
//! assert_eq!(headers["ce-type"], "com.example.note.added");
//! assert_eq!(headers["content-type"], "application/json");
//! assert_eq!(from_binary(&headers, &body)?, event);
//! # Ok::<(), saas_events::EventError>(())
//! ```
//!
//! In binary mode every attribute travels as text: extensions written
//! as integers or booleans are read back as strings (the binding carries
//! no type), and header values are percent-encoded where HTTP needs it
//! (space, `"`, `%`, and anything outside printable ASCII).

use http::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use serde_json::{Map, Value};

use crate::envelope::{CLOUDEVENTS_JSON, Data, Event};
use crate::error::EventError;

/// The media type of a JSON batch of events.
pub const CLOUDEVENTS_BATCH_JSON: &str = "application/cloudevents-batch+json";

/// The prefix of every binary-mode attribute header.
const PREFIX: &str = "ce-";

/// Writes `event` in binary content mode: its attributes as `ce-*`
/// headers, its data as the body with `content-type` from
/// `datacontenttype` (`application/json` for JSON data without one).
///
/// # Errors
/// [`EventError::Encode`] only if the JSON data cannot be written.
pub fn to_binary(event: &Event) -> Result<(HeaderMap, Vec<u8>), EventError> {
    let Value::Object(attributes) =
        serde_json::to_value(event).map_err(|source| EventError::Encode { source })?
    else {
        return Err(EventError::malformed(
            "an event did not encode as a JSON object",
        ));
    };
    let mut headers = HeaderMap::new();
    for (name, value) in attributes {
        if matches!(name.as_str(), "data" | "data_base64" | "datacontenttype") {
            continue;
        }
        let text = match value {
            Value::String(s) => s,
            Value::Null => continue,
            other => other.to_string(),
        };
        let header = HeaderName::from_bytes(format!("{PREFIX}{name}").as_bytes())
            .map_err(|_| EventError::invalid(name.clone(), "not a valid header name"))?;
        let value = HeaderValue::from_str(&percent_encode(&text))
            .map_err(|_| EventError::invalid(name, "not a valid header value"))?;
        headers.insert(header, value);
    }
    let (content_type, body) = match event.data() {
        None => (event.datacontenttype().map(str::to_owned), Vec::new()),
        Some(Data::Binary(bytes)) => (event.datacontenttype().map(str::to_owned), bytes.clone()),
        Some(Data::Json(value)) => (
            Some(
                event
                    .datacontenttype()
                    .unwrap_or("application/json")
                    .to_owned(),
            ),
            serde_json::to_vec(value).map_err(|source| EventError::Encode { source })?,
        ),
    };
    if let Some(content_type) = content_type {
        let value = HeaderValue::from_str(&content_type)
            .map_err(|_| EventError::invalid("datacontenttype", "not a valid header value"))?;
        headers.insert(CONTENT_TYPE, value);
    }
    Ok((headers, body))
}

/// Reads an event in binary content mode: `ce-*` headers (names are
/// case-insensitive, values percent-decoded) and the body as its data —
/// parsed as JSON when `content-type` is JSON (`application/json`,
/// `…+json`), kept as bytes otherwise; no body, no data.
///
/// # Errors
/// As [`Event::from_json_slice`] for the attributes (a missing `ce-id`,
/// `ce-source`, `ce-type` or `ce-specversion`, a bad time…);
/// [`EventError::Malformed`] for a header that is not UTF-8 once decoded
/// or a JSON body that does not parse.
pub fn from_binary(headers: &HeaderMap, body: &[u8]) -> Result<Event, EventError> {
    let mut attributes = Map::new();
    for (name, value) in headers {
        let Some(attribute) = name.as_str().strip_prefix(PREFIX) else {
            continue;
        };
        if matches!(attribute, "data" | "data_base64" | "datacontenttype") {
            // The data is the body and its type `content-type`: a header
            // claiming either is not an attribute.
            return Err(EventError::malformed(format!(
                "{name} is not a binary-mode attribute; the data is the body"
            )));
        }
        let text = value
            .to_str()
            .ok()
            .and_then(percent_decode)
            .ok_or_else(|| {
                EventError::malformed(format!("header {name} is not percent-encoded UTF-8"))
            })?;
        attributes.insert(attribute.to_owned(), Value::String(text));
    }
    let content_type = headers
        .get(CONTENT_TYPE)
        .map(|v| {
            v.to_str()
                .map_err(|_| EventError::malformed("content-type is not text"))
        })
        .transpose()?;
    if let Some(content_type) = content_type {
        attributes.insert(
            "datacontenttype".to_owned(),
            Value::String(content_type.to_owned()),
        );
    }
    let mut event = Event::from_map(attributes)?;
    if !body.is_empty() {
        event.data = Some(if content_type.is_some_and(is_json) {
            Data::Json(serde_json::from_slice(body).map_err(|e| {
                EventError::malformed(format!(
                    "the body is not the JSON its content-type says: {e}"
                ))
            })?)
        } else {
            Data::Binary(body.to_vec())
        });
    }
    Ok(event)
}

/// Writes events as a JSON batch ([`CLOUDEVENTS_BATCH_JSON`]): an array of
/// structured-mode events.
///
/// # Errors
/// [`EventError::Encode`] only if serde_json fails.
pub fn to_batch(events: &[Event]) -> Result<Vec<u8>, EventError> {
    serde_json::to_vec(events).map_err(|source| EventError::Encode { source })
}

/// Reads a JSON batch: every member must be a valid event; an empty array
/// is an empty batch.
///
/// # Errors
/// [`EventError::Malformed`] for a body that is not a JSON array, and the
/// first member's error (with its index) as [`Event::from_json_slice`].
pub fn from_batch(body: &[u8]) -> Result<Vec<Event>, EventError> {
    let members: Vec<Value> = match serde_json::from_slice(body) {
        Ok(Value::Array(members)) => members,
        Ok(_) => {
            return Err(EventError::malformed(
                "a CloudEvents batch must be a JSON array",
            ));
        }
        Err(e) => return Err(EventError::malformed(e.to_string())),
    };
    members
        .into_iter()
        .enumerate()
        .map(|(i, member)| match member {
            Value::Object(map) => Event::from_map(map).map_err(|e| match e {
                EventError::Malformed { reason } => {
                    EventError::malformed(format!("batch member {i}: {reason}"))
                }
                other => other,
            }),
            _ => Err(EventError::malformed(format!(
                "batch member {i} is not a JSON object"
            ))),
        })
        .collect()
}

/// Reads whatever an HTTP request or response carries, by its
/// `content-type`: a structured event ([`CLOUDEVENTS_JSON`]), a batch
/// ([`CLOUDEVENTS_BATCH_JSON`]) or one event in binary mode.
///
/// # Errors
/// As [`Event::from_json_slice`], [`from_batch`] or [`from_binary`].
pub fn from_http(headers: &HeaderMap, body: &[u8]) -> Result<Vec<Event>, EventError> {
    let media_type = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        });
    match media_type.as_deref() {
        Some(CLOUDEVENTS_JSON) => Ok(vec![Event::from_json_slice(body)?]),
        Some(CLOUDEVENTS_BATCH_JSON) => from_batch(body),
        _ => Ok(vec![from_binary(headers, body)?]),
    }
}

/// Whether a media type is JSON: `application/json` or a `+json` suffix.
fn is_json(content_type: &str) -> bool {
    let media_type = content_type.split(';').next().unwrap_or_default().trim();
    media_type.eq_ignore_ascii_case("application/json")
        || media_type.to_ascii_lowercase().ends_with("+json")
}

/// Percent-encodes what a header value must not carry as is: space, `"`,
/// `%` and every byte outside printable ASCII (of the UTF-8 encoding).
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if (0x21..=0x7e).contains(&byte) && byte != b'"' && byte != b'%' {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Decodes percent-escapes; `None` for a broken escape or bytes that are
/// not UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}
