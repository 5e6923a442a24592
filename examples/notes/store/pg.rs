//! What the notes store does its own way on PostgreSQL.

use async_trait::async_trait;
use saas_core::TenantId;
use saas_events::postgres::PgOutbox;
use saas_events::{Event, EventError};
use saas_tenancy::postgres::PgTenancy;
use sqlx::PgConnection;

use super::StoreBackend;

#[async_trait]
impl StoreBackend for PgTenancy {
    type Outbox = PgOutbox;

    /// A transaction-scoped advisory lock on the tenant's projects: rows
    /// lock only as they are written, and counting writes none.
    async fn lock_projects(conn: &mut PgConnection, tenant: TenantId) -> sqlx::Result<()> {
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1::text, 0))")
            .bind(tenant)
            .execute(conn)
            .await
            .map(drop)
    }

    async fn publish(
        outbox: &PgOutbox,
        conn: &mut PgConnection,
        topic: &str,
        event: Event,
    ) -> Result<(), EventError> {
        outbox.publish(conn, topic, event).await
    }
}
