//! `Host`: the stack from the settings, the app started on it and served
//! until the shutdown signal, everything stopped after — and on a failed
//! start, what was started is stopped too.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use axum::Router;
use axum::routing::get;
use saas_foundation::config::Settings;
use saas_foundation::host::{App, BoxError, Host, HostError};
use saas_foundation::services::Services;
use saas_foundation::stack::{Stack, StackBackend};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

type Log = Arc<Mutex<Vec<String>>>;

/// Answers `GET /` with where its data is; registers a service that logs
/// its stop; fails to start when told to.
struct Probe {
    log: Log,
    fail: bool,
}

#[async_trait]
impl<T: StackBackend> App<T> for Probe {
    async fn start(&self, stack: Stack<T>, services: &mut Services) -> Result<Router, BoxError> {
        let log = Arc::clone(&self.log);
        services.on_stop("probe", move || async move {
            log.lock().unwrap().push("stopped".to_owned());
        });
        if self.fail {
            return Err("the price list is invalid".into());
        }
        let storage = stack.describe();
        Ok(Router::new().route("/", get(move || async move { storage })))
    }
}

fn settings(dir: &std::path::Path) -> Settings {
    Settings::from_prefix("HOST_TEST")
        .default_data_dir(dir)
        .default_listen(SocketAddr::from(([127, 0, 0, 1], 0)))
        .read(|_| None)
        .unwrap()
}

async fn get_root(addr: SocketAddr) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_serves_the_app_on_sqlite_and_stops_its_services() {
    let dir = std::env::temp_dir().join(saas_test_support::unique_name("saas_host"));
    let log: Log = Arc::default();
    let (bound, listening) = tokio::sync::oneshot::channel();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let host = Host::new(settings(&dir)).on_listening(move |addr, storage| {
        bound.send((addr, storage.to_owned())).unwrap();
    });
    let app = Probe {
        log: Arc::clone(&log),
        fail: false,
    };
    let serving = tokio::spawn(host.serve_until(app, async move {
        let _ = stopped.await;
    }));
    let (addr, storage) = listening.await.unwrap();
    assert_ne!(addr.port(), 0, "the bound port is reported");
    assert!(storage.contains("SQLite"), "{storage}");
    let response = get_root(addr).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains(&dir.display().to_string()), "{response}");
    assert!(dir.join("catalog.sqlite").exists(), "the stack was opened");
    assert!(log.lock().unwrap().is_empty(), "stopped while serving");

    stop.send(()).unwrap();
    serving.await.unwrap().unwrap();
    assert_eq!(*log.lock().unwrap(), ["stopped"]);
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "still listening"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn a_failed_start_stops_what_was_started_and_says_why() {
    let dir = std::env::temp_dir().join(saas_test_support::unique_name("saas_host"));
    let log: Log = Arc::default();
    let app = Probe {
        log: Arc::clone(&log),
        fail: true,
    };
    let error = Host::new(settings(&dir))
        .serve_until(app, std::future::pending())
        .await
        .unwrap_err();
    assert!(matches!(error, HostError::App(_)), "{error:?}");
    assert!(error.to_string().contains("price list"), "{error}");
    assert_eq!(*log.lock().unwrap(), ["stopped"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn a_database_url_sqlx_cannot_read_is_a_stack_error() {
    let settings = Settings::from_prefix("HOST_TEST")
        .read(|name| {
            (name == "HOST_TEST_DATABASE_URL")
                .then(|| "postgres://nobody@127.0.0.1:not-a-port/none".to_owned())
        })
        .unwrap();
    let app = Probe {
        log: Log::default(),
        fail: false,
    };
    let error = Host::new(settings)
        .serve_until(app, std::future::pending())
        .await
        .unwrap_err();
    assert!(matches!(error, HostError::Stack(_)), "{error:?}");
}
