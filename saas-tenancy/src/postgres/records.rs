//! The tenant's catalog record on the request path: cached, checked,
//! waited for while a move fences the tenant, checked again after a
//! fence — and the tenant pool of a placement the tenant has left.

use saas_core::TenantId;

use super::PgTenancy;
use crate::error::TenancyError;
use crate::observe;
use crate::placement::Placement;
use crate::record::TenantRecord;

impl PgTenancy {
    /// Reads `tenant`'s record again (after a fence or a notification) and
    /// refuses it if a move changed its placement meanwhile.
    pub(super) async fn recheck_placement(
        &self,
        tenant: TenantId,
        placement: &Placement,
    ) -> Result<(), TenancyError> {
        let record = self.servable_now(tenant).await?;
        if record.placement == *placement {
            Ok(())
        } else {
            Err(TenancyError::TenantMoving {
                tenant,
                detail: "it was moved while this request waited for a connection".to_owned(),
            })
        }
    }

    pub(super) async fn servable(&self, id: TenantId) -> Result<TenantRecord, TenancyError> {
        let state = &self.inner.backend;
        state.follower.ensure(
            self.inner.catalog.postgres_pool(),
            &state.records,
            &state.fences,
        );
        match self.servable_now(id).await {
            Err(TenancyError::TenantNotServable {
                status: saas_core::TenantStatus::Moving,
                ..
            }) => self.wait_for_move(id).await,
            other => other,
        }
    }

    /// Waits for `id`'s move to leave its fence: woken by the move's
    /// notification, reading the catalog at least every 50 ms meanwhile.
    pub(super) async fn wait_for_move(&self, id: TenantId) -> Result<TenantRecord, TenancyError> {
        let state = &self.inner.backend;
        let deadline = tokio::time::Instant::now() + state.move_wait;
        loop {
            let woken = state.follower.wake.notified();
            let pause = std::time::Duration::from_millis(50);
            let _ = tokio::time::timeout(pause, woken).await;
            self.forget_record(id);
            match self.servable_now(id).await {
                Err(TenancyError::TenantNotServable {
                    status: saas_core::TenantStatus::Moving,
                    ..
                }) if tokio::time::Instant::now() < deadline => {}
                Err(TenancyError::TenantNotServable {
                    status: saas_core::TenantStatus::Moving,
                    ..
                }) => {
                    return Err(TenancyError::TenantMoving {
                        tenant: id,
                        detail: format!(
                            "its move's fence lasted longer than the {:?} a new handle waits",
                            state.move_wait
                        ),
                    });
                }
                other => return other,
            }
        }
    }

    /// The tenant's record if it may be served now (a moving tenant is
    /// [`TenancyError::TenantNotServable`]).
    pub(super) async fn servable_now(&self, id: TenantId) -> Result<TenantRecord, TenancyError> {
        let cached = self.inner.backend.records.get(id);
        observe::record_cache(cached.is_some());
        if let Some(record) = cached {
            return self.served_here(crate::catalog::check_servable(record)?);
        }
        let fences = self.fences();
        let record = self
            .inner
            .catalog
            .get(id)
            .await?
            .ok_or_else(|| TenancyError::TenantNotFound(format!("with id {id}")))?;
        // A deletion that started here while the catalog was read may have
        // ended by now: a record read before it must not be cached after it.
        if self.fences() == fences {
            self.inner.backend.records.put(record.clone());
        }
        self.served_here(crate::catalog::check_servable(record)?)
    }

    /// Refuses a record placed on a cluster this tenancy does not have — a
    /// tenant moved to SQLite (`move_tenant_to_sqlite`) — with where it is.
    fn served_here(&self, record: TenantRecord) -> Result<TenantRecord, TenancyError> {
        if self.inner.clusters.contains_key(record.placement.cluster()) {
            return Ok(record);
        }
        Err(TenancyError::PlacementNotServedHere {
            tenant: record.id,
            placement: record.placement,
        })
    }
}
