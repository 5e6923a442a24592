//! Per-tenant serialisation of SQLite operations (provision, suspend,
//! resume, delete, export, import): an in-process lock, so tasks of one
//! process wait without blocking threads, plus an exclusive lock on a
//! per-tenant lock file, so two processes sharing the files wait for each
//! other too. The operating system drops a file lock when its holder dies,
//! so a crash never leaves a tenant locked.

use std::fs::{File, OpenOptions};
use std::future::Future;
use std::path::{Path, PathBuf};

use saas_core::TenantId;
use tokio::sync::{Mutex, MutexGuard};

use crate::error::TenancyError;
use crate::placement::TenantObjectName;
use crate::tenancy_core::HeldLock;

/// In-process stripes: tenants hashing to one stripe wait for each other,
/// which bounds memory whatever the number of tenants.
const STRIPES: usize = 64;

pub(super) struct TenantLocks {
    stripes: Vec<Mutex<()>>,
}

/// Held while an operation runs; dropping it releases both locks.
pub(super) struct TenantGuard<'a> {
    _file: File,
    _stripe: MutexGuard<'a, ()>,
}

impl HeldLock for TenantGuard<'_> {
    fn release(self) -> impl Future<Output = ()> + Send {
        drop(self);
        std::future::ready(())
    }
}

impl TenantLocks {
    pub(super) fn new() -> Self {
        Self {
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
        }
    }

    /// The lock file of `tenant` in `dir`: named by the tenant id alone.
    pub(super) fn lock_file(dir: &Path, tenant: TenantId) -> PathBuf {
        dir.join(format!("{}.lock", TenantObjectName::for_tenant(tenant)))
    }

    /// Waits until no other task or process operates on `tenant`.
    pub(super) async fn lock(
        &self,
        tenant: TenantId,
        dir: &Path,
    ) -> Result<TenantGuard<'_>, TenancyError> {
        let index = (tenant.as_uuid().as_u128() % STRIPES as u128) as usize;
        let stripe = self.stripes[index].lock().await;
        let path = Self::lock_file(dir, tenant);
        let file = tokio::task::spawn_blocking(move || {
            let file = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)?;
            file.lock()?;
            Ok::<File, std::io::Error>(file)
        })
        .await
        .map_err(|e| TenancyError::InvalidInput(format!("tenant lock task failed: {e}")))?
        .map_err(|e| TenancyError::InvalidInput(format!("cannot lock the tenant: {e}")))?;
        Ok(TenantGuard {
            _file: file,
            _stripe: stripe,
        })
    }
}
