//! Conformance: what an event carries arrives unchanged, up to the size limit.

use std::sync::Arc;

use saas_core::TenantId;

use super::pubsub::{numbered, subscribe};
use super::{must, next_delivery, unique_topic};
use crate::envelope::{Data, Event};
use crate::error::EventError;
use crate::trace::TraceContext;
use crate::traits::{Publisher, SubscribeOptions, Subscriber};

/// Subject, schema, partition key, trace context and extensions of every
/// type arrive unchanged.
pub async fn headers_and_trace(p: Arc<dyn Publisher>, s: Arc<dyn Subscriber>) {
    let topic = unique_topic("headers");
    let mut sub = subscribe(&*s, &topic, SubscribeOptions::new()).await;
    let trace = TraceContext::new(
        0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736,
        0x00f0_67aa_0ba9_02b7,
        true,
    );
    let schema = "https://example.com/schemas/numbered.json";
    let sent = numbered(Some(TenantId::new()), "h", 1).with_subject("invoice/42");
    let mut sent = must(sent.with_dataschema(schema), "setting dataschema")
        .with_partition_key("customer-7")
        .with_tracestate("vendor=opaque")
        .with_time(chrono::DateTime::UNIX_EPOCH);
    if let Some(trace) = trace {
        sent = sent.with_trace_context(trace);
    }
    let sent: Result<Event, EventError> = sent
        .with_extension("region", "eu-west")
        .and_then(|e| e.with_extension("priority", 3i64))
        .and_then(|e| e.with_extension("replay", true));
    let sent = must(sent, "adding extensions");
    must(p.publish(&topic, sent.clone()).await, "publishing");
    let delivery = next_delivery(&mut sub, "the event with headers").await;
    assert_eq!(delivery.event(), &sent);
    assert_eq!(delivery.event().trace_context(), trace);
    must(delivery.ack().await, "acking");
}

/// A payload of exactly the backend's limit (at least 1 MiB) arrives
/// intact; one byte more is refused with `PayloadTooLarge`.
pub async fn large_payload(p: Arc<dyn Publisher>, s: Arc<dyn Subscriber>) {
    let limit = p.capabilities().max_payload_bytes;
    assert!(
        limit >= crate::DEFAULT_MAX_PAYLOAD_BYTES,
        "backends must accept 1 MiB payloads"
    );
    let topic = unique_topic("large");
    let mut sub = subscribe(&*s, &topic, SubscribeOptions::new()).await;
    let bytes: Vec<u8> = (0..limit).map(|i| (i % 251) as u8).collect();
    let binary = must(
        Event::new_binary(
            None,
            "conformance.large",
            "/conformance",
            "application/octet-stream",
            bytes.clone(),
        ),
        "building",
    );
    must(
        p.publish(&topic, binary).await,
        "publishing a payload at the limit",
    );
    let text = "x".repeat(limit - 2); // two bytes of JSON quotes
    let json = must(
        Event::new(None, "conformance.large", "/conformance", &text),
        "building",
    );
    assert_eq!(json.payload_size(), limit);
    must(
        p.publish(&topic, json).await,
        "publishing JSON at the limit",
    );

    let delivery = next_delivery(&mut sub, "the large binary event").await;
    assert_eq!(delivery.event().data(), Some(&Data::Binary(bytes)));
    must(delivery.ack().await, "acking");
    let delivery = next_delivery(&mut sub, "the large JSON event").await;
    assert_eq!(must(delivery.event().data_as::<String>(), "decoding"), text);
    must(delivery.ack().await, "acking");

    let over = must(
        Event::new_binary(
            None,
            "conformance.large",
            "/conformance",
            "application/octet-stream",
            vec![0; limit + 1],
        ),
        "building",
    );
    match p.publish(&topic, over).await {
        Err(EventError::PayloadTooLarge { size, limit: l }) => {
            assert_eq!((size, l), (limit + 1, limit))
        }
        other => panic!("expected PayloadTooLarge, got {other:?}"),
    }
}
