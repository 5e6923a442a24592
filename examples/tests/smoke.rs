//! Smoke tests: each notes API binary runs as a real process against the
//! real PostgreSQL, driven over HTTP like a user would, then stopped with
//! Ctrl-C (SIGINT).

// Tests fail loudly on unexpected errors; unwrap is the point here.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use saas_test_support::{Service, service_url, unique_name};
use serde_json::{Value, json};
use sqlx::postgres::{PgConnectOptions, PgPool};
use sqlx::{AssertSqlSafe, Executor};

#[path = "smoke/crash.rs"]
mod crash;
#[path = "smoke/metrics.rs"]
mod metrics;
#[path = "smoke/traces.rs"]
mod traces;

use metrics::{MOVED_EVERYWHERE, MOVED_ON_POSTGRES, MOVED_PER_DATABASE, Scrape};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row_app_serves_two_tenants_apart() {
    smoke(
        env!("CARGO_BIN_EXE_notes-row"),
        "row_app_serves_two_tenants_apart",
        &[MOVED_EVERYWHERE, MOVED_ON_POSTGRES],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_app_serves_two_tenants_apart() {
    smoke(
        env!("CARGO_BIN_EXE_notes-schema"),
        "schema_app_serves_two_tenants_apart",
        &[MOVED_EVERYWHERE, MOVED_ON_POSTGRES],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_app_serves_two_tenants_apart() {
    smoke(
        env!("CARGO_BIN_EXE_notes-database"),
        "database_app_serves_two_tenants_apart",
        &[MOVED_EVERYWHERE, MOVED_ON_POSTGRES, MOVED_PER_DATABASE],
    )
    .await;
}

/// A fresh database and runtime role for one app run, dropped afterwards
/// with every tenant schema, role and database the app created.
struct Scratch {
    server: PgPool,
    url: String,
    database: String,
    role: String,
}

impl Scratch {
    async fn new(base: &str) -> Self {
        let server = PgPool::connect(base).await.unwrap();
        let database = unique_name("notes_smoke");
        server
            .execute(AssertSqlSafe(format!("CREATE DATABASE \"{database}\"")))
            .await
            .unwrap();
        let options: PgConnectOptions = base.parse().unwrap();
        let url = format!(
            "postgres://{}@{}:{}/{database}",
            options.get_username(),
            options.get_host(),
            options.get_port()
        );
        Self {
            server,
            url,
            database,
            role: unique_name("notes_rt"),
        }
    }

    async fn drop_all(self) {
        let db = PgPool::connect(&self.url).await.unwrap();
        let tenants: Vec<(String, Option<String>)> =
            sqlx::query_as("SELECT strategy, object_name FROM saas_tenants")
                .fetch_all(&db)
                .await
                .unwrap_or_default();
        db.close().await;
        let drop = |sql: String| {
            let server = self.server.clone();
            async move {
                let _ = server.execute(AssertSqlSafe(sql)).await;
            }
        };
        drop(format!(
            "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
            self.database
        ))
        .await;
        for (strategy, name) in tenants {
            let Some(name) = name else { continue };
            match strategy.as_str() {
                "database" => {
                    drop(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")).await
                }
                "schema" => drop(format!("DROP ROLE IF EXISTS \"{name}\"")).await,
                _ => {}
            }
        }
        drop(format!("DROP ROLE IF EXISTS \"{}\"", self.role)).await;
        self.server.close().await;
    }
}

/// The app process; killed if the test fails before stopping it.
struct App {
    child: Child,
    base: String,
}

impl App {
    /// Starts `binary` with `env` on a free port.
    fn start(binary: &str, env: &[(&str, &str)]) -> Self {
        let mut child = Command::new(binary)
            .env_remove("NOTES_DATABASE_URL")
            .envs(env.iter().copied())
            .env("NOTES_LISTEN", "127.0.0.1:0")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        // The first line of the host's says where it listens (exported
        // spans may come before it on the same output).
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let listening = lines
            .by_ref()
            .map_while(Result::ok)
            .find(|line| line.contains(" listening on http://"))
            .unwrap_or_else(|| panic!("{binary} ended without saying where it listens"));
        let base = listening
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| panic!("no address in {listening:?}"))
            .to_owned();
        // Keep draining stdout so the app never blocks on a full pipe; the
        // last line must be the clean-stop message.
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                println!("app: {line}");
            }
        });
        Self { child, base }
    }

    /// Kills the process with SIGKILL, as a crash would.
    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Sends SIGINT, as Ctrl-C does, and waits for a clean exit.
    fn interrupt(mut self) {
        let pid = self.child.id().to_string();
        let status = Command::new("kill").args(["-INT", &pid]).status().unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(
                    status.success(),
                    "the app exited with {status} after Ctrl-C"
                );
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the app did not stop after Ctrl-C"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl App {
    /// Runs the scenario against the app — checking that it moved the
    /// `moved` metric series — then stops it with Ctrl-C if the scenario
    /// passed (a failed one kills it).
    async fn drive(self, moved: &[&'static [&'static str]]) -> Result<(), tokio::task::JoinError> {
        let moved: Vec<&str> = moved.iter().flat_map(|set| set.iter().copied()).collect();
        let (http, base) = (reqwest::Client::new(), self.base.clone());
        let result = tokio::spawn(async move {
            let before = Scrape::take(&http, &base).await;
            drive(http.clone(), base.clone()).await;
            let after = Scrape::take(&http, &base).await;
            metrics::assert_moved(&before, &after, &moved);
        })
        .await;
        if result.is_ok() {
            tokio::task::spawn_blocking(move || self.interrupt())
                .await
                .unwrap();
        }
        result
    }
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A signed-up tenant as a client sees it.
struct Client {
    http: reqwest::Client,
    base: String,
    slug: String,
    token: String,
}

impl Client {
    async fn sign_up(http: &reqwest::Client, base: &str, slug: &str, plan: &str) -> Self {
        let response = http
            .post(format!("{base}/signup"))
            .json(&json!({ "slug": slug, "name": slug.to_uppercase(), "plan": plan }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        let body: Value = response.json().await.unwrap();
        Self {
            http: http.clone(),
            base: base.to_owned(),
            slug: slug.to_owned(),
            token: body["token"].as_str().unwrap().to_owned(),
        }
    }

    /// A request as this tenant's user, addressed to `tenant`.
    fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        tenant: &str,
    ) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .header("x-tenant", tenant)
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        let response = self
            .request(reqwest::Method::GET, path, &self.slug)
            .send()
            .await
            .unwrap();
        (response.status(), response.json().await.unwrap())
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let response = self
            .request(reqwest::Method::POST, path, &self.slug)
            .json(&body)
            .send()
            .await
            .unwrap();
        (response.status(), response.json().await.unwrap())
    }
}

async fn smoke(binary: &str, test: &str, moved: &[&'static [&'static str]]) {
    let Some(url) = service_url(Service::Postgres, test) else {
        return;
    };
    let scratch = Scratch::new(&url).await;
    let app = App::start(
        binary,
        &[
            ("NOTES_DATABASE_URL", &scratch.url),
            ("NOTES_RUNTIME_ROLE", &scratch.role),
        ],
    );
    let result = app.drive(moved).await;
    scratch.drop_all().await;
    if let Err(e) = result {
        std::panic::resume_unwind(e.into_panic());
    }
}

/// With no `NOTES_DATABASE_URL`, `notes-database` keeps each tenant in a
/// SQLite file of its own — the same API, the same answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_app_on_sqlite_files_without_a_server() {
    let dir = std::env::temp_dir().join(unique_name("notes_sqlite"));
    let dir_text = dir.to_string_lossy().into_owned();
    let app = App::start(
        env!("CARGO_BIN_EXE_notes-database"),
        &[("NOTES_DATA_DIR", &dir_text)],
    );
    let result = app.drive(&[MOVED_EVERYWHERE, MOVED_PER_DATABASE]).await;
    let tenant_files = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().ends_with(".sqlite"))
                .count()
        })
        .unwrap_or(0);
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(e) = result {
        std::panic::resume_unwind(e.into_panic());
    }
    // catalog, billing, the (unused) shared file, and one file per tenant.
    assert_eq!(tenant_files, 5);
}

