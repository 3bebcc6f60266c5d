//! The upstream: Qikchat's HTTP API, or the sandbox that stands in for it.
//!
//! This module alone knows Qikchat's wire format (shared/qikchat-api.md): it translates a
//! [`Message`] into Qikchat's request, holds the key, and classifies every answer into an [`Error`]
//! that says whether the message may have gone out. Nothing is resent once it may have.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use reqwest::{
    StatusCode,
    header::{ACCEPT, CONTENT_TYPE, HeaderMap, HeaderValue, RETRY_AFTER, USER_AGENT},
};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use serde_json::{Map, Value, json};
use tracing::{Instrument, info_span, warn};
use url::Url;
use utoipa::ToSchema;

use crate::message::{
    Content, MediaKind, Message, TemplateButton, TemplateHeader, TemplateParameters,
};

/// The header Qikchat authenticates with.
const KEY_HEADER: &str = "QIKCHAT-API-KEY";
/// Qikchat's answers are small; anything larger is not an answer we understand.
const MAX_ANSWER_BYTES: usize = 256 * 1024;
/// Qikchat's own message is passed on to callers, cut to this many characters.
const MAX_DETAIL_CHARS: usize = 300;
/// Said instead of Qikchat's text when that text carries the key in any form.
pub const WITHHELD: &str = "Qikchat's text is withheld: it repeated the relay's key";
/// Consecutive characters of the key that count as the key.
const KEY_RUN: usize = 8;
/// Fewest letters and digits of a run that count once case, whitespace and punctuation are
/// dropped (a run of a key thick with punctuation folds to fewer; it is still compared as
/// written, and the whole key always is).
const MIN_FOLDED_RUN: usize = 6;
const FIRST_RETRY_PAUSE: Duration = Duration::from_millis(50);
const MAX_RETRY_PAUSE: Duration = Duration::from_secs(1);

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

