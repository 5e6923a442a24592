//! The local per-partition buffers: messages fetched in order, handed out
//! one at a time per partition, settled locally.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::{Fetched, Position};
use crate::envelope::Event;
use crate::error::EventError;

struct Held<M> {
    msg: M,
    /// `None`: settled when it reaches the head, never handed out.
    event: Option<Arc<Event>>,
    attempt: u32,
    ready_at: Option<Instant>,
}

/// One partition as this member sees it.
pub(super) struct Lane<M> {
    pub(super) owned: bool,
    /// Changes whenever the lane is claimed or let go, so a delivery
    /// settled after its lane moved on is told apart.
    pub(super) epoch: u64,
    queue: VecDeque<Held<M>>,
    /// The head is in a caller's hands.
    pub(super) outstanding: bool,
    /// Acknowledged locally, in order, not yet sent to the broker.
    pub(super) settled: Vec<M>,
    /// The furthest position read: a message at or before it is one
    /// already held (a broker redelivering what this member has).
    last: Option<Position>,
}

impl<M: Clone> Lane<M> {
    fn new() -> Self {
        Self {
            owned: false,
            epoch: 0,
            queue: VecDeque::new(),
            outstanding: false,
            settled: Vec::new(),
            last: None,
        }
    }

    /// How many messages of this lane the broker sees as unacknowledged.
    pub(super) fn held(&self) -> usize {
        self.queue.len() + self.settled.len()
    }

    /// Starts holding the lane.
    pub(super) fn claim(&mut self) {
        self.owned = true;
        self.epoch += 1;
        self.queue.clear();
        self.outstanding = false;
        self.settled.clear();
        self.last = None;
    }

    /// Stops holding the lane; returns the messages not yet settled, in
    /// order, to give back.
    pub(super) fn let_go(&mut self) -> Vec<M> {
        self.owned = false;
        self.epoch += 1;
        self.outstanding = false;
        self.last = None;
        self.queue.drain(..).map(|held| held.msg).collect()
    }

    pub(super) fn push(&mut self, fetched: Vec<Fetched<M>>) {
        for item in fetched {
            if self.last.is_some_and(|last| item.position <= last) {
                continue;
            }
            self.last = Some(item.position);
            self.queue.push_back(Held {
                msg: item.msg,
                event: item.event.map(Arc::new),
                attempt: item.attempt.max(1),
                ready_at: None,
            });
        }
    }
}

/// A delivery about to be handed out.
pub(super) struct Handout<M> {
    pub(super) partition: u16,
    pub(super) epoch: u64,
    pub(super) msg: M,
    pub(super) event: Arc<Event>,
    pub(super) attempt: u32,
}

/// How a caller settled a delivery.
pub(super) enum Outcome {
    Ack,
    Nack(Option<Duration>),
}

/// Every lane of a subscription, and what the consumer and the driver
/// tell each other.
pub(super) struct State<M> {
    pub(super) lanes: Vec<Lane<M>>,
    /// Where the next search for a ready lane starts (fairness).
    cursor: usize,
    /// `next` calls in progress.
    pub(super) polling: usize,
    /// When a `next` call last ended or a delivery was last settled.
    pub(super) last_active: Instant,
    pub(super) closing: bool,
    /// The driver has acted on `closing` (given back what it could).
    pub(super) close_seen: bool,
    /// The driver has given everything back and stopped.
    pub(super) finished: bool,
    /// A broker error for the next `next` call to report.
    pub(super) error: Option<EventError>,
}

/// What a search for the next delivery found.
pub(super) enum Found<M> {
    Ready(Handout<M>),
    /// Nothing ready; the earliest delayed redelivery, if any.
    Wait(Option<Instant>),
}

impl<M: Clone> State<M> {
    pub(super) fn new(partitions: u16) -> Self {
        Self {
            lanes: (0..partitions.max(1)).map(|_| Lane::new()).collect(),
            cursor: 0,
            polling: 0,
            last_active: Instant::now(),
            closing: false,
            close_seen: false,
            finished: false,
            error: None,
        }
    }

    /// Whether any delivery is in a caller's hands.
    pub(super) fn any_outstanding(&self) -> bool {
        self.lanes.iter().any(|lane| lane.outstanding)
    }

    /// The next ready head of an owned lane whose previous delivery is
    /// settled, marked outstanding; lanes are searched round-robin.
    pub(super) fn next_ready(&mut self, now: Instant) -> Found<M> {
        let count = self.lanes.len();
        let mut soonest: Option<Instant> = None;
        for step in 0..count {
            let index = (self.cursor + step) % count;
            let Some(lane) = self.lanes.get_mut(index) else {
                continue;
            };
            if !lane.owned || lane.outstanding {
                continue;
            }
            // Messages not for this subscription are settled as they
            // reach the head, keeping `settled` an in-order prefix.
            while lane.queue.front().is_some_and(|h| h.event.is_none()) {
                if let Some(skipped) = lane.queue.pop_front() {
                    lane.settled.push(skipped.msg);
                }
            }
            let Some(head) = lane.queue.front() else {
                continue;
            };
            if let Some(at) = head.ready_at
                && at > now
            {
                soonest = Some(soonest.map_or(at, |s| s.min(at)));
                continue;
            }
            let Some(event) = head.event.clone() else {
                continue;
            };
            let handout = Handout {
                partition: u16::try_from(index).unwrap_or(u16::MAX),
                epoch: lane.epoch,
                msg: head.msg.clone(),
                event,
                attempt: head.attempt,
            };
            lane.outstanding = true;
            self.cursor = (index + 1) % count;
            return Found::Ready(handout);
        }
        Found::Wait(soonest)
    }

