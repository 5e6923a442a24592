//! The store's SQL, written once for every sqlx database that can run it.
//!
//! The text is the same on both backends: `$n` parameters are positional
//! on PostgreSQL and, used in order, on SQLite; ids are UUIDv7, so
//! `ORDER BY id` is creation order.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use saas_core::TenantId;
use saas_events::Event;
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Type};
use uuid::Uuid;

use super::{AuditEntry, Note, Project};

/// The store's queries, on a connection of a sqlx database that can run
/// them: PostgreSQL and SQLite.
///
/// The queries are here, in the one blanket impl, rather than in the
/// store: that impl is the only place stating the sqlx bounds they need
/// (Rust implies a trait's bounds on `Self` for its users, but not bounds
/// on other types, such as `Uuid: Encode<'_, Self>`), so code that runs
/// them only needs `T::Database: NotesDatabase`.
#[async_trait]
pub(crate) trait NotesDatabase: Database {
    /// The number of projects the connection's tenant has.
    async fn count_projects(conn: &mut Self::Connection) -> sqlx::Result<i64>;
    /// Inserts a project.
    async fn insert_project(
        conn: &mut Self::Connection,
        tenant: TenantId,
        project: &Project,
    ) -> sqlx::Result<()>;
    /// The name of the project `id`, if the tenant has it.
    async fn project_name(conn: &mut Self::Connection, id: Uuid) -> sqlx::Result<Option<String>>;
    /// The tenant's projects, oldest first.
    async fn projects(conn: &mut Self::Connection) -> sqlx::Result<Vec<Project>>;
    /// Inserts a note.
    async fn insert_note(
        conn: &mut Self::Connection,
        tenant: TenantId,
        note: &Note,
    ) -> sqlx::Result<()>;
    /// A project's notes, oldest first.
    async fn notes(conn: &mut Self::Connection, project: Uuid) -> sqlx::Result<Vec<Note>>;
    /// The tenant's audit log, oldest first.
    async fn audit_log(conn: &mut Self::Connection) -> sqlx::Result<Vec<AuditEntry>>;
    /// Records `event` in the audit log, unless it is there already.
    async fn insert_audit(
        conn: &mut Self::Connection,
        tenant: TenantId,
        event: &Event,
    ) -> sqlx::Result<()>;
}

#[async_trait]
impl<DB: Database> NotesDatabase for DB
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    usize: ColumnIndex<DB::Row>,
    for<'a> Uuid: Encode<'a, DB> + Decode<'a, DB> + Type<DB>,
    for<'a> &'a str: Encode<'a, DB> + Type<DB>,
    for<'a> Option<&'a str>: Encode<'a, DB>,
    for<'a> String: Decode<'a, DB> + Type<DB>,
    for<'a> i64: Decode<'a, DB> + Type<DB>,
    for<'a> DateTime<Utc>: Decode<'a, DB> + Type<DB>,
    for<'a> Option<DateTime<Utc>>: Encode<'a, DB>,
{
    async fn count_projects(conn: &mut DB::Connection) -> sqlx::Result<i64> {
        sqlx::query_scalar("SELECT count(*) FROM projects")
            .fetch_one(conn)
            .await
    }

    async fn insert_project(
        conn: &mut DB::Connection,
        tenant: TenantId,
        project: &Project,
    ) -> sqlx::Result<()> {
        sqlx::query("INSERT INTO projects (tenant_id, id, name) VALUES ($1, $2, $3)")
            .bind(tenant)
            .bind(project.id)
            .bind(project.name.as_str())
            .execute(conn)
            .await?;
        Ok(())
    }

    async fn project_name(conn: &mut DB::Connection, id: Uuid) -> sqlx::Result<Option<String>> {
        sqlx::query_scalar("SELECT name FROM projects WHERE id = $1")
            .bind(id)
            .fetch_optional(conn)
            .await
    }

    async fn projects(conn: &mut DB::Connection) -> sqlx::Result<Vec<Project>> {
        let rows: Vec<(Uuid, String)> = sqlx::query_as("SELECT id, name FROM projects ORDER BY id")
            .fetch_all(conn)
            .await?;
        Ok(rows
            .into_iter()
            .map(|(id, name)| Project { id, name })
            .collect())
    }

    async fn insert_note(
        conn: &mut DB::Connection,
        tenant: TenantId,
        note: &Note,
    ) -> sqlx::Result<()> {
        sqlx::query("INSERT INTO notes (tenant_id, id, project_id, body) VALUES ($1, $2, $3, $4)")
            .bind(tenant)
            .bind(note.id)
            .bind(note.project_id)
            .bind(note.body.as_str())
            .execute(conn)
            .await?;
        Ok(())
    }

    async fn notes(conn: &mut DB::Connection, project: Uuid) -> sqlx::Result<Vec<Note>> {
        let rows: Vec<(Uuid, String)> =
            sqlx::query_as("SELECT id, body FROM notes WHERE project_id = $1 ORDER BY id")
                .bind(project)
                .fetch_all(conn)
                .await?;
        Ok(rows
            .into_iter()
            .map(|(id, body)| Note {
                id,
                project_id: project,
                body,
            })
            .collect())
    }

    async fn audit_log(conn: &mut DB::Connection) -> sqlx::Result<Vec<AuditEntry>> {
        let rows: Vec<(String, Option<String>, Option<DateTime<Utc>>)> = sqlx::query_as(
            "SELECT event_type, subject, occurred_at FROM audit_log \
             ORDER BY occurred_at, event_id",
        )
        .fetch_all(conn)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(event_type, subject, time)| AuditEntry {
                event_type,
                subject,
                time,
            })
            .collect())
    }

    async fn insert_audit(
        conn: &mut DB::Connection,
        tenant: TenantId,
        event: &Event,
    ) -> sqlx::Result<()> {
        // At-least-once delivery: the key makes a redelivery a no-op.
        sqlx::query(
            "INSERT INTO audit_log (tenant_id, event_id, event_type, subject, occurred_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        )
        .bind(tenant)
        .bind(event.id())
        .bind(event.event_type())
        .bind(event.subject())
        .bind(event.time())
        .execute(conn)
        .await?;
        Ok(())
    }
}
