//! The conformance suite against the in-memory backend.

use std::sync::Arc;

use saas_events::testing::backend;
use saas_events::{InMemoryBus, Publisher, Subscriber};

async fn memory() -> Option<(Arc<dyn Publisher>, Arc<dyn Subscriber>)> {
    Some(backend(InMemoryBus::new()))
}

saas_events::conformance_tests!(memory());
