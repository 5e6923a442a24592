//! Outbound webhooks against a real HTTP receiver on loopback: signatures
//! (checked with an HMAC written out here and the specification's test
//! vector), retries on the schedule, disable and enable, SSRF refusals,
//! tenant isolation, per-endpoint concurrency, dead letters and redrive,
//! the delivery log; and the in-memory store's contract.

mod receiver;
mod store;

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::{TimeZone, Utc};
use saas_core::{ManualClock, TenantId};
use saas_events::middleware::SeededRandom;
use saas_events::router::Router;
use saas_events::webhooks::{
    DisablePolicy, DisableReason, EndpointStatus, InMemoryWebhookStore, RetrySchedule, RetryTimer,
    Sleep, SsrfPolicy, WebhookDispatcher, WebhookDispatcherBuilder, WebhookEndpoint, WebhookError,
    WebhookSecret, WebhookStore, verify,
};
use saas_events::{Event, InMemoryBus, Publisher, SubscribeOptions};
use serde_json::json;

use receiver::Receiver;

/// The Standard Webhooks specification's example.
const SPEC_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const SPEC_MSG_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
const SPEC_TIMESTAMP: i64 = 1614265330;
const SPEC_PAYLOAD: &[u8] = br#"{"test": 2432232314}"#;
const SPEC_SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

/// HMAC-SHA256 written out from RFC 2104 over `sha2`, sharing nothing
/// with the code under test (which uses the `hmac` crate).
fn independent_hmac(key: &[u8], message: &[u8]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.map(|k| k ^ byte);
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

/// `v1,<base64>` for a `whsec_` secret, computed independently.
fn independent_signature(secret: &str, msg_id: &str, timestamp: &str, body: &[u8]) -> String {
    let key = STANDARD
        .decode(secret.trim_start_matches("whsec_"))
        .unwrap();
    let mut message = format!("{msg_id}.{timestamp}.").into_bytes();
    message.extend_from_slice(body);
    format!("v1,{}", STANDARD.encode(independent_hmac(&key, &message)))
}

fn start_time() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 1, 9, 0, 0).unwrap()
}

/// Waits out retry delays by moving the manual clock, at once, and
/// remembers the delays asked for.
#[derive(Debug)]
struct ManualTimer {
    clock: ManualClock,
    delays: Mutex<Vec<Duration>>,
}

impl ManualTimer {
    fn new(clock: ManualClock) -> Arc<Self> {
        Arc::new(Self {
            clock,
            delays: Mutex::default(),
        })
    }

    fn delays(&self) -> Vec<Duration> {
        self.delays.lock().unwrap().clone()
    }
}

impl RetryTimer for ManualTimer {
    fn sleep(&self, delay: Duration) -> Sleep {
        self.delays.lock().unwrap().push(delay);
        self.clock
            .advance(chrono::Duration::from_std(delay).unwrap());
        Box::pin(tokio::task::yield_now())
    }
}

struct Fixture {
    store: Arc<InMemoryWebhookStore>,
    clock: ManualClock,
    timer: Arc<ManualTimer>,
}

impl Fixture {
    fn new() -> Self {
        let clock = ManualClock::new(start_time());
        Self {
            store: Arc::new(InMemoryWebhookStore::new()),
            timer: ManualTimer::new(clock.clone()),
            clock,
        }
    }

    /// A dispatcher on the manual clock and timer, allowed to reach
    /// loopback (the receivers), with the default schedule without jitter.
    fn builder(&self) -> WebhookDispatcherBuilder {
        WebhookDispatcher::builder(self.store.clone())
            .ssrf_policy(SsrfPolicy::default().allow_loopback())
            .clock(Arc::new(self.clock.clone()))
            .timer(self.timer.clone())
            .schedule(RetrySchedule::default().with_jitter(0.0))
            .request_timeout(Duration::from_secs(10))
    }

    async fn endpoint(&self, tenant: TenantId, url: &str, filters: &[&str]) -> WebhookEndpoint {
        let endpoint = WebhookEndpoint::new(tenant, url, WebhookSecret::generate().unwrap())
            .unwrap()
            .with_filters(filters)
            .unwrap();
        self.store.register(tenant, endpoint.clone()).await.unwrap();
        endpoint
    }
}

