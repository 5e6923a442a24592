//! Taxes: rates by jurisdiction, resolved per invoice line through a
//! trait the host implements ([`TaxResolver`]; [`StaticTaxRates`] is the
//! in-memory default), computed on each line and rounded once per line.
//!
//! Order of operations on a line: the line's amount is rated and rounded
//! first (discounts, when they come, apply before tax); the tax is then
//! computed on that rounded amount and rounded once. A tax-exclusive
//! rate adds its tax on top of the line; a tax-inclusive rate finds the
//! tax inside it: `tax = amount × rate / (100 + rate)`, rounded, and the
//! line's net amount is what remains. Rounding per line (not on the
//! invoice's sum) is what most tax authorities accept and what lets each
//! line explain itself; the invoice's tax totals are sums of the line
//! taxes.

mod compute;

pub(crate) use compute::summarize;
pub use compute::{TaxSummary, apply_taxes};

use std::collections::HashMap;
use std::fmt;

use rust_decimal::Decimal;
use saas_core::TenantId;
use serde::{Deserialize, Serialize};

use crate::currency::Currency;
use crate::error::BillingError;
use crate::ids::SubscriptionId;
use crate::invoice::InvoiceLine;
use crate::money::Money;

/// Whether a rate's tax is added to the price or contained in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaxBehavior {
    /// Prices are net; the tax is added on top (US sales tax, B2B VAT).
    Exclusive,
    /// Prices include the tax (B2C VAT in the EU): the line's amount is
    /// what the customer pays, the tax is the part of it owed.
    Inclusive,
}

/// A tax rate: a percentage of a jurisdiction, inclusive or exclusive,
/// with an optional reason (why a zero rate applies: reverse charge,
/// exemption).
///
/// ```
/// use saas_billing::{TaxBehavior, TaxRate, dec};
///
/// let vat = TaxRate::new("DE", "VAT 19 %", dec!(19), TaxBehavior::Exclusive).unwrap();
/// assert_eq!(vat.percentage(), dec!(19));
/// let reverse = TaxRate::reverse_charge("FR", "Autoliquidation: VAT due by the customer");
/// assert!(reverse.percentage().is_zero());
/// assert!(reverse.reason().is_some());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TaxRate {
    jurisdiction: String,
    name: String,
    percentage: Decimal,
    behavior: TaxBehavior,
    #[serde(default)]
    reason: Option<String>,
}

impl TaxRate {
    /// A rate of `percentage` % (19 for 19 %) in `jurisdiction` (a
    /// country, state or other code of your choosing), displayed as
    /// `name`.
    ///
    /// # Errors
    /// [`BillingError::InvalidInput`] for a percentage below 0 or of 100
    /// or more, or an empty jurisdiction.
    pub fn new(
        jurisdiction: impl Into<String>,
        name: impl Into<String>,
        percentage: Decimal,
        behavior: TaxBehavior,
    ) -> Result<TaxRate, BillingError> {
        let jurisdiction = jurisdiction.into();
        if jurisdiction.trim().is_empty() {
            return Err(BillingError::invalid("jurisdiction", "must not be empty"));
        }
        if percentage.is_sign_negative() || percentage >= Decimal::ONE_HUNDRED {
            return Err(BillingError::invalid(
                "percentage",
                format!("{percentage} must be at least 0 and below 100"),
            ));
        }
        Ok(TaxRate {
            jurisdiction,
            name: name.into(),
            percentage,
            behavior,
            reason: None,
        })
    }

    /// A zero, exclusive rate stating why no tax is charged: the reverse
    /// charge of EU B2B VAT, where the customer accounts for the tax (the
    /// invoice must say so).
    pub fn reverse_charge(jurisdiction: impl Into<String>, reason: impl Into<String>) -> TaxRate {
        TaxRate {
            jurisdiction: jurisdiction.into(),
            name: "Reverse charge".to_owned(),
            percentage: Decimal::ZERO,
            behavior: TaxBehavior::Exclusive,
            reason: Some(reason.into()),
        }
    }

