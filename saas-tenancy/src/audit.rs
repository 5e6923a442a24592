//! What an isolation audit reports, shared by the PostgreSQL and SQLite
//! backends (`PgTenancy::audit`, `SqliteTenancy::audit`).

use std::fmt;

/// One isolation weakness found by an audit.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AuditFinding {
    /// What is wrong.
    pub weakness: Weakness,
    /// The object concerned (role, table, tenant, database, file), as text
    /// for people.
    pub subject: String,
    /// What to do about it.
    pub fix: String,
    /// The object concerned, by name, for code that acts on the finding
    /// (revokes, drops, alters). `None` for kinds whose subject is not one
    /// database object (a tenant, a file, a migration version).
    pub object: Option<AuditObject>,
}

/// The database object a finding is about, named by its catalog names
/// (unquoted, as PostgreSQL stores them).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuditObject {
    /// A table, view or other relation.
    Table {
        /// Its schema.
        schema: String,
        /// Its name.
        table: String,
    },
    /// A row-level security policy on a table.
    Policy {
        /// The table's schema.
        schema: String,
        /// The table.
        table: String,
        /// The policy.
        policy: String,
    },
    /// `member` belongs to `role`: granted directly when `via` is empty,
    /// else through the roles in `via`, from `member`'s side to `role`'s.
    Membership {
        /// The role that holds the membership.
        member: String,
        /// The role it is a member of.
        role: String,
        /// The roles in between.
        via: Vec<String>,
    },
    /// Privileges granted to `role` itself on `schema`, or on `relation`
    /// in it (`SELECT (col)` for a column privilege, `DEFAULT … ON TABLES`
    /// for default privileges of the schema).
    Grant {
        /// The grantee.
        role: String,
        /// The schema.
        schema: String,
        /// The relation in `schema`; `None` for the schema itself.
        relation: Option<String>,
        /// The privileges, as SQL keywords.
        privileges: Vec<String>,
    },
    /// Attributes a role has (`CREATEROLE`, `BYPASSRLS`, …).
    RoleAttributes {
        /// The role.
        role: String,
        /// The attributes, as SQL keywords.
        attributes: Vec<String>,
    },
    /// A tenant's catalog record and the storage name it holds.
    Placement {
        /// The tenant.
        tenant: saas_core::TenantId,
        /// The schema or database (file) name the record holds.
        found: String,
        /// The name derived from the tenant's id.
        expected: String,
    },
    /// Session defaults stored for a role (`ALTER ROLE … SET`).
    RoleSettings {
        /// The role.
        role: String,
        /// The database they apply in; `None` for every database.
        database: Option<String>,
        /// The settings' names.
        settings: Vec<String>,
    },
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
    /// A table has the tenant column but is not declared (no isolation). On
    /// PostgreSQL: a table next to the declared ones, or any relation
    /// (views too) in a schema other than a tenant's that the runtime role,
    /// or a role it can `SET ROLE` to, can use — whatever its RLS (object:
    /// [`AuditObject::Table`]).
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
    /// A tenant table's isolation policy is not the one the library
    /// creates: its expressions, command, roles or permissiveness were
    /// changed (say to `USING (true)`) (PostgreSQL; object:
    /// [`AuditObject::Policy`]).
    PolicyAltered,
    /// A tenant table has another permissive policy that applies to the
    /// runtime role (or `PUBLIC`, or a role it can `SET ROLE` to); policies
    /// are OR-ed, so it widens what the runtime role sees. Restrictive
    /// policies only narrow and are not reported (PostgreSQL; object:
    /// [`AuditObject::Policy`]).
    ExtraPermissivePolicy,
    /// A role other than the runtime role, the admin and superusers is a
    /// member of a schema tenant's role — directly or not, inheriting or
    /// not: it can `SET ROLE` to the tenant (PostgreSQL; object:
    /// [`AuditObject::Membership`] with the tenant role as `role`).
    TenantRoleGrantedToOtherRole,
    /// The runtime role is a member (directly or not, inheriting or not) of
    /// the admin role, of a superuser, `BYPASSRLS` or `CREATEROLE` role, of
    /// the owner of a tenant table, or of a powerful predefined role
    /// (`pg_read_all_data`, `pg_execute_server_program`, …): raw SQL on a
    /// scoped connection can `SET ROLE` to it (PostgreSQL; object:
    /// [`AuditObject::Membership`]).
    RuntimeRoleMemberOfPrivilegedRole,
    /// The runtime role holds privileges of its own on a tenant schema or
    /// on objects in it; it must reach schema tenants only by `SET ROLE` to
    /// the tenant's role (PostgreSQL; object: [`AuditObject::Grant`]).
    RuntimeRoleGrantedTenantSchema,
    /// The runtime role has `CREATEROLE` (it can grant itself predefined
    /// roles such as `pg_execute_server_program`), `CREATEDB`,
    /// `REPLICATION` or `INHERIT` (every tenant role's privileges without
    /// `SET ROLE`) (PostgreSQL; object: [`AuditObject::RoleAttributes`]).
    RuntimeRoleHasElevatedAttributes,
    /// Session defaults are stored for the runtime role (`ALTER ROLE … SET
    /// role/search_path/…`, which the role may run itself): every new
    /// connection would start with them, for instance as a tenant's role
    /// (PostgreSQL; object: [`AuditObject::RoleSettings`]).
    RuntimeRoleHasSessionDefaults,
    /// A tenant's catalog record names a schema or database (file) that is
    /// not the one derived from its id: the record was changed outside the
    /// library, perhaps to point the tenant at another's storage. Scoped
    /// access and operations refuse the tenant until it is restored
    /// (object: [`AuditObject::Placement`]).
    PlacementNotDerived,
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
        object: None,
    }
}

/// Reports each record whose placement is not its own (see
/// `catalog::check_placement`) and returns the others: a tampered record's
/// storage is another tenant's and must not be audited as its.
#[cfg(feature = "_sql")]
pub(crate) fn without_tampered_placements(
    records: Vec<crate::record::TenantRecord>,
    out: &mut Vec<AuditFinding>,
) -> Vec<crate::record::TenantRecord> {
    records
        .into_iter()
        .filter(|record| {
            let Some(found) = record.placement.object_name() else {
                return true;
            };
            let expected = crate::placement::TenantObjectName::for_tenant(record.id);
            if *found == expected {
                return true;
            }
            out.push(finding_on(
                Weakness::PlacementNotDerived,
                AuditObject::Placement {
                    tenant: record.id,
                    found: found.as_str().to_owned(),
                    expected: expected.as_str().to_owned(),
                },
                format!("tenant {} (catalog names {found})", record.id),
                format!(
                    "restore the record's object name to {expected} (names derive from the \
                     tenant id) and find out who wrote the catalog"
                ),
            ));
            false
        })
        .collect()
}

/// A finding about one named database object.
#[cfg(feature = "_sql")]
pub(crate) fn finding_on(
    weakness: Weakness,
    object: AuditObject,
    subject: impl Into<String>,
    fix: impl Into<String>,
) -> AuditFinding {
    AuditFinding {
        object: Some(object),
        ..finding(weakness, subject, fix)
    }
}