fn order(tenant: TenantId, n: u64) -> Arc<Event> {
    Arc::new(Event::new(tenant, "order.placed", "/shop", &json!({"order": n})).unwrap())
}

/// Polls `done` until it holds (real time, bounded): for what happens on
/// other tasks, such as a router consuming the bus.
async fn eventually(what: &str, done: impl Fn() -> bool) {
    for _ in 0..1000 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

#[test]
fn our_signer_produces_the_specification_test_vector() {
    let secret = WebhookSecret::parse(SPEC_SECRET).unwrap();
    assert_eq!(
        secret.sign(SPEC_MSG_ID, SPEC_TIMESTAMP, SPEC_PAYLOAD),
        SPEC_SIGNATURE
    );
    // The independent HMAC agrees with the specification too, so it is a
    // fair judge of the signatures below.
    assert_eq!(
        independent_signature(SPEC_SECRET, SPEC_MSG_ID, "1614265330", SPEC_PAYLOAD),
        SPEC_SIGNATURE
    );
    assert!(matches!(
        WebhookSecret::parse("whsec_c2hvcnQ="),
        Err(WebhookError::InvalidSecret { .. })
    ));
}

#[tokio::test]
async fn deliveries_are_signed_with_every_valid_secret_and_verify_independently() {
    let fx = Fixture::new();
    let receiver = Receiver::start().await;
    let dispatcher = fx.builder().build().unwrap();
    let tenant = TenantId::new();
    let old = WebhookSecret::parse(SPEC_SECRET).unwrap();
    let mut endpoint = WebhookEndpoint::new(tenant, &receiver.url(), old.clone()).unwrap();
    let new = WebhookSecret::generate().unwrap();
    endpoint.rotate_secret(new.clone());
    fx.store.register(tenant, endpoint).await.unwrap();

    let event = order(tenant, 7);
    assert_eq!(dispatcher.dispatch(event.clone()).await.unwrap(), 1);
    dispatcher.wait_idle().await;

    let requests = receiver.requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    let header = |name: &str| request.headers[name].to_str().unwrap().to_owned();
    assert_eq!(header("content-type"), "application/json");
    assert_eq!(
        header("webhook-timestamp"),
        start_time().timestamp().to_string()
    );
    let id = header("webhook-id");
    assert!(id.starts_with("msg_"), "{id}");
    // The body is the event in CloudEvents JSON.
    assert_eq!(Event::from_json_slice(&request.body).unwrap(), *event);

    // Two signatures during the rotation: the new secret's, then the old.
    let signatures: Vec<String> = header("webhook-signature")
        .split(' ')
        .map(str::to_owned)
        .collect();
    let timestamp = header("webhook-timestamp");
    assert_eq!(
        signatures,
        [
            independent_signature(&new.expose(), &id, &timestamp, &request.body),
            independent_signature(SPEC_SECRET, &id, &timestamp, &request.body),
        ]
    );

    // The receiving side's helper accepts either secret, within tolerance.
    let tolerance = Duration::from_secs(300);
    let now = start_time() + chrono::Duration::seconds(60);
    for secret in [&old, &new] {
        assert_eq!(
            verify(secret, &request.headers, &request.body, now, tolerance).unwrap(),
            id
        );
    }
    let stranger = WebhookSecret::generate().unwrap();
    let late = start_time() + chrono::Duration::minutes(10);
    for (secret, at, body) in [
        (&stranger, now, &request.body[..]),
        (&new, late, &request.body[..]),
        (&new, now, &b"{}"[..]),
    ] {
        assert!(matches!(
            verify(secret, &request.headers, body, at, tolerance),
            Err(WebhookError::Verification { .. })
        ));
    }
}

#[tokio::test]
async fn failed_attempts_are_retried_on_the_schedule_until_delivered() {
    let fx = Fixture::new();
    let receiver = Receiver::start().await;
    receiver.answer_with([500, 503, 404]);
    let dispatcher = fx.builder().build().unwrap();
    let tenant = TenantId::new();
    let endpoint = fx.endpoint(tenant, &receiver.url(), &["order.*"]).await;

    dispatcher.dispatch(order(tenant, 1)).await.unwrap();
    dispatcher.wait_idle().await;

    // Three failures, then the fourth attempt is taken.
    let requests = receiver.requests();
    assert_eq!(requests.len(), 4);
    let ids: Vec<_> = requests
        .iter()
        .map(|r| r.headers["webhook-id"].clone())
        .collect();
    assert!(
        ids.iter().all(|id| *id == ids[0]),
        "one webhook-id for every attempt"
    );
    let schedule = [5, 300, 1800].map(Duration::from_secs);
    assert_eq!(fx.timer.delays(), schedule);

    let log = fx
        .store
        .delivery_log(tenant, Some(endpoint.id()))
        .await
        .unwrap();
    let summary: Vec<_> = log
        .iter()
        .map(|a| (a.attempt, a.status, a.delivered, a.next_attempt_in))
        .collect();
    assert_eq!(
        summary,
        [
            (1, Some(500), false, Some(schedule[0])),
            (2, Some(503), false, Some(schedule[1])),
            (3, Some(404), false, Some(schedule[2])),
            (4, Some(200), true, None),
        ]
    );
    // Attempts are spaced by the schedule on the injected clock, and each
    // request's timestamp is its send time.
    for (pair, delay) in log.windows(2).zip(schedule) {
        assert_eq!(
            pair[1].at - pair[0].at,
            chrono::Duration::from_std(delay).unwrap()
        );
    }
    for (request, attempt) in requests.iter().zip(&log) {
        assert_eq!(
            request.headers["webhook-timestamp"],
            attempt.at.timestamp().to_string()
        );
    }
    assert!(fx.store.dead_letters(tenant).await.unwrap().is_empty());
}

#[test]
fn jitter_shortens_delays_reproducibly_from_the_injected_source() {
    let delays = |seed| {
        let schedule = RetrySchedule::default()
            .with_jitter(0.5)
            .with_random(Arc::new(SeededRandom::new(seed)));
        (2..=8)
            .map(|n| schedule.delay_before(n).unwrap())
            .collect::<Vec<_>>()
    };
    let base = RetrySchedule::default().with_jitter(0.0);
    let full: Vec<_> = (2..=8).map(|n| base.delay_before(n).unwrap()).collect();
    assert_eq!(delays(3), delays(3));
    assert_ne!(delays(3), full);
    for (jittered, full) in delays(3).iter().zip(&full) {
        assert!(*jittered <= *full && *jittered >= full.mul_f64(0.5));
    }
    assert_eq!(base.delay_before(1), Some(Duration::ZERO));
    assert_eq!(base.delay_before(9), None);
}

#[tokio::test]
async fn sustained_failure_disables_the_endpoint_until_the_tenant_enables_it() {
    let fx = Fixture::new();
    let receiver = Receiver::start().await;
    receiver.answer_with([500; 5]);
    // Disabled once 4 attempts in a row have failed over 30 minutes: the
    // fourth attempt (after 5 s + 5 min + 30 min) crosses both.
    let dispatcher = fx
        .builder()
        .disable_policy(DisablePolicy::new(Duration::from_secs(30 * 60), 4))
        .build()
        .unwrap();
    let tenant = TenantId::new();
    let endpoint = fx.endpoint(tenant, &receiver.url(), &["*"]).await;

    dispatcher.dispatch(order(tenant, 1)).await.unwrap();
    dispatcher.wait_idle().await;
    assert_eq!(receiver.requests().len(), 4);
    let stored = fx
        .store
        .endpoint(tenant, endpoint.id())
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(
        stored.status(),
        EndpointStatus::Disabled {
            reason: DisableReason::SustainedFailure,
            ..
        }
    ));
    let dead = fx.store.dead_letters(tenant).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].attempts, 4);

    // While disabled nothing is sent, and redriving is refused.
    assert_eq!(dispatcher.dispatch(order(tenant, 2)).await.unwrap(), 0);
    dispatcher.wait_idle().await;
    assert_eq!(receiver.requests().len(), 4);
    assert!(matches!(
        dispatcher.redrive(tenant, &dead[0].webhook_id).await,
        Err(WebhookError::Disabled { .. })
    ));

    // The tenant enables it and fixes its receiver: deliveries resume.
    receiver.answer_with([]);
    fx.store.enable(tenant, endpoint.id()).await.unwrap();
    assert_eq!(dispatcher.dispatch(order(tenant, 3)).await.unwrap(), 1);
    dispatcher.wait_idle().await;
    let requests = receiver.requests();
    assert_eq!(requests.len(), 5);
    let last = Event::from_json_slice(&requests[4].body).unwrap();
    assert_eq!(
        last.data_as::<serde_json::Value>().unwrap(),
        json!({"order": 3})
    );
}

