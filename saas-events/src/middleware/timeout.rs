//! A time limit per handler call.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::error::EventError;
use crate::router::{Handler, Middleware, ReceivedEvent, SharedHandler};

/// Fails a handler call that takes longer than the limit with
/// [`EventError::Timeout`] (retryable). The call is cancelled.
#[derive(Debug, Clone, Copy)]
pub struct TimeoutLayer {
    limit: Duration,
}

impl TimeoutLayer {
    /// A limit of `limit` per call.
    pub fn new(limit: Duration) -> Self {
        Self { limit }
    }
}

impl Middleware for TimeoutLayer {
    fn wrap(&self, inner: SharedHandler) -> SharedHandler {
        Arc::new(Timeout {
            inner,
            limit: self.limit,
        })
    }
}

#[derive(Debug)]
struct Timeout {
    inner: SharedHandler,
    limit: Duration,
}

#[async_trait]
impl Handler for Timeout {
    async fn handle(&self, event: ReceivedEvent) -> Result<(), EventError> {
        tokio::time::timeout(self.limit, self.inner.handle(event))
            .await
            .unwrap_or(Err(EventError::Timeout { after: self.limit }))
    }
}
