//! In-process retry with exponential backoff and jitter.

use std::sync::Arc;

use async_trait::async_trait;

use super::Backoff;
use crate::error::EventError;
use crate::router::{Handler, Middleware, ReceivedEvent, SharedHandler};

/// Retries a failed handler in place, up to `max_retries` more times, while
/// the error [is retryable](EventError::is_retryable), sleeping
/// [`Backoff::delay`] between tries (on tokio's clock, so tests with paused
/// time run instantly). The delivery stays in flight meanwhile; for long
/// waits prefer [`Router::nack_backoff`](crate::router::Router::nack_backoff).
///
/// ```
/// use std::time::Duration;
/// use saas_events::middleware::{Backoff, RetryLayer};
///
/// let retry = RetryLayer::new(3, Backoff::new(Duration::from_millis(50), Duration::from_secs(2)));
/// # let _ = retry;
/// ```
#[derive(Debug, Clone)]
pub struct RetryLayer {
    max_retries: u32,
    backoff: Backoff,
}

impl RetryLayer {
    /// Up to `max_retries` retries after the first try.
    pub fn new(max_retries: u32, backoff: Backoff) -> Self {
        Self {
            max_retries,
            backoff,
        }
    }
}

impl Middleware for RetryLayer {
    fn wrap(&self, inner: SharedHandler) -> SharedHandler {
        Arc::new(Retry {
            inner,
            layer: self.clone(),
        })
    }
}

#[derive(Debug)]
struct Retry {
    inner: SharedHandler,
    layer: RetryLayer,
}

#[async_trait]
impl Handler for Retry {
    async fn handle(&self, event: ReceivedEvent) -> Result<(), EventError> {
        let mut retry = 0;
        loop {
            match self.inner.handle(event.clone()).await {
                Ok(()) => return Ok(()),
                Err(error) if error.is_retryable() && retry < self.layer.max_retries => {
                    retry += 1;
                    let delay = self.layer.backoff.delay(retry);
                    tracing::debug!(%error, retry, ?delay, "handler failed; retrying in place");
                    tokio::time::sleep(delay).await;
                }
                Err(error) => return Err(error),
            }
        }
    }
}
