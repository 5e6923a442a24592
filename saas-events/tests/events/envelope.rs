//! The envelope against the CloudEvents 1.0 JSON format rules.

use chrono::{TimeZone, Utc};
use proptest::prelude::*;
use saas_core::{ManualClock, TenantId};
use saas_events::{Data, Event, EventError, ExtensionValue, TraceContext};
use serde_json::{Value, json};

fn parse(value: Value) -> Result<Event, EventError> {
    Event::from_json_slice(&serde_json::to_vec(&value).unwrap())
}

fn minimal() -> Value {
    json!({"specversion": "1.0", "id": "A234-1234-1234", "source": "/mycontext", "type": "com.example.someevent"})
}

#[test]
fn reads_the_spec_example_with_binary_data() {
    let event = parse(json!({
        "specversion": "1.0",
        "type": "com.example.someevent",
        "source": "/mycontext",
        "id": "A234-1234-1234",
        "time": "2018-04-05T17:31:00Z",
        "comexampleextension1": "value",
        "comexampleothervalue": 5,
        "datacontenttype": "application/vnd.apache.thrift.binary",
        "data_base64": "aGVsbG8="
    }))
    .unwrap();
    assert_eq!(event.id(), "A234-1234-1234");
    assert_eq!(
        event.time(),
        Some(Utc.with_ymd_and_hms(2018, 4, 5, 17, 31, 0).unwrap())
    );
    assert_eq!(
        event.extension("comexampleothervalue"),
        Some(&ExtensionValue::Integer(5))
    );
    assert_eq!(event.data(), Some(&Data::Binary(b"hello".to_vec())));
    let written: Value = serde_json::from_slice(&event.to_json().unwrap()).unwrap();
    assert_eq!(written["data_base64"], "aGVsbG8=");
    assert_eq!(written["time"], "2018-04-05T17:31:00Z");
    assert!(written.get("data").is_none());
}

#[test]
fn required_attributes_must_be_present_and_non_empty() {
    for attribute in ["id", "source", "type", "specversion"] {
        let mut missing = minimal();
        missing.as_object_mut().unwrap().remove(attribute);
        assert!(
            matches!(parse(missing), Err(EventError::MissingAttribute { attribute: a }) if a == attribute),
            "{attribute} missing"
        );
        let mut empty = minimal();
        empty[attribute] = json!("");
        assert!(
            matches!(parse(empty), Err(EventError::MissingAttribute { .. })),
            "{attribute} empty"
        );
    }
    let mut wrong_type = minimal();
    wrong_type["id"] = json!(5);
    assert!(matches!(
        parse(wrong_type),
        Err(EventError::InvalidAttribute { .. })
    ));
}

#[test]
fn rejects_what_the_spec_forbids() {
    let with = |key: &str, value: Value| {
        let mut v = minimal();
        v[key] = value;
        parse(v)
    };
    assert!(matches!(
        with("specversion", json!("0.3")),
        Err(EventError::UnsupportedSpecVersion { .. })
    ));
    assert!(
        matches!(with("time", json!("yesterday")), Err(EventError::InvalidAttribute { attribute, .. }) if attribute == "time")
    );
    assert!(matches!(
        with("subject", json!("")),
        Err(EventError::InvalidAttribute { .. })
    ));
    assert!(matches!(
        with("tenantid", json!("acme")),
        Err(EventError::InvalidAttribute { .. })
    ));
    assert!(matches!(
        with("Upper", json!("x")),
        Err(EventError::InvalidExtensionName { .. })
    ));
    assert!(matches!(
        with("snake_case", json!("x")),
        Err(EventError::InvalidExtensionName { .. })
    ));
    assert!(matches!(
        with("nested", json!({"a": 1})),
        Err(EventError::InvalidAttribute { .. })
    ));
    assert!(matches!(
        with("ratio", json!(0.5)),
        Err(EventError::InvalidAttribute { .. })
    ));
    let mut both = minimal();
    both["data"] = json!(1);
    both["data_base64"] = json!("AQ==");
    assert!(matches!(parse(both), Err(EventError::Malformed { .. })));
    assert!(matches!(
        Event::from_json_str("[1]"),
        Err(EventError::Malformed { .. })
    ));
    assert!(matches!(
        Event::from_json_str("{"),
        Err(EventError::Malformed { .. })
    ));
}

