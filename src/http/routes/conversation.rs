//! The conversation's endpoints: `GET /customers/{number}/window` for callers (is a free-form
//! message to this customer delivered now?) and the opt-out lists for operators (`GET /opt-outs`,
//! `PUT` and `DELETE /opt-outs/{number}`). Numbers reach no log, metric or answer in full: the
//! request's log line names the route template and the masked number.

use axum::{
    Json,
    extract::{Path, RawQuery, State, rejection::PathRejection},
    http::HeaderMap,
};
use serde::Serialize;
use tracing::{Span, error, info};
use utoipa::{IntoParams, ToSchema};

use crate::{
    conversation::{OptChange, OptOut, OptOutHow, WindowState},
    http::{
        auth::admin,
        error::{ApiError, Result},
        state::AppState,
    },
    message::{FieldError, Recipient},
    metric,
    policy::{Caller, DEFAULT_ACCOUNT},
};

/// The most opt-outs one list answer holds.
const MAX_LISTED: usize = 10_000;

#[utoipa::path(
    get,
    path = "/customers/{number}/window",
    operation_id = "getCustomerWindow",
    tag = "messages",
    summary = "Whether the customer's 24-hour window is open on your account",
    description = "WhatsApp delivers a message other than a template only within 24 hours (`RELAY_CUSTOMER_WINDOW_S`) of the customer's last message to the account. The relay learns of those messages from Qikchat's webhooks. `open: null` means it cannot tell yet: it has not received this account's webhooks for a whole window, and the customer has not written in that time.",
    params(("number" = String, Path, description = "The customer's number in international form, as in `to` (`+918080808080`; URL-encode the `+` as `%2B` where your client would read it as a space)", pattern = r"^\+[1-9][0-9]{7,14}$")),
    responses(
        (status = 200, description = "The window as the relay knows it", body = WindowState),
        (status = 401, description = "`unauthorized`", body = crate::http::error::Problem, content_type = "application/problem+json",
            headers(("WWW-Authenticate" = String, description = "`Bearer`"))),
        (status = 422, description = "`invalid_request`: the number is not one (field `number`)", body = crate::http::error::Problem, content_type = "application/problem+json"),
        (status = 503, description = "`upstream_unavailable`: the relay's store cannot be read", body = crate::http::error::Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying"))),
    ),
    security(("bearer" = []))
)]
pub async fn window(
    State(state): State<AppState>,
    caller: Caller,
    number: std::result::Result<Path<String>, PathRejection>,
) -> Result<Json<WindowState>> {
    let customer = customer(number)?;
    let facts = state
        .relay
        .store
        .customer_facts(&caller.rules.account, &customer)
        .await
        .map_err(|e| {
            error!(error = %e, "the relay's store cannot be read; the window is unknown");
            ApiError::ConversationUnavailable
        })?;
    let settings = &state.relay.conversation;
    let window = settings.window(&facts, crate::unix_ms());
    Ok(Json(WindowState::of(window, settings)))
}

/// Which account's list (`?account=`, `default` when absent).
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(
    dead_code,
    reason = "documents the query for OpenAPI; the handler parses it"
)]
pub struct AccountQuery {
    /// An account of the callers file; `default` when absent.
    account: Option<String>,
}

/// An account's opt-out list.
#[derive(Debug, Serialize, ToSchema)]
pub struct OptOutList {
    #[schema(examples("default"))]
    pub account: String,
    /// The customers who may not be sent to, the latest first (at most 10000).
    pub opt_outs: Vec<OptOut>,
}

/// A customer's place on an account's opt-out list, after a change.
#[derive(Debug, Serialize, ToSchema)]
pub struct OptOutState {
    #[schema(examples("default"))]
    pub account: String,
    /// The number, masked.
    #[schema(examples("+91******8080"))]
    pub customer: String,
    /// Whether sends to them are refused now (`forbidden`, rule `opted_out`).
    pub opted_out: bool,
    /// Since when and how, while opted out.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub entry: Option<OptOut>,
}

