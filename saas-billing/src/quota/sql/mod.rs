//! The quota logic of the PostgreSQL and SQLite stores, written once over
//! a [`QuotaDialect`]: reclaim of expired reservations, grants, reserve,
//! commit, release, give back and reads.
//!
//! Both backends keep the same two tables: `billing_quota_usage`, one row
//! per key (tenant, name, period) with its `used` amount, live reservations
//! included; `billing_quota_reservations`, the live reservations. What
//! differs is how concurrent operations on a key are serialized, which
//! each dialect states: PostgreSQL runs every statement on the caller's
//! connection as it comes, each grant one `INSERT … ON CONFLICT … WHERE …
//! RETURNING` serialized by the key's row lock, and each multi-row change
//! one statement (so it happens exactly once); SQLite runs every operation
//! but a commit in one `BEGIN IMMEDIATE` transaction (a savepoint inside
//! the caller's), which SQLite serializes across connections and
//! processes.
//!
//! Every statement binds the key as `$1` (tenant), `$2` (name), `$3`
//! (period), then its own parameters from `$4`.

use std::time::Duration;

use saas_core::SharedClock;
use sqlx::Connection;
use uuid::Uuid;

use super::{
    Consumption, QuotaKey, Reservation, ReserveOutcome, check_amount, expiry, give_back_too_much,
    reservation_not_found,
};
use crate::error::BillingError;
use crate::store::sql::dialect::Param;

mod dialect;
mod methods;

pub(crate) use dialect::{Op, QuotaDialect};
pub(crate) use methods::quota_methods_in;

const KEY: &str = "tenant_id = $1 AND name = $2 AND period = $3";

/// The key's parameters, then `more`.
fn params(key: &QuotaKey, more: impl IntoIterator<Item = Param>) -> Vec<Param> {
    let mut params = vec![
        Param::Tenant(key.tenant()),
        Param::Text(key.name().to_owned()),
        Param::Text(key.period().to_owned()),
    ];
    params.extend(more);
    params
}

fn to_u64(value: i64) -> u64 {
    // `used` and its remainders below a limit are never negative
    // (CHECK (used >= 0), and a grant keeps used <= limit).
    u64::try_from(value).unwrap_or(0)
}

async fn run_all<D: QuotaDialect>(
    conn: &mut D::Connection,
    statements: &[&str],
    params: Vec<Param>,
) -> Result<(), BillingError> {
    for sql in statements {
        D::execute(conn, (*sql).to_owned(), params.clone())
            .await
            .map_err(D::error)?;
    }
    Ok(())
}

async fn reclaim<D: QuotaDialect>(
    conn: &mut D::Connection,
    key: &QuotaKey,
    now: Param,
) -> Result<(), BillingError> {
    run_all::<D>(conn, D::RECLAIM, params(key, [now])).await
}

/// Adds `amount` if it fits under `limit`; `Some(used)` when granted.
async fn grant<D: QuotaDialect>(
    conn: &mut D::Connection,
    key: &QuotaKey,
    amount: i64,
    limit: i64,
) -> Result<Option<i64>, BillingError> {
    if amount > limit {
        return Ok(None);
    }
    // `used <= limit - amount` rather than `used + amount <= limit`:
    // `amount <= limit` was checked, so neither side can overflow. The
    // conflicting row stays locked (PostgreSQL) until the caller's
    // transaction ends, so the limit is checked against the latest count.
    let sql = "INSERT INTO billing_quota_usage (tenant_id, name, period, used) \
               VALUES ($1, $2, $3, $4) \
               ON CONFLICT (tenant_id, name, period) DO UPDATE \
               SET used = billing_quota_usage.used + EXCLUDED.used \
               WHERE billing_quota_usage.used <= $5 - EXCLUDED.used \
               RETURNING used";
    let params = params(key, [Param::Int(amount), Param::Int(limit)]);
    let row = D::fetch_optional(conn, sql.to_owned(), params)
        .await
        .map_err(D::error)?;
    row.map(|row| D::int(&row, "used").map_err(D::error))
        .transpose()
}

async fn read_used<D: QuotaDialect>(
    conn: &mut D::Connection,
    key: &QuotaKey,
) -> Result<i64, BillingError> {
    let sql = format!("SELECT used FROM billing_quota_usage WHERE {KEY}");
    let row = D::fetch_optional(conn, sql, params(key, []))
        .await
        .map_err(D::error)?;
    Ok(match row {
        Some(row) => D::int(&row, "used").map_err(D::error)?,
        None => 0,
    })
}

/// What is left of `limit` after the key's current use.
async fn remaining<D: QuotaDialect>(
    conn: &mut D::Connection,
    key: &QuotaKey,
    limit: i64,
) -> Result<u64, BillingError> {
    Ok(to_u64(
        limit.saturating_sub(read_used::<D>(conn, key).await?),
    ))
}

/// [`QuotaStore::try_consume`](super::QuotaStore::try_consume) on `conn`.
pub(crate) async fn try_consume<D: QuotaDialect>(
    conn: &mut D::Connection,
    clock: &SharedClock,
    key: &QuotaKey,
    amount: u64,
    limit: u64,
) -> Result<Consumption, BillingError> {
    let amount = check_amount("quota amount", amount)?;
    let limit = check_amount("quota limit", limit)?;
    let now = D::instant(clock.now())?;
    let mut op = D::begin_op(conn).await?;
    reclaim::<D>(op.conn(), key, now).await?;
    let outcome = match grant::<D>(op.conn(), key, amount, limit).await? {
        Some(used) => Consumption::Granted {
            remaining: to_u64(limit - used),
        },
        None => Consumption::Denied {
            remaining: remaining::<D>(op.conn(), key, limit).await?,
        },
    };
    op.finish().await.map_err(D::error)?;
    Ok(outcome)
}

