//! The [`DeliveryStream`] and [`Acknowledger`] over the lanes.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::lanes::{Found, Outcome, State};
use super::{Leases, PartitionSource};
use crate::delivery::{Acknowledger, Delivery, DeliveryStream, Subscription};
use crate::error::EventError;

/// How a subscription's partitions are owned.
pub(crate) struct Settings {
    pub(crate) topic: Arc<str>,
    pub(crate) partitions: u16,
    /// Group membership and leases; `None` for a private subscription,
    /// which owns every partition.
    pub(crate) leases: Option<Arc<dyn Leases>>,
    /// This member's id.
    pub(crate) member: String,
    /// How long leases and heartbeats last unless renewed.
    pub(crate) lease_ttl: Duration,
    /// How long a closed subscription keeps a partition whose delivery is
    /// still in a caller's hands.
    pub(crate) ack_wait: Duration,
}

pub(super) struct Shared<S: PartitionSource> {
    pub(super) source: S,
    pub(super) settings: Settings,
    state: Mutex<State<S::Msg>>,
    /// Wakes the consumer: something became ready.
    pub(super) ready: Notify,
    /// Wakes the driver: a lane needs attention.
    pub(super) wake: Notify,
}

impl<S: PartitionSource> Shared<S> {
    pub(super) fn lock(&self) -> MutexGuard<'_, State<S::Msg>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Starts consuming `source` as `settings` say.
pub(crate) fn subscribe<S: PartitionSource>(source: S, settings: Settings) -> Subscription {
    let mut state = State::new(settings.partitions);
    if settings.leases.is_none() {
        for lane in &mut state.lanes {
            lane.claim();
        }
    }
    let shared = Arc::new(Shared {
        source,
        settings,
        state: Mutex::new(state),
        ready: Notify::new(),
        wake: Notify::new(),
    });
    tokio::spawn(super::driver::run(Arc::clone(&shared)));
    Subscription::new(Box::new(OrderedStream { shared }))
}

struct OrderedStream<S: PartitionSource> {
    shared: Arc<Shared<S>>,
}

impl<S: PartitionSource> fmt::Debug for OrderedStream<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OrderedStream")
            .field("topic", &self.shared.settings.topic)
            .field("member", &self.shared.settings.member)
            .finish_non_exhaustive()
    }
}

/// Counts a `next` call in progress, so the driver knows the member is
/// being polled; ends it when dropped (a cancelled call too).
struct Polling<'a, S: PartitionSource>(&'a Shared<S>);

impl<S: PartitionSource> Drop for Polling<'_, S> {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.polling = state.polling.saturating_sub(1);
        state.last_active = Instant::now();
    }
}

#[async_trait]
impl<S: PartitionSource> DeliveryStream for OrderedStream<S> {
    async fn next_delivery(&mut self) -> Option<Result<Delivery, EventError>> {
        let shared = &*self.shared;
        {
            let mut state = shared.lock();
            state.polling += 1;
            if state.last_active.elapsed() >= super::IDLE {
                // Back from idle: the driver rejoins the group now.
                shared.wake.notify_one();
            }
        }
        let _polling = Polling(shared);
        loop {
            let found = {
                let mut state = shared.lock();
                if state.closing {
                    return None;
                }
                if let Some(error) = state.error.take() {
                    return Some(Err(error));
                }
                state.next_ready(Instant::now())
            };
            let wait_until = match found {
                Found::Ready(handout) => {
                    let acker = OrderedAcker {
                        shared: Arc::clone(&self.shared),
                        partition: handout.partition,
                        epoch: handout.epoch,
                        msg: handout.msg,
                    };
                    return Some(Ok(Delivery::new(
                        handout.event,
                        Arc::clone(&shared.settings.topic),
                        handout.attempt,
                        Box::new(acker),
                    )));
                }
                Found::Wait(soonest) => soonest,
            };
            // `notify_one` keeps a permit, so a wake between the search
            // and this wait is not lost.
            match wait_until {
                Some(at) => {
                    tokio::select! {
                        () = shared.ready.notified() => {}
                        () = tokio::time::sleep_until(at) => {}
                    }
                }
                None => shared.ready.notified().await,
            }
        }
    }

    async fn close(&mut self) {
        begin_close(&self.shared);
        // Wait (bounded) for the driver to give the partitions back, so a
        // caller that closes and resubscribes finds them free.
        let limit = Instant::now() + self.shared.settings.lease_ttl;
        while !self.released() && Instant::now() < limit {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

impl<S: PartitionSource> OrderedStream<S> {
    /// Everything is given back but partitions of deliveries still in
    /// the caller's hands (kept until settled, or for the ack wait).
    fn released(&self) -> bool {
        let state = self.shared.lock();
        state.finished
            || (state.close_seen
                && state
                    .lanes
                    .iter()
                    .all(|lane| !lane.owned || lane.outstanding))
    }
}

fn begin_close<S: PartitionSource>(shared: &Shared<S>) {
    shared.lock().closing = true;
    shared.wake.notify_one();
    shared.ready.notify_one();
}

impl<S: PartitionSource> Drop for OrderedStream<S> {
    fn drop(&mut self) {
        begin_close(&self.shared);
    }
}

struct OrderedAcker<S: PartitionSource> {
    shared: Arc<Shared<S>>,
    partition: u16,
    epoch: u64,
    msg: S::Msg,
}

impl<S: PartitionSource> fmt::Debug for OrderedAcker<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OrderedAcker")
            .field("partition", &self.partition)
            .finish_non_exhaustive()
    }
}

impl<S: PartitionSource> OrderedAcker<S> {
    fn settle_locally(&self, outcome: Outcome) -> bool {
        let settled = {
            let mut state = self.shared.lock();
            let settled = state.settle(self.partition, self.epoch, outcome);
            if settled {
                let lane = &state.lanes[usize::from(self.partition)];
                // Ask the driver to refill or flush once a lane runs low
                // or has a batch of acks to send.
                if lane.settled.len() >= 64 || lane.held() <= super::BATCH / 2 {
                    self.shared.wake.notify_one();
                }
            }
            settled
        };
        if settled {
            self.shared.ready.notify_one();
        }
        settled
    }
}

#[async_trait]
impl<S: PartitionSource> Acknowledger for OrderedAcker<S> {
    /// Settles in the lane and returns; the broker is told in the next
    /// batch of acks. Once the lane has moved on (its partition given back
    /// after the subscription closed), acks the broker directly.
    async fn ack(self: Box<Self>) -> Result<(), EventError> {
        if !self.settle_locally(Outcome::Ack) {
            let msg = self.msg.clone();
            self.shared.source.ack(self.partition, vec![msg]).await?;
        }
        Ok(())
    }

    async fn nack(self: Box<Self>, delay: Option<Duration>) -> Result<(), EventError> {
        if !self.settle_locally(Outcome::Nack(delay)) {
            let msg = self.msg.clone();
            self.shared
                .source
                .give_back(self.partition, vec![msg], delay)
                .await;
        }
        Ok(())
    }

    fn abandon(self: Box<Self>) {
        if !self.settle_locally(Outcome::Nack(None))
            && let Ok(handle) = tokio::runtime::Handle::try_current()
        {
            handle.spawn(async move {
                let msg = self.msg.clone();
                self.shared
                    .source
                    .give_back(self.partition, vec![msg], None)
                    .await;
            });
        }
    }
}
