//! What callers hear of their outbox messages: each change is stored as an event of the
//! message's own id (`data.id`, `webhooks::event::relay_status`) and routed like Qikchat's to the
//! caller's `statuses` subscriber: signed, retried, in order per message.

use tracing::warn;

use super::{Record, State};
use crate::{
    relay::Relay,
    webhooks::{Owner, Webhooks, event},
};

/// Posts the change `record` now shows (a cancel, a sweep), when webhooks are on.
pub async fn publish_record(webhooks: Option<&Webhooks>, relay: &Relay, record: &Record) {
    let change = Change {
        id: &record.id,
        caller: &record.caller,
        account: &record.account,
        reference: record.reference.as_deref(),
        attempts: record.attempts,
        state: record.state,
        qikchat_id: record.qikchat_id.as_deref(),
        error: record.error.as_ref(),
    };
    post(webhooks, relay, change).await;
}

/// One change of a message, as its status webhook tells it.
pub(super) struct Change<'a> {
    pub(super) id: &'a str,
    pub(super) caller: &'a str,
    pub(super) account: &'a str,
    pub(super) reference: Option<&'a str>,
    pub(super) attempts: u32,
    pub(super) state: State,
    pub(super) qikchat_id: Option<&'a str>,
    pub(super) error: Option<&'a (String, String)>,
}

/// Stores the change as an event of the message's own (`data.id` its relay id), routed like
/// Qikchat's to the caller's `statuses` subscriber: signed, retried, in order per message.
pub(super) async fn post(webhooks: Option<&Webhooks>, relay: &Relay, change: Change<'_>) {
    let Some(webhooks) = webhooks else {
        return;
    };
    let owner = Owner {
        caller: change.caller.to_owned(),
        account: change.account.to_owned(),
        reference: change.reference.map(str::to_owned),
        relay_id: None,
    };
    if let Err(e) = relay
        .store
        .remember_owner(change.id, &owner, None, relay.owner_ttl)
        .await
    {
        warn!(error = %e, "an outbox message's change cannot be posted: its sender cannot be recorded");
        return;
    }
    let status = public_status(change.state);
    let event = event::relay_status(
        change.id,
        change.account,
        status,
        change.attempts,
        change.qikchat_id,
        change
            .error
            .map(|(code, detail)| (code.as_str(), detail.as_str())),
        crate::unix_ms(),
    );
    webhooks.publish(&event).await;
}

/// What a caller is told of a stored state: a claim is still `accepted`.
pub fn public_status(state: State) -> &'static str {
    match state {
        State::Claimed => State::Accepted.as_str(),
        other => other.as_str(),
    }
}
