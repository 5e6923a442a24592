//! The PostgreSQL [`Dialect`]: native `uuid`, `timestamptz`, `numeric` and
//! `jsonb` columns; row locks with `FOR UPDATE`.

use async_trait::async_trait;
use sqlx::{PgPool, Postgres, Transaction};

use super::{BACKEND, db_error};
use crate::error::BillingError;
use crate::store::sql::dialect::{Dialect, Param, Statement};

#[async_trait]
impl Dialect for Postgres {
    const BACKEND: &'static str = BACKEND;
    const JSON_PARAM: &'static str = "::jsonb";
    const JSON_TEXT: &'static str = "::text";
    const ID_PARAM: &'static str = "::uuid";
    const FOR_UPDATE: &'static str = " FOR UPDATE";

    async fn begin_write(pool: &PgPool) -> Result<Transaction<'static, Postgres>, BillingError> {
        pool.begin().await.map_err(db_error)
    }

    fn bind(statement: Statement<Postgres>, param: Param) -> Statement<Postgres> {
        match param {
            Param::Id(id) => statement.bind(id),
            Param::MaybeId(id) => statement.bind(id),
            Param::Tenant(tenant) => statement.bind(tenant),
            Param::Int(int) => statement.bind(int),
            Param::MaybeInt(int) => statement.bind(int),
            Param::MaybeText(text) => statement.bind(text),
            Param::Text(text) => statement.bind(text),
            Param::At(at) => statement.bind(at),
            Param::Amount(amount) => statement.bind(amount),
        }
    }

    fn rows_affected(done: &sqlx::postgres::PgQueryResult) -> u64 {
        done.rows_affected()
    }
}
