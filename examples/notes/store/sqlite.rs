//! The notes data on SQLite (a database file per tenant), through
//! `SqliteTenancy`'s scoped transactions.

use std::sync::Arc;

use saas_core::{TenantContext, TenantId};
use saas_events::sqlite::SqliteOutbox;
use saas_events::{Event, EventError};
use saas_tenancy::sqlite::{SqliteTenancy, SqliteTenantTx};
use saas_tenancy::{NewTenant, TenantRecord};
use uuid::Uuid;

use super::{
    AuditEntry, Note, NotesStore, Project, ProjectLimit, note_added, notes_store, project_created,
};
use crate::notes::audit::TOPIC;
use crate::notes::error::ApiError;

/// [`NotesStore`] on SQLite files, one per tenant.
pub(crate) struct SqliteStore {
    tenancy: Arc<SqliteTenancy>,
    outbox: SqliteOutbox,
}

impl SqliteStore {
    pub(crate) fn new(tenancy: Arc<SqliteTenancy>) -> Self {
        Self {
            tenancy,
            outbox: SqliteOutbox::new(),
        }
    }
}

impl SqliteStore {
    /// `BEGIN IMMEDIATE`: a deferred SQLite transaction that reads and then
    /// writes fails with "database is locked" when another writer (the
    /// outbox relay, another request) committed in between; an immediate
    /// one waits its turn instead.
    async fn begin_write(&self, ctx: &TenantContext) -> Result<SqliteTenantTx, ApiError> {
        Ok(self.tenancy.begin_immediate(ctx).await?)
    }

    /// Nothing more: the immediate transaction holds the file's write lock,
    /// so project creations of one tenant (its own file) run one at a time.
    async fn lock_projects(_tx: &mut SqliteTenantTx, _tenant: TenantId) -> Result<(), ApiError> {
        Ok(())
    }
}

notes_store!(SqliteStore, SqliteTenantTx);
