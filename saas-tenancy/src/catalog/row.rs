//! Decoding catalog rows, shared by the SQL backends.

use chrono::{DateTime, Utc};
use saas_core::{TenantId, TenantSlug};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::error::TenancyError;
use crate::placement::Placement;
use crate::record::{TenantRecord, parse_status};

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
