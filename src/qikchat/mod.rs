//! The upstream: Qikchat's HTTP API, or the sandbox that stands in for it.
//!
//! This module alone knows Qikchat's wire format (shared/qikchat-api.md): it translates a
//! [`Message`] into Qikchat's request, holds the key, and classifies every answer into an [`Error`]
//! that says whether the message may have gone out. Nothing is resent once it may have.
//!
//! The parts: `body` writes Qikchat's request from a [`Message`], `transport` makes one exchange
//! (the key sent, connection failures retried, the answer read bounded), `answer` says what the
//! answer means, `failure` reads why a message failed from a status, and `withhold` keeps the
//! key out of any of Qikchat's text that goes on.

use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::header::{CONTENT_TYPE, HeaderValue};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use serde_json::Value;
use tracing::{Instrument, info_span};
use url::Url;
use utoipa::ToSchema;

use crate::{message::Message, metric};

mod answer;
mod body;
mod failure;
mod transport;
mod withhold;

pub use body::send_body;
pub use failure::FailureReason;
pub(crate) use transport::error_chain;
pub use withhold::WITHHELD;

/// What callers talk to: Qikchat itself, or the sandbox, which answers like Qikchat without
/// sending anything.
pub enum Upstream {
    Live(Qikchat),
    Sandbox,
}

/// A Qikchat account's client: one connection pool, one key.
pub struct Qikchat {
    http: reqwest::Client,
    base_url: Url,
    /// `base_url` joined with `v1/messages` once, not per send.
    send_url: Option<Box<Url>>,
    /// The key as a ready, sensitive header value (printed as `Sensitive` by `Debug`).
    key: HeaderValue,
    /// Kept to withhold any Qikchat text that carries the key ([`Qikchat::passed_on`]).
    key_text: SecretString,
    timeout: Duration,
}

/// Qikchat accepted the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub id: String,
    /// Qikchat's HTTP status; `None` in sandbox mode.
    pub http_status: Option<u16>,
}

/// The delivery status of a message: for Qikchat's id, from Qikchat (its webhook or its status
/// lookup); for the relay's id (`msg_...`, `POST /messages`), the message's whole life in the
/// outbox, with Qikchat's later statuses once Qikchat took it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize, ToSchema)]
pub struct MessageStatus {
    /// The id asked for.
    #[schema(examples("52JH6WmuSruAVyXvBBYemd0Ia"))]
    pub id: String,
    /// `queued`, `sent`, `delivered`, `read` or `failed` (others are passed on as Qikchat names
    /// them). An outbox message is first `scheduled` or `accepted` (waiting for its turn), then
    /// `sending`, then `queued` and Qikchat's statuses, or one of the relay's ends: `failed`,
    /// `expired` (not sent by `valid_until`), `canceled`, `unknown` (it may or may not have reached
    /// Qikchat, and is never sent again).
    #[schema(examples("delivered"))]
    pub status: String,
    /// Outbox messages: Qikchat's id, once Qikchat took it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, examples("52JH6WmuSruAVyXvBBYemd0Ia"))]
    pub qikchat_id: Option<String>,
    /// Outbox messages: not sent before this time, when the caller gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, examples("2026-12-24T03:30:00.000Z"))]
    pub send_at: Option<String>,
    /// Outbox messages: never sent after this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, examples("2026-12-24T07:30:00.000Z"))]
    pub valid_until: Option<String>,
    /// Outbox messages: attempts that reached no one and were tried again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, examples(0))]
    pub attempts: Option<u32>,
    /// Outbox messages: when the relay accepted it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, examples("2026-12-23T18:02:11.412Z"))]
    pub accepted_at: Option<String>,
    /// The message type, as Qikchat reports it.
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, examples("template"))]
    pub message_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, examples("2024-07-02T08:59:21.000Z"))]
    pub sent_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, examples("2024-07-02T08:59:21.000Z"))]
    pub delivered_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub read_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub updated_at: Option<String>,
    /// The `reference` the sender gave with `POST /send`, when it gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, examples("invoice-2026-0042"))]
    pub reference: Option<String>,
    /// Why the message failed, when Qikchat's status says so (`errors[0]`, `error` or `reason`
    /// in its payload); for an outbox message also why the relay ended it (`code`: a problem
    /// code such as `forbidden`, `expired`, `interrupted`), or why its last attempt reached no
    /// one (`upstream_unavailable`, `rate_limited`) while it waits for the next.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub error: Option<FailureReason>,
}

