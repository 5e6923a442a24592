//! JetStream pull consumers behind [`Subscription`]s: one per partition,
//! read in batches by the member holding the partition's lease.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull};
use async_nats::jetstream::{AckKind, Message, stream};
use async_trait::async_trait;
use futures_util::StreamExt;

use super::leases::{KvLeases, bucket};
use super::{NatsConfig, nats_error};
use crate::delivery::Subscription;
use crate::envelope::Event;
use crate::error::EventError;
use crate::partitioned::{self, BATCH, Fetched, PartitionSource, Settings};
use crate::traits::{StartFrom, SubscribeOptions};

/// The escaped group with its tenant scope, the common part of its
/// consumer names and lease keys. `kind` is `o` for the batched consumers;
/// `g` named the one-at-a-time consumers of earlier versions.
fn group_base(kind: &str, group: &str, scope: &str) -> String {
    // The same bijective escape as stream names (`_` → `__`, `.` → `_d`);
    // consumer names may not contain dots.
    let mut name = format!("{kind}_");
    for c in group.chars() {
        match c {
            '_' => name.push_str("__"),
            '.' => name.push_str("_d"),
            c => name.push(c),
        }
    }
    format!("{name}-{scope}")
}

pub(super) struct Target<'a> {
    pub(super) js: &'a async_nats::jetstream::Context,
    pub(super) config: &'a NatsConfig,
    pub(super) stream: stream::Stream,
    pub(super) stream_name: String,
    pub(super) topic: &'a str,
}

pub(super) async fn subscribe(
    target: Target<'_>,
    options: SubscribeOptions,
) -> Result<Subscription, EventError> {
    let Target {
        js,
        config,
        stream,
        stream_name,
        topic,
    } = target;
    let tenant = options
        .tenant
        .map_or_else(|| "*".to_owned(), |t| t.simple());
    let deliver_policy = match options.start {
        StartFrom::Earliest => DeliverPolicy::All,
        _ => DeliverPolicy::New,
    };
    let partitions = config.partitions.max(1);
    let scope = if tenant == "*" { "all" } else { &tenant };
    let member = uuid::Uuid::now_v7().simple().to_string();
    let mut configs = Vec::new();
    for partition in 0..partitions {
        let base = pull::Config {
            filter_subject: super::partition_subject(&config.prefix, partition, topic, &tenant),
            deliver_policy,
            // Cumulative acks: one ack settles a partition's batch.
            ack_policy: AckPolicy::All,
            ack_wait: config.ack_wait,
            // The holder keeps at most `BATCH` unacknowledged; twice that
            // leaves room for acks the server has not processed yet when
            // the next fetch arrives, so the limit never holds a fetch.
            max_ack_pending: i64::try_from(2 * BATCH).unwrap_or(i64::MAX),
            ..Default::default()
        };
        configs.push(match &options.group {
            Some(group) => pull::Config {
                durable_name: Some(format!("{}-p{partition}", group_base("o", group, scope))),
                ..base
            },
            None => pull::Config {
                inactive_threshold: Duration::from_secs(60),
                ..base
            },
        });
    }
    // Every partition's consumer at once: one round trip's wait, not one
    // per partition.
    let made = futures_util::future::join_all(configs.iter().zip(0u16..).map(
        |(consumer_config, partition)| {
            let stream = &stream;
            let group = options.group.as_deref();
            async move {
                match group {
                    Some(group) => {
                        let name = format!("{}-p{partition}", group_base("o", group, scope));
                        let old = format!("{}-p{partition}", group_base("g", group, scope));
                        durable_consumer(stream, &name, &old, consumer_config.clone()).await
                    }
                    None => stream
                        .create_consumer(consumer_config.clone())
                        .await
                        .map_err(|e| nats_error(true, e)),
                }
            }
        },
    ))
    .await;
    let mut consumers = Vec::new();
    for consumer in made {
        consumers.push(Mutex::new(consumer?));
    }
    let (leases, lease_ttl): (Option<Arc<dyn partitioned::Leases>>, Duration) = match &options.group
    {
        Some(group) => {
            let (store, ttl) = bucket(js, &config.prefix, config.lease_ttl).await?;
            let leases = KvLeases {
                store,
                base: format!("{stream_name}.{}", group_base("o", group, scope)),
                ttl,
            };
            (Some(Arc::new(leases)), ttl)
        }
        None => (None, config.lease_ttl),
    };
    let source = NatsSource {
        stream,
        private: options.group.is_none(),
        consumers,
        configs,
    };
    Ok(partitioned::subscribe(
        source,
        Settings {
            topic: Arc::from(topic),
            partitions,
            leases,
            member,
            lease_ttl,
            ack_wait: config.ack_wait,
        },
    ))
}

/// The group's batched durable for one partition; a new one starts after
/// the ack floor of the one-at-a-time durable of earlier versions, if
/// there is one (an ack policy cannot be changed in place).
async fn durable_consumer(
    stream: &stream::Stream,
    name: &str,
    old: &str,
    mut config: pull::Config,
) -> Result<PullConsumer, EventError> {
    if let Ok(consumer) = stream.get_consumer::<pull::Config>(name).await {
        return Ok(consumer);
    }
    if let Ok(mut previous) = stream.get_consumer::<pull::Config>(old).await
        && let Ok(info) = previous.info().await
    {
        config.deliver_policy = DeliverPolicy::ByStartSequence {
            start_sequence: info.ack_floor.stream_sequence + 1,
        };
    }
    stream
        .get_or_create_consumer(name, config)
        .await
        .map_err(|e| nats_error(true, e))
}

