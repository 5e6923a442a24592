//! The in-memory backend: topics, consumer groups, redelivery and per-key
//! order inside one process. Always available; nothing survives the process.

mod consumer;
mod group;

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use saas_core::{SharedClock, SystemClock, TenantId};

use crate::delivery::Subscription;
use crate::envelope::{DEFAULT_MAX_PAYLOAD_BYTES, Event};
use crate::error::EventError;
use crate::names::validate_name;
use crate::receipt::{PublishReceipt, Tracker};
use crate::traits::{Capabilities, Publisher, StartFrom, SubscribeOptions, Subscriber};

use consumer::Consumer;
use group::{Entry, Group};

/// Settings of an [`InMemoryBus`].
#[derive(Clone)]
#[non_exhaustive]
pub struct InMemoryConfig {
    /// Largest payload accepted (default 1 MiB).
    pub max_payload_bytes: usize,
    /// Keep per-partition-key order (default `true`).
    pub ordered_per_key: bool,
    /// Events kept per topic for groups that start from
    /// [`StartFrom::Earliest`] (default 10,000; 0 keeps none).
    pub retained_per_topic: usize,
    /// Stamps events published without a time.
    pub clock: SharedClock,
}

impl Default for InMemoryConfig {
    fn default() -> Self {
        Self {
            max_payload_bytes: DEFAULT_MAX_PAYLOAD_BYTES,
            ordered_per_key: true,
            retained_per_topic: 10_000,
            clock: Arc::new(SystemClock),
        }
    }
}

impl InMemoryConfig {
    /// Sets the payload limit.
    pub fn with_max_payload_bytes(mut self, limit: usize) -> Self {
        self.max_payload_bytes = limit;
        self
    }

    /// Turns per-key ordering on or off.
    pub fn with_ordering_per_key(mut self, ordered: bool) -> Self {
        self.ordered_per_key = ordered;
        self
    }

    /// Sets how many events each topic retains for replay.
    pub fn with_retained_per_topic(mut self, count: usize) -> Self {
        self.retained_per_topic = count;
        self
    }

    /// Sets the clock.
    pub fn with_clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }
}

impl fmt::Debug for InMemoryConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InMemoryConfig")
            .field("max_payload_bytes", &self.max_payload_bytes)
            .field("ordered_per_key", &self.ordered_per_key)
            .field("retained_per_topic", &self.retained_per_topic)
            .field("clock", &self.clock)
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum GroupKey {
    Named {
        name: String,
        tenant: Option<TenantId>,
    },
    Private(u64),
}

#[derive(Debug, Default)]
struct Topic {
    retained: VecDeque<(u64, Arc<Event>)>,
    groups: HashMap<GroupKey, Arc<Group>>,
}

#[derive(Debug, Default)]
struct BusState {
    topics: HashMap<String, Topic>,
    next_seq: u64,
    next_private: u64,
    closed: bool,
}

#[derive(Debug)]
struct Shared {
    config: InMemoryConfig,
    state: Mutex<BusState>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, BusState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// An in-process event bus implementing [`Publisher`] and [`Subscriber`].
///
/// Clones share the bus. Topics are created on first use; named consumer
/// groups live as long as the bus, so a group closed and resumed loses
/// nothing; deliveries nacked, or dropped unsettled, come back (after the
/// nack's delay) with the attempt number increased; events with one
/// partition key reach a group in order, one at a time.
///
/// ```
/// use std::sync::Arc;
/// use saas_core::TenantId;
/// use saas_events::{Event, InMemoryBus, Publisher, SubscribeOptions, Subscriber};
///
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// let bus = InMemoryBus::new();
/// let mut sub = bus.subscribe("orders", SubscribeOptions::new().with_group("mailer")).await?;
/// bus.publish("orders", Event::new(TenantId::new(), "order.placed", "/shop", &42)?).await?;
///
/// let delivery = sub.next().await.expect("open")?;
/// assert_eq!(delivery.event().data_as::<u32>()?, 42);
/// assert_eq!(delivery.attempt(), 1);
/// delivery.ack().await?;
/// # Ok::<(), saas_events::EventError>(())
/// # }).unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct InMemoryBus {
    shared: Arc<Shared>,
}

impl Default for InMemoryBus {
    fn default() -> Self {
        Self::new()
    }
}

impl InMemoryBus {
    /// A bus with the default settings.
    pub fn new() -> Self {
        Self::with_config(InMemoryConfig::default())
    }

    /// A bus with the given settings.
    pub fn with_config(config: InMemoryConfig) -> Self {
        Self {
            shared: Arc::new(Shared {
                config,
                state: Mutex::new(BusState::default()),
            }),
        }
    }

    /// Closes the bus: publishing fails with [`EventError::Closed`] and every
    /// subscription ends.
    pub fn close(&self) {
        let groups: Vec<Arc<Group>> = {
            let mut state = self.shared.lock();
            state.closed = true;
            state
                .topics
                .values()
                .flat_map(|t| t.groups.values().cloned())
                .collect()
        };
        for group in groups {
            {
                let mut queue = group.lock();
                queue.closed = true;
                queue.drop_waiting_copies();
            }
            group.notify.notify_waiters();
        }
    }

    fn check(&self, topic: &str, event: &Event) -> Result<(), EventError> {
        validate_name(topic)?;
        event.check_payload_size(self.shared.config.max_payload_bytes)
    }

