//! The Redis quota store (feature `redis`).
//!
//! Each [`QuotaKey`] is two Redis keys sharing a hash tag (so they live
//! in one slot): a hash with the used and reserved amounts and the live
//! reservations, and a sorted set of reservation expiries. Every
//! operation is one Lua script ([`scripts`]), atomic on the server, so
//! racing servers never grant past the limit; expired reservations are
//! given back by the scripts themselves, at the time the caller's clock
//! passes in.
//!
//! Key layout: `<prefix>:quota:{<tenant>:<name length>:<name>:<period>}:u`
//! (hash) and `…:r` (sorted set). The name's byte length makes the layout
//! unambiguous whatever the name and period contain, and the prefix may
//! not contain `{`, so two different keys never share Redis keys.
//!
//! Durability is the server's: with `appendonly yes` and `appendfsync
//! always` a granted unit survives a Redis crash; with `appendfsync
//! everysec`, up to a second of grants can be forgotten, and with
//! `appendonly no` (Redis's default) everything since the last snapshot.
//! A restart of an application server loses nothing.
//!
//! The connection is a single-node `MultiplexedConnection`; Redis Cluster
//! is not supported (the hash tag only keeps the layout ready for it).

mod grants;
mod scripts;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use redis::aio::MultiplexedConnection;
use saas_core::{SharedClock, SystemClock};
use uuid::Uuid;

use super::{
    Consumption, QuotaKey, QuotaStore, Reservation, ReserveOutcome, check_amount, expiry,
    give_back_too_much, reservation_not_found,
};
use crate::error::BillingError;
use scripts::SCRIPTS;

const BACKEND: &str = "redis";

/// The longest key prefix, in bytes.
pub const MAX_REDIS_PREFIX_LEN: usize = 64;

fn redis_error(error: redis::RedisError) -> BillingError {
    let retryable = error.is_io_error()
        || error.is_timeout()
        || error.is_connection_dropped()
        || error.is_connection_refusal();
    BillingError::Backend {
        backend: BACKEND,
        retryable,
        message: error.to_string(),
    }
}

fn bad_reply(what: &str, reply: &str) -> BillingError {
    BillingError::Backend {
        backend: BACKEND,
        retryable: false,
        message: format!(
            "unexpected reply {reply:?} to {what}: the keys under the quota prefix were \
             changed by something other than RedisQuotaStore; use a prefix of its own"
        ),
    }
}

/// Settings of a [`RedisQuotaStore`].
///
/// ```
/// use saas_billing::quota::RedisQuotaConfig;
///
/// let config = RedisQuotaConfig::default().with_prefix("app1:billing")?;
/// assert_eq!(config.prefix(), "app1:billing");
/// assert!(RedisQuotaConfig::default().with_prefix("no{braces}").is_err());
/// # Ok::<(), saas_billing::BillingError>(())
/// ```
#[derive(Clone)]
pub struct RedisQuotaConfig {
    prefix: String,
    clock: SharedClock,
    response_timeout: Duration,
}

impl Default for RedisQuotaConfig {
    fn default() -> Self {
        RedisQuotaConfig {
            prefix: "saas_billing".to_owned(),
            clock: Arc::new(SystemClock),
            response_timeout: Duration::from_secs(5),
        }
    }
}

impl RedisQuotaConfig {
    /// Sets the prefix of every key the store writes (default
    /// `saas_billing`). Give each application or test its own.
    ///
    /// # Errors
    /// `InvalidInput` unless it is 1 to [`MAX_REDIS_PREFIX_LEN`] bytes of
    /// ASCII letters, digits, `_`, `-`, `.` and `:`.
    pub fn with_prefix(mut self, prefix: &str) -> Result<RedisQuotaConfig, BillingError> {
        let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':');
        if prefix.is_empty() || prefix.len() > MAX_REDIS_PREFIX_LEN || !prefix.chars().all(allowed)
        {
            return Err(BillingError::InvalidInput {
                field: "redis quota prefix",
                reason: format!(
                    "{prefix:?} must be 1 to {MAX_REDIS_PREFIX_LEN} bytes of ASCII letters, \
                     digits, '_', '-', '.' or ':'"
                ),
            });
        }
        self.prefix = prefix.to_owned();
        Ok(self)
    }

    /// Sets the clock reservations expire by (default the system clock).
    /// Every server sharing the prefix should keep time alike: a server
    /// whose clock runs ahead reclaims reservations early.
    pub fn with_clock(mut self, clock: SharedClock) -> RedisQuotaConfig {
        self.clock = clock;
        self
    }

    /// Sets how long a call waits for the server's reply (default 5 s)
    /// before failing with a retryable `Backend` error.
    pub fn with_response_timeout(mut self, timeout: Duration) -> RedisQuotaConfig {
        self.response_timeout = timeout;
        self
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }
}

