//! `kill -9` under load: the notes server dies while clients create notes
//! concurrently; after a restart and the relay's catch-up every committed
//! change has exactly one audit entry (the outbox keeps each event until
//! the in-process audit writer has acknowledged it).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use saas_test_support::{Service, service_url, unique_name};
use serde_json::json;

use super::{App, Client, Scratch};

const TENANTS: usize = 4;
const WRITERS: usize = 16;
/// A fixed secret, so tokens issued before the crash work after it.
const SECRET: &str = "crash-test-secret-at-least-32-bytes-long";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row_app_loses_no_audit_entry_to_sigkill() {
    let Some(url) = service_url(Service::Postgres, "row_app_loses_no_audit_entry_to_sigkill")
    else {
        return;
    };
    let scratch = Scratch::new(&url).await;
    let env = [
        ("NOTES_DATABASE_URL", scratch.url.as_str()),
        ("NOTES_RUNTIME_ROLE", scratch.role.as_str()),
        ("NOTES_JWT_SECRET", SECRET),
    ];
    let result = tokio::spawn(survives_sigkill(
        env!("CARGO_BIN_EXE_notes-row"),
        owned(&env),
    ))
    .await;
    scratch.drop_all().await;
    if let Err(e) = result {
        std::panic::resume_unwind(e.into_panic());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_app_loses_no_audit_entry_to_sigkill() {
    let dir = std::env::temp_dir().join(unique_name("notes_crash"));
    let dir_text = dir.to_string_lossy().into_owned();
    let env = [
        ("NOTES_DATA_DIR", dir_text.as_str()),
        ("NOTES_JWT_SECRET", SECRET),
    ];
    let result = tokio::spawn(survives_sigkill(
        env!("CARGO_BIN_EXE_notes-database"),
        owned(&env),
    ))
    .await;
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(e) = result {
        std::panic::resume_unwind(e.into_panic());
    }
}

fn owned(env: &[(&str, &str)]) -> Vec<(String, String)> {
    env.iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn start(binary: &str, env: &[(String, String)]) -> App {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    App::start(binary, &env)
}

async fn survives_sigkill(binary: &'static str, env: Vec<(String, String)>) {
    let app = start(binary, &env);
    let http = reqwest::Client::new();
    let mut tenants = Vec::new();
    for n in 0..TENANTS {
        let client = Client::sign_up(&http, &app.base, &format!("crash{n}"), "pro").await;
        let (status, project) = client.post("/projects", json!({ "name": "log" })).await;
        assert_eq!(status, StatusCode::CREATED);
        let project = project["id"].as_str().unwrap().to_owned();
        tenants.push((client, project));
    }
    let tenants = Arc::new(tenants);

    // Writers add notes (and read a list now and then) until the server
    // is gone.
    let created = Arc::new(AtomicUsize::new(0));
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let tenants = Arc::clone(&tenants);
        let created = Arc::clone(&created);
        writers.push(tokio::spawn(async move {
            for i in 0.. {
                let (client, project) = &tenants[(w + i) % TENANTS];
                let path = format!("/projects/{project}/notes");
                let request = if i % 4 == 3 {
                    client.request(reqwest::Method::GET, &path, &client.slug)
                } else {
                    client
                        .request(reqwest::Method::POST, &path, &client.slug)
                        .json(&json!({ "body": format!("note {w}/{i}") }))
                };
                match request.send().await {
                    Ok(response) if response.status() == StatusCode::CREATED => {
                        created.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(response) => assert!(
                        response.status().is_success(),
                        "unexpected {}",
                        response.status()
                    ),
                    Err(_) => return, // the server was killed
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    tokio::task::spawn_blocking(move || app.kill())
        .await
        .unwrap();
    for writer in writers {
        writer.await.unwrap();
    }
    let acknowledged = created.load(Ordering::Relaxed);
    assert!(acknowledged > 0, "the load created nothing before the kill");

    let app = start(binary, &env);
    let mut committed_notes = 0;
    for (before, project) in tenants.iter() {
        let client = Client {
            http: http.clone(),
            base: app.base.clone(),
            slug: before.slug.clone(),
            token: before.token.clone(),
        };
        let committed = committed_changes(&client, project).await;
        committed_notes += committed.len() - 1;
        let audited = audited_once(&client, &committed).await;
        let missing: Vec<&String> = committed.difference(&audited).collect();
        let extra: Vec<&String> = audited.difference(&committed).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "{}: {} of {} committed changes have no audit entry ({missing:?}); \
             audited but not committed: {extra:?}",
            client.slug,
            missing.len(),
            committed.len()
        );
    }
    assert!(
        committed_notes >= acknowledged,
        "{acknowledged} notes were acknowledged but only {committed_notes} are stored"
    );
    println!("{committed_notes} notes committed ({acknowledged} acknowledged before the kill)");
    tokio::task::spawn_blocking(move || app.interrupt())
        .await
        .unwrap();
}

/// The subjects of the tenant's project and of its notes.
async fn committed_changes(client: &Client, project: &str) -> BTreeSet<String> {
    let (status, body) = client.get(&format!("/projects/{project}/notes")).await;
    assert_eq!(status, StatusCode::OK);
    let mut subjects: BTreeSet<String> = body["notes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| format!("notes/{}", n["id"].as_str().unwrap()))
        .collect();
    subjects.insert(format!("projects/{project}"));
    subjects
}

/// The audited subjects once the relay has caught up with `committed`
/// (or after 30 s), each checked to appear once.
async fn audited_once(client: &Client, committed: &BTreeSet<String>) -> BTreeSet<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = client.get("/audit").await;
        assert_eq!(status, StatusCode::OK);
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for entry in body["events"].as_array().unwrap() {
            let subject = entry["subject"].as_str().unwrap_or_default().to_owned();
            *counts.entry(subject).or_default() += 1;
        }
        let twice: Vec<&String> = counts
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(s, _)| s)
            .collect();
        assert!(twice.is_empty(), "audited more than once: {twice:?}");
        let audited: BTreeSet<String> = counts.into_keys().collect();
        if audited.is_superset(committed) || Instant::now() > deadline {
            return audited;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
