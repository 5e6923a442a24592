//! Consumer groups behind [`Subscription`]s: reading, reclaiming, settling.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::MultiplexedConnection;
use redis::streams::{StreamAutoClaimReply, StreamId, StreamPendingCountReply, StreamReadReply};

use super::{PARKING, RedisConfig, redis_error};
use crate::delivery::{Acknowledger, Delivery, DeliveryStream, Subscription};
use crate::envelope::Event;
use crate::error::EventError;
use crate::traits::{StartFrom, SubscribeOptions};

/// How long one blocking read waits before looking for reclaimable entries.
const BLOCK_MS: u64 = 100;

pub(super) async fn subscribe(
    config: RedisConfig,
    reader: MultiplexedConnection,
    mut settle: MultiplexedConnection,
    key: String,
    topic: &str,
    options: SubscribeOptions,
) -> Result<Subscription, EventError> {
    let tenant = options.tenant.map(|t| t.to_string());
    let (group, start, count, private) = match &options.group {
        Some(name) => {
            let scope = tenant.as_deref().unwrap_or("all");
            let start = match options.start {
                StartFrom::Earliest => "0",
                _ => "$",
            };
            (
                format!("g:{name}:{scope}"),
                start,
                config.group_read_count,
                false,
            )
        }
        None => {
            let id = uuid::Uuid::now_v7().simple();
            (format!("p:{id}"), "$", config.private_read_count, true)
        }
    };
    let created = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&key)
        .arg(&group)
        .arg(start)
        .arg("MKSTREAM")
        .query_async::<()>(&mut settle)
        .await;
    match created {
        // An existing group resumes where it was.
        Err(e) if e.code() == Some("BUSYGROUP") => {}
        other => other.map_err(redis_error)?,
    }
    Ok(Subscription::new(Box::new(RedisStream {
        topic: Arc::from(topic),
        target: Arc::new(Target { key, group }),
        consumer: uuid::Uuid::now_v7().simple().to_string(),
        reader,
        settle,
        tenant,
        count: count.max(1),
        ack_wait: config.ack_wait,
        buffer: VecDeque::new(),
        private,
        closed: false,
    })))
}

#[derive(Debug)]
struct Target {
    key: String,
    group: String,
}

struct RedisStream {
    topic: Arc<str>,
    target: Arc<Target>,
    consumer: String,
    reader: MultiplexedConnection,
    settle: MultiplexedConnection,
    tenant: Option<String>,
    count: usize,
    ack_wait: Duration,
    buffer: VecDeque<(StreamId, u32)>,
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

impl RedisStream {
    async fn ack_id(&mut self, id: &str) -> Result<(), EventError> {
        redis::cmd("XACK")
            .arg(&self.target.key)
            .arg(&self.target.group)
            .arg(id)
            .query_async::<i64>(&mut self.settle)
            .await
            .map(|_| ())
            .map_err(redis_error)
    }

    /// Takes over entries idle for longer than the ack wait (a dead
    /// consumer's, or nacked ones parked back-dated).
    async fn reclaim(&mut self) -> Result<(), EventError> {
        let min_idle = u64::try_from(self.ack_wait.as_millis()).unwrap_or(u64::MAX);
        let reply: StreamAutoClaimReply = redis::cmd("XAUTOCLAIM")
            .arg(&self.target.key)
            .arg(&self.target.group)
            .arg(&self.consumer)
            .arg(min_idle)
            .arg("0-0")
            .arg("COUNT")
            .arg(self.count)
            .query_async(&mut self.settle)
            .await
            .map_err(redis_error)?;
        for entry in reply.claimed {
            let pending: StreamPendingCountReply = redis::cmd("XPENDING")
                .arg(&self.target.key)
                .arg(&self.target.group)
                .arg(&entry.id)
                .arg(&entry.id)
                .arg(1)
                .query_async(&mut self.settle)
                .await
                .map_err(redis_error)?;
            let attempt = pending
                .ids
                .first()
                .map_or(2, |p| u32::try_from(p.times_delivered).unwrap_or(u32::MAX));
            self.buffer.push_back((entry, attempt));
        }
        Ok(())
    }

    async fn read_new(&mut self) -> Result<(), EventError> {
        let reply: Option<StreamReadReply> = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(&self.target.group)
            .arg(&self.consumer)
            .arg("COUNT")
            .arg(self.count)
            .arg("BLOCK")
            .arg(BLOCK_MS)
            .arg("STREAMS")
            .arg(&self.target.key)
            .arg(">")
            .query_async(&mut self.reader)
            .await
            .map_err(redis_error)?;
        for key in reply.map(|r| r.keys).unwrap_or_default() {
            self.buffer.extend(key.ids.into_iter().map(|id| (id, 1)));
        }
        Ok(())
    }
}

#[async_trait]
impl DeliveryStream for RedisStream {
    async fn next_delivery(&mut self) -> Option<Result<Delivery, EventError>> {
        loop {
            if self.closed {
                return None;
            }
            let Some((entry, attempt)) = self.buffer.pop_front() else {
                if let Err(error) = self.reclaim().await {
                    return Some(Err(error));
                }
                if self.buffer.is_empty()
                    && let Err(error) = self.read_new().await
                {
                    return Some(Err(error));
                }
                continue;
            };
            let tenant: String = entry.get("tenant").unwrap_or_default();
            if self.tenant.as_ref().is_some_and(|want| *want != tenant) {
                // Not this group's tenant: settled for it, never handed out.
                if let Err(error) = self.ack_id(&entry.id).await {
                    return Some(Err(error));
                }
                continue;
            }
            let body: Vec<u8> = entry.get("event").unwrap_or_default();
            match Event::from_json_slice(&body) {
                Ok(event) => {
                    let acker = RedisAcker {
                        conn: self.settle.clone(),
                        target: Arc::clone(&self.target),
                        id: entry.id,
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
                    tracing::warn!(%error, id = entry.id, "Redis entry is not a CloudEvent; acked");
                    if let Err(error) = self.ack_id(&entry.id).await {
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
    redis::cmd("XGROUP")
        .arg("DESTROY")
        .arg(&target.key)
        .arg(&target.group)
        .query_async::<i64>(conn)
        .await
        .map(|_| ())
        .map_err(redis_error)
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
    id: String,
    attempt: u32,
    ack_wait: Duration,
}

impl std::fmt::Debug for RedisAcker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisAcker")
            .field("target", &self.target)
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl RedisAcker {
    /// Parks the entry under a consumer nobody reads, back-dated so that
    /// `XAUTOCLAIM` with the ack wait picks it up after `delay`.
    async fn park(mut self, delay: Duration) -> Result<(), EventError> {
        let idle = self.ack_wait.saturating_sub(delay);
        redis::cmd("XCLAIM")
            .arg(&self.target.key)
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
            .arg(&self.target.key)
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
