#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]
// The README links items of every feature (docs.rs builds with all of
// them, where every link is checked); a build without some of them
// documents what it has instead of failing on those links.
#![cfg_attr(
    not(all(
        feature = "testing",
        feature = "postgres",
        feature = "sqlite",
        feature = "nats",
        feature = "redis",
        feature = "rabbitmq"
    )),
    allow(rustdoc::broken_intra_doc_links)
)]

mod delivery;
mod envelope;
mod error;
#[cfg(any(feature = "postgres", feature = "sqlite"))]
mod inbox_core;
mod memory;
mod names;
mod observe;
#[cfg(feature = "otel")]
mod otel;
#[cfg(any(feature = "postgres", feature = "sqlite"))]
mod outbox_core;
mod partition;
#[cfg(any(feature = "nats", feature = "redis"))]
mod partitioned;
#[cfg(any(feature = "postgres", feature = "sqlite"))]
mod pool_lease;
mod receipt;
#[cfg(any(feature = "postgres", feature = "sqlite"))]
mod relay_core;
#[cfg(any(feature = "postgres", feature = "sqlite"))]
mod relay_task;
#[cfg(any(feature = "postgres", feature = "sqlite"))]
mod relay_wake;
#[cfg(any(feature = "postgres", feature = "sqlite"))]
mod sql_ident;
mod trace;
mod traits;

#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub mod http;
pub mod middleware;
#[cfg(feature = "nats")]
#[cfg_attr(docsrs, doc(cfg(feature = "nats")))]
pub mod nats;
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub mod postgres;
#[cfg(feature = "rabbitmq")]
#[cfg_attr(docsrs, doc(cfg(feature = "rabbitmq")))]
pub mod rabbitmq;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub mod redis;
pub mod router;
#[cfg(any(feature = "postgres", feature = "sqlite"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "postgres", feature = "sqlite"))))]
pub mod sql;
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub mod sqlite;
#[cfg(feature = "testing")]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub mod testing;
#[cfg(feature = "webhooks")]
#[cfg_attr(docsrs, doc(cfg(feature = "webhooks")))]
pub mod webhooks;

pub use delivery::{Acknowledger, Delivery, DeliveryStream, Subscription};
pub use envelope::{
    CLOUDEVENTS_JSON, DEFAULT_MAX_PAYLOAD_BYTES, Data, Event, ExtensionValue,
    MAX_EXTENSION_NAME_LEN, SPEC_VERSION,
};
pub use error::{BoxError, EventError};
pub use memory::{InMemoryBus, InMemoryConfig};
pub use names::{MAX_NAME_LEN, validate_name};
#[cfg(any(feature = "postgres", feature = "sqlite"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "postgres", feature = "sqlite"))))]
pub use pool_lease::{LeasedPool, PoolSource};
pub use receipt::PublishReceipt;
pub use trace::TraceContext;
pub use traits::{Capabilities, Publisher, StartFrom, SubscribeOptions, Subscriber};

// The main public types cross tasks; keep them Send + Sync.
const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Event>();
    assert_send_sync::<EventError>();
    assert_send_sync::<InMemoryBus>();
    assert_send_sync::<Delivery>();
    assert_send_sync::<router::Router>();
    assert_send_sync::<router::BoxEventService>();
    #[cfg(feature = "webhooks")]
    assert_send_sync::<webhooks::WebhookDispatcher>();
    #[cfg(feature = "webhooks")]
    assert_send_sync::<webhooks::WebhookError>();
};