impl fmt::Debug for RedisQuotaConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisQuotaConfig")
            .field("prefix", &self.prefix)
            .field("response_timeout", &self.response_timeout)
            .finish_non_exhaustive()
    }
}

/// A [`QuotaStore`] in Redis (feature `redis`), exact across every server
/// using the same Redis and prefix. Clones share the connection, which
/// pipelines concurrent calls.
///
/// ```no_run
/// use saas_billing::quota::{QuotaKey, QuotaStore, RedisQuotaConfig, RedisQuotaStore};
/// use saas_billing::TenantId;
///
/// # async fn run(tenant: TenantId) -> Result<(), saas_billing::BillingError> {
/// let config = RedisQuotaConfig::default().with_prefix("app1")?;
/// let quotas = RedisQuotaStore::connect("redis://127.0.0.1:6379", config).await?;
/// let key = QuotaKey::new(tenant, "api_calls", "2026-12")?;
/// if !quotas.try_consume(&key, 1, 10_000).await?.is_granted() {
///     // answer 429
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisQuotaStore {
    conn: MultiplexedConnection,
    config: RedisQuotaConfig,
}

impl fmt::Debug for RedisQuotaStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisQuotaStore")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl RedisQuotaStore {
    /// Connects to the server at `url` (`redis://[:password@]host:port[/db]`).
    ///
    /// # Errors
    /// `InvalidInput` for a bad URL; a retryable `Backend` error if the
    /// server cannot be reached.
    pub async fn connect(
        url: &str,
        config: RedisQuotaConfig,
    ) -> Result<RedisQuotaStore, BillingError> {
        let client = redis::Client::open(url).map_err(|e| BillingError::InvalidInput {
            field: "redis url",
            reason: format!("{e}; expected redis://[:password@]host:port[/db]"),
        })?;
        let connection = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(5)))
            .set_response_timeout(Some(config.response_timeout));
        let conn = client
            .get_multiplexed_async_connection_with_config(&connection)
            .await
            .map_err(redis_error)?;
        Ok(RedisQuotaStore::with_connection(conn, config))
    }

    /// A store on an open connection.
    pub fn with_connection(
        conn: MultiplexedConnection,
        config: RedisQuotaConfig,
    ) -> RedisQuotaStore {
        RedisQuotaStore { conn, config }
    }

    /// The settings.
    pub fn config(&self) -> &RedisQuotaConfig {
        &self.config
    }

    /// The two Redis keys of `key`: its counter hash and its reservation
    /// expiries.
    fn keys(&self, key: &QuotaKey) -> [Vec<u8>; 2] {
        let mut base = format!(
            "{}:quota:{{{}:{}:",
            self.config.prefix,
            key.tenant().as_uuid(),
            key.name().len()
        )
        .into_bytes();
        base.extend_from_slice(key.name().as_bytes());
        base.push(b':');
        base.extend_from_slice(key.period().as_bytes());
        base.push(b'}');
        let mut hash = base.clone();
        hash.extend_from_slice(b":u");
        base.extend_from_slice(b":r");
        [hash, base]
    }

    fn now_micros(&self) -> i64 {
        micros(self.config.clock.now())
    }

    /// Runs `script` on `key` and reads `{flag, used}`.
    async fn flag_and_used(
        &self,
        what: &str,
        invocation: &mut redis::ScriptInvocation<'_>,
    ) -> Result<(bool, u64), BillingError> {
        let mut conn = self.conn.clone();
        let (flag, used): (i64, String) = invocation
            .invoke_async(&mut conn)
            .await
            .map_err(redis_error)?;
        let used = used.parse::<u64>().map_err(|_| bad_reply(what, &used))?;
        Ok((flag == 1, used))
    }

    async fn flag(
        &self,
        invocation: &mut redis::ScriptInvocation<'_>,
    ) -> Result<bool, BillingError> {
        let mut conn = self.conn.clone();
        let flag: i64 = invocation
            .invoke_async(&mut conn)
            .await
            .map_err(redis_error)?;
        Ok(flag == 1)
    }
}

