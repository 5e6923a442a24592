//! The SQLite triggers: one outbox row per catalog or subscription change.

use saas_events::EventError;
use saas_events::sqlite::{OutboxLocation, SqliteOutbox};
use sqlx::{AssertSqlSafe, Connection, SqliteConnection, SqlitePool};

use super::{
    BILLING_SOURCE, BILLING_TOPIC, SUBSCRIPTION_CREATED, SUBSCRIPTION_STATUS_CHANGED,
    TENANT_CREATED, TENANT_DELETED, TENANT_PROVISIONED, TENANT_REMOVED, TENANT_SOURCE,
    TENANT_STATUS_CHANGED, TENANT_TOPIC, backend_error,
};

/// Installs the triggers that write tenant lifecycle and subscription
/// events into the outbox table of a SQLite file (see the
/// [module docs](super) for the events). A trigger can only write to its
/// own file, so the outbox lives next to the catalog (or next to
/// billing's tables); one outbox serves both when they share a file. That
/// file must not be the tenancy's shared file of row tenants, whose
/// deletion purges every table there with a `tenant_id` column.
///
/// ```no_run
/// use saas_foundation::catalog_events::SqliteCatalogEvents;
///
/// # async fn run(catalog: sqlx::SqlitePool) -> Result<(), Box<dyn std::error::Error>> {
/// // After the catalog's migration, at every start:
/// let events = SqliteCatalogEvents::new();
/// let mut conn = catalog.acquire().await?;
/// events.install_tenant_events(&mut conn).await?;
/// // The relay drains it like any outbox:
/// let location = events.location("catalog", catalog.clone())?;
/// # let _ = location;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Default)]
pub struct SqliteCatalogEvents {
    outbox: SqliteOutbox,
}

impl SqliteCatalogEvents {
    /// Events into `saas_events_outbox`.
    pub fn new() -> Self {
        Self::default()
    }

    /// Writes into `outbox`'s table instead (its name is all that is used).
    pub fn with_outbox(mut self, outbox: SqliteOutbox) -> Self {
        self.outbox = outbox;
        self
    }

    /// The outbox table's name.
    pub fn table(&self) -> &str {
        self.outbox.table()
    }

    /// The relay's location for this outbox, reached through `pool`.
    ///
    /// # Errors
    /// None in practice: the table name was validated by the outbox it
    /// came from.
    pub fn location(
        &self,
        name: impl Into<String>,
        pool: SqlitePool,
    ) -> Result<OutboxLocation, EventError> {
        OutboxLocation::new(name, pool).with_table(self.outbox.table())
    }

    /// Creates the outbox table (if missing) and the triggers on
    /// `saas_tenants` in one transaction; replaces an older version.
    ///
    /// # Errors
    /// A database error (no catalog table yet, a busy file).
    pub async fn install_tenant_events(
        &self,
        conn: &mut SqliteConnection,
    ) -> Result<(), EventError> {
        let tenant = Row::Tenant;
        let update_type = format!(
            "CASE WHEN OLD.status = 'provisioning' AND NEW.status = 'active' \
             THEN '{TENANT_PROVISIONED}' WHEN NEW.status = 'deleted' THEN '{TENANT_DELETED}' \
             ELSE '{TENANT_STATUS_CHANGED}' END"
        );
        let triggers = [
            self.trigger(
                "saas_tenant_events_insert",
                "AFTER INSERT ON saas_tenants",
                &tenant.event("NEW", &quoted(TENANT_CREATED), "NULL", "NEW.status"),
            ),
            self.trigger(
                "saas_tenant_events_update",
                "AFTER UPDATE OF status ON saas_tenants WHEN OLD.status IS NOT NEW.status",
                &tenant.event("NEW", &update_type, "OLD.status", "NEW.status"),
            ),
            self.trigger(
                "saas_tenant_events_delete",
                "AFTER DELETE ON saas_tenants",
                &tenant.event("OLD", &quoted(TENANT_REMOVED), "OLD.status", "NULL"),
            ),
        ];
        self.install(conn, &triggers).await
    }

