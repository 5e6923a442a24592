//! Choosing the cluster (shared file and tenant directory) of a new tenant.

use saas_core::TenantSlug;

use super::{SqliteClusterConfig, SqliteTenancy};
use crate::error::TenancyError;
use crate::placement::{ClusterName, Strategy};
use crate::record::NewTenant;

impl SqliteTenancy {
    /// The configured clusters, by name.
    pub fn clusters(&self) -> Vec<ClusterName> {
        self.inner.cluster_names()
    }

    /// A cluster's configuration: where its shared file and its tenants'
    /// files are.
    ///
    /// # Errors
    /// [`TenancyError::UnknownCluster`] for a name not configured.
    pub fn cluster_config(&self, name: &ClusterName) -> Result<&SqliteClusterConfig, TenancyError> {
        self.cluster(name)
    }

    /// The cluster the placement policy picks for the next tenant (see
    /// [`SqliteTenancyBuilder::placement_policy`](super::SqliteTenancyBuilder::placement_policy)).
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