/// The delivery status of a message, from Qikchat's status lookup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, ToSchema)]
pub struct MessageStatus {
    #[schema(examples("52JH6WmuSruAVyXvBBYemd0Ia"))]
    pub id: String,
    /// `queued`, `sent`, `delivered`, `read` or `failed` (others are passed on as Qikchat names them).
    #[schema(examples("delivered"))]
    pub status: String,
    /// The message type, as Qikchat reports it.
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    #[schema(examples("template"))]
    pub message_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(examples("2024-07-02T08:59:21.000Z"))]
    pub sent_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(examples("2024-07-02T08:59:21.000Z"))]
    pub delivered_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
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
                message_type: None,
                sent_at: None,
                delivered_at: None,
                read_at: None,
                updated_at: None,
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
    metrics::histogram!("relay_qikchat_request_duration_seconds", "operation" => operation, "outcome" => outcome, "status" => status)
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

    /// Makes one call, retrying only connection failures (nothing was sent) within the timeout.
    async fn call(&self, request: impl Fn() -> reqwest::RequestBuilder) -> Result<Reply, Error> {
        let started = Instant::now();
        let deadline = started + self.timeout;
        let mut pause = FIRST_RETRY_PAUSE;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let attempt = request()
                .header(ACCEPT, "application/json")
                .header(
                    USER_AGENT,
                    concat!("qikchat-relay/", env!("CARGO_PKG_VERSION")),
                )
                .header(KEY_HEADER, self.key.clone())
                .timeout(remaining)
                .send()
                .await;
            let response = match attempt {
                Ok(response) => response,
                Err(e) if e.is_connect() => {
                    let jittered = pause.mul_f64(0.5 + fastrand::f64());
                    if Instant::now() + jittered >= deadline {
                        return Err(Error::Unreachable(error_chain(&e)));
                    }
                    warn!(error = %error_chain(&e), retry_in_ms = jittered.as_millis() as u64, "Qikchat unreachable; nothing was sent, retrying");
                    tokio::time::sleep(jittered).await;
                    pause = (pause * 2).min(MAX_RETRY_PAUSE);
                    continue;
                }
                Err(e) if e.is_timeout() => return Err(Error::Timeout(self.timeout)),
                // The connection broke after the request was written: it may have arrived.
                Err(e) => {
                    return Err(Error::Failed {
                        status: None,
                        reason: error_chain(&e),
                    });
                }
            };
            let status = response.status();
            let headers = response.headers().clone();
            let body = read_bounded(response).await.map_err(|e| match e {
                ReadError::Timeout => Error::Timeout(self.timeout),
                ReadError::Other(reason) => Error::Failed {
                    status: Some(status.as_u16()),
                    reason,
                },
            })?;
            return Ok(Reply {
                status,
                headers,
                body,
            });
        }
    }

    /// Success is HTTP 2xx with `status` not `false` and an id at `data[0].id`.
    fn parse_send_answer(&self, answer: &Reply) -> Result<Accepted, Error> {
        // Fast path for the usual success document: no serde_json::Value built; anything else
        // falls through to the full classification below.
        if answer.status.is_success() {
            #[derive(serde::Deserialize)]
            struct Sent<'a> {
                #[serde(default)]
                status: Option<bool>,
                #[serde(borrow)]
                data: Vec<SentId<'a>>,
            }
            #[derive(serde::Deserialize)]
            struct SentId<'a> {
                #[serde(borrow)]
                id: std::borrow::Cow<'a, str>,
            }
            if let Ok(sent) = serde_json::from_slice::<Sent<'_>>(&answer.body) {
                if sent.status != Some(false) {
                    if let Some(first) = sent.data.first().filter(|d| !d.id.is_empty()) {
                        return Ok(Accepted {
                            id: first.id.clone().into_owned(),
                            http_status: Some(answer.status.as_u16()),
                        });
                    }
                }
            }
        }
        let json = self.classify(answer)?;
        let json = json.ok_or_else(|| Error::Failed {
            status: Some(answer.status.as_u16()),
            reason: "the answer is not JSON".to_owned(),
        })?;
        let id = json
            .pointer("/data/0/id")
            .or_else(|| json.pointer("/data/id"))
            .and_then(Value::as_str)
            .filter(|id| !id.is_empty());
        match id {
            Some(id) => Ok(Accepted {
                id: id.to_owned(),
                http_status: Some(answer.status.as_u16()),
            }),
            None => Err(Error::Failed {
                status: Some(answer.status.as_u16()),
                reason: "the answer carries no message id".to_owned(),
            }),
        }
    }

    fn parse_status_answer(&self, id: &str, answer: &Reply) -> Result<MessageStatus, Error> {
        // Qikchat answers an unknown id with 400 {"error": "Invalid request"}.
        if matches!(
            answer.status,
            StatusCode::BAD_REQUEST | StatusCode::NOT_FOUND
        ) {
            return Err(Error::NotFound);
        }
        let json = match self.classify(answer) {
            Err(Error::Rejected { .. }) => return Err(Error::NotFound),
            other => other?,
        };
        let unreadable = |reason: &str| Error::Failed {
            status: Some(answer.status.as_u16()),
            reason: reason.to_owned(),
        };
        let json = json.ok_or_else(|| unreadable("the answer is not JSON"))?;
        let payload = json
            .pointer("/message/payload")
            .or_else(|| json.get("payload"))
            .ok_or_else(|| unreadable("the answer carries no payload"))?;
        let status = MessageStatus::from_payload(id, payload)
            .ok_or_else(|| unreadable("the answer carries no status"))?;
        let text = |value: String| self.passed_on(&value);
        let maybe = |value: Option<String>| value.map(text);
        Ok(MessageStatus {
            id: text(status.id),
            status: text(status.status),
            message_type: maybe(status.message_type),
            sent_at: maybe(status.sent_at),
            delivered_at: maybe(status.delivered_at),
            read_at: maybe(status.read_at),
            updated_at: maybe(status.updated_at),
        })
    }

    /// The shared part of reading any answer: HTTP status, then `status: false`. Returns the JSON
    /// body of a successful answer, if it is JSON.
    fn classify(&self, answer: &Reply) -> Result<Option<Value>, Error> {
        let status = answer.status;
        let json: Option<Value> = serde_json::from_slice(&answer.body).ok();
        let code = status.as_u16();
        if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
            return Err(Error::KeyRefused { status: code });
        }
        if status == StatusCode::TOO_MANY_REQUESTS {
            let retry_after_s = answer
                .headers
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(1)
                .clamp(1, 3600);
            return Err(Error::RateLimited { retry_after_s });
        }
        if status.is_client_error() {
            return Err(Error::Rejected {
                status: code,
                message: self.detail(json.as_ref(), code),
            });
        }
        if !status.is_success() {
            return Err(Error::Failed {
                status: Some(code),
                reason: format!("HTTP {code}"),
            });
        }
        if json
            .as_ref()
            .and_then(|j| j.get("status"))
            .and_then(Value::as_bool)
            == Some(false)
        {
            return Err(Error::Rejected {
                status: code,
                message: self.detail(json.as_ref(), code),
            });
        }
        Ok(json)
    }

    /// Qikchat's own words about a refusal, safe to show a caller: short, and never the key.
    fn detail(&self, json: Option<&Value>, status: u16) -> String {
        let said = json.and_then(|j| {
            ["/message", "/error", "/error/message", "/errors/0/message"]
                .into_iter()
                .find_map(|pointer| j.pointer(pointer).and_then(Value::as_str))
        });
        match said.map(str::trim).filter(|s| !s.is_empty()) {
            Some(text) => self
                .passed_on(text)
                .chars()
                .take(MAX_DETAIL_CHARS)
                .collect(),
            None => format!("HTTP {status} without a message"),
        }
    }

    /// Qikchat's `text` as it may go on to a caller or a log: the one way any of it does.
    fn passed_on(&self, text: &str) -> String {
        match withheld(self.key_text.expose_secret(), text) {
            Some(sentence) => {
                warn!("Qikchat's text withheld: it carried the relay's key");
                sentence.to_owned()
            }
            None => text.to_owned(),
        }
    }
}

