//! What the notes store does its own way on SQLite.

use async_trait::async_trait;
use saas_core::TenantId;
use saas_events::sqlite::SqliteOutbox;
use saas_events::{Event, EventError};
use saas_tenancy::sqlite::SqliteTenancy;
use sqlx::SqliteConnection;

use super::StoreBackend;

#[async_trait]
impl StoreBackend for SqliteTenancy {
    type Outbox = SqliteOutbox;

    /// Nothing to do: `begin_for_write` is `BEGIN IMMEDIATE`, which holds
    /// the database's write lock, so writers run one at a time.
    async fn lock_projects(_conn: &mut SqliteConnection, _tenant: TenantId) -> sqlx::Result<()> {
        Ok(())
    }

    async fn publish(
        outbox: &SqliteOutbox,
        conn: &mut SqliteConnection,
        topic: &str,
        event: Event,
    ) -> Result<(), EventError> {
        outbox.publish(conn, topic, event).await
    }
}
