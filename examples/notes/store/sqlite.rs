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
    /// The file's write lock, held to the commit: one writer per file.
    async fn lock_projects(tx: &mut SqliteTenantTx, _tenant: TenantId) -> Result<(), ApiError> {
        Self::start_writing(tx).await
    }

    /// Starts the transaction's write (a write statement takes the file's
    /// write lock, even one that changes nothing). A deferred SQLite
    /// transaction that reads and then writes fails with "database is
    /// locked" when another writer — the outbox relay, another request —
    /// committed in between; writing first makes it wait its turn instead
    /// (up to the busy timeout).
    async fn start_writing(tx: &mut SqliteTenantTx) -> Result<(), ApiError> {
        sqlx::query("UPDATE projects SET name = name WHERE 0")
            .execute(&mut **tx)
            .await?;
        Ok(())
    }
}

notes_store!(SqliteStore, SqliteTenantTx);