    /// Settles the outstanding head of `partition` if the lane is still
    /// the one it was handed out from; `false` otherwise (the caller then
    /// settles with the broker directly).
    pub(super) fn settle(&mut self, partition: u16, epoch: u64, outcome: Outcome) -> bool {
        self.last_active = Instant::now();
        let Some(lane) = self.lanes.get_mut(usize::from(partition)) else {
            return false;
        };
        if !lane.owned || lane.epoch != epoch || !lane.outstanding {
            return false;
        }
        lane.outstanding = false;
        match outcome {
            Outcome::Ack => {
                if let Some(done) = lane.queue.pop_front() {
                    lane.settled.push(done.msg);
                }
            }
            Outcome::Nack(delay) => {
                if let Some(head) = lane.queue.front_mut() {
                    head.attempt = head.attempt.saturating_add(1);
                    head.ready_at = delay.map(|d| Instant::now() + d);
                }
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn fetched(n: u64, event: bool) -> Fetched<u64> {
        Fetched {
            msg: n,
            position: (n, 0),
            attempt: 1,
            event: event.then(|| Event::new(None, "t", "/s", &n).unwrap()),
        }
    }

    fn take(state: &mut State<u64>) -> Handout<u64> {
        match state.next_ready(Instant::now()) {
            Found::Ready(handout) => handout,
            Found::Wait(_) => panic!("nothing ready"),
        }
    }

    #[test]
    fn a_lane_hands_out_in_order_one_at_a_time() {
        let mut state = State::new(2);
        for lane in &mut state.lanes {
            lane.claim();
        }
        state.lanes[0].push(vec![fetched(1, true), fetched(2, true)]);
        state.lanes[1].push(vec![fetched(10, true)]);
        let first = take(&mut state);
        let other = take(&mut state);
        // Two partitions' heads are in hand at once; the second event of
        // partition 0 waits for the first.
        assert_eq!((first.partition, first.msg), (0, 1));
        assert_eq!((other.partition, other.msg), (1, 10));
        assert!(matches!(
            state.next_ready(Instant::now()),
            Found::Wait(None)
        ));
        assert!(state.settle(0, first.epoch, Outcome::Ack));
        assert_eq!(take(&mut state).msg, 2);
        assert_eq!(state.lanes[0].settled, vec![1]);
    }

    #[test]
    fn a_nack_redelivers_the_head_first_with_the_next_attempt() {
        let mut state = State::new(1);
        state.lanes[0].claim();
        state.lanes[0].push(vec![fetched(1, true), fetched(2, true)]);
        let first = take(&mut state);
        let delay = Duration::from_secs(60);
        assert!(state.settle(0, first.epoch, Outcome::Nack(Some(delay))));
        // Delayed: nothing ready, not even the next event of the key.
        match state.next_ready(Instant::now()) {
            Found::Wait(Some(at)) => assert!(at > Instant::now()),
            _ => panic!("the nacked head must wait for its delay"),
        }
        let again = match state.next_ready(Instant::now() + delay) {
            Found::Ready(handout) => handout,
            Found::Wait(_) => panic!("ready after the delay"),
        };
        assert_eq!((again.msg, again.attempt), (1, 2));
    }

    #[test]
    fn settling_after_the_lane_moved_on_is_refused() {
        let mut state = State::new(1);
        state.lanes[0].claim();
        state.lanes[0].push(vec![fetched(1, true), fetched(2, true)]);
        let held = take(&mut state);
        let given_back = state.lanes[0].let_go();
        assert_eq!(given_back, vec![1, 2]);
        state.lanes[0].claim();
        assert!(!state.settle(0, held.epoch, Outcome::Ack));
        assert!(state.lanes[0].settled.is_empty());
    }

    #[test]
    fn repeats_are_dropped_and_skipped_messages_settle_in_order() {
        let mut state = State::new(1);
        state.lanes[0].claim();
        state.lanes[0].push(vec![fetched(1, true), fetched(2, false), fetched(3, true)]);
        // A broker redelivering what the lane holds adds nothing.
        state.lanes[0].push(vec![fetched(1, true), fetched(3, true)]);
        let first = take(&mut state);
        assert!(state.settle(0, first.epoch, Outcome::Ack));
        // Message 2 is not for this subscription: settled behind 1, never
        // handed out.
        assert_eq!(take(&mut state).msg, 3);
        assert_eq!(state.lanes[0].settled, vec![1, 2]);
    }
}
