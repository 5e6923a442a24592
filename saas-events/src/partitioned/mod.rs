//! Ordered, batched consumption of a partitioned broker topic: the part of
//! the NATS and Redis consumers that does not depend on the broker.
//!
//! Design (issue 19): Kafka-style consumer groups.
//!
//! - **Ownership.** Members of a group heartbeat in a shared list
//!   ([`Leases::heartbeat`]); partition `p` is the share of the member at
//!   position `p % n` of the sorted live members. A member claims a free
//!   partition of its share by compare-and-set ([`Leases::hold`]), renews
//!   it while alive and releases it once it is no longer its share and
//!   nothing of it is in a caller's hands. Only the holder reads a
//!   partition, so the broker need not limit a group to one unsettled
//!   message per partition. A dead member's leases expire after the lease
//!   TTL. A member nobody polls (no `next` call and no delivery in hand for
//!   [`IDLE`]) leaves the list and gives its partitions back, so events do
//!   not wait on a consumer that stopped asking for them. A private
//!   subscription owns all its partitions.
//! - **Batches.** The holder fetches up to [`BATCH`] messages per partition
//!   into a local lane; a lane hands out its head only once the previous
//!   one is settled, so per-key order holds with nacks, while different
//!   partitions' events may be in hand at once.
//! - **Local settlement.** `ack` and `nack` settle in the lane and return;
//!   acks go to the broker in batches, after the fact. After a crash the
//!   unflushed acknowledged suffix is delivered again, in order.
//! - **Redelivery.** `nack(delay)` puts the event back at the head of its
//!   lane with the attempt number increased, ready after `delay`; dropping
//!   a delivery unsettled is a nack. Closing gives held messages back to
//!   the group at once.

mod driver;
mod lanes;
mod ownership;
mod stream;

use std::time::Duration;

use async_trait::async_trait;

use crate::envelope::Event;
use crate::error::EventError;

pub(crate) use ownership::{Hold, Leases};
pub(crate) use stream::{Settings, subscribe};

/// The most messages a member holds per partition (fetched, in hand, or
/// settled and not yet acknowledged to the broker).
pub(crate) const BATCH: usize = 256;

/// How long a member may go without being polled, holding no delivery,
/// before it gives its partitions to the rest of its group.
pub(crate) const IDLE: Duration = Duration::from_millis(1000);

/// A position in a partition: later messages have larger ones.
pub(crate) type Position = (u64, u64);

/// One message read from a partition.
pub(crate) struct Fetched<M> {
    pub(crate) msg: M,
    pub(crate) position: Position,
    /// The broker's delivery count, from 1.
    pub(crate) attempt: u32,
    /// `None` for a message not for this subscription (another tenant's,
    /// or not a CloudEvent): settled without being handed out.
    pub(crate) event: Option<Event>,
}

/// What a broker does for the ordered consumer.
#[async_trait]
pub(crate) trait PartitionSource: Send + Sync + 'static {
    /// The broker's handle on one message, for settling it.
    type Msg: Clone + Send + Sync + 'static;

    /// This member starts holding `partition`; `clean` when the previous
    /// holder gave its messages back. Returns messages already delivered
    /// to the group there that now belong to this member, in order.
    async fn take_over(
        &self,
        partition: u16,
        clean: bool,
    ) -> Result<Vec<Fetched<Self::Msg>>, EventError>;

    /// Reads up to `n` new messages from each `(partition, n)`, waiting up
    /// to `wait` when there is none.
    async fn fetch(
        &self,
        wants: &[(u16, usize)],
        wait: Duration,
    ) -> Result<Vec<(u16, Vec<Fetched<Self::Msg>>)>, EventError>;

    /// Acknowledges `settled`, a partition's handled messages in order.
    async fn ack(&self, partition: u16, settled: Vec<Self::Msg>) -> Result<(), EventError>;

    /// Gives unsettled messages back to the group, in order, for
    /// redelivery after `delay`.
    async fn give_back(&self, partition: u16, held: Vec<Self::Msg>, delay: Option<Duration>);

    /// Removes the subscription's broker state that should not outlive it.
    async fn finish(&self);
}
