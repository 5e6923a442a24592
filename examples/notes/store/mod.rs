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

/// The one implementation of [`NotesStore`], stamped out per backend. The
/// SQL is the same on both: `$n` parameters are positional on PostgreSQL
/// and, used in order, on SQLite; ids are UUIDv7, so `ORDER BY id` is
/// creation order. What differs is defined next to each use:
/// `begin_write` (a transaction that reads, then writes) and
/// `lock_projects` (serialise project creation per tenant).
macro_rules! notes_store {
    ($store:ident, $tx:ty) => {
        async fn find_project(tx: &mut $tx, id: Uuid) -> Result<Project, ApiError> {
            let name: Option<String> =
                sqlx::query_scalar("SELECT name FROM projects WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&mut **tx)
                    .await?;
            name.map(|name| Project { id, name })
                .ok_or_else(|| ApiError::not_found("project"))
        }

        #[::async_trait::async_trait]
        impl NotesStore for $store {
            async fn provision(&self, tenant: NewTenant) -> Result<TenantRecord, ApiError> {
                Ok(self.tenancy.provision(tenant).await?)
            }

            async fn delete(&self, tenant: TenantId) -> Result<(), ApiError> {
                self.tenancy.delete_tenant(tenant).await?;
                Ok(())
            }

            async fn create_project(
                &self,
                ctx: &TenantContext,
                name: &str,
                limit: ProjectLimit<'_>,
            ) -> Result<Project, ApiError> {
                let mut tx = self.begin_write(ctx).await?;
                // One project creation at a time per tenant, so two concurrent
                // requests cannot both pass the plan's limit.
                Self::lock_projects(&mut tx, ctx.tenant_id()).await?;
                let used: i64 = sqlx::query_scalar("SELECT count(*) FROM projects")
                    .fetch_one(&mut *tx)
                    .await?;
                limit(used)?;
                let project = Project {
                    id: Uuid::now_v7(),
                    name: name.to_owned(),
                };
                sqlx::query("INSERT INTO projects (tenant_id, id, name) VALUES ($1, $2, $3)")
                    .bind(ctx.tenant_id())
                    .bind(project.id)
                    .bind(name)
                    .execute(&mut *tx)
                    .await?;
                // The event leaves if and only if the project is committed.
                let event = project_created(ctx.tenant_id(), &project)?;
                self.outbox.publish(&mut tx, TOPIC, event).await?;
                tx.commit().await?;
                Ok(project)
            }

            async fn projects(&self, ctx: &TenantContext) -> Result<Vec<Project>, ApiError> {
                let mut tx = self.tenancy.begin(ctx).await?;
                let rows: Vec<(Uuid, String)> =
                    sqlx::query_as("SELECT id, name FROM projects ORDER BY id")
                        .fetch_all(&mut *tx)
                        .await?;
                tx.commit().await?;
                Ok(rows
                    .into_iter()
                    .map(|(id, name)| Project { id, name })
                    .collect())
            }

            async fn project(&self, ctx: &TenantContext, id: Uuid) -> Result<Project, ApiError> {
                let mut tx = self.tenancy.begin(ctx).await?;
                let project = find_project(&mut tx, id).await?;
                tx.commit().await?;
                Ok(project)
            }

            async fn add_note(
                &self,
                ctx: &TenantContext,
                project: Uuid,
                body: &str,
            ) -> Result<Note, ApiError> {
                let mut tx = self.begin_write(ctx).await?;
                find_project(&mut tx, project).await?;
                let note = Note {
                    id: Uuid::now_v7(),
                    project_id: project,
                    body: body.to_owned(),
                };
                sqlx::query(
                    "INSERT INTO notes (tenant_id, id, project_id, body) VALUES ($1, $2, $3, $4)",
                )
                .bind(ctx.tenant_id())
                .bind(note.id)
                .bind(project)
                .bind(body)
                .execute(&mut *tx)
                .await?;
                let event = note_added(ctx.tenant_id(), &note)?;
                self.outbox.publish(&mut tx, TOPIC, event).await?;
                tx.commit().await?;
                Ok(note)
            }

            async fn notes(
                &self,
                ctx: &TenantContext,
                project: Uuid,
            ) -> Result<Vec<Note>, ApiError> {
                let mut tx = self.tenancy.begin(ctx).await?;
                find_project(&mut tx, project).await?;
                let rows: Vec<(Uuid, String)> =
                    sqlx::query_as("SELECT id, body FROM notes WHERE project_id = $1 ORDER BY id")
                        .bind(project)
                        .fetch_all(&mut *tx)
                        .await?;
                tx.commit().await?;
                Ok(rows
                    .into_iter()
                    .map(|(id, body)| Note {
                        id,
                        project_id: project,
                        body,
                    })
                    .collect())
            }

            async fn audit_log(&self, ctx: &TenantContext) -> Result<Vec<AuditEntry>, ApiError> {
                let mut tx = self.tenancy.begin(ctx).await?;
                let rows: Vec<(
                    String,
                    Option<String>,
                    Option<chrono::DateTime<chrono::Utc>>,
                )> = sqlx::query_as(
                    "SELECT event_type, subject, occurred_at FROM audit_log \
                         ORDER BY occurred_at, event_id",
                )
                .fetch_all(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(rows
                    .into_iter()
                    .map(|(event_type, subject, time)| AuditEntry {
                        event_type,
                        subject,
                        time,
                    })
                    .collect())
            }

            async fn record_audit(
                &self,
                ctx: &TenantContext,
                event: &Event,
            ) -> Result<(), EventError> {
                let mut tx = self.tenancy.begin(ctx).await.map_err(EventError::handler)?;
                // At-least-once delivery: the key makes a redelivery a no-op.
                sqlx::query(
                    "INSERT INTO audit_log (tenant_id, event_id, event_type, subject, occurred_at) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                )
                .bind(ctx.tenant_id())
                .bind(event.id())
                .bind(event.event_type())
                .bind(event.subject())
                .bind(event.time())
                .execute(&mut *tx)
                .await
                .map_err(EventError::handler)?;
                tx.commit().await.map_err(EventError::handler)
            }
        }
    };
}

pub(crate) use notes_store;
