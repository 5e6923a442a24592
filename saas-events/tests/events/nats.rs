//! NATS JetStream: the conformance suite against the CI server, and a
//! broker restarted twice mid-stream (a server process of the test's own).

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use saas_events::nats::{NatsBus, NatsConfig};
use saas_events::testing::unique_topic;
use saas_events::{Event, Publisher, SubscribeOptions, Subscriber};
use saas_test_support::{Service, service_url, unique_name};

use crate::support::{Guarded, OnDrop, loses_nothing_across_two_restarts};

async fn nats_backend() -> Option<(Arc<dyn Publisher>, Arc<dyn Subscriber>)> {
    let url = service_url(Service::Nats, "saas-events NATS conformance")?;
    // A prefix per test: its streams are its own, deleted afterwards.
    let prefix = unique_name("ev");
    let config = NatsConfig::default().with_prefix(&prefix).unwrap();
    let bus = NatsBus::connect(&url, config).await.unwrap();
    let cleanup_url = url.clone();
    let guard = OnDrop::new(move || async move {
        let Ok(client) = async_nats::connect(&cleanup_url).await else {
            return;
        };
        let js = async_nats::jetstream::new(client);
        let mut names = js.stream_names();
        let mut doomed = Vec::new();
        while let Some(Ok(name)) = futures_util::StreamExt::next(&mut names).await {
            // The topics' streams, and the bucket of group leases.
            if name.starts_with(&format!("{prefix}_")) || name == format!("KV_{prefix}_leases") {
                doomed.push(name);
            }
        }
        for name in doomed {
            let _ = js.delete_stream(&name).await;
        }
    });
    let publisher = Guarded {
        inner: bus.clone(),
        _guard: guard,
    };
    Some((Arc::new(publisher), Arc::new(bus)))
}

// Every behaviour but `large_payload`, which needs a server whose
// `max_payload` is above NATS's 1 MB default: the shared server keeps the
// default (see `oversize_is_a_typed_error`), so
// `large_payload_on_a_raised_limit` runs that behaviour on a server of the
// test's own. `every_capability_declared` fails if a behaviour only skipped.
mod conformance {
    saas_events::conformance_tests!(@each super::nats_backend();
        round_trip, concurrent_publishers, topic_isolation, nack_redelivery,
        per_key_order, per_key_order_parallel, consumer_groups, close_and_resume, dead_lettering,
        redrive_dead_letters, delayed_retry, crash_mid_handler, tenant_isolation,
        headers_and_trace, every_capability_declared);
}

/// A message over the server's limit fails as `PayloadTooLarge`, naming
/// the server's limit, and nothing is published.
#[tokio::test]
async fn oversize_is_a_typed_error() {
    let Some((p, _s)) = nats_backend().await else {
        return;
    };
    let topic = unique_topic("oversize");
    let big = Event::new_binary(
        None,
        "t",
        "/t",
        "application/octet-stream",
        vec![7; 900_000],
    )
    .unwrap();
    match p.publish(&topic, big).await {
        Err(saas_events::EventError::PayloadTooLarge { size, limit }) => assert!(size > limit),
        other => panic!("expected PayloadTooLarge, got {other:?}"),
    }
}

/// The suite's 1 MiB payload behaviour, on a server of the test's own
/// configured with `max_payload: 8MB` (a 1 MiB binary event is ~1.4 MiB on
/// the wire once base64-encoded in the envelope).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_payload_on_a_raised_limit() {
    if service_url(Service::Nats, "nats large_payload_on_a_raised_limit").is_none() {
        return;
    }
    let port = free_port();
    let dir = std::env::temp_dir().join(unique_name("saas_events_nats_large"));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("nats.conf");
    std::fs::write(&config, "max_payload: 8MB\n").unwrap();
    let mut child = Command::new("nats-server")
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
        .arg(dir.join("store"))
        .arg("-c")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nats-server on PATH");
    let url = format!("nats://127.0.0.1:{port}");
    let bus = wait_connect(&url).await;
    saas_events::testing::large_payload(Arc::new(bus.clone()), Arc::new(bus)).await;
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct OwnServer {
    port: u16,
    dir: std::path::PathBuf,
    child: Option<Child>,
}

