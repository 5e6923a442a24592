//! The router's handler metric, read back from recorders of this test's
//! thread: each delivery is one sample under its outcome, and a recorder
//! put in place later gets the samples from then on.

use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use saas_core::TenantId;
use saas_events::router::{ReceivedEvent, Router, handler_fn};
use saas_events::{Event, EventError, InMemoryBus, Publisher, SubscribeOptions};
use tokio::sync::mpsc;

/// Samples of `saas_events_handler_seconds` as (ack, nack) since the last
/// look (a snapshot drains the recorder).
fn samples(recorder: &DebuggingRecorder) -> (usize, usize) {
    let mut counts = (0, 0);
    for (key, _, _, value) in recorder.snapshotter().snapshot().into_vec() {
        let outcome = key.key().labels().find(|l| l.key() == "outcome");
        let (name, outcome) = (key.key().name(), outcome.map(|l| l.value().to_owned()));
        if let (true, Some(outcome), DebugValue::Histogram(values)) =
            (name == "saas_events_handler_seconds", outcome, value)
        {
            match outcome.as_str() {
                "ack" => counts.0 += values.len(),
                "nack" => counts.1 += values.len(),
                other => assert!(values.is_empty(), "{} {other} samples", values.len()),
            }
        }
    }
    counts
}

/// Lets the worker finish the delivery it is on: it records after the
/// handler returned, which `handled` reports a little before.
async fn settle() {
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
}

#[test]
fn each_delivery_is_timed_under_its_outcome_by_the_current_recorder() {
    let (first, second) = (DebuggingRecorder::new(), DebuggingRecorder::new());
    // One thread: the router's workers record where this test reads.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let bus = InMemoryBus::new();
        let (done, mut handled) = mpsc::unbounded_channel();
        let router = Router::new().route(
            "t.event",
            handler_fn(move |event: ReceivedEvent| {
                let done = done.clone();
                async move {
                    let fail = event.data_as::<bool>()? && event.attempt() == 1;
                    done.send(()).ok();
                    match fail {
                        true => Err(EventError::handler("the first attempt fails")),
                        false => Ok(()),
                    }
                }
            }),
        );
        let running = router
            .run(&bus, "t", SubscribeOptions::new().with_group("g"))
            .await
            .unwrap();
        let tenant = TenantId::new();
        let publish = |fail: bool| {
            let bus = bus.clone();
            async move {
                let event = Event::new(tenant, "t.event", "/test", &fail).unwrap();
                bus.publish("t", event).await.unwrap();
            }
        };
        {
            let _on = metrics::set_default_local_recorder(&first);
            publish(false).await;
            publish(true).await; // nacked once, then acked
            for _ in 0..3 {
                handled.recv().await.unwrap();
            }
            settle().await;
        }
        assert_eq!(samples(&first), (2, 1), "two acks, one nack");
        {
            let _on = metrics::set_default_local_recorder(&second);
            publish(false).await;
            handled.recv().await.unwrap();
            settle().await;
        }
        assert_eq!(samples(&second), (1, 0), "the new recorder gets the sample");
        assert_eq!(samples(&first), (0, 0), "the old one gets nothing more");
        running.shutdown().await;
    });
}
