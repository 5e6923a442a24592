//! The SQLite side of a move *from* PostgreSQL (see
//! `PgTenancy::move_tenant_to_sqlite`): the target placement prepared — a
//! tenant file created with the tenant migrations, or the target shared
//! file brought up to its shared migrations and the tenant's fence of an
//! earlier move away lifted —, its tables read, each table filled in one
//! `BEGIN IMMEDIATE` transaction from bounded batches of rows the
//! PostgreSQL side converted, counted before the commit, and the target
//! removed when the move is aborted.
//!
//! The PostgreSQL side owns the ledger, the fence and the lock-out; this
//! side only ever writes to a placement the catalog does not name yet.

use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Utc};
use saas_core::TenantId;
use sqlx::sqlite::{SqliteArguments, SqliteConnectOptions, SqliteJournalMode};
use sqlx::{AssertSqlSafe, Connection, Executor, Sqlite, SqliteConnection};

use super::super::guard::tenant_literal;
use super::super::transfer::quote;
use super::copy::schema_tables;
use super::lockout;
use super::run::{BUSY, connect, remove_file};
use crate::error::TenancyError;
use crate::placement::Placement;
use crate::sqlite::SqliteTenancy;

/// Bound parameters per `INSERT` at most: below SQLite's historical limit
/// of 999 host parameters, whatever the library was built with.
const MAX_PARAMS: usize = 900;

/// Rows per `INSERT` statement at most.
const MAX_ROWS_PER_STATEMENT: usize = 100;

/// One value on its way into SQLite, in the Rust type whose sqlx
/// encoding is the form the SQLite backend stores and reads back (see
/// `to_sqlite_copy.rs` on the PostgreSQL side for the mapping).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Cell {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
    /// A 16-byte blob, as sqlx encodes a `Uuid` for SQLite.
    Uuid(uuid::Uuid),
    /// RFC 3339 text (`2026-12-06T13:55:53.123456+00:00`), as sqlx
    /// encodes a `DateTime<Utc>` for SQLite.
    TimestampTz(DateTime<Utc>),
    /// `%F %T%.f` text, as sqlx encodes a `NaiveDateTime`.
    Timestamp(NaiveDateTime),
    /// `%F` text.
    Date(NaiveDate),
    /// `%T%.f` text.
    Time(NaiveTime),
}

/// A table of the target placement.
#[derive(Debug, Clone)]
pub(crate) struct IncomingTable {
    /// The name the tenant's SQL uses (a declared table's name in a
    /// shared file, its own name in a tenant file).
    pub(crate) logical: String,
    /// The table in the file (`notes_rows` for a declared `notes` in a
    /// shared file).
    pub(crate) physical: String,
    /// Its columns, in order.
    pub(crate) columns: Vec<String>,
    /// Its tenant column, if it has one.
    pub(crate) tenant_column: Option<String>,
}

/// A connection on the target file, filling one table at a time.
pub(crate) struct Incoming {
    conn: SqliteConnection,
    shared: bool,
    tenant: TenantId,
}

/// The `INSERT` of one table: the columns fed by the source, plus the
/// target's tenant column when the source does not carry it.
pub(crate) struct TableFill<'a> {
    table: &'a IncomingTable,
    fed: usize,
    add_tenant: bool,
}

impl SqliteTenancy {
    /// The file of a SQLite target placement and whether it is a shared
    /// file; an unknown cluster or a schema placement is refused.
    pub(crate) fn incoming_file(&self, to: &Placement) -> Result<(PathBuf, bool), TenancyError> {
        self.placement_file(to)
    }

    /// Prepares the target: a tenant file created if missing and brought
    /// to the tenant migrations (a kept source of an earlier move there,
    /// still locked out, is refused: remove it first); a shared file
    /// brought to the shared migrations, if any, and the tenant's fence
    /// row of an earlier move away lifted. Idempotent.
    pub(crate) async fn prepare_incoming(
        &self,
        tenant: TenantId,
        to: &Placement,
    ) -> Result<(), TenancyError> {
        let (file, shared) = self.incoming_file(to)?;
        if shared {
            if self.inner.shared_migrator.is_some() {
                self.migrate_shared().await?;
            }
            let mut dst = connect(&file, BUSY).await?;
            let lifted = lockout::lift_shared(&mut dst, tenant).await;
            dst.close().await?;
            return lifted;
        }
        if file.exists() {
            let mut dst = connect(&file, BUSY).await?;
            let kept = lockout::file_locked_out(&mut dst).await;
            dst.close().await?;
            if kept? {
                return Err(TenancyError::InvalidInput(format!(
                    "{} is the kept source of an earlier move of tenant {tenant}; remove it (and \
                     its -wal and -shm files) before moving the tenant back there",
                    file.display()
                )));
            }
        }
        let Some(migrator) = &self.inner.tenant_migrator else {
            return Err(TenancyError::InvalidInput(
                "moving a tenant into a SQLite file of its own needs the tenant migrations \
                 (SqliteTenancyBuilder::tenant_migrations) to create its tables"
                    .to_owned(),
            ));
        };
        let options = SqliteConnectOptions::new()
            .filename(&file)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(BUSY);
        let mut conn = SqliteConnection::connect_with(&options).await?;
        let migrated = migrator.run_direct(None, &mut conn, false).await;
        conn.close().await?;
        migrated.map_err(|e| TenancyError::InvalidInput(format!("tenant migration failed: {e}")))
    }

