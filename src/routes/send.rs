//! `POST /send`: parse the request into a [`Message`], send it through the upstream, answer with
//! Qikchat's id.
//!
//! `routes/schema.rs` describes the accepted body for the OpenAPI document; the parser in
//! `message.rs` enforces it. Tests send every documented example through the parser, and
//! schemathesis (tests/external) checks that the two agree both ways.

use std::{sync::Arc, time::Instant};

use axum::{
    Json,
    extract::State,
    http::{HeaderMap, StatusCode, header::CONTENT_TYPE},
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::OwnedSemaphorePermit;

use tracing::{Instrument, Span, error, warn};
use utoipa::ToSchema;

use crate::{
    app::{AppState, REQUEST_ID},
    audit::SendAttempt,
    auth::Caller,
    error::{ApiError, FieldError, Result},
    idempotency::{self, Answer, Begin, Claim, Key},
    message::Message,
    policy::{self, Account, limits},
    preflight::{self, MediaProblem},
    qikchat,
    routes::JsonBody,
    webhooks::Owner,
};

/// Qikchat accepted the message for delivery.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SendResponse {
    /// Qikchat's message id (`sandbox-...` in sandbox mode); use it with `GET /messages/{id}`.
    #[schema(examples("52JH6WmuSruAVyXvBBYemd0Ia"))]
    pub id: String,
    /// Always `queued`: Qikchat accepted the message; delivery comes later.
    #[schema(examples("queued"))]
    pub status: String,
    /// Media links that failed their preflight check (`RELAY_MEDIA_PREFLIGHT=warn`): the message
    /// was sent, but Qikchat will probably fail to deliver it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<MediaProblem>,
}

