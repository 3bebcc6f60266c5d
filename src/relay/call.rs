//! The call to Qikchat, in a task of its own: the key marked as sending, the call, the sender's
//! record, and the answer stored under the key.

use std::sync::Arc;

use tokio::sync::OwnedSemaphorePermit;
use tracing::{Span, error, warn};

use super::{Error, Relay, SendResponse, Warning};
use crate::{
    idempotency::{self, Answer, Claim},
    message::Message,
    policy::{self, Account},
    qikchat,
    webhooks::Owner,
};

impl Relay {
    /// Marks the key as sending, calls Qikchat, and stores the answer under the key when the
    /// message may have gone out (success, refusal, failure, timeout); otherwise frees the key.
    /// Returns the answer and Qikchat's HTTP status, when it answered.
    pub(super) async fn send_and_record(
        self: Arc<Self>,
        sender: Sender,
        message: Message,
        warnings: Vec<Warning>,
        claim: Option<Claim>,
        request_id: String,
        _in_flight: InFlight,
    ) -> (Result<SendResponse, Error>, Option<u16>) {
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
