//! The copy of a move to SQLite: each PostgreSQL column's type mapped to
//! the form the SQLite backend stores, and each table read through a
//! cursor in chunks of [`CHUNK_ROWS`] rows, converted and written to
//! SQLite in batches — memory holds one chunk, whatever the tenant's size.
//!
//! **The mapping** (each value decoded from PostgreSQL into the Rust type
//! whose sqlx SQLite encoding is what the SQLite backend stores, so that
//! sqlx reads it back as that type):
//!
//! | PostgreSQL | SQLite |
//! |---|---|
//! | `boolean` | integer 0 / 1 |
//! | `smallint`, `integer`, `bigint` | integer |
//! | `real`, `double precision` | real |
//! | `text`, `varchar`, `char`, `name` | text |
//! | `uuid` | 16-byte blob (as sqlx binds a `Uuid`, and as `pg_copy.rs` reads one back) |
//! | `timestamptz` | RFC 3339 text in UTC (`2026-12-06T13:55:53.123456+00:00`) |
//! | `timestamp` | `YYYY-MM-DD HH:MM:SS[.f]` text |
//! | `date` | `YYYY-MM-DD` text |
//! | `time` | `HH:MM:SS[.f]` text |
//! | `numeric` | its exact text (`12.50`; never a float) |
//! | `json`, `jsonb` | text |
//! | `bytea` | blob |
//!
//! Any other type (arrays, enums, domains, ranges, intervals, geometric
//! and network types, `timetz`, `money`…) is refused before the fence
//! with [`TenancyError::UnsupportedColumnType`]; `infinity` timestamps
//! have no chrono value, and SQLite would store a float `NaN` as `NULL`:
//! both stop the copy under the fence (resumable, abortable).

use saas_core::TenantId;
use sqlx::postgres::PgRow;
use sqlx::{AssertSqlSafe, Executor, PgConnection, Row};

use super::plan::Table;
use crate::error::TenancyError;
use crate::postgres::sql::quote_ident;
use crate::sqlite::{Cell, Incoming, IncomingTable};

/// Rows fetched from the source's cursor at a time.
pub(super) const CHUNK_ROWS: usize = 1_000;

/// How a PostgreSQL column's values become SQLite values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Bool,
    Int2,
    Int4,
    Int8,
    Float4,
    Float8,
    Text,
    /// Read as its text from PostgreSQL (`numeric`, `json`, `jsonb`).
    AsText,
    Uuid,
    TimestampTz,
    Timestamp,
    Date,
    Time,
    Bytea,
}

impl Kind {
    /// The kind of a column of PostgreSQL type `typname` (`pg_type`'s
    /// name), if it can be carried.
    pub(super) fn of(typname: &str) -> Option<Self> {
        Some(match typname {
            "bool" => Kind::Bool,
            "int2" => Kind::Int2,
            "int4" => Kind::Int4,
            "int8" => Kind::Int8,
            "float4" => Kind::Float4,
            "float8" => Kind::Float8,
            "text" | "varchar" | "bpchar" | "name" => Kind::Text,
            "numeric" | "json" | "jsonb" => Kind::AsText,
            "uuid" => Kind::Uuid,
            "timestamptz" => Kind::TimestampTz,
            "timestamp" => Kind::Timestamp,
            "date" => Kind::Date,
            "time" => Kind::Time,
            "bytea" => Kind::Bytea,
            _ => return None,
        })
    }
}

/// A source column and how it is carried.
#[derive(Debug, Clone)]
pub(super) struct Column {
    pub(super) name: String,
    pub(super) kind: Kind,
}

/// The columns of source `table` (generated ones left out: SQLite
/// computes its own), each with its kind; the first column of a type that
/// cannot be carried is refused, naming table, column and type.
pub(super) async fn columns(
    src: &mut PgConnection,
    table: &Table,
) -> Result<Vec<Column>, TenancyError> {
    let rows: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT a.attname::text, t.typname::text, format_type(a.atttypid, a.atttypmod) \
         FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid \
         WHERE a.attrelid = $1::text::regclass AND a.attnum > 0 AND NOT a.attisdropped \
           AND a.attgenerated = '' ORDER BY a.attnum",
    )
    .bind(table.qualified())
    .fetch_all(&mut *src)
    .await?;
    rows.into_iter()
        .map(|(name, typname, shown)| match Kind::of(&typname) {
            Some(kind) => Ok(Column { name, kind }),
            None => Err(TenancyError::UnsupportedColumnType {
                table: table.qualified(),
                column: name,
                type_name: shown,
            }),
        })
        .collect()
}

