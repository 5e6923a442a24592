//! The backend-generic tenancy API: what host code (handlers, stores,
//! extractors) needs to reach one tenant's data, written once for
//! PostgreSQL and SQLite.

use std::fmt;
use std::ops::DerefMut;

use async_trait::async_trait;
use saas_core::{TenantContext, TenantId};

use crate::catalog::DynCatalog;
use crate::error::TenancyError;
use crate::record::{NewTenant, TenantRecord};
use crate::registry::PoolLease;

/// Scoped access to tenants' data, implemented by
/// [`PgTenancy`](crate::postgres::PgTenancy) and
/// [`SqliteTenancy`](crate::sqlite::SqliteTenancy).
///
/// Every handle it returns is scoped to the context's tenant (row filter,
/// schema or database, as the tenant's placement says) and derefs to the
/// backend's sqlx connection, so host code generic over `T: Tenancy` runs
/// the same queries on either backend. A tenant that does not exist, is
/// not servable, or is being deleted gets an error, never a connection.
///
/// ```
/// use saas_core::TenantContext;
/// use saas_tenancy::{Tenancy, TenancyError, TenantTransaction};
///
/// /// Empties the tenant's notes, on PostgreSQL or SQLite alike.
/// async fn clear_notes<T: Tenancy>(tenancy: &T, ctx: &TenantContext) -> Result<(), TenancyError>
/// where
///     for<'c> &'c mut <T::Database as sqlx::Database>::Connection:
///         sqlx::Executor<'c, Database = T::Database>,
/// {
///     let mut tx = tenancy.begin(ctx).await?;
///     sqlx::raw_sql("DELETE FROM notes").execute(&mut *tx).await?;
///     tx.commit().await
/// }
/// ```
///
/// Queries with bound parameters need sqlx's own bounds on
/// `T::Database` as well (its arguments and the bound types), as any code
/// generic over a sqlx database does.
#[async_trait]
pub trait Tenancy: Send + Sync + fmt::Debug + 'static {
    /// The sqlx database of this backend.
    type Database: sqlx::Database;
    /// A transaction scoped to one tenant.
    type Tx: TenantTransaction<Database = Self::Database>;
    /// A connection scoped to one tenant, for single statements that each
    /// commit on their own.
    type Conn: DerefMut<Target = <Self::Database as sqlx::Database>::Connection>
        + Send
        + fmt::Debug
        + 'static;

    /// Opens a transaction scoped to the context's tenant.
    ///
    /// # Errors
    /// [`TenancyError`]: unknown, suspended or deleted tenant, or the
    /// database's error.
    async fn begin(&self, ctx: &TenantContext) -> Result<Self::Tx, TenancyError>;

    /// Opens a scoped transaction for work that reads and then writes (a
    /// plan-limit check then an insert): a plain transaction on
    /// PostgreSQL, where rows lock as they are written; `BEGIN IMMEDIATE`
    /// on SQLite, whose deferred transactions cannot upgrade a stale
    /// snapshot to a write.
    ///
    /// # Errors
    /// As [`Tenancy::begin`].
    async fn begin_for_write(&self, ctx: &TenantContext) -> Result<Self::Tx, TenancyError>;

    /// A connection scoped to the context's tenant.
    ///
    /// # Errors
    /// As [`Tenancy::begin`].
    async fn acquire(&self, ctx: &TenantContext) -> Result<Self::Conn, TenancyError>;

    /// Enters the tenant in the catalog, creates its storage (as its
    /// placement says), runs the tenant migrations and marks it active.
    /// Interrupted midway, the tenant stays `provisioning`:
    /// [`Tenancy::retry_provisioning`] finishes it.
    ///
    /// # Errors
    /// [`TenancyError::AlreadyExists`] for a slug or id taken by another
    /// tenant, an unknown cluster, a placement the backend cannot serve,
    /// or the database's error.
    async fn provision(&self, tenant: NewTenant) -> Result<TenantRecord, TenancyError>;

    /// Finishes provisioning a tenant left `provisioning`; an active
    /// tenant is returned as is.
    ///
    /// # Errors
    /// [`TenancyError::TenantNotFound`], [`TenancyError::InvalidTransition`]
    /// for a tenant in another status, or the database's error.
    async fn retry_provisioning(&self, tenant: TenantId) -> Result<TenantRecord, TenancyError>;

    /// Suspends the tenant: new scoped handles are refused (those open
    /// finish), its data is kept.
    ///
    /// # Errors
    /// [`TenancyError::TenantNotFound`], [`TenancyError::InvalidTransition`]
    /// from a status other than active or suspended, or the database's
    /// error.
    async fn suspend(&self, tenant: TenantId) -> Result<TenantRecord, TenancyError>;

    /// Resumes a suspended tenant.
    ///
    /// # Errors
    /// As [`Tenancy::suspend`].
    async fn resume(&self, tenant: TenantId) -> Result<TenantRecord, TenancyError>;

    /// Deletes the tenant and all its data; the record, marked deleted,
    /// is returned. Repeating it is harmless.
    ///
    /// # Errors
    /// [`TenancyError::TenantNotFound`], or the database's error (the
    /// deletion is resumed by a retry).
    async fn delete_tenant(&self, tenant: TenantId) -> Result<TenantRecord, TenancyError>;

    /// The tenant catalog.
    fn catalog(&self) -> &DynCatalog;

    /// The pool on a database tenant's own database, lent from the tenant
    /// pool registry for background work (an outbox relay pass): within
    /// the registry's budget, not evicted while the lease lives.
    ///
    /// # Errors
    /// A tenant that is not servable, [`TenancyError::Unsupported`] for
    /// one without a database of its own, [`TenancyError::Timeout`] when
    /// the budget stays taken.
    async fn lease_database_pool(
        &self,
        tenant: TenantId,
    ) -> Result<PoolLease<Self::Database>, TenancyError>;

    /// The context for background work that knows only the tenant's id (a
    /// job, an event consumer): read from the catalog, so the slug is the
    /// tenant's own. Scoped access takes a context ([`Tenancy::begin`]);
    /// lifecycle operations take the id.
    ///
    /// # Errors
    /// [`TenancyError::TenantNotFound`], or the catalog's error.
    async fn context(&self, tenant: TenantId) -> Result<TenantContext, TenancyError> {
        let record = self
            .catalog()
            .get(tenant)
            .await?
            .ok_or_else(|| TenancyError::TenantNotFound(format!("with id {tenant}")))?;
        Ok(TenantContext::new(record.id, record.slug))
    }
}

