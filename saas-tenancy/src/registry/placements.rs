//! Which placement each tenant's registry pool was opened for — shared
//! by both backends so that a pool opened before a move is closed rather
//! than used after it.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use saas_core::TenantId;

use crate::placement::Placement;

/// Past this many tenants the memory is cleared: a forgotten entry only
/// costs the close of a pool that is already right.
const MAX_REMEMBERED: usize = 100_000;

/// The placement each tenant's pool was opened for.
#[derive(Debug, Default)]
pub(crate) struct PoolPlacements(Mutex<HashMap<TenantId, Placement>>);

impl PoolPlacements {
    /// Whether `tenant`'s pool (if any) was opened for another placement
    /// than `now`; remembers `now` for the next call.
    pub(crate) fn moved(&self, tenant: TenantId, now: &Placement) -> bool {
        let mut known = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        match known.get(&tenant) {
            Some(placement) if placement == now => false,
            before => {
                let moved = before.is_some();
                if known.len() >= MAX_REMEMBERED {
                    known.clear();
                }
                known.insert(tenant, now.clone());
                moved
            }
        }
    }
}
