//! Quota grants in Redis: one hash per (tenant, name),
//! `<prefix>:grants:{<tenant>:<name length>:<name>}`, field the grant id,
//! value `<amount>:<expiry µs or empty>:<p<period> or n>` (the period
//! last, so whatever it contains the value parses). A grant is never
//! changed once written, so `HSETNX` and a read of the field tell a retry
//! from a conflict without a script.

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::DateTime;
use redis::AsyncCommands;
use saas_core::TenantId;
use uuid::Uuid;

use super::{RedisQuotaStore, bad_reply, micros, redis_error};
use crate::error::BillingError;
use crate::quota::grants::grant_conflict;
use crate::quota::{QuotaGrant, QuotaGrantStore};

impl RedisQuotaStore {
    fn grants_key(&self, tenant: TenantId, name: &str) -> Vec<u8> {
        let mut key = format!(
            "{}:grants:{{{}:{}:",
            self.config.prefix,
            tenant.as_uuid(),
            name.len()
        )
        .into_bytes();
        key.extend_from_slice(name.as_bytes());
        key.push(b'}');
        key
    }
}

fn encode(grant: &QuotaGrant) -> String {
    let expiry = grant
        .expires_at()
        .map(|at| micros(at).to_string())
        .unwrap_or_default();
    let period = grant
        .period()
        .map_or_else(|| "n".to_owned(), |p| format!("p{p}"));
    format!("{}:{expiry}:{period}", grant.amount())
}

fn decode(tenant: TenantId, name: &str, id: &str, value: &str) -> Result<QuotaGrant, BillingError> {
    let bad = || bad_reply("quota grants", value);
    let id = Uuid::parse_str(id).map_err(|_| bad_reply("quota grants", id))?;
    let mut parts = value.splitn(3, ':');
    let (Some(amount), Some(expiry), Some(period)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    let amount = amount.parse::<u64>().map_err(|_| bad())?;
    let expires_at = if expiry.is_empty() {
        None
    } else {
        let micros = expiry.parse::<i64>().map_err(|_| bad())?;
        Some(DateTime::from_timestamp_micros(micros).ok_or_else(bad)?)
    };
    let period = match period.split_at_checked(1) {
        Some(("p", label)) => Some(label.to_owned()),
        Some(("n", "")) => None,
        _ => return Err(bad()),
    };
    QuotaGrant::from_parts(id, tenant, name.to_owned(), amount, period, expires_at)
}

#[async_trait]
impl QuotaGrantStore for RedisQuotaStore {
    async fn add_grant(&self, grant: &QuotaGrant) -> Result<(), BillingError> {
        let key = self.grants_key(grant.tenant(), grant.name());
        let field = grant.id().to_string();
        let mut conn = self.conn.clone();
        let set: bool = conn
            .hset_nx(&key, &field, encode(grant))
            .await
            .map_err(redis_error)?;
        if set {
            return Ok(());
        }
        let stored: Option<String> = conn.hget(&key, &field).await.map_err(redis_error)?;
        match stored {
            Some(value) if decode(grant.tenant(), grant.name(), &field, &value)? == *grant => {
                Ok(())
            }
            _ => Err(grant_conflict(grant)),
        }
    }

    async fn grants(&self, tenant: TenantId, name: &str) -> Result<Vec<QuotaGrant>, BillingError> {
        let mut conn = self.conn.clone();
        let all: HashMap<String, String> = conn
            .hgetall(self.grants_key(tenant, name))
            .await
            .map_err(redis_error)?;
        all.iter()
            .map(|(id, value)| decode(tenant, name, id, value))
            .collect()
    }
}
