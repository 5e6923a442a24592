//! Consumer groups behind [`Subscription`]s: taking entries one partition
//! at a time, blocking while there is nothing to take, settling.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redis::Value;
use redis::aio::MultiplexedConnection;

use super::{PARKING, RedisConfig, redis_error, script};
use crate::delivery::{Acknowledger, Delivery, DeliveryStream, Subscription};
use crate::envelope::Event;
use crate::error::EventError;
use crate::traits::{StartFrom, SubscribeOptions};

/// How long one blocking wait lasts before looking again (for entries
/// that become ready without a new one arriving: a partition settled by
/// another consumer, a nack's delay or a dead consumer's ack wait over).
const BLOCK_MS: u64 = 100;

/// Entries of other tenants a tenant-scoped group skips per script call.
const SKIP_PER_CALL: usize = 256;

pub(super) async fn subscribe(
    config: RedisConfig,
    reader: MultiplexedConnection,
    mut settle: MultiplexedConnection,
    keys: Vec<String>,
    topic: &str,
    options: SubscribeOptions,
) -> Result<Subscription, EventError> {
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
        .query_async::<i64>(&mut settle)
        .await
        .map_err(redis_error)?;
    Ok(Subscription::new(Box::new(RedisStream {
        topic: Arc::from(topic),
        target: Arc::new(Target { keys, group }),
        consumer: uuid::Uuid::now_v7().simple().to_string(),
        reader,
        settle,
        tenant: tenant.unwrap_or_default(),
        ack_wait: config.ack_wait,
        next_partition: 0,
        taking: None,
        private,
        closed: false,
    })))
}

#[derive(Debug)]
struct Target {
    /// One stream per partition.
    keys: Vec<String>,
    group: String,
}

struct RedisStream {
    topic: Arc<str>,
    target: Arc<Target>,
    consumer: String,
    reader: MultiplexedConnection,
    settle: MultiplexedConnection,
    /// The tenant filter, `""` for none.
    tenant: String,
    ack_wait: Duration,
    /// Where the next look starts, so every partition gets its turn.
    next_partition: usize,
    /// A take script call in progress, kept across cancelled calls.
    taking: Option<TakeCall>,
    private: bool,
    closed: bool,
}

impl std::fmt::Debug for RedisStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStream")
            .field("target", &self.target)
            .field("consumer", &self.consumer)
            .finish_non_exhaustive()
    }
}

/// A take script call: the partitions it was given, and its reply.
type TakeCall = Pin<Box<dyn Future<Output = (Vec<String>, Result<Vec<Value>, EventError>)> + Send>>;

/// What one call of the take script found.
enum Taken {
    Entry {
        key: String,
        id: String,
        body: Vec<u8>,
        attempt: u32,
    },
    Again,
    /// Nothing to take: the partitions looked at, and the newest id of each.
    Wait {
        keys: Vec<String>,
        newest: Vec<String>,
    },
}

fn bad_reply(what: &str) -> EventError {
    EventError::Backend {
        backend: "redis",
        retryable: false,
        source: format!("unexpected reply from the take script: {what}").into(),
    }
}

fn parse<T: redis::FromRedisValue>(value: Value) -> Result<T, EventError> {
    redis::from_redis_value(value).map_err(|e| EventError::Backend {
        backend: "redis",
        retryable: false,
        source: Box::new(e),
    })
}

impl RedisStream {
    async fn ack_id(&mut self, key: &str, id: &str) -> Result<(), EventError> {
        redis::cmd("XACK")
            .arg(key)
            .arg(&self.target.group)
            .arg(id)
            .query_async::<i64>(&mut self.settle)
            .await
            .map(|_| ())
            .map_err(redis_error)
    }

    /// The partitions in the order to look at them this time.
    fn rotation(&mut self) -> Vec<String> {
        let keys = &self.target.keys;
        let start = self.next_partition % keys.len().max(1);
        self.next_partition = start + 1;
        keys[start..]
            .iter()
            .chain(&keys[..start])
            .cloned()
            .collect()
    }

    /// Runs the take script. The call is kept in `self` while awaited: a
    /// cancelled `next_delivery` must not drop an entry the script already
    /// claimed (its partition would wait the ack wait), so the next call
    /// finishes it.
    async fn take(&mut self) -> Result<Taken, EventError> {
        if self.taking.is_none() {
            let keys = self.rotation();
            let min_idle = u64::try_from(self.ack_wait.as_millis()).unwrap_or(u64::MAX);
            let mut call = redis::cmd("EVAL");
            call.arg(script::TAKE)
                .arg(keys.len())
                .arg(&keys)
                .arg(&self.target.group)
                .arg(&self.consumer)
                .arg(min_idle)
                .arg(&self.tenant)
                .arg(SKIP_PER_CALL);
            let mut conn = self.settle.clone();
            self.taking = Some(Box::pin(async move {
                let reply = call.query_async(&mut conn).await.map_err(redis_error);
                (keys, reply)
            }));
        }
        let (keys, reply) = match self.taking.as_mut() {
            Some(taking) => taking.await,
            None => return Err(bad_reply("no call in progress")),
        };
        self.taking = None;
        let mut reply = reply?.into_iter();
        let index: i64 = match reply.next() {
            Some(value) => parse(value)?,
            None => return Err(bad_reply("empty")),
        };
        match index {
            0 => Ok(Taken::Again),
            -1 => {
                let ids: Vec<String> = reply.map(parse).collect::<Result<_, _>>()?;
                Ok(Taken::Wait { keys, newest: ids })
            }
            index => {
                let key = usize::try_from(index - 1)
                    .ok()
                    .and_then(|i| keys.get(i))
                    .ok_or_else(|| bad_reply("partition index out of range"))?
                    .clone();
                let (Some(id), Some(fields), Some(attempt)) =
                    (reply.next(), reply.next(), reply.next())
                else {
                    return Err(bad_reply("short entry"));
                };
                let id: String = parse(id)?;
                let fields: Vec<Vec<u8>> = parse(fields)?;
                let attempt: i64 = parse(attempt)?;
                let body = fields
                    .chunks(2)
                    .find(|pair| pair.first().is_some_and(|name| name == b"event"))
                    .and_then(|pair| pair.get(1).cloned())
                    .unwrap_or_default();
                Ok(Taken::Entry {
                    key,
                    id,
                    body,
                    attempt: u32::try_from(attempt.max(1)).unwrap_or(u32::MAX),
                })
            }
        }
    }

