//! Debug output for configurations that hold credentials.
//!
//! sqlx's `PgConnectOptions` Debug prints the password (and an inline
//! client key), so nothing here prints it: the connection is shown by
//! host, port, socket, database, user and TLS mode only.

use std::fmt;

use sqlx::postgres::PgConnectOptions;

use super::PgClusterConfig;

/// A `PgConnectOptions` without its secrets, for Debug output.
pub(crate) struct RedactedPgOptions<'a>(pub(crate) &'a PgConnectOptions);

impl fmt::Debug for RedactedPgOptions<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let options = self.0;
        f.debug_struct("PgConnectOptions")
            .field("host", &options.get_host())
            .field("port", &options.get_port())
            .field("socket", &options.get_socket())
            .field("database", &options.get_database())
            .field("username", &options.get_username())
            .field("ssl_mode", &options.get_ssl_mode())
            .finish_non_exhaustive()
    }
}

/// Shows the admin connection without its password.
impl fmt::Debug for PgClusterConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgClusterConfig")
            .field("name", &self.name)
            .field("admin", &RedactedPgOptions(&self.admin))
            .field("runtime_role", &self.runtime_role)
            .field("max_connections", &self.max_connections)
            .field(
                "transaction_pooler",
                &self.transaction_pooler.as_ref().map(RedactedPgOptions),
            )
            .field(
                "replication_conninfo",
                &self.replication_conninfo.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}
