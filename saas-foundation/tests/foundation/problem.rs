//! Every crate's error as problem+json, by its kind.

use axum::body::to_bytes;
use axum::response::IntoResponse;
use http::StatusCode;
use saas_core::ErrorKind;
use saas_foundation::problem::{PROBLEM_JSON, Problem};
use serde_json::Value;

async fn body(problem: Problem) -> (StatusCode, String, Value) {
    let response = problem.into_response();
    let status = response.status();
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    let bytes = to_bytes(response.into_body(), 1 << 16).await.unwrap();
    (
        status,
        content_type,
        serde_json::from_slice(&bytes).unwrap(),
    )
}

#[tokio::test]
async fn each_crates_error_gets_the_status_of_its_kind() {
    let cases: Vec<(Problem, StatusCode, &str)> = vec![
        (
            saas_tenancy::TenancyError::InvalidInput("slug is empty".into()).into(),
            StatusCode::BAD_REQUEST,
            "invalid_input",
        ),
        (
            saas_billing::BillingError::InvalidInput {
                field: "amount",
                reason: "is negative".into(),
            }
            .into(),
            StatusCode::BAD_REQUEST,
            "invalid_input",
        ),
        (
            saas_events::EventError::Timeout {
                after: std::time::Duration::from_secs(1),
            }
            .into(),
            StatusCode::GATEWAY_TIMEOUT,
            "timeout",
        ),
        (
            saas_core::TenantSlug::parse("").unwrap_err().into(),
            StatusCode::BAD_REQUEST,
            "invalid_input",
        ),
        (
            Problem::new(ErrorKind::Conflict, "changed meanwhile"),
            StatusCode::CONFLICT,
            "conflict",
        ),
    ];
    for (problem, status, code) in cases {
        let (got, content_type, json) = body(problem).await;
        assert_eq!(got, status);
        assert_eq!(content_type, PROBLEM_JSON);
        assert_eq!(json["status"], status.as_u16());
        assert_eq!(json["code"], code);
        assert_eq!(json["type"], "about:blank");
        assert_eq!(json["title"], status.canonical_reason().unwrap());
    }
}

#[tokio::test]
async fn client_errors_explain_and_server_errors_hide_their_cause() {
    let error = saas_billing::BillingError::InvalidInput {
        field: "amount",
        reason: "is negative".into(),
    };
    let (_, _, json) = body(Problem::from_error(&error)).await;
    assert_eq!(json["detail"], error.to_string());

    // A database error would name hosts and tables: the client is told
    // only that something failed, and to retry.
    let secret = "connection to db-primary.internal:5432 refused";
    let error = saas_core::Error::new(ErrorKind::Unavailable, secret);
    let problem = Problem::from_error(&error);
    assert_eq!(problem.status(), StatusCode::SERVICE_UNAVAILABLE);
    let response = problem.into_response();
    assert_eq!(response.headers()["retry-after"], "1");
    let bytes = to_bytes(response.into_body(), 1 << 16).await.unwrap();
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    assert!(!text.contains("db-primary"), "{text}");
}
