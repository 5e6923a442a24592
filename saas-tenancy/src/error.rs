//! Errors of the tenancy crate.

use saas_core::{ErrorKind, TenantId, TenantStatus};

/// Everything that can go wrong in `saas-tenancy`, by meaning.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TenancyError {
    /// No tenant with this id or slug.
    #[error("no tenant {0}")]
    TenantNotFound(String),
    /// A tenant with this slug (or id) exists already.
    #[error("a tenant with slug {slug:?} (or the same id) already exists")]
    AlreadyExists {
        /// The contested slug.
        slug: String,
    },
    /// The tenant's status does not allow the change.
    #[error("tenant {tenant} cannot go from {from} to {to}")]
    InvalidTransition {
        /// The tenant.
        tenant: TenantId,
        /// Its current status.
        from: TenantStatus,
        /// The requested status.
        to: TenantStatus,
    },
    /// The tenant exists but may not be served in its current status.
    #[error("tenant {tenant} is {status}; scoped access is refused")]
    TenantNotServable {
        /// The tenant.
        tenant: TenantId,
        /// Its status.
        status: TenantStatus,
    },
    /// The catalog places the tenant in a schema or database whose name is
    /// not the one derived from its id: the record was changed outside
    /// the library (perhaps to point it at another tenant's storage), so
    /// nothing is done with it.
    #[error(
        "tenant {tenant}'s catalog record names {found:?} but its storage can only be \
         {expected:?} (names derive from the tenant id); the record was changed outside \
         the library — restore it, and check who can write the catalog"
    )]
    PlacementNotDerived {
        /// The tenant.
        tenant: TenantId,
        /// The object name the record holds.
        found: String,
        /// The name derived from the tenant's id.
        expected: String,
    },
    /// Invalid input (a name, a page size, a configuration value).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// A tenant archive failed verification (format, manifest, checksum,
    /// row count or a row that is not a JSON object): it was truncated or
    /// altered after export. Nothing was imported; export it again.
    #[error("tenant archive is corrupt: {reason}; nothing was imported — export the tenant again")]
    CorruptArchive {
        /// What did not match.
        reason: String,
    },
    /// A cluster name that is not configured.
    #[error("cluster {0:?} is not configured")]
    UnknownCluster(String),
    /// The catalog holds a value this version cannot read.
    #[error("catalog row is corrupt: {0}")]
    Corrupt(String),
    /// The operation is not supported by this backend or placement.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// Waiting for a connection took longer than allowed.
    #[error("timed out waiting for a connection: {0}")]
    Timeout(String),
    /// Deleting a tenant could not end the scoped handles still open on
    /// it within the deletion grace period. Nothing was deleted yet; the
    /// tenant stays `deleting` (new handles are refused) and calling
    /// `delete_tenant` again, once the handles have ended, completes it.
    #[error(
        "tenant {tenant} is still in use, so its data was not deleted yet: {detail}; \
         it stays deleting (new handles are refused) — call delete_tenant again"
    )]
    TenantInUse {
        /// The tenant.
        tenant: TenantId,
        /// What is still open, and how to end it.
        detail: String,
    },
    /// The tenant is being moved to another placement: new handles waited
    /// for the move's fence (see `PgTenancyBuilder::move_wait`) and it had
    /// not ended, or a handle's placement changed while it waited for a
    /// connection. Retry shortly: the tenant is served from its new
    /// placement once the move has cut over.
    #[error("tenant {tenant} is being moved ({detail}); retry shortly")]
    TenantMoving {
        /// The tenant.
        tenant: TenantId,
        /// What was waited for.
        detail: String,
    },
    /// A table of the tenant has neither a primary key nor a replica
    /// identity, so a move could not replicate its updates and deletes.
    /// Refused before anything was created.
    #[error(
        "table {table} has no primary key and no replica identity, so its updates and \
         deletes cannot be replicated; add a primary key (or ALTER TABLE … REPLICA IDENTITY \
         FULL) and move again — nothing was changed"
    )]
    NoReplicaIdentity {
        /// The table, schema-qualified.
        table: String,
    },
    /// A column of the tenant's has a type a move to another backend
    /// cannot carry faithfully (a PostgreSQL → SQLite move maps booleans,
    /// integers, floats, text, uuid, dates and times, numeric, json and
    /// bytea). Refused before the fence: nothing was copied, the tenant is
    /// served where it was.
    #[error(
        "column {column} of table {table} has type {type_name}, which a move to another \
         backend cannot carry faithfully; change the column to a supported type (or cast it \
         into a new column) and move again — the tenant was not fenced"
    )]
    UnsupportedColumnType {
        /// The table, schema-qualified.
        table: String,
        /// The column.
        column: String,
        /// The column's type as the source database names it.
        type_name: String,
    },
    /// The catalog places the tenant where this tenancy does not serve it:
    /// on another backend (a SQLite tenant moved to PostgreSQL),
    /// or on a cluster this tenancy has not configured. Nothing was
    /// opened on the old placement. Route the tenant by its record's
    /// placement to the tenancy that serves it.
    #[error(
        "tenant {tenant} is placed at {placement:?}, which this tenancy does not serve (moved \
         to another backend, or a cluster not configured here); route it to the tenancy \
         serving that placement"
    )]
    PlacementNotServedHere {
        /// The tenant.
        tenant: TenantId,
        /// Where the catalog places it.
        placement: crate::placement::Placement,
    },
    /// A tenant move stopped before it finished; its ledger says where.
    /// Until it is resumed or aborted the tenant keeps being served from
    /// the placement the catalog names (its source before the cut-over,
    /// its target after it).
    #[error(
        "the move {move_id} of tenant {tenant} stopped in phase {phase}: {detail}; call \
         resume_move to finish it, or abort_move to undo it (before its cut-over)"
    )]
    MoveStopped {
        /// The move (its ledger row).
        move_id: uuid::Uuid,
        /// The tenant.
        tenant: TenantId,
        /// The last phase recorded in the ledger.
        phase: String,
        /// What stopped it.
        detail: String,
    },
    /// The database role the library acts as lacks a privilege the
    /// operation needs; the message names the grant to make.
    #[error("insufficient privilege: {0}")]
    InsufficientPrivilege(String),
    /// The database failed.
    #[cfg(feature = "_sql")]
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
}

