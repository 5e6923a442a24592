//! Traces over OTLP/HTTP: with `NOTES_OTLP_ENDPOINT` set, the app's spans
//! reach that endpoint (a collector stand-in that takes each POST).

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpListener;

use super::{App, Client, unique_name};

/// The request line and content type of every request received.
type Received = Arc<Mutex<Vec<(String, String)>>>;

/// Takes HTTP/1.1 requests on `listener`, answers each 200 and records it.
async fn collector(listener: TcpListener, received: Received) {
    while let Ok((stream, _)) = listener.accept().await {
        let received = Arc::clone(&received);
        tokio::spawn(async move {
            let mut stream = BufReader::new(stream);
            loop {
                let mut request_line = String::new();
                if stream.read_line(&mut request_line).await.unwrap_or(0) == 0 {
                    return;
                }
                let (mut length, mut content_type) = (0usize, String::new());
                loop {
                    let mut header = String::new();
                    stream.read_line(&mut header).await.unwrap();
                    let header = header.trim_end();
                    if header.is_empty() {
                        break;
                    }
                    let (name, value) = header.split_once(':').unwrap_or((header, ""));
                    match name.to_ascii_lowercase().as_str() {
                        "content-length" => length = value.trim().parse().unwrap(),
                        "content-type" => content_type = value.trim().to_owned(),
                        _ => {}
                    }
                }
                let mut body = vec![0; length];
                stream.read_exact(&mut body).await.unwrap();
                let line = request_line.trim_end().to_owned();
                received.lock().unwrap().push((line, content_type));
                let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
                stream.get_mut().write_all(ok).await.unwrap();
            }
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_the_otlp_endpoint_when_one_is_set() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}/v1/traces", listener.local_addr().unwrap());
    let received = Received::default();
    tokio::spawn(collector(listener, Arc::clone(&received)));
    let dir = std::env::temp_dir().join(unique_name("notes_otlp"));
    let dir_text = dir.to_string_lossy().into_owned();
    let app = App::start(
        env!("CARGO_BIN_EXE_notes-database"),
        &[
            ("NOTES_DATA_DIR", &dir_text),
            ("NOTES_OTLP_ENDPOINT", &endpoint),
        ],
    );
    let http = reqwest::Client::new();
    let acme = Client::sign_up(&http, &app.base, "acme", "free").await;
    let (status, _) = acme.get("/projects").await;
    assert_eq!(status, reqwest::StatusCode::OK);
    // Ctrl-C flushes the last batch before the process ends.
    tokio::task::spawn_blocking(move || app.interrupt())
        .await
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let received = received.lock().unwrap().clone();
    assert!(
        received
            .iter()
            .any(|(line, kind)| line.starts_with("POST /v1/traces ")
                && kind == "application/x-protobuf"),
        "no OTLP export among {received:?}"
    );
}
