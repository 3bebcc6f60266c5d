//! Why a send did not come back with an id: the pipeline's own error. How each is answered over
//! HTTP (status, `code`, problem+json) is `error.rs`'s business, in `From<relay::Error> for ApiError`.

use std::sync::Arc;

use crate::{
    policy::{Refusal, Rule, TemplateRefusal},
    preflight::MediaProblem,
    qikchat,
};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The caller's rules or limits, or its account's pacing, refused the send.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The caller has its `max_in_flight` sends in flight.
    #[error("caller {caller} has {max} sends in flight, its most")]
    CallerOverloaded { caller: Arc<str>, max: u32 },
    /// Shutdown has begun.
    #[error("the relay is shutting down")]
    Draining,
    /// `RELAY_MAX_IN_FLIGHT` sends are in flight.
    #[error("too many sends in flight")]
    Overloaded,
    /// A send with the same key is under way.
    #[error("a send with this key is under way")]
    KeyInFlight,
    /// The key was used for a different message.
    #[error("the key was used for a different message")]
    KeyReused,
    /// A send with the same key was cut off after it started: it is never sent again.
    #[error("a send with this key was interrupted after it started")]
    OutcomeUnknown,
    /// The idempotency store cannot be reached: a send with a key is refused rather than sent
    /// without protection against duplicates.
    #[error("the idempotency store is unreachable")]
    KeysUnavailable,
    /// A media link failed its preflight check (`RELAY_MEDIA_PREFLIGHT=enforce`).
    #[error("a media link failed its check")]
    Media(Vec<MediaProblem>),
    /// Qikchat's call failed; whether anything went out depends on how ([`qikchat::Error`]).
    #[error(transparent)]
    Qikchat(#[from] qikchat::Error),
    /// The send's task failed (a bug): logged where it happened.
    #[error("the send task failed")]
    Internal,
    /// A free-form message to a customer whose window is known closed
    /// (`RELAY_CUSTOMER_WINDOW=enforce`): WhatsApp would take it and fail it later.
    #[error("{0}")]
    OutsideCustomerWindow(String),
    /// The opt-out list cannot be read: refused rather than sent to someone who may have said STOP.
    #[error("the opt-out list is unreachable")]
    OptOutsUnavailable,
    /// The template is not declared (`RELAY_TEMPLATES=declared`) or does not fit its declaration.
    #[error(transparent)]
    Template(#[from] TemplateRefusal),
}

impl Error {
    /// Why the relay turned a send away without trying it, for `relay_rejections_total`: the
    /// shedding reasons, the limits (`rate_limited` when it was Qikchat's own), and the declared
    /// templates' refusals (`unknown_template`, `template_mismatch`): a send refused for a
    /// template is a bug in its caller that costs nothing yet, and the count is how it is seen.
    pub fn rejection(&self) -> Option<&'static str> {
        match self {
            Self::Overloaded => Some("overloaded"),
            Self::CallerOverloaded { .. } => Some("caller_in_flight"),
            Self::Draining => Some("draining"),
            Self::Refused(Refusal::Limited { rule, .. }) => Some(Rule::as_str(*rule)),
            Self::Refused(Refusal::Forbidden {
                rule: Rule::OptedOut,
                ..
            }) => Some("opted_out"),
            Self::OutsideCustomerWindow(_) => Some("outside_customer_window"),
            Self::Qikchat(qikchat::Error::RateLimited { .. }) => Some("rate_limited"),
            Self::Template(TemplateRefusal::Unknown { .. }) => Some("unknown_template"),
            Self::Template(TemplateRefusal::Mismatch(_)) => Some("template_mismatch"),
            _ => None,
        }
    }

    /// Whether the message may have reached Qikchat: then a retry under the same key must get
    /// this answer again, never a second send.
    pub fn may_have_been_sent(&self) -> bool {
        matches!(
            self,
            Self::Qikchat(
                qikchat::Error::Rejected { .. }
                    | qikchat::Error::Failed { .. }
                    | qikchat::Error::KeyRefused { .. }
                    | qikchat::Error::Timeout(_),
            )
        )
    }
}