    /// Publishes `events` under one lock; with a `tracker`, every copy
    /// queued counts towards its receipt.
    fn publish_all(
        &self,
        topic: &str,
        events: Vec<Event>,
        tracker: Option<&Arc<Tracker>>,
    ) -> Result<(), EventError> {
        let config = &self.shared.config;
        let mut touched: Vec<Arc<Group>> = Vec::new();
        {
            let mut state = self.shared.lock();
            if state.closed {
                return Err(EventError::Closed);
            }
            let first_seq = state.next_seq;
            state.next_seq += events.len() as u64;
            let entry = state.topics.entry(topic.to_owned()).or_default();
            let events: Vec<(u64, Arc<Event>)> = events
                .into_iter()
                .enumerate()
                .map(|(offset, mut event)| {
                    event.stamp_time(&*config.clock);
                    (first_seq + offset as u64, Arc::new(event))
                })
                .collect();
            // One lock per group for the whole batch, not one per event.
            for group in entry.groups.values() {
                let mut queue = group.lock();
                let before = queue.pending_len();
                for (seq, event) in &events {
                    if group.accepts(event) {
                        let entry = Entry::new(*seq, Arc::clone(event), config.ordered_per_key);
                        match tracker {
                            Some(tracker) => queue.push_tracked(entry, tracker),
                            None => queue.push(entry),
                        }
                    }
                }
                if queue.pending_len() > before {
                    touched.push(Arc::clone(group));
                }
            }
            if config.retained_per_topic > 0 {
                // Only the newest `retained_per_topic` are kept.
                let keep = events.len().min(config.retained_per_topic);
                let skip = events.len() - keep;
                let overflow =
                    (entry.retained.len() + keep).saturating_sub(config.retained_per_topic);
                entry.retained.drain(..overflow.min(entry.retained.len()));
                entry.retained.extend(events.into_iter().skip(skip));
            }
        }
        for group in touched {
            group.notify.notify_waiters();
        }
        Ok(())
    }

    fn capabilities_now(&self) -> Capabilities {
        let config = &self.shared.config;
        Capabilities {
            ordering_per_key: config.ordered_per_key,
            consumer_groups: true,
            delayed_delivery: true,
            replay: config.retained_per_topic > 0,
            max_payload_bytes: config.max_payload_bytes,
            ..Capabilities::default()
        }
    }

    /// Removes a private group when its only consumer goes away.
    fn remove_group(&self, topic: &str, key: &GroupKey) {
        let mut state = self.shared.lock();
        if let Some(t) = state.topics.get_mut(topic) {
            t.groups.remove(key);
        }
    }
}

#[async_trait]
impl Publisher for InMemoryBus {
    async fn publish(&self, topic: &str, event: Event) -> Result<(), EventError> {
        self.check(topic, &event)?;
        self.publish_all(topic, vec![event], None)
    }

    /// All or nothing: the batch is checked, then published under one lock.
    async fn publish_batch(&self, topic: &str, events: Vec<Event>) -> Result<(), EventError> {
        for event in &events {
            self.check(topic, event)?;
        }
        self.publish_all(topic, events, None)
    }

    /// All or nothing, as `publish_batch`; the receipt is confirmed once
    /// every group and subscription that received the events has
    /// acknowledged each of them (at once if none did). The bus keeps
    /// events only in memory, so an outbox relay must keep its rows until
    /// then.
    async fn publish_tracked(
        &self,
        topic: &str,
        events: Vec<Event>,
    ) -> Result<PublishReceipt, EventError> {
        for event in &events {
            self.check(topic, event)?;
        }
        let (tracker, receipt) = Tracker::start();
        self.publish_all(topic, events, Some(&tracker))?;
        // Every copy is counted: release the publisher's own hold.
        tracker.acknowledge();
        Ok(receipt)
    }

    fn capabilities(&self) -> Capabilities {
        self.capabilities_now()
    }
}

#[async_trait]
impl Subscriber for InMemoryBus {
    async fn subscribe(
        &self,
        topic: &str,
        options: SubscribeOptions,
    ) -> Result<Subscription, EventError> {
        validate_name(topic)?;
        if let Some(name) = &options.group {
            validate_name(name)?;
        }
        let (key, group) = {
            let mut state = self.shared.lock();
            if state.closed {
                return Err(EventError::Closed);
            }
            let key = match options.group {
                Some(name) => GroupKey::Named {
                    name,
                    tenant: options.tenant,
                },
                None => {
                    state.next_private += 1;
                    GroupKey::Private(state.next_private)
                }
            };
            let entry = state.topics.entry(topic.to_owned()).or_default();
            let group = match entry.groups.get(&key) {
                Some(group) => Arc::clone(group),
                None => {
                    let durable = matches!(key, GroupKey::Named { .. });
                    let group = Arc::new(Group::new(options.tenant, durable));
                    if options.start == StartFrom::Earliest {
                        let mut queue = group.lock();
                        for (seq, event) in &entry.retained {
                            if group.accepts(event) {
                                queue.push(Entry::new(
                                    *seq,
                                    Arc::clone(event),
                                    self.shared.config.ordered_per_key,
                                ));
                            }
                        }
                    }
                    entry.groups.insert(key.clone(), Arc::clone(&group));
                    group
                }
            };
            group.lock().consumers += 1;
            (key, group)
        };
        let consumer = Consumer::new(self.clone(), Arc::from(topic), key, group);
        Ok(Subscription::new(Box::new(consumer)))
    }

    fn capabilities(&self) -> Capabilities {
        self.capabilities_now()
    }
}
