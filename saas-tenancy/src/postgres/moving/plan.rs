//! Both sides of a move: how to reach each database, the tenant's tables
//! there, and which method can carry the rows over.
//!
//! **Why some moves do not replicate.** A subscription applies each
//! change to the table with the *same schema-qualified name* as the
//! published one. A row tenant's tables are shared (`public.notes`), a
//! schema tenant's live in its schema (`t_….notes`), a database tenant's
//! in its database's `public`. Where the names differ and the target's
//! tables sit in a schema of the tenant's own (a schema or database
//! target) whose database has no schema of the source's name, the target
//! schema is *staged*: renamed to the source's schema name while it
//! replicates and renamed back under the fence (a catalog-only change) —
//! so schema → database and cluster-to-cluster moves replicate. Where no
//! rename can help — both sides in one database (row ↔ schema on one
//! cluster), or a schema target in a database that already has the
//! source's schema (`public`: row → schema, database → schema), or a row
//! target whose shared schema is named differently — the rows are copied
//! with `COPY` while the tenant writes and the changes made meanwhile
//! caught up from triggers (`capture.rs`).

use saas_core::TenantId;
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};

use super::MoveMethod;
use crate::error::TenancyError;
use crate::placement::Placement;
use crate::postgres::{PgTenancy, sql, tenant_database_options};

/// A tenant table on one side.
#[derive(Debug, Clone)]
pub(super) struct Table {
    pub(super) schema: String,
    pub(super) name: String,
    /// The tenant column (always set on a row placement).
    pub(super) column: Option<String>,
    /// A tenant column the table has, also on a schema or database
    /// placement (where it filters nothing: every row is the tenant's).
    pub(super) tenant_column: Option<String>,
    /// Whether updates and deletes can be replicated (a primary key or a
    /// replica identity).
    pub(super) identity: bool,
}

impl Table {
    pub(super) fn qualified(&self) -> String {
        format!(
            "{}.{}",
            sql::quote_ident(&self.schema),
            sql::quote_ident(&self.name)
        )
    }

    /// `WHERE <column> = '<tenant>'` on a shared table, or nothing. The id
    /// is formatted from a [`TenantId`]: hex digits and hyphens only.
    pub(super) fn filter(&self, tenant: TenantId) -> String {
        match &self.column {
            Some(c) => format!(" WHERE {} = '{tenant}'::uuid", sql::quote_ident(c)),
            None => String::new(),
        }
    }
}

/// How to reach one side's database as the cluster's admin.
pub(super) fn options(
    tenancy: &PgTenancy,
    placement: &Placement,
) -> Result<PgConnectOptions, TenancyError> {
    let cluster = tenancy.cluster(placement.cluster())?;
    Ok(match placement {
        Placement::Database { database, .. } => {
            tenant_database_options(cluster.config.admin.clone(), database)
        }
        _ => cluster.config.admin.clone(),
    })
}

/// Connects to one side's database as the cluster's admin.
pub(super) async fn connect(
    tenancy: &PgTenancy,
    placement: &Placement,
) -> Result<PgConnection, TenancyError> {
    Ok(PgConnection::connect_with(&options(tenancy, placement)?).await?)
}

/// The schema of the tenant's own tables on `placement` (`None` for
/// shared tables).
pub(super) fn private_schema(placement: &Placement) -> Option<String> {
    match placement {
        Placement::Shared { .. } => None,
        Placement::Schema { schema, .. } => Some(schema.as_str().to_owned()),
        Placement::Database { .. } => Some("public".to_owned()),
    }
}

/// The tenant's tables on `conn`: those of `schema`, or with `None` the
/// tables of the search-path schemas (tenant schemas excluded) that carry
/// one of `columns` — the discovery delete and export use. The library's
/// own tables are never a tenant's.
pub(super) async fn tables(
    conn: &mut PgConnection,
    schema: Option<&str>,
    columns: &[String],
) -> Result<Vec<Table>, TenancyError> {
    let rows: Vec<(String, String, Option<String>, bool)> = sqlx::query_as(
        "SELECT n.nspname::text, c.relname::text, \
                (SELECT a.attname::text FROM pg_attribute a WHERE a.attrelid = c.oid \
                   AND a.attname = ANY($2) AND NOT a.attisdropped LIMIT 1), \
                c.relreplident IN ('f', 'i') OR (c.relreplident = 'd' AND EXISTS \
                   (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary)) \
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind = 'r' AND NOT (c.relname = ANY($3)) \
           AND CASE WHEN $1::text IS NOT NULL THEN n.nspname = $1 \
                    ELSE n.nspname = ANY (current_schemas(false)) \
                     AND n.nspname !~ '^t_[0-9a-f]{32}$' END \
         ORDER BY 2, 1",
    )
    .bind(schema)
    .bind(columns)
    .bind(sql::LIBRARY_TABLES)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .filter(|(_, _, column, _)| schema.is_some() || column.is_some())
        .map(|(schema_name, name, column, identity)| Table {
            schema: schema_name,
            name,
            // A schema or database tenant's rows are all its own.
            column: if schema.is_some() {
                None
            } else {
                column.clone()
            },
            tenant_column: column,
            identity,
        })
        .collect())
}

/// Refuses, before anything is created, a source table that replication
/// could not carry (updates and deletes need a key to find their row).
pub(super) fn check_identity(tables: &[Table]) -> Result<(), TenancyError> {
    match tables.iter().find(|t| !t.identity) {
        Some(t) => Err(TenancyError::NoReplicaIdentity {
            table: t.qualified(),
        }),
        None => Ok(()),
    }
}

/// Picks the method, and the staging name of the target's schema.
/// `target_tables` are the target's shared tables (row targets only);
/// `schema_taken` says whether the target database already has a schema
/// of the source tables' name.
pub(super) fn decide(
    from: &Placement,
    to: &Placement,
    source: &[Table],
    target_tables: &[Table],
    schema_taken: bool,
) -> (MoveMethod, Option<String>) {
    let copy = (MoveMethod::CapturedCopy, None);
    let same_database = from.cluster() == to.cluster()
        && !matches!(from, Placement::Database { .. })
        && !matches!(to, Placement::Database { .. });
    let mut schemas: Vec<&str> = source.iter().map(|t| t.schema.as_str()).collect();
    schemas.sort_unstable();
    schemas.dedup();
    let [source_schema] = schemas.as_slice() else {
        return copy;
    };
    if same_database {
        return copy;
    }
    match private_schema(to) {
        None => {
            let all_there = source.iter().all(|s| {
                target_tables
                    .iter()
                    .any(|t| t.name == s.name && t.schema == s.schema)
            });
            if all_there {
                (MoveMethod::LogicalReplication, None)
            } else {
                copy
            }
        }
        Some(own) if own == *source_schema => (MoveMethod::LogicalReplication, None),
        Some(_) if !schema_taken => (
            MoveMethod::LogicalReplication,
            Some((*source_schema).to_owned()),
        ),
        Some(_) => copy,
    }
}
