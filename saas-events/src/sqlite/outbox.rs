//! What only the SQLite outbox has: the table under another name, for a
//! saas-tenancy shared file.

use sqlx::Sqlite;

use crate::error::EventError;
use crate::sql::SqlOutbox;
use crate::sql::outbox_table_sql;
use crate::sql_ident::check_ident;

impl SqlOutbox<Sqlite> {
    /// The same table as [`SqlOutbox::create_table_sql`] under the name
    /// `physical`: the table behind the tenant view in a shared file, where
    /// the outbox is declared a tenant table (`saas_events_outbox_rows` by
    /// saas-tenancy's default).
    ///
    /// # Errors
    /// [`EventError::InvalidName`] unless it is a lowercase SQL identifier.
    pub fn create_table_sql_as(&self, physical: &str) -> Result<String, EventError> {
        check_ident(physical, "a table must be a lowercase SQL identifier")?;
        Ok(outbox_table_sql::<Sqlite>(physical))
    }
}