/// [`WITHHELD`] when `text` carries `key` in any form: the whole key, or any run of
/// [`KEY_RUN`] consecutive characters of it, compared without case and without whitespace or
/// punctuation (`QK_ABC…`, `q k _ a b c …`, `q.k.a.b.c…`), and as written without case or
/// whitespace. `None` when the text may go on as it is.
fn withheld(key: &str, text: &str) -> Option<&'static str> {
    let folded_text = fold(text);
    let squeezed_text: String = text
        .chars()
        .filter(|c| !c.is_whitespace())
        .flat_map(char::to_lowercase)
        .collect();
    let folded_key = fold(key);
    if folded_key.chars().count() >= MIN_FOLDED_RUN && folded_text.contains(&folded_key) {
        return Some(WITHHELD);
    }
    let key: Vec<char> = key.chars().collect();
    let carried = key.windows(KEY_RUN.min(key.len()).max(1)).any(|run| {
        let run: String = run.iter().collect();
        let folded = fold(&run);
        squeezed_text.contains(&run.to_lowercase())
            || (folded.chars().count() >= MIN_FOLDED_RUN && folded_text.contains(&folded))
    });
    carried.then_some(WITHHELD)
}

/// Text as it is compared with the key: its letters and digits, lowercase.
fn fold(text: &str) -> String {
    text.chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

/// One answer from Qikchat, body read in full (bounded).
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

enum ReadError {
    Timeout,
    Other(String),
}

async fn read_bounded(mut response: reqwest::Response) -> Result<Bytes, ReadError> {
    let mut body = BytesMut::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_ANSWER_BYTES {
                    return Err(ReadError::Other(format!(
                        "the answer is larger than {MAX_ANSWER_BYTES} bytes"
                    )));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body.freeze()),
            Err(e) if e.is_timeout() => return Err(ReadError::Timeout),
            Err(e) => return Err(ReadError::Other(error_chain(&e))),
        }
    }
}

/// An error with its causes, for logs (reqwest's own `Display` hides the useful part).
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The body of `POST /v1/messages` for a message: `{to_contact, type, <type>: {...}}`, with no
/// `null` or empty optional fields.
pub fn send_body(message: &Message) -> Value {
    let message_type = message.content.message_type().as_str();
    let mut body = Map::new();
    body.insert("to_contact".into(), message.to.as_str().into());
    body.insert("type".into(), message_type.into());
    let object = match &message.content {
        Content::Text {
            body: text,
            preview_url,
        } => {
            if *preview_url {
                body.insert("preview_url".into(), true.into());
            }
            json!({ "body": text })
        }
        Content::Media {
            link,
            caption,
            filename,
            ..
        } => {
            let mut media = Map::new();
            media.insert("link".into(), link.as_str().into());
            insert_some(&mut media, "caption", caption);
            insert_some(&mut media, "filename", filename);
            Value::Object(media)
        }
        Content::Location {
            latitude,
            longitude,
            name,
            address,
        } => {
            let mut location = Map::new();
            location.insert("latitude".into(), json!(latitude));
            location.insert("longitude".into(), json!(longitude));
            insert_some(&mut location, "name", name);
            insert_some(&mut location, "address", address);
            Value::Object(location)
        }
        Content::Contact(contact) => Value::Object(contact.clone()),
        Content::Interactive(interactive) => Value::Object(interactive.clone()),
        Content::Template(template) => {
            let components = match &template.parameters {
                TemplateParameters::Raw(components) => components.clone(),
                TemplateParameters::Simple {
                    header,
                    body,
                    buttons,
                } => template_components(header.as_ref(), body, buttons),
            };
            let mut object = Map::new();
            object.insert("name".into(), template.name.as_str().into());
            object.insert("language".into(), template.language.as_str().into());
            if !components.is_empty() {
                object.insert("components".into(), Value::Array(components));
            }
            Value::Object(object)
        }
    };
    body.insert(message_type.into(), object);
    Value::Object(body)
}

