//! Prepaid credits: a per-tenant, per-currency ledger of grants (an
//! amount, an optional expiry, a priority) and of what invoices consumed
//! from them. The ledger is append-only: a grant's balance is its amount
//! less its consumptions, never a stored, edited figure; a grant past its
//! expiry is simply no longer available (its unused balance is reported,
//! not consumed).
//!
//! Invoices consume credits when they are finalized, in the same store
//! transaction that numbers them: grants by priority (lower first), then
//! by expiry (soonest first, never-expiring last), then by grant time,
//! each drawn down before the next, up to what the invoice leaves due.

use chrono::{DateTime, Utc};
use saas_core::TenantId;
use serde::{Deserialize, Serialize};

use crate::currency::Currency;
use crate::error::BillingError;
use crate::ids::{CreditGrantId, InvoiceId};
use crate::money::Money;

/// A grant of prepaid credit to a tenant.
///
/// ```
/// use saas_billing::{CreditGrant, Currency, Money, TenantId, TimeZone, Utc, dec};
///
/// let at = Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap();
/// let grant = CreditGrant::new(TenantId::new(), Money::new(dec!(100.00), Currency::EUR), at)
///     .unwrap()
///     .with_priority(1)
///     .expiring_at(Utc.with_ymd_and_hms(2025, 6, 30, 0, 0, 0).unwrap());
/// assert_eq!(grant.priority, 1);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreditGrant {
    /// Its id.
    pub id: CreditGrantId,
    /// The tenant it credits.
    pub tenant_id: TenantId,
    /// The amount granted (its currency is the grant's).
    pub amount: Money,
    /// Consumed before grants of a higher number (default 0).
    pub priority: u32,
    /// From this instant on it is no longer consumed; `None`: never.
    pub expires_at: Option<DateTime<Utc>>,
    /// When it was granted.
    pub granted_at: DateTime<Utc>,
    /// What it is for ("Top-up", "Promotional credit").
    pub description: String,
}

impl CreditGrant {
    /// A grant of `amount` to `tenant` at `at`, priority 0, never
    /// expiring.
    ///
    /// # Errors
    /// `InvalidInput` if the amount is not positive or not rounded to its
    /// currency's minor unit.
    pub fn new(
        tenant: TenantId,
        amount: Money,
        at: DateTime<Utc>,
    ) -> Result<CreditGrant, BillingError> {
        if amount.is_negative() || amount.is_zero() || !amount.is_rounded() {
            return Err(BillingError::invalid(
                "amount",
                format!("{amount} must be positive and rounded to the minor unit"),
            ));
        }
        Ok(CreditGrant {
            id: CreditGrantId::new(),
            tenant_id: tenant,
            amount,
            priority: 0,
            expires_at: None,
            granted_at: at,
            description: "Prepaid credit".to_owned(),
        })
    }

    /// Sets the priority (lower is consumed first).
    pub fn with_priority(mut self, priority: u32) -> CreditGrant {
        self.priority = priority;
        self
    }

    /// Sets the expiry.
    pub fn expiring_at(mut self, at: DateTime<Utc>) -> CreditGrant {
        self.expires_at = Some(at);
        self
    }

    /// Sets the description.
    pub fn with_description(mut self, description: impl Into<String>) -> CreditGrant {
        self.description = description.into();
        self
    }

    /// The grant's currency.
    pub fn currency(&self) -> Currency {
        self.amount.currency()
    }

    /// Whether it can be consumed at `at`.
    pub fn is_available_at(&self, at: DateTime<Utc>) -> bool {
        self.granted_at <= at && self.expires_at.is_none_or(|end| at < end)
    }
}

/// An amount an invoice consumed from a grant: one ledger entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreditConsumption {
    /// The grant drawn from.
    pub grant_id: CreditGrantId,
    /// The tenant.
    pub tenant_id: TenantId,
    /// The invoice that consumed it.
    pub invoice_id: InvoiceId,
    /// The amount consumed (positive).
    pub amount: Money,
    /// When (the invoice's finalization).
    pub at: DateTime<Utc>,
}

/// A grant with what remains of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreditGrantBalance {
    /// The grant.
    pub grant: CreditGrant,
    /// Its amount less its consumptions.
    pub remaining: Money,
}

/// Balances of `grants` given every consumption of them.
///
/// # Errors
/// `CurrencyMismatch` or `Overflow` (corrupt data).
pub fn balances(
    grants: &[CreditGrant],
    consumptions: &[CreditConsumption],
) -> Result<Vec<CreditGrantBalance>, BillingError> {
    grants
        .iter()
        .map(|grant| {
            let used = consumptions
                .iter()
                .filter(|c| c.grant_id == grant.id)
                .try_fold(Money::zero(grant.currency()), |sum, c| {
                    sum.checked_add(c.amount)
                })?;
            Ok(CreditGrantBalance {
                grant: grant.clone(),
                remaining: grant.amount.checked_sub(used)?,
            })
        })
        .collect()
}

/// What `invoice` consumes at `at` to cover up to `due`: the available
/// grants (not expired, in `due`'s currency, with something left) by
/// priority, then expiry (soonest first, none last), then grant time.
///
/// # Errors
/// `CurrencyMismatch` or `Overflow` (corrupt data).
pub fn consume(
    available: &[CreditGrantBalance],
    invoice: InvoiceId,
    due: Money,
    at: DateTime<Utc>,
) -> Result<Vec<CreditConsumption>, BillingError> {
    let mut order: Vec<&CreditGrantBalance> = available
        .iter()
        .filter(|b| {
            b.grant.currency() == due.currency()
                && b.grant.is_available_at(at)
                && b.remaining.amount() > rust_decimal::Decimal::ZERO
        })
        .collect();
    order.sort_by_key(|b| {
        (
            b.grant.priority,
            b.grant.expires_at.is_none(),
            b.grant.expires_at,
            b.grant.granted_at,
            b.grant.id,
        )
    });
    let mut left = due;
    let mut taken = Vec::new();
    for balance in order {
        if left.amount() <= rust_decimal::Decimal::ZERO {
            break;
        }
        let amount = if balance.remaining.amount() < left.amount() {
            balance.remaining
        } else {
            left
        };
        left = left.checked_sub(amount)?;
        taken.push(CreditConsumption {
            grant_id: balance.grant.id,
            tenant_id: balance.grant.tenant_id,
            invoice_id: invoice,
            amount,
            at,
        });
    }
    Ok(taken)
}
