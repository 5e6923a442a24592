//! Test helpers shared by the workspace's test suites.
//!
//! Service-backed tests ask for their service with [`service_url`]:
//!
//! - variable set (`SAAS_TEST_POSTGRES_URL`, …): the URL is returned;
//! - variable unset: one line saying what is skipped is printed and `None`
//!   is returned, so the test returns early;
//! - variable unset and `SAAS_TEST_REQUIRE_SERVICES=1`: the test panics, so
//!   CI can never pass by skipping.

use std::fmt;
use std::io::Write as _;

/// Set to `1` to turn a missing service into a test failure.
pub const REQUIRE_SERVICES_VAR: &str = "SAAS_TEST_REQUIRE_SERVICES";

/// An external service a test may need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// PostgreSQL (`SAAS_TEST_POSTGRES_URL`).
    Postgres,
    /// A second PostgreSQL server (`SAAS_TEST_POSTGRES2_URL`).
    Postgres2,
    /// NATS with JetStream (`SAAS_TEST_NATS_URL`).
    Nats,
    /// Redis (`SAAS_TEST_REDIS_URL`).
    Redis,
    /// RabbitMQ (`SAAS_TEST_RABBITMQ_URL`, e.g.
    /// `amqp://guest:guest@127.0.0.1:5672/%2f`).
    RabbitMq,
    /// PgBouncer in transaction pooling in front of the first PostgreSQL
    /// server (`SAAS_TEST_PGBOUNCER_URL`, e.g.
    /// `postgres://postgres@127.0.0.1:6432/test`; `.ci/run` starts it).
    PgBouncer,
}

impl Service {
    /// The environment variable holding the service URL.
    pub fn env_var(self) -> &'static str {
        match self {
            Service::Postgres => "SAAS_TEST_POSTGRES_URL",
            Service::Postgres2 => "SAAS_TEST_POSTGRES2_URL",
            Service::Nats => "SAAS_TEST_NATS_URL",
            Service::Redis => "SAAS_TEST_REDIS_URL",
            Service::RabbitMq => "SAAS_TEST_RABBITMQ_URL",
            Service::PgBouncer => "SAAS_TEST_PGBOUNCER_URL",
        }
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Service::Postgres => "PostgreSQL",
            Service::Postgres2 => "second PostgreSQL server",
            Service::Nats => "NATS",
            Service::Redis => "Redis",
            Service::RabbitMq => "RabbitMQ",
            Service::PgBouncer => "PgBouncer (transaction pooling)",
        })
    }
}

/// What to do about a service, decided from the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Availability {
    /// Use this URL.
    Url(String),
    /// Skip, with this message.
    Skip(String),
    /// Fail, with this message.
    Fail(String),
}

/// Pure decision from the two variables' values (kept separate so the rule
/// itself is unit-tested without touching the process environment).
pub fn decide(
    service: Service,
    url: Option<String>,
    require: Option<String>,
    test: &str,
) -> Availability {
    match url.filter(|u| !u.trim().is_empty()) {
        Some(url) => Availability::Url(url),
        None if require.as_deref() == Some("1") => Availability::Fail(format!(
            "{test}: {service} is required ({}=1) but {} is not set",
            REQUIRE_SERVICES_VAR,
            service.env_var()
        )),
        None => Availability::Skip(format!(
            "skipped {test}: set {} to run it against {service}",
            service.env_var()
        )),
    }
}

/// The URL of `service` for test `test`, or `None` after printing a skip
/// line. Panics when the service is required but not configured.
pub fn service_url(service: Service, test: &str) -> Option<String> {
    let url = std::env::var(service.env_var()).ok();
    let require = std::env::var(REQUIRE_SERVICES_VAR).ok();
    match decide(service, url, require, test) {
        Availability::Url(url) => Some(url),
        Availability::Skip(msg) => {
            // Straight to the stderr handle: the test harness captures
            // `println!`/`eprintln!` of passing tests, and a skip must be seen.
            let _ = writeln!(std::io::stderr(), "{msg}");
            None
        }
        Availability::Fail(msg) => panic!("{msg}"),
    }
}

/// Returns early from the calling test when `service` is not configured.
///
/// ```no_run
/// use saas_test_support::{Service, require_service};
///
/// fn my_postgres_test() {
///     let url = require_service!(Service::Postgres);
///     // … connect to `url` …
///     # let _ = url;
/// }
/// ```
#[macro_export]
macro_rules! require_service {
    ($service:expr) => {
        match $crate::service_url($service, module_path!()) {
            Some(url) => url,
            None => return,
        }
    };
}

/// A name unique to this process and call, for databases, schemas, streams
/// and topics that tests create (lowercase letters, digits, underscores).
pub fn unique_name(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::{SystemTime, UNIX_EPOCH};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{prefix}_{}_{nanos:x}_{n}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_url_is_used() {
        let got = decide(Service::Postgres, Some("postgres://x".into()), None, "t");
        assert_eq!(got, Availability::Url("postgres://x".into()));
    }

    #[test]
    fn unset_url_skips_unless_required() {
        assert!(matches!(
            decide(Service::Nats, None, None, "t"),
            Availability::Skip(m) if m.contains("SAAS_TEST_NATS_URL")
        ));
        assert!(matches!(
            decide(Service::Nats, Some("  ".into()), Some("0".into()), "t"),
            Availability::Skip(_)
        ));
        assert!(matches!(
            decide(Service::Redis, None, Some("1".into()), "t"),
            Availability::Fail(m) if m.contains("SAAS_TEST_REDIS_URL")
        ));
        assert!(matches!(
            decide(Service::PgBouncer, None, Some("1".into()), "t"),
            Availability::Fail(m) if m.contains("SAAS_TEST_PGBOUNCER_URL")
        ));
    }

    #[test]
    fn unique_names_differ() {
        assert_ne!(unique_name("t"), unique_name("t"));
        assert!(unique_name("db").starts_with("db_"));
    }
}