impl MessageStatus {
    /// Reads a status from Qikchat's `payload` (`{id, message: {status, type, sentAt, ...}}`), the
    /// same in a status lookup's answer and in a status webhook. `None` without a status.
    pub fn from_payload(id: &str, payload: &Value) -> Option<Self> {
        let details = payload.get("message").unwrap_or(&Value::Null);
        let text = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).map(str::to_owned);
        Some(Self {
            id: text(payload, "id").unwrap_or_else(|| id.to_owned()),
            status: text(details, "status")?,
            message_type: text(details, "type"),
            sent_at: text(details, "sentAt"),
            delivered_at: text(details, "deliveredAt"),
            read_at: text(details, "readAt"),
            updated_at: text(details, "lastUpdatedAt"),
            error: FailureReason::from_payload(payload),
            // The reference is known to the relay, not to Qikchat: the caller of this sets it.
            ..Self::default()
        })
    }
}

/// Why a call to Qikchat did not succeed. Variants differ in whether the message may have gone out.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No connection could be made (DNS, refused, TLS): nothing reached Qikchat.
    #[error("Qikchat could not be reached: {0}")]
    Unreachable(String),
    /// The request went out but no answer came in time: the outcome is unknown.
    #[error("Qikchat did not answer within {0:?}")]
    Timeout(Duration),
    /// Qikchat refused the relay's key: a misconfiguration, not the caller's fault.
    #[error("Qikchat refused the relay's key (HTTP {status}); check QIKCHAT_API_KEY")]
    KeyRefused { status: u16 },
    /// Qikchat refused the request itself.
    #[error("Qikchat refused the request (HTTP {status}): {message}")]
    Rejected { status: u16, message: String },
    #[error("Qikchat is rate limiting (HTTP 429)")]
    RateLimited { retry_after_s: u64 },
    /// A 5xx, an unreadable answer, a broken connection after sending, an answer without an id.
    #[error("Qikchat failed{}: {reason}", status.map(|s| format!(" (HTTP {s})")).unwrap_or_default())]
    Failed { status: Option<u16>, reason: String },
    /// The status lookup does not know the id.
    #[error("Qikchat does not know this message id")]
    NotFound,
}

impl Error {
    /// Qikchat's HTTP status, when it answered at all.
    pub fn http_status(&self) -> Option<u16> {
        match self {
            Self::KeyRefused { status } | Self::Rejected { status, .. } => Some(*status),
            Self::RateLimited { .. } => Some(429),
            Self::Failed { status, .. } => *status,
            Self::Unreachable(_) | Self::Timeout(_) | Self::NotFound => None,
        }
    }

    /// A short, bounded name for metrics.
    pub fn outcome(&self) -> &'static str {
        match self {
            Self::Unreachable(_) => "unreachable",
            Self::Timeout(_) => "timeout",
            Self::KeyRefused { .. } => "key_refused",
            Self::Rejected { .. } => "rejected",
            Self::RateLimited { .. } => "rate_limited",
            Self::Failed { .. } => "failed",
            Self::NotFound => "not_found",
        }
    }
}

impl Upstream {
    pub async fn send(&self, message: &Message) -> Result<Accepted, Error> {
        match self {
            Self::Live(qikchat) => {
                let started = Instant::now();
                let result = qikchat.send(message).await;
                observe_call("send", result.as_ref().map(|a| a.http_status), started);
                result
            }
            Self::Sandbox => Ok(Accepted {
                id: format!("sandbox-{}", uuid::Uuid::new_v4().simple()),
                http_status: None,
            }),
        }
    }

    /// Replaces every text in `value` (a webhook's payload) that carries this account's key, in
    /// any form, by [`WITHHELD`]: Qikchat's text that goes on to callers never carries it. The
    /// sandbox has no key to withhold.
    pub fn withhold_in(&self, value: &mut Value) {
        if let Self::Live(qikchat) = self {
            qikchat.withhold_in(value);
        }
    }

