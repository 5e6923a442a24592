//! One request to an endpoint: the address checked, the headers signed,
//! the answer classified.

use bytes::Bytes;
use saas_core::SharedClock;

use super::WebhookError;
use super::endpoint::WebhookEndpoint;
use super::signature::{WEBHOOK_ID, WEBHOOK_SIGNATURE, WEBHOOK_TIMESTAMP, signature_header};
use super::ssrf::CheckedResolver;

/// What sends a request: the client and what it needs besides.
pub(super) struct Sender<'a> {
    pub(super) client: &'a reqwest::Client,
    pub(super) resolver: &'a CheckedResolver,
    pub(super) clock: &'a SharedClock,
}

/// What one attempt came to.
pub(super) enum Outcome {
    Delivered(u16),
    /// `410 Gone`: disable the endpoint, no retry.
    Gone,
    /// The SSRF policy refused, or the URL cannot be served by this
    /// build: no retry (it would fail the same way).
    Refused(WebhookError),
    /// Anything else: retry.
    Failed {
        status: Option<u16>,
        error: Option<String>,
    },
}

impl Sender<'_> {
    /// One request: the address checked, the headers signed, the answer
    /// classified.
    pub(super) async fn send(
        &self,
        endpoint: &WebhookEndpoint,
        webhook_id: &str,
        body: &Bytes,
    ) -> Outcome {
        let url = endpoint.url();
        if let Err(error) = scheme_supported(url) {
            return Outcome::Refused(error);
        }
        let host = url.host_str().unwrap_or_default();
        let port = url.port_or_known_default().unwrap_or(80);
        // Checked here for a typed refusal before any connection; the
        // client's resolver checks again what it connects to.
        match self.resolver.resolve_checked(host, port).await {
            Ok(_) => {}
            Err(error @ WebhookError::Forbidden { .. }) => return Outcome::Refused(error),
            Err(error) => {
                return Outcome::Failed {
                    status: None,
                    error: Some(error.to_string()),
                };
            }
        }
        let timestamp = self.clock.now().timestamp();
        let signature = signature_header(endpoint.secrets(), webhook_id, timestamp, body);
        let request = self
            .client
            .post(url.clone())
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(WEBHOOK_ID, webhook_id)
            .header(WEBHOOK_TIMESTAMP, timestamp.to_string())
            .header(WEBHOOK_SIGNATURE, signature)
            .body(body.clone());
        match request.send().await {
            Ok(response) => {
                let status = response.status();
                match status.as_u16() {
                    200..=299 => Outcome::Delivered(status.as_u16()),
                    410 => Outcome::Gone,
                    code => Outcome::Failed {
                        status: Some(code),
                        error: None,
                    },
                }
            }
            Err(error) => match forbidden_in(&error) {
                Some(refusal) => Outcome::Refused(refusal),
                None => Outcome::Failed {
                    status: None,
                    error: Some(error_chain(&error)),
                },
            },
        }
    }
}

/// Refuses `https` in a build without TLS, for good rather than retrying
/// for a day.
pub(super) fn scheme_supported(url: &reqwest::Url) -> Result<(), WebhookError> {
    if url.scheme() == "https" && !cfg!(feature = "webhooks-tls") {
        return Err(WebhookError::InvalidUrl {
            url: url.to_string(),
            reason: "https endpoints need the `webhooks-tls` feature",
        });
    }
    Ok(())
}

/// The resolver's refusal inside a client error, if that is what it is
/// (a name that resolved differently for the client than for the check).
fn forbidden_in(error: &reqwest::Error) -> Option<WebhookError> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = source {
        if let Some(WebhookError::Forbidden {
            host,
            address,
            reason,
        }) = current.downcast_ref()
        {
            return Some(WebhookError::Forbidden {
                host: host.clone(),
                address: *address,
                reason,
            });
        }
        source = current.source();
    }
    None
}

/// The error and its causes on one line (reqwest's own text is terse).
fn error_chain(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