#[tokio::test]
async fn gone_disables_the_endpoint_at_once() {
    let fx = Fixture::new();
    let receiver = Receiver::start().await;
    receiver.answer_with([410]);
    let dispatcher = fx.builder().build().unwrap();
    let tenant = TenantId::new();
    let endpoint = fx.endpoint(tenant, &receiver.url(), &["*"]).await;

    dispatcher.dispatch(order(tenant, 1)).await.unwrap();
    dispatcher.wait_idle().await;
    assert_eq!(receiver.requests().len(), 1, "no retry after 410");
    assert!(fx.timer.delays().is_empty());
    let stored = fx
        .store
        .endpoint(tenant, endpoint.id())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        *stored.status(),
        EndpointStatus::Disabled {
            reason: DisableReason::Gone,
            at: start_time()
        }
    );
    assert_eq!(dispatcher.dispatch(order(tenant, 2)).await.unwrap(), 0);
}

#[tokio::test]
async fn the_default_policy_refuses_private_targets_without_connecting() {
    let fx = Fixture::new();
    let receiver = Receiver::start().await;
    let port = receiver.port();
    let strict = WebhookDispatcher::builder(fx.store.clone())
        .clock(Arc::new(fx.clock.clone()))
        .timer(fx.timer.clone())
        // A name of our own that resolves to loopback, as a hostile DNS
        // record would.
        .resolve_host("rebound.example", ["127.0.0.1".parse::<IpAddr>().unwrap()])
        .build()
        .unwrap();
    let tenant = TenantId::new();
    let targets = [
        (format!("http://127.0.0.1:{port}/hook"), "127.0.0.1"),
        ("http://10.0.0.1/hook".to_owned(), "10.0.0.1"),
        (
            "http://169.254.169.254/latest/meta-data".to_owned(),
            "169.254.169.254",
        ),
        (format!("http://[::1]:{port}/hook"), "::1"),
        (
            format!("http://[::ffff:127.0.0.1]:{port}/hook"),
            "::ffff:127.0.0.1",
        ),
        (format!("http://rebound.example:{port}/hook"), "127.0.0.1"),
    ];
    for (url, address) in &targets {
        let endpoint = fx.endpoint(tenant, url, &["*"]).await;
        // Checked before any delivery: nothing may ever be sent to these.
        match strict.check_endpoint(&endpoint).await {
            Err(WebhookError::Forbidden {
                address: refused, ..
            }) => {
                assert_eq!(refused, address.parse::<IpAddr>().unwrap(), "{url}");
            }
            other => panic!("{url}: expected a refusal, got {other:?}"),
        }
    }
    // `localhost` resolves to loopback through the system resolver.
    let localhost = fx
        .endpoint(tenant, &format!("http://localhost:{port}/hook"), &["*"])
        .await;
    let refusal = strict.check_endpoint(&localhost).await.unwrap_err();
    assert!(
        matches!(refusal, WebhookError::Forbidden { .. }),
        "{refusal:?}"
    );

    // Deliveries to all of them are refused once each, not retried, and
    // dead-lettered; the receiver sees nothing.
    assert_eq!(
        strict.dispatch(order(tenant, 1)).await.unwrap(),
        targets.len() + 1
    );
    strict.wait_idle().await;
    assert!(receiver.requests().is_empty());
    assert!(fx.timer.delays().is_empty());
    let log = fx.store.delivery_log(tenant, None).await.unwrap();
    assert_eq!(log.len(), targets.len() + 1);
    for attempt in &log {
        assert_eq!(attempt.status, None);
        assert!(
            attempt
                .error
                .as_deref()
                .unwrap()
                .starts_with("refused to connect"),
            "{attempt:?}"
        );
    }
    assert_eq!(
        fx.store.dead_letters(tenant).await.unwrap().len(),
        targets.len() + 1
    );

    // Allowing loopback lets the receiver through, and nothing more.
    let loopback = fx.builder().build().unwrap();
    assert!(loopback.check_endpoint(&localhost).await.is_ok());
    let private = fx.endpoint(tenant, "http://10.0.0.1/hook", &["*"]).await;
    assert!(matches!(
        loopback.check_endpoint(&private).await,
        Err(WebhookError::Forbidden { .. })
    ));
}

