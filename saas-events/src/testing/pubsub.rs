//! Conformance: publishing, subscribing, groups, order and isolation.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use saas_core::TenantId;
use serde::{Deserialize, Serialize};

use super::{must, next_delivery, skip, unique_topic};
use crate::delivery::Subscription;
use crate::envelope::Event;
use crate::traits::{Publisher, SubscribeOptions, Subscriber};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct Numbered {
    pub(super) label: String,
    pub(super) n: u32,
}

pub(super) fn numbered(tenant: Option<TenantId>, label: &str, n: u32) -> Event {
    must(
        Event::new(
            tenant,
            "conformance.numbered",
            "/conformance",
            &Numbered {
                label: label.to_owned(),
                n,
            },
        ),
        "building an event",
    )
}

pub(super) async fn subscribe(
    s: &dyn Subscriber,
    topic: &str,
    options: SubscribeOptions,
) -> Subscription {
    must(s.subscribe(topic, options).await, "subscribing")
}

/// Receives until the event with `sentinel` as id, acking everything, and
/// returns what came before it.
async fn until_sentinel(sub: &mut Subscription, sentinel: &str) -> Vec<Event> {
    let mut seen = Vec::new();
    loop {
        let delivery = next_delivery(sub, "events up to the sentinel").await;
        let event = delivery.event().clone();
        must(delivery.ack().await, "acking");
        if event.id() == sentinel {
            return seen;
        }
        seen.push(event);
    }
}

/// A published event arrives unchanged, with a time stamped by the
/// publisher, as attempt 1; a batch arrives in order.
pub async fn round_trip(p: Arc<dyn Publisher>, s: Arc<dyn Subscriber>) {
    let topic = unique_topic("round-trip");
    let mut sub = subscribe(&*s, &topic, SubscribeOptions::new()).await;
    let tenant = TenantId::new();
    let sent = numbered(Some(tenant), "one", 1).with_subject("thing/1");
    assert!(sent.time().is_none());
    must(p.publish(&topic, sent.clone()).await, "publishing");
    let delivery = next_delivery(&mut sub, "the published event").await;
    assert_eq!(delivery.attempt(), 1);
    assert_eq!(delivery.topic(), topic);
    let got = delivery.event().clone();
    assert!(got.time().is_some(), "the publisher must stamp a time");
    let time = got.time().unwrap_or_default();
    assert_eq!(got, sent.with_time(time));
    assert_eq!(must(got.data_as::<Numbered>(), "decoding").n, 1);
    must(delivery.ack().await, "acking");

    let batch: Vec<Event> = (0..3).map(|n| numbered(Some(tenant), "batch", n)).collect();
    let ids: Vec<String> = batch.iter().map(|e| e.id().to_owned()).collect();
    must(p.publish_batch(&topic, batch).await, "publishing a batch");
    for id in ids {
        let delivery = next_delivery(&mut sub, "a batch event").await;
        assert_eq!(delivery.event().id(), id, "a batch arrives in order");
        must(delivery.ack().await, "acking");
    }
}

/// 50 publishers publishing 100 events each at once: none is lost.
pub async fn concurrent_publishers(p: Arc<dyn Publisher>, s: Arc<dyn Subscriber>) {
    const PUBLISHERS: u32 = 50;
    const EACH: u32 = 100;
    let topic = unique_topic("concurrent");
    let mut sub = subscribe(&*s, &topic, SubscribeOptions::new()).await;
    let mut tasks = Vec::new();
    for publisher in 0..PUBLISHERS {
        let p = Arc::clone(&p);
        let topic = topic.clone();
        tasks.push(tokio::spawn(async move {
            let tenant = TenantId::new();
            for n in 0..EACH {
                let event = numbered(Some(tenant), &publisher.to_string(), n);
                must(p.publish(&topic, event).await, "publishing concurrently");
            }
        }));
    }
    let mut seen = HashSet::new();
    while seen.len() < (PUBLISHERS * EACH) as usize {
        let delivery = next_delivery(&mut sub, "all concurrently published events").await;
        let body: Numbered = must(delivery.event().data_as(), "decoding");
        seen.insert((body.label, body.n));
        must(delivery.ack().await, "acking");
    }
    for task in tasks {
        assert!(task.await.is_ok(), "a publisher task failed");
    }
}

