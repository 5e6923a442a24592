//! Identifiers the host declares in code: tables, columns, roles.

use std::fmt;

use crate::error::TenancyError;

/// A SQL identifier declared by the host application (a table, a column, a
/// role): 1–63 characters of `a-z`, `0-9`, `_`, starting with a letter or
/// `_`. Declared in code, never taken from requests — and still validated
/// and always quoted.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SqlIdent(String);

impl SqlIdent {
    /// Validates an identifier.
    pub fn new(name: impl Into<String>) -> Result<Self, TenancyError> {
        let name = name.into();
        let ok = (1..=63).contains(&name.len())
            && name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if ok {
            Ok(Self(name))
        } else {
            Err(TenancyError::InvalidInput(format!(
                "SQL identifier {name:?} must be 1-63 characters of a-z, 0-9 or '_', not starting with a digit"
            )))
        }
    }

    /// The bare name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The quoted identifier.
    pub fn quoted(&self) -> String {
        format!("\"{}\"", self.0)
    }
}

impl fmt::Display for SqlIdent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A table shared by row-strategy tenants, with the column holding the
/// tenant id (a `uuid`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantTable {
    /// The table (in the shared schema).
    pub table: SqlIdent,
    /// The tenant column (default `tenant_id`).
    pub tenant_column: SqlIdent,
    /// SQLite shared files only: the physical table holding every tenant's
    /// rows (default `<table>_rows`); tenant connections see `table` as a
    /// view of their own rows. Unused on PostgreSQL, where RLS filters the
    /// table itself.
    pub stored_as: Option<SqlIdent>,
}

impl TenantTable {
    /// Declares `table` with its tenant in `tenant_id`.
    pub fn new(table: &str) -> Result<Self, TenancyError> {
        Ok(Self {
            table: SqlIdent::new(table)?,
            tenant_column: SqlIdent::new("tenant_id")?,
            stored_as: None,
        })
    }

    /// The physical table of a SQLite shared file (see
    /// [`TenantTable::stored_as`]).
    pub fn stored_as(mut self, physical: &str) -> Result<Self, TenancyError> {
        self.stored_as = Some(SqlIdent::new(physical)?);
        Ok(self)
    }

    /// The physical SQLite table: `stored_as`, or `<table>_rows`.
    pub fn physical(&self) -> Result<SqlIdent, TenancyError> {
        match &self.stored_as {
            Some(p) => Ok(p.clone()),
            None => SqlIdent::new(format!("{}_rows", self.table.as_str())),
        }
    }

    /// Uses another tenant column.
    pub fn tenant_column(mut self, column: &str) -> Result<Self, TenancyError> {
        self.tenant_column = SqlIdent::new(column)?;
        Ok(self)
    }
}
