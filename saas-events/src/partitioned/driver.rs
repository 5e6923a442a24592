//! The background task of a subscription: keeps its membership and
//! leases, fetches batches into the lanes, flushes acks, and gives
//! everything back when the subscription closes.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::ownership::is_share;
use super::stream::Shared;
use super::{BATCH, Hold, IDLE, PartitionSource};

/// The shortest and longest pause between fetches that found nothing.
const QUIET_MIN: Duration = Duration::from_millis(5);
const QUIET_MAX: Duration = Duration::from_millis(80);
/// A lane is refilled once it holds at most this many messages.
const LOW_WATER: usize = BATCH / 2;

pub(super) async fn run<S: PartitionSource>(shared: Arc<Shared<S>>) {
    let mut driver = Driver {
        shared,
        joined: false,
        next_upkeep: Instant::now(),
        next_renewal: Instant::now(),
        quiet: QUIET_MIN,
        close_deadline: None,
    };
    driver.run().await;
}

struct Driver<S: PartitionSource> {
    shared: Arc<Shared<S>>,
    joined: bool,
    next_upkeep: Instant,
    /// When the held leases are next renewed.
    next_renewal: Instant,
    quiet: Duration,
    /// Set on close: how long partitions with a delivery in hand are kept.
    close_deadline: Option<Instant>,
}

impl<S: PartitionSource> Driver<S> {
    /// How often membership is refreshed and shares recomputed: often, so
    /// a member joining gets its share soon.
    fn upkeep_every(&self) -> Duration {
        self.renew_every().min(Duration::from_millis(250))
    }

    /// How often held leases are renewed: well within their TTL.
    fn renew_every(&self) -> Duration {
        (self.shared.settings.lease_ttl / 4).max(Duration::from_millis(25))
    }

    async fn run(&mut self) {
        loop {
            let closing = self.shared.lock().closing;
            if closing && self.close_deadline.is_none() {
                self.close_deadline = Some(Instant::now() + self.shared.settings.ack_wait);
                self.next_upkeep = Instant::now();
            }
            if Instant::now() >= self.next_upkeep || self.idle_changed() {
                self.upkeep().await;
                self.next_upkeep = Instant::now() + self.upkeep_every();
                if closing {
                    self.shared.lock().close_seen = true;
                }
            }
            self.flush().await;
            if closing && !self.shared.lock().lanes.iter().any(|l| l.owned) {
                break;
            }
            let wants = self.wants();
            if wants.is_empty() {
                let pause = if closing {
                    Duration::from_millis(20)
                } else {
                    self.upkeep_every()
                };
                let _ = tokio::time::timeout(pause, self.shared.wake.notified()).await;
                continue;
            }
            match self.shared.source.fetch(&wants, self.quiet).await {
                Ok(batches) => {
                    let got = batches.iter().any(|(_, b)| !b.is_empty());
                    self.push(batches);
                    self.quiet = if got {
                        QUIET_MIN
                    } else {
                        (self.quiet * 2).min(QUIET_MAX)
                    };
                }
                Err(error) => {
                    tracing::warn!(%error, "fetching from a partition failed; retrying");
                    self.shared.lock().error = Some(error);
                    self.shared.ready.notify_one();
                    self.quiet = QUIET_MAX;
                    tokio::time::sleep(QUIET_MAX).await;
                }
            }
        }
        self.leave().await;
        self.shared.source.finish().await;
        self.shared.lock().finished = true;
        self.shared.ready.notify_one();
    }

    /// Whether the member just went idle, or came back: both change its
    /// share at once rather than at the next upkeep.
    fn idle_changed(&self) -> bool {
        self.shared.settings.leases.is_some() && self.is_idle() == self.joined
    }

    /// Not polled, holding no delivery, for [`IDLE`].
    fn is_idle(&self) -> bool {
        let state = self.shared.lock();
        state.polling == 0 && !state.any_outstanding() && state.last_active.elapsed() >= IDLE
    }

    /// Which partitions to read, and how much: owned lanes running low.
    fn wants(&self) -> Vec<(u16, usize)> {
        let state = self.shared.lock();
        if state.closing {
            return Vec::new();
        }
        state
            .lanes
            .iter()
            .enumerate()
            .filter(|(_, lane)| lane.owned && lane.held() <= LOW_WATER)
            .filter_map(|(index, lane)| {
                let partition = u16::try_from(index).ok()?;
                Some((partition, BATCH - lane.held()))
            })
            .collect()
    }

    fn push(&self, batches: Vec<(u16, Vec<super::Fetched<S::Msg>>)>) {
        let mut state = self.shared.lock();
        for (partition, fetched) in batches {
            if let Some(lane) = state.lanes.get_mut(usize::from(partition))
                && lane.owned
            {
                lane.push(fetched);
            }
        }
        drop(state);
        self.shared.ready.notify_one();
    }

