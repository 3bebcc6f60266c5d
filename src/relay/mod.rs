//! The send pipeline, without HTTP: [`Relay::send`] takes a caller, a parsed [`Message`] and its
//! [`Options`], and returns what happened ([`Report`]). `POST /send` is one adapter over it; a
//! worker that sends later would be another.
//!
//! The steps, in this order, each for a reason given where it is taken: the caller's rules, the
//! declared templates, its own in-flight slot, shedding (draining, `RELAY_MAX_IN_FLIGHT`), the
//! idempotency claim, the limits, the media preflight, the in-flight permit, then Qikchat in a
//! task of its own, the sender's record and the stored answer (`call.rs`). Why a send failed is
//! [`Error`].

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tracing::Span;
use utoipa::ToSchema;

mod call;
mod conversation;
mod error;
mod later;

pub use error::Error;
pub use later::{Delivery, PaceLanes};

use crate::{
    audit::SendAttempt,
    idempotency::{self, Answer, Begin, Claim, Idempotency, Key},
    message::Message,
    metric,
    policy::{Account, Caller, limits},
    preflight::{MediaProblem, Preflight},
    qikchat,
    ratelimit::Limiter,
    webhooks::Store,
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
    /// What the relay found that may stop the message on its way, though it was sent: media
    /// links that failed their check (`RELAY_MEDIA_PREFLIGHT=warn`), a customer-service window
    /// known closed (`RELAY_CUSTOMER_WINDOW=warn`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<Warning>,
}

/// Something the relay found that did not stop the send but may stop its delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Warning {
    /// The field it is about: `link`, `template.header.link`, or `type` for the window.
    #[schema(examples("type"))]
    pub field: String,
    /// `media_unreachable`, `media_type_not_supported`, `media_too_large` (a link failed its
    /// check) or `outside_customer_window` (the customer has not written within the window, so
    /// WhatsApp will deliver only a template). A string, not an enum: new codes may come.
    #[schema(examples("outside_customer_window"))]
    pub code: String,
    /// What was found.
    #[schema(examples(
        "the customer last wrote at 2026-12-02T09:12:44.120Z, longer ago than the customer-service window; WhatsApp delivers only a template message now; the message was sent, and will probably fail"
    ))]
    pub detail: String,
}

impl From<MediaProblem> for Warning {
    fn from(problem: MediaProblem) -> Self {
        Self {
            field: problem.field,
            code: problem.code.as_str().to_owned(),
            detail: problem.detail,
        }
    }
}

/// How a send is to be made, besides the message.
#[derive(Debug, Default)]
pub struct Options {
    /// Makes a retry safe: the first answer is given again and nothing is sent twice.
    pub idempotency_key: Option<Key>,
    /// Carried into a stored problem answer, so that a replay names the request that made it.
    pub request_id: String,
}

/// What a send came to, when it did not fail.
#[derive(Debug)]
pub enum Outcome {
    /// Qikchat took the message.
    Queued(SendResponse),
    /// An earlier send with the same key answered this, as stored: nothing was sent now.
    Replayed(Answer),
}

impl Outcome {
    /// For logs and metrics: `queued` or `replayed`.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Queued(_) => "queued",
            Self::Replayed(_) => "replayed",
        }
    }
}

/// A send's result and what is known about the attempt (the audit event, the rate headers).
pub struct Report {
    pub result: Result<Outcome, Error>,
    pub attempt: SendAttempt,
}

/// What the pipeline holds for every send.
pub struct Relay {
    /// Callers' rates and quotas, accounts' pacing: in memory, or in Redis shared by replicas.
    pub limiter: Arc<Limiter>,
    /// One permit per send in flight to Qikchat (`RELAY_MAX_IN_FLIGHT`).
    pub in_flight: Arc<Semaphore>,
    pub max_in_flight: usize,
    /// Set once shutdown starts: readiness fails and new sends are turned away.
    pub draining: AtomicBool,
    pub idempotency: Idempotency,
    pub preflight: Preflight,
    /// Who sent each message the relay answered with an id (always), and the webhook events
    /// (with webhooks on): in `RELAY_DATA_DIR`, or in Redis.
    pub store: Store,
    /// How long a message's sender is remembered (`RELAY_MESSAGE_OWNER_TTL_S`).
    pub owner_ttl: Duration,
    /// Whose outbox message goes next for each account's pace, in this replica.
    pub pace_lanes: PaceLanes,
    /// The customer-service window's length and how it holds sends (`RELAY_CUSTOMER_WINDOW`).
    pub conversation: crate::conversation::Settings,
    /// How an error that may have reached Qikchat is kept under its key, as its caller is
    /// answered (and will be again): `http::error::stored_answer`, problem+json. The pipeline
    /// itself knows no HTTP.
    pub answer_for: fn(&Error, &str) -> Answer,
    /// An error's `code` and `detail`, as its caller would read them over HTTP: what an outbox
    /// message that failed records (`http::error::describe`).
    pub describe: fn(&Error) -> (String, String),
}

