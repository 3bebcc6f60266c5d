//! One error type for the HTTP edge: every failure a caller can see, as `application/problem+json`.
//!
//! An [`ApiError`] turns into a response that carries its [`Problem`] as an extension; the
//! `problem_json` middleware renders it with the request id, so handlers never pass ids around.
//! Client errors say what to fix; 5xx answers are generic, and their cause is logged where it happens.

use axum::{
    body::Body,
    extract::Request,
    http::{HeaderName, HeaderValue, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use serde::Serialize;
use utoipa::ToSchema;

use crate::{message::FieldError, policy::Rule, preflight::MediaProblem};

mod answers;

pub use answers::{describe, stored_answer};

pub type Result<T, E = ApiError> = std::result::Result<T, E>;

/// The header that names a request: the relay sets it when a request comes without one, answers
/// with it, and puts it in every problem document and log line.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Seconds a caller should wait before retrying when the relay cannot tell better.
const DEFAULT_RETRY_AFTER_S: u64 = 1;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Malformed(String),
    #[error("a valid bearer token is required")]
    Unauthorized,
    /// A webhook call without the Basic Auth `RELAY_WEBHOOK_BASIC_AUTH` asks for.
    #[error("valid Basic Auth credentials are required")]
    WebhookUnauthorized,
    #[error("{0}")]
    NotFound(String),
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("the body is larger than the relay accepts (RELAY_MAX_BODY_BYTES)")]
    PayloadTooLarge,
    #[error("the body did not arrive in time (RELAY_BODY_TIMEOUT_MS); nothing was sent")]
    RequestTimeout,
    #[error("the request has invalid fields")]
    Invalid(Vec<FieldError>),
    /// A media link failed its preflight check (`RELAY_MEDIA_PREFLIGHT=enforce`).
    #[error("{}", .0.first().map_or("", |p| p.detail.as_str()))]
    Media(Vec<MediaProblem>),
    #[error("Qikchat refused the message: {0}")]
    RejectedByQikchat(String),
    /// The caller's policy does not allow this message; `rule` names the rule.
    #[error("{detail}")]
    Forbidden { rule: Rule, detail: String },
    /// A limit was hit: the caller's rate or quota, the account's pacing (`rule` names the
    /// setting), or Qikchat's own (`rule` is `None`).
    #[error("{detail}")]
    RateLimited {
        retry_after_s: u64,
        detail: String,
        rule: Option<Rule>,
    },
    #[error("Qikchat failed; the message was not confirmed")]
    UpstreamError,
    #[error("Qikchat could not be reached; nothing was sent")]
    UpstreamUnavailable,
    #[error("the relay is shutting down; nothing was sent")]
    Draining,
    #[error("too many sends in flight; nothing was sent")]
    Overloaded,
    /// The caller has its `max_in_flight` sends in flight: `overloaded` for it alone.
    #[error(
        "caller {caller} has {max} sends in flight, its most (rule: max_in_flight); nothing was sent"
    )]
    CallerOverloaded {
        caller: std::sync::Arc<str>,
        max: u32,
    },
    /// Webhook events not yet delivered fill `RELAY_WEBHOOK_STORE_MAX_MB`: Qikchat retries later.
    #[error(
        "the webhook store is full of events not yet delivered (RELAY_WEBHOOK_STORE_MAX_MB); the event was not stored"
    )]
    WebhookStoreFull,
    #[error("Qikchat did not answer in time; the message may or may not have been sent")]
    UpstreamTimeout,
    #[error("a request with this Idempotency-Key is still being sent; retry later for its answer")]
    IdempotencyKeyInFlight,
    #[error("this Idempotency-Key was used for a different request")]
    IdempotencyKeyReused,
    #[error(
        "an earlier request with this Idempotency-Key was interrupted after it started sending; the message may or may not have been sent, and will not be sent again under this key"
    )]
    OutcomeUnknown,
    #[error("the idempotency store is unreachable; nothing was sent")]
    StoreUnavailable,
    #[error("the rate limit store is unreachable; nothing was sent")]
    LimitsUnavailable,
    /// The store of who sent each message cannot be read: whose message an id is is unknown.
    #[error("the relay's message store is unreachable")]
    OwnersUnavailable,
    #[error("internal error")]
    Internal,
    /// A free-form message outside the customer's known-closed window (`RELAY_CUSTOMER_WINDOW=enforce`).
    #[error("{0}")]
    OutsideCustomerWindow(String),
    /// The conversation store (windows, opt-outs) cannot be read: a send is refused rather than
    /// sent to someone who may have opted out.
    #[error("the relay's conversation store (windows, opt-outs) is unreachable; nothing was sent")]
    ConversationUnavailable,
    /// `RELAY_TEMPLATES=declared` and the template is not declared in the callers file.
    #[error("{detail}")]
    UnknownTemplate {
        detail: String,
        errors: Vec<FieldError>,
    },
    /// `RELAY_OUTBOX_MAX` messages are waiting: nothing was stored.
    #[error(
        "the outbox holds as many waiting messages as it may (RELAY_OUTBOX_MAX); nothing was stored"
    )]
    OutboxFull,
    /// The outbox (SQLite or Redis) cannot be read or written.
    #[error("the relay's outbox is unreachable; nothing was stored")]
    OutboxUnavailable,
    /// `DELETE /messages/{id}` once sending started: `status` is where the message is.
    #[error("the message can no longer be canceled: it is {status}")]
    NotCancelable { status: &'static str },
}