#[tokio::test]
async fn a_tenant_never_receives_another_tenants_events() {
    let fx = Fixture::new();
    let (receiver_a, receiver_b) = (Receiver::start().await, Receiver::start().await);
    let dispatcher = fx.builder().build().unwrap();
    let (a, b) = (TenantId::new(), TenantId::new());
    let endpoint_a = fx.endpoint(a, &receiver_a.url(), &["order.*"]).await;
    let endpoint_b = fx.endpoint(b, &receiver_b.url(), &["order.*"]).await;

    let bus = InMemoryBus::new();
    let running = Router::new()
        .fallback(dispatcher.handler())
        .concurrency(2)
        .run(
            &bus,
            "domain",
            SubscribeOptions::new().with_group("webhooks"),
        )
        .await
        .unwrap();
    for n in 0..3 {
        bus.publish("domain", (*order(a, n)).clone()).await.unwrap();
        bus.publish("domain", (*order(b, 10 + n)).clone())
            .await
            .unwrap();
    }
    // No tenant: no endpoint of anyone's.
    let untenanted = Event::new(None, "order.placed", "/shop", &json!({"order": 99})).unwrap();
    bus.publish("domain", untenanted).await.unwrap();
    eventually("three deliveries each", || {
        receiver_a.requests().len() == 3 && receiver_b.requests().len() == 3
    })
    .await;
    dispatcher.wait_idle().await;
    running.shutdown().await;

    for (receiver, tenant) in [(&receiver_a, a), (&receiver_b, b)] {
        let requests = receiver.requests();
        assert_eq!(requests.len(), 3);
        for request in requests {
            let event = Event::from_json_slice(&request.body).unwrap();
            assert_eq!(event.tenant_id(), Some(tenant));
        }
    }

    // The store answers for the tenant asked about only.
    let ids =
        |endpoints: Vec<WebhookEndpoint>| endpoints.iter().map(|e| e.id()).collect::<Vec<_>>();
    assert_eq!(ids(fx.store.endpoints(a).await.unwrap()), [endpoint_a.id()]);
    assert_eq!(ids(fx.store.endpoints(b).await.unwrap()), [endpoint_b.id()]);
    assert!(
        fx.store
            .endpoint(a, endpoint_b.id())
            .await
            .unwrap()
            .is_none()
    );
    assert!(matches!(
        fx.store
            .disable(a, endpoint_b.id(), DisableReason::Manual, start_time())
            .await,
        Err(WebhookError::NotFound { .. })
    ));
    assert!(matches!(
        fx.store.update(a, endpoint_b.clone()).await,
        Err(WebhookError::TenantMismatch)
    ));
    let log_a = fx.store.delivery_log(a, None).await.unwrap();
    assert_eq!(log_a.len(), 3);
    assert!(log_a.iter().all(|entry| entry.endpoint == endpoint_a.id()));
    assert!(
        fx.store
            .delivery_log(a, Some(endpoint_b.id()))
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn a_slow_endpoint_does_not_hold_up_another() {
    let fx = Fixture::new();
    let (slow, fast) = (Receiver::start().await, Receiver::start().await);
    slow.hold();
    let dispatcher = fx.builder().build().unwrap();
    let tenant = TenantId::new();
    let slow_endpoint = fx.endpoint(tenant, &slow.url(), &["*"]).await;
    let fast_endpoint = fx.endpoint(tenant, &fast.url(), &["*"]).await;

    for n in 0..2 {
        assert_eq!(dispatcher.dispatch(order(tenant, n)).await.unwrap(), 2);
    }
    // Both events reach the fast endpoint while the slow one holds its
    // first request; its second waits for the one slot (max_in_flight 1).
    let mut logged = Vec::new();
    for _ in 0..1000 {
        logged = fx.store.delivery_log(tenant, None).await.unwrap();
        if logged.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        logged.len(),
        2,
        "the fast endpoint's deliveries were logged"
    );
    assert!(
        logged
            .iter()
            .all(|a| a.endpoint == fast_endpoint.id() && a.delivered)
    );
    assert_eq!(fast.requests().len(), 2);
    assert_eq!(slow.requests().len(), 1);

    slow.release();
    dispatcher.wait_idle().await;
    assert_eq!(slow.requests().len(), 2);
    let order_done: Vec<_> = fx
        .store
        .delivery_log(tenant, None)
        .await
        .unwrap()
        .iter()
        .map(|a| a.endpoint)
        .collect();
    assert_eq!(
        order_done,
        [
            fast_endpoint.id(),
            fast_endpoint.id(),
            slow_endpoint.id(),
            slow_endpoint.id()
        ]
    );
}

#[tokio::test]
async fn a_delivery_is_dead_lettered_after_its_last_attempt_and_redriven() {
    let fx = Fixture::new();
    let receiver = Receiver::start().await;
    receiver.answer_with([500, 500, 500]);
    let dispatcher = fx
        .builder()
        .schedule(
            RetrySchedule::new([Duration::from_secs(1), Duration::from_secs(2)]).with_jitter(0.0),
        )
        .build()
        .unwrap();
    let (tenant, other) = (TenantId::new(), TenantId::new());
    fx.endpoint(tenant, &receiver.url(), &["*"]).await;

    dispatcher.dispatch(order(tenant, 1)).await.unwrap();
    dispatcher.wait_idle().await;
    assert_eq!(receiver.requests().len(), 3);
    let dead = fx.store.dead_letters(tenant).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].attempts, 3);
    assert_eq!(dead[0].reason, "no success after 3 attempts");
    let webhook_id = dead[0].webhook_id.clone();

    // Another tenant cannot redrive it.
    assert!(matches!(
        dispatcher.redrive(other, &webhook_id).await,
        Err(WebhookError::NotFound { .. })
    ));
    dispatcher.redrive(tenant, &webhook_id).await.unwrap();
    dispatcher.wait_idle().await;
    let requests = receiver.requests();
    assert_eq!(requests.len(), 4);
    assert_eq!(requests[3].headers["webhook-id"], webhook_id.as_str());
    assert!(fx.store.dead_letters(tenant).await.unwrap().is_empty());
    assert!(matches!(
        dispatcher.redrive(tenant, &webhook_id).await,
        Err(WebhookError::NotFound { .. })
    ));
}