/// Events published to one topic never reach another.
pub async fn topic_isolation(p: Arc<dyn Publisher>, s: Arc<dyn Subscriber>) {
    let topics: Vec<String> = (0..10).map(|i| unique_topic(&format!("iso{i}"))).collect();
    let mut subs = Vec::new();
    for topic in &topics {
        subs.push(subscribe(&*s, topic, SubscribeOptions::new()).await);
    }
    for round in 0..5 {
        for topic in &topics {
            must(
                p.publish(topic, numbered(None, topic, round)).await,
                "publishing",
            );
        }
    }
    for (topic, sub) in topics.iter().zip(subs.iter_mut()) {
        let sentinel = numbered(None, topic, 999);
        let id = sentinel.id().to_owned();
        must(p.publish(topic, sentinel).await, "publishing the sentinel");
        let seen = until_sentinel(sub, &id).await;
        let labels: HashSet<String> = seen
            .iter()
            .map(|e| must(e.data_as::<Numbered>(), "decoding").label)
            .collect();
        assert_eq!(
            labels,
            HashSet::from([topic.clone()]),
            "cross-talk between topics"
        );
        assert!(seen.len() >= 5, "events were lost");
    }
}

/// Events with one partition key reach a group in publish order, and a
/// nacked one comes back before the next one with its key.
pub async fn per_key_order(p: Arc<dyn Publisher>, s: Arc<dyn Subscriber>) {
    if !s.capabilities().ordering_per_key {
        return skip("per_key_order", "ordering_per_key");
    }
    let topic = unique_topic("order");
    // A group where the backend has them; a private subscription is a
    // group of one otherwise.
    let options = if s.capabilities().consumer_groups {
        SubscribeOptions::new().with_group("ordered")
    } else {
        SubscribeOptions::new()
    };
    let mut sub = subscribe(&*s, &topic, options).await;
    let keys = ["k0", "k1", "k2"];
    let mut events = Vec::new();
    for n in 0..20 {
        for key in keys {
            events.push(numbered(None, key, n).with_partition_key(key));
        }
    }
    must(p.publish_batch(&topic, events).await, "publishing");
    let mut last: HashMap<String, u32> = HashMap::new();
    let mut nacked = false;
    let mut received = 0;
    while received < 60 {
        let delivery = next_delivery(&mut sub, "ordered events").await;
        let body: Numbered = must(delivery.event().data_as(), "decoding");
        if body.label == "k1" && body.n == 5 && !nacked {
            nacked = true;
            // The next k1 event must be this one again.
            must(delivery.nack(None).await, "nacking");
            continue;
        }
        if let Some(previous) = last.get(&body.label) {
            assert!(
                body.n == previous + 1,
                "key {}: {} after {}",
                body.label,
                body.n,
                previous
            );
        } else {
            assert_eq!(body.n, 0, "key {} did not start at 0", body.label);
        }
        last.insert(body.label, body.n);
        received += 1;
        must(delivery.ack().await, "acking");
    }
}

/// Each group gets every event; within a group an event goes to one
/// consumer, and one in flight is not handed to another.
pub async fn consumer_groups(p: Arc<dyn Publisher>, s: Arc<dyn Subscriber>) {
    if !s.capabilities().consumer_groups {
        return skip("consumer_groups", "consumer_groups");
    }
    let topic = unique_topic("groups");
    let mut a1 = subscribe(&*s, &topic, SubscribeOptions::new().with_group("a")).await;
    let mut a2 = subscribe(&*s, &topic, SubscribeOptions::new().with_group("a")).await;
    let mut b = subscribe(&*s, &topic, SubscribeOptions::new().with_group("b")).await;
    let events: Vec<Event> = (0..20)
        .map(|n| numbered(None, "g", n).with_partition_key(format!("key{n}")))
        .collect();
    let all: HashSet<String> = events.iter().map(|e| e.id().to_owned()).collect();
    must(p.publish_batch(&topic, events).await, "publishing");

    let held = next_delivery(&mut a1, "a first event in group a").await;
    let other = next_delivery(&mut a2, "a second event in group a").await;
    assert_ne!(
        held.event().id(),
        other.event().id(),
        "one event went to two consumers"
    );
    let mut group_a: HashSet<String> = HashSet::new();
    for delivery in [held, other] {
        group_a.insert(delivery.event().id().to_owned());
        must(delivery.ack().await, "acking");
    }
    // a2 stays idle; a1 drains the rest of the group's share.
    while group_a.len() < all.len() {
        let delivery = next_delivery(&mut a1, "every event in group a").await;
        group_a.insert(delivery.event().id().to_owned());
        must(delivery.ack().await, "acking");
    }
    let mut group_b = HashSet::new();
    while group_b.len() < all.len() {
        let delivery = next_delivery(&mut b, "every event in group b").await;
        group_b.insert(delivery.event().id().to_owned());
        must(delivery.ack().await, "acking");
    }
    assert_eq!(group_a, all);
    assert_eq!(group_b, all);
}

