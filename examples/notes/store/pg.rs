//! The notes data on PostgreSQL, through `PgTenancy`'s scoped transactions.

use std::sync::Arc;

use saas_core::{TenantContext, TenantId};
use saas_events::postgres::PgOutbox;
use saas_events::{Event, EventError};
use saas_tenancy::postgres::{PgTenancy, TenantTx};
use saas_tenancy::{NewTenant, TenantRecord};
use uuid::Uuid;

use super::{
    AuditEntry, Note, NotesStore, Project, ProjectLimit, note_added, notes_store, project_created,
};
use crate::notes::audit::TOPIC;
use crate::notes::error::ApiError;

/// [`NotesStore`] on PostgreSQL: row, schema or database tenants alike —
/// the SQL never names a tenant; the scoped transaction does.
pub(crate) struct PgStore {
    tenancy: Arc<PgTenancy>,
    outbox: PgOutbox,
}

impl PgStore {
    pub(crate) fn new(tenancy: Arc<PgTenancy>) -> Self {
        Self {
            tenancy,
            outbox: PgOutbox::new(),
        }
    }
}

impl PgStore {
    /// A transaction-scoped advisory lock on the tenant's projects.
    async fn lock_projects(tx: &mut TenantTx, tenant: TenantId) -> Result<(), ApiError> {
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1::text, 0))")
            .bind(tenant)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// A plain scoped transaction: PostgreSQL rows lock as they are
    /// written.
    async fn begin_write(&self, ctx: &TenantContext) -> Result<TenantTx, ApiError> {
        Ok(self.tenancy.begin(ctx).await?)
    }
}

notes_store!(PgStore, TenantTx);
