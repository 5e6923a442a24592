//! Consumer groups behind [`Subscription`]s: each partition's stream read
//! in batches by the member holding its lease.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redis::Value;
use redis::aio::MultiplexedConnection;
use redis::streams::{StreamClaimReply, StreamId, StreamReadReply};
use tokio::sync::Mutex as AsyncMutex;

use super::leases::RedisLeases;
use super::{RedisConfig, redis_error, script};
use crate::delivery::Subscription;
use crate::envelope::Event;
use crate::error::EventError;
use crate::partitioned::{self, BATCH, Fetched, PartitionSource, Position, Settings};
use crate::traits::{StartFrom, SubscribeOptions};

pub(super) struct Target {
    pub(super) config: RedisConfig,
    /// Blocking reads get a connection of their own.
    pub(super) reader: MultiplexedConnection,
    pub(super) conn: MultiplexedConnection,
    /// One stream per partition.
    pub(super) keys: Vec<String>,
    /// `<prefix>:<topic>`.
    pub(super) base: String,
}

pub(super) async fn subscribe(
    target: Target,
    topic: &str,
    options: SubscribeOptions,
) -> Result<Subscription, EventError> {
    let Target {
        config,
        reader,
        mut conn,
        keys,
        base,
    } = target;
    let tenant = options.tenant.map(|t| t.to_string());
    let (group, start, private) = match &options.group {
        Some(name) => {
            let scope = tenant.as_deref().unwrap_or("all");
            let start = match options.start {
                StartFrom::Earliest => "0",
                _ => "$",
            };
            (format!("g:{name}:{scope}"), start, false)
        }
        None => {
            let id = uuid::Uuid::now_v7().simple();
            (format!("p:{id}"), "$", true)
        }
    };
    redis::cmd("EVAL")
        .arg(script::CREATE_GROUP)
        .arg(keys.len())
        .arg(&keys)
        .arg(&group)
        .arg(start)
        .query_async::<i64>(&mut conn)
        .await
        .map_err(redis_error)?;
    let member = uuid::Uuid::now_v7().simple().to_string();
    let leases: Option<Arc<dyn partitioned::Leases>> = if private {
        None
    } else {
        Some(Arc::new(RedisLeases {
            conn: conn.clone(),
            base: format!("{base}:{group}"),
            ttl: config.lease_ttl,
        }))
    };
    let partitions = u16::try_from(keys.len()).unwrap_or(u16::MAX);
    let source = RedisSource {
        keys,
        group,
        member: member.clone(),
        reader: AsyncMutex::new(reader),
        conn,
        tenant: tenant.unwrap_or_default(),
        private,
    };
    Ok(partitioned::subscribe(
        source,
        Settings {
            topic: Arc::from(topic),
            partitions,
            leases,
            member,
            lease_ttl: config.lease_ttl,
            ack_wait: config.ack_wait,
        },
    ))
}

struct RedisSource {
    keys: Vec<String>,
    group: String,
    /// The consumer name in the group: the member id.
    member: String,
    reader: AsyncMutex<MultiplexedConnection>,
    conn: MultiplexedConnection,
    /// The tenant filter, `""` for none.
    tenant: String,
    private: bool,
}

/// The `(milliseconds, sequence)` of an entry id.
fn position(id: &str) -> Position {
    let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
    (ms.parse().unwrap_or(0), seq.parse().unwrap_or(0))
}

/// Entries are ids, settled by `XACK` on their partition's stream.
#[derive(Clone)]
pub(super) struct EntryId(String);

impl RedisSource {
    fn key(&self, partition: u16) -> Option<&String> {
        self.keys.get(usize::from(partition))
    }

    /// The event of an entry, if it is one for this subscription.
    fn event_of(&self, entry: &StreamId) -> Option<Event> {
        if !self.tenant.is_empty() {
            let tenant: Option<String> = entry.get("tenant");
            if tenant.as_deref() != Some(self.tenant.as_str()) {
                return None;
            }
        }
        let body: Vec<u8> = entry.get("event")?;
        match Event::from_json_slice(&body) {
            Ok(event) => Some(event),
            Err(error) => {
                tracing::warn!(%error, id = entry.id, "Redis entry is not a CloudEvent; skipped");
                None
            }
        }
    }

    fn fetched(&self, entry: &StreamId, attempt: u32) -> Fetched<EntryId> {
        Fetched {
            msg: EntryId(entry.id.clone()),
            position: position(&entry.id),
            attempt,
            event: self.event_of(entry),
        }
    }

    async fn xack(&self, key: &str, ids: &[String]) -> Result<(), EventError> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn.clone();
        redis::cmd("XACK")
            .arg(key)
            .arg(&self.group)
            .arg(ids)
            .query_async::<i64>(&mut conn)
            .await
            .map(|_| ())
            .map_err(redis_error)
    }
}

