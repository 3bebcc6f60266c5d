//! The outbox over HTTP: `POST /messages` and `POST /messages/batch` (accepted now, delivered
//! later: [`crate::outbox`]), `DELETE /messages/{id}` (cancel), a relay id's record for
//! `GET /messages/{id}` (`messages.rs` hands `msg_` ids here), and the operator's dead letters.

use axum::{
    Json,
    extract::{Path, RawQuery, State},
    http::{
        HeaderMap, HeaderValue, StatusCode,
        header::{CONTENT_TYPE, LOCATION},
    },
    response::{IntoResponse, Response},
};
use serde_json::Value;

use crate::{
    http::{
        auth,
        error::{ApiError, Problem, REQUEST_ID},
        routes::JsonBody,
        state::AppState,
    },
    idempotency,
    message::FieldError,
    outbox::{self, Cancel, Refused, State as Stored, Submission, Taken},
    policy::Caller,
    qikchat::MessageStatus,
    webhooks,
};

mod bodies;

pub use bodies::{Accepted, BatchRequest, BatchResult, BatchResults, batch_examples, examples};
use bodies::{accepted_body, view};

/// The most messages one batch may hold.
pub const MAX_BATCH: usize = 1000;

#[utoipa::path(
    post,
    path = "/messages",
    operation_id = "queueMessage",
    tag = "messages",
    summary = "Queue a message: sent when due, at the account's pace",
    description = "Takes the body of `POST /send`, plus `send_at` and `valid_until`, checks it as `/send` would (the caller's rules, templates, opt-outs and window; its rate and quota count now), stores it durably and answers at once. The relay sends it when it is due, at the account's pace, at most once, and posts every change to the caller's `statuses` webhook.",
    request_body(content = crate::http::routes::schema::QueueRequest, description = "One message, as for `POST /send`, with optional `send_at` and `valid_until`."),
    params(("Idempotency-Key" = Option<String>, Header, nullable = false, description = "As on `POST /send`: a retry with the same key and body gets the same 202 (with `Idempotent-Replayed: true`) and stores nothing new.", min_length = 1, max_length = 255, pattern = r"^[\x21-\x7E]{1,255}$")),
    responses(
        (status = 202, description = "Stored: `status` is `accepted` or `scheduled`", body = Accepted,
            headers(("Location" = String, description = "`/messages/<id>`"),
                ("Idempotent-Replayed" = String, description = "`true` when an earlier request with this key stored it"))),
        (status = 400, description = "`malformed_request`", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`unauthorized`", body = Problem, content_type = "application/problem+json",
            headers(("WWW-Authenticate" = String, description = "`Bearer`"))),
        (status = 403, description = "`forbidden`: as on `POST /send` (`rule` names the rule, `opted_out` included); nothing was stored", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "`payload_too_large`", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`invalid_request` (`errors` names every bad field: `send_at` more than 35 days ahead, `valid_until` not later than `send_at` and now, and those of `POST /send`), `unknown_template`, `outside_customer_window`, `idempotency_key_reused`; nothing was stored", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`rate_limited`: the caller's `rate_per_minute` or `daily_quota` (the account's pace is never refused: a message waits for it)", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying"))),
        (status = 500, description = "`internal_error`", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`outbox_full` (RELAY_OUTBOX_MAX messages are waiting), `upstream_unavailable` (the outbox, the limits or the opt-out list cannot be reached, or the relay is shutting down); nothing was stored", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying"))),
    ),
    security(("bearer" = []))
)]
pub async fn accept(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> Response {
    let parsed = Submission::parse(&body, false, crate::unix_ms());
    let submission = match super::with_idempotency_key(parsed, &headers) {
        Ok((submission, key)) => Submission { key, ..submission },
        Err(e) => return e.into_response(),
    };
    let result = state.outbox.accept(&caller, vec![submission]).await;
    match result.into_iter().next() {
        Some(Ok(taken)) => accepted_response(taken),
        Some(Err(refused)) => refusal(refused).into_response(),
        None => ApiError::Internal.into_response(),
    }
}

#[utoipa::path(
    post,
    path = "/messages/batch",
    operation_id = "queueMessages",
    tag = "messages",
    summary = "Queue up to 1000 messages in one request",
    description = "Each item is a `POST /messages` body that may also carry `idempotency_key`. Every item is checked alone; those that pass are stored in one transaction. The answer has one result per item, in order: `{id, status}` or `{error}` (the problem `POST /messages` would have answered for it alone). A body that is not such a list is refused whole.",
    request_body(content = BatchRequest, description = "`{\"messages\": [...]}`, 1 to 1000 items"),
    responses(
        (status = 202, description = "A result per item, in order", body = BatchResults),
        (status = 400, description = "`malformed_request`", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`unauthorized`", body = Problem, content_type = "application/problem+json",
            headers(("WWW-Authenticate" = String, description = "`Bearer`"))),
        (status = 413, description = "`payload_too_large`: over `RELAY_MAX_BATCH_BYTES`", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`invalid_request`: `messages` is missing, not a list, empty, longer than 1000, or holds something other than objects, or the body has another field", body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "`internal_error`", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn batch(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> Response {
    let request_id = headers
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let items = match body.get("messages") {
        Some(Value::Array(items)) if (1..=MAX_BATCH).contains(&items.len()) => items,
        _ => {
            return ApiError::Invalid(vec![FieldError::new(
                "messages",
                "must be a list of 1 to 1000 messages",
            )])
            .into_response();
        }
    };
    if let Some(other) = body
        .as_object()
        .and_then(|o| o.keys().find(|k| *k != "messages"))
    {
        return ApiError::Invalid(vec![FieldError::new(other.clone(), "is not a field")])
            .into_response();
    }
    // A list of anything but objects is not a list of messages: refused whole, like a body that
    // is not a list (an object that is not a valid message is that item's refusal alone).
    if let Some(index) = items.iter().position(|item| !item.is_object()) {
        return ApiError::Invalid(vec![FieldError::new(
            format!("messages[{index}]"),
            "must be a message object",
        )])
        .into_response();
    }
    let now = crate::unix_ms();
    // The valid items go to the outbox together; each invalid one keeps its place and errors.
    let mut valid = Vec::with_capacity(items.len());
    let invalid: Vec<Option<Vec<FieldError>>> = items
        .iter()
        .map(|item| match Submission::parse(item, true, now) {
            Ok(submission) => {
                valid.push(submission);
                None
            }
            Err(errors) => Some(errors),
        })
        .collect();
    let mut accepted = state.outbox.accept(&caller, valid).await.into_iter();
    let results = invalid
        .into_iter()
        .map(|item| {
            let outcome = match item {
                Some(errors) => Err(ApiError::Invalid(errors)),
                None => match accepted.next() {
                    Some(Ok(taken)) => Ok(taken),
                    Some(Err(refused)) => Err(refusal(refused)),
                    None => Err(ApiError::Internal),
                },
            };
            match outcome {
                Ok(taken) => BatchResult::Accepted(accepted_body(taken)),
                Err(e) => BatchResult::Refused {
                    error: e.problem(&request_id),
                },
            }
        })
        .collect();
    (StatusCode::ACCEPTED, Json(BatchResults { results })).into_response()
}

#[utoipa::path(
    delete,
    path = "/messages/{id}",
    operation_id = "cancelMessage",
    tag = "messages",
    summary = "Cancel a queued or scheduled message",
    params(("id" = String, Path, description = "The id `POST /messages` answered with", pattern = "^msg_[0-9A-Z]{26}$")),
    responses(
        (status = 200, description = "Canceled: it will never be sent", body = MessageStatus),
        (status = 401, description = "`unauthorized`", body = Problem, content_type = "application/problem+json",
            headers(("WWW-Authenticate" = String, description = "`Bearer`"))),
        (status = 404, description = "`not_found`: not an outbox message of this caller", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`not_cancelable`: sending started, or it ended; `detail` names its status", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`upstream_unavailable`: the outbox cannot be reached", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying"))),
    ),
    security(("bearer" = []))
)]
pub async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Response {
    if !outbox::is_relay_id(&id) {
        return not_found().into_response();
    }
    match state.outbox.store.cancel(&caller.name, &id).await {
        Ok(Cancel::Canceled(record)) => {
            metrics::counter!(crate::metric::OUTBOX_TRANSITIONS_TOTAL, "status" => "canceled")
                .increment(1);
            outbox::status::publish_record(state.webhooks.as_deref(), &state.relay, &record).await;
            Json(view(&record, None)).into_response()
        }
        Ok(Cancel::NotCancelable(record)) => ApiError::NotCancelable {
            status: outbox::status::public_status(record.state),
        }
        .into_response(),
        Ok(Cancel::NotFound) => not_found().into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "the outbox cannot be reached to cancel a message");
            ApiError::OutboxUnavailable.into_response()
        }
    }
}

