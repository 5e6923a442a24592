//! The shared migration set on SQLite: applied to every cluster's shared
//! file (the tables row tenants share).

use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};

use super::SqliteTenancy;
use crate::error::TenancyError;

impl SqliteTenancy {
    /// Brings the shared side of every cluster up to date: applies the
    /// shared migrations (see
    /// [`SqliteTenancyBuilder::shared_migrations`](super::SqliteTenancyBuilder::shared_migrations))
    /// to each cluster's shared file — creating the file if it does not
    /// exist yet — then runs [`SqliteTenancy::setup`].
    ///
    /// Each migration runs in its own transaction, and the file's
    /// `_sqlx_migrations` table says what it has, so running again applies
    /// only what is new; a failing migration is rolled back and stops the
    /// run at that cluster with the error. Without shared migrations this
    /// is [`SqliteTenancy::setup`].
    pub async fn migrate_shared(&self) -> Result<(), TenancyError> {
        if let Some(migrator) = &self.inner.shared_migrator {
            let mut clusters: Vec<_> = self.inner.clusters.values().collect();
            clusters.sort_by(|a, b| a.name.cmp(&b.name));
            for cluster in clusters {
                let options = SqliteConnectOptions::new()
                    .filename(&cluster.shared_file)
                    .create_if_missing(true);
                let mut conn =
                    <SqliteConnection as sqlx::Connection>::connect_with(&options).await?;
                let result = migrator.run_direct(None, &mut conn, false).await;
                <SqliteConnection as sqlx::Connection>::close(conn).await?;
                result.map_err(|e| {
                    TenancyError::InvalidInput(format!(
                        "shared migration failed on cluster {}: {e}; fix the migration and run \
                         migrate_shared again",
                        cluster.name
                    ))
                })?;
            }
        }
        self.setup().await
    }
}