#[async_trait]
impl PartitionSource for RedisSource {
    type Msg = EntryId;

    /// Claims every entry of the partition still pending in the group (a
    /// previous holder's, dead or released), oldest first: they come
    /// before anything new, each as its next attempt.
    async fn take_over(
        &self,
        partition: u16,
        _clean: bool,
    ) -> Result<Vec<Fetched<EntryId>>, EventError> {
        let Some(key) = self.key(partition) else {
            return Ok(Vec::new());
        };
        let mut conn = self.conn.clone();
        let mut taken = Vec::new();
        let mut from = "-".to_owned();
        loop {
            let pending: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
                .arg(key)
                .arg(&self.group)
                .arg(&from)
                .arg("+")
                .arg(BATCH)
                .query_async(&mut conn)
                .await
                .map_err(redis_error)?;
            let Some((last, ..)) = pending.last() else {
                break;
            };
            from = format!("({last}");
            let ids: Vec<&String> = pending.iter().map(|(id, ..)| id).collect();
            let claimed: StreamClaimReply = redis::cmd("XCLAIM")
                .arg(key)
                .arg(&self.group)
                .arg(&self.member)
                .arg(0)
                .arg(&ids)
                .query_async(&mut conn)
                .await
                .map_err(redis_error)?;
            let mut gone = Vec::new();
            for (id, _, _, count) in &pending {
                match claimed.ids.iter().find(|entry| &entry.id == id) {
                    Some(entry) => {
                        let attempt = u32::try_from(count + 1).unwrap_or(u32::MAX);
                        taken.push(self.fetched(entry, attempt));
                    }
                    // Trimmed away while pending: settle it.
                    None => gone.push(id.clone()),
                }
            }
            self.xack(key, &gone).await?;
            if pending.len() < BATCH {
                break;
            }
        }
        Ok(taken)
    }

    /// One `XREADGROUP` over every partition wanted, blocking up to `wait`;
    /// one `COUNT` (the largest wanted) serves all, as Redis keeps no limit
    /// of its own that a few more could break.
    async fn fetch(
        &self,
        wants: &[(u16, usize)],
        wait: Duration,
    ) -> Result<Vec<(u16, Vec<Fetched<EntryId>>)>, EventError> {
        let count = wants.iter().map(|&(_, n)| n).max().unwrap_or(BATCH).max(1);
        let keys: Vec<(u16, &String)> = wants
            .iter()
            .filter_map(|&(partition, _)| Some((partition, self.key(partition)?)))
            .collect();
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let block = u64::try_from(wait.as_millis()).unwrap_or(100).max(1);
        let mut call = redis::cmd("XREADGROUP");
        call.arg("GROUP")
            .arg(&self.group)
            .arg(&self.member)
            .arg("COUNT")
            .arg(count)
            .arg("BLOCK")
            .arg(block)
            .arg("STREAMS");
        for (_, key) in &keys {
            call.arg(*key);
        }
        for _ in &keys {
            call.arg(">");
        }
        let reply: Value = {
            let mut reader = self.reader.lock().await;
            call.query_async(&mut *reader).await.map_err(redis_error)?
        };
        if matches!(reply, Value::Nil) {
            return Ok(Vec::new());
        }
        let reply: StreamReadReply =
            redis::from_redis_value(reply).map_err(|e| EventError::Backend {
                backend: "redis",
                retryable: false,
                source: Box::new(e),
            })?;
        let mut batches = Vec::new();
        for stream in reply.keys {
            let Some(&(partition, _)) = keys.iter().find(|(_, key)| **key == stream.key) else {
                continue;
            };
            let fetched = stream.ids.iter().map(|e| self.fetched(e, 1)).collect();
            batches.push((partition, fetched));
        }
        Ok(batches)
    }

    /// One `XACK` with every settled id.
    async fn ack(&self, partition: u16, settled: Vec<EntryId>) -> Result<(), EventError> {
        let Some(key) = self.key(partition) else {
            return Ok(());
        };
        let ids: Vec<String> = settled.into_iter().map(|EntryId(id)| id).collect();
        self.xack(key, &ids).await
    }

    /// Nothing to send: the entries stay pending in the group, and the
    /// partition's next holder claims them first. (A delay asked for by a
    /// delivery settled after its partition moved is not kept.)
    async fn give_back(&self, _partition: u16, _held: Vec<EntryId>, _delay: Option<Duration>) {}

    async fn finish(&self) {
        if !self.private {
            return;
        }
        let mut pipe = redis::pipe();
        for key in &self.keys {
            pipe.cmd("XGROUP")
                .arg("DESTROY")
                .arg(key)
                .arg(&self.group)
                .ignore();
        }
        let mut conn = self.conn.clone();
        if let Err(error) = pipe.query_async::<()>(&mut conn).await {
            tracing::warn!(%error, "destroying a private group failed");
        }
    }
}
