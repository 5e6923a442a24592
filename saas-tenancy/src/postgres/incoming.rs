//! The PostgreSQL side of a move *from* SQLite (see
//! `SqliteTenancy::move_tenant_to_postgres`): the target schema
//! provisioned with the tenant migrations, an admin connection to fill
//! it, and its removal when the move is aborted.

use sqlx::Postgres;
use sqlx::pool::PoolConnection;

use super::PgTenancy;
use crate::error::TenancyError;
use crate::placement::{Placement, TenantObjectName};

impl PgTenancy {
    /// The schema a move from SQLite fills, created (with the tenant
    /// migrations) if missing; only schema targets are supported.
    pub(crate) async fn incoming_schema(
        &self,
        to: &Placement,
    ) -> Result<TenantObjectName, TenancyError> {
        let Placement::Schema { cluster, schema } = to else {
            return Err(TenancyError::Unsupported(
                "a move from SQLite to PostgreSQL targets a schema placement".to_owned(),
            ));
        };
        self.provision_schema(self.cluster(cluster)?, schema)
            .await?;
        Ok(schema.clone())
    }

    /// An admin connection to `to`'s cluster.
    pub(crate) async fn incoming_admin(
        &self,
        to: &Placement,
    ) -> Result<PoolConnection<Postgres>, TenancyError> {
        Ok(self.cluster(to.cluster())?.admin.acquire().await?)
    }

    /// Drops the schema an aborted move from SQLite created, with its
    /// tenant role.
    pub(crate) async fn drop_incoming_schema(&self, to: &Placement) -> Result<(), TenancyError> {
        let Placement::Schema { cluster, schema } = to else {
            return Ok(());
        };
        let mut conn = self.cluster(cluster)?.admin.acquire().await?;
        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
        super::lifecycle::drop_schema(&mut tx, schema).await?;
        tx.commit().await?;
        Ok(())
    }
}
