//! Invoice numbers: gapless and sequential per issuer, assigned by the
//! store in the transaction that finalizes the invoice, never reused.
//!
//! Why at finalization and not at draft creation: drafts are re-rated and
//! may never be issued (a subscription canceled before its period's
//! invoice is final); numbering them would leave gaps, which many tax
//! authorities forbid. A finalized invoice is never deleted (the SQL
//! stores refuse it with a trigger), so a number, once given, stays taken.

use std::fmt;

use saas_core::TenantId;
use serde::{Deserialize, Serialize};

use crate::ids::IssuerId;

/// An invoice's number: its issuer and its place in the issuer's
/// sequence (1, 2, 3… with no gap).
///
/// Displayed as `{issuer}-{sequence:06}` (`acme-eu-000042`); a host with
/// another format builds it from the two fields.
///
/// ```
/// use saas_billing::{InvoiceNumber, IssuerId};
///
/// let number = InvoiceNumber::new(IssuerId::new("acme-eu").unwrap(), 42);
/// assert_eq!(number.to_string(), "acme-eu-000042");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct InvoiceNumber {
    /// Who issued the invoice.
    pub issuer: IssuerId,
    /// Its place in the issuer's sequence, from 1.
    pub sequence: u64,
}

impl InvoiceNumber {
    /// The `sequence`-th number of `issuer`.
    pub fn new(issuer: IssuerId, sequence: u64) -> InvoiceNumber {
        InvoiceNumber { issuer, sequence }
    }
}

impl fmt::Display for InvoiceNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{:06}", self.issuer, self.sequence)
    }
}

/// Which issuer's sequence numbers a tenant's invoices (set with
/// [`BillingEngine::with_invoice_issuer`](crate::BillingEngine::with_invoice_issuer)).
///
/// ```
/// use saas_billing::{InvoiceIssuer, IssuerId, TenantId};
///
/// let tenant = TenantId::new();
/// let single = InvoiceIssuer::Single(IssuerId::new("acme-eu").unwrap());
/// assert_eq!(single.issuer_for(tenant).as_str(), "acme-eu");
/// // One sequence per tenant: the issuer is named after the tenant id.
/// assert_eq!(InvoiceIssuer::PerTenant.issuer_for(tenant).as_str(), tenant.to_string());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum InvoiceIssuer {
    /// Every invoice is issued by one legal entity: one sequence.
    Single(IssuerId),
    /// Each tenant issues its own invoices (a platform whose tenants bill
    /// in their own name): one sequence per tenant, named by its id.
    PerTenant,
}

impl Default for InvoiceIssuer {
    /// One sequence, issuer `default`.
    fn default() -> Self {
        InvoiceIssuer::Single(IssuerId::default_issuer())
    }
}

impl InvoiceIssuer {
    /// The issuer numbering `tenant`'s invoices.
    pub fn issuer_for(&self, tenant: TenantId) -> IssuerId {
        match self {
            InvoiceIssuer::Single(issuer) => issuer.clone(),
            InvoiceIssuer::PerTenant => IssuerId::of_tenant(tenant),
        }
    }
}

impl IssuerId {
    /// `default`, the issuer of [`InvoiceIssuer::default`].
    pub(crate) fn default_issuer() -> IssuerId {
        IssuerId::from_checked("default".to_owned())
    }

    /// The tenant id's hyphenated text: 36 ASCII hex digits and hyphens,
    /// always a valid key.
    pub(crate) fn of_tenant(tenant: TenantId) -> IssuerId {
        IssuerId::from_checked(tenant.to_string())
    }
}
