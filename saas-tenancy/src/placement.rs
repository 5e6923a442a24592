//! Where a tenant's data lives.

use std::fmt;

use saas_core::TenantId;
use serde::{Deserialize, Serialize};

use crate::error::TenancyError;

/// The isolation strategy of a tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Strategy {
    /// Shared tables with a `tenant_id` column (row-level isolation).
    Shared,
    /// A PostgreSQL schema of its own.
    Schema,
    /// A database of its own (PostgreSQL database or SQLite file).
    Database,
}

impl Strategy {
    /// The lowercase name stored in catalogs.
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Shared => "shared",
            Strategy::Schema => "schema",
            Strategy::Database => "database",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Result<Self, TenancyError> {
        match s {
            "shared" => Ok(Strategy::Shared),
            "schema" => Ok(Strategy::Schema),
            "database" => Ok(Strategy::Database),
            other => Err(TenancyError::Corrupt(format!("unknown strategy {other:?}"))),
        }
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The name of a configured database server (a *cluster*): 1–63 characters
/// of `a-z`, `0-9`, `_`, `-`, starting with a letter. It names
/// configuration, never a SQL identifier.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ClusterName(String);

impl ClusterName {
    /// Validates a cluster name.
    pub fn new(name: impl Into<String>) -> Result<Self, TenancyError> {
        let name = name.into();
        let ok = (1..=63).contains(&name.len())
            && name.starts_with(|c: char| c.is_ascii_lowercase())
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
        if ok {
            Ok(Self(name))
        } else {
            Err(TenancyError::InvalidInput(format!(
                "cluster name {name:?} must be 1-63 characters of a-z, 0-9, '_' or '-', starting with a letter"
            )))
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ClusterName {
    type Error = TenancyError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::new(s)
    }
}

impl From<ClusterName> for String {
    fn from(c: ClusterName) -> Self {
        c.0
    }
}

impl fmt::Display for ClusterName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A database object name (schema, database, file stem) derived from a
/// tenant id: `t_` followed by 32 lowercase hex digits.
///
/// It can only be made from a [`TenantId`] or parsed back from that exact
/// shape, so it can never carry SQL — and it is still always quoted.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TenantObjectName(String);

impl TenantObjectName {
    /// The name for `tenant`.
    pub fn for_tenant(tenant: TenantId) -> Self {
        Self(format!("t_{}", tenant.simple()))
    }

    /// Parses a stored name, accepting only the derived shape.
    pub fn parse(s: &str) -> Result<Self, TenancyError> {
        let valid = s.len() == 34
            && s.starts_with("t_")
            && s[2..]
                .chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c));
        if valid {
            Ok(Self(s.to_owned()))
        } else {
            Err(TenancyError::Corrupt(format!(
                "tenant object name {s:?} is not of the form t_<32 hex digits>"
            )))
        }
    }

    /// The bare name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name as a quoted SQL identifier (`"t_…"`).
    pub fn quoted(&self) -> String {
        // The shape is checked on construction; quoting is defence in depth.
        format!("\"{}\"", self.0)
    }
}

/// A name the library made for storage (a tenant's schema, role or
/// database, a spare schema): checked on construction to carry no SQL.
#[cfg(feature = "postgres")]
pub(crate) trait SqlName {
    /// The bare name.
    fn as_str(&self) -> &str;

    /// The name as a quoted SQL identifier.
    fn quoted(&self) -> String {
        // The shape is checked on construction; quoting is defence in depth.
        format!("\"{}\"", self.as_str())
    }
}

#[cfg(feature = "postgres")]
impl SqlName for TenantObjectName {
    fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for TenantObjectName {
    type Error = TenancyError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<TenantObjectName> for String {
    fn from(n: TenantObjectName) -> Self {
        n.0
    }
}

impl fmt::Display for TenantObjectName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where one tenant's data lives. Placement is data in the catalog, chosen
/// per tenant, so one application can mix strategies and clusters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "strategy", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Placement {
    /// Rows in shared tables on `cluster`.
    Shared {
        /// The server.
        cluster: ClusterName,
    },
    /// A schema of its own on `cluster`.
    Schema {
        /// The server.
        cluster: ClusterName,
        /// The schema.
        schema: TenantObjectName,
    },
    /// A database of its own on `cluster`.
    Database {
        /// The server (or SQLite directory).
        cluster: ClusterName,
        /// The database (or file stem).
        database: TenantObjectName,
    },
}

impl Placement {
    /// The placement of `tenant` for `strategy` on `cluster`, with object
    /// names derived from the tenant id.
    pub fn derive(strategy: Strategy, cluster: ClusterName, tenant: TenantId) -> Self {
        match strategy {
            Strategy::Shared => Placement::Shared { cluster },
            Strategy::Schema => Placement::Schema {
                cluster,
                schema: TenantObjectName::for_tenant(tenant),
            },
            Strategy::Database => Placement::Database {
                cluster,
                database: TenantObjectName::for_tenant(tenant),
            },
        }
    }

    /// The strategy.
    pub fn strategy(&self) -> Strategy {
        match self {
            Placement::Shared { .. } => Strategy::Shared,
            Placement::Schema { .. } => Strategy::Schema,
            Placement::Database { .. } => Strategy::Database,
        }
    }

    /// The cluster.
    pub fn cluster(&self) -> &ClusterName {
        match self {
            Placement::Shared { cluster }
            | Placement::Schema { cluster, .. }
            | Placement::Database { cluster, .. } => cluster,
        }
    }

    /// The schema or database name, if the strategy has one.
    pub fn object_name(&self) -> Option<&TenantObjectName> {
        match self {
            Placement::Shared { .. } => None,
            Placement::Schema { schema, .. } => Some(schema),
            Placement::Database { database, .. } => Some(database),
        }
    }

    /// Rebuilds a placement from stored parts, checking they agree.
    pub fn from_parts(
        strategy: &str,
        cluster: &str,
        object: Option<&str>,
    ) -> Result<Self, TenancyError> {
        let cluster = ClusterName::new(cluster)
            .map_err(|e| TenancyError::Corrupt(format!("stored cluster: {e}")))?;
        match (Strategy::parse(strategy)?, object) {
            (Strategy::Shared, None) => Ok(Placement::Shared { cluster }),
            (Strategy::Schema, Some(o)) => Ok(Placement::Schema {
                cluster,
                schema: TenantObjectName::parse(o)?,
            }),
            (Strategy::Database, Some(o)) => Ok(Placement::Database {
                cluster,
                database: TenantObjectName::parse(o)?,
            }),
            (s, _) => Err(TenancyError::Corrupt(format!(
                "placement {s} has an inconsistent object name"
            ))),
        }
    }
}

/// How a new tenant's cluster is chosen when the host does not name one.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum PlacementPolicy {
    /// Always this cluster.
    Explicit(ClusterName),
    /// Each cluster in turn (by name order), per process.
    #[default]
    RoundRobin,
    /// The cluster with the fewest tenants in the catalog (deleted tenants
    /// not counted); ties go to the first by name.
    FewestTenants,
}