    /// Blocks until one of `keys` gets an entry newer than its `newest`
    /// id, or for [`BLOCK_MS`]. Reads without a group, so nothing is
    /// claimed.
    async fn wait(&mut self, keys: &[String], newest: &[String]) -> Result<(), EventError> {
        redis::cmd("XREAD")
            .arg("COUNT")
            .arg(1)
            .arg("BLOCK")
            .arg(BLOCK_MS)
            .arg("STREAMS")
            .arg(keys)
            .arg(newest)
            .query_async::<Value>(&mut self.reader)
            .await
            .map(|_| ())
            .map_err(redis_error)
    }
}

#[async_trait]
impl DeliveryStream for RedisStream {
    async fn next_delivery(&mut self) -> Option<Result<Delivery, EventError>> {
        loop {
            if self.closed {
                return None;
            }
            let (key, id, body, attempt) = match self.take().await {
                Ok(Taken::Entry {
                    key,
                    id,
                    body,
                    attempt,
                }) => (key, id, body, attempt),
                Ok(Taken::Again) => continue,
                Ok(Taken::Wait { keys, newest }) => {
                    if let Err(error) = self.wait(&keys, &newest).await {
                        return Some(Err(error));
                    }
                    continue;
                }
                Err(error) => return Some(Err(error)),
            };
            match Event::from_json_slice(&body) {
                Ok(event) => {
                    let acker = RedisAcker {
                        conn: self.settle.clone(),
                        target: Arc::clone(&self.target),
                        key,
                        id,
                        attempt,
                        ack_wait: self.ack_wait,
                    };
                    return Some(Ok(Delivery::new(
                        Arc::new(event),
                        Arc::clone(&self.topic),
                        attempt,
                        Box::new(acker),
                    )));
                }
                Err(error) => {
                    tracing::warn!(%error, id, "Redis entry is not a CloudEvent; acked");
                    if let Err(error) = self.ack_id(&key, &id).await {
                        return Some(Err(error));
                    }
                }
            }
        }
    }

    async fn close(&mut self) {
        self.closed = true;
        if self.private {
            self.private = false;
            let _ = destroy(&mut self.settle, &self.target).await;
        }
    }
}

async fn destroy(conn: &mut MultiplexedConnection, target: &Target) -> Result<(), EventError> {
    let mut pipe = redis::pipe();
    for key in &target.keys {
        pipe.cmd("XGROUP")
            .arg("DESTROY")
            .arg(key)
            .arg(&target.group)
            .ignore();
    }
    pipe.query_async::<()>(conn).await.map_err(redis_error)
}

impl Drop for RedisStream {
    fn drop(&mut self) {
        if self.private
            && let Ok(handle) = tokio::runtime::Handle::try_current()
        {
            let mut conn = self.settle.clone();
            let target = Arc::clone(&self.target);
            handle.spawn(async move {
                let _ = destroy(&mut conn, &target).await;
            });
        }
    }
}

struct RedisAcker {
    conn: MultiplexedConnection,
    target: Arc<Target>,
    /// The partition's stream.
    key: String,
    id: String,
    attempt: u32,
    ack_wait: Duration,
}

impl std::fmt::Debug for RedisAcker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisAcker")
            .field("key", &self.key)
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl RedisAcker {
    /// Parks the entry under a consumer nobody reads, back-dated so that
    /// the take script's `XAUTOCLAIM` with the ack wait picks it up after
    /// `delay`. It stays pending meanwhile, so its partition waits.
    async fn park(mut self, delay: Duration) -> Result<(), EventError> {
        let idle = self.ack_wait.saturating_sub(delay);
        redis::cmd("XCLAIM")
            .arg(&self.key)
            .arg(&self.target.group)
            .arg(PARKING)
            .arg(0)
            .arg(&self.id)
            .arg("IDLE")
            .arg(u64::try_from(idle.as_millis()).unwrap_or(u64::MAX))
            .arg("RETRYCOUNT")
            .arg(self.attempt)
            .arg("JUSTID")
            .query_async::<Vec<String>>(&mut self.conn)
            .await
            .map(|_| ())
            .map_err(redis_error)
    }
}

#[async_trait]
impl Acknowledger for RedisAcker {
    async fn ack(mut self: Box<Self>) -> Result<(), EventError> {
        redis::cmd("XACK")
            .arg(&self.key)
            .arg(&self.target.group)
            .arg(&self.id)
            .query_async::<i64>(&mut self.conn)
            .await
            .map(|_| ())
            .map_err(redis_error)
    }

    async fn nack(self: Box<Self>, delay: Option<Duration>) -> Result<(), EventError> {
        let delay = delay.unwrap_or_default();
        if delay > self.ack_wait {
            return Err(EventError::Unsupported {
                operation: "a nack delay longer than the Redis backend's ack wait",
            });
        }
        self.park(delay).await
    }

    fn abandon(self: Box<Self>) {
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let _ = self.park(Duration::ZERO).await;
            });
        }
    }
}