/// `GET /messages/{id}` for a relay id: the caller's own message, as stored, with Qikchat's later
/// status once it took it (from its webhooks).
pub async fn read(state: &AppState, caller: &Caller, id: &str) -> Result<MessageStatus, ApiError> {
    let record = state.outbox.store.get(id).await.map_err(|e| {
        tracing::warn!(error = %e, "the outbox cannot be read");
        ApiError::OutboxUnavailable
    })?;
    let Some(record) = record.filter(|r| *r.caller == *caller.name) else {
        return Err(not_found());
    };
    let mut later = None;
    if record.state == Stored::Queued && state.webhooks.is_some() {
        match state.relay.store.latest_status(id).await {
            Ok(Some(latest)) if webhooks::status_rank(&latest.status) > 1 => {
                let payload: Value = serde_json::from_str(&latest.payload).unwrap_or_default();
                later = Some((latest.status, payload));
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "the stored statuses cannot be read"),
        }
    }
    Ok(view(&record, later))
}

#[utoipa::path(
    get,
    path = "/outbox/dead-letters",
    operation_id = "listOutboxDeadLetters",
    tag = "operations",
    summary = "Outbox messages that ended failed or unknown (operators)",
    params(super::ListQuery),
    responses(
        (status = 200, description = "Newest first", body = Vec<MessageStatus>),
        (status = 422, description = "`invalid_request`: `limit` is not 1 to 1000", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`unauthorized`: RELAY_ADMIN_TOKEN is required", body = Problem, content_type = "application/problem+json",
            headers(("WWW-Authenticate" = String, description = "`Bearer`"))),
        (status = 503, description = "`upstream_unavailable`: the outbox cannot be reached", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying"))),
    ),
    security(("admin" = []))
)]
pub async fn dead_letters(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Json<Vec<MessageStatus>>, ApiError> {
    auth::admin(&state, &headers)?;
    let limit = super::limit(query.as_deref())?;
    let records = state.outbox.store.dead_letters(limit).await.map_err(|e| {
        tracing::warn!(error = %e, "the outbox cannot be read");
        ApiError::OutboxUnavailable
    })?;
    Ok(Json(records.iter().map(|r| view(r, None)).collect()))
}

fn not_found() -> ApiError {
    ApiError::NotFound("no such message of this caller in the outbox".to_owned())
}

fn accepted_response(taken: Taken) -> Response {
    let replayed = taken.replayed;
    let body = accepted_body(taken);
    let mut response = (StatusCode::ACCEPTED, Json(&body)).into_response();
    let headers = response.headers_mut();
    if let Ok(location) = HeaderValue::from_str(&format!("/messages/{}", body.id)) {
        headers.insert(LOCATION, location);
    }
    if replayed {
        headers.insert(idempotency::REPLAYED, HeaderValue::from_static("true"));
    }
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn refusal(refused: Refused) -> ApiError {
    match refused {
        Refused::Relay(e) => e.into(),
        Refused::KeyReused => ApiError::IdempotencyKeyReused,
        Refused::Full => ApiError::OutboxFull,
        Refused::Unavailable => ApiError::OutboxUnavailable,
    }
}
