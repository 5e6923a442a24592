//! The PostgreSQL triggers: plpgsql functions writing one outbox row per
//! catalog or subscription change.

use saas_events::EventError;
use saas_events::postgres::{OutboxLocation, PgOutbox};
use saas_tenancy::SqlIdent;
use sqlx::{AssertSqlSafe, Connection, PgConnection, PgPool};

use super::pg_sql::{FUNCTION_TEMPLATE, Insert, subscription_function_body, tenant_function_body};
use super::{BILLING_SOURCE, BILLING_TOPIC, TENANT_SOURCE, TENANT_TOPIC, backend_error};

/// Installs the triggers that write tenant lifecycle and subscription
/// events from the tables of one PostgreSQL schema into an outbox table
/// (see the [module docs](super) for the events).
///
/// **Give the outbox a schema of its own** when the catalog's schema is
/// also the shared schema of row tenants (it is in the tenancy's
/// `search_path`): deleting a row tenant purges every table of those
/// schemas that has a `tenant_id` column — an outbox there would lose the
/// tenant's pending events, its own deletion events included, with its
/// data.
///
/// The trigger functions are `SECURITY DEFINER`, owned by the role that
/// runs the installer, with `search_path` fixed to `pg_catalog, pg_temp`
/// and every name schema-qualified: whoever writes the catalog (an admin
/// pool, an operator, a role with no right on the outbox) writes its
/// event, and nobody can redirect the insert with a `search_path` of
/// their own. `EXECUTE` is revoked from `PUBLIC` (firing a trigger does
/// not need it). Where the outbox has the tenancy's row-level security
/// forced on it and the function's owner does not bypass it, the function
/// sets the tenant setting (`saas.tenant_id`) to the event's tenant for its
/// one insert and puts the previous value back — an unset setting comes
/// back as `''`, which the tenancy's policies read as unset.
///
/// ```no_run
/// use saas_foundation::catalog_events::PgCatalogEvents;
///
/// # async fn run(admin: sqlx::PgPool) -> Result<(), Box<dyn std::error::Error>> {
/// // After the catalog's and billing's migrations, at every start:
/// let events = PgCatalogEvents::new("app", "app_events")?;
/// let mut conn = admin.acquire().await?;
/// events.install_tenant_events(&mut conn).await?;
/// events.install_billing_events(&mut conn).await?;
/// // The relay drains it like any outbox:
/// let location = events.location("catalog", admin.clone())?;
/// # let _ = location;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct PgCatalogEvents {
    schema: SqlIdent,
    outbox_schema: SqlIdent,
    outbox: PgOutbox,
}

fn schema_ident(schema: &str) -> Result<SqlIdent, EventError> {
    SqlIdent::new(schema).map_err(|_| EventError::InvalidName {
        name: schema.to_owned(),
        reason: "a schema must be a lowercase SQL identifier",
    })
}

impl PgCatalogEvents {
    /// Events for the tables of `schema` (`saas_tenants`,
    /// `billing_subscriptions`), into `saas_events_outbox` in
    /// `outbox_schema` (created if missing; it may be `schema` itself when
    /// no row tenant's tables live there).
    ///
    /// # Errors
    /// [`EventError::InvalidName`] unless both are lowercase SQL
    /// identifiers.
    pub fn new(schema: &str, outbox_schema: &str) -> Result<Self, EventError> {
        Ok(Self {
            schema: schema_ident(schema)?,
            outbox_schema: schema_ident(outbox_schema)?,
            outbox: PgOutbox::new(),
        })
    }

    /// Writes into `outbox`'s table instead (its name is all that is used).
    pub fn with_outbox(mut self, outbox: PgOutbox) -> Self {
        self.outbox = outbox;
        self
    }

    /// The schema of the tables that have triggers.
    pub fn schema(&self) -> &str {
        self.schema.as_str()
    }

    /// The schema of the outbox.
    pub fn outbox_schema(&self) -> &str {
        self.outbox_schema.as_str()
    }

    /// The outbox table's name (in [`PgCatalogEvents::outbox_schema`]).
    pub fn table(&self) -> &str {
        self.outbox.table()
    }

    /// The relay's location for this outbox, reached through `pool` (a
    /// role that may read and delete every row of it).
    ///
    /// # Errors
    /// None in practice: the schema was validated by
    /// [`PgCatalogEvents::new`].
    pub fn location(
        &self,
        name: impl Into<String>,
        pool: PgPool,
    ) -> Result<OutboxLocation, EventError> {
        OutboxLocation::new(name, pool, Some(self.outbox_schema.as_str().to_owned()))
    }

