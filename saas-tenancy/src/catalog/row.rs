//! The SQL catalogs' statements and row decoding, written once for
//! PostgreSQL and SQLite.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use saas_core::{SharedClock, TenantId, TenantSlug, TenantStatus};
use serde_json::{Map, Value};
use sqlx::{Database, Encode, Executor, IntoArguments, Pool, Type};
use uuid::Uuid;

use super::{Catalog, check_transition, cut_over_outcome};
use crate::error::TenancyError;
use crate::placement::Placement;
use crate::record::{ListOptions, NewTenant, TenantPage, TenantRecord, allowed_from, parse_status};

/// The catalog columns, in the order [`StoredTenant::read`] reads them.
/// A macro so statements stay `&'static str` literals (sqlx refuses
/// runtime-built SQL unless it is audited).
macro_rules! tenant_columns {
    () => {
        "id, slug, display_name, status, strategy, cluster, object_name, created_at, updated_at, metadata"
    };
}
pub(super) use tenant_columns;

/// A catalog row as read from the database, before validation.
pub(super) struct StoredTenant {
    pub(super) id: Uuid,
    pub(super) slug: String,
    pub(super) display_name: String,
    pub(super) status: String,
    pub(super) strategy: String,
    pub(super) cluster: String,
    pub(super) object_name: Option<String>,
    pub(super) created_at: DateTime<Utc>,
    pub(super) updated_at: DateTime<Utc>,
    pub(super) metadata: Value,
}

impl StoredTenant {
    /// Reads the row through sqlx's generic `Row` API.
    pub(super) fn read<'r, R>(row: &'r R) -> Result<Self, TenancyError>
    where
        R: sqlx::Row,
        usize: sqlx::ColumnIndex<R>,
        Uuid: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
        String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
        Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
        DateTime<Utc>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
        sqlx::types::Json<Value>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    {
        Ok(Self {
            id: row.try_get(0)?,
            slug: row.try_get(1)?,
            display_name: row.try_get(2)?,
            status: row.try_get(3)?,
            strategy: row.try_get(4)?,
            cluster: row.try_get(5)?,
            object_name: row.try_get(6)?,
            created_at: row.try_get(7)?,
            updated_at: row.try_get(8)?,
            metadata: row.try_get::<sqlx::types::Json<Value>, _>(9)?.0,
        })
    }

    /// Validates every field.
    pub(super) fn into_record(self) -> Result<TenantRecord, TenancyError> {
        let corrupt = |what: &str, e: &dyn std::fmt::Display| {
            TenancyError::Corrupt(format!("tenant {}: {what}: {e}", self.id))
        };
        let id = TenantId::from_uuid(self.id).map_err(|e| corrupt("id", &e))?;
        let slug = TenantSlug::parse(&self.slug).map_err(|e| corrupt("slug", &e))?;
        let metadata: Map<String, Value> = match self.metadata {
            Value::Object(map) => map,
            other => return Err(corrupt("metadata", &format!("not an object: {other}"))),
        };
        Ok(TenantRecord {
            id,
            slug,
            display_name: self.display_name,
            status: parse_status(&self.status)?,
            placement: Placement::from_parts(
                &self.strategy,
                &self.cluster,
                self.object_name.as_deref(),
            )?,
            created_at: self.created_at,
            updated_at: self.updated_at,
            metadata,
        })
    }
}

/// What differs between the SQL catalogs' statements: the listing, whose
/// optional filters PostgreSQL needs typed (`$1::uuid IS NULL`) and
/// SQLite cannot cast. Every other statement is written once, in
/// [`SqlCatalog`], with numbered `$n` placeholders (sqlx's SQLite driver
/// binds them by number, as PostgreSQL does).
pub(crate) trait CatalogSql: Database {
    /// Lists [`tenant_columns`] by id after `$1` (if set), filtered by
    /// status `$2`, strategy `$3` and cluster `$4` (each if set), at most
    /// `$5` rows.
    const LIST: &'static str;
}

/// The catalog operations both SQL catalogs share, on a pool of any
/// [`CatalogSql`] database sqlx can run them on.
#[async_trait]
pub(crate) trait SqlCatalog: CatalogSql {
    /// Stores `record`; a taken slug or id is [`TenancyError::AlreadyExists`].
    async fn insert(pool: &Pool<Self>, record: &TenantRecord) -> Result<(), TenancyError>;

    /// The record with `id`, if any.
    async fn by_id(pool: &Pool<Self>, id: TenantId) -> Result<Option<TenantRecord>, TenancyError>;

    /// The record with `slug`, if any.
    async fn by_slug(
        pool: &Pool<Self>,
        slug: &TenantSlug,
    ) -> Result<Option<TenantRecord>, TenancyError>;

    /// One page of records, as `options` ask.
    async fn page(pool: &Pool<Self>, options: &ListOptions) -> Result<TenantPage, TenancyError>;

