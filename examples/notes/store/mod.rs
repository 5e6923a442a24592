//! The app's data, behind one trait with a PostgreSQL and a SQLite
//! implementation. Each works only through the tenancy's scoped
//! transactions, and publishes its events to the outbox inside them.

mod pg;
mod sqlite;

pub(crate) use pg::PgStore;
pub(crate) use sqlite::SqliteStore;

use async_trait::async_trait;
use saas_core::{TenantContext, TenantId};
use saas_events::{Event, EventError};
use saas_tenancy::{NewTenant, TenantRecord};
use serde::Serialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::error::ApiError;

/// A project as the API shows it.
#[derive(Debug, Serialize)]
pub(crate) struct Project {
    pub(crate) id: Uuid,
    pub(crate) name: String,
}

/// A note as the API shows it.
#[derive(Debug, Serialize)]
pub(crate) struct Note {
    pub(crate) id: Uuid,
    pub(crate) project_id: Uuid,
    pub(crate) body: String,
}

/// One audit-log line.
#[derive(Debug, Serialize)]
pub(crate) struct AuditEntry {
    #[serde(rename = "type")]
    pub(crate) event_type: String,
    pub(crate) subject: Option<String>,
    pub(crate) time: Option<chrono::DateTime<chrono::Utc>>,
}

/// Decides, from the tenant's current project count, whether one more is
/// allowed (the plan's limit); called inside the creating transaction.
pub(crate) type ProjectLimit<'a> = &'a (dyn Fn(i64) -> Result<(), ApiError> + Send + Sync);

/// The app's tenant data.
#[async_trait]
pub(crate) trait NotesStore: Send + Sync {
    /// Provisions a tenant (its placement decided by `tenant`).
    async fn provision(&self, tenant: NewTenant) -> Result<TenantRecord, ApiError>;
    /// Deletes a tenant and its data (to undo a failed sign-up).
    async fn delete(&self, tenant: TenantId) -> Result<(), ApiError>;
    /// Creates a project if `limit` allows one more.
    async fn create_project(
        &self,
        ctx: &TenantContext,
        name: &str,
        limit: ProjectLimit<'_>,
    ) -> Result<Project, ApiError>;
    /// The tenant's projects, oldest first.
    async fn projects(&self, ctx: &TenantContext) -> Result<Vec<Project>, ApiError>;
    /// One of the tenant's projects; 404 for any other id.
    async fn project(&self, ctx: &TenantContext, id: Uuid) -> Result<Project, ApiError>;
    /// Adds a note to one of the tenant's projects.
    async fn add_note(
        &self,
        ctx: &TenantContext,
        project: Uuid,
        body: &str,
    ) -> Result<Note, ApiError>;
    /// A project's notes, oldest first.
    async fn notes(&self, ctx: &TenantContext, project: Uuid) -> Result<Vec<Note>, ApiError>;
    /// The tenant's audit log, oldest first.
    async fn audit_log(&self, ctx: &TenantContext) -> Result<Vec<AuditEntry>, ApiError>;
    /// Records `event` in the tenant's audit log; a redelivered event is
    /// recorded once.
    async fn record_audit(&self, ctx: &TenantContext, event: &Event) -> Result<(), EventError>;
}

/// The event announcing a new project.
pub(crate) fn project_created(tenant: TenantId, project: &Project) -> Result<Event, ApiError> {
    event(
        tenant,
        "com.example.notes.project.created",
        "projects",
        project.id,
        &json!(project),
    )
}

/// The event announcing a new note.
pub(crate) fn note_added(tenant: TenantId, note: &Note) -> Result<Event, ApiError> {
    event(
        tenant,
        "com.example.notes.note.added",
        "notes",
        note.id,
        &json!(note),
    )
}

fn event(
    tenant: TenantId,
    event_type: &str,
    collection: &str,
    id: Uuid,
    data: &Value,
) -> Result<Event, ApiError> {
    Ok(Event::new(Some(tenant), event_type, "/notes-api", data)?
        .with_subject(format!("{collection}/{id}")))
}
