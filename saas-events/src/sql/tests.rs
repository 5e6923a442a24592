//! The statements each database runs, pinned to the text the separate
//! PostgreSQL and SQLite types ran before they became one generic type.

#[cfg(feature = "postgres")]
mod postgres {
    use crate::postgres::{PgInbox, PgOutbox};

    #[test]
    fn inbox_statements() {
        let inbox = PgInbox::new();
        assert_eq!(
            inbox.create_table_sql(),
            "CREATE TABLE IF NOT EXISTS \"saas_events_inbox\" (consumer text NOT NULL, \
             tenant_id uuid NOT NULL, event_id text NOT NULL, processed_at timestamptz NOT NULL, \
             PRIMARY KEY (consumer, tenant_id, event_id)); CREATE INDEX IF NOT EXISTS \
             \"saas_events_inbox_processed_at\" ON \"saas_events_inbox\" (processed_at)"
        );
        assert_eq!(
            inbox.claim_sql(),
            "INSERT INTO \"saas_events_inbox\" (consumer, tenant_id, event_id, processed_at) \
             VALUES ($1, $2, $3, to_timestamp($4::float8 / 1000)) ON CONFLICT DO NOTHING"
        );
        assert_eq!(
            inbox.purge_sql(),
            "DELETE FROM \"saas_events_inbox\" WHERE processed_at < to_timestamp($1::float8 / 1000)"
        );
        assert_eq!(
            format!("{inbox:?}"),
            "PgInbox { table: \"saas_events_inbox\", .. }"
        );
    }

    #[test]
    fn outbox_statements() {
        let outbox = PgOutbox::new();
        assert_eq!(
            outbox.create_table_sql(),
            "CREATE TABLE IF NOT EXISTS \"saas_events_outbox\" (seq bigserial PRIMARY KEY, \
             tenant_id uuid, topic text NOT NULL, event text NOT NULL, \
             created_at timestamptz NOT NULL DEFAULT now())"
        );
        assert_eq!(
            format!("{outbox:?}"),
            "PgOutbox { table: \"saas_events_outbox\", max_payload_bytes: 1048576, .. }"
        );
    }
}

#[cfg(feature = "sqlite")]
mod sqlite {
    use crate::sqlite::{SqliteInbox, SqliteOutbox};

    #[test]
    fn inbox_statements() {
        let inbox = SqliteInbox::new();
        assert_eq!(
            inbox.create_table_sql(),
            "CREATE TABLE IF NOT EXISTS \"saas_events_inbox\" (consumer TEXT NOT NULL, \
             tenant_id BLOB NOT NULL, event_id TEXT NOT NULL, processed_at INTEGER NOT NULL, \
             PRIMARY KEY (consumer, tenant_id, event_id)); CREATE INDEX IF NOT EXISTS \
             \"saas_events_inbox_processed_at\" ON \"saas_events_inbox\" (processed_at)"
        );
        assert_eq!(
            inbox.claim_sql(),
            "INSERT INTO \"saas_events_inbox\" (consumer, tenant_id, event_id, processed_at) \
             VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING"
        );
        assert_eq!(
            inbox.purge_sql(),
            "DELETE FROM \"saas_events_inbox\" WHERE processed_at < ?"
        );
        assert_eq!(
            format!("{inbox:?}"),
            "SqliteInbox { table: \"saas_events_inbox\", .. }"
        );
    }

    #[test]
    fn outbox_statements() -> Result<(), crate::EventError> {
        let outbox = SqliteOutbox::new();
        let table = |name: &str| {
            format!(
                "CREATE TABLE IF NOT EXISTS \"{name}\" (seq INTEGER PRIMARY KEY AUTOINCREMENT, \
                 tenant_id BLOB, topic TEXT NOT NULL, event TEXT NOT NULL, \
                 created_at INTEGER NOT NULL)"
            )
        };
        assert_eq!(outbox.create_table_sql(), table("saas_events_outbox"));
        assert_eq!(
            outbox.create_table_sql_as("saas_events_outbox_rows")?,
            table("saas_events_outbox_rows")
        );
        assert_eq!(
            format!("{outbox:?}"),
            "SqliteOutbox { table: \"saas_events_outbox\", max_payload_bytes: 1048576, .. }"
        );
        Ok(())
    }
}
