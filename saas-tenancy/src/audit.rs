//! What an isolation audit reports, shared by the PostgreSQL and SQLite
//! backends (`PgTenancy::audit`, `SqliteTenancy::audit`).

use std::fmt;

/// One isolation weakness found by an audit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditFinding {
    /// What is wrong.
    pub weakness: Weakness,
    /// The object concerned (role, table, tenant, database, file).
    pub subject: String,
    /// What to do about it.
    pub fix: String,
}

/// The kinds of weakness an audit looks for. Each backend reports the
/// kinds that apply to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Weakness {
    /// The runtime role does not exist.
    RuntimeRoleMissing,
    /// The runtime role is a superuser or has `BYPASSRLS`.
    RuntimeRoleBypassesRls,
    /// The runtime role owns a table (owners skip RLS unless it is forced).
    RuntimeRoleOwnsTables,
    /// A declared tenant table is missing.
    TenantTableMissing,
    /// A tenant table does not have row-level security enabled.
    RlsDisabled,
    /// A tenant table does not force row-level security on its owner.
    RlsNotForced,
    /// A tenant table lacks the library's isolation policy.
    PolicyMissing,
    /// A table has the tenant column but is not declared (no isolation).
    UndeclaredTenantTable,
    /// A primary or unique key of a tenant table lacks the tenant column.
    UniqueKeyWithoutTenant,
    /// A tenant's schema or database is behind the tenant migrations.
    MigrationsBehind,
    /// A tenant schema or database is reachable by `PUBLIC`.
    ReachableByPublic,
    /// A role other than the admin (or owner), the runtime role and the
    /// tenant's own role can use a tenant schema or connect to a tenant
    /// database — another tenant's role, say (PostgreSQL).
    ReachableByOtherRole,
    /// A tenant that is not deleted has no schema or database: provisioning
    /// did not finish, or it was dropped by hand (PostgreSQL).
    TenantStorageMissing,
    /// A declared tenant table lacks its tenant column (SQLite).
    TenantColumnMissing,
    /// No index of a shared tenant table starts with the tenant column, so
    /// every scoped statement reads every tenant's rows (SQLite).
    TenantIndexMissing,
    /// Two tenants' database files are the same file (SQLite).
    TenantFileShared,
    /// A tenant's database file is the cluster's shared file, so row
    /// tenants' connections reach it (SQLite).
    TenantFileReachableFromShared,
    /// A tenant database file with no live tenant: data that should be
    /// gone, or a file restored by hand (SQLite).
    OrphanTenantFile,
}

impl fmt::Display for AuditFinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} on {}: {}", self.weakness, self.subject, self.fix)
    }
}

#[cfg(feature = "_sql")]
pub(crate) fn finding(
    weakness: Weakness,
    subject: impl Into<String>,
    fix: impl Into<String>,
) -> AuditFinding {
    AuditFinding {
        weakness,
        subject: subject.into(),
        fix: fix.into(),
    }
}