    /// Creates the outbox table (if missing) and the triggers on billing's
    /// `billing_subscriptions` in one transaction; replaces an older
    /// version. Run it after billing's migrations (it reads their current
    /// shape: a 16-byte `tenant_id` and the JSON `state`).
    ///
    /// # Errors
    /// A database error (no subscriptions table yet, a busy file).
    pub async fn install_billing_events(
        &self,
        conn: &mut SqliteConnection,
    ) -> Result<(), EventError> {
        let sub = Row::Subscription;
        let status = |row: &str| format!("json_extract({row}.state, '$.status')");
        let triggers = [
            self.trigger(
                "saas_subscription_events_insert",
                "AFTER INSERT ON billing_subscriptions",
                &sub.event("NEW", &quoted(SUBSCRIPTION_CREATED), "NULL", &status("NEW")),
            ),
            self.trigger(
                "saas_subscription_events_update",
                &format!(
                    "AFTER UPDATE OF state ON billing_subscriptions WHEN {} IS NOT {}",
                    status("OLD"),
                    status("NEW")
                ),
                &sub.event(
                    "NEW",
                    &quoted(SUBSCRIPTION_STATUS_CHANGED),
                    &status("OLD"),
                    &status("NEW"),
                ),
            ),
        ];
        self.install(conn, &triggers).await
    }

    /// `(name, CREATE TRIGGER …)` writing the row built by `values`.
    fn trigger(&self, name: &str, when: &str, values: &str) -> (String, String) {
        let table = self.outbox.table();
        (
            name.to_owned(),
            format!(
                "CREATE TRIGGER \"{name}\" {when} BEGIN \
                 INSERT INTO \"{table}\" (tenant_id, topic, event, created_at) VALUES ({values}); \
                 END"
            ),
        )
    }

    /// Creates the table and replaces the triggers under the write lock
    /// (`BEGIN IMMEDIATE`), so concurrent installers take turns.
    async fn install(
        &self,
        conn: &mut SqliteConnection,
        triggers: &[(String, String)],
    ) -> Result<(), EventError> {
        let lite = |e| backend_error("sqlite", e);
        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await.map_err(lite)?;
        let mut statements = vec![self.outbox.create_table_sql()];
        for (name, create) in triggers {
            statements.push(format!("DROP TRIGGER IF EXISTS \"{name}\""));
            statements.push(create.clone());
        }
        for statement in statements {
            sqlx::query(AssertSqlSafe(statement))
                .execute(&mut *tx)
                .await
                .map_err(lite)?;
        }
        tx.commit().await.map_err(lite)
    }
}

/// Which table a trigger reads, for the parts of its event that differ.
#[derive(Clone, Copy)]
enum Row {
    Tenant,
    Subscription,
}

impl Row {
    /// The `VALUES` of the outbox row for the changed row `row` (`NEW` or
    /// `OLD`): tenant, topic, event JSON, `created_at` in Unix
    /// milliseconds. `ty`, `from` and `to` are SQL expressions.
    fn event(self, row: &str, ty: &str, from: &str, to: &str) -> String {
        let (tenant, topic, source, subject, data) = match self {
            Row::Tenant => {
                let id = uuid_text(&format!("{row}.id"));
                let data = format!(
                    "json_object('id', {id}, 'slug', {row}.slug, 'strategy', {row}.strategy, \
                     'cluster', {row}.cluster, 'from', {from}, 'to', {to})"
                );
                (format!("{row}.id"), TENANT_TOPIC, TENANT_SOURCE, id, data)
            }
            Row::Subscription => {
                let tenant = uuid_text(&format!("{row}.tenant_id"));
                let data = format!(
                    "json_object('id', {row}.id, 'tenant_id', {tenant}, \
                     'plan', {row}.state -> '$.plan', 'from', {from}, 'to', {to})"
                );
                let subject = format!("{row}.id");
                (
                    format!("{row}.tenant_id"),
                    BILLING_TOPIC,
                    BILLING_SOURCE,
                    subject,
                    data,
                )
            }
        };
        let tenant_text = uuid_text(&tenant);
        format!(
            "{tenant}, '{topic}', json_object('specversion', '1.0', \
             'id', lower(hex(randomblob(16))), 'source', '{source}', 'type', {ty}, \
             'time', strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), 'subject', {subject}, \
             'tenantid', {tenant_text}, 'datacontenttype', 'application/json', \
             'data', {data}), \
             CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)"
        )
    }
}

/// A 16-byte UUID blob as hyphenated lowercase text (SQLite has no UUID
/// type; saas-tenancy and saas-billing store ids as blobs).
fn uuid_text(blob: &str) -> String {
    let part = |start: u8, len: u8| format!("substr(hex({blob}), {start}, {len})");
    format!(
        "lower({} || '-' || {} || '-' || {} || '-' || {} || '-' || {})",
        part(1, 8),
        part(9, 4),
        part(13, 4),
        part(17, 4),
        part(21, 12)
    )
}

/// A constant as a SQL string literal (the constants hold no quote).
fn quoted(constant: &str) -> String {
    format!("'{constant}'")
}