/// An RFC 9457 problem document, the body of every error.
#[derive(Debug, Clone, Serialize, serde::Deserialize, ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem; `code` says the same, shorter.
    #[serde(rename = "type")]
    #[schema(examples("urn:qikchat-relay:problem:invalid_request"))]
    pub kind: String,
    #[schema(examples("Unprocessable Entity"))]
    pub title: String,
    #[schema(examples(422))]
    pub status: u16,
    #[schema(examples("the request has invalid fields"))]
    pub detail: String,
    /// Stable, machine-readable; see the error table in docs/sending.md.
    #[schema(examples("invalid_request"))]
    pub code: String,
    /// The `x-request-id` of the request that failed: quote it when asking for help.
    pub request_id: String,
    /// Every bad field, for `invalid_request` (and `unknown_template`: `template.name`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// The setting of the callers file that refused the request: for `forbidden`, `types`,
    /// `templates`, `destinations`, `account`, or `opted_out` (the customer is on the account's
    /// opt-out list); for `rate_limited`, `rate_per_minute`,
    /// `daily_quota`, `rate_per_second` or `recipient_interval_ms` (absent when Qikchat itself
    /// was rate limiting).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, examples("templates"))]
    pub rule: Option<String>,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Malformed(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized | Self::WebhookUnauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden { .. } => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::Invalid(_)
            | Self::RejectedByQikchat(_)
            | Self::Media(_)
            | Self::OutsideCustomerWindow(_)
            | Self::UnknownTemplate { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::UpstreamError => StatusCode::BAD_GATEWAY,
            Self::UpstreamUnavailable
            | Self::Draining
            | Self::Overloaded
            | Self::CallerOverloaded { .. }
            | Self::WebhookStoreFull => StatusCode::SERVICE_UNAVAILABLE,
            Self::UpstreamTimeout | Self::OutcomeUnknown => StatusCode::GATEWAY_TIMEOUT,
            Self::IdempotencyKeyInFlight => StatusCode::CONFLICT,
            Self::IdempotencyKeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            Self::StoreUnavailable
            | Self::LimitsUnavailable
            | Self::OwnersUnavailable
            | Self::ConversationUnavailable
            | Self::OutboxFull
            | Self::OutboxUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::NotCancelable { .. } => StatusCode::CONFLICT,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable `code` of the problem document; also the send outcome in logs and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Malformed(_) => "malformed_request",
            Self::Unauthorized | Self::WebhookUnauthorized => "unauthorized",
            Self::Forbidden { .. } => "forbidden",
            Self::NotFound(_) => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::PayloadTooLarge => "payload_too_large",
            Self::RequestTimeout => "request_timeout",
            Self::Invalid(_) => "invalid_request",
            Self::Media(problems) => problems
                .first()
                .map_or("media_unreachable", |p| p.code.as_str()),
            Self::RejectedByQikchat(_) => "rejected_by_qikchat",
            Self::RateLimited { .. } => "rate_limited",
            Self::UpstreamError => "upstream_error",
            Self::UpstreamUnavailable | Self::Draining => "upstream_unavailable",
            Self::Overloaded | Self::CallerOverloaded { .. } | Self::WebhookStoreFull => {
                "overloaded"
            }
            Self::UpstreamTimeout | Self::OutcomeUnknown => "upstream_timeout",
            Self::IdempotencyKeyInFlight => "idempotency_key_in_flight",
            Self::IdempotencyKeyReused => "idempotency_key_reused",
            Self::StoreUnavailable
            | Self::LimitsUnavailable
            | Self::OwnersUnavailable
            | Self::ConversationUnavailable
            | Self::OutboxUnavailable => "upstream_unavailable",
            Self::Internal => "internal_error",
            Self::OutboxFull => "outbox_full",
            Self::NotCancelable { .. } => "not_cancelable",
            Self::OutsideCustomerWindow(_) => "outside_customer_window",
            Self::UnknownTemplate { .. } => "unknown_template",
        }
    }

    fn retry_after_s(&self) -> Option<u64> {
        match self {
            Self::RateLimited { retry_after_s, .. } => Some(*retry_after_s),
            Self::UpstreamUnavailable
            | Self::Draining
            | Self::Overloaded
            | Self::CallerOverloaded { .. }
            | Self::WebhookStoreFull
            | Self::StoreUnavailable
            | Self::LimitsUnavailable
            | Self::OwnersUnavailable
            | Self::ConversationUnavailable
            | Self::OutboxUnavailable
            | Self::IdempotencyKeyInFlight => Some(DEFAULT_RETRY_AFTER_S),
            // A full outbox drains at the accounts' pace: a second is too eager.
            Self::OutboxFull => Some(30),
            _ => None,
        }
    }

    /// The problem document for this error, as the caller sees it.
    pub fn problem(&self, request_id: &str) -> Problem {
        let status = self.status();
        Problem {
            kind: format!("urn:qikchat-relay:problem:{}", self.code()),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail: self.to_string(),
            code: self.code().to_owned(),
            request_id: request_id.to_owned(),
            errors: match self {
                Self::Invalid(errors) | Self::UnknownTemplate { errors, .. } => errors.clone(),
                Self::Media(problems) => problems
                    .iter()
                    .map(|p| FieldError::new(p.field.clone(), p.detail.clone()))
                    .collect(),
                Self::OutsideCustomerWindow(detail) => {
                    vec![FieldError::new("type", detail.clone())]
                }
                _ => Vec::new(),
            },
            rule: match self {
                Self::Forbidden { rule, .. }
                | Self::RateLimited {
                    rule: Some(rule), ..
                } => Some(rule.as_str().to_owned()),
                _ => None,
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = self.status().into_response();
        let headers = response.headers_mut();
        if let Some(seconds) = self.retry_after_s() {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        match self {
            Self::Unauthorized => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            Self::WebhookUnauthorized => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"qikchat-relay\""),
                );
            }
            _ => {}
        }
        // The request id is added by `problem_json`, which knows the request.
        response.extensions_mut().insert(self.problem(""));
        response
    }
}

