//! Choosing the cluster of a new tenant.

use saas_core::TenantSlug;

use super::PgTenancy;
use crate::error::TenancyError;
use crate::placement::{ClusterName, Strategy};
use crate::record::NewTenant;

impl PgTenancy {
    /// The configured clusters, by name.
    pub fn clusters(&self) -> Vec<ClusterName> {
        self.inner.cluster_names()
    }

    /// The cluster the placement policy picks for the next tenant.
    pub async fn choose_cluster(&self) -> Result<ClusterName, TenancyError> {
        self.inner.choose_cluster().await
    }

    /// A new tenant placed by `strategy` on the cluster the policy picks.
    pub async fn new_tenant(
        &self,
        slug: TenantSlug,
        display_name: impl Into<String>,
        strategy: Strategy,
    ) -> Result<NewTenant, TenancyError> {
        self.inner.new_tenant(slug, display_name, strategy).await
    }
}