struct NatsSource {
    stream: stream::Stream,
    private: bool,
    consumers: Vec<Mutex<PullConsumer>>,
    configs: Vec<pull::Config>,
}

impl NatsSource {
    fn consumer(&self, partition: u16) -> Option<PullConsumer> {
        self.consumers
            .get(usize::from(partition))
            .map(|c| c.lock().unwrap_or_else(PoisonError::into_inner).clone())
    }

    /// Reads what `partition` has now, up to `max`, without waiting.
    async fn fetch_one(
        &self,
        partition: u16,
        max: usize,
    ) -> Result<Vec<Fetched<Message>>, EventError> {
        let Some(consumer) = self.consumer(partition) else {
            return Ok(Vec::new());
        };
        let mut messages = consumer
            .fetch()
            .max_messages(max)
            .messages()
            .await
            .map_err(|e| nats_error(true, e))?;
        let mut fetched = Vec::new();
        while let Some(message) = messages.next().await {
            let message = message.map_err(|e| nats_error(true, e))?;
            let Ok(info) = message.info() else {
                continue;
            };
            let position = (info.stream_sequence, 0);
            let attempt = u32::try_from(info.delivered).unwrap_or(u32::MAX);
            let event = match Event::from_json_slice(&message.payload) {
                Ok(event) => Some(event),
                Err(error) => {
                    // Not ours to handle: settled unseen so it does not loop.
                    tracing::warn!(%error, "NATS message is not a CloudEvent; skipped");
                    None
                }
            };
            fetched.push(Fetched {
                msg: message,
                position,
                attempt,
                event,
            });
        }
        Ok(fetched)
    }
}

#[async_trait]
impl PartitionSource for NatsSource {
    type Msg = Message;

    /// After a clean handover the previous holder nak'ed what it held, and
    /// JetStream redelivers those before anything newer. Otherwise its
    /// messages wait out their ack wait, and newer ones would overtake
    /// them: the durable is then made again, from its ack floor, so the
    /// partition resumes in order (their attempt numbers start again at 1).
    async fn take_over(
        &self,
        partition: u16,
        clean: bool,
    ) -> Result<Vec<Fetched<Message>>, EventError> {
        if clean || self.private {
            return Ok(Vec::new());
        }
        let Some(mut consumer) = self.consumer(partition) else {
            return Ok(Vec::new());
        };
        let info = consumer
            .info()
            .await
            .map_err(|e| nats_error(true, e))?
            .clone();
        if info.num_ack_pending == 0 {
            return Ok(Vec::new());
        }
        let Some(config) = self.configs.get(usize::from(partition)) else {
            return Ok(Vec::new());
        };
        let config = pull::Config {
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: info.ack_floor.stream_sequence + 1,
            },
            ..config.clone()
        };
        self.stream
            .delete_consumer(&info.name)
            .await
            .map_err(|e| nats_error(true, e))?;
        let fresh: PullConsumer = self
            .stream
            .create_consumer(config)
            .await
            .map_err(|e| nats_error(true, e))?;
        if let Some(slot) = self.consumers.get(usize::from(partition)) {
            *slot.lock().unwrap_or_else(PoisonError::into_inner) = fresh;
        }
        Ok(Vec::new())
    }

    /// Asks each partition for what it has (no waiting on the server, so
    /// no pull request outlives a handover); pauses `wait` if none had
    /// anything.
    async fn fetch(
        &self,
        wants: &[(u16, usize)],
        wait: Duration,
    ) -> Result<Vec<(u16, Vec<Fetched<Message>>)>, EventError> {
        let reads = wants.iter().map(|&(partition, max)| async move {
            (partition, self.fetch_one(partition, max).await)
        });
        let results = futures_util::future::join_all(reads).await;
        let mut batches = Vec::new();
        let mut last_error = None;
        for (partition, result) in results {
            match result {
                Ok(batch) => batches.push((partition, batch)),
                Err(error) => last_error = Some(error),
            }
        }
        if batches.iter().all(|(_, b)| b.is_empty()) {
            if let Some(error) = last_error {
                return Err(error);
            }
            tokio::time::sleep(wait).await;
        }
        Ok(batches)
    }

    /// One cumulative ack: the last settled message settles the rest.
    async fn ack(&self, _partition: u16, settled: Vec<Message>) -> Result<(), EventError> {
        match settled.last() {
            Some(last) => last.ack().await.map_err(|e| nats_error(true, e)),
            None => Ok(()),
        }
    }

    async fn give_back(&self, _partition: u16, held: Vec<Message>, delay: Option<Duration>) {
        for message in held {
            if let Err(error) = message.ack_with(AckKind::Nak(delay)).await {
                tracing::warn!(%error, "nak failed; the message returns after the ack wait");
            }
        }
    }

    async fn finish(&self) {
        if self.private {
            for consumer in &self.consumers {
                let name = consumer
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .cached_info()
                    .name
                    .clone();
                let _ = self.stream.delete_consumer(&name).await;
            }
        }
    }
}
