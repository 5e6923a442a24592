//! The names a host uses most, for one glob import:
//! `use saas_foundation::prelude::*;`.
//!
//! Types of the four crates and of this one, as far as the enabled
//! features provide them. Nothing here is named `Router` (axum's and the
//! event router would clash in a glob): import those by path.
//!
//! ```
//! use saas_foundation::prelude::*;
//!
//! let clock: SharedClock = std::sync::Arc::new(SystemClock);
//! let tenant = TenantId::new();
//! # let _ = (clock, tenant);
//! ```

pub use saas_core::{
    ErrorKind, HeaderResolver, HostResolver, SharedClock, SystemClock, TenantContext, TenantId,
    TokenClaimResolver, TokenClaims,
};
pub use saas_events::Event;
pub use saas_tenancy::{NewTenant, Strategy};

pub use crate::config::{Secret, Settings};
pub use crate::identity::Identity;
pub use crate::services::Services;
pub use crate::subscriptions::CurrentSubscriptions;

#[cfg(any(feature = "postgres", feature = "sqlite"))]
pub use crate::{
    consumers::tenant_handler,
    signup::{SignUps, SignedUp},
    stack::{Stack, StackBackend},
};
#[cfg(any(feature = "postgres", feature = "sqlite"))]
pub use saas_tenancy::{Tenancy, TenantTransaction};

#[cfg(feature = "axum")]
pub use crate::{metering::MeterLayer, problem::Problem};
#[cfg(feature = "axum")]
pub use saas_core::http::{Tenant, TenantLayer};

#[cfg(feature = "host")]
pub use crate::host::{App, BoxError, Host};

#[cfg(feature = "ratelimit")]
pub use crate::ratelimit::RateLimitLayer;

#[cfg(all(feature = "axum", any(feature = "postgres", feature = "sqlite")))]
pub use crate::transaction::{ScopedTx, TransactionLayer};