    /// Sends every lane's locally settled acks to the broker.
    async fn flush(&self) {
        let batches: Vec<(u16, Vec<S::Msg>)> = {
            let mut state = self.shared.lock();
            state
                .lanes
                .iter_mut()
                .enumerate()
                .filter(|(_, lane)| !lane.settled.is_empty())
                .filter_map(|(index, lane)| {
                    Some((
                        u16::try_from(index).ok()?,
                        std::mem::take(&mut lane.settled),
                    ))
                })
                .collect()
        };
        // Every partition's batch at once: one round trip's wait.
        let acks = batches.into_iter().map(|(partition, settled)| async move {
            if let Err(error) = self.shared.source.ack(partition, settled).await {
                // Unacknowledged events are delivered again: at least once.
                tracing::warn!(%error, partition, "acknowledging a batch failed");
            }
        });
        futures_util::future::join_all(acks).await;
    }

    /// Heartbeat, then claim, renew or release each partition.
    async fn upkeep(&mut self) {
        let closing = self.shared.lock().closing;
        let Some(leases) = self.shared.settings.leases.clone() else {
            if closing {
                self.release_all(false).await;
            }
            return;
        };
        let member = self.shared.settings.member.clone();
        let active = !closing && !self.is_idle();
        let members = if active {
            match leases.heartbeat(&member).await {
                Ok(members) => {
                    self.joined = true;
                    Some(members)
                }
                Err(error) => {
                    tracing::warn!(%error, "group heartbeat failed");
                    return;
                }
            }
        } else {
            if self.joined {
                self.joined = false;
                if let Err(error) = leases.leave(&member).await {
                    tracing::warn!(%error, "leaving the group failed");
                }
            }
            None
        };
        let renew = Instant::now() >= self.next_renewal;
        if renew {
            self.next_renewal = Instant::now() + self.renew_every();
        }
        let partitions = self.shared.settings.partitions.max(1);
        let mut holds = Vec::new();
        for partition in 0..partitions {
            let (owned, outstanding) = {
                let state = self.shared.lock();
                let lane = &state.lanes[usize::from(partition)];
                (lane.owned, lane.outstanding)
            };
            let mine = members
                .as_deref()
                .is_some_and(|m| is_share(m, &member, partition));
            if owned && !mine {
                let overdue = self.close_deadline.is_some_and(|d| Instant::now() >= d);
                if !outstanding {
                    self.release(partition, true).await;
                    continue;
                }
                if overdue {
                    self.release(partition, false).await;
                    continue;
                }
            }
            // Held leases are renewed when due; free ones of the share
            // are tried every time.
            if (owned && renew) || (!owned && mine) {
                holds.push(self.hold(partition, owned));
            }
        }
        // One round trip's wait for all of them, not one per partition.
        futures_util::future::join_all(holds).await;
    }

    async fn hold(&self, partition: u16, owned: bool) {
        let leases = match &self.shared.settings.leases {
            Some(leases) => Arc::clone(leases),
            None => return,
        };
        let member = &self.shared.settings.member;
        match leases.hold(partition, member).await {
            // A lease this member holds but no lane for it (a stalled
            // upkeep): read it as after a crash.
            Ok(Hold::Renewed) if !owned => self.take_over(partition, false).await,
            Ok(Hold::Claimed { clean }) if !owned => self.take_over(partition, clean).await,
            // Renewed, or expired and claimed again with nobody reading
            // meanwhile: the lane is still right.
            Ok(Hold::Renewed | Hold::Claimed { .. }) => {}
            Ok(Hold::Taken) => {
                if owned {
                    // Lost it (expired while this member was stalled):
                    // the new holder reads the messages now.
                    self.shared.lock().lanes[usize::from(partition)].let_go();
                }
            }
            Err(error) => tracing::warn!(%error, partition, "renewing a lease failed"),
        }
    }

    async fn take_over(&self, partition: u16, clean: bool) {
        self.shared.lock().lanes[usize::from(partition)].claim();
        match self.shared.source.take_over(partition, clean).await {
            Ok(taken) => {
                self.shared.lock().lanes[usize::from(partition)].push(taken);
                self.shared.ready.notify_one();
            }
            Err(error) => {
                tracing::warn!(%error, partition, "taking over a partition failed");
                self.release(partition, false).await;
            }
        }
    }

    /// Flushes the lane's acks, gives its messages back and frees it.
    async fn release(&self, partition: u16, clean: bool) {
        self.flush().await;
        let held = self.shared.lock().lanes[usize::from(partition)].let_go();
        self.shared.source.give_back(partition, held, None).await;
        if let Some(leases) = &self.shared.settings.leases
            && let Err(error) = leases
                .release(partition, &self.shared.settings.member, clean)
                .await
        {
            tracing::warn!(%error, partition, "releasing a lease failed");
        }
    }

    /// On close of a private subscription: gives every lane back.
    async fn release_all(&self, clean: bool) {
        let overdue = self.close_deadline.is_some_and(|d| Instant::now() >= d);
        for partition in 0..self.shared.settings.partitions.max(1) {
            let (owned, outstanding) = {
                let state = self.shared.lock();
                let lane = &state.lanes[usize::from(partition)];
                (lane.owned, lane.outstanding)
            };
            if owned && (!outstanding || overdue) {
                self.release(partition, clean).await;
            }
        }
    }

    async fn leave(&mut self) {
        if let Some(leases) = &self.shared.settings.leases
            && self.joined
        {
            self.joined = false;
            let _ = leases.leave(&self.shared.settings.member).await;
        }
    }
}
