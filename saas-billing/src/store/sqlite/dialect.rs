//! The SQLite [`Dialect`]: ids, instants and decimals as text that sorts
//! and compares as needed (see [`super`]), JSON as `TEXT`; writes that
//! read first in `BEGIN IMMEDIATE` transactions instead of row locks.

use async_trait::async_trait;
use sqlx::{Sqlite, SqlitePool, Transaction};

use super::begin_write;
use crate::error::BillingError;
use crate::store::sql::dialect::{Dialect, Param, Statement};
use crate::store::sql::sortable;

#[async_trait]
impl Dialect for Sqlite {
    const BACKEND: &'static str = super::BACKEND;
    const JSON_PARAM: &'static str = "";
    const JSON_TEXT: &'static str = "";
    const ID_PARAM: &'static str = "";
    const FOR_UPDATE: &'static str = "";

    async fn begin_write(pool: &SqlitePool) -> Result<Transaction<'static, Sqlite>, BillingError> {
        begin_write(pool).await
    }

    fn bind(statement: Statement<Sqlite>, param: Param) -> Statement<Sqlite> {
        match param {
            Param::Id(id) => statement.bind(id.to_string()),
            Param::MaybeId(id) => statement.bind(id.map(|id| id.to_string())),
            Param::Tenant(tenant) => statement.bind(tenant),
            Param::Int(int) => statement.bind(int),
            Param::MaybeInt(int) => statement.bind(int),
            Param::MaybeText(text) => statement.bind(text),
            Param::Text(text) => statement.bind(text),
            Param::At(at) => statement.bind(at.map(sortable)),
            Param::Amount(amount) => statement.bind(amount.to_string()),
        }
    }

    fn rows_affected(done: &sqlx::sqlite::SqliteQueryResult) -> u64 {
        done.rows_affected()
    }
}