#[tokio::test]
async fn the_delivery_log_records_every_attempt_per_tenant() {
    let fx = Fixture::new();
    let receiver = Receiver::start().await;
    receiver.answer_with([502]);
    let dispatcher = fx.builder().build().unwrap();
    let (a, b) = (TenantId::new(), TenantId::new());
    let endpoint_a = fx.endpoint(a, &receiver.url(), &["order.placed"]).await;
    let endpoint_b = fx.endpoint(b, &receiver.url(), &["invoice.*"]).await;

    let event = order(a, 5);
    dispatcher.dispatch(event.clone()).await.unwrap();
    // Not for B's filter, nor A's: no attempt at all.
    let invoice = Event::new(a, "invoice.paid", "/billing", &json!({})).unwrap();
    assert_eq!(dispatcher.dispatch(Arc::new(invoice)).await.unwrap(), 0);
    dispatcher.wait_idle().await;

    let log = fx.store.delivery_log(a, None).await.unwrap();
    assert_eq!(log.len(), 2);
    let webhook_id = receiver.requests()[0].headers["webhook-id"]
        .to_str()
        .unwrap()
        .to_owned();
    for (entry, (attempt, status)) in log.iter().zip([(1, 502), (2, 200)]) {
        assert_eq!(entry.endpoint, endpoint_a.id());
        assert_eq!(entry.event_id, event.id());
        assert_eq!(entry.event_type, "order.placed");
        assert_eq!(entry.webhook_id, webhook_id);
        assert_eq!((entry.attempt, entry.status), (attempt, Some(status)));
        assert_eq!(entry.error, None);
    }
    assert_eq!(log[0].at, start_time());
    assert_eq!(log[1].at, start_time() + chrono::Duration::seconds(5));
    assert!(fx.store.delivery_log(b, None).await.unwrap().is_empty());
    assert!(
        fx.store
            .delivery_log(b, Some(endpoint_b.id()))
            .await
            .unwrap()
            .is_empty()
    );
}