    /// The target's tables (the prepared file's; in a shared file only
    /// those with a tenant column — the others are no tenant's).
    pub(crate) async fn incoming_tables(
        &self,
        to: &Placement,
    ) -> Result<Vec<IncomingTable>, TenancyError> {
        let (file, shared) = self.incoming_file(to)?;
        let columns = self.inner.tenant_columns();
        let mut conn = connect(&file, BUSY).await?;
        let read = schema_tables(&mut conn, "main", &columns).await;
        conn.close().await?;
        Ok(read?
            .into_iter()
            .filter(|t| !shared || t.tenant_column.is_some())
            .map(|t| IncomingTable {
                logical: if shared {
                    self.inner
                        .tables
                        .iter()
                        .find(|d| d.physical().is_ok_and(|p| p.as_str() == t.name))
                        .map_or_else(|| t.name.clone(), |d| d.table.as_str().to_owned())
                } else {
                    t.name.clone()
                },
                physical: t.name,
                columns: t.columns.into_iter().map(|(c, _)| c).collect(),
                tenant_column: t.tenant_column,
            })
            .collect())
    }

    /// A connection on the prepared target, foreign keys off: tables are
    /// filled one at a time, children possibly before their parents, and
    /// the rows come from a database that enforced them.
    pub(crate) async fn open_incoming(
        &self,
        tenant: TenantId,
        to: &Placement,
        busy: Duration,
    ) -> Result<Incoming, TenancyError> {
        let (file, shared) = self.incoming_file(to)?;
        let options = SqliteConnectOptions::new()
            .filename(&file)
            .create_if_missing(false)
            .foreign_keys(false)
            .busy_timeout(busy);
        let conn = SqliteConnection::connect_with(&options).await?;
        Ok(Incoming {
            conn,
            shared,
            tenant,
        })
    }

    /// Removes what an aborted move wrote to the target: the tenant file
    /// (with its -wal and -shm files), or the tenant's rows in the shared
    /// file's tables.
    pub(crate) async fn drop_incoming(
        &self,
        tenant: TenantId,
        to: &Placement,
    ) -> Result<(), TenancyError> {
        let (file, shared) = self.incoming_file(to)?;
        if !shared {
            return remove_file(&file);
        }
        let tables = self.incoming_tables(to).await?;
        let mut conn = self.open_incoming(tenant, to, BUSY).await?;
        let me = tenant_literal(tenant);
        let cleared = lockout::in_write_tx(&mut conn.conn, async |conn: &mut SqliteConnection| {
            for table in &tables {
                if let Some(c) = &table.tenant_column {
                    conn.execute(AssertSqlSafe(format!(
                        "DELETE FROM {} WHERE {} = {me}",
                        quote(&table.physical),
                        quote(c)
                    )))
                    .await?;
                }
            }
            Ok(())
        })
        .await;
        conn.close().await?;
        cleared
    }
}