fn insert_some(object: &mut Map<String, Value>, key: &str, value: &Option<String>) {
    if let Some(value) = value {
        object.insert(key.into(), value.as_str().into());
    }
}

fn template_components(
    header: Option<&TemplateHeader>,
    body: &[String],
    buttons: &[TemplateButton],
) -> Vec<Value> {
    let mut components = Vec::new();
    if let Some(header) = header {
        let parameter = match header {
            TemplateHeader::Text(text) => json!({"type": "text", "text": text}),
            TemplateHeader::Media {
                kind,
                link,
                filename,
            } => {
                let name = kind.message_type().as_str();
                let mut media = Map::new();
                media.insert("link".into(), link.as_str().into());
                if *kind == MediaKind::Document {
                    insert_some(&mut media, "filename", filename);
                }
                json!({"type": name, name: media})
            }
        };
        components.push(json!({"type": "header", "parameters": [parameter]}));
    }
    if !body.is_empty() {
        let parameters: Vec<Value> = body
            .iter()
            .map(|text| json!({"type": "text", "text": text}))
            .collect();
        components.push(json!({"type": "body", "parameters": parameters}));
    }
    for (index, button) in buttons.iter().enumerate() {
        let (sub_type, parameter) = match button {
            TemplateButton::Url(suffix) => ("url", json!({"type": "text", "text": suffix})),
            TemplateButton::QuickReply(payload) => (
                "quick_reply",
                json!({"type": "payload", "payload": payload}),
            ),
        };
        components.push(json!({
            "type": "button",
            "sub_type": sub_type,
            "index": index.to_string(),
            "parameters": [parameter],
        }));
    }
    components
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;
    use crate::message::properties::{has_null, json_value};
    use crate::message::{Message, MessageType};

    const KEY: &str = "qk_property_test_key_0123456789";

    fn qikchat() -> Qikchat {
        Qikchat::new(
            Url::parse("http://127.0.0.1:9").expect("url"),
            SecretString::from(KEY),
            Duration::from_secs(1),
        )
        .expect("a client")
    }

    fn answer(status: u16, body: Vec<u8>) -> Reply {
        Reply {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
            headers: HeaderMap::new(),
            body: Bytes::from(body),
        }
    }

    /// Bodies that look like Qikchat's, and bytes that do not.
    fn body() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            any::<Vec<u8>>(),
            (
                any::<Option<bool>>(),
                ".{0,20}",
                prop::option::of("[A-Za-z0-9]{0,25}")
            )
                .prop_map(|(status, message, id)| {
                    let mut json = serde_json::Map::new();
                    if let Some(status) = status {
                        json.insert("status".into(), status.into());
                    }
                    json.insert("message".into(), format!("{message} {KEY}").into());
                    if let Some(id) = id {
                        json.insert("data".into(), json!([{"id": id}]));
                    }
                    serde_json::to_vec(&json).unwrap_or_default()
                }),
        ]
    }

    #[test]
    fn qikchat_text_that_quotes_the_key_in_a_changed_form_is_replaced_by_a_fixed_sentence() {
        let spaced: Vec<String> = KEY.to_uppercase().chars().map(String::from).collect();
        let dotted: Vec<String> = KEY.chars().map(String::from).collect();
        for text in [
            format!("invalid key {KEY}"),
            format!("invalid key {}", KEY.to_uppercase()),
            format!("invalid key {}", spaced.join(" ")),
            format!("invalid key {}", dotted.join(".")),
            format!("key starts with {}", &KEY[..KEY_RUN]),
            format!("key ends with {}", &KEY[KEY.len() - KEY_RUN..]),
        ] {
            assert_eq!(qikchat().passed_on(&text), WITHHELD, "{text}");
        }
        assert_eq!(
            qikchat().passed_on("Template not approved"),
            "Template not approved"
        );
    }

    #[test]
    fn a_refusal_and_a_status_that_quote_the_key_reach_nobody() {
        let refusal =
            json!({"status": false, "message": format!("bad key {}", KEY.to_uppercase())});
        let refused = qikchat()
            .parse_send_answer(&answer(
                400,
                serde_json::to_vec(&refusal).unwrap_or_default(),
            ))
            .expect_err("refused");
        assert!(
            matches!(&refused, Error::Rejected { message, .. } if message == WITHHELD),
            "{refused}"
        );
        let lookup = json!({"status": true, "message": {"payload": {"id": "abc", "message": {
            "status": format!("failed for {}", &KEY[3..12]), "type": "text"}}}});
        let found = qikchat()
            .parse_status_answer(
                "abc",
                &answer(200, serde_json::to_vec(&lookup).unwrap_or_default()),
            )
            .expect("a status");
        assert_eq!(found.status, WITHHELD);
        assert_eq!(found.message_type.as_deref(), Some("text"));
    }

    proptest! {
        #[test]
        fn any_json_is_either_a_well_formed_qikchat_body_or_named_errors(body in json_value()) {
            match Message::parse(&body) {
                Ok(message) => {
                    let sent = send_body(&message);
                    let kind = sent["type"].as_str().unwrap_or_default().to_owned();
                    prop_assert!(MessageType::ALL.iter().any(|t| t.as_str() == kind));
                    prop_assert!(sent["to_contact"].as_str().is_some_and(|to| to.starts_with('+')));
                    prop_assert!(sent[kind.as_str()].is_object(), "{}", sent);
                    prop_assert!(!has_null(&sent), "{}", sent);
                }
                Err(errors) => {
                    prop_assert!(!errors.is_empty());
                    prop_assert!(errors.iter().all(|e| !e.field.is_empty() && !e.message.is_empty()));
                }
            }
        }

        #[test]
        fn every_valid_text_is_sent_as_it_was_given(text in "\\PC{1,300}", preview in any::<bool>()) {
            let message = Message::parse(&json!({"to": "+918080808080", "type": "text", "text": text, "preview_url": preview}));
            let sent = send_body(&message.expect("a valid text"));
            prop_assert_eq!(&sent["text"]["body"], &json!(text));
            prop_assert_eq!(sent.get("preview_url").is_some(), preview);
        }

        #[test]
        fn any_send_answer_is_classified_without_panicking_or_leaking_the_key(status in 100u16..600, body in body()) {
            match qikchat().parse_send_answer(&answer(status, body)) {
                Ok(accepted) => {
                    prop_assert!((200..300).contains(&status));
                    prop_assert!(!accepted.id.is_empty());
                }
                Err(e) => prop_assert!(!e.to_string().contains(KEY), "{}", e),
            }
        }

        #[test]
        fn any_run_of_eight_key_characters_in_any_case_spacing_or_punctuation_is_withheld(
            start in 0..KEY.len() - KEY_RUN,
            length in KEY_RUN..=KEY.len(),
            upper in any::<bool>(),
            between in prop::sample::select(vec!["", " ", ".", "-", " _ ", "\n", "*"]),
            before in "[A-Za-z ,.:]{0,40}",
            after in "[A-Za-z ,.:]{0,40}",
        ) {
            let run = &KEY[start..(start + length).min(KEY.len())];
            let run = if upper { run.to_uppercase() } else { run.to_owned() };
            let changed: Vec<String> = run.chars().map(String::from).collect();
            let text = format!("{before}{}{after}", changed.join(between));
            prop_assert_eq!(withheld(KEY, &text), Some(WITHHELD), "{}", text);
        }

        #[test]
        fn text_without_the_key_goes_on_as_it_is(text in "[A-Za-z ,.:()]{0,200}") {
            // Seven characters of the key are too few to count; nothing else in it matches.
            let text = format!("{text} {}", &KEY[..7]);
            prop_assert_eq!(withheld(KEY, &text), None, "{}", text);
        }

        #[test]
        fn any_status_answer_is_classified_without_panicking(status in 100u16..600, body in body()) {
            if let Ok(found) = qikchat().parse_status_answer("abc", &answer(status, body)) {
                prop_assert!((200..300).contains(&status));
                prop_assert!(!found.status.is_empty());
            }
        }
    }
}
