//! The app's tables. The same statements create them in the shared schema
//! (for row tenants, under row-level security) and in every schema or
//! database tenant (as the tenant migration).

use saas_events::postgres::{DEFAULT_OUTBOX_TABLE, PgOutbox};
use saas_tenancy::postgres::PgTenancyBuilder;
use saas_tenancy::sqlite::SqliteTenancyBuilder;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{AssertSqlSafe, SqlSafeStr};

/// Every tenant table has a `tenant_id` column leading its keys, so row
/// tenants share them safely and an index serves each tenant's rows.
const TABLES: &str = "
CREATE TABLE IF NOT EXISTS projects (
    tenant_id uuid NOT NULL,
    id uuid NOT NULL,
    name text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id)
);
CREATE TABLE IF NOT EXISTS notes (
    tenant_id uuid NOT NULL,
    id uuid NOT NULL,
    project_id uuid NOT NULL,
    body text NOT NULL CHECK (length(body) BETWEEN 1 AND 10000),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, project_id) REFERENCES projects (tenant_id, id) ON DELETE CASCADE
);
CREATE TABLE IF NOT EXISTS audit_log (
    tenant_id uuid NOT NULL,
    event_id text NOT NULL,
    event_type text NOT NULL,
    subject text,
    occurred_at timestamptz,
    PRIMARY KEY (tenant_id, event_id)
);
";

fn all_statements() -> String {
    format!("{TABLES}\n{};", PgOutbox::new().create_table_sql())
}

/// The PostgreSQL tenancy's part of the app: its tables shared by row
/// tenants under row-level security (each has a `tenant_id` column leading
/// its keys, so an index serves each tenant's rows), and the same tables
/// in every schema or database tenant. A larger app would keep these as
/// sqlx migration files (`migrations/shared`, `migrations/tenant`).
pub(crate) fn postgres(tenancy: PgTenancyBuilder) -> PgTenancyBuilder {
    let tables = ["projects", "notes", "audit_log", DEFAULT_OUTBOX_TABLE];
    let tenancy = tenancy.tenant_tables(tables);
    tenancy
        .shared_migrations(version_one())
        .tenant_migrations(version_one())
}

fn version_one() -> Migrator {
    Migrator::with_migrations(vec![Migration::new(
        1,
        "notes tables".into(),
        MigrationType::Simple,
        AssertSqlSafe(all_statements()).into_sql_str(),
        false,
    )])
}

/// The same tables on SQLite, for tenants with a database file each.
const SQLITE_TABLES: &str = "
CREATE TABLE IF NOT EXISTS projects (
    tenant_id BLOB NOT NULL,
    id BLOB NOT NULL,
    name TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    PRIMARY KEY (tenant_id, id)
);
CREATE TABLE IF NOT EXISTS notes (
    tenant_id BLOB NOT NULL,
    id BLOB NOT NULL,
    project_id BLOB NOT NULL,
    body TEXT NOT NULL CHECK (length(body) BETWEEN 1 AND 10000),
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, project_id) REFERENCES projects (tenant_id, id) ON DELETE CASCADE
);
CREATE TABLE IF NOT EXISTS audit_log (
    tenant_id BLOB NOT NULL,
    event_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    subject TEXT,
    occurred_at TEXT,
    PRIMARY KEY (tenant_id, event_id)
);
";

/// The SQLite tenancy's part of the app: the tables in every tenant's
/// database file.
pub(crate) fn sqlite(tenancy: SqliteTenancyBuilder) -> SqliteTenancyBuilder {
    tenancy.tenant_migrations(sqlite_tenant_migrations())
}

fn sqlite_tenant_migrations() -> Migrator {
    let sql = format!(
        "{SQLITE_TABLES}\n{};",
        saas_events::sqlite::SqliteOutbox::new().create_table_sql()
    );
    Migrator::with_migrations(vec![Migration::new(
        1,
        "notes tables".into(),
        MigrationType::Simple,
        AssertSqlSafe(sql).into_sql_str(),
        false,
    )])
}