/// A transaction scoped to one tenant: derefs to the backend's connection;
/// dropped without [`commit`](TenantTransaction::commit), it rolls back.
#[async_trait]
pub trait TenantTransaction:
    DerefMut<Target = <Self::Database as sqlx::Database>::Connection> + Send + fmt::Debug + 'static
{
    /// The sqlx database of this backend.
    type Database: sqlx::Database;

    /// Commits.
    ///
    /// # Errors
    /// The database's error; nothing is committed then.
    async fn commit(self) -> Result<(), TenancyError>;

    /// Rolls back.
    ///
    /// # Errors
    /// The database's error (the transaction is rolled back anyway when
    /// the connection closes).
    async fn rollback(self) -> Result<(), TenancyError>;
}

#[cfg(feature = "postgres")]
mod pg {
    use super::*;
    use crate::postgres::{PgTenancy, PgTenantConn, PgTenantTx};

    #[async_trait]
    impl Tenancy for PgTenancy {
        type Database = sqlx::Postgres;
        type Tx = PgTenantTx;
        type Conn = PgTenantConn;

        async fn begin(&self, ctx: &TenantContext) -> Result<PgTenantTx, TenancyError> {
            PgTenancy::begin(self, ctx).await
        }

        async fn begin_for_write(&self, ctx: &TenantContext) -> Result<PgTenantTx, TenancyError> {
            PgTenancy::begin(self, ctx).await
        }

        async fn acquire(&self, ctx: &TenantContext) -> Result<PgTenantConn, TenancyError> {
            PgTenancy::acquire(self, ctx).await
        }

