//! Every catalog backend passes the same conformance suite.

mod memory {
    use std::sync::Arc;

    use saas_tenancy::testing::Cleanup;
    use saas_tenancy::{DynCatalog, InMemoryCatalog};

    async fn catalog() -> Option<(DynCatalog, Cleanup)> {
        Some((Arc::new(InMemoryCatalog::default()), Cleanup::none()))
    }

    saas_tenancy::catalog_conformance!(catalog);
}

mod sqlite {
    use std::sync::Arc;

    use saas_tenancy::testing::Cleanup;
    use saas_tenancy::{DynCatalog, SqliteCatalog};

    async fn catalog() -> Option<(DynCatalog, Cleanup)> {
        let pool = crate::fixtures::sqlite_memory_pool().await;
        let catalog = SqliteCatalog::new(pool.clone());
        catalog.migrate().await.unwrap();
        Some((
            Arc::new(catalog),
            Cleanup::new(async move { pool.close().await }),
        ))
    }

    saas_tenancy::catalog_conformance!(catalog);
}

mod postgres {
    use std::sync::Arc;

    use saas_tenancy::testing::Cleanup;
    use saas_tenancy::{DynCatalog, PgCatalog};

    async fn catalog() -> Option<(DynCatalog, Cleanup)> {
        let (pool, _schema, cleanup) =
            crate::fixtures::pg_schema_pool("tenancy::catalog::postgres").await?;
        let catalog = PgCatalog::new(pool.clone());
        catalog.migrate().await.unwrap();
        // Migrating twice is harmless.
        catalog.migrate().await.unwrap();
        Some((
            Arc::new(catalog),
            Cleanup::new(async move {
                pool.close().await;
                cleanup.run().await;
            }),
        ))
    }

    saas_tenancy::catalog_conformance!(catalog);
}
