//! The app's data: [`Store`], generic over the tenancy backend
//! (PostgreSQL or SQLite). It works only through the tenancy's scoped
//! transactions, and publishes its events to the outbox inside them.

mod sql;

use std::sync::Arc;

use saas_billing::{BillingEngine, NewSubscription};
use saas_core::{ErrorKind, TenantContext, TenantId};
use saas_events::{Event, EventError};
use saas_foundation::problem::Problem;
use saas_foundation::signup::{SignUpError, SignUps, SignedUp};
use saas_foundation::stack::{Stack, StackBackend};
use saas_foundation::subscriptions::CurrentSubscriptions;
use saas_tenancy::{ClusterName, NewTenant, TenantTransaction};
use serde::Serialize;
use serde_json::{Value, json};
use uuid::Uuid;

use self::sql::NotesDatabase;

/// The topic every change is published to; its events feed the audit
/// log.
pub(crate) const TOPIC: &str = "notes.changes";

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
pub(crate) type ProjectLimit<'a> = &'a (dyn Fn(i64) -> Result<(), Problem> + Send + Sync);

/// The event announcing a new project.
pub(crate) fn project_created(tenant: TenantId, project: &Project) -> Result<Event, Problem> {
    event(
        tenant,
        "com.example.notes.project.created",
        "projects",
        project.id,
        &json!(project),
    )
}

/// The event announcing a new note.
pub(crate) fn note_added(tenant: TenantId, note: &Note) -> Result<Event, Problem> {
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
) -> Result<Event, Problem> {
    Ok(Event::new(Some(tenant), event_type, "/notes-api", data)?
        .with_subject(format!("{collection}/{id}")))
}

/// A stack whose database runs the store's SQL: PostgreSQL and SQLite.
pub(crate) trait StoreBackend: StackBackend<Database: NotesDatabase> {}

impl<T: StackBackend<Database: NotesDatabase>> StoreBackend for T {}

/// The app's tenant data, on any [`StoreBackend`]; every method works in
/// the tenant's scoped transaction.
pub(crate) struct Store<T: StoreBackend> {
    stack: Stack<T>,
    sign_ups: SignUps<T>,
    /// Each tenant's subscription and plan, for limits, metering, invoices.
    pub(crate) current: Arc<CurrentSubscriptions>,
}

impl<T: StoreBackend> Store<T> {
    pub(crate) fn new(stack: Stack<T>, billing: BillingEngine) -> Self {
        let sign_ups = SignUps::new(Arc::clone(stack.tenancy()), billing.clone());
        let current = Arc::new(CurrentSubscriptions::new(billing));
        Self {
            stack,
            sign_ups,
            current,
        }
    }

    /// Where new tenants are placed.
    pub(crate) fn cluster(&self) -> &ClusterName {
        self.stack.cluster()
    }

    /// Provisions a tenant (its placement decided by `tenant`) and
    /// subscribes it, or leaves nothing behind.
    pub(crate) async fn sign_up(
        &self,
        tenant: NewTenant,
        subscription: NewSubscription,
    ) -> Result<SignedUp, SignUpError> {
        let signed_up = self.sign_ups.sign_up(tenant, subscription).await?;
        self.current.remember(&signed_up.subscription).await;
        Ok(signed_up)
    }

    /// Creates a project if `limit` allows one more.
    pub(crate) async fn create_project(
        &self,
        ctx: &TenantContext,
        name: &str,
        limit: ProjectLimit<'_>,
    ) -> Result<Project, Problem> {
        let mut tx = self.stack.tenancy().begin_for_write(ctx).await?;
        // One project creation at a time per tenant, so two concurrent
        // requests cannot both pass the plan's limit.
        self.stack
            .serialize_writes(&mut tx, ctx.tenant_id())
            .await?;
        limit(T::Database::count_projects(&mut tx).await?)?;
        let project = Project {
            id: Uuid::now_v7(),
            name: name.to_owned(),
        };
        T::Database::insert_project(&mut tx, ctx.tenant_id(), &project).await?;
        // The event leaves if and only if the project is committed.
        let event = project_created(ctx.tenant_id(), &project)?;
        self.stack.publish(&mut tx, TOPIC, event).await?;
        tx.commit().await?;
        Ok(project)
    }

    /// The tenant's projects, oldest first.
    pub(crate) async fn projects(&self, ctx: &TenantContext) -> Result<Vec<Project>, Problem> {
        let mut tx = self.stack.tenancy().begin(ctx).await?;
        let projects = T::Database::projects(&mut tx).await?;
        tx.commit().await?;
        Ok(projects)
    }

    /// One of the tenant's projects; 404 for any other id.
    pub(crate) async fn project(&self, ctx: &TenantContext, id: Uuid) -> Result<Project, Problem> {
        let mut tx = self.stack.tenancy().begin(ctx).await?;
        let project = find_project::<T::Database>(&mut tx, id).await?;
        tx.commit().await?;
        Ok(project)
    }

    /// Adds a note to one of the tenant's projects.
    pub(crate) async fn add_note(
        &self,
        ctx: &TenantContext,
        project: Uuid,
        body: &str,
    ) -> Result<Note, Problem> {
        let mut tx = self.stack.tenancy().begin_for_write(ctx).await?;
        find_project::<T::Database>(&mut tx, project).await?;
        let note = Note {
            id: Uuid::now_v7(),
            project_id: project,
            body: body.to_owned(),
        };
        T::Database::insert_note(&mut tx, ctx.tenant_id(), &note).await?;
        let event = note_added(ctx.tenant_id(), &note)?;
        self.stack.publish(&mut tx, TOPIC, event).await?;
        tx.commit().await?;
        Ok(note)
    }

    /// A project's notes, oldest first.
    pub(crate) async fn notes(
        &self,
        ctx: &TenantContext,
        project: Uuid,
    ) -> Result<Vec<Note>, Problem> {
        let mut tx = self.stack.tenancy().begin(ctx).await?;
        find_project::<T::Database>(&mut tx, project).await?;
        let notes = T::Database::notes(&mut tx, project).await?;
        tx.commit().await?;
        Ok(notes)
    }

    /// The tenant's audit log, oldest first.
    pub(crate) async fn audit_log(&self, ctx: &TenantContext) -> Result<Vec<AuditEntry>, Problem> {
        let mut tx = self.stack.tenancy().begin(ctx).await?;
        let entries = T::Database::audit_log(&mut tx).await?;
        tx.commit().await?;
        Ok(entries)
    }

    /// Records `event` in the tenant's audit log; a redelivered event is
    /// recorded once.
    pub(crate) async fn record_audit(
        &self,
        ctx: &TenantContext,
        event: &Event,
    ) -> Result<(), EventError> {
        let mut tx = self
            .stack
            .tenancy()
            .begin(ctx)
            .await
            .map_err(EventError::handler)?;
        T::Database::insert_audit(&mut tx, ctx.tenant_id(), event)
            .await
            .map_err(EventError::handler)?;
        tx.commit().await.map_err(EventError::handler)
    }
}

/// The project `id` of the connection's tenant; 404 for any other id.
async fn find_project<DB: NotesDatabase>(
    conn: &mut DB::Connection,
    id: Uuid,
) -> Result<Project, Problem> {
    let name = DB::project_name(conn, id).await?;
    name.map(|name| Project { id, name })
        .ok_or_else(|| Problem::new(ErrorKind::NotFound, "no such project"))
}