    /// Creates the outbox table (if missing) and the triggers on
    /// `saas_tenants` in one transaction; replaces an older version.
    /// Replacing a trigger locks the table for the moment the transaction
    /// takes, and concurrent installers wait for each other.
    ///
    /// # Errors
    /// A database error (no catalog table yet, or no right to create
    /// triggers on it).
    pub async fn install_tenant_events(&self, conn: &mut PgConnection) -> Result<(), EventError> {
        let insert = Insert {
            tenant: "changed.id",
            topic: TENANT_TOPIC,
            source: TENANT_SOURCE,
            subject: "changed.id::text",
        };
        let triggers = [
            ("insert", "AFTER INSERT", ""),
            (
                "update",
                "AFTER UPDATE OF status",
                "WHEN (OLD.status IS DISTINCT FROM NEW.status)",
            ),
            ("delete", "AFTER DELETE", ""),
        ];
        let function = Function {
            table: "saas_tenants",
            prefix: "saas_tenant_events",
            body: tenant_function_body(),
            insert,
        };
        self.install(conn, &function, &triggers).await
    }

    /// Creates the outbox table (if missing) and the triggers on
    /// billing's `billing_subscriptions` in one transaction; replaces an
    /// older version.
    ///
    /// # Errors
    /// A database error (no subscriptions table yet, for example).
    pub async fn install_billing_events(&self, conn: &mut PgConnection) -> Result<(), EventError> {
        let insert = Insert {
            tenant: "NEW.tenant_id",
            topic: BILLING_TOPIC,
            source: BILLING_SOURCE,
            subject: "NEW.id::text",
        };
        let triggers = [
            ("insert", "AFTER INSERT", ""),
            (
                "update",
                "AFTER UPDATE OF state",
                "WHEN (OLD.state->>'status' IS DISTINCT FROM NEW.state->>'status')",
            ),
        ];
        let function = Function {
            table: "billing_subscriptions",
            prefix: "saas_subscription_events",
            body: subscription_function_body(),
            insert,
        };
        self.install(conn, &function, &triggers).await
    }

    /// Runs the installation in one transaction, serialised with every
    /// other installer (concurrent `CREATE OR REPLACE FUNCTION`s can fail
    /// with "tuple concurrently updated"; installs are rare, so one lock
    /// for all schemas keeps it simple).
    async fn install(
        &self,
        conn: &mut PgConnection,
        function: &Function,
        triggers: &[(&str, &str, &str)],
    ) -> Result<(), EventError> {
        let s = self.schema.quoted();
        let o = self.outbox_schema.quoted();
        let table = function.table;
        let function_name = format!("{s}.\"{}_outbox\"", function.prefix);
        let outbox = format!("{o}.\"{}\"", self.outbox.table());
        let create_function = FUNCTION_TEMPLATE
            .replace("__FUNCTION__", &function_name)
            .replace("__BODY__", &function.body)
            .replace("__INSERT__", &function.insert.sql(&outbox));
        let mut statements = vec![
            format!("CREATE SCHEMA IF NOT EXISTS {o}"),
            // The outbox's own SQL is unqualified.
            format!("SET LOCAL search_path TO {o}"),
            self.outbox.create_table_sql(),
            create_function,
            format!("REVOKE ALL ON FUNCTION {function_name}() FROM PUBLIC"),
        ];
        // DROP + CREATE rather than CREATE OR REPLACE TRIGGER (PostgreSQL
        // 14+): gen_random_uuid() already lets this run on 13.
        for (op, when, condition) in triggers {
            let trigger = format!("\"{}_{op}\"", function.prefix);
            statements.push(format!(
                "DROP TRIGGER IF EXISTS {trigger} ON {s}.\"{table}\""
            ));
            statements.push(format!(
                "CREATE TRIGGER {trigger} {when} ON {s}.\"{table}\" FOR EACH ROW {condition} \
                 EXECUTE FUNCTION {function_name}()"
            ));
        }
        let pg = |e| backend_error("postgres", e);
        let mut tx = conn.begin().await.map_err(pg)?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('saas_foundation.catalog_events'))")
            .execute(&mut *tx)
            .await
            .map_err(pg)?;
        for statement in statements {
            sqlx::query(AssertSqlSafe(statement))
                .execute(&mut *tx)
                .await
                .map_err(pg)?;
        }
        tx.commit().await.map_err(pg)
    }
}

/// One trigger function and the table it watches.
struct Function {
    table: &'static str,
    /// Names the function (`<prefix>_outbox`) and its triggers
    /// (`<prefix>_<operation>`).
    prefix: &'static str,
    body: String,
    insert: Insert,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_schema_must_be_an_identifier() {
        assert!(PgCatalogEvents::new("app", "app_events").is_ok());
        assert!(PgCatalogEvents::new("app\"; drop", "events").is_err());
        assert!(PgCatalogEvents::new("app", "Events").is_err());
    }
}
