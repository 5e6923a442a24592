//! Conformance suites (feature `testing`): plain async functions that check
//! a backend's behaviour contract, and macros that stamp out one named
//! `#[tokio::test]` per behaviour for a backend.
//!
//! A third-party catalog runs the same suite as ours:
//!
//! ```text
//! async fn my_catalog() -> Option<(DynCatalog, Cleanup)> { … }
//! saas_tenancy::catalog_conformance!(my_catalog);
//! ```

pub mod catalog;
pub mod leak;
#[cfg(feature = "postgres")]
pub mod pg_leak;

use std::fmt;
use std::future::Future;
use std::pin::Pin;

/// Work to run after a test (drop a schema, delete a file), even when the
/// test failed.
pub struct Cleanup(Option<Pin<Box<dyn Future<Output = ()> + Send>>>);

impl Cleanup {
    /// Nothing to clean.
    pub fn none() -> Self {
        Self(None)
    }

    /// Runs `work` after the test.
    pub fn new(work: impl Future<Output = ()> + Send + 'static) -> Self {
        Self(Some(Box::pin(work)))
    }

    /// Runs the cleanup.
    pub async fn run(self) {
        if let Some(work) = self.0 {
            work.await;
        }
    }
}

impl fmt::Debug for Cleanup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Cleanup").field(&self.0.is_some()).finish()
    }
}

/// Runs `test` on its own task so that a failing test still gets its
/// cleanup run, then re-raises the failure.
pub async fn run_with_cleanup<F>(test: F, cleanup: Cleanup)
where
    F: Future<Output = ()> + Send + 'static,
{
    let outcome = tokio::spawn(test).await;
    cleanup.run().await;
    if let Err(e) = outcome {
        if e.is_panic() {
            std::panic::resume_unwind(e.into_panic());
        }
        panic!("conformance test task was cancelled: {e}");
    }
}

#[cfg(feature = "postgres")]
pub mod pg;
#[cfg(feature = "sqlite")]
pub mod sqlite;

/// A name for a throw-away database object (schema, role): `prefix_`
/// followed by a fresh v7 UUID in hex, so parallel tests never collide.
pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::now_v7().simple())
}
