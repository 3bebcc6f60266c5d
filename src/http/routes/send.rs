//! `POST /send`: the HTTP adapter over [`Relay::send`]: a caller's token, its JSON body and its
//! `Idempotency-Key` in; Qikchat's id, or problem+json, with the caller's `RateLimit-*` headers
//! out. The logs, the metrics and the audit event of each send are written here.
//!
//! `routes::schema` describes the accepted body for the OpenAPI document; the parser in
//! `message` enforces it. Tests send every documented example through the parser, and
//! schemathesis (tests/external) checks that the two agree both ways.

use std::time::Instant;

use axum::{
    Json,
    extract::State,
    http::{HeaderMap, StatusCode, header::CONTENT_TYPE},
    response::{IntoResponse, Response},
};
use serde_json::Value;
use tracing::Span;

use crate::{
    audit::SendAttempt,
    http::error::{ApiError, REQUEST_ID},
    http::routes::JsonBody,
    http::state::AppState,
    idempotency::{self, Answer},
    message::Message,
    metric,
    policy::{Caller, limits},
    relay::{Options, Outcome, Report},
};

#[utoipa::path(
    post,
    path = "/send",
    operation_id = "sendMessage",
    tag = "messages",
    summary = "Send one WhatsApp message",
    description = "Validates the message, sends it through Qikchat with the relay's key, and answers with Qikchat's message id. Nothing is sent when the answer is 4xx (except `rejected_by_qikchat`, where Qikchat itself refused it).",
    request_body(content = crate::http::routes::schema::SendRequest, description = "One message; `type` says which fields apply. See the examples."),
    params(("Idempotency-Key" = Option<String>, Header, nullable = false, description = "Makes retries safe: 1 to 255 visible ASCII characters, scoped to the caller. A retry with the same key and the same request gets the first answer again (with `Idempotent-Replayed: true`) and sends nothing.", min_length = 1, max_length = 255, pattern = r"^[\x21-\x7E]{1,255}$")),
    responses(
        (status = 200, description = "Qikchat queued the message", body = crate::relay::SendResponse,
            headers(("Idempotent-Replayed" = String, description = "`true` when this is the stored answer to an earlier request with the same Idempotency-Key"),
                ("RateLimit-Limit" = u64, description = "Callers with a rate or a daily quota (on every answer to a send): the most sends allowed at once (burst) or per day, whichever is closer to running out"),
                ("RateLimit-Remaining" = u64, description = "Sends still allowed now under that limit"),
                ("RateLimit-Reset" = u64, description = "Seconds until that limit is full again (the quota: until 00:00 UTC)"))),
        (status = 409, description = "`idempotency_key_in_flight`: a request with this Idempotency-Key is still being sent; retry after `Retry-After` to get its answer", body = crate::http::error::Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying"))),
        (status = 400, description = "`malformed_request`: not JSON, or not `application/json`", body = crate::http::error::Problem, content_type = "application/problem+json"),
        (status = 401, description = "`unauthorized`: no or unknown bearer token", body = crate::http::error::Problem, content_type = "application/problem+json",
            headers(("WWW-Authenticate" = String, description = "`Bearer`"))),
        (status = 403, description = "`forbidden`: the caller may not send this message (its `types`, `templates`, `destinations` or `account` in the callers file), or the customer is on the account's opt-out list (`rule: opted_out`; callers with `ignore_opt_out` are not held); `rule` names the rule and `detail` says what was refused; nothing was sent", body = crate::http::error::Problem, content_type = "application/problem+json"),
        (status = 413, description = "`payload_too_large`: the body is over `RELAY_MAX_BODY_BYTES`", body = crate::http::error::Problem, content_type = "application/problem+json"),
        (status = 422, description = "`invalid_request` (`errors` names every bad field, `Idempotency-Key` included, and every part of a declared template that does not fit its declaration; nothing was sent), `unknown_template` (RELAY_TEMPLATES=declared and the template is not declared in the callers file; `errors` names `template.name`; nothing was sent), `outside_customer_window` (RELAY_CUSTOMER_WINDOW=enforce, a message other than a template, and the customer has not written within the 24-hour window; `errors` names `type`; nothing was sent), `rejected_by_qikchat` (`detail` carries Qikchat's message) `idempotency_key_reused` (the key was used for a different request; nothing was sent), or `media_unreachable`, `media_type_not_supported`, `media_too_large` (a media link failed its preflight check with RELAY_MEDIA_PREFLIGHT=enforce; `errors` names the field, `detail` says what was found and what is accepted; nothing was sent)", body = crate::http::error::Problem, content_type = "application/problem+json"),
        (status = 429, description = "`rate_limited`: a limit was hit and nothing was sent. `rule` names the relay's limit (`rate_per_minute`, `daily_quota`, `rate_per_second`, `recipient_interval_ms`); without `rule`, Qikchat itself is rate limiting", body = crate::http::error::Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying"),
                ("RateLimit-Limit" = u64, description = "As on 200, for callers with a rate or a daily quota"),
                ("RateLimit-Remaining" = u64, description = "As on 200"),
                ("RateLimit-Reset" = u64, description = "As on 200"))),
        (status = 500, description = "`internal_error`: a bug in the relay", body = crate::http::error::Problem, content_type = "application/problem+json"),
        (status = 502, description = "`upstream_error`: Qikchat failed or answered without an id; the message may have been sent", body = crate::http::error::Problem, content_type = "application/problem+json"),
        (status = 503, description = "`upstream_unavailable` (Qikchat, or Redis for a request with an Idempotency-Key or from a caller with limits, unreachable; the opt-out list unreadable; or the relay is shutting down) or `overloaded`; nothing was sent", body = crate::http::error::Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying"))),
        (status = 504, description = "`upstream_timeout`: no answer in time, or an earlier request with this Idempotency-Key was interrupted while sending; the message may or may not have been sent, and is never sent again under the same key", body = crate::http::error::Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn send(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> Response {
    let started = Instant::now();
    let request_id = headers
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let (result, attempt) = match super::with_idempotency_key(Message::parse(&body), &headers) {
        Ok((message, idempotency_key)) => {
            let options = Options {
                idempotency_key,
                request_id: request_id.clone(),
            };
            let Report { result, attempt } = state.relay.send(&caller, message, options).await;
            (result.map_err(ApiError::from), attempt)
        }
        Err(e) => (Err(e), SendAttempt::default()),
    };
    let outcome = match &result {
        Ok(sent) => sent.label(),
        Err(e) => e.code(),
    };
    Span::current().record("outcome", outcome);
    metrics::counter!(metric::SENDS_TOTAL, "caller" => caller.name.to_string(), "type" => type_label(&body), "outcome" => outcome)
        .increment(1);
    attempt.record(&caller.name, &request_id, outcome, started.elapsed());
    let mut response = match result {
        Ok(Outcome::Queued(sent)) => Json(sent).into_response(),
        Ok(Outcome::Replayed(answer)) => replay(answer),
        Err(e) => e.into_response(),
    };
    // Every answer to a caller with limits says where it stands, even one that sent nothing.
    let limit = match attempt.rate_limit {
        Some(limit) => Some(limit),
        None => limits::current(&state.relay.limiter, &caller.rules).await,
    };
    if let Some(limit) = limit {
        super::add_rate_limit_headers(response.headers_mut(), &limit);
    }
    response
}

/// A stored answer, given again as it was, marked as a replay.
fn replay(answer: Answer) -> Response {
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let content_type = if status.is_success() {
        "application/json"
    } else {
        crate::http::error::PROBLEM_JSON
    };
    (
        status,
        [
            (CONTENT_TYPE.as_str(), content_type),
            (idempotency::REPLAYED, "true"),
        ],
        answer.body,
    )
        .into_response()
}

/// The message type for metrics: one of the ten, or `invalid`, so labels stay bounded.
fn type_label(body: &Value) -> &'static str {
    let name = body.get("type").and_then(serde_json::Value::as_str);
    crate::message::MessageType::ALL
        .into_iter()
        .find(|t| Some(t.as_str()) == name)
        .map_or("invalid", |t| t.as_str())
}

/// Ready-to-send examples of each message type, shown in Swagger UI and checked by the tests.
pub fn examples() -> Vec<(&'static str, serde_json::Value)> {
    use serde_json::json;
    let to = "+918080808080";
    vec![
        (
            "text",
            json!({"to": to, "type": "text", "text": "Your OTP is 4711", "preview_url": false}),
        ),
        (
            "image",
            json!({"to": to, "type": "image", "link": "https://cdn.example.com/invoice.png", "caption": "Your invoice"}),
        ),
        (
            "video",
            json!({"to": to, "type": "video", "link": "https://cdn.example.com/welcome.mp4", "caption": "Welcome aboard"}),
        ),
        (
            "audio",
            json!({"to": to, "type": "audio", "link": "https://cdn.example.com/note.ogg"}),
        ),
        (
            "document",
            json!({"to": to, "type": "document", "link": "https://cdn.example.com/order.pdf", "caption": "Your order", "filename": "order-1234.pdf", "reference": "invoice-2026-0042"}),
        ),
        (
            "sticker",
            json!({"to": to, "type": "sticker", "link": "https://cdn.example.com/thanks.webp"}),
        ),
        (
            "location",
            json!({"to": to, "type": "location", "location": {"latitude": 19.0760, "longitude": 72.8777, "name": "Head office", "address": "Nariman Point, Mumbai"}}),
        ),
        (
            "contact",
            json!({"to": to, "type": "contact", "contact": {
            "name": {"formatted_name": "Support Desk", "first_name": "Support"},
            "phones": [{"phone": "+918080808081", "type": "WORK"}]}}),
        ),
        (
            "interactive_buttons",
            json!({"to": to, "type": "interactive", "interactive": {
            "type": "button", "body": {"text": "Confirm your appointment on Friday?"},
            "action": {"buttons": [
                {"type": "reply", "reply": {"id": "confirm", "title": "Confirm"}},
                {"type": "reply", "reply": {"id": "reschedule", "title": "Reschedule"}}]}}}),
        ),
        (
            "interactive_list",
            json!({"to": to, "type": "interactive", "interactive": {
            "type": "list", "body": {"text": "Which plan are you interested in?"},
            "action": {"button": "See plans", "sections": [{"title": "Plans", "rows": [
                {"id": "basic", "title": "Basic", "description": "For one person"},
                {"id": "family", "title": "Family", "description": "Up to five people"}]}]}}}),
        ),
        (
            "template",
            json!({"to": to, "type": "template", "template": {
            "name": "order_update", "language": "en",
            "header": {"type": "document", "link": "https://cdn.example.com/o.pdf", "filename": "order.pdf"},
            "body": ["Siva", "#1234"],
            "buttons": [{"type": "url", "text": "orders/1234"}]}}),
        ),
        (
            // Needs its declaration in the callers file, which gives the order:
            // [templates.delivery_slot] languages = ["en"], body = ["name", "order", "day"].
            "template_named",
            json!({"to": to, "type": "template", "template": {
            "name": "delivery_slot", "language": "en",
            "body": {"name": "Siva", "order": "#1234", "day": "Friday"}}}),
        ),
        (
            "template_components",
            json!({"to": to, "type": "template", "template": {
            "name": "order_update", "language": "en_US",
            "components": [
                {"type": "header", "parameters": [{"type": "image", "image": {"link": "https://cdn.example.com/banner.png"}}]},
                {"type": "body", "parameters": [{"type": "text", "text": "Siva"}, {"type": "text", "text": "#1234"}]}]}}),
        ),
    ]
}
