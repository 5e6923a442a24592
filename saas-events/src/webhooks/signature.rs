//! Standard Webhooks signatures: signing for senders, verifying for
//! receivers.

use std::fmt;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use http::HeaderMap;
use sha2::Sha256;

use super::WebhookError;

/// The header carrying the message id (the same on every retry).
pub const WEBHOOK_ID: &str = "webhook-id";
/// The header carrying the send time, in Unix seconds.
pub const WEBHOOK_TIMESTAMP: &str = "webhook-timestamp";
/// The header carrying the space-separated `v1,<base64>` signatures.
pub const WEBHOOK_SIGNATURE: &str = "webhook-signature";

/// The prefix of a secret's text form.
const SECRET_PREFIX: &str = "whsec_";
/// Secrets shorter than this are refused: the specification asks for
/// 24 to 64 random bytes.
const MIN_SECRET_BYTES: usize = 24;
const MAX_SECRET_BYTES: usize = 64;

/// A symmetric signing secret, written `whsec_<base64>` as in Standard
/// Webhooks. Its `Debug` shows no key material.
///
/// ```
/// use saas_events::webhooks::WebhookSecret;
///
/// let secret = WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")?;
/// assert_eq!(
///     secret.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, br#"{"test": 2432232314}"#),
///     "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
/// );
/// assert!(!format!("{secret:?}").contains("MfKQ"));
/// # Ok::<(), saas_events::webhooks::WebhookError>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret {
    key: Vec<u8>,
}

impl WebhookSecret {
    /// Reads `whsec_<base64>` (the prefix is optional, as the
    /// specification's libraries accept).
    ///
    /// # Errors
    /// [`WebhookError::InvalidSecret`] for text that is not base64 or
    /// whose key is not 24 to 64 bytes.
    pub fn parse(text: &str) -> Result<Self, WebhookError> {
        let encoded = text.strip_prefix(SECRET_PREFIX).unwrap_or(text);
        let key = STANDARD
            .decode(encoded)
            .map_err(|_| WebhookError::InvalidSecret {
                reason: "not base64",
            })?;
        Self::from_bytes(key)
    }

    /// A secret from raw key bytes.
    ///
    /// # Errors
    /// [`WebhookError::InvalidSecret`] unless 24 to 64 bytes long.
    pub fn from_bytes(key: Vec<u8>) -> Result<Self, WebhookError> {
        if !(MIN_SECRET_BYTES..=MAX_SECRET_BYTES).contains(&key.len()) {
            return Err(WebhookError::InvalidSecret {
                reason: "a secret must be 24 to 64 bytes",
            });
        }
        Ok(Self { key })
    }

    /// A fresh random 32-byte secret from the operating system's random
    /// source.
    ///
    /// # Errors
    /// [`WebhookError::Random`] if the operating system has no randomness
    /// to give (a broken sandbox); there is no safe fallback for a key.
    pub fn generate() -> Result<Self, WebhookError> {
        let mut key = vec![0u8; 32];
        getrandom::fill(&mut key).map_err(|error| WebhookError::Random {
            reason: error.to_string(),
        })?;
        Ok(Self { key })
    }

    /// The `whsec_<base64>` text form, to show the tenant once.
    pub fn expose(&self) -> String {
        format!("{SECRET_PREFIX}{}", STANDARD.encode(&self.key))
    }

    /// The signature `v1,<base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}"))>`.
    pub fn sign(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
        format!(
            "v1,{}",
            STANDARD.encode(self.mac(msg_id, timestamp, body).finalize().into_bytes())
        )
    }

    /// The keyed HMAC over `{id}.{timestamp}.{body}`, not yet finalized.
    fn mac(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> Hmac<Sha256> {
        // HMAC takes keys of any length, and `from_bytes` bounds ours.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC accepts keys of every length"));
        mac.update(msg_id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }

    /// Whether `signature` (decoded, without `v1,`) is this secret's, in
    /// constant time.
    fn matches(&self, msg_id: &str, timestamp: i64, body: &[u8], signature: &[u8]) -> bool {
        self.mac(msg_id, timestamp, body)
            .verify_slice(signature)
            .is_ok()
    }
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookSecret(<redacted>)")
    }
}

/// The `webhook-signature` value for `secrets`: one `v1,` signature per
/// secret, space-separated, so a receiver holding either the new or the
/// old secret during a rotation accepts the message.
pub fn signature_header<'a>(
    secrets: impl IntoIterator<Item = &'a WebhookSecret>,
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
) -> String {
    secrets
        .into_iter()
        .map(|secret| secret.sign(msg_id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Verifies a received webhook, as a receiver does: the three headers are
/// present, the timestamp is within `tolerance` of `now` (against
/// replays), and one of the `v1` signatures is `secret`'s over
/// `{id}.{timestamp}.{body}` (compared in constant time). Returns the
/// message id, for deduplication.
///
/// ```
/// use std::time::Duration;
/// use chrono::{TimeZone, Utc};
/// use http::{HeaderMap, HeaderValue};
/// use saas_events::webhooks::{WebhookSecret, verify};
///
/// let secret = WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")?;
/// let body = br#"{"test": 2432232314}"#;
/// let mut headers = HeaderMap::new();
/// headers.insert("webhook-id", HeaderValue::from_static("msg_p5jXN8AQM9LWM0D4loKWxJek"));
/// headers.insert("webhook-timestamp", HeaderValue::from_static("1614265330"));
/// headers.insert("webhook-signature", HeaderValue::from_static(
///     "v1,bm9ldHU= v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="));
/// let now = Utc.timestamp_opt(1614265330 + 60, 0).unwrap();
/// let id = verify(&secret, &headers, body, now, Duration::from_secs(300))?;
/// assert_eq!(id, "msg_p5jXN8AQM9LWM0D4loKWxJek");
/// # Ok::<(), saas_events::webhooks::WebhookError>(())
/// ```
///
/// # Errors
/// [`WebhookError::Verification`] saying which check failed.
pub fn verify(
    secret: &WebhookSecret,
    headers: &HeaderMap,
    body: &[u8],
    now: DateTime<Utc>,
    tolerance: Duration,
) -> Result<String, WebhookError> {
    let header = |name: &'static str| {
        headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .ok_or(WebhookError::Verification {
                reason: match name {
                    WEBHOOK_ID => "missing webhook-id",
                    WEBHOOK_TIMESTAMP => "missing webhook-timestamp",
                    _ => "missing webhook-signature",
                },
            })
    };
    let msg_id = header(WEBHOOK_ID)?;
    let timestamp: i64 =
        header(WEBHOOK_TIMESTAMP)?
            .parse()
            .map_err(|_| WebhookError::Verification {
                reason: "webhook-timestamp is not Unix seconds",
            })?;
    let tolerance = i64::try_from(tolerance.as_secs()).unwrap_or(i64::MAX);
    if now.timestamp().abs_diff(timestamp) > tolerance.unsigned_abs() {
        return Err(WebhookError::Verification {
            reason: "webhook-timestamp is outside the tolerance",
        });
    }
    let signatures = header(WEBHOOK_SIGNATURE)?;
    let found = signatures
        .split(' ')
        .filter_map(|part| part.strip_prefix("v1,"))
        .filter_map(|encoded| STANDARD.decode(encoded).ok())
        .any(|signature| secret.matches(msg_id, timestamp, body, &signature));
    if found {
        Ok(msg_id.to_owned())
    } else {
        Err(WebhookError::Verification {
            reason: "no matching v1 signature",
        })
    }
}
