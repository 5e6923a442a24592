//! In-process retry with exponential backoff and jitter.

use std::task::{Context, Poll};

use tower_layer::Layer;
use tower_service::Service;

use super::Backoff;
use crate::error::{BoxError, EventError};
use crate::router::{EventFuture, ReceivedEvent, call_mapped, poll_ready_mapped, ready_then_call};

/// A tower layer that retries a failed handler in place, up to `max_retries` more times, while
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

impl<S> Layer<S> for RetryLayer {
    type Service = RetryService<S>;

    fn layer(&self, inner: S) -> RetryService<S> {
        RetryService {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service of a [`RetryLayer`].
#[derive(Debug, Clone)]
pub struct RetryService<S> {
    inner: S,
    layer: RetryLayer,
}

impl<S> Service<ReceivedEvent> for RetryService<S>
where
    S: Service<ReceivedEvent, Response = ()> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    type Response = ();
    type Error = EventError;
    type Future = EventFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), EventError>> {
        poll_ready_mapped(&mut self.inner, cx)
    }

    fn call(&mut self, event: ReceivedEvent) -> EventFuture {
        // The first try goes to the service made ready by `poll_ready`;
        // retries wait for readiness again (a concurrency permit, say).
        let unready = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, unready);
        let first = call_mapped(&mut inner, event.clone());
        let layer = self.layer.clone();
        Box::pin(async move {
            let mut outcome = first.await;
            let mut retry = 0;
            loop {
                match outcome {
                    Ok(()) => return Ok(()),
                    Err(error) if error.is_retryable() && retry < layer.max_retries => {
                        retry += 1;
                        crate::observe::retried();
                        let delay = layer.backoff.delay(retry);
                        tracing::debug!(%error, retry, ?delay, "handler failed; retrying in place");
                        tokio::time::sleep(delay).await;
                        outcome = ready_then_call(&mut inner, event.clone()).await;
                    }
                    Err(error) => return Err(error),
                }
            }
        })
    }
}
