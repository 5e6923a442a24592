//! Group membership (a sorted set scored by expiry) and partition leases
//! (keys set with `NX PX`, renewed and released by scripts that check the
//! holder).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use redis::aio::MultiplexedConnection;

use super::redis_error;
use crate::error::EventError;
use crate::partitioned::{Hold, Leases};

/// The value of a lease released after its entries were left for the next
/// holder.
const FREE: &str = "-free-";

/// Claims a free lease or renews one held by `ARGV[1]`: `2` claimed after
/// a clean release, `3` claimed otherwise, `1` renewed, `0` taken.
const HOLD: &str = r"
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if holder and holder ~= ARGV[3] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
if holder then return 2 end
return 3
";

/// Frees a lease `ARGV[1]` holds: marked free (`ARGV[3]`) for `PX`
/// `ARGV[2]`, or deleted when `ARGV[3]` is empty.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[3] == '' then return redis.call('DEL', KEYS[1]) end
redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[2])
return 1
";

pub(super) struct RedisLeases {
    pub(super) conn: MultiplexedConnection,
    /// `<prefix>:<topic>:<group>`: the records' key prefix.
    pub(super) base: String,
    pub(super) ttl: Duration,
}

impl RedisLeases {
    fn ttl_ms(&self) -> u64 {
        u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX)
    }

    fn members_key(&self) -> String {
        format!("{}:members", self.base)
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[async_trait]
impl Leases for RedisLeases {
    async fn heartbeat(&self, member: &str) -> Result<Vec<String>, EventError> {
        let key = self.members_key();
        let now = now_ms();
        let mut conn = self.conn.clone();
        let (members,): (Vec<String>,) = redis::pipe()
            .cmd("ZREMRANGEBYSCORE")
            .arg(&key)
            .arg("-inf")
            .arg(now)
            .ignore()
            .cmd("ZADD")
            .arg(&key)
            .arg(now.saturating_add(self.ttl_ms()))
            .arg(member)
            .ignore()
            .cmd("PEXPIRE")
            .arg(&key)
            .arg(self.ttl_ms())
            .ignore()
            .cmd("ZRANGE")
            .arg(&key)
            .arg(0)
            .arg(-1)
            .query_async(&mut conn)
            .await
            .map_err(redis_error)?;
        let mut members = members;
        members.sort();
        Ok(members)
    }

    async fn leave(&self, member: &str) -> Result<(), EventError> {
        let mut conn = self.conn.clone();
        redis::cmd("ZREM")
            .arg(self.members_key())
            .arg(member)
            .query_async::<i64>(&mut conn)
            .await
            .map(|_| ())
            .map_err(redis_error)
    }

    async fn hold(&self, partition: u16, member: &str) -> Result<Hold, EventError> {
        let mut conn = self.conn.clone();
        let found: i64 = redis::cmd("EVAL")
            .arg(HOLD)
            .arg(1)
            .arg(format!("{}:lease:p{partition}", self.base))
            .arg(member)
            .arg(self.ttl_ms())
            .arg(FREE)
            .query_async(&mut conn)
            .await
            .map_err(redis_error)?;
        Ok(match found {
            1 => Hold::Renewed,
            2 => Hold::Claimed { clean: true },
            3 => Hold::Claimed { clean: false },
            _ => Hold::Taken,
        })
    }

    async fn release(&self, partition: u16, member: &str, clean: bool) -> Result<(), EventError> {
        let mut conn = self.conn.clone();
        redis::cmd("EVAL")
            .arg(RELEASE)
            .arg(1)
            .arg(format!("{}:lease:p{partition}", self.base))
            .arg(member)
            .arg(self.ttl_ms())
            .arg(if clean { FREE } else { "" })
            .query_async::<i64>(&mut conn)
            .await
            .map(|_| ())
            .map_err(redis_error)
    }
}
