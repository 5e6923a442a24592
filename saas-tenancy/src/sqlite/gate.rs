//! Deletion is final on SQLite: a per-tenant gate that every scoped
//! handle holds a pass of while it is open, and that a deletion closes
//! (waiting up to the grace period for the passes out) before it deletes.
//!
//! An in-process read/write lock per tenant, since SQLite is embedded: a
//! handle cannot be cut from outside the process that holds it, nor its
//! connection killed without taking the pool down with it. The locks are
//! created on demand and dropped with the last pass; tokio's lock is fair,
//! so a request that arrives while a deletion waits queues behind it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use saas_core::TenantId;
use tokio::sync::{OwnedRwLockReadGuard, OwnedRwLockWriteGuard, RwLock};

/// Above this many entries, entries whose lock is gone are swept.
const SWEEP_ABOVE: usize = 1024;

type Gate = Arc<RwLock<()>>;

/// A handle's pass through its tenant's gate.
pub(super) type Pass = OwnedRwLockReadGuard<()>;

/// The gates of the tenants that have handles open (or a deletion).
#[derive(Debug, Default)]
pub(super) struct Gates {
    gates: Mutex<HashMap<TenantId, Weak<RwLock<()>>>>,
}

/// What [`Gates::enter`] found.
#[derive(Debug)]
pub(super) enum Entry {
    /// No deletion holds or awaits the gate: the pass.
    Open(Pass),
    /// A deletion holds or awaits the gate.
    Closing(Gate),
}

impl Gates {
    fn gate(&self, tenant: TenantId) -> Gate {
        let mut gates = self.gates.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(gate) = gates.get(&tenant).and_then(Weak::upgrade) {
            return gate;
        }
        if gates.len() >= SWEEP_ABOVE {
            gates.retain(|_, gate| gate.strong_count() > 0);
        }
        let gate = Gate::default();
        gates.insert(tenant, Arc::downgrade(&gate));
        gate
    }

    /// A pass for a new handle of `tenant`, unless a deletion holds or
    /// awaits its gate.
    pub(super) fn enter(&self, tenant: TenantId) -> Entry {
        let gate = self.gate(tenant);
        match Arc::clone(&gate).try_read_owned() {
            Ok(pass) => Entry::Open(pass),
            Err(_) => Entry::Closing(gate),
        }
    }

    /// Closes `tenant`'s gate once the passes out have come back, waiting
    /// up to `grace`; `None` when some were still out. Requests arriving
    /// meanwhile wait behind the deletion.
    pub(super) async fn close(
        &self,
        tenant: TenantId,
        grace: Duration,
    ) -> Option<OwnedRwLockWriteGuard<()>> {
        tokio::time::timeout(grace, self.gate(tenant).write_owned())
            .await
            .ok()
    }
}

/// Waits for a deletion that holds or awaits a gate to end, then enters.
pub(super) async fn enter_after(gate: Gate) -> Pass {
    gate.read_owned().await
}