/// [`QuotaStore::reserve`](super::QuotaStore::reserve) on `conn`.
pub(crate) async fn reserve<D: QuotaDialect>(
    conn: &mut D::Connection,
    clock: &SharedClock,
    key: &QuotaKey,
    amount: u64,
    limit: u64,
    ttl: Duration,
) -> Result<ReserveOutcome, BillingError> {
    let amount_i = check_amount("quota amount", amount)?;
    let limit_i = check_amount("quota limit", limit)?;
    let now_at = clock.now();
    let expires_at = expiry(now_at, ttl)?;
    let (now, expires) = (D::instant(now_at)?, D::instant(expires_at)?);
    let mut op = D::begin_op(conn).await?;
    reclaim::<D>(op.conn(), key, now).await?;
    // The grant and the reservation's row are written together or not at
    // all: in a savepoint (a transaction of its own outside one).
    let mut tx = op.conn().begin().await.map_err(D::error)?;
    if grant::<D>(&mut *tx, key, amount_i, limit_i)
        .await?
        .is_none()
    {
        tx.rollback().await.map_err(D::error)?;
        let remaining = remaining::<D>(op.conn(), key, limit_i).await?;
        op.finish().await.map_err(D::error)?;
        return Ok(ReserveOutcome::Denied { remaining });
    }
    let reservation = Reservation {
        id: Uuid::new_v4(),
        key: key.clone(),
        amount,
        expires_at,
    };
    let sql = "INSERT INTO billing_quota_reservations \
               (tenant_id, name, period, id, amount, expires_at) \
               VALUES ($1, $2, $3, $4, $5, $6)";
    let more = [Param::Id(reservation.id), Param::Int(amount_i), expires];
    D::execute(&mut *tx, sql.to_owned(), params(key, more))
        .await
        .map_err(D::error)?;
    tx.commit().await.map_err(D::error)?;
    op.finish().await.map_err(D::error)?;
    Ok(ReserveOutcome::Reserved(reservation))
}

/// [`QuotaStore::commit`](super::QuotaStore::commit) on `conn`: one
/// statement on either database, so no operation around it.
pub(crate) async fn commit<D: QuotaDialect>(
    conn: &mut D::Connection,
    clock: &SharedClock,
    reservation: &Reservation,
) -> Result<(), BillingError> {
    let now = D::instant(clock.now())?;
    let sql = format!(
        "DELETE FROM billing_quota_reservations WHERE {KEY} AND id = $4 AND expires_at > $5"
    );
    let params = params(&reservation.key, [Param::Id(reservation.id), now]);
    let committed = D::execute(conn, sql, params).await.map_err(D::error)?;
    if committed == 1 {
        Ok(())
    } else {
        Err(reservation_not_found(reservation))
    }
}

/// [`QuotaStore::release`](super::QuotaStore::release) on `conn`.
pub(crate) async fn release<D: QuotaDialect>(
    conn: &mut D::Connection,
    reservation: &Reservation,
) -> Result<(), BillingError> {
    let params = params(&reservation.key, [Param::Id(reservation.id)]);
    let mut op = D::begin_op(conn).await?;
    run_all::<D>(op.conn(), D::RELEASE, params).await?;
    op.finish().await.map_err(D::error)
}

/// [`QuotaStore::give_back`](super::QuotaStore::give_back) on `conn`.
pub(crate) async fn give_back<D: QuotaDialect>(
    conn: &mut D::Connection,
    clock: &SharedClock,
    key: &QuotaKey,
    amount: u64,
) -> Result<(), BillingError> {
    let amount_i = check_amount("give_back amount", amount)?;
    let now = D::instant(clock.now())?;
    let mut op = D::begin_op(conn).await?;
    reclaim::<D>(op.conn(), key, now).await?;
    // Units still reserved are not the caller's to give back: only the
    // committed ones (`used` minus the live reservations).
    let sql = format!(
        "UPDATE billing_quota_usage SET used = used - $4 WHERE {KEY} \
         AND used - $4 >= (SELECT coalesce(sum(amount), 0) \
                           FROM billing_quota_reservations WHERE {KEY})"
    );
    let updated = D::execute(op.conn(), sql, params(key, [Param::Int(amount_i)]))
        .await
        .map_err(D::error)?;
    // Committed even when refused, as the reclaim stands on its own.
    op.finish().await.map_err(D::error)?;
    if updated == 1 || amount == 0 {
        Ok(())
    } else {
        Err(give_back_too_much(key, amount))
    }
}

/// [`QuotaStore::used`](super::QuotaStore::used) on `conn`.
pub(crate) async fn used<D: QuotaDialect>(
    conn: &mut D::Connection,
    clock: &SharedClock,
    key: &QuotaKey,
) -> Result<u64, BillingError> {
    let now = D::instant(clock.now())?;
    let mut op = D::begin_op(conn).await?;
    reclaim::<D>(op.conn(), key, now).await?;
    let used = read_used::<D>(op.conn(), key).await?;
    op.finish().await.map_err(D::error)?;
    Ok(to_u64(used))
}
