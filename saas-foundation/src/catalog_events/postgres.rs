//! The PostgreSQL triggers: plpgsql functions writing one outbox row per
//! catalog or subscription change.

use saas_events::EventError;
use saas_events::postgres::{OutboxLocation, PgOutbox};
use saas_tenancy::SqlIdent;
use saas_tenancy::postgres::TENANT_SETTING;
use sqlx::{AssertSqlSafe, Connection, PgConnection, PgPool};

use super::{
    BILLING_SOURCE, BILLING_TOPIC, SUBSCRIPTION_CREATED, SUBSCRIPTION_STATUS_CHANGED,
    TENANT_CREATED, TENANT_DELETED, TENANT_PROVISIONED, TENANT_REMOVED, TENANT_SOURCE,
    TENANT_STATUS_CHANGED, TENANT_TOPIC, backend_error,
};

/// Installs the triggers that write tenant lifecycle and subscription
/// events into the outbox of a PostgreSQL schema (see the
/// [module docs](super) for the events).
///
/// The trigger functions are `SECURITY DEFINER`, owned by the role that
/// runs the installer, with `search_path` fixed to `pg_catalog, pg_temp`
/// and every name schema-qualified: whoever writes the catalog (an admin
/// pool, an operator, a role with no right on the outbox) writes its
/// event, and nobody can redirect the insert with a `search_path` of
/// their own. `EXECUTE` is revoked from `PUBLIC` (firing a trigger does
/// not need it). Where the outbox is a tenant table with row-level
/// security forced (a row tenant's outbox), the function sets the tenant
/// setting (`saas.tenant_id`) to the event's tenant for its one insert
/// and puts the previous value back — an unset setting comes back as
/// `''`, which the tenancy's policies read as unset.
///
/// ```no_run
/// use saas_foundation::catalog_events::PgCatalogEvents;
///
/// # async fn run(admin: sqlx::PgPool) -> Result<(), Box<dyn std::error::Error>> {
/// // After the catalog's and billing's migrations, at every start:
/// let events = PgCatalogEvents::new("app")?;
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
    outbox: PgOutbox,
}

impl PgCatalogEvents {
    /// Events for the tables of `schema`, into its `saas_events_outbox`.
    ///
    /// # Errors
    /// [`EventError::InvalidName`] unless `schema` is a lowercase SQL
    /// identifier.
    pub fn new(schema: &str) -> Result<Self, EventError> {
        let schema = SqlIdent::new(schema).map_err(|_| EventError::InvalidName {
            name: schema.to_owned(),
            reason: "a schema must be a lowercase SQL identifier",
        })?;
        Ok(Self {
            schema,
            outbox: PgOutbox::new(),
        })
    }

    /// Writes into `outbox`'s table instead (its name is all that is used).
    pub fn with_outbox(mut self, outbox: PgOutbox) -> Self {
        self.outbox = outbox;
        self
    }

    /// The schema.
    pub fn schema(&self) -> &str {
        self.schema.as_str()
    }

