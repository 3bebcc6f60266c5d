//! The call to Qikchat, in a task of its own: the key marked as sending, the call, the sender's
//! record, and the answer stored under the key.

use std::sync::Arc;

use tokio::sync::OwnedSemaphorePermit;
use tracing::{Instrument, Span, error, warn};

use super::{Error, Relay, SendResponse, Warning};
use crate::{
    audit::SendAttempt,
    idempotency::{self, Answer, Claim},
    message::Message,
    policy::{self, Account},
    preflight, qikchat,
    webhooks::Owner,
};

impl Relay {
    /// Runs [`Relay::send_and_record`] in a task of its own, so that a caller that goes away
    /// cannot cut the call off half-way nor leave its key without an answer, and notes what
    /// Qikchat answered in `attempt`.
    pub(super) async fn call_in_own_task(
        self: &Arc<Self>,
        call: Call,
        attempt: &mut SendAttempt,
    ) -> Result<SendResponse, Error> {
        let task = self
            .clone()
            .send_and_record(call)
            .instrument(Span::current());
        let result = match tokio::spawn(task).await {
            Ok((result, qikchat_status)) => {
                attempt.qikchat_status = qikchat_status;
                result
            }
            Err(e) => {
                error!(error = %e, "the send task failed");
                Err(Error::Internal)
            }
        };
        attempt.qikchat_id = result.as_ref().ok().map(|sent| sent.id.clone());
        result
    }

    /// The media preflight, and the warnings the send goes out with (the window's first): an
    /// error when a link failed in enforce mode.
    pub(super) async fn check_media(
        &self,
        message: &Message,
        window_warning: Option<Warning>,
    ) -> Result<Vec<Warning>, Error> {
        let media = self.preflight.check(message).await;
        if !media.is_empty() && self.preflight.mode == preflight::Mode::Enforce {
            return Err(Error::Media(media));
        }
        Ok(window_warning
            .into_iter()
            .chain(media.into_iter().map(Warning::from))
            .collect())
    }

    /// Marks the key as sending, calls Qikchat, and stores the answer under the key when the
    /// message may have gone out (success, refusal, failure, timeout); otherwise frees the key.
    /// Returns the answer and Qikchat's HTTP status, when it answered.
    async fn send_and_record(
        self: Arc<Self>,
        call: Call,
    ) -> (Result<SendResponse, Error>, Option<u16>) {
        let Call {
            sender,
            message,
            warnings,
            claim,
            request_id,
            in_flight: _in_flight,
        } = call;
        let span = Span::current();
        let claim = match claim {
            Some(mut claim) => match self.idempotency.sending(&mut claim).await {
                Ok(()) => Some(claim),
                Err(e) => {
                    self.idempotency.finish(claim, None).await;
                    return (Err(unprotected(e)), None);
                }
            },
            None => None,
        };

        let result = sender.account.upstream.send(&message).await;
        if let Ok(accepted) = &result {
            // Recorded for every id the relay answers with: only its sender may read its status
            // (`GET /messages/{id}`), its statuses go back to this caller, and so can the
            // customer's replies (`inbound_replies`).
            let owner = Owner {
                caller: sender.caller.to_string(),
                account: sender.account.spec.name.clone(),
                reference: message.reference.clone(),
                relay_id: sender.relay_id.clone(),
            };
            if let Err(e) = self
                .store
                .remember_owner(&accepted.id, &owner, Some(&message.to), self.owner_ttl)
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
            .map_err(Error::Qikchat);

        if let Some(claim) = claim {
            let answer = match &result {
                Ok(sent) => Some(Answer {
                    status: 200,
                    body: serde_json::to_string(sent).unwrap_or_default(),
                }),
                // A retry must get this answer, never a second send.
                Err(e) if e.may_have_been_sent() => Some((self.answer_for)(e, &request_id)),
                // Nothing reached Qikchat (unreachable, rate limited): the key is free for a
                // retry.
                Err(_) => None,
            };
            self.idempotency.finish(claim, answer).await;
        }
        (result, qikchat_status)
    }
}

/// One call to Qikchat, with all it needs: who sends, what, the warnings it goes out with, its
/// key's claim (none for the outbox, whose `sending` mark stands for it), the request id a stored
/// answer names, and what it holds until it is over.
pub(super) struct Call {
    pub(super) sender: Sender,
    pub(super) message: Message,
    pub(super) warnings: Vec<Warning>,
    pub(super) claim: Option<Claim>,
    pub(super) request_id: String,
    pub(super) in_flight: InFlight,
}

/// What a send holds until it is over, even if the caller has hung up: its RELAY_MAX_IN_FLIGHT
/// permit (shutdown waits for every permit to come back) and its caller's `max_in_flight` slot.
pub(super) struct InFlight {
    pub(super) _permit: OwnedSemaphorePermit,
    pub(super) _slot: Option<policy::Slot>,
}

/// Who sends: the caller, and its account as it was when the request arrived (a reload meanwhile
/// does not change the key).
pub(super) struct Sender {
    pub(super) caller: Arc<str>,
    pub(super) account: Arc<Account>,
    /// The outbox's id of the message, when the outbox sends it: its statuses name that id.
    pub(super) relay_id: Option<String>,
}

/// A send with a key is refused rather than sent without protection against duplicates.
pub(super) fn unprotected(e: idempotency::Error) -> Error {
    warn!(error = %e, "refusing a send with an Idempotency-Key: no protection against duplicates");
    Error::KeysUnavailable
}
