//! Qikchat's webhooks: `POST /webhooks/qikchat/{secret}` stores an event and answers 200 once it
//! is durable; `GET /webhooks/dead-letters` and `POST /webhooks/dead-letters/{id}/replay` let an
//! operator see and resend what no subscriber took. The fan-out itself is `webhooks::fanout`.

use std::sync::Arc;

use axum::{
    Json,
    body::Bytes,
    extract::{Path, RawQuery, State, rejection::PathRejection},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use base64::Engine as _;
use secrecy::ExposeSecret;
use serde::Serialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tracing::{Span, info, warn};
use utoipa::{IntoParams, ToSchema};

use crate::{
    http::auth::credentials,
    http::error::{ApiError, Result},
    http::state::AppState,
    metric,
    policy::DEFAULT_ACCOUNT,
    webhooks::{DeadLetter, Ingested, Kind, Webhooks, event},
};

/// Which account's webhook this is: Qikchat calls one URL per account, so each account's URL
/// names it (`?account=brand2`); without it, the default account.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(
    dead_code,
    reason = "documents the query for OpenAPI; the handler parses it"
)]
pub struct AccountQuery {
    /// The account (WhatsApp number) whose webhook URL this is; `default` when absent.
    account: Option<String>,
}

/// What Qikchat gets back.
#[derive(Debug, Serialize, ToSchema)]
pub struct Received {
    /// `stored`; `duplicate` when the same event was received before (it is not passed on
    /// twice); `ignored` for an event that is neither a status nor a customer's message.
    #[schema(examples("stored"))]
    pub status: &'static str,
}

#[utoipa::path(
    post,
    path = "/webhooks/qikchat/{secret}",
    operation_id = "receiveQikchatWebhook",
    tag = "webhooks",
    summary = "Receive one event from Qikchat (its webhook URL)",
    description = "Point Qikchat's webhook at this URL (one per account; add `?account=<name>` for accounts other than `default`). The event is stored durably before the 200, then passed on to the subscribers in the callers file: a status to the caller that sent the message, a customer's message to the callers of that account. A duplicate is answered 200 and dropped. Enabled by `RELAY_WEBHOOK_SECRET`.",
    params(
        ("secret" = String, Path, description = "`RELAY_WEBHOOK_SECRET`; any other value gets 404"),
        AccountQuery,
    ),
    request_body(content = Object, description = "Qikchat's event: `{event, payload}` or `{message: {event, payload}}`"),
    responses(
        (status = 200, description = "Stored, a duplicate, or ignored (another kind of event)", body = Received),
        (status = 400, description = "`malformed_request`: not JSON, or no `event` and `payload`; nothing stored", body = crate::http::error::Problem, content_type = "application/problem+json"),
        (status = 401, description = "`unauthorized`: `RELAY_WEBHOOK_BASIC_AUTH` is set and the request's Basic Auth does not match", body = crate::http::error::Problem, content_type = "application/problem+json",
            headers(("WWW-Authenticate" = String, description = "`Basic realm=\"qikchat-relay\"`"))),
        (status = 404, description = "`not_found`: webhooks are off, the secret is wrong, or the account is unknown", body = crate::http::error::Problem, content_type = "application/problem+json"),
        (status = 503, description = "`upstream_unavailable`: the event could not be stored; `overloaded`: events not yet delivered fill `RELAY_WEBHOOK_STORE_MAX_MB`. Nothing stored; Qikchat should retry", body = crate::http::error::Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying"))),
    ),
    security(())
)]
pub async fn receive(
    State(state): State<AppState>,
    secret: std::result::Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Received>> {
    let hooks = enabled(&state)?;
    // A path that does not decode (`%FF`) cannot be the secret: a 404 like any wrong one.
    let Ok(Path(secret)) = secret else {
        warn!("a webhook call with a wrong secret was refused");
        return Err(not_found());
    };
    let expected = hooks.settings.path_secret.expose_secret().as_bytes();
    if !bool::from(digest(secret.as_bytes()).ct_eq(&digest(expected))) {
        // Logged without the path: it could be a mistyped secret.
        warn!("a webhook call with a wrong secret was refused");
        return Err(not_found());
    }
    if let Some((user, password)) = &hooks.settings.basic_auth {
        let expected = format!("{user}:{}", password.expose_secret());
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| credentials(v, "basic"))
            .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok())
            .unwrap_or_default();
        if !bool::from(digest(&presented).ct_eq(&digest(expected.as_bytes()))) {
            warn!("a webhook call without the configured Basic Auth was refused");
            return Err(ApiError::WebhookUnauthorized);
        }
    }
    let account = url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .find(|(key, _)| key == "account")
        .map_or_else(
            || DEFAULT_ACCOUNT.to_owned(),
            |(_, value)| value.into_owned(),
        );
    let Some(qikchat) = state.policy.current().accounts.get(&account).cloned() else {
        warn!(account, "a webhook call for an unknown account was refused");
        return Err(not_found());
    };
    let mut event = match event::parse(&body, &account, crate::unix_ms()) {
        Ok(event) => event,
        // Another kind of event (a template approval, ...): taken, so Qikchat does not retry it,
        // and dropped, as no subscriber asks for it.
        Err(event::Unreadable::UnknownEvent(name)) => {
            info!(
                event = name,
                "a Qikchat event that is neither a status nor a customer's message was ignored"
            );
            metrics::counter!(metric::WEBHOOK_EVENTS_TOTAL, "kind" => "other", "result" => "ignored")
                .increment(1);
            return Ok(Json(Received { status: "ignored" }));
        }
        Err(e) => return Err(ApiError::Malformed(format!("not a Qikchat event: {e}"))),
    };
    // Its text goes on to subscribers and status reads (a failure's reason, say), so it is
    // stored with the key withheld, once, rather than checked on every way out.
    qikchat.upstream.withhold_in(&mut event.payload);
    let span = Span::current();
    span.record("qikchat_id", event.message_id.as_str());
    let ingested = hooks.store.ingest(&event).await.map_err(|e| {
        warn!(error = %e, "a webhook event could not be stored; Qikchat will retry");
        ApiError::UpstreamUnavailable
    })?;
    let status = match ingested {
        Ingested::Stored => {
            hooks.wake.notify_waiters();
            "stored"
        }
        Ingested::Duplicate => "duplicate",
        Ingested::Full => {
            warn!(
                "a webhook event was refused: events not yet delivered fill RELAY_WEBHOOK_STORE_MAX_MB; Qikchat will retry"
            );
            metrics::counter!(metric::WEBHOOK_EVENTS_TOTAL, "kind" => kind(&event), "result" => "full")
                .increment(1);
            return Err(ApiError::WebhookStoreFull);
        }
    };
    metrics::counter!(metric::WEBHOOK_EVENTS_TOTAL, "kind" => kind(&event), "result" => status)
        .increment(1);
    span.record("outcome", status);
    Ok(Json(Received { status }))
}