        async fn provision(&self, tenant: NewTenant) -> Result<TenantRecord, TenancyError> {
            PgTenancy::provision(self, tenant).await
        }

        async fn retry_provisioning(&self, tenant: TenantId) -> Result<TenantRecord, TenancyError> {
            PgTenancy::retry_provisioning(self, tenant).await
        }

        async fn suspend(&self, tenant: TenantId) -> Result<TenantRecord, TenancyError> {
            PgTenancy::suspend(self, tenant).await
        }

        async fn resume(&self, tenant: TenantId) -> Result<TenantRecord, TenancyError> {
            PgTenancy::resume(self, tenant).await
        }

        async fn delete_tenant(&self, tenant: TenantId) -> Result<TenantRecord, TenancyError> {
            PgTenancy::delete_tenant(self, tenant).await
        }

        async fn lease_database_pool(
            &self,
            tenant: TenantId,
        ) -> Result<PoolLease<sqlx::Postgres>, TenancyError> {
            PgTenancy::lease_database_pool(self, tenant).await
        }

        fn catalog(&self) -> &DynCatalog {
            PgTenancy::catalog(self)
        }
    }

    #[async_trait]
    impl TenantTransaction for PgTenantTx {
        type Database = sqlx::Postgres;

        async fn commit(self) -> Result<(), TenancyError> {
            PgTenantTx::commit(self).await
        }

        async fn rollback(self) -> Result<(), TenancyError> {
            PgTenantTx::rollback(self).await
        }
    }
}

#[cfg(feature = "sqlite")]
mod lite {
    use super::*;
    use crate::sqlite::{SqliteTenancy, SqliteTenantConn, SqliteTenantTx};

    #[async_trait]
    impl Tenancy for SqliteTenancy {
        type Database = sqlx::Sqlite;
        type Tx = SqliteTenantTx;
        type Conn = SqliteTenantConn;

        async fn begin(&self, ctx: &TenantContext) -> Result<SqliteTenantTx, TenancyError> {
            SqliteTenancy::begin(self, ctx).await
        }

        async fn begin_for_write(
            &self,
            ctx: &TenantContext,
        ) -> Result<SqliteTenantTx, TenancyError> {
            SqliteTenancy::begin_immediate(self, ctx).await
        }

        async fn acquire(&self, ctx: &TenantContext) -> Result<SqliteTenantConn, TenancyError> {
            SqliteTenancy::acquire(self, ctx).await
        }

        async fn provision(&self, tenant: NewTenant) -> Result<TenantRecord, TenancyError> {
            SqliteTenancy::provision(self, tenant).await
        }

        async fn retry_provisioning(&self, tenant: TenantId) -> Result<TenantRecord, TenancyError> {
            SqliteTenancy::retry_provisioning(self, tenant).await
        }

        async fn suspend(&self, tenant: TenantId) -> Result<TenantRecord, TenancyError> {
            SqliteTenancy::suspend(self, tenant).await
        }

        async fn resume(&self, tenant: TenantId) -> Result<TenantRecord, TenancyError> {
            SqliteTenancy::resume(self, tenant).await
        }

        async fn delete_tenant(&self, tenant: TenantId) -> Result<TenantRecord, TenancyError> {
            SqliteTenancy::delete_tenant(self, tenant).await
        }

        async fn lease_database_pool(
            &self,
            tenant: TenantId,
        ) -> Result<PoolLease<sqlx::Sqlite>, TenancyError> {
            SqliteTenancy::lease_database_pool(self, tenant).await
        }

        fn catalog(&self) -> &DynCatalog {
            SqliteTenancy::catalog(self)
        }
    }

    #[async_trait]
    impl TenantTransaction for SqliteTenantTx {
        type Database = sqlx::Sqlite;

        async fn commit(self) -> Result<(), TenancyError> {
            SqliteTenantTx::commit(self).await
        }

        async fn rollback(self) -> Result<(), TenancyError> {
            SqliteTenantTx::rollback(self).await
        }
    }
}