    /// The outbox table's name (in [`PgCatalogEvents::schema`]).
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
        OutboxLocation::new(name, pool, Some(self.schema.as_str().to_owned()))
    }

    /// Creates the outbox table (if missing) and the triggers on
    /// `saas_tenants` in one transaction; replaces an older version.
    ///
    /// # Errors
    /// A database error (no catalog table yet, or no right to create
    /// triggers on it).
    pub async fn install_tenant_events(&self, conn: &mut PgConnection) -> Result<(), EventError> {
        let function = self.function(
            "saas_tenant_events_outbox",
            &tenant_function_body(),
            &Insert {
                tenant: "changed.id",
                topic: TENANT_TOPIC,
                source: TENANT_SOURCE,
                subject: "changed.id::text",
            },
        );
        let triggers = [
            ("insert", "AFTER INSERT", ""),
            (
                "update",
                "AFTER UPDATE OF status",
                "WHEN (OLD.status IS DISTINCT FROM NEW.status)",
            ),
            ("delete", "AFTER DELETE", ""),
        ];
        self.install(
            conn,
            "saas_tenants",
            "saas_tenant_events",
            &function,
            &triggers,
        )
        .await
    }

    /// Creates the outbox table (if missing) and the triggers on
    /// billing's `billing_subscriptions` in one transaction; replaces an
    /// older version.
    ///
    /// # Errors
    /// A database error (no subscriptions table yet, for example).
    pub async fn install_billing_events(&self, conn: &mut PgConnection) -> Result<(), EventError> {
        let function = self.function(
            "saas_subscription_events_outbox",
            &subscription_function_body(),
            &Insert {
                tenant: "NEW.tenant_id",
                topic: BILLING_TOPIC,
                source: BILLING_SOURCE,
                subject: "NEW.id::text",
            },
        );
        let triggers = [
            ("insert", "AFTER INSERT", ""),
            (
                "update",
                "AFTER UPDATE OF state",
                "WHEN (OLD.state->>'status' IS DISTINCT FROM NEW.state->>'status')",
            ),
        ];
        self.install(
            conn,
            "billing_subscriptions",
            "saas_subscription_events",
            &function,
            &triggers,
        )
        .await
    }

    /// The `CREATE OR REPLACE FUNCTION` statement of one trigger function.
    fn function(&self, name: &str, body: &str, insert: &Insert) -> String {
        let s = self.schema.quoted();
        let outbox = format!("{s}.\"{}\"", self.outbox.table());
        let insert_sql = insert.sql(&outbox);
        FUNCTION_TEMPLATE
            .replace("__FUNCTION__", &format!("{s}.\"{name}\""))
            .replace("__BODY__", body)
            .replace("__INSERT__", &insert_sql)
    }

    /// Runs the installation in one transaction, serialised with other
    /// installers of the same schema (concurrent `CREATE OR REPLACE
    /// FUNCTION`s can fail with "tuple concurrently updated").
    async fn install(
        &self,
        conn: &mut PgConnection,
        table: &str,
        prefix: &str,
        function: &str,
        triggers: &[(&str, &str, &str)],
    ) -> Result<(), EventError> {
        let s = self.schema.quoted();
        let function_name = format!("{s}.\"{prefix}_outbox\"");
        let mut statements = vec![
            format!("SET LOCAL search_path TO {s}"),
            self.outbox.create_table_sql(),
            function.to_owned(),
            format!("REVOKE ALL ON FUNCTION {function_name}() FROM PUBLIC"),
        ];
        // DROP + CREATE rather than CREATE OR REPLACE TRIGGER (PostgreSQL
        // 14+): gen_random_uuid() already lets this run on 13.
        for (op, when, condition) in triggers {
            let trigger = format!("\"{prefix}_{op}\"");
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
        sqlx::query(
            "SELECT pg_advisory_xact_lock(hashtext('saas_foundation.catalog_events.' || $1))",
        )
        .bind(self.schema.as_str())
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

/// The outbox insert closing a trigger function: the event JSON built
/// from `event_type` and `data` (declared by the body).
struct Insert {
    tenant: &'static str,
    topic: &'static str,
    source: &'static str,
    subject: &'static str,
}

impl Insert {
    fn sql(&self, outbox: &str) -> String {
        let Insert {
            tenant,
            topic,
            source,
            subject,
        } = self;
        // Every piece is a constant of this crate or a validated,
        // quoted identifier; none contains a quote to escape.
        format!(
            "previous_tenant := current_setting('{TENANT_SETTING}', true);
    PERFORM set_config('{TENANT_SETTING}', {tenant}::text, true);
    INSERT INTO {outbox} (tenant_id, topic, event) VALUES ({tenant}, '{topic}', jsonb_build_object(
        'specversion', '1.0',
        'id', gen_random_uuid()::text,
        'source', '{source}',
        'type', event_type,
        'time', to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'),
        'subject', {subject},
        'tenantid', {tenant}::text,
        'datacontenttype', 'application/json',
        'data', data)::text);
    PERFORM set_config('{TENANT_SETTING}', coalesce(previous_tenant, ''), true);"
        )
    }
}

const FUNCTION_TEMPLATE: &str = "CREATE OR REPLACE FUNCTION __FUNCTION__() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $saas$
DECLARE
    changed record;
    event_type text;
    status_from text;
    status_to text;
    data jsonb;
    previous_tenant text;
BEGIN
    __BODY__
    __INSERT__
    RETURN NULL;
END
$saas$";

/// Picks the event type from the operation and the statuses, and builds
/// the event's data.
fn tenant_function_body() -> String {
    format!(
        "IF TG_OP = 'INSERT' THEN
        changed := NEW;
        event_type := '{TENANT_CREATED}';
        status_to := NEW.status;
    ELSIF TG_OP = 'DELETE' THEN
        changed := OLD;
        event_type := '{TENANT_REMOVED}';
        status_from := OLD.status;
    ELSE
        changed := NEW;
        status_from := OLD.status;
        status_to := NEW.status;
        event_type := CASE
            WHEN status_from = 'provisioning' AND status_to = 'active' THEN '{TENANT_PROVISIONED}'
            WHEN status_to = 'deleted' THEN '{TENANT_DELETED}'
            ELSE '{TENANT_STATUS_CHANGED}' END;
    END IF;
    data := jsonb_build_object('id', changed.id::text, 'slug', changed.slug,
        'strategy', changed.strategy, 'cluster', changed.cluster,
        'from', status_from, 'to', status_to);"
    )
}

/// The same for a subscription (its status lives in the JSON `state`).
fn subscription_function_body() -> String {
    format!(
        "IF TG_OP = 'INSERT' THEN
        event_type := '{SUBSCRIPTION_CREATED}';
    ELSE
        event_type := '{SUBSCRIPTION_STATUS_CHANGED}';
        status_from := OLD.state->>'status';
    END IF;
    status_to := NEW.state->>'status';
    data := jsonb_build_object('id', NEW.id::text, 'tenant_id', NEW.tenant_id::text,
        'plan', NEW.state->'plan', 'from', status_from, 'to', status_to);"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_schema_must_be_an_identifier() {
        assert!(PgCatalogEvents::new("app").is_ok());
        assert!(PgCatalogEvents::new("app\"; drop").is_err());
        assert!(PgCatalogEvents::new("App").is_err());
    }
}