#[utoipa::path(
    get,
    path = "/webhooks/dead-letters",
    operation_id = "listDeadLetters",
    tag = "webhooks",
    summary = "Deliveries that failed every attempt",
    params(super::ListQuery),
    responses(
        (status = 200, description = "The dead letters, newest first", body = Vec<DeadLetter>),
        (status = 401, description = "`unauthorized`: not `Authorization: Bearer <RELAY_ADMIN_TOKEN>` (always, when `RELAY_ADMIN_TOKEN` is not set)", body = crate::http::error::Problem, content_type = "application/problem+json",
            headers(("WWW-Authenticate" = String, description = "`Bearer`"))),
        (status = 404, description = "`not_found`: webhooks are off", body = crate::http::error::Problem, content_type = "application/problem+json"),
        (status = 422, description = "`invalid_request`: `limit` is not 1 to 1000", body = crate::http::error::Problem, content_type = "application/problem+json"),
    ),
    security(("admin" = []))
)]
pub async fn dead_letters(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Json<Vec<DeadLetter>>> {
    let hooks = admin(&state, &headers)?;
    let limit = super::limit(query.as_deref())?;
    let letters = hooks.store.dead_letters(limit).await.map_err(|e| {
        warn!(error = %e, "the dead letters could not be read");
        ApiError::UpstreamUnavailable
    })?;
    Ok(Json(letters))
}

#[utoipa::path(
    post,
    path = "/webhooks/dead-letters/{id}/replay",
    operation_id = "replayDeadLetter",
    tag = "webhooks",
    summary = "Deliver a dead letter again",
    description = "Puts the delivery back in line with its attempts reset; it is delivered as a new delivery would be, after any pending events of the same message.",
    params(("id" = String, Path, description = "The dead letter's `id` (its `webhook-id`)")),
    responses(
        (status = 202, description = "Back in line"),
        (status = 401, description = "`unauthorized`: not `Authorization: Bearer <RELAY_ADMIN_TOKEN>` (always, when `RELAY_ADMIN_TOKEN` is not set)", body = crate::http::error::Problem, content_type = "application/problem+json",
            headers(("WWW-Authenticate" = String, description = "`Bearer`"))),
        (status = 404, description = "`not_found`: no dead letter with this id, or webhooks are off", body = crate::http::error::Problem, content_type = "application/problem+json"),
    ),
    security(("admin" = []))
)]
pub async fn replay(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response> {
    let hooks = admin(&state, &headers)?;
    let replayed = hooks.store.replay(&id).await.map_err(|e| {
        warn!(error = %e, "a dead letter could not be replayed");
        ApiError::UpstreamUnavailable
    })?;
    if !replayed {
        return Err(ApiError::NotFound("no dead letter with this id".to_owned()));
    }
    info!(webhook_id = %id, "dead letter replayed");
    hooks.wake.notify_waiters();
    Ok(StatusCode::ACCEPTED.into_response())
}

fn enabled(state: &AppState) -> Result<&Arc<Webhooks>> {
    state.webhooks.as_ref().ok_or_else(not_found)
}

/// The dead-letter endpoints: the operator's token first (nobody else learns even whether
/// webhooks are on), then webhooks on.
fn admin<'a>(state: &'a AppState, headers: &HeaderMap) -> Result<&'a Arc<Webhooks>> {
    crate::http::auth::admin(state, headers)?;
    enabled(state)
}

fn not_found() -> ApiError {
    ApiError::NotFound("no such resource".to_owned())
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// The `kind` label of `relay_webhook_events_total`.
fn kind(event: &crate::webhooks::Event) -> &'static str {
    match event.kind {
        Kind::Status => "status",
        Kind::Inbound => "inbound",
    }
}