#[cfg(feature = "webhooks-tls")]
#[tokio::test]
async fn an_https_endpoint_is_never_sent_plaintext() {
    let fx = Fixture::new();
    // A plain-HTTP receiver behind an https URL: the TLS handshake fails,
    // so the request (and its signed body) never reaches the handler.
    let receiver = Receiver::start().await;
    let dispatcher = fx
        .builder()
        .schedule(RetrySchedule::new([Duration::from_secs(1)]).with_jitter(0.0))
        .build()
        .unwrap();
    let tenant = TenantId::new();
    let url = format!("https://127.0.0.1:{}/hook", receiver.port());
    let endpoint = fx.endpoint(tenant, &url, &["*"]).await;
    dispatcher.check_endpoint(&endpoint).await.unwrap();

    dispatcher.dispatch(order(tenant, 1)).await.unwrap();
    dispatcher.wait_idle().await;
    assert!(receiver.requests().is_empty());
    let log = fx.store.delivery_log(tenant, None).await.unwrap();
    assert_eq!(
        log.len(),
        2,
        "a failed handshake is retried like any failure"
    );
    assert!(log.iter().all(|a| a.status.is_none() && a.error.is_some()));
    assert_eq!(fx.timer.delays(), [Duration::from_secs(1)]);
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let fx = Fixture::new();
    let (redirecting, elsewhere) = (Receiver::start().await, Receiver::start().await);
    // A redirect could point anywhere (the metadata service, say); it is
    // a failed attempt, and the target never hears from us.
    redirecting.answer_with([307, 302]);
    redirecting.redirect_to(&elsewhere.url());
    let dispatcher = fx
        .builder()
        .schedule(RetrySchedule::new([Duration::from_secs(1)]).with_jitter(0.0))
        .build()
        .unwrap();
    let tenant = TenantId::new();
    fx.endpoint(tenant, &redirecting.url(), &["*"]).await;

    dispatcher.dispatch(order(tenant, 1)).await.unwrap();
    dispatcher.wait_idle().await;
    assert_eq!(redirecting.requests().len(), 2);
    assert!(elsewhere.requests().is_empty());
    let statuses: Vec<_> = fx
        .store
        .delivery_log(tenant, None)
        .await
        .unwrap()
        .iter()
        .map(|a| (a.status, a.delivered))
        .collect();
    assert_eq!(statuses, [(Some(307), false), (Some(302), false)]);
    assert_eq!(fx.store.dead_letters(tenant).await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_request_that_times_out_is_a_failed_attempt() {
    let fx = Fixture::new();
    let receiver = Receiver::start().await;
    receiver.hold();
    let dispatcher = fx
        .builder()
        .request_timeout(Duration::from_millis(100))
        .schedule(RetrySchedule::new([Duration::from_secs(1)]).with_jitter(0.0))
        .build()
        .unwrap();
    let tenant = TenantId::new();
    fx.endpoint(tenant, &receiver.url(), &["*"]).await;

    dispatcher.dispatch(order(tenant, 1)).await.unwrap();
    dispatcher.wait_idle().await;
    // Both attempts reached the receiver and were cut off unanswered.
    assert_eq!(receiver.requests().len(), 2);
    let log = fx.store.delivery_log(tenant, None).await.unwrap();
    assert_eq!(log.len(), 2);
    assert!(
        log.iter().all(|a| a.status.is_none() && !a.delivered),
        "{log:?}"
    );
    assert!(
        log[0].error.as_deref().unwrap().contains("timed out"),
        "{log:?}"
    );
    assert_eq!(fx.store.dead_letters(tenant).await.unwrap()[0].attempts, 2);
    receiver.release();
}