    /// Changes `id`'s status to `to` where the transition rule allows it,
    /// stamping `now` as `updated_at` when the status changes.
    async fn change_status(
        pool: &Pool<Self>,
        id: TenantId,
        to: TenantStatus,
        now: DateTime<Utc>,
    ) -> Result<TenantRecord, TenancyError>;

    /// Changes `id` from `moving` at `from` to `active` at `to`, stamping
    /// `now`; see [`Catalog::cut_over`].
    async fn change_placement(
        pool: &Pool<Self>,
        id: TenantId,
        from: &Placement,
        to: &Placement,
        now: DateTime<Utc>,
    ) -> Result<TenantRecord, TenancyError>;
}

/// A catalog table on a pool of a [`SqlCatalog`] database: implementing
/// it implements [`Catalog`], written once for `PgCatalog` and
/// `SqliteCatalog`.
pub(crate) trait CatalogTable: std::fmt::Debug + Send + Sync {
    /// The database.
    type Db: SqlCatalog;

    /// The pool holding `saas_tenants`.
    fn table_pool(&self) -> &Pool<Self::Db>;

    /// The clock of `created_at` and `updated_at`.
    fn clock(&self) -> &SharedClock;

    /// The PostgreSQL pool of the table, for a PostgreSQL catalog.
    #[cfg(feature = "postgres")]
    fn postgres_pool(&self) -> Option<&sqlx::PgPool> {
        None
    }
}

#[async_trait]
impl<T: CatalogTable> Catalog for T {
    async fn create(&self, tenant: NewTenant) -> Result<TenantRecord, TenancyError> {
        let record = tenant.into_record(self.clock().now());
        T::Db::insert(self.table_pool(), &record).await?;
        Ok(record)
    }

    async fn get(&self, id: TenantId) -> Result<Option<TenantRecord>, TenancyError> {
        T::Db::by_id(self.table_pool(), id).await
    }

    async fn get_by_slug(&self, slug: &TenantSlug) -> Result<Option<TenantRecord>, TenancyError> {
        T::Db::by_slug(self.table_pool(), slug).await
    }

    async fn list(&self, options: &ListOptions) -> Result<TenantPage, TenancyError> {
        T::Db::page(self.table_pool(), options).await
    }

    async fn set_status(
        &self,
        id: TenantId,
        to: TenantStatus,
    ) -> Result<TenantRecord, TenancyError> {
        let now = crate::record::catalog_time(self.clock().now());
        T::Db::change_status(self.table_pool(), id, to, now).await
    }

    async fn cut_over(
        &self,
        id: TenantId,
        from: &Placement,
        to: &Placement,
    ) -> Result<TenantRecord, TenancyError> {
        let now = crate::record::catalog_time(self.clock().now());
        T::Db::change_placement(self.table_pool(), id, from, to, now).await
    }

    #[cfg(feature = "postgres")]
    fn postgres_pool(&self) -> Option<&sqlx::PgPool> {
        CatalogTable::postgres_pool(self)
    }
}

/// Reads one catalog row into a validated record.
fn record_of<R>(row: &R) -> Result<TenantRecord, TenancyError>
where
    R: sqlx::Row,
    usize: sqlx::ColumnIndex<R>,
    Uuid: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    String: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Option<String>: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    DateTime<Utc>: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    sqlx::types::Json<Value>: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    StoredTenant::read(row)?.into_record()
}