#[utoipa::path(
    get,
    path = "/opt-outs",
    operation_id = "listOptOuts",
    tag = "conversation",
    summary = "The customers who opted out of an account's messages",
    params(AccountQuery),
    responses(
        (status = 200, description = "The list, numbers masked", body = OptOutList),
        (status = 401, description = "`unauthorized`: no or wrong `RELAY_ADMIN_TOKEN` (or none is set)", body = crate::http::error::Problem, content_type = "application/problem+json",
            headers(("WWW-Authenticate" = String, description = "`Bearer`"))),
        (status = 422, description = "`invalid_request`: no such account (field `account`)", body = crate::http::error::Problem, content_type = "application/problem+json"),
        (status = 503, description = "`upstream_unavailable`: the relay's store cannot be read", body = crate::http::error::Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying"))),
    ),
    security(("admin" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Json<OptOutList>> {
    admin(&state, &headers)?;
    let account = account(&state, query.as_deref())?;
    let opt_outs = state
        .relay
        .store
        .opt_outs(&account, MAX_LISTED)
        .await
        .map_err(|e| {
            error!(error = %e, "the opt-out list cannot be read");
            ApiError::ConversationUnavailable
        })?;
    Ok(Json(OptOutList { account, opt_outs }))
}

#[utoipa::path(
    put,
    path = "/opt-outs/{number}",
    operation_id = "addOptOut",
    tag = "conversation",
    summary = "Put a customer on an account's opt-out list",
    description = "Sends to them are refused (403 `forbidden`, rule `opted_out`) until they write an opt-in keyword or an operator removes them. Already on it: unchanged, with its first date.",
    params(("number" = String, Path, description = "The customer's number, as in `to`", pattern = r"^\+[1-9][0-9]{7,14}$"), AccountQuery),
    responses(
        (status = 200, description = "On the list", body = OptOutState),
        (status = 401, description = "`unauthorized`", body = crate::http::error::Problem, content_type = "application/problem+json",
            headers(("WWW-Authenticate" = String, description = "`Bearer`"))),
        (status = 422, description = "`invalid_request`: the number or the account (field `number` or `account`)", body = crate::http::error::Problem, content_type = "application/problem+json"),
        (status = 503, description = "`upstream_unavailable`: the relay's store cannot be written", body = crate::http::error::Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying"))),
    ),
    security(("admin" = []))
)]
pub async fn add(
    state: State<AppState>,
    headers: HeaderMap,
    number: std::result::Result<Path<String>, PathRejection>,
    query: RawQuery,
) -> Result<Json<OptOutState>> {
    change(state, headers, number, query, true).await
}

#[utoipa::path(
    delete,
    path = "/opt-outs/{number}",
    operation_id = "removeOptOut",
    tag = "conversation",
    summary = "Take a customer off an account's opt-out list",
    description = "Sends to them go out again. Not on it: unchanged (200, `opted_out: false`).",
    params(("number" = String, Path, description = "The customer's number, as in `to`", pattern = r"^\+[1-9][0-9]{7,14}$"), AccountQuery),
    responses(
        (status = 200, description = "Off the list", body = OptOutState),
        (status = 401, description = "`unauthorized`", body = crate::http::error::Problem, content_type = "application/problem+json",
            headers(("WWW-Authenticate" = String, description = "`Bearer`"))),
        (status = 422, description = "`invalid_request`: the number or the account (field `number` or `account`)", body = crate::http::error::Problem, content_type = "application/problem+json"),
        (status = 503, description = "`upstream_unavailable`: the relay's store cannot be written", body = crate::http::error::Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying"))),
    ),
    security(("admin" = []))
)]
pub async fn remove(
    state: State<AppState>,
    headers: HeaderMap,
    number: std::result::Result<Path<String>, PathRejection>,
    query: RawQuery,
) -> Result<Json<OptOutState>> {
    change(state, headers, number, query, false).await
}

async fn change(
    State(state): State<AppState>,
    headers: HeaderMap,
    number: std::result::Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
    opted_out: bool,
) -> Result<Json<OptOutState>> {
    admin(&state, &headers)?;
    let customer = customer(number)?;
    let account = account(&state, query.as_deref())?;
    let change = OptChange {
        opted_out,
        how: OptOutHow::Admin,
        at_ms: crate::unix_ms(),
    };
    let entry = state
        .relay
        .store
        .change_opt_out(&account, &customer, change)
        .await
        .map_err(|e| {
            error!(error = %e, "the opt-out list cannot be written");
            ApiError::ConversationUnavailable
        })?;
    let direction = if opted_out { "opt_out" } else { "opt_in" };
    metrics::counter!(metric::OPT_OUT_CHANGES_TOTAL, "change" => direction, "how" => "admin")
        .increment(1);
    info!(
        account,
        change = direction,
        "an operator changed a customer's place on the opt-out list"
    );
    Ok(Json(OptOutState {
        account,
        customer: customer.masked(),
        opted_out: entry.is_some(),
        entry,
    }))
}

/// The customer a path names, recorded masked on the request's span; a path that does not
/// decode or is not a number is a 422 naming `number`.
fn customer(number: std::result::Result<Path<String>, PathRejection>) -> Result<Recipient> {
    let invalid = |why: &str| ApiError::Invalid(vec![FieldError::new("number", why)]);
    let Ok(Path(number)) = number else {
        return Err(invalid("is not a number in international form"));
    };
    let customer = Recipient::parse(&number).map_err(invalid)?;
    Span::current().record("to", customer.masked());
    Ok(customer)
}

/// The `account` of the query: one of the callers file, `default` when absent.
fn account(state: &AppState, query: Option<&str>) -> Result<String> {
    let account = url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .find(|(key, _)| key == "account")
        .map_or_else(
            || DEFAULT_ACCOUNT.to_owned(),
            |(_, value)| value.into_owned(),
        );
    if !state.policy.current().accounts.contains_key(&account) {
        return Err(ApiError::Invalid(vec![FieldError::new(
            "account",
            "is not an account of the callers file",
        )]));
    }
    Ok(account)
}
