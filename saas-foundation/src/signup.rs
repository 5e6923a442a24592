//! Sign-up as one operation: provision the tenant and subscribe it, or
//! leave nothing behind; safe to retry after any failure, a crash too.

use std::sync::Arc;

use saas_billing::{BillingEngine, BillingError, NewSubscription, Subscription};
use saas_core::{ErrorKind, TenantId, TenantStatus};
use saas_tenancy::{NewTenant, Tenancy, TenancyError, TenantRecord};

use crate::subscriptions::live_subscription;

/// A tenant signed up: its record (active) and its live subscription.
#[derive(Debug, Clone)]
pub struct SignedUp {
    /// The tenant, active.
    pub tenant: TenantRecord,
    /// Its subscription.
    pub subscription: Subscription,
    /// Whether this call did the work (`false`: a retry found it done).
    pub created: bool,
}

/// Why a sign-up failed. Nothing this call created is left behind, except
/// where [`SignUpError::Compensation`] says so.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignUpError {
    /// The tenant could not be provisioned (a slug taken by another
    /// tenant, an unknown cluster, the database).
    #[error("the tenant could not be provisioned: {0}")]
    Tenancy(#[from] TenancyError),
    /// The subscription could not be created (an unknown plan, the
    /// store); the tenant this call provisioned was deleted again.
    #[error("the subscription could not be created: {0}")]
    Billing(#[from] BillingError),
    /// The subscription failed and so did deleting the tenant provisioned
    /// for it: the tenant is left without a subscription. Retry the
    /// sign-up with the same tenant id (it finishes it), or delete the
    /// tenant.
    #[error(
        "the subscription could not be created ({billing}) and the tenant could not be \
         deleted again ({tenancy}); retry the sign-up with the same tenant id"
    )]
    Compensation {
        /// The subscription's failure.
        billing: BillingError,
        /// The deletion's failure.
        tenancy: TenancyError,
    },
    /// The tenant id is another tenant's (under another slug): a retry
    /// must repeat the sign-up as it was, and a new sign-up needs a new id.
    #[error("tenant id {id} belongs to the tenant {slug}; sign up with a new id")]
    IdTaken {
        /// The id.
        id: TenantId,
        /// The slug of the tenant that has it.
        slug: String,
    },
    /// The request is inconsistent (a subscription for another tenant).
    #[error("invalid sign-up: {0}")]
    Invalid(String),
}

impl SignUpError {
    /// The workspace-wide kind of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            SignUpError::Tenancy(e) => e.kind(),
            SignUpError::Billing(e) => e.kind(),
            SignUpError::Compensation { .. } => ErrorKind::Internal,
            SignUpError::IdTaken { .. } => ErrorKind::Conflict,
            SignUpError::Invalid(_) => ErrorKind::InvalidInput,
        }
    }
}

/// Provisions tenants and subscribes them, as one operation.
///
/// **Idempotent by tenant id.** Give the [`NewTenant`] a stable id
/// ([`NewTenant::with_id`], e.g. derived from the client's idempotency key
/// or kept with the pending sign-up) and a retry after any failure — a
/// timeout, a crash between the two steps — finishes the same sign-up
/// instead of failing on the taken slug or creating a second
/// subscription: a tenant left `provisioning` is finished, an active one
/// reused, and a live subscription of the tenant returned as it is.
///
/// **Compensated.** If subscribing fails, a tenant this sign-up
/// provisioned (in this call, or in an interrupted earlier attempt that
/// left it `provisioning`) is deleted again: no tenant without a
/// subscription. A tenant that was active before the call is never
/// deleted by it.
///
/// ```no_run
/// # async fn run(
/// #     tenancy: std::sync::Arc<saas_tenancy::sqlite::SqliteTenancy>,
/// #     engine: saas_billing::BillingEngine,
/// #     plan: saas_billing::PlanRef,
/// # ) -> Result<(), Box<dyn std::error::Error>> {
/// use saas_core::{TenantId, TenantSlug};
/// use saas_foundation::signup::SignUps;
/// use saas_tenancy::{ClusterName, NewTenant, Strategy};
///
/// let sign_ups = SignUps::new(tenancy, engine);
/// let id = TenantId::new(); // kept with the pending sign-up, for retries
/// let tenant = NewTenant::new(
///     TenantSlug::parse("acme")?,
///     "Acme",
///     Strategy::Shared,
///     ClusterName::new("local")?,
/// )?
/// .with_id(id);
/// let plan = saas_billing::NewSubscription::new(id, plan, saas_billing::Currency::USD);
/// let done = sign_ups.sign_up(tenant, plan).await?;
/// assert_eq!(done.tenant.id, id);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct SignUps<T: Tenancy> {
    tenancy: Arc<T>,
    billing: BillingEngine,
}

impl<T: Tenancy> SignUps<T> {
    /// Sign-ups provisioning on `tenancy` and subscribing with `billing`.
    pub fn new(tenancy: Arc<T>, billing: BillingEngine) -> Self {
        Self { tenancy, billing }
    }

    /// Provisions `tenant` and creates `subscription` for it (see the type
    /// docs for retries and compensation).
    ///
    /// # Errors
    /// [`SignUpError`]: what failed, and what was undone.
    pub async fn sign_up(
        &self,
        tenant: NewTenant,
        subscription: NewSubscription,
    ) -> Result<SignedUp, SignUpError> {
        if subscription.tenant_id != tenant.id() {
            return Err(SignUpError::Invalid(format!(
                "the subscription is for tenant {}, the sign-up for tenant {}",
                subscription.tenant_id,
                tenant.id()
            )));
        }
        let (record, ours) = self.provisioned(tenant).await?;
        if let Some(live) = live_subscription(&self.billing, record.id).await? {
            return Ok(SignedUp {
                tenant: record,
                subscription: live,
                created: false,
            });
        }
        match self.billing.create_subscription(subscription).await {
            Ok(subscription) => Ok(SignedUp {
                tenant: record,
                subscription,
                created: true,
            }),
            Err(billing) if ours => match self.tenancy.delete_tenant(record.id).await {
                Ok(_) => Err(SignUpError::Billing(billing)),
                Err(tenancy) => Err(SignUpError::Compensation { billing, tenancy }),
            },
            Err(billing) => Err(SignUpError::Billing(billing)),
        }
    }

    /// The tenant, active, and whether this sign-up provisioned it (now
    /// or in an interrupted earlier attempt).
    async fn provisioned(&self, tenant: NewTenant) -> Result<(TenantRecord, bool), SignUpError> {
        let existing = self.tenancy.catalog().get(tenant.id()).await?;
        let Some(existing) = existing else {
            return Ok((self.tenancy.provision(tenant).await?, true));
        };
        if existing.slug != *tenant.slug() {
            return Err(SignUpError::IdTaken {
                id: existing.id,
                slug: existing.slug.to_string(),
            });
        }
        match existing.status {
            TenantStatus::Provisioning => {
                Ok((self.tenancy.retry_provisioning(existing.id).await?, true))
            }
            _ => Ok((existing, false)),
        }
    }
}