impl Incoming {
    /// Starts filling `table` with the columns `names` (in the order of
    /// each row's cells): takes the file's write lock and removes the
    /// tenant's rows an earlier, interrupted attempt left there (all rows
    /// of a tenant file's table: the file is the tenant's, not yet
    /// served).
    pub(crate) async fn begin_table<'a>(
        &mut self,
        table: &'a IncomingTable,
        names: &[String],
    ) -> Result<TableFill<'a>, TenancyError> {
        let add_tenant = table
            .tenant_column
            .as_ref()
            .is_some_and(|c| !names.contains(c));
        self.conn.execute("BEGIN IMMEDIATE").await?;
        let cleared = self
            .conn
            .execute(AssertSqlSafe(format!(
                "DELETE FROM {}{}",
                quote(&table.physical),
                self.filter(table)
            )))
            .await;
        if let Err(e) = cleared {
            self.rollback().await;
            return Err(e.into());
        }
        Ok(TableFill {
            table,
            fed: names.len(),
            add_tenant,
        })
    }

    /// `WHERE <tenant column> = X'…'` in a shared file, or nothing.
    fn filter(&self, table: &IncomingTable) -> String {
        match (&table.tenant_column, self.shared) {
            (Some(c), true) => format!(" WHERE {} = {}", quote(c), tenant_literal(self.tenant)),
            _ => String::new(),
        }
    }

    /// Inserts a batch of rows (each `names.len()` cells, in order) into
    /// the table being filled, in statements of up to 100 rows.
    pub(crate) async fn insert(
        &mut self,
        fill: &TableFill<'_>,
        names: &[String],
        rows: Vec<Vec<Cell>>,
    ) -> Result<(), TenancyError> {
        let width = fill.fed + usize::from(fill.add_tenant);
        let per_statement = (MAX_PARAMS / width.max(1)).clamp(1, MAX_ROWS_PER_STATEMENT);
        let mut list: Vec<String> = names.iter().map(|c| quote(c)).collect();
        if fill.add_tenant
            && let Some(c) = &fill.table.tenant_column
        {
            list.push(quote(c));
        }
        let tuple = format!("({})", vec!["?"; width].join(", "));
        let mut rows = rows.into_iter().peekable();
        while rows.peek().is_some() {
            let chunk: Vec<Vec<Cell>> = rows.by_ref().take(per_statement).collect();
            let sql = format!(
                "INSERT INTO {} ({}) VALUES {}",
                quote(&fill.table.physical),
                list.join(", "),
                vec![tuple.as_str(); chunk.len()].join(", ")
            );
            let mut query = sqlx::query::<Sqlite>(AssertSqlSafe(sql));
            for row in chunk {
                if row.len() != fill.fed {
                    return Err(TenancyError::Corrupt(format!(
                        "a row of {} cells for {} columns of {}",
                        row.len(),
                        fill.fed,
                        fill.table.physical
                    )));
                }
                for cell in row {
                    query = bind(query, cell);
                }
                if fill.add_tenant {
                    query = query.bind(self.tenant.as_uuid().as_bytes().to_vec());
                }
            }
            query.execute(&mut self.conn).await?;
        }
        Ok(())
    }

    /// Ends the table: counts the tenant's rows in it and commits if they
    /// are the `sent` rows read from the source, rolls back otherwise.
    pub(crate) async fn finish_table(
        &mut self,
        fill: TableFill<'_>,
        sent: u64,
    ) -> Result<u64, TenancyError> {
        let held: Result<i64, sqlx::Error> = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT count(*) FROM {}{}",
            quote(&fill.table.physical),
            self.filter(fill.table)
        )))
        .fetch_one(&mut self.conn)
        .await;
        let held = match held {
            Ok(n) => u64::try_from(n).unwrap_or(0),
            Err(e) => {
                self.rollback().await;
                return Err(e.into());
            }
        };
        if held != sent {
            self.rollback().await;
            return Err(TenancyError::Corrupt(format!(
                "table {}: {sent} rows read from PostgreSQL but {held} in SQLite; nothing of it \
                 was committed and the move stopped before its cut-over (abort_move_to_sqlite \
                 leaves the source serving)",
                fill.table.physical
            )));
        }
        self.conn.execute("COMMIT").await?;
        Ok(held)
    }

    /// Rolls the table being filled back (after an error).
    pub(crate) async fn rollback(&mut self) {
        let _ = self.conn.execute("ROLLBACK").await;
    }

    /// Closes the connection.
    pub(crate) async fn close(self) -> Result<(), TenancyError> {
        Ok(self.conn.close().await?)
    }
}

type Query<'q> = sqlx::query::Query<'q, Sqlite, SqliteArguments>;

/// Binds one cell in the Rust type whose sqlx encoding is the stored form.
fn bind(query: Query<'_>, cell: Cell) -> Query<'_> {
    match cell {
        Cell::Null => query.bind(None::<i64>),
        Cell::Int(v) => query.bind(v),
        Cell::Real(v) => query.bind(v),
        Cell::Text(v) => query.bind(v),
        Cell::Blob(v) => query.bind(v),
        Cell::Uuid(v) => query.bind(v),
        Cell::TimestampTz(v) => query.bind(v),
        Cell::Timestamp(v) => query.bind(v),
        Cell::Date(v) => query.bind(v),
        Cell::Time(v) => query.bind(v),
    }
}