impl OwnServer {
    fn start(port: u16, dir: std::path::PathBuf) -> Self {
        let mut server = Self {
            port,
            dir,
            child: None,
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let child = Command::new("nats-server")
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-sd",
            ])
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server on PATH");
        self.child = Some(child);
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn wait_connect(url: &str) -> NatsBus {
    // A killed server may come back without an ack it had confirmed (the
    // consumer state on disk lags), and that key's next event waits for
    // the ack wait to pass: keep it short here.
    let config = NatsConfig::default().with_ack_wait(Duration::from_secs(2));
    for _ in 0..100 {
        if let Ok(bus) = NatsBus::connect(url, config.clone()).await {
            return bus;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("nats-server at {url} did not come up");
}

/// Publish, kill the server, restart it on the same store, twice; a
/// durable group receives every event published before each restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restarted_twice_loses_nothing() {
    if service_url(Service::Nats, "nats broker_restarted_twice_loses_nothing").is_none() {
        return;
    }
    let port = free_port();
    let dir = std::env::temp_dir().join(unique_name("saas_events_nats"));
    let mut server = OwnServer::start(port, dir);
    let url = format!("nats://127.0.0.1:{port}");
    loses_nothing_across_two_restarts(
        async || wait_connect(&url).await,
        || {
            server.stop();
            server.spawn();
        },
    )
    .await;
}

/// The same event id published twice is stored once.
#[tokio::test]
async fn duplicate_event_ids_are_stored_once() {
    let Some((p, s)) = nats_backend().await else {
        return;
    };
    let topic = unique_topic("dedup");
    let mut sub = s.subscribe(&topic, SubscribeOptions::new()).await.unwrap();
    let event = Event::new(None, "test.dedup", "/tests", &1).unwrap();
    p.publish(&topic, event.clone()).await.unwrap();
    p.publish(&topic, event.clone()).await.unwrap();
    let sentinel = Event::new(None, "test.dedup", "/tests", &2).unwrap();
    p.publish(&topic, sentinel.clone()).await.unwrap();
    let mut ids = Vec::new();
    loop {
        let delivery = tokio::time::timeout(Duration::from_secs(10), sub.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        ids.push(delivery.event().id().to_owned());
        delivery.ack().await.unwrap();
        if ids.last().map(String::as_str) == Some(sentinel.id()) {
            break;
        }
    }
    assert_eq!(ids, vec![event.id().to_owned(), sentinel.id().to_owned()]);
}

/// A batch larger than the client's limit of publishes awaiting their ack
/// (5,000) is published whole, not left waiting for acks it never awaits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_past_the_clients_ack_limit_is_published() {
    let Some((p, s)) = nats_backend().await else {
        return;
    };
    let topic = unique_topic("big-batch");
    let mut sub = s.subscribe(&topic, SubscribeOptions::new()).await.unwrap();
    let events: Vec<Event> = (0..6_000)
        .map(|n| Event::new(None, "test.big", "/tests", &n).unwrap())
        .collect();
    let last = events.last().unwrap().id().to_owned();
    tokio::time::timeout(Duration::from_secs(60), p.publish_batch(&topic, events))
        .await
        .expect("publishing 6,000 events in one batch")
        .unwrap();
    // Every event arrives, in order, up to the last one.
    let mut received = 0;
    loop {
        let delivery = tokio::time::timeout(Duration::from_secs(10), sub.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        received += 1;
        let id = delivery.event().id().to_owned();
        delivery.ack().await.unwrap();
        if id == last {
            break;
        }
    }
    assert_eq!(received, 6_000);
}
