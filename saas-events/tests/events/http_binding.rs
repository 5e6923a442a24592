//! CloudEvents over HTTP: binary content mode and the JSON batch format,
//! both directions, against the binding's rules.

use chrono::{TimeZone, Utc};
use http::{HeaderMap, HeaderValue};
use saas_core::TenantId;
use saas_events::http::{
    CLOUDEVENTS_BATCH_JSON, from_batch, from_binary, from_http, to_batch, to_binary,
};
use saas_events::{CLOUDEVENTS_JSON, Event, EventError, ExtensionValue};
use serde_json::json;

fn rich() -> Event {
    Event::new(
        TenantId::new(),
        "com.example.note.added",
        "/notes",
        &json!({"id": 7, "body": "hé"}),
    )
    .unwrap()
    .with_subject("notes/7 — café \"quoted\" 100%")
    .with_time(Utc.with_ymd_and_hms(2026, 12, 5, 10, 0, 0).unwrap())
    .with_dataschema("https://example.com/schemas/note.json")
    .unwrap()
    .with_partition_key("customer-7")
    .with_extension("region", "eu-west")
    .unwrap()
}

#[test]
fn binary_mode_round_trips_every_attribute_and_the_data() {
    let event = rich();
    let (headers, body) = to_binary(&event).unwrap();
    assert_eq!(headers["ce-specversion"], "1.0");
    assert_eq!(headers["ce-id"], event.id());
    assert_eq!(headers["ce-type"], "com.example.note.added");
    assert_eq!(headers["ce-time"], "2026-12-05T10:00:00Z");
    assert_eq!(headers["ce-region"], "eu-west");
    assert_eq!(headers["content-type"], "application/json");
    // Space, quote, percent and non-ASCII are percent-encoded (UTF-8).
    assert_eq!(
        headers["ce-subject"],
        "notes/7%20%E2%80%94%20caf%C3%A9%20%22quoted%22%20100%25"
    );
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&body).unwrap(),
        json!({"id": 7, "body": "hé"})
    );
    assert_eq!(from_binary(&headers, &body).unwrap(), event);
}

#[test]
fn binary_data_keeps_its_bytes_and_type_and_no_data_is_an_empty_body() {
    let bytes = vec![0u8, 159, 146, 150, 255];
    let event =
        Event::new_binary(None, "t", "/s", "application/octet-stream", bytes.clone()).unwrap();
    let (headers, body) = to_binary(&event).unwrap();
    assert_eq!(body, bytes);
    assert_eq!(headers["content-type"], "application/octet-stream");
    assert_eq!(from_binary(&headers, &body).unwrap(), event);

    let empty = Event::without_data(None, "t", "/s").unwrap();
    let (headers, body) = to_binary(&empty).unwrap();
    assert!(body.is_empty() && !headers.contains_key("content-type"));
    assert_eq!(from_binary(&headers, &body).unwrap(), empty);
}

/// The binding carries no types: an integer or boolean extension is read
/// back as its text.
#[test]
fn typed_extensions_come_back_as_strings() {
    let event = Event::without_data(None, "t", "/s")
        .unwrap()
        .with_extension("priority", 3i64)
        .unwrap()
        .with_extension("replay", true)
        .unwrap();
    let (headers, body) = to_binary(&event).unwrap();
    let back = from_binary(&headers, &body).unwrap();
    assert_eq!(
        back.extension("priority"),
        Some(&ExtensionValue::String("3".into()))
    );
    assert_eq!(
        back.extension("replay"),
        Some(&ExtensionValue::String("true".into()))
    );
}

#[test]
fn a_binary_message_missing_a_required_attribute_or_with_bad_headers_is_refused() {
    let (headers, body) = to_binary(&rich()).unwrap();
    for required in ["ce-id", "ce-source", "ce-type", "ce-specversion"] {
        let mut missing = headers.clone();
        missing.remove(required);
        assert!(from_binary(&missing, &body).is_err(), "{required}");
    }
    let mut broken = headers.clone();
    broken.insert("ce-subject", HeaderValue::from_static("bad%zzescape"));
    assert!(matches!(
        from_binary(&broken, &body),
        Err(EventError::Malformed { .. })
    ));
    let mut smuggled = headers.clone();
    smuggled.insert("ce-data", HeaderValue::from_static("{}"));
    assert!(
        from_binary(&smuggled, &body).is_err(),
        "data is the body, not a header"
    );
    let mut wrong = headers;
    wrong.insert("content-type", HeaderValue::from_static("application/json"));
    assert!(from_binary(&wrong, b"not json").is_err());
}

#[test]
fn a_batch_round_trips_and_names_its_bad_member() {
    let events = vec![rich(), Event::without_data(None, "t", "/s").unwrap()];
    let body = to_batch(&events).unwrap();
    assert!(
        serde_json::from_slice::<serde_json::Value>(&body)
            .unwrap()
            .is_array()
    );
    assert_eq!(from_batch(&body).unwrap(), events);
    assert_eq!(from_batch(b"[]").unwrap(), Vec::<Event>::new());
    assert!(matches!(
        from_batch(b"{}"),
        Err(EventError::Malformed { .. })
    ));
    let err =
        from_batch(br#"[{"specversion":"1.0","id":"1","source":"/s","type":"t"}, 5]"#).unwrap_err();
    assert!(err.to_string().contains("member 1"), "{err}");
}

#[test]
fn from_http_reads_each_mode_by_its_content_type() {
    let event = rich();
    let mut structured = HeaderMap::new();
    structured.insert("content-type", HeaderValue::from_static(CLOUDEVENTS_JSON));
    assert_eq!(
        from_http(&structured, &event.to_json().unwrap()).unwrap(),
        vec![event.clone()]
    );

    let mut batch = HeaderMap::new();
    batch.insert(
        "content-type",
        HeaderValue::from_str(&format!("{CLOUDEVENTS_BATCH_JSON}; charset=utf-8")).unwrap(),
    );
    let events = vec![event.clone(), event.clone().with_id("second").unwrap()];
    assert_eq!(
        from_http(&batch, &to_batch(&events).unwrap()).unwrap(),
        events
    );

    let (headers, body) = to_binary(&event).unwrap();
    assert_eq!(from_http(&headers, &body).unwrap(), vec![event]);
}