impl Problem {
    /// The response for this exact document; a replayed answer uses it as stored.
    pub fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = status.into_response();
        self.render_into(&mut response);
        response
    }

    fn render_into(self, response: &mut Response) {
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        headers.remove(header::CONTENT_LENGTH);
        // Serialising a struct of strings and numbers cannot fail.
        *response.body_mut() = Body::from(serde_json::to_vec(&self).unwrap_or_default());
    }
}

pub const PROBLEM_JSON: &str = "application/problem+json";

/// Renders the [`Problem`] an [`ApiError`] left on its response, adding the request id.
///
/// Runs inside the request-id layer, so the id is always there.
pub async fn problem_json(request: Request, next: Next) -> Response {
    let request_id = request
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let mut response = next.run(request).await;
    let problem = match response.extensions_mut().remove::<Problem>() {
        Some(problem) => Some(problem),
        None => unexplained(&response).map(|e| e.problem("")),
    };
    if let Some(mut problem) = problem {
        problem.request_id = request_id;
        problem.render_into(&mut response);
    }
    response
}

/// The error for a 4xx or 5xx that something other than an [`ApiError`] wrote (the framework's
/// own refusals, in text/plain): every error a caller sees is a problem document. Answers that
/// carry JSON of their own (a replayed problem, `/readyz`) are left as they are.
fn unexplained(response: &Response) -> Option<ApiError> {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return None;
    }
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if content_type.contains("json") {
        return None;
    }
    Some(match status {
        StatusCode::NOT_FOUND => ApiError::NotFound("no such resource".to_owned()),
        StatusCode::METHOD_NOT_ALLOWED => ApiError::MethodNotAllowed,
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge,
        StatusCode::REQUEST_TIMEOUT => ApiError::RequestTimeout,
        s if s.is_client_error() => ApiError::Malformed(format!(
            "the request could not be read ({})",
            s.canonical_reason().unwrap_or("client error")
        )),
        _ => ApiError::Internal,
    })
}