/// A group whose consumers all close loses nothing: unacked deliveries and
/// events published meanwhile reach the next consumer.
pub async fn close_and_resume(p: Arc<dyn Publisher>, s: Arc<dyn Subscriber>) {
    if !s.capabilities().consumer_groups {
        return skip("close_and_resume", "consumer_groups");
    }
    let topic = unique_topic("resume");
    let options = SubscribeOptions::new().with_group("resumable");
    let mut first = subscribe(&*s, &topic, options.clone()).await;
    let tenant = TenantId::new();
    let events: Vec<Event> = (0..10).map(|n| numbered(Some(tenant), "r", n)).collect();
    let mut outstanding: HashSet<String> = events.iter().map(|e| e.id().to_owned()).collect();
    must(p.publish_batch(&topic, events).await, "publishing");
    for _ in 0..3 {
        let delivery = next_delivery(&mut first, "an event before closing").await;
        outstanding.remove(delivery.event().id());
        must(delivery.ack().await, "acking");
    }
    let unsettled = next_delivery(&mut first, "an event left unsettled").await;
    first.close().await;
    drop(unsettled);

    let later: Vec<Event> = (10..15).map(|n| numbered(Some(tenant), "r", n)).collect();
    outstanding.extend(later.iter().map(|e| e.id().to_owned()));
    must(
        p.publish_batch(&topic, later).await,
        "publishing while closed",
    );

    let mut resumed = subscribe(&*s, &topic, options).await;
    while !outstanding.is_empty() {
        let delivery = next_delivery(&mut resumed, "the events left when the group closed").await;
        outstanding.remove(delivery.event().id());
        must(delivery.ack().await, "acking");
    }
}

/// A subscription scoped to a tenant never sees another tenant's events,
/// nor tenant-less ones; neither does a group scoped to it.
pub async fn tenant_isolation(p: Arc<dyn Publisher>, s: Arc<dyn Subscriber>) {
    let topic = unique_topic("tenants");
    let (a, b) = (TenantId::new(), TenantId::new());
    let mut only_a = subscribe(&*s, &topic, SubscribeOptions::new().with_tenant(a)).await;
    let mut only_b = subscribe(&*s, &topic, SubscribeOptions::new().with_tenant(b)).await;
    let mut everyone = subscribe(&*s, &topic, SubscribeOptions::new()).await;
    let mut group_a = if s.capabilities().consumer_groups {
        let options = SubscribeOptions::new().with_group("scoped").with_tenant(a);
        Some(subscribe(&*s, &topic, options).await)
    } else {
        None
    };
    for n in 0..10 {
        for tenant in [Some(a), Some(b), None] {
            must(
                p.publish(&topic, numbered(tenant, "t", n)).await,
                "publishing",
            );
        }
    }
    let sentinel = |tenant| numbered(tenant, "sentinel", 0);
    let (sa, sb, sall) = (sentinel(Some(a)), sentinel(Some(b)), sentinel(Some(a)));
    // Order is promised per key only (here: per tenant), so the unscoped
    // subscription reads until it has met the last event of each.
    let (sb_all, snone) = (sentinel(Some(b)), sentinel(None));
    for event in [&sa, &sb, &sall, &sb_all, &snone] {
        must(
            p.publish(&topic, event.clone()).await,
            "publishing a sentinel",
        );
    }
    let seen_a = until_sentinel(&mut only_a, sa.id()).await;
    assert!(
        seen_a.len() >= 10 && seen_a.iter().all(|e| e.tenant_id() == Some(a)),
        "tenant A's subscription saw other events"
    );
    let seen_b = until_sentinel(&mut only_b, sb.id()).await;
    assert!(
        seen_b.len() >= 10 && seen_b.iter().all(|e| e.tenant_id() == Some(b)),
        "tenant B's subscription saw other events"
    );
    let mut seen_all = Vec::new();
    let mut waiting: HashSet<&str> = HashSet::from([sall.id(), sb_all.id(), snone.id()]);
    while !waiting.is_empty() {
        let delivery = next_delivery(&mut everyone, "every tenant's events").await;
        let event = delivery.event().clone();
        must(delivery.ack().await, "acking");
        if !waiting.remove(event.id()) {
            seen_all.push(event);
        }
    }
    assert!(
        seen_all.len() >= 32,
        "an unscoped subscription must see every tenant"
    );
    if let Some(group) = group_a.as_mut() {
        let seen = until_sentinel(group, sa.id()).await;
        assert!(
            seen.iter().all(|e| e.tenant_id() == Some(a)),
            "a tenant-scoped group saw other events"
        );
    }
}