/// Microseconds since the Unix epoch (every chrono date fits in an i64).
fn micros(at: DateTime<Utc>) -> i64 {
    at.timestamp_micros()
}

#[async_trait]
impl QuotaStore for RedisQuotaStore {
    async fn try_consume(
        &self,
        key: &QuotaKey,
        amount: u64,
        limit: u64,
    ) -> Result<Consumption, BillingError> {
        check_amount("quota amount", amount)?;
        check_amount("quota limit", limit)?;
        let [hash, expiries] = self.keys(key);
        let (granted, used) = self
            .flag_and_used(
                "try_consume",
                SCRIPTS
                    .try_consume
                    .key(hash)
                    .key(expiries)
                    .arg(self.now_micros())
                    .arg(amount)
                    .arg(limit),
            )
            .await?;
        let remaining = limit.saturating_sub(used);
        Ok(if granted {
            Consumption::Granted { remaining }
        } else {
            Consumption::Denied { remaining }
        })
    }

    async fn reserve(
        &self,
        key: &QuotaKey,
        amount: u64,
        limit: u64,
        ttl: Duration,
    ) -> Result<ReserveOutcome, BillingError> {
        check_amount("quota amount", amount)?;
        check_amount("quota limit", limit)?;
        let now = self.config.clock.now();
        let expires_at = expiry(now, ttl)?;
        let id = Uuid::new_v4();
        let [hash, expiries] = self.keys(key);
        let (reserved, used) = self
            .flag_and_used(
                "reserve",
                SCRIPTS
                    .reserve
                    .key(hash)
                    .key(expiries)
                    .arg(micros(now))
                    .arg(amount)
                    .arg(limit)
                    .arg(id.to_string())
                    .arg(micros(expires_at)),
            )
            .await?;
        Ok(if reserved {
            ReserveOutcome::Reserved(Reservation {
                id,
                key: key.clone(),
                amount,
                expires_at,
            })
        } else {
            ReserveOutcome::Denied {
                remaining: limit.saturating_sub(used),
            }
        })
    }

    async fn commit(&self, reservation: &Reservation) -> Result<(), BillingError> {
        let [hash, expiries] = self.keys(&reservation.key);
        let committed = self
            .flag(
                SCRIPTS
                    .commit
                    .key(hash)
                    .key(expiries)
                    .arg(self.now_micros())
                    .arg(reservation.id.to_string()),
            )
            .await?;
        if committed {
            Ok(())
        } else {
            Err(reservation_not_found(reservation))
        }
    }

    async fn release(&self, reservation: &Reservation) -> Result<(), BillingError> {
        let [hash, expiries] = self.keys(&reservation.key);
        self.flag(
            SCRIPTS
                .release
                .key(hash)
                .key(expiries)
                .arg(reservation.id.to_string()),
        )
        .await?;
        Ok(())
    }

    async fn give_back(&self, key: &QuotaKey, amount: u64) -> Result<(), BillingError> {
        check_amount("give_back amount", amount)?;
        let [hash, expiries] = self.keys(key);
        let given = self
            .flag(
                SCRIPTS
                    .give_back
                    .key(hash)
                    .key(expiries)
                    .arg(self.now_micros())
                    .arg(amount),
            )
            .await?;
        if given {
            Ok(())
        } else {
            Err(give_back_too_much(key, amount))
        }
    }

    async fn used(&self, key: &QuotaKey) -> Result<u64, BillingError> {
        let [hash, expiries] = self.keys(key);
        let mut conn = self.conn.clone();
        let used: String = SCRIPTS
            .used
            .key(hash)
            .key(expiries)
            .arg(self.now_micros())
            .invoke_async(&mut conn)
            .await
            .map_err(redis_error)?;
        used.parse::<u64>().map_err(|_| bad_reply("used", &used))
    }
}
