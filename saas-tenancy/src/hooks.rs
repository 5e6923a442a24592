//! Host code run at each lifecycle step, and lifecycle events.

use std::fmt;

use async_trait::async_trait;
use saas_core::TenantStatus;

use crate::error::TenancyError;
use crate::record::TenantRecord;

/// A change in a tenant's life, as reported to [`LifecycleHooks`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum LifecycleEvent {
    /// The tenant's storage exists and it is active.
    Provisioned(TenantRecord),
    /// The tenant's status changed (suspend, resume, …).
    StatusChanged {
        /// The record after the change.
        record: TenantRecord,
        /// The status before.
        from: TenantStatus,
    },
    /// The tenant's data is gone.
    Deleted(TenantRecord),
}

/// Host code run at each lifecycle step: seed data after provisioning,
/// revoke sessions on suspension, publish the change as an event (an
/// implementation forwarding to `saas-events` is how lifecycle events reach
/// a bus). Called once per step that happened, after it succeeded and
/// after the tenant's lock is released; an error is returned to the caller
/// of the operation, whose own effect is already durable and is not undone.
/// Repeating an operation on a tenant already in its resulting state (a
/// second delete, a retry of an active tenant's provisioning, a suspend of a
/// suspended tenant) does not call the hook again — so concurrent repeats
/// report one event. A host whose hook failed (e.g. seeding after
/// `Provisioned`) reruns its own code; make hooks idempotent, since a retry
/// that finishes a step left midway does call them.
#[async_trait]
pub trait LifecycleHooks: Send + Sync + fmt::Debug {
    /// Called once per completed step.
    async fn on_event(&self, event: &LifecycleEvent) -> Result<(), TenancyError>;
}

/// No hooks.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoHooks;

#[async_trait]
impl LifecycleHooks for NoHooks {
    async fn on_event(&self, _event: &LifecycleEvent) -> Result<(), TenancyError> {
        Ok(())
    }
}
