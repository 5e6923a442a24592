//! Transaction pooling: row and schema tenants served through PgBouncer
//! in `pool_mode = transaction`, where consecutive transactions of one
//! client connection run on different server connections, and one server
//! connection serves every client in turn (see
//! [`PgTenancyBuilder::transaction_pooling`](super::PgTenancyBuilder::transaction_pooling)).
//!
//! What breaks behind such a pooler, and what this mode does about it:
//! - a session-level scope (`SET`, `set_config(.., false)`, `SET ROLE`)
//!   stays on a server connection that another client gets next: every
//!   scope here is transaction-local, set in the `BEGIN` round trip, and
//!   [`PgTenancy::acquire`](super::PgTenancy::acquire) (a session scope)
//!   is refused;
//! - the extended protocol takes two round trips outside a transaction
//!   (prepare, then execute), which may reach two server connections:
//!   every scoped statement runs inside the handle's transaction;
//! - sqlx's named prepared statements (and its statement cache) outlive
//!   the transaction on the server connection, where another client's
//!   statement of the same name then fails to prepare (PgBouncer 1.18
//!   tracks no prepared statements): the runtime connections have no
//!   statement cache, and each `BEGIN` deallocates whatever an earlier
//!   client left on its server connection;
//! - the login's startup options (the runtime search path, `role=none`)
//!   cannot pass through PgBouncer: the search path and the role are set
//!   transaction-locally instead, the search path read once from the
//!   cluster's admin connection (which reaches PostgreSQL directly);
//! - session state raw SQL leaves on a server connection (settings, role,
//!   cursors, listeners, temporary tables, advisory locks, prepared
//!   statements) would reach the next client: each `BEGIN` undoes it for
//!   its own transaction, in the same round trip, and PgBouncer's
//!   `server_reset_query = DISCARD ALL` with `server_reset_query_always =
//!   1` (the documented configuration) removes it after every transaction
//!   for every client, plain use of the runtime pool included;
//! - session advisory locks (sqlx's migrator) and `LISTEN` need a session:
//!   migrations, provisioning and setup use the admin connection, which
//!   must reach PostgreSQL directly, and so do database tenants' own pools
//!   (their startup options name the tenant; PgBouncer would drop them).

use saas_core::TenantId;
use sqlx::postgres::PgConnectOptions;

use super::PgClusterConfig;
use crate::error::TenancyError;
use crate::placement::TenantObjectName;

/// Undoes, inside the transaction a pooled `BEGIN` opened, what earlier
/// clients of the server connection left at session level (committed
/// with the transaction; `UNLISTEN` takes effect at commit, before any
/// notification could be delivered). Transaction characteristics are
/// fixed by then: a session default such as `default_transaction_read_only`
/// makes this transaction read-only — a failure, never a leak — and
/// PgBouncer's `DISCARD ALL` removes it after the transaction that set it.
const IN_TRANSACTION_RESET: &str = "CLOSE ALL; RESET ROLE; RESET ALL; UNLISTEN *; \
    DISCARD TEMP; DISCARD SEQUENCES; DEALLOCATE ALL; ";

/// The `BEGIN` of a row tenant's transaction through a transaction
/// pooler: reset, the login's own role, the tenant's handle lock shared
/// for the transaction, the tenant and the runtime search path, all
/// transaction-local, in one round trip.
pub(super) fn begin_row(tenant: TenantId, search_path: &str) -> String {
    let lock = super::sql::handle_lock(tenant, "pg_advisory_xact_lock_shared");
    let setting = super::TENANT_SETTING;
    format!(
        "BEGIN; {IN_TRANSACTION_RESET}SET LOCAL ROLE NONE; \
         SELECT pg_catalog.pg_advisory_unlock_all(), {lock}, \
         pg_catalog.set_config('{setting}', '{tenant}', true), \
         pg_catalog.set_config('search_path', {}, true)",
        literal(search_path)
    )
}

/// The `BEGIN` of a schema tenant's transaction through a transaction
/// pooler: reset, the handle lock first (as in `sql::begin_schema`), then
/// the tenant's role, schema and setting, transaction-local.
pub(super) fn begin_schema(schema: &TenantObjectName, tenant: TenantId) -> String {
    let s = schema.quoted();
    let lock = super::sql::handle_lock(tenant, "pg_advisory_xact_lock_shared");
    let setting = super::TENANT_SETTING;
    format!(
        "BEGIN; {IN_TRANSACTION_RESET}\
         SELECT pg_catalog.pg_advisory_unlock_all(), {lock}, \
         pg_catalog.set_config('{setting}', '{tenant}', true); \
         SET LOCAL ROLE {s}; SET LOCAL search_path TO {s}"
    )
}

/// Whether `error`, from a pooled `BEGIN`, says the connection's protocol
/// exchange was out of step: the reply read was not the `BEGIN`'s (sqlx
/// saw no transaction open after it). Raw SQL can leave a reply unread (a
/// refused `COPY … TO STDOUT` through sqlx's raw copy API), and PgBouncer
/// drops replies that arrive after it has handed the server connection
/// back, so the release reset's check does not catch every such
/// connection. The handle closes it (it never reached `Open`).
pub(super) fn out_of_step(error: &TenancyError) -> bool {
    matches!(
        error,
        TenancyError::Database(sqlx::Error::BeginFailed | sqlx::Error::Protocol(_))
    )
}

