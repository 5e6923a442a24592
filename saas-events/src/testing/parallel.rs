//! Conformance: per-key order holds with two consumers of one group
//! working in parallel.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use super::pubsub::{Numbered, numbered, subscribe};
use super::{WAIT, must, skip, unique_topic};
use crate::envelope::Event;
use crate::traits::{Publisher, SubscribeOptions, Subscriber};

const KEYS: usize = 6;
const PER_KEY: u32 = 10;
/// The event of key `k2` nacked once, mid-sequence.
const NACKED: u32 = 4;
/// How long a consumer holds each delivery: long enough for the other
/// consumer to take one of another key meanwhile, even on a loaded host.
const HOLD: Duration = Duration::from_millis(20);

#[derive(Default)]
struct Log {
    /// Per key, the numbers in the order they were handed out.
    received: HashMap<String, Vec<u32>>,
    in_flight: usize,
    most_in_flight: usize,
    by_worker: [usize; 2],
    nacked: bool,
}

/// Two consumers of one group take events of six keys at once, each
/// holding a delivery for a moment: both work, deliveries overlap, and
/// each key's events are still handed out in publish order — the one
/// nacked mid-sequence again before the next of its key.
pub async fn per_key_order_parallel(p: Arc<dyn Publisher>, s: Arc<dyn Subscriber>) {
    let capabilities = s.capabilities();
    if !capabilities.ordering_per_key {
        return skip("per_key_order_parallel", "ordering_per_key");
    }
    if !capabilities.consumer_groups {
        return skip("per_key_order_parallel", "consumer_groups");
    }
    let topic = unique_topic("parallel");
    let options = SubscribeOptions::new().with_group("parallel");
    let subs = [
        subscribe(&*s, &topic, options.clone()).await,
        subscribe(&*s, &topic, options).await,
    ];
    let mut events: Vec<Event> = Vec::new();
    for n in 0..PER_KEY {
        for k in 0..KEYS {
            let key = format!("k{k}");
            events.push(numbered(None, &key, n).with_partition_key(key));
        }
    }
    must(p.publish_batch(&topic, events).await, "publishing");

    let log = Arc::new(Mutex::new(Log::default()));
    let acked = Arc::new(AtomicUsize::new(0));
    let total = KEYS * PER_KEY as usize;
    let mut workers = Vec::new();
    for (worker, mut sub) in subs.into_iter().enumerate() {
        let (log, acked) = (Arc::clone(&log), Arc::clone(&acked));
        workers.push(tokio::spawn(async move {
            loop {
                let delivery = match sub.next().await {
                    Some(Ok(delivery)) => delivery,
                    Some(Err(error)) => panic!("receiving: {error}"),
                    None => panic!("the subscription ended"),
                };
                let body: Numbered = must(delivery.event().data_as(), "decoding");
                let nack = {
                    let mut log = log.lock().unwrap_or_else(PoisonError::into_inner);
                    log.received
                        .entry(body.label.clone())
                        .or_default()
                        .push(body.n);
                    log.in_flight += 1;
                    log.most_in_flight = log.most_in_flight.max(log.in_flight);
                    log.by_worker[worker] += 1;
                    let nack = body.label == "k2" && body.n == NACKED && !log.nacked;
                    log.nacked |= nack;
                    nack
                };
                // Hold it a moment so the other consumer works meanwhile.
                tokio::time::sleep(HOLD).await;
                log.lock().unwrap_or_else(PoisonError::into_inner).in_flight -= 1;
                if nack {
                    must(delivery.nack(None).await, "nacking");
                } else {
                    must(delivery.ack().await, "acking");
                    acked.fetch_add(1, Ordering::SeqCst);
                }
            }
        }));
    }
    // The consumers run until every event is acked (or one fails).
    let finished = tokio::time::timeout(WAIT * 2, async {
        while acked.load(Ordering::SeqCst) < total {
            if workers.iter().any(|w| w.is_finished()) {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    })
    .await;
    for worker in workers {
        worker.abort();
        if let Err(error) = worker.await
            && error.is_panic()
        {
            std::panic::resume_unwind(error.into_panic());
        }
    }
    assert!(
        matches!(finished, Ok(true)),
        "not every event was handled in time"
    );

    let log = log.lock().unwrap_or_else(PoisonError::into_inner);
    for k in 0..KEYS {
        let key = format!("k{k}");
        let mut expected: Vec<u32> = (0..PER_KEY).collect();
        if key == "k2" {
            expected.insert(NACKED as usize + 1, NACKED);
        }
        assert_eq!(
            log.received.get(&key),
            Some(&expected),
            "key {key} was handed out out of order"
        );
    }
    assert!(
        log.by_worker.iter().all(|&n| n > 0),
        "one consumer did all the work: {:?}",
        log.by_worker
    );
    assert!(
        log.most_in_flight >= 2,
        "the two consumers never held deliveries at the same time"
    );
}
