//! HTTP handlers, one module per resource, plus [`JsonBody`], the body extractor whose
//! rejections speak problem+json like every other error.

pub mod docs;
pub mod health;
pub mod messages;
pub mod schema;
pub mod send;
pub mod webhooks;

use axum::{
    body::Bytes,
    extract::{FromRequest, Request},
    http::{StatusCode, header::CONTENT_TYPE},
};
use serde_json::Value;

use crate::error::ApiError;

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
        serde_json::from_slice(&body)
            .map(JsonBody)
            .map_err(|e| ApiError::Malformed(format!("the body is not valid JSON: {e}")))
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