impl TenancyError {
    /// The shared error kind.
    pub fn kind(&self) -> ErrorKind {
        match self {
            TenancyError::TenantNotFound(_) => ErrorKind::NotFound,
            TenancyError::AlreadyExists { .. } => ErrorKind::AlreadyExists,
            TenancyError::InvalidTransition { .. }
            | TenancyError::PlacementNotServedHere { .. } => ErrorKind::Conflict,
            TenancyError::TenantNotServable { .. } => ErrorKind::Forbidden,
            TenancyError::InvalidInput(_)
            | TenancyError::UnknownCluster(_)
            | TenancyError::CorruptArchive { .. } => ErrorKind::InvalidInput,
            TenancyError::Corrupt(_) | TenancyError::PlacementNotDerived { .. } => {
                ErrorKind::Internal
            }
            TenancyError::Unsupported(_) => ErrorKind::Unsupported,
            TenancyError::Timeout(_) | TenancyError::TenantInUse { .. } => ErrorKind::Timeout,
            TenancyError::InsufficientPrivilege(_) => ErrorKind::Forbidden,
            TenancyError::TenantMoving { .. } | TenancyError::MoveStopped { .. } => {
                ErrorKind::Unavailable
            }
            TenancyError::NoReplicaIdentity { .. } => ErrorKind::InvalidInput,
            TenancyError::UnsupportedColumnType { .. } => ErrorKind::Unsupported,
            #[cfg(feature = "_sql")]
            TenancyError::Database(e) => database_kind(e),
        }
    }

    /// Whether the same call may succeed later.
    pub fn is_retryable(&self) -> bool {
        self.kind().is_retryable()
    }

    /// Whether this is the database's own error, whose message names
    /// tables, constraints or policies (show its kind to clients, not its
    /// message).
    pub fn is_from_database(&self) -> bool {
        match self {
            #[cfg(feature = "_sql")]
            TenancyError::Database(_) => true,
            _ => false,
        }
    }
}

/// The kind of a database error: unreachable or overloaded servers and
/// serialization failures are [`ErrorKind::Unavailable`] (retry), a pool
/// wait [`ErrorKind::Timeout`], a unique violation
/// [`ErrorKind::AlreadyExists`], a foreign-key or check violation
/// [`ErrorKind::InvalidInput`], a refused privilege (row-level security's
/// `WITH CHECK`) [`ErrorKind::Forbidden`], anything else
/// [`ErrorKind::Internal`]. The same as [`TenancyError::kind`] of the
/// error converted.
#[cfg(feature = "_sql")]
pub fn database_kind(e: &sqlx::Error) -> ErrorKind {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed => {
            ErrorKind::Unavailable
        }
        sqlx::Error::PoolTimedOut => ErrorKind::Timeout,
        sqlx::Error::Database(db) if db.is_unique_violation() => ErrorKind::AlreadyExists,
        sqlx::Error::Database(db) if db.is_foreign_key_violation() || db.is_check_violation() => {
            ErrorKind::InvalidInput
        }
        sqlx::Error::Database(db) => match db.code().as_deref() {
            // serialization_failure, deadlock_detected, admin shutdown, cannot connect now
            Some("40001" | "40P01" | "57P01" | "57P03") => ErrorKind::Unavailable,
            // insufficient_privilege: RLS WITH CHECK failures and role limits
            Some("42501") => ErrorKind::Forbidden,
            _ => ErrorKind::Internal,
        },
        _ => ErrorKind::Internal,
    }
}

#[cfg(feature = "_sql")]
impl From<sqlx::Error> for TenancyError {
    fn from(e: sqlx::Error) -> Self {
        TenancyError::Database(e)
    }
}

impl From<TenancyError> for saas_core::Error {
    fn from(e: TenancyError) -> Self {
        saas_core::Error::new(e.kind(), e.to_string()).with_source(e)
    }
}