async fn drive(http: reqwest::Client, base: String) {
    let acme = Client::sign_up(&http, &base, "acme", "free").await;
    let globex = Client::sign_up(&http, &base, "globex", "pro").await;

    // The slug is taken now.
    let again = http
        .post(format!("{base}/signup"))
        .json(&json!({ "slug": "acme", "name": "Other", "plan": "free" }))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::CONFLICT);

    // The free plan allows three projects; the fourth is refused, clearly.
    let mut acme_projects = Vec::new();
    for name in ["website", "mobile app", "api"] {
        let (status, body) = acme.post("/projects", json!({ "name": name })).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        acme_projects.push(body["id"].as_str().unwrap().to_owned());
    }
    let (status, body) = acme
        .post("/projects", json!({ "name": "one too many" }))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["code"], "plan_limit");
    assert_eq!(body["status"], 403);
    assert_eq!(
        body["detail"],
        "the free plan allows 3 projects; upgrade to pro for more"
    );
    let (status, body) = globex
        .post("/projects", json!({ "name": "secret plans" }))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let globex_project = body["id"].as_str().unwrap().to_owned();
    let (status, _) = acme
        .post(
            &format!("/projects/{}/notes", acme_projects[0]),
            json!({ "body": "launch" }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);

    // Each tenant sees its own data only; another tenant's ids are 404.
    let (_, body) = acme.get("/projects").await;
    let names: Vec<&str> = body["projects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["website", "mobile app", "api"]);
    let (_, body) = globex.get("/projects").await;
    assert_eq!(body["projects"].as_array().unwrap().len(), 1);
    let (status, _) = acme.get(&format!("/projects/{globex_project}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = acme.get(&format!("/projects/{globex_project}/notes")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = acme
        .post(
            &format!("/projects/{globex_project}/notes"),
            json!({ "body": "x" }),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = globex.get(&format!("/projects/{}", acme_projects[0])).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // acme's token addressed to globex is refused before any data access.
    let forged = acme
        .request(reqwest::Method::GET, "/projects", "globex")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    // No token, no data.
    let anonymous = http
        .get(format!("{base}/projects"))
        .header("x-tenant", "acme")
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);

    // The invoice reads back: the plan's base charge and the metered calls.
    // acme has made 10 authenticated calls by now, counting this one: five
    // writes (the refused one too), four reads, the invoice. The calls
    // refused before authentication are not metered.
    let (status, invoice) = acme.get("/invoice").await;
    assert_eq!(status, StatusCode::OK, "{invoice}");
    assert_eq!(invoice["total"]["amount"], "0.00");
    let calls = invoice["lines"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["description"] == "API calls")
        .unwrap_or_else(|| panic!("no API calls line in {invoice}"));
    assert_eq!(calls["quantity"], "10");
    let (_, invoice) = globex.get("/invoice").await;
    assert_eq!(invoice["total"]["amount"], "49.00");

    // The audit log, fed through the outbox, holds each tenant's own events.
    let expected_acme = [
        "com.example.notes.project.created",
        "com.example.notes.project.created",
        "com.example.notes.project.created",
        "com.example.notes.note.added",
    ];
    let acme_events = audit_events(&acme, expected_acme.len()).await;
    assert_eq!(acme_events, expected_acme);
    let globex_events = audit_events(&globex, 1).await;
    assert_eq!(globex_events, ["com.example.notes.project.created"]);
}

/// The tenant's audit event types once `count` have arrived (the relay
/// delivers asynchronously), failing after ten seconds.
async fn audit_events(client: &Client, count: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = client.get("/audit").await;
        assert_eq!(status, StatusCode::OK);
        let events: Vec<String> = body["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["type"].as_str().unwrap().to_owned())
            .collect();
        if events.len() >= count || Instant::now() > deadline {
            return events;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The quickstart (an example, which `cargo test` builds next to this
/// test's binary) runs with no server and reports what the README says.
#[test]
fn quickstart_runs_and_reports() {
    let deps = std::env::current_exe().unwrap();
    let debug = deps.parent().and_then(|d| d.parent()).unwrap();
    let binary = debug
        .join("examples")
        .join(format!("quickstart{}", std::env::consts::EXE_SUFFIX));
    assert!(binary.exists(), "{} was not built", binary.display());
    let output = Command::new(binary).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "quickstart failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for expected in [
        "project \"data pipeline\" refused: the free plan allows 3 projects",
        "acme: 54.00 USD (Finalized)",
        "API calls                                5.00 USD",
        "-- audit log (10 events)",
    ] {
        assert!(
            stdout.contains(expected),
            "{expected:?} missing from:\n{stdout}"
        );
    }
}