/// One table of the copy: the source table, the columns carried, the
/// SQLite table they go to.
#[derive(Debug, Clone)]
pub(super) struct Job {
    pub(super) source: Table,
    pub(super) columns: Vec<Column>,
    pub(super) target: IncomingTable,
}

/// Pairs each source table with the target table of its name and picks
/// the columns carried: every source column must exist in the target
/// (matched by name), except a tenant column, which a tenant file's table
/// need not have. Refused, naming what is missing, before the fence.
pub(super) async fn plan(
    src: &mut PgConnection,
    source: &[Table],
    target: &[IncomingTable],
    tenant_columns: &[String],
) -> Result<Vec<Job>, TenancyError> {
    let mut jobs = Vec::new();
    for table in source {
        let all = columns(src, table).await?;
        let Some(into) = target.iter().find(|t| t.logical == table.name) else {
            return Err(TenancyError::InvalidInput(format!(
                "the SQLite target has no table {:?} for {}: migrate both sides to the same \
                 version; the tenant was not fenced",
                table.name,
                table.qualified()
            )));
        };
        let mut carried = Vec::new();
        for column in all {
            if into.columns.contains(&column.name) {
                carried.push(column);
            } else if !tenant_columns.contains(&column.name) {
                return Err(TenancyError::InvalidInput(format!(
                    "the SQLite table {} has no column {:?} that {} has: migrate both sides to \
                     the same version; the tenant was not fenced",
                    into.physical,
                    column.name,
                    table.qualified()
                )));
            }
        }
        if carried.is_empty() && into.tenant_column.is_none() {
            return Err(TenancyError::InvalidInput(format!(
                "no column of {} is carried into the SQLite table {}",
                table.qualified(),
                into.physical
            )));
        }
        jobs.push(Job {
            source: table.clone(),
            columns: carried,
            target: into.clone(),
        });
    }
    Ok(jobs)
}

/// Copies one table's rows of the tenant from `src` (the fenced, locked
/// out source) into the target, in one SQLite transaction whose row count
/// is checked before it commits, and checks the source still holds as
/// many rows. Returns the rows copied.
pub(super) async fn copy_table(
    src: &mut PgConnection,
    dst: &mut Incoming,
    job: &Job,
    tenant: TenantId,
) -> Result<u64, TenancyError> {
    let names: Vec<String> = job.columns.iter().map(|c| c.name.clone()).collect();
    let select: Vec<String> = job
        .columns
        .iter()
        .map(|c| match c.kind {
            Kind::AsText => format!("{}::text", quote_ident(&c.name)),
            _ => quote_ident(&c.name),
        })
        .collect();
    // The cursor reads one snapshot, a chunk at a time; read only, it
    // holds no lock a writer of another tenant would wait for.
    src.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await?;
    let declared = src
        .execute(AssertSqlSafe(format!(
            "DECLARE saas_move_rows NO SCROLL CURSOR FOR SELECT {} FROM {}{}",
            select.join(", "),
            job.source.qualified(),
            job.source.filter(tenant)
        )))
        .await;
    if let Err(e) = declared {
        let _ = src.execute("ROLLBACK").await;
        return Err(e.into());
    }
    let fill = match dst.begin_table(&job.target, &names).await {
        Ok(fill) => fill,
        Err(e) => {
            let _ = src.execute("ROLLBACK").await;
            return Err(e);
        }
    };
    let mut sent = 0u64;
    let streamed = async {
        let fetch = format!("FETCH FORWARD {CHUNK_ROWS} FROM saas_move_rows");
        loop {
            // Not cached: the same text fetches every table's columns, and a
            // cached statement would keep the first table's description.
            let rows = sqlx::query(AssertSqlSafe(fetch.clone()))
                .persistent(false)
                .fetch_all(&mut *src)
                .await?;
            if rows.is_empty() {
                return Ok::<(), TenancyError>(());
            }
            sent += rows.len() as u64;
            let cells = rows
                .iter()
                .map(|row| decode_row(row, &job.columns))
                .collect::<Result<Vec<_>, _>>()?;
            drop(rows);
            dst.insert(&fill, &names, cells).await?;
        }
    }
    .await;
    let _ = src.execute("COMMIT").await;
    if let Err(e) = streamed {
        dst.rollback().await;
        return Err(e);
    }
    let copied = dst.finish_table(fill, sent).await?;
    // Under the fence the source takes no write: a difference means the
    // lock-out did not hold, and the copy is not to be trusted.
    let held = super::copy::count(src, &job.source, tenant).await?;
    if held != copied {
        return Err(TenancyError::Corrupt(format!(
            "{} holds {held} rows of the tenant but {copied} were copied under the fence; \
             abort_move_to_sqlite and move again",
            job.source.qualified()
        )));
    }
    Ok(copied)
}

