//! A time limit per handler call.

use std::task::{Context, Poll};
use std::time::Duration;

use tower_layer::Layer;
use tower_service::Service;

use crate::error::{BoxError, EventError};
use crate::router::{EventFuture, ReceivedEvent, call_mapped, poll_ready_mapped};

/// A tower layer that fails a handler call taking longer than the limit
/// with [`EventError::Timeout`] (retryable). The call is cancelled.
///
/// `tower::timeout::TimeoutLayer` does the same in a router (its `Elapsed`
/// becomes [`EventError::Timeout`] with how long the call ran); this one
/// reports its own limit as `after`.
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

impl<S> Layer<S> for TimeoutLayer {
    type Service = TimeoutService<S>;

    fn layer(&self, inner: S) -> TimeoutService<S> {
        TimeoutService {
            inner,
            limit: self.limit,
        }
    }
}

/// The service of a [`TimeoutLayer`].
#[derive(Debug, Clone)]
pub struct TimeoutService<S> {
    inner: S,
    limit: Duration,
}

impl<S> Service<ReceivedEvent> for TimeoutService<S>
where
    S: Service<ReceivedEvent, Response = ()> + 'static,
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
        let limit = self.limit;
        let call = call_mapped(&mut self.inner, event);
        Box::pin(async move {
            tokio::time::timeout(limit, call)
                .await
                .unwrap_or(Err(EventError::Timeout { after: limit }))
        })
    }
}
