//! How the library's errors are answered: the policy's refusals, Qikchat's failures and the
//! pipeline's errors, each as an [`ApiError`]; and how a send's error is kept under its key.

use super::ApiError;
use crate::{
    idempotency::Answer,
    policy::{Refusal, TemplateRefusal},
    qikchat, relay,
};

/// The policy's refusals: 403 for a rule, 429 for a limit, 503 when limits cannot be checked.
impl From<Refusal> for ApiError {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::Forbidden { rule, detail } => Self::Forbidden { rule, detail },
            Refusal::Limited {
                rule,
                retry_after_s,
                detail,
            } => Self::RateLimited {
                retry_after_s,
                detail,
                rule: Some(rule),
            },
            Refusal::LimitsUnavailable => Self::LimitsUnavailable,
        }
    }
}

/// What Qikchat's answers mean for a caller.
impl From<&qikchat::Error> for ApiError {
    fn from(e: &qikchat::Error) -> Self {
        use qikchat::Error;
        match e {
            Error::Unreachable(_) => Self::UpstreamUnavailable,
            Error::Timeout(_) => Self::UpstreamTimeout,
            Error::Rejected { message, .. } => Self::RejectedByQikchat(message.clone()),
            Error::RateLimited { retry_after_s } => Self::RateLimited {
                retry_after_s: *retry_after_s,
                detail: "Qikchat is rate limiting the relay; nothing was sent".to_owned(),
                rule: None,
            },
            Error::KeyRefused { .. } | Error::Failed { .. } => Self::UpstreamError,
            Error::NotFound => Self::NotFound("no message with this id".to_owned()),
        }
    }
}

impl From<qikchat::Error> for ApiError {
    fn from(e: qikchat::Error) -> Self {
        Self::from(&e)
    }
}

/// How each of the pipeline's errors is answered.
impl From<&relay::Error> for ApiError {
    fn from(e: &relay::Error) -> Self {
        use relay::Error;
        match e {
            Error::Refused(refusal) => refusal.clone().into(),
            Error::CallerOverloaded { caller, max } => Self::CallerOverloaded {
                caller: caller.clone(),
                max: *max,
            },
            Error::Draining => Self::Draining,
            Error::Overloaded => Self::Overloaded,
            Error::KeyInFlight => Self::IdempotencyKeyInFlight,
            Error::KeyReused => Self::IdempotencyKeyReused,
            Error::OutcomeUnknown => Self::OutcomeUnknown,
            Error::KeysUnavailable => Self::StoreUnavailable,
            Error::Media(problems) => Self::Media(problems.clone()),
            Error::Qikchat(e) => e.into(),
            Error::Internal => Self::Internal,
            Error::OutsideCustomerWindow(detail) => Self::OutsideCustomerWindow(detail.clone()),
            Error::OptOutsUnavailable => Self::ConversationUnavailable,
            Error::Template(TemplateRefusal::Unknown { detail, errors }) => Self::UnknownTemplate {
                detail: detail.clone(),
                errors: errors.clone(),
            },
            Error::Template(TemplateRefusal::Mismatch(errors)) => Self::Invalid(errors.clone()),
        }
    }
}

impl From<relay::Error> for ApiError {
    fn from(e: relay::Error) -> Self {
        Self::from(&e)
    }
}

/// How a send's error is kept under its Idempotency-Key: exactly as its caller was answered, so
/// that a retry gets the same problem document (with the first request's id) again.
pub fn stored_answer(e: &relay::Error, request_id: &str) -> Answer {
    let error = ApiError::from(e);
    Answer {
        status: error.status().as_u16(),
        body: serde_json::to_string(&error.problem(request_id)).unwrap_or_default(),
    }
}

/// An error's `code` and `detail`, as its problem document gives them: what an outbox message
/// records when it fails.
pub fn describe(e: &relay::Error) -> (String, String) {
    let error = ApiError::from(e);
    (error.code().to_owned(), error.to_string())
}