#[utoipa::path(
    post,
    path = "/send",
    operation_id = "sendMessage",
    tag = "messages",
    summary = "Send one WhatsApp message",
    description = "Validates the message, sends it through Qikchat with the relay's key, and answers with Qikchat's message id. Nothing is sent when the answer is 4xx (except `rejected_by_qikchat`, where Qikchat itself refused it).",
    request_body(content = crate::routes::schema::SendRequest, description = "One message; `type` says which fields apply. See the examples."),
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe: 1 to 255 visible ASCII characters, scoped to the caller. A retry with the same key and the same request gets the first answer again (with `Idempotent-Replayed: true`) and sends nothing.", min_length = 1, max_length = 255, pattern = r"^[\x21-\x7E]{1,255}$")),
    responses(
        (status = 200, description = "Qikchat queued the message", body = SendResponse,
            headers(("Idempotent-Replayed" = String, description = "`true` when this is the stored answer to an earlier request with the same Idempotency-Key"),
                ("RateLimit-Limit" = u64, description = "Callers with a rate or a daily quota (on every answer to a send): the most sends allowed at once (burst) or per day, whichever is closer to running out"),
                ("RateLimit-Remaining" = u64, description = "Sends still allowed now under that limit"),
                ("RateLimit-Reset" = u64, description = "Seconds until that limit is full again (the quota: until 00:00 UTC)"))),
        (status = 409, description = "`idempotency_key_in_flight`: a request with this Idempotency-Key is still being sent; retry after `Retry-After` to get its answer", body = crate::error::Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying"))),
        (status = 400, description = "`malformed_request`: not JSON, or not `application/json`", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 401, description = "`unauthorized`: no or unknown bearer token", body = crate::error::Problem, content_type = "application/problem+json",
            headers(("WWW-Authenticate" = String, description = "`Bearer`"))),
        (status = 403, description = "`forbidden`: the caller may not send this message (its `types`, `templates`, `destinations` or `account` in the callers file); `rule` names the rule and `detail` says what was refused; nothing was sent", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 413, description = "`payload_too_large`: the body is over `RELAY_MAX_BODY_BYTES`", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 422, description = "`invalid_request` (`errors` names every bad field, `Idempotency-Key` included; nothing was sent), `rejected_by_qikchat` (`detail` carries Qikchat's message) `idempotency_key_reused` (the key was used for a different request; nothing was sent), or `media_unreachable`, `media_type_not_supported`, `media_too_large` (a media link failed its preflight check with RELAY_MEDIA_PREFLIGHT=enforce; `errors` names the field, `detail` says what was found and what is accepted; nothing was sent)", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 429, description = "`rate_limited`: a limit was hit and nothing was sent. `rule` names the relay's limit (`rate_per_minute`, `daily_quota`, `rate_per_second`, `recipient_interval_ms`); without `rule`, Qikchat itself is rate limiting", body = crate::error::Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying"),
                ("RateLimit-Limit" = u64, description = "As on 200, for callers with a rate or a daily quota"),
                ("RateLimit-Remaining" = u64, description = "As on 200"),
                ("RateLimit-Reset" = u64, description = "As on 200"))),
        (status = 500, description = "`internal_error`: a bug in the relay", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 502, description = "`upstream_error`: Qikchat failed or answered without an id; the message may have been sent", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 503, description = "`upstream_unavailable` (Qikchat, or Redis for a request with an Idempotency-Key or from a caller with limits, unreachable; or the relay is shutting down) or `overloaded`; nothing was sent", body = crate::error::Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying"))),
        (status = 504, description = "`upstream_timeout`: no answer in time, or an earlier request with this Idempotency-Key was interrupted while sending; the message may or may not have been sent, and is never sent again under the same key", body = crate::error::Problem, content_type = "application/problem+json"),
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
    let span = Span::current();
    let request_id = headers
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let mut attempt = SendAttempt::default();
    let result = deliver(
        &state,
        &caller,
        &headers,
        &body,
        &request_id,
        &span,
        &mut attempt,
    )
    .await;
    let outcome = match &result {
        Ok(sent) => sent.outcome,
        Err(e) => e.code(),
    };
    span.record("outcome", outcome);
    let shed = match &result {
        Err(ApiError::Overloaded) => Some("overloaded"),
        Err(ApiError::CallerOverloaded { .. }) => Some("caller_in_flight"),
        Err(ApiError::Draining) => Some("draining"),
        Err(ApiError::RateLimited { rule, .. }) => Some(rule.unwrap_or("rate_limited")),
        _ => None,
    };
    if let Some(reason) = shed {
        metrics::counter!("relay_rejections_total", "reason" => reason).increment(1);
    }
    metrics::counter!("relay_sends_total", "caller" => caller.name.to_string(), "type" => type_label(&body), "outcome" => outcome)
        .increment(1);
    attempt.record(&caller.name, &request_id, outcome, started.elapsed());
    let mut response = match result {
        Ok(sent) => sent.response,
        Err(e) => e.into_response(),
    };
    // Every answer to a caller with limits says where it stands, even one that sent nothing.
    let limit = match attempt.rate_limit {
        Some(limit) => Some(limit),
        None => limits::current(&state, &caller.rules).await,
    };
    if let Some(limit) = limit {
        limit.add_headers(response.headers_mut());
    }
    response
}

/// An answer to a send and its outcome for logs and metrics (`queued`, `replayed`).
struct Sent {
    response: Response,
    outcome: &'static str,
}

async fn deliver(
    state: &AppState,
    caller: &Caller,
    headers: &HeaderMap,
    body: &Value,
    request_id: &str,
    span: &Span,
    attempt: &mut SendAttempt,
) -> Result<Sent> {
    let message = Message::parse(body).map_err(ApiError::Invalid)?;
    let message_type = message.content.message_type().as_str();
    let to = message.to.masked();
    span.record("type", message_type);
    span.record("to", to.as_str());
    attempt.message_type = Some(message_type);
    attempt.to = Some(to);
    // What the caller may not send is refused before anything else happens.
    caller.rules.permit(&message)?;
    let account = caller.account()?;
    // From here to its answer the send counts towards the caller's own limit, link check
    // included, so one caller's hanging links fill only its own slots.
    let slot = match caller.rules.max_in_flight {
        None => None,
        Some(max) => {
            let taken = caller.policy.in_flight.take(&caller.name, max);
            Some(taken.ok_or_else(|| ApiError::CallerOverloaded {
                caller: caller.name.clone(),
                max,
            })?)
        }
    };
    let key = match headers.get(idempotency::HEADER) {
        None => None,
        Some(value) => Some(Key::parse(value).ok_or_else(|| {
            ApiError::Invalid(vec![FieldError::new(
                "Idempotency-Key",
                "must be 1 to 255 visible ASCII characters",
            )])
        })?),
    };
    attempt.idempotency_key_sha256 = key.as_ref().map(Key::sha256);

    // A send that would be shed claims, counts and fetches nothing. The permit itself is taken
    // only after the link check, so that slow links never hold RELAY_MAX_IN_FLIGHT from others.
    if state.is_draining() {
        return Err(ApiError::Draining);
    }
    if state.in_flight.available_permits() == 0 {
        return Err(ApiError::Overloaded);
    }

    // The key is claimed before anything is sent: a duplicate waits for nothing and sends nothing.
    let claim = match key {
        None => None,
        Some(key) => {
            let normalised = serde_json::to_vec(&qikchat::send_body(&message)).unwrap_or_default();
            let begun = state
                .idempotency
                .begin(&caller.name, &key, &idempotency::fingerprint(&normalised))
                .await;
            let begun = begun.map_err(unprotected)?;
            let result = match &begun {
                Begin::Proceed(_) => None,
                Begin::Replay(_) => Some("replayed"),
                Begin::InFlight => Some("in_flight"),
                Begin::Reused => Some("reused"),
                Begin::OutcomeUnknown => Some("outcome_unknown"),
            };
            if let Some(result) = result {
                metrics::counter!("relay_idempotency_total", "result" => result).increment(1);
            }
            match begun {
                Begin::Proceed(claim) => Some(claim),
                Begin::InFlight => return Err(ApiError::IdempotencyKeyInFlight),
                Begin::Reused => return Err(ApiError::IdempotencyKeyReused),
                Begin::OutcomeUnknown => return Err(ApiError::OutcomeUnknown),
                Begin::Replay(answer) => {
                    attempt.qikchat_id = serde_json::from_str::<SendResponse>(&answer.body)
                        .ok()
                        .map(|sent| sent.id);
                    return Ok(Sent {
                        response: replay(answer),
                        outcome: "replayed",
                    });
                }
            }
        }
    };

    // After the claim, so a replay is never limited; a refusal frees the key for a retry.
    match limits::check(state, &caller.rules, &account.spec, &message.to).await {
        Ok(headers) => attempt.rate_limit = headers,
        Err((e, headers)) => {
            attempt.rate_limit = headers;
            if let Some(claim) = claim {
                state.idempotency.finish(claim, None).await;
            }
            return Err(e);
        }
    }

    // After the claim, so that a replay gives its answer again without fetching anything, and
    // after the limits, so that a caller at its limit makes the relay fetch nothing. A link that
    // fails in enforce mode sends nothing and frees the key for a retry, but keeps the rate and
    // quota it used: the relay did fetch for it, and the caller's rate is what bounds how many
    // fetches it can cause (given back, a caller could have bad or hanging links checked without
    // end).
    let warnings = state.preflight.check(&message).await;
    if !warnings.is_empty() && state.preflight.mode == preflight::Mode::Enforce {
        if let Some(claim) = claim {
            state.idempotency.finish(claim, None).await;
        }
        return Err(ApiError::Media(warnings));
    }

    // The relay may have begun draining or filled up during the check: then nothing is sent,
    // and the key is free for a retry. A drain waits for the permits of sends that have started,
    // not for link checks, so none starts once it has begun.
    let permit = if state.is_draining() {
        Err(ApiError::Draining)
    } else {
        state
            .in_flight
            .clone()
            .try_acquire_owned()
            .map_err(|_| ApiError::Overloaded)
    };
    let permit = match permit {
        Ok(permit) => permit,
        Err(e) => {
            if let Some(claim) = claim {
                state.idempotency.finish(claim, None).await;
            }
            return Err(e);
        }
    };

    // The send runs in its own task: a caller that hangs up must not cut it off half-way, nor
    // leave its key without an answer.
    let task = send_and_record(
        state.clone(),
        Sender {
            caller: caller.name.clone(),
            account,
        },
        message,
        warnings,
        claim,
        request_id.to_owned(),
        InFlight {
            _permit: permit,
            _slot: slot,
        },
    )
    .instrument(span.clone());
    let result = match tokio::spawn(task).await {
        Ok((result, qikchat_status)) => {
            attempt.qikchat_status = qikchat_status;
            result
        }
        Err(e) => {
            error!(error = %e, "the send task failed");
            Err(ApiError::Internal)
        }
    };
    attempt.qikchat_id = result.as_ref().ok().map(|sent| sent.id.clone());
    result.map(|accepted| Sent {
        response: Json(accepted).into_response(),
        outcome: "queued",
    })
}

/// Marks the key as sending, calls Qikchat, and stores the answer under the key when the message
/// may have gone out (success, refusal, failure, timeout); otherwise frees the key. Returns the
/// answer and Qikchat's HTTP status, when it answered.
async fn send_and_record(
    state: AppState,
    sender: Sender,
    message: Message,
    warnings: Vec<MediaProblem>,
    claim: Option<Claim>,
    request_id: String,
    _in_flight: InFlight,
) -> (Result<SendResponse>, Option<u16>) {
    let span = Span::current();
    let claim = match claim {
        Some(mut claim) => match state.idempotency.sending(&mut claim).await {
            Ok(()) => Some(claim),
            Err(e) => {
                state.idempotency.finish(claim, None).await;
                return (Err(unprotected(e)), None);
            }
        },
        None => None,
    };

    let result = sender.account.upstream.send(&message).await;
    if let Ok(accepted) = &result {
        // Recorded for every id the relay answers with: only its sender may read its status
        // (`GET /messages/{id}`), its statuses go back to this caller, and so can the customer's
        // replies (`inbound_replies`).
        let owner = Owner {
            caller: sender.caller.to_string(),
            account: sender.account.spec.name.clone(),
        };
        if let Err(e) = state
            .store
            .remember_owner(&accepted.id, &owner, &message.to, state.owner_ttl)
            .await
        {
            warn!(error = %e, "the message was sent, but its sender could not be recorded: its status reads and statuses will not reach its caller");
        }
    }
    let qikchat_status = match &result {
        Ok(accepted) => accepted.http_status,
        Err(e) => e.http_status(),
    };

    match &result {
        Ok(accepted) => {
            if let Some(status) = accepted.http_status {
                span.record("qikchat_status", status);
            }
            span.record("qikchat_id", accepted.id.as_str());
        }
        Err(e) => {
            if let Some(status) = e.http_status() {
                span.record("qikchat_status", status);
            }
            match e {
                qikchat::Error::KeyRefused { .. } => {
                    error!(error = %e, "Qikchat refused the relay's key")
                }
                _ => warn!(error = %e, "send failed"),
            }
        }
    }
    let result = result
        .map(|accepted| SendResponse {
            id: accepted.id,
            status: "queued".to_owned(),
            warnings,
        })
        .map_err(|e| (ApiError::from(&e), e));

    if let Some(claim) = claim {
        let answer = match &result {
            Ok(sent) => Some(Answer {
                status: 200,
                body: serde_json::to_string(sent).unwrap_or_default(),
            }),
            // These may have reached Qikchat: a retry must get this answer, never a second send.
            Err((
                error,
                qikchat::Error::Rejected { .. }
                | qikchat::Error::Failed { .. }
                | qikchat::Error::KeyRefused { .. }
                | qikchat::Error::Timeout(_),
            )) => Some(Answer {
                status: error.status().as_u16(),
                body: serde_json::to_string(&error.problem(&request_id)).unwrap_or_default(),
            }),
            // Nothing reached Qikchat (unreachable, rate limited): the key is free for a retry.
            Err(_) => None,
        };
        state.idempotency.finish(claim, answer).await;
    }
    (result.map_err(|(error, _)| error), qikchat_status)
}

/// What a send holds until it is over, even if the caller has hung up: its RELAY_MAX_IN_FLIGHT
/// permit (shutdown waits for every permit to come back) and its caller's `max_in_flight` slot.
struct InFlight {
    _permit: OwnedSemaphorePermit,
    _slot: Option<policy::Slot>,
}

/// A send with a key is refused rather than sent without protection against duplicates.
fn unprotected(e: idempotency::StoreError) -> ApiError {
    warn!(error = %e, "refusing a send with an Idempotency-Key: no protection against duplicates");
    ApiError::StoreUnavailable
}

/// Who sends: the caller, and its account as it was when the request arrived (a reload meanwhile
/// does not change the key).
struct Sender {
    caller: Arc<str>,
    account: Arc<Account>,
}

/// A stored answer, given again as it was, marked as a replay.
fn replay(answer: Answer) -> Response {
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let content_type = if status.is_success() {
        "application/json"
    } else {
        crate::error::PROBLEM_JSON
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
            json!({"to": to, "type": "document", "link": "https://cdn.example.com/order.pdf", "caption": "Your order", "filename": "order-1234.pdf"}),
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
            "template_components",
            json!({"to": to, "type": "template", "template": {
            "name": "order_update", "language": "en_US",
            "components": [
                {"type": "header", "parameters": [{"type": "image", "image": {"link": "https://cdn.example.com/banner.png"}}]},
                {"type": "body", "parameters": [{"type": "text", "text": "Siva"}, {"type": "text", "text": "#1234"}]}]}}),
        ),
    ]
}
