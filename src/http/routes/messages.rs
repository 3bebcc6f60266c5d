//! `GET /messages/{id}`: a message's delivery status, for its sender only: from the latest status
//! Qikchat posted to the webhook, else from Qikchat's status lookup. A relay id (`msg_...`, from
//! `POST /messages`) is the outbox's record instead (`outbox.rs`).

use axum::{
    Json,
    extract::{Path, State},
    response::{IntoResponse, Response},
};
use tracing::{Span, error, warn};

use crate::{
    http::error::{ApiError, Result},
    http::state::AppState,
    message::FieldError,
    policy::Caller,
    policy::limits,
    qikchat::{self, MessageStatus},
};

/// Qikchat ids are ~25 alphanumerics; sandbox ids add `sandbox-`. Anything else is not an id.
const MAX_ID_LEN: usize = 128;

#[utoipa::path(
    get,
    path = "/messages/{id}",
    operation_id = "getMessageStatus",
    tag = "messages",
    summary = "Look up a message's delivery status",
    params(("id" = String, Path, description = "The id `POST /send` answered with (Qikchat's), or the one `POST /messages` answered with (the relay's, `msg_...`)", max_length = 128, pattern = "^[A-Za-z0-9_.:-]+$")),
    responses(
        (status = 200, description = "For Qikchat's id, the latest status: the last one Qikchat posted to the relay's webhook, else Qikchat's status lookup. For a relay id, the message's whole life in the outbox, with Qikchat's statuses once it took it", body = MessageStatus,
            headers(("RateLimit-Limit" = u64, description = "Callers with a rate or a daily quota: as on `POST /send` (a lookup takes nothing)"),
                ("RateLimit-Remaining" = u64, description = "As on `POST /send`"),
                ("RateLimit-Reset" = u64, description = "As on `POST /send`"))),
        (status = 401, description = "`unauthorized`", body = crate::http::error::Problem, content_type = "application/problem+json",
            headers(("WWW-Authenticate" = String, description = "`Bearer`"))),
        (status = 403, description = "`forbidden`: the caller's account is no longer configured (rule `account`)", body = crate::http::error::Problem, content_type = "application/problem+json"),
        (status = 404, description = "`not_found`: the caller did not send this id through the relay (or it was longer ago than `RELAY_MESSAGE_OWNER_TTL_S`), or Qikchat does not know it. A caller with `read_any_status` reads every message of its account", body = crate::http::error::Problem, content_type = "application/problem+json"),
        (status = 422, description = "`invalid_request`: the id is malformed", body = crate::http::error::Problem, content_type = "application/problem+json"),
        (status = 429, description = "`rate_limited`: Qikchat is rate limiting", body = crate::http::error::Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying"))),
        (status = 500, description = "`internal_error`", body = crate::http::error::Problem, content_type = "application/problem+json"),
        (status = 502, description = "`upstream_error`: Qikchat failed", body = crate::http::error::Problem, content_type = "application/problem+json"),
        (status = 503, description = "`upstream_unavailable`: Qikchat could not be reached, or the relay's message store cannot be read", body = crate::http::error::Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying"))),
        (status = 504, description = "`upstream_timeout`: Qikchat did not answer in time", body = crate::http::error::Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn status(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Response {
    let mut answer = if crate::outbox::is_relay_id(&id) {
        super::outbox::read(&state, &caller, &id)
            .await
            .map(Json)
            .into_response()
    } else {
        lookup(&state, &caller, id).await.into_response()
    };
    // A caller with limits learns where it stands on every answer (`RateLimit-*`).
    if let Some(limit) = limits::current(&state.relay.limiter, &caller.rules).await {
        super::add_rate_limit_headers(answer.headers_mut(), &limit);
    }
    answer
}

async fn lookup(state: &AppState, caller: &Caller, id: String) -> Result<Json<MessageStatus>> {
    let well_formed = !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'));
    if !well_formed {
        return Err(ApiError::Invalid(vec![FieldError::new(
            "id",
            "must be 1 to 128 of A-Z a-z 0-9 _ . : -",
        )]));
    }
    let span = Span::current();
    span.record("qikchat_id", id.as_str());
    // Only the caller's own messages, or with `read_any_status` its account's: anything else is
    // the same 404 as an id Qikchat does not know, and Qikchat is not asked (it would answer for
    // any id of the account, whoever sent it).
    let owner = state.relay.store.owner(&id).await.map_err(|e| {
        error!(error = %e, "the message store cannot be read; whose message this is is unknown");
        ApiError::OwnersUnavailable
    })?;
    let readable = match &owner {
        Some(owner) if *owner.caller == *caller.name => true,
        Some(owner) => caller.rules.read_any_status && owner.account == caller.rules.account,
        // Not recorded: not sent through the relay, or sent longer ago than its TTL. Qikchat
        // answers only for the caller's own account.
        None => caller.rules.read_any_status,
    };
    if !readable {
        span.record("outcome", "not_own");
        return Err(qikchat::Error::NotFound.into());
    }
    // The sender's own id for the message is the relay's to tell, whichever source answers.
    let reference = owner.as_ref().and_then(|owner| owner.reference.clone());
    // The latest status Qikchat posted to the webhook, when there is one: no call needed (its
    // text had the key withheld when it was received). Anything else is asked of Qikchat with
    // the caller's account.
    if let (Some(_), Some(_)) = (&owner, &state.webhooks) {
        match state.relay.store.latest_status(&id).await {
            Ok(Some(latest)) => {
                let payload = serde_json::from_str(&latest.payload).unwrap_or_default();
                if let Some(status) = MessageStatus::from_payload(&id, &payload) {
                    span.record("outcome", "from_webhook");
                    return Ok(Json(MessageStatus {
                        reference,
                        ..status
                    }));
                }
            }
            Ok(None) => {}
            Err(e) => warn!(error = %e, "the stored statuses cannot be read; asking Qikchat"),
        }
    }
    let account = caller.account()?;
    let result = account.upstream.status(&id).await;
    if let Some(status) = result.as_ref().err().and_then(qikchat::Error::http_status) {
        span.record("qikchat_status", status);
    }
    match result {
        Ok(status) => Ok(Json(MessageStatus {
            reference,
            ..status
        })),
        Err(e @ qikchat::Error::KeyRefused { .. }) => {
            error!(error = %e, "Qikchat refused the relay's key");
            Err(e.into())
        }
        Err(qikchat::Error::NotFound) => Err(qikchat::Error::NotFound.into()),
        Err(e) => {
            warn!(error = %e, "status lookup failed");
            Err(e.into())
        }
    }
}