impl Relay {
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Sends `message` for `caller`. Nothing is sent when the result is a client error (other
    /// than Qikchat's own refusal); a send that reached Qikchat finishes even if the caller of
    /// this future goes away.
    pub async fn send(
        self: &Arc<Self>,
        caller: &Caller,
        message: Message,
        options: Options,
    ) -> Report {
        let mut attempt = SendAttempt {
            message_type: Some(message.content.message_type().as_str()),
            to: Some(message.to.masked()),
            idempotency_key_sha256: options.idempotency_key.as_ref().map(Key::sha256),
            ..SendAttempt::default()
        };
        let span = Span::current();
        span.record("type", attempt.message_type);
        span.record("to", attempt.to.as_deref());
        let result = self.deliver(caller, message, options, &mut attempt).await;
        if let Some(reason) = result.as_ref().err().and_then(Error::rejection) {
            metrics::counter!(metric::REJECTIONS_TOTAL, "reason" => reason).increment(1);
        }
        Report { result, attempt }
    }

    async fn deliver(
        self: &Arc<Self>,
        caller: &Caller,
        message: Message,
        options: Options,
        attempt: &mut SendAttempt,
    ) -> Result<Outcome, Error> {
        let (account, message, window_warning) = self.judge(caller, message).await?;
        // From here to its answer the send counts towards the caller's own limit, link check
        // included, so one caller's hanging links fill only its own slots.
        let slot = match caller.rules.max_in_flight {
            None => None,
            Some(max) => {
                let taken = caller.policy.in_flight.take(&caller.name, max);
                Some(taken.ok_or_else(|| Error::CallerOverloaded {
                    caller: caller.name.clone(),
                    max,
                })?)
            }
        };

        // A send that would be shed claims, counts and fetches nothing. The permit itself is
        // taken only after the link check, so that slow links never hold RELAY_MAX_IN_FLIGHT
        // from others.
        if self.is_draining() {
            return Err(Error::Draining);
        }
        if self.in_flight.available_permits() == 0 {
            return Err(Error::Overloaded);
        }

        // The key is claimed before anything is sent: a duplicate waits for nothing and sends
        // nothing.
        let claim = match options.idempotency_key {
            None => None,
            Some(key) => match self.claim(caller, &key, &message, attempt).await? {
                Ok(claim) => Some(claim),
                Err(replayed) => return Ok(replayed),
            },
        };

        // After the claim, so a replay is never limited; a refusal frees the key for a retry.
        match limits::check(&self.limiter, &caller.rules, &account.spec, &message.to).await {
            Ok(headers) => attempt.rate_limit = headers,
            Err((e, headers)) => {
                attempt.rate_limit = headers;
                return Err(self.release(claim, e.into()).await);
            }
        }

        // After the claim, so that a replay gives its answer again without fetching anything,
        // and after the limits, so that a caller at its limit makes the relay fetch nothing. A
        // link that fails in enforce mode sends nothing and frees the key for a retry, but keeps
        // the rate and quota it used: the relay did fetch for it, and the caller's rate is what
        // bounds how many fetches it can cause (given back, a caller could have bad or hanging
        // links checked without end).
        let warnings = match self.check_media(&message, window_warning).await {
            Ok(warnings) => warnings,
            Err(e) => return Err(self.release(claim, e).await),
        };

        // The relay may have begun draining or filled up during the check: then nothing is
        // sent, and the key is free for a retry. A drain waits for the permits of sends that
        // have started, not for link checks, so none starts once it has begun.
        let permit = if self.is_draining() {
            Err(Error::Draining)
        } else {
            self.in_flight
                .clone()
                .try_acquire_owned()
                .map_err(|_| Error::Overloaded)
        };
        let permit = match permit {
            Ok(permit) => permit,
            Err(e) => return Err(self.release(claim, e).await),
        };

        // The send runs in its own task: a caller that hangs up must not cut it off half-way,
        // nor leave its key without an answer.
        let call = call::Call {
            sender: call::Sender {
                caller: caller.name.clone(),
                account,
                relay_id: None,
            },
            message,
            warnings,
            claim,
            request_id: options.request_id,
            in_flight: call::InFlight {
                _permit: permit,
                _slot: slot,
            },
        };
        self.call_in_own_task(call, attempt)
            .await
            .map(Outcome::Queued)
    }

    /// What the caller may not send is refused before anything else happens, and so is what the
    /// customer refused (an opt-out) or WhatsApp would fail (outside the window): the checks a
    /// message meets at `POST /send`, at acceptance into the outbox, and again at its delivery
    /// (the callers file, the templates or the customer may have changed meanwhile). Returns the
    /// caller's account, the message with its declared template resolved, and the window's
    /// warning.
    pub async fn judge(
        &self,
        caller: &Caller,
        message: Message,
    ) -> Result<(Arc<Account>, Message, Option<Warning>), Error> {
        caller.rules.permit(&message)?;
        let account = caller.account()?;
        // A declaration may be one account's, so templates are checked once the account is
        // known, and before the key is claimed: the claim's fingerprint is over the body as
        // sent, where a body by name is already the declared list.
        let message = caller
            .policy
            .templates
            .resolve(&account.spec.name, message)?;
        let window_warning = self.hold_by_conversation(caller, &message).await?;
        Ok((account, message, window_warning))
    }

    /// Claims `key` for this send; `Err` carries the stored answer of an earlier one.
    async fn claim(
        &self,
        caller: &Caller,
        key: &Key,
        message: &Message,
        attempt: &mut SendAttempt,
    ) -> Result<Result<Claim, Outcome>, Error> {
        let normalised = normalised(message);
        let begun = self
            .idempotency
            .begin(&caller.name, key, &idempotency::fingerprint(&normalised))
            .await
            .map_err(call::unprotected)?;
        let result = match &begun {
            Begin::Proceed(_) => None,
            Begin::Replay(_) => Some("replayed"),
            Begin::InFlight => Some("in_flight"),
            Begin::Reused => Some("reused"),
            Begin::OutcomeUnknown => Some("outcome_unknown"),
        };
        if let Some(result) = result {
            metrics::counter!(metric::IDEMPOTENCY_TOTAL, "result" => result).increment(1);
        }
        match begun {
            Begin::Proceed(claim) => Ok(Ok(claim)),
            Begin::InFlight => Err(Error::KeyInFlight),
            Begin::Reused => Err(Error::KeyReused),
            Begin::OutcomeUnknown => Err(Error::OutcomeUnknown),
            Begin::Replay(answer) => {
                attempt.qikchat_id = serde_json::from_str::<SendResponse>(&answer.body)
                    .ok()
                    .map(|sent| sent.id);
                Ok(Err(Outcome::Replayed(answer)))
            }
        }
    }

    /// Frees the key of a send that went no further, for a retry, and passes on why.
    async fn release(&self, claim: Option<Claim>, e: Error) -> Error {
        if let Some(claim) = claim {
            self.idempotency.finish(claim, None).await;
        }
        e
    }
}

/// What makes two sends "the same request" under one `Idempotency-Key`: Qikchat's body, then the
/// caller's `reference` after a NUL byte. JSON never holds a raw NUL, so no body without a
/// reference reads like one with it, and a body without a reference fingerprints exactly as it
/// did before references existed: keys stored by an older relay still match after an upgrade.
pub fn normalised(message: &Message) -> Vec<u8> {
    let mut normalised = serde_json::to_vec(&qikchat::send_body(message)).unwrap_or_default();
    if let Some(reference) = &message.reference {
        normalised.push(0);
        normalised.extend_from_slice(reference.as_bytes());
    }
    normalised
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_reference_changes_the_fingerprint_and_its_absence_leaves_it_as_it_was() {
        let parse = |body| Message::parse(&body).unwrap_or_else(|e| panic!("{e:?}"));
        let body = json!({"to": "+918080808080", "type": "text", "text": "Hi"});
        let plain = parse(body.clone());
        let before = serde_json::to_vec(&qikchat::send_body(&plain)).unwrap_or_default();
        assert_eq!(
            normalised(&plain),
            before,
            "the fingerprint of an older relay"
        );
        let with = |reference: &str| {
            let mut body = body.clone();
            body["reference"] = reference.into();
            normalised(&parse(body))
        };
        assert_ne!(with("a"), before);
        assert_ne!(with("a"), with("b"));
        assert_eq!(with("a"), with("a"));
    }
}