/// One source row as SQLite cells, in the order of `columns`.
fn decode_row(row: &PgRow, columns: &[Column]) -> Result<Vec<Cell>, TenancyError> {
    columns
        .iter()
        .enumerate()
        .map(|(i, c)| match decode(row, i, c.kind)? {
            // SQLite stores a NaN real as NULL: refused rather than lost.
            Cell::Real(v) if v.is_nan() => Err(TenancyError::InvalidInput(format!(
                "column {} holds NaN, which SQLite would store as NULL; replace it (or make \
                 the column NULL there) and resume the move, or abort it",
                c.name
            ))),
            cell => Ok(cell),
        })
        .collect()
}

fn decode(row: &PgRow, i: usize, kind: Kind) -> Result<Cell, TenancyError> {
    fn or_null<T>(value: Option<T>, cell: impl FnOnce(T) -> Cell) -> Cell {
        value.map_or(Cell::Null, cell)
    }
    Ok(match kind {
        Kind::Bool => or_null(row.try_get::<Option<bool>, _>(i)?, |b| {
            Cell::Int(i64::from(b))
        }),
        Kind::Int2 => or_null(row.try_get::<Option<i16>, _>(i)?, |v| {
            Cell::Int(i64::from(v))
        }),
        Kind::Int4 => or_null(row.try_get::<Option<i32>, _>(i)?, |v| {
            Cell::Int(i64::from(v))
        }),
        Kind::Int8 => or_null(row.try_get::<Option<i64>, _>(i)?, Cell::Int),
        Kind::Float4 => or_null(row.try_get::<Option<f32>, _>(i)?, |v| {
            Cell::Real(f64::from(v))
        }),
        Kind::Float8 => or_null(row.try_get::<Option<f64>, _>(i)?, Cell::Real),
        Kind::Text | Kind::AsText => or_null(row.try_get::<Option<String>, _>(i)?, Cell::Text),
        Kind::Uuid => or_null(row.try_get::<Option<uuid::Uuid>, _>(i)?, Cell::Uuid),
        Kind::TimestampTz => or_null(
            row.try_get::<Option<chrono::DateTime<chrono::Utc>>, _>(i)?,
            Cell::TimestampTz,
        ),
        Kind::Timestamp => or_null(
            row.try_get::<Option<chrono::NaiveDateTime>, _>(i)?,
            Cell::Timestamp,
        ),
        Kind::Date => or_null(row.try_get::<Option<chrono::NaiveDate>, _>(i)?, Cell::Date),
        Kind::Time => or_null(row.try_get::<Option<chrono::NaiveTime>, _>(i)?, Cell::Time),
        Kind::Bytea => or_null(row.try_get::<Option<Vec<u8>>, _>(i)?, Cell::Blob),
    })
}

#[cfg(test)]
mod tests {
    use super::Kind;

    #[test]
    fn only_the_mapped_types_are_carried() {
        for t in [
            "bool",
            "int2",
            "int4",
            "int8",
            "float4",
            "float8",
            "text",
            "varchar",
            "bpchar",
            "numeric",
            "jsonb",
            "uuid",
            "timestamptz",
            "timestamp",
            "date",
            "time",
            "bytea",
        ] {
            assert!(Kind::of(t).is_some(), "{t}");
        }
        for t in [
            "_int4", "interval", "timetz", "money", "inet", "tsrange", "mood",
        ] {
            assert!(Kind::of(t).is_none(), "{t}");
        }
        assert_eq!(Kind::of("numeric"), Some(Kind::AsText));
    }
}