/// CloudEvents integers are 32-bit signed: a larger one is refused with
/// a reason, never written; the limits themselves are fine.
#[test]
fn extension_integers_must_fit_32_bits() {
    let event = Event::without_data(None, "t", "/s").unwrap();
    for fits in [i64::from(i32::MIN), -1, 0, i64::from(i32::MAX)] {
        let with = event.clone().with_extension("count", fits).unwrap();
        assert_eq!(
            with.extension("count").and_then(ExtensionValue::as_i64),
            Some(fits)
        );
    }
    for too_big in [i64::from(i32::MAX) + 1, i64::from(i32::MIN) - 1, i64::MAX] {
        let err = event.clone().with_extension("count", too_big).unwrap_err();
        assert!(
            matches!(err, EventError::InvalidAttribute { .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("32-bit"), "{err}");
    }
    assert!(event.with_extension("count", u32::MAX).is_err());
}

/// `dataschema` is an absolute URI in CloudEvents 1.0; a relative
/// reference is refused before it reaches a consumer that would refuse
/// the whole event.
#[test]
fn dataschema_must_be_an_absolute_uri() {
    let event = Event::without_data(None, "t", "/s").unwrap();
    for absolute in [
        "https://example.com/schemas/note.json",
        "urn:example:note:v1",
        "tag:example.com,2026:note",
    ] {
        let with = event.clone().with_dataschema(absolute).unwrap();
        assert_eq!(with.dataschema(), Some(absolute));
        let back = Event::from_json_slice(&with.to_json().unwrap()).unwrap();
        assert_eq!(back.dataschema(), Some(absolute));
    }
    for relative in [
        "/schemas/note.json",
        "note.json",
        "1http://x",
        "https:",
        "a b:c",
    ] {
        let err = event.clone().with_dataschema(relative).unwrap_err();
        assert!(
            matches!(err, EventError::InvalidAttribute { .. }),
            "{relative}: {err:?}"
        );
    }
    assert_eq!(event.with_dataschema("").unwrap().dataschema(), None);
}

#[test]
fn reads_long_extension_names_but_writes_only_short_ones() {
    let mut long = minimal();
    long["averyveryverylongextension"] = json!("x"); // 26 characters: allowed by the spec
    assert!(parse(long).is_ok());
    let event = Event::without_data(None, "t", "/s").unwrap();
    assert!(matches!(
        event
            .clone()
            .with_extension("averyveryverylongextension", "x"),
        Err(EventError::InvalidExtensionName { .. })
    ));
    assert!(event.clone().with_extension("Region", "x").is_err());
    assert!(event.clone().with_extension("tenantid", "x").is_err());
    assert!(event.with_extension("region", "x").is_ok());
}

#[test]
fn writes_tenant_partition_key_and_json_data() {
    let tenant = TenantId::new();
    let clock = ManualClock::new(Utc.with_ymd_and_hms(2025, 1, 2, 3, 4, 5).unwrap());
    let event = Event::new(tenant, "order.placed", "/shop", &json!({"order": 7}))
        .unwrap()
        .with_time_from(&clock);
    let id = uuid::Uuid::parse_str(event.id()).unwrap();
    assert_eq!(id.get_version_num(), 7);
    let written: Value = serde_json::to_value(&event).unwrap();
    assert_eq!(written["specversion"], "1.0");
    assert_eq!(written["tenantid"], tenant.to_string());
    assert_eq!(written["partitionkey"], tenant.to_string());
    assert_eq!(written["time"], "2025-01-02T03:04:05Z");
    assert_eq!(written["datacontenttype"], "application/json");
    assert_eq!(written["data"], json!({"order": 7}));
    let back: Event = serde_json::from_value(written).unwrap();
    assert_eq!(back, event);

    let keyed = event.with_partition_key("customer-1");
    assert_eq!(keyed.partition_key().as_deref(), Some("customer-1"));
    assert_eq!(
        Event::from_json_slice(&keyed.to_json().unwrap()).unwrap(),
        keyed
    );
    let untenanted = Event::without_data(None, "t", "/s").unwrap();
    assert_eq!(untenanted.partition_key(), None);
}

#[test]
fn typed_payloads_and_their_errors() {
    #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
    struct Paid {
        cents: u64,
    }
    let event = Event::new(None, "paid", "/billing", &Paid { cents: 5 }).unwrap();
    assert_eq!(event.data_as::<Paid>().unwrap(), Paid { cents: 5 });
    assert!(matches!(
        event.data_as::<String>(),
        Err(EventError::Decode { .. })
    ));
    let empty = Event::without_data(None, "t", "/s").unwrap();
    assert!(matches!(empty.data_as::<Paid>(), Err(EventError::NoData)));
    let binary_json = Event::new_binary(
        None,
        "t",
        "/s",
        "application/json",
        br#"{"cents":9}"#.to_vec(),
    )
    .unwrap();
    assert_eq!(binary_json.data_as::<Paid>().unwrap(), Paid { cents: 9 });
    let png = Event::new_binary(None, "t", "/s", "image/png", vec![1, 2]).unwrap();
    assert!(matches!(
        png.data_as::<Paid>(),
        Err(EventError::Decode { .. })
    ));
    assert!(matches!(
        Event::new(None, "", "/s", &1),
        Err(EventError::MissingAttribute { attribute: "type" })
    ));
    assert!(matches!(
        Event::new(None, "t", "", &1),
        Err(EventError::MissingAttribute {
            attribute: "source"
        })
    ));
}

#[test]
fn payload_size_and_limit() {
    let event = Event::new(None, "t", "/s", &"abc").unwrap();
    assert_eq!(event.payload_size(), 5); // "abc" with its quotes
    assert!(event.check_payload_size(5).is_ok());
    assert!(matches!(
        event.check_payload_size(4),
        Err(EventError::PayloadTooLarge { size: 5, limit: 4 })
    ));
}

#[test]
fn trace_context_round_trips_and_rejects_garbage() {
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let event = Event::without_data(None, "t", "/s")
        .unwrap()
        .with_traceparent(traceparent)
        .unwrap()
        .with_tracestate("rojo=00f067aa0ba902b7");
    let back = Event::from_json_slice(&event.to_json().unwrap()).unwrap();
    assert_eq!(back.traceparent(), Some(traceparent));
    assert_eq!(back.tracestate(), Some("rojo=00f067aa0ba902b7"));
    for bad in [
        "",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
    ] {
        assert!(bad.parse::<TraceContext>().is_err(), "{bad}");
    }
}

fn extension_value() -> impl Strategy<Value = ExtensionValue> {
    prop_oneof![
        ".{0,40}".prop_map(ExtensionValue::String),
        // CloudEvents integers are 32-bit: the only ones written.
        any::<i32>().prop_map(|i| ExtensionValue::Integer(i64::from(i))),
        any::<bool>().prop_map(ExtensionValue::Boolean),
    ]
}

proptest! {
    #[test]
    fn any_event_round_trips_through_json(
        subject in "[^\u{0}]{1,30}",
        name in "[a-z][a-z0-9]{0,15}",
        value in extension_value(),
        payload in proptest::collection::vec(any::<u8>(), 0..64),
        text in ".{0,64}",
        secs in 0i64..4_000_000_000,
        nanos in 0u32..1_000_000_000,
    ) {
        prop_assume!(!["id", "source", "type", "time", "subject", "data", "dataschema", "specversion",
            "datacontenttype", "tenantid", "traceparent", "tracestate", "partitionkey"].contains(&name.as_str()));
        let time = Utc.timestamp_opt(secs, nanos).unwrap();
        let json_event = Event::new(TenantId::new(), "t", "/s", &text).unwrap()
            .with_subject(subject.clone())
            .with_time(time)
            .with_extension(&name, value.clone()).unwrap();
        let back = Event::from_json_slice(&json_event.to_json().unwrap()).unwrap();
        prop_assert_eq!(back, json_event);
        let binary = Event::new_binary(None, "t", "/s", "application/octet-stream", payload).unwrap()
            .with_subject(subject);
        let back = Event::from_json_slice(&binary.to_json().unwrap()).unwrap();
        prop_assert_eq!(back, binary);
    }
}