    /// The same rate with a reason printed beside it (an exemption).
    pub fn with_reason(mut self, reason: impl Into<String>) -> TaxRate {
        self.reason = Some(reason.into());
        self
    }

    /// The jurisdiction.
    pub fn jurisdiction(&self) -> &str {
        &self.jurisdiction
    }

    /// The display name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The percentage (19 for 19 %).
    pub fn percentage(&self) -> Decimal {
        self.percentage
    }

    /// Inclusive or exclusive.
    pub fn behavior(&self) -> TaxBehavior {
        self.behavior
    }

    /// Why this rate applies (reverse charge, exemption), if stated.
    pub fn reason(&self) -> Option<&str> {
        self.reason.as_deref()
    }
}

impl fmt::Display for TaxRate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} % ({})",
            self.name, self.percentage, self.jurisdiction
        )
    }
}

/// The tax of one rate on one invoice line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineTax {
    /// The rate.
    pub rate: TaxRate,
    /// The amount taxed: the line's amount (exclusive) or the line's
    /// amount less this tax (inclusive).
    pub taxable: Money,
    /// The tax, rounded once.
    pub amount: Money,
}

/// What a [`TaxResolver`] is asked about one invoice line.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct TaxQuery<'a> {
    /// The tenant billed.
    pub tenant: TenantId,
    /// The subscription billed.
    pub subscription: SubscriptionId,
    /// The invoice's currency.
    pub currency: Currency,
    /// The line (its kind, price and amount).
    pub line: &'a InvoiceLine,
}

/// Finds the tax rates of an invoice line. Called while rating, so it
/// must not block: resolve addresses and registrations ahead (when the
/// customer's billing details change) and answer from memory.
pub trait TaxResolver: Send + Sync + fmt::Debug {
    /// The rates applying to `query.line`, each computed on the line's
    /// amount (not compounded); none for an untaxed line.
    ///
    /// # Errors
    /// Any [`BillingError`]; the invoice is not rated then.
    fn rates(&self, query: &TaxQuery<'_>) -> Result<Vec<TaxRate>, BillingError>;
}

/// A static table of rates: per tenant, else a default, the same for
/// every line. The engine's default is an empty table (no tax).
///
/// ```
/// use saas_billing::{StaticTaxRates, TaxBehavior, TaxRate, TenantId, dec};
///
/// let vat = TaxRate::new("DE", "VAT", dec!(19), TaxBehavior::Exclusive).unwrap();
/// let b2b = TenantId::new();
/// let table = StaticTaxRates::new()
///     .default_rates([vat])
///     .tenant_rates(b2b, [TaxRate::reverse_charge("FR", "VAT due by the customer")]);
/// ```
#[derive(Debug, Clone, Default)]
pub struct StaticTaxRates {
    default: Vec<TaxRate>,
    tenants: HashMap<TenantId, Vec<TaxRate>>,
}

impl StaticTaxRates {
    /// An empty table: no tax anywhere.
    pub fn new() -> StaticTaxRates {
        StaticTaxRates::default()
    }

    /// The rates of tenants with none of their own.
    pub fn default_rates(mut self, rates: impl IntoIterator<Item = TaxRate>) -> StaticTaxRates {
        self.default = rates.into_iter().collect();
        self
    }

    /// `tenant`'s rates, replacing the default for it (an empty list
    /// exempts it).
    pub fn tenant_rates(
        mut self,
        tenant: TenantId,
        rates: impl IntoIterator<Item = TaxRate>,
    ) -> StaticTaxRates {
        self.tenants.insert(tenant, rates.into_iter().collect());
        self
    }
}

impl TaxResolver for StaticTaxRates {
    fn rates(&self, query: &TaxQuery<'_>) -> Result<Vec<TaxRate>, BillingError> {
        Ok(self
            .tenants
            .get(&query.tenant)
            .unwrap_or(&self.default)
            .clone())
    }
}
