//! The notes data on SQLite (a database file per tenant), through
//! `SqliteTenancy`'s scoped transactions.

use std::sync::Arc;

use async_trait::async_trait;
use saas_core::{TenantContext, TenantId};
use saas_events::sqlite::SqliteOutbox;
use saas_events::{Event, EventError};
use saas_tenancy::sqlite::{SqliteTenancy, SqliteTenantTx};
use saas_tenancy::{NewTenant, TenantRecord};
use uuid::Uuid;

use super::{AuditEntry, Note, NotesStore, Project, ProjectLimit, note_added, project_created};
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

async fn find_project(tx: &mut SqliteTenantTx, id: Uuid) -> Result<Project, ApiError> {
    let name: Option<String> = sqlx::query_scalar("SELECT name FROM projects WHERE id = ?")
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?;
    name.map(|name| Project { id, name })
        .ok_or_else(|| ApiError::not_found("project"))
}

/// Starts the transaction's write (a write statement takes the file's write
/// lock, even one that changes nothing). A deferred SQLite transaction that
/// reads and then writes fails with "database is locked" when another
/// writer — the outbox relay, another request — committed in between;
/// writing first makes it wait its turn instead (up to the busy timeout).
async fn take_write_lock(tx: &mut SqliteTenantTx) -> Result<(), ApiError> {
    sqlx::query("UPDATE projects SET name = name WHERE 0")
        .execute(&mut **tx)
        .await?;
    Ok(())
}

#[async_trait]
impl NotesStore for SqliteStore {
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
        let mut tx = self.tenancy.begin(ctx).await?;
        // Two concurrent requests cannot both pass the plan's limit: the
        // file's write lock is held from here to the commit.
        take_write_lock(&mut tx).await?;
        let used: i64 = sqlx::query_scalar("SELECT count(*) FROM projects")
            .fetch_one(&mut *tx)
            .await?;
        limit(used)?;
        let project = Project {
            id: Uuid::now_v7(),
            name: name.to_owned(),
        };
        sqlx::query("INSERT INTO projects (tenant_id, id, name) VALUES (?, ?, ?)")
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
            sqlx::query_as("SELECT id, name FROM projects ORDER BY rowid")
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
        let mut tx = self.tenancy.begin(ctx).await?;
        take_write_lock(&mut tx).await?;
        find_project(&mut tx, project).await?;
        let note = Note {
            id: Uuid::now_v7(),
            project_id: project,
            body: body.to_owned(),
        };
        sqlx::query("INSERT INTO notes (tenant_id, id, project_id, body) VALUES (?, ?, ?, ?)")
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

    async fn notes(&self, ctx: &TenantContext, project: Uuid) -> Result<Vec<Note>, ApiError> {
        let mut tx = self.tenancy.begin(ctx).await?;
        find_project(&mut tx, project).await?;
        let rows: Vec<(Uuid, String)> =
            sqlx::query_as("SELECT id, body FROM notes WHERE project_id = ? ORDER BY rowid")
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
                 ORDER BY rowid",
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

    async fn record_audit(&self, ctx: &TenantContext, event: &Event) -> Result<(), EventError> {
        let mut tx = self.tenancy.begin(ctx).await.map_err(EventError::handler)?;
        // At-least-once delivery: the key makes a redelivery a no-op.
        sqlx::query(
            "INSERT INTO audit_log (tenant_id, event_id, event_type, subject, occurred_at) \
             VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
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