#[async_trait]
impl<DB> SqlCatalog for DB
where
    DB: CatalogSql,
    for<'c> &'c Pool<DB>: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    usize: sqlx::ColumnIndex<DB::Row>,
    TenantId: for<'q> Encode<'q, DB> + Type<DB>,
    Option<TenantId>: for<'q> Encode<'q, DB> + Type<DB>,
    i64: for<'q> Encode<'q, DB> + Type<DB>,
    Uuid: for<'r> sqlx::Decode<'r, DB> + Type<DB>,
    String: for<'q> Encode<'q, DB> + for<'r> sqlx::Decode<'r, DB> + Type<DB>,
    Option<String>: for<'q> Encode<'q, DB> + for<'r> sqlx::Decode<'r, DB> + Type<DB>,
    DateTime<Utc>: for<'q> Encode<'q, DB> + for<'r> sqlx::Decode<'r, DB> + Type<DB>,
    sqlx::types::Json<Value>: for<'q> Encode<'q, DB> + for<'r> sqlx::Decode<'r, DB> + Type<DB>,
{
    async fn insert(pool: &Pool<DB>, record: &TenantRecord) -> Result<(), TenancyError> {
        let result = sqlx::query(
            "INSERT INTO saas_tenants (id, slug, display_name, status, strategy, cluster, \
             object_name, created_at, updated_at, metadata) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(record.id)
        .bind(record.slug.as_str().to_owned())
        .bind(record.display_name.clone())
        .bind(record.status.as_str().to_owned())
        .bind(record.placement.strategy().as_str().to_owned())
        .bind(record.placement.cluster().as_str().to_owned())
        .bind(
            record
                .placement
                .object_name()
                .map(|n| n.as_str().to_owned()),
        )
        .bind(record.created_at)
        .bind(record.updated_at)
        .bind(sqlx::types::Json(Value::Object(record.metadata.clone())))
        .execute(pool)
        .await;
        match result {
            Ok(_) => Ok(()),
            Err(sqlx::Error::Database(db)) if db.is_unique_violation() => {
                Err(TenancyError::AlreadyExists {
                    slug: record.slug.to_string(),
                })
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn by_id(pool: &Pool<DB>, id: TenantId) -> Result<Option<TenantRecord>, TenancyError> {
        let sql = concat!(
            "SELECT ",
            tenant_columns!(),
            " FROM saas_tenants WHERE id = $1"
        );
        let row = sqlx::query(sql).bind(id).fetch_optional(pool).await?;
        row.as_ref().map(record_of).transpose()
    }

    async fn by_slug(
        pool: &Pool<DB>,
        slug: &TenantSlug,
    ) -> Result<Option<TenantRecord>, TenancyError> {
        let sql = concat!(
            "SELECT ",
            tenant_columns!(),
            " FROM saas_tenants WHERE slug = $1"
        );
        let row = sqlx::query(sql)
            .bind(slug.as_str().to_owned())
            .fetch_optional(pool)
            .await?;
        row.as_ref().map(record_of).transpose()
    }

    async fn page(pool: &Pool<DB>, options: &ListOptions) -> Result<TenantPage, TenancyError> {
        options.validate()?;
        let limit = i64::try_from(options.limit + 1).unwrap_or(i64::MAX);
        let rows = sqlx::query(DB::LIST)
            .bind(options.after)
            .bind(options.status.map(|s| s.as_str().to_owned()))
            .bind(options.strategy.map(|s| s.as_str().to_owned()))
            .bind(options.cluster.as_ref().map(|c| c.as_str().to_owned()))
            .bind(limit)
            .fetch_all(pool)
            .await?;
        let tenants = rows.iter().map(record_of).collect::<Result<Vec<_>, _>>()?;
        Ok(TenantPage::from_overfetch(tenants, options.limit))
    }

    async fn change_status(
        pool: &Pool<DB>,
        id: TenantId,
        to: TenantStatus,
        now: DateTime<Utc>,
    ) -> Result<TenantRecord, TenancyError> {
        // One statement decides and writes, so a concurrent change between
        // reading and writing cannot be overwritten. The statuses are our
        // own constants, never input: safe to inline.
        let from = allowed_from(to)
            .iter()
            .map(|s| format!("'{}'", s.as_str()))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "UPDATE saas_tenants SET status = $2, \
                 updated_at = CASE WHEN status = $2 THEN updated_at ELSE $3 END \
             WHERE id = $1 AND status IN ({from}) RETURNING {}",
            tenant_columns!()
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .bind(to.as_str().to_owned())
            .bind(now)
            .fetch_optional(pool)
            .await?;
        if let Some(row) = row {
            return record_of(&row);
        }
        let current = Self::by_id(pool, id)
            .await?
            .ok_or_else(|| TenancyError::TenantNotFound(format!("with id {id}")))?;
        check_transition(&current, to)?;
        // Allowed now but refused a moment ago: the status changed in
        // between. Report what was refused rather than retrying silently.
        Err(TenancyError::InvalidTransition {
            tenant: id,
            from: current.status,
            to,
        })
    }

    async fn change_placement(
        pool: &Pool<DB>,
        id: TenantId,
        from: &Placement,
        to: &Placement,
        now: DateTime<Utc>,
    ) -> Result<TenantRecord, TenancyError> {
        // One statement checks the status and the placement and writes.
        let sql = concat!(
            "UPDATE saas_tenants SET status = 'active', strategy = $2, cluster = $3, \
             object_name = $4, updated_at = $5 \
             WHERE id = $1 AND status = 'moving' AND strategy = $6 AND cluster = $7 \
               AND COALESCE(object_name, '') = $8 RETURNING ",
            tenant_columns!()
        );
        let row = sqlx::query(sql)
            .bind(id)
            .bind(to.strategy().as_str().to_owned())
            .bind(to.cluster().as_str().to_owned())
            .bind(to.object_name().map(|n| n.as_str().to_owned()))
            .bind(now)
            .bind(from.strategy().as_str().to_owned())
            .bind(from.cluster().as_str().to_owned())
            .bind(
                from.object_name()
                    .map_or_else(String::new, |n| n.as_str().to_owned()),
            )
            .fetch_optional(pool)
            .await?;
        match row {
            Some(row) => record_of(&row),
            None => cut_over_outcome(Self::by_id(pool, id).await?, id, from, to),
        }
    }
}
