//! Redis Streams: the conformance suite against the CI server, reclaiming
//! a dead consumer's entries, and a server of the test's own (AOF on)
//! killed and restarted twice mid-stream.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use saas_core::TenantId;
use saas_events::redis::{RedisBus, RedisConfig};
use saas_events::testing::unique_topic;
use saas_events::{Event, Publisher, SubscribeOptions, Subscriber};
use saas_test_support::{Service, service_url, unique_name};

use crate::support::{Guarded, OnDrop, loses_nothing_across_two_restarts};

async fn redis_backend_with(
    config: RedisConfig,
) -> Option<(Arc<dyn Publisher>, Arc<dyn Subscriber>)> {
    let url = service_url(Service::Redis, "saas-events Redis conformance")?;
    // A key prefix per test: its streams are its own, deleted afterwards.
    let prefix = unique_name("ev");
    let bus = RedisBus::connect(&url, config.with_prefix(&prefix).unwrap())
        .await
        .unwrap();
    let guard = OnDrop::new(move || async move {
        let Ok(client) = redis::Client::open(url.as_str()) else {
            return;
        };
        let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
            return;
        };
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{prefix}:*"))
            .query_async(&mut conn)
            .await
            .unwrap_or_default();
        if !keys.is_empty() {
            let _: Result<i64, _> = redis::cmd("DEL").arg(keys).query_async(&mut conn).await;
        }
    });
    let publisher = Guarded {
        inner: bus.clone(),
        _guard: guard,
    };
    Some((Arc::new(publisher), Arc::new(bus)))
}

async fn redis_backend() -> Option<(Arc<dyn Publisher>, Arc<dyn Subscriber>)> {
    redis_backend_with(RedisConfig::default()).await
}

mod conformance {
    saas_events::conformance_tests!(super::redis_backend());
}

/// A consumer that goes away holding an entry it never settles (the
/// delivery forgotten, the subscription dropped): its partition is kept
/// for the ack wait, then the next holder claims the entry with XCLAIM,
/// as the next attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_consumers_entries_are_reclaimed() {
    let config = RedisConfig::default().with_ack_wait(Duration::from_millis(300));
    let Some((p, s)) = redis_backend_with(config).await else {
        return;
    };
    let topic = unique_topic("reclaim");
    let options = SubscribeOptions::new().with_group("workers");
    let mut dying = s.subscribe(&topic, options.clone()).await.unwrap();
    let sent = Event::new(TenantId::new(), "test.reclaim", "/tests", &1).unwrap();
    p.publish(&topic, sent.clone()).await.unwrap();
    let held = tokio::time::timeout(Duration::from_secs(5), dying.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    // The process "dies": nothing settles the entry.
    std::mem::forget(held);
    drop(dying);
    let mut survivor = s.subscribe(&topic, options).await.unwrap();
    let again = tokio::time::timeout(Duration::from_secs(10), survivor.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(again.event().id(), sent.id());
    assert_eq!(again.attempt(), 2);
    again.ack().await.unwrap();
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
    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server on PATH");
        self.child = Some(child);
    }

    /// SIGKILL: a crash, not a clean shutdown.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn wait_connect(url: &str) -> RedisBus {
    for _ in 0..100 {
        if let Ok(bus) = RedisBus::connect(url, RedisConfig::default()).await
            && bus.delete_topic("probe").await.is_ok()
        {
            return bus;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("redis-server at {url} did not come up");
}

/// Publish, kill the server, restart it on the same AOF, twice; a group
/// receives every event acknowledged by a publish before each crash.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restarted_twice_loses_nothing() {
    if service_url(Service::Redis, "redis broker_restarted_twice_loses_nothing").is_none() {
        return;
    }
    let port = free_port();
    let dir = std::env::temp_dir().join(unique_name("saas_events_redis"));
    std::fs::create_dir_all(&dir).unwrap();
    let mut server = OwnServer {
        port,
        dir,
        child: None,
    };
    server.spawn();
    let url = format!("redis://127.0.0.1:{port}");
    loses_nothing_across_two_restarts(
        async || wait_connect(&url).await,
        || {
            server.kill();
            server.spawn();
        },
    )
    .await;
}
