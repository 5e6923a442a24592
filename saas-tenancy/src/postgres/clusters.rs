//! Choosing the cluster of a new tenant.

use std::sync::atomic::Ordering;

use saas_core::{TenantSlug, TenantStatus};

use super::PgTenancy;
use crate::error::TenancyError;
use crate::placement::{ClusterName, PlacementPolicy, Strategy};
use crate::record::{ListOptions, NewTenant};

impl PgTenancy {
    /// The configured clusters, by name.
    pub fn clusters(&self) -> Vec<ClusterName> {
        let mut names: Vec<ClusterName> = self.inner.clusters.keys().cloned().collect();
        names.sort();
        names
    }

    /// The cluster the placement policy picks for the next tenant.
    pub async fn choose_cluster(&self) -> Result<ClusterName, TenancyError> {
        let names = self.clusters();
        match &self.inner.policy {
            PlacementPolicy::Explicit(name) => {
                self.cluster(name)?;
                Ok(name.clone())
            }
            PlacementPolicy::RoundRobin => {
                let turn = self.inner.next_cluster.fetch_add(1, Ordering::Relaxed);
                names
                    .get(turn % names.len().max(1))
                    .cloned()
                    .ok_or_else(|| TenancyError::InvalidInput("no clusters configured".to_owned()))
            }
            PlacementPolicy::FewestTenants => {
                let mut best: Option<(usize, ClusterName)> = None;
                for name in names {
                    let count = self.count_tenants(&name).await?;
                    if best.as_ref().is_none_or(|(n, _)| count < *n) {
                        best = Some((count, name));
                    }
                }
                best.map(|(_, name)| name)
                    .ok_or_else(|| TenancyError::InvalidInput("no clusters configured".to_owned()))
            }
        }
    }

    /// A new tenant placed by `strategy` on the cluster the policy picks.
    pub async fn new_tenant(
        &self,
        slug: TenantSlug,
        display_name: impl Into<String>,
        strategy: Strategy,
    ) -> Result<NewTenant, TenancyError> {
        let cluster = self.choose_cluster().await?;
        NewTenant::new(slug, display_name, strategy, cluster)
    }

    /// Tenants on `cluster` that are not deleted (pages through the catalog).
    async fn count_tenants(&self, cluster: &ClusterName) -> Result<usize, TenancyError> {
        let options = ListOptions {
            cluster: Some(cluster.clone()),
            ..ListOptions::default().with_limit(1000)
        };
        let tenants = self.inner.catalog.list_all(&options).await?;
        Ok(tenants
            .iter()
            .filter(|t| t.status != TenantStatus::Deleted)
            .count())
    }
}