/// A string literal for `value` (a search path the server reported).
fn literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// Checks a cluster's pooler settings against the tenancy's mode: a
/// runtime pool through a transaction pooler must use transaction-local
/// scopes, log in as the runtime role, and carry no startup options
/// (PgBouncer refuses them unless told to ignore them, and then the
/// options would silently not apply).
pub(super) fn check_cluster(
    config: &PgClusterConfig,
    transaction_pooling: bool,
) -> Result<(), TenancyError> {
    let Some(pooler) = &config.transaction_pooler else {
        return Ok(());
    };
    let cluster = &config.name;
    if !transaction_pooling {
        return Err(TenancyError::InvalidInput(format!(
            "cluster {cluster} has a transaction pooler, but session-level scopes leak \
             through one: call PgTenancyBuilder::transaction_pooling(true)"
        )));
    }
    if pooler.get_username() != config.runtime_role.as_str() {
        return Err(TenancyError::InvalidInput(format!(
            "cluster {cluster}: the transaction pooler's user is {:?}, not the runtime role \
             {}: set it with PgConnectOptions::username",
            pooler.get_username(),
            config.runtime_role
        )));
    }
    if pooler.get_options().is_some() {
        return Err(TenancyError::InvalidInput(format!(
            "cluster {cluster}: the transaction pooler's connect options carry startup \
             `options`, which PgBouncer does not pass on; remove them (the scope, role and \
             search path are set in each transaction)"
        )));
    }
    Ok(())
}

/// Connect options of a cluster's runtime pool in transaction-pooling
/// mode: through the pooler when one is configured, else as in the shared
/// mode; with no statement cache either way (see the module notes).
pub(super) fn runtime_options(config: &PgClusterConfig) -> PgConnectOptions {
    let options = match &config.transaction_pooler {
        Some(pooler) => pooler.clone(),
        None => super::runtime_options(config),
    };
    options.statement_cache_capacity(0)
}

#[cfg(test)]
mod tests {
    use sqlx::{AssertSqlSafe, Connection, PgConnection, Row};

    use super::*;

    /// Session state as raw SQL of an earlier client would leave it on a
    /// server connection, then a pooled `BEGIN` for another tenant, on the
    /// same session (no pooler, no release reset between them): the
    /// transaction sees none of it.
    #[tokio::test]
    async fn a_pooled_begin_undoes_what_an_earlier_client_left() {
        let Some(url) =
            saas_test_support::service_url(saas_test_support::Service::Postgres, module_path!())
        else {
            return;
        };
        let mut conn = PgConnection::connect(&url).await.unwrap();
        let (left_by, next) = (TenantId::new(), TenantId::new());
        let leave = format!(
            "SELECT set_config('{}', '{left_by}', false); SET search_path TO pg_catalog; \
             SET TIME ZONE 'Pacific/Chatham'; PREPARE sqlx_s_1 AS SELECT 1; \
             CREATE TEMP TABLE saas_pooled_left (x int); LISTEN saas_pooled_left; \
             SELECT pg_advisory_lock(4243, 1); \
             BEGIN; DECLARE saas_pooled_cursor CURSOR WITH HOLD FOR SELECT 1; COMMIT",
            super::super::TENANT_SETTING
        );
        sqlx::raw_sql(AssertSqlSafe(leave))
            .execute(&mut conn)
            .await
            .unwrap();
        let path = "\"$user\", public";
        sqlx::raw_sql(AssertSqlSafe(begin_row(next, path)))
            .execute(&mut conn)
            .await
            .unwrap();
        let row = sqlx::raw_sql(
            "SELECT current_setting('saas.tenant_id'), current_setting('search_path'), \
             current_setting('TimeZone') = (SELECT reset_val FROM pg_settings WHERE name = 'TimeZone'), \
             (SELECT count(*) FROM pg_prepared_statements), \
             to_regclass('pg_temp.saas_pooled_left') IS NULL, \
             (SELECT count(*) FROM pg_cursors), \
             (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = 4243 \
               AND pid = pg_backend_pid()), \
             current_user = session_user",
        )
        .fetch_one(&mut conn)
        .await
        .unwrap();
        assert_eq!(row.get::<String, _>(0), next.to_string());
        assert_eq!(row.get::<String, _>(1), path);
        assert!(row.get::<bool, _>(2), "time zone left");
        assert_eq!(row.get::<i64, _>(3), 0, "prepared statements left");
        assert!(row.get::<bool, _>(4), "temporary table left");
        assert_eq!(row.get::<i64, _>(5), 0, "cursor left");
        assert_eq!(row.get::<i64, _>(6), 0, "advisory lock left");
        assert!(row.get::<bool, _>(7), "role left");
        sqlx::raw_sql("COMMIT").execute(&mut conn).await.unwrap();
        let listening: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_listening_channels()")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(listening, 0, "listener left after the transaction");
        conn.close().await.unwrap();
    }

    #[test]
    fn a_search_path_is_quoted_as_a_literal() {
        assert_eq!(literal("a'b, public"), "'a''b, public'");
    }
}