    pub async fn status(&self, id: &str) -> Result<MessageStatus, Error> {
        match self {
            Self::Live(qikchat) => {
                let started = Instant::now();
                let result = qikchat.status(id).await;
                observe_call("status", result.as_ref().map(|_| Some(200)), started);
                result
            }
            // The sandbox keeps nothing: an id it could have made was queued, as the send said.
            Self::Sandbox if id.starts_with("sandbox-") => Ok(MessageStatus {
                id: id.to_owned(),
                status: "queued".to_owned(),
                ..MessageStatus::default()
            }),
            Self::Sandbox => Err(Error::NotFound),
        }
    }
}

/// Counts a call to Qikchat in `relay_qikchat_request_duration_seconds`, by operation, outcome
/// and Qikchat's HTTP status (`none` when it did not answer).
fn observe_call(operation: &'static str, result: Result<Option<u16>, &Error>, started: Instant) {
    let (outcome, status) = match result {
        Ok(status) => (
            if operation == "send" {
                "accepted"
            } else {
                "found"
            },
            status,
        ),
        Err(e) => (e.outcome(), e.http_status()),
    };
    let status = status.map_or_else(|| "none".to_owned(), |s| s.to_string());
    metrics::histogram!(metric::QIKCHAT_REQUEST_DURATION_SECONDS, "operation" => operation, "outcome" => outcome, "status" => status)
        .record(started.elapsed().as_secs_f64());
}

impl Qikchat {
    pub fn new(
        base_url: Url,
        key: SecretString,
        timeout: Duration,
    ) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            // Connect failures are the only ones retried; they must surface as such, before the
            // overall timeout turns them into an "outcome unknown".
            .connect_timeout(timeout.min(Duration::from_secs(3)))
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        let mut key_header = HeaderValue::from_str(key.expose_secret())
            .unwrap_or_else(|_| HeaderValue::from_static("invalid"));
        key_header.set_sensitive(true);
        Ok(Self {
            http,
            send_url: base_url.join("v1/messages").ok().map(Box::new),
            base_url,
            key: key_header,
            key_text: key,
            timeout,
        })
    }

    async fn send(&self, message: &Message) -> Result<Accepted, Error> {
        let url = match &self.send_url {
            Some(url) => Url::clone(url),
            None => self.url("v1/messages")?,
        };
        let body = Bytes::from(serde_json::to_vec(&send_body(message)).unwrap_or_default());
        // A child of the request span, whose fields (type, to, ...) every line here also carries.
        let span = info_span!(
            "qikchat.send",
            otel.kind = "client",
            http_status = tracing::field::Empty
        );
        let answer = self
            .call(|| {
                self.http
                    .post(url.clone())
                    .header(CONTENT_TYPE, "application/json")
                    .body(body.clone())
            })
            .instrument(span.clone())
            .await?;
        span.record("http_status", answer.status.as_u16());
        self.parse_send_answer(&answer)
    }

    async fn status(&self, id: &str) -> Result<MessageStatus, Error> {
        let mut url = self.url("v1/messages")?;
        url.query_pairs_mut().append_pair("msgid", id);
        let span = info_span!(
            "qikchat.status",
            otel.kind = "client",
            http_status = tracing::field::Empty
        );
        let answer = self
            .call(|| self.http.get(url.clone()))
            .instrument(span.clone())
            .await?;
        span.record("http_status", answer.status.as_u16());
        self.parse_status_answer(id, &answer)
    }

    fn url(&self, path: &str) -> Result<Url, Error> {
        self.base_url.join(path).map_err(|e| Error::Failed {
            status: None,
            reason: format!("QIKCHAT_BASE_URL cannot be joined with {path}: {e}"),
        })
    }
}

#[cfg(test)]
mod fixtures {
    use std::time::Duration;

    use secrecy::SecretString;
    use url::Url;

    use super::Qikchat;

    /// The key of [`qikchat`]'s client, which the properties look for in what goes on.
    pub(super) const KEY: &str = "qk_property_test_key_0123456789";

    /// A client with [`KEY`] that is never asked to connect.
    pub(super) fn qikchat() -> Qikchat {
        Qikchat::new(
            Url::parse("http://127.0.0.1:9").expect("url"),
            SecretString::from(KEY),
            Duration::from_secs(1),
        )
        .expect("a client")
    }
}
