//! Work to run after a conformance test, and what a factory may return.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// Work to run after a test (drop a schema, delete a file), even when the
/// test failed.
pub struct Cleanup(Option<Pin<Box<dyn Future<Output = ()> + Send>>>);

impl Cleanup {
    /// Nothing to clean.
    pub fn none() -> Cleanup {
        Cleanup(None)
    }

    /// Runs `work` after the test.
    pub fn new(work: impl Future<Output = ()> + Send + 'static) -> Cleanup {
        Cleanup(Some(Box::pin(work)))
    }

    /// Runs the work now.
    pub async fn run(self) {
        if let Some(work) = self.0 {
            work.await;
        }
    }
}

impl fmt::Debug for Cleanup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Cleanup")
            .field(&if self.0.is_some() { "pending" } else { "none" })
            .finish()
    }
}

/// What a conformance factory returns: a store, or a store and its
/// [`Cleanup`].
pub trait StoreFixture {
    /// The store handed to the suite.
    type Store;
    /// The store and the work to run after the test.
    fn split(self) -> (Self::Store, Cleanup);
}

impl<S: ?Sized> StoreFixture for Arc<S> {
    type Store = Arc<S>;
    fn split(self) -> (Arc<S>, Cleanup) {
        (self, Cleanup::none())
    }
}

impl<S: ?Sized> StoreFixture for (Arc<S>, Cleanup) {
    type Store = Arc<S>;
    fn split(self) -> (Arc<S>, Cleanup) {
        self
    }
}

/// Runs `test` as its own task, then `cleanup`, then re-raises the test's
/// panic, if any.
pub async fn run_with_cleanup(test: impl Future<Output = ()> + Send + 'static, cleanup: Cleanup) {
    let outcome = tokio::spawn(test).await;
    cleanup.run().await;
    if let Err(error) = outcome {
        match error.try_into_panic() {
            Ok(payload) => std::panic::resume_unwind(payload),
            Err(error) => panic!("conformance test did not finish: {error}"),
        }
    }
}
