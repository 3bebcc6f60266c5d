//! HTTP handlers, one module per resource, plus [`read_body`], which reads every request body
//! within its limits, and [`JsonBody`], the body extractor whose rejections speak problem+json
//! like every other error.

pub mod conversation;
pub mod docs;
pub mod health;
pub mod messages;
pub mod outbox;
pub mod schema;
pub mod send;
pub mod webhooks;

use std::time::Duration;

use axum::{
    body::{Body, Bytes},
    extract::{FromRequest, Request, State},
    http::{
        HeaderMap, HeaderName, HeaderValue, StatusCode,
        header::{CONNECTION, CONTENT_LENGTH, CONTENT_TYPE},
    },
    middleware::Next,
    response::{IntoResponse, Response},
};
use serde_json::Value;

use crate::{
    http::error::ApiError,
    idempotency::{self, Key},
    message::FieldError,
    policy::limits::RateLimitHeaders,
};

mod strict_json;

/// How much of a request body the relay reads, and for how long.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    /// `RELAY_MAX_BODY_BYTES`.
    pub max_bytes: usize,
    /// `RELAY_MAX_BATCH_BYTES`, for `POST /messages/batch` alone: up to 1000 messages.
    pub max_batch_bytes: usize,
    /// `RELAY_BODY_TIMEOUT_MS`: the whole body, not each piece of it, so a body trickled a byte
    /// at a time cannot hold a connection for longer than this.
    pub timeout: Duration,
}

/// Reads the request body whole before the handler runs: 413 past `max_bytes` (at once when
/// `Content-Length` says so), 408 when it has not all arrived within `timeout`. Either closes the
/// connection, whose unread rest of the body cannot be told from a next request.
pub async fn read_body(State(limits): State<BodyLimits>, request: Request, next: Next) -> Response {
    let max_bytes = if request.uri().path() == "/messages/batch" {
        limits.max_batch_bytes
    } else {
        limits.max_bytes
    };
    let declared = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > max_bytes as u64) {
        return closing(ApiError::PayloadTooLarge);
    }
    let (parts, body) = request.into_parts();
    let read = tokio::time::timeout(limits.timeout, axum::body::to_bytes(body, max_bytes));
    match read.await {
        Ok(Ok(bytes)) => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        Ok(Err(e)) if is_over_limit(&e) => closing(ApiError::PayloadTooLarge),
        Ok(Err(_)) => closing(ApiError::Malformed("the body could not be read".to_owned())),
        Err(_) => {
            tracing::warn!("request body not received within RELAY_BODY_TIMEOUT_MS");
            closing(ApiError::RequestTimeout)
        }
    }
}

fn closing(error: ApiError) -> Response {
    let mut response = error.into_response();
    response
        .headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    response
}

fn is_over_limit(error: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if e.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = e.source();
    }
    false
}

/// A JSON body as a [`Value`], left to the domain to parse so that every bad field can be named.
/// Refuses a missing or non-JSON content type, invalid JSON and bodies over the size limit.
pub struct JsonBody(pub Value);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let content_type = request
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        if !content_type.is_some_and(is_json) {
            return Err(ApiError::Malformed(
                "expected Content-Type: application/json".to_owned(),
            ));
        }
        let body = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::PayloadTooLarge
                } else {
                    ApiError::Malformed(format!(
                        "the body could not be read: {}",
                        rejection.body_text()
                    ))
                }
            })?;
        match strict_json::parse(&body) {
            Ok(value) => Ok(JsonBody(value)),
            Err(strict_json::Error::Syntax(e)) => Err(ApiError::Malformed(format!(
                "the body is not valid JSON: {e}"
            ))),
            // Two parsers could read such a body differently (a validator in front of the
            // relay keeps the first, serde_json the last): it is refused, naming the field.
            Err(strict_json::Error::DuplicateKey(field)) => {
                Err(ApiError::Invalid(vec![FieldError::new(
                    field,
                    "appears more than once in its object",
                )]))
            }
        }
    }
}

/// `application/json` or a `+json` type, parameters such as `; charset=utf-8` ignored.
fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Where the caller's limit stands, on every answer to a send by a caller with limits:
/// `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset` (seconds).
fn add_rate_limit_headers(headers: &mut HeaderMap, limit: &RateLimitHeaders) {
    for (name, value) in [
        ("ratelimit-limit", limit.limit),
        ("ratelimit-remaining", limit.remaining),
        ("ratelimit-reset", limit.reset_s),
    ] {
        headers.insert(HeaderName::from_static(name), HeaderValue::from(value));
    }
}

/// A body parsed by the domain, and the request's `Idempotency-Key`: every bad field of both
/// named at once (the key as `Idempotency-Key`).
pub fn with_idempotency_key<T>(
    parsed: Result<T, Vec<FieldError>>,
    headers: &HeaderMap,
) -> Result<(T, Option<Key>), ApiError> {
    let key = match headers.get(idempotency::HEADER) {
        None => Ok(None),
        Some(value) => Key::parse(value.as_bytes()).map(Some).ok_or_else(|| {
            FieldError::new(
                "Idempotency-Key",
                "must be 1 to 255 visible ASCII characters",
            )
        }),
    };
    match (parsed, key) {
        (Ok(parsed), Ok(key)) => Ok((parsed, key)),
        (Err(mut errors), Err(key)) => {
            errors.push(key);
            Err(ApiError::Invalid(errors))
        }
        (Err(errors), Ok(_)) => Err(ApiError::Invalid(errors)),
        (Ok(_), Err(key)) => Err(ApiError::Invalid(vec![key])),
    }
}

/// A dead-letter list's query (`/webhooks/dead-letters`, `/outbox/dead-letters`); read by hand, so that a bad value is a problem+json naming it.
#[derive(Debug, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(
    dead_code,
    reason = "documents the query for OpenAPI; the handler parses it"
)]
pub struct ListQuery {
    /// At most this many, newest first (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u16>,
}

/// `limit` from the query string: 1 to 1000, 100 when absent.
pub fn limit(query: Option<&str>) -> Result<usize, ApiError> {
    let value = url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .find(|(key, _)| key == "limit")
        .map(|(_, value)| value.into_owned());
    match value {
        None => Ok(100),
        Some(value) => value
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=1000).contains(n))
            .ok_or_else(|| {
                ApiError::Invalid(vec![FieldError::new(
                    "limit",
                    "must be a whole number from 1 to 1000",
                )])
            }),
    }
}
