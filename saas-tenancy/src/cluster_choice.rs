//! Choosing the cluster of a new tenant by a [`PlacementPolicy`], the same
//! way for every backend.

use std::sync::atomic::{AtomicUsize, Ordering};

use saas_core::TenantStatus;

use crate::catalog::Catalog;
use crate::error::TenancyError;
use crate::placement::{ClusterName, PlacementPolicy};
use crate::record::ListOptions;

/// Picks a cluster among `names` (sorted) for the next tenant. `turn` is the
/// backend's round-robin counter.
pub(crate) async fn choose(
    policy: &PlacementPolicy,
    names: &[ClusterName],
    turn: &AtomicUsize,
    catalog: &dyn Catalog,
) -> Result<ClusterName, TenancyError> {
    let none = || TenancyError::InvalidInput("no clusters configured".to_owned());
    match policy {
        PlacementPolicy::Explicit(name) => {
            if names.contains(name) {
                Ok(name.clone())
            } else {
                Err(TenancyError::UnknownCluster(name.to_string()))
            }
        }
        PlacementPolicy::RoundRobin => {
            let turn = turn.fetch_add(1, Ordering::Relaxed);
            names
                .get(turn % names.len().max(1))
                .cloned()
                .ok_or_else(none)
        }
        PlacementPolicy::FewestTenants => {
            let mut best: Option<(usize, ClusterName)> = None;
            for name in names {
                let count = count_tenants(catalog, name).await?;
                if best.as_ref().is_none_or(|(n, _)| count < *n) {
                    best = Some((count, name.clone()));
                }
            }
            best.map(|(_, name)| name).ok_or_else(none)
        }
    }
}

/// Tenants on `cluster` that are not deleted (pages through the catalog).
async fn count_tenants(
    catalog: &dyn Catalog,
    cluster: &ClusterName,
) -> Result<usize, TenancyError> {
    let options = ListOptions {
        cluster: Some(cluster.clone()),
        ..ListOptions::default().with_limit(1000)
    };
    let tenants = catalog.list_all(&options).await?;
    Ok(tenants
        .iter()
        .filter(|t| t.status != TenantStatus::Deleted)
        .count())
}
