//! The pipeline for a message the outbox delivers: the same checks, link check, permit, call,
//! sender's record and audit event as `POST /send` ([`Relay::send`]), with three differences a
//! queue calls for. The account's pace is waited for rather than refused; the in-flight permit
//! too; and instead of an idempotency claim, the outbox's own `sending` mark is taken just before
//! the call (`start`), which is what makes the message never be sent twice.

use std::{collections::HashMap, future::Future, sync::Arc, time::Instant};

use super::{Error, Relay, SendResponse, call};
use crate::{
    audit::SendAttempt,
    message::Message,
    policy::{
        AccountSpec, Caller,
        limits::{self, Pace},
    },
};

/// Who goes next for an account's pace, within this replica. Each caller's messages queue in a
/// lane of their own (first come, first served), and only the head of each lane queues for the
/// account's turn: so the account's queue holds one message per caller, callers take turns, and
/// one caller's backlog never stands between another caller's message and the pace. (Tokio's
/// mutex serves its waiters in order.) A message that must wait for its customer's interval, a
/// wait of seconds, steps out of both queues while it waits.
#[derive(Default)]
pub struct PaceLanes(std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>);

impl PaceLanes {
    fn lane(&self, key: String) -> Arc<tokio::sync::Mutex<()>> {
        crate::lock(&self.0).entry(key).or_default().clone()
    }
}

/// What a delivery came to.
pub enum Delivery {
    /// Refused or held before the call; nothing was sent.
    NotSent(Error),
    /// `start` said no (the claim was lost, or the message canceled): nothing was sent.
    NotStarted,
    /// Qikchat was called: its answer, or why the call failed.
    Called(Result<SendResponse, Error>),
}

impl Relay {
    /// Delivers `message` for `caller`, as the outbox's message `relay_id`. `start` is awaited
    /// once everything is ready and before Qikchat is called; unless it returns `true`, nothing
    /// is sent. Writes the send's audit event (`request_id` is the message's id).
    pub async fn deliver_later<S>(
        self: &Arc<Self>,
        caller: &Caller,
        message: Message,
        relay_id: &str,
        start: S,
    ) -> Delivery
    where
        S: Future<Output = bool>,
    {
        let started = Instant::now();
        let mut attempt = SendAttempt {
            message_type: Some(message.content.message_type().as_str()),
            to: Some(message.to.masked()),
            ..SendAttempt::default()
        };
        let delivery = self
            .deliver_held(caller, message, relay_id, start, &mut attempt)
            .await;
        let outcome = match &delivery {
            Delivery::NotStarted => return delivery,
            Delivery::NotSent(e) | Delivery::Called(Err(e)) => (self.describe)(e).0,
            Delivery::Called(Ok(_)) => "queued".to_owned(),
        };
        if let Delivery::NotSent(e) | Delivery::Called(Err(e)) = &delivery {
            if let Some(reason) = e.rejection() {
                metrics::counter!(crate::metric::REJECTIONS_TOTAL, "reason" => reason).increment(1);
            }
        }
        attempt.record(&caller.name, relay_id, &outcome, started.elapsed());
        delivery
    }

    async fn deliver_held<S>(
        self: &Arc<Self>,
        caller: &Caller,
        message: Message,
        relay_id: &str,
        start: S,
        attempt: &mut SendAttempt,
    ) -> Delivery
    where
        S: Future<Output = bool>,
    {
        let (account, message, window_warning) = match self.judge(caller, message).await {
            Ok(judged) => judged,
            Err(e) => return Delivery::NotSent(e),
        };
        // The account's pace, shared by every replica: a message waits its turn, however long.
        if let Err(e) = self.wait_for_pace(caller, &account.spec, &message).await {
            return Delivery::NotSent(e);
        }
        let warnings = match self.check_media(&message, window_warning).await {
            Ok(warnings) => warnings,
            Err(e) => return Delivery::NotSent(e),
        };
        if self.is_draining() {
            return Delivery::NotSent(Error::Draining);
        }
        // A queued message waits for a permit where `/send` would answer `overloaded`.
        let Ok(permit) = self.in_flight.clone().acquire_owned().await else {
            return Delivery::NotSent(Error::Draining);
        };
        if !start.await {
            return Delivery::NotStarted;
        }
        let call = call::Call {
            sender: call::Sender {
                caller: caller.name.clone(),
                account,
                relay_id: Some(relay_id.to_owned()),
            },
            message,
            warnings,
            claim: None,
            request_id: relay_id.to_owned(),
            in_flight: call::InFlight {
                _permit: permit,
                _slot: None,
            },
        };
        // In its own task, as for `/send`: the call is never cut off half-way.
        Delivery::Called(self.call_in_own_task(call, attempt).await)
    }
}

impl Relay {
    /// Waits for `message`'s turn in its account's pace ([`PaceLanes`]), and takes it.
    async fn wait_for_pace(
        &self,
        caller: &Caller,
        account: &AccountSpec,
        message: &Message,
    ) -> Result<(), Error> {
        if account.rate.is_none() && account.recipient_rate.is_none() {
            return Ok(());
        }
        let lane = self
            .pace_lanes
            .lane(format!("{}\0{}", account.name, caller.name));
        let turn = self.pace_lanes.lane(account.name.clone());
        'queue: loop {
            let in_lane = lane.lock().await;
            let my_turn = turn.lock().await;
            loop {
                // A drain does not wait for paces: the message is put back for another replica.
                if self.is_draining() {
                    return Err(Error::Draining);
                }
                match limits::pace(&self.limiter, account, &message.to).await {
                    Ok(Pace::Go) => return Ok(()),
                    Ok(Pace::Wait {
                        wait,
                        recipient: false,
                    }) => tokio::time::sleep(wait).await,
                    Ok(Pace::Wait {
                        wait,
                        recipient: true,
                    }) => {
                        drop((my_turn, in_lane));
                        tokio::time::sleep(wait).await;
                        continue 'queue;
                    }
                    Err(refusal) => return Err(refusal.into()),
                }
            }
        }
    }
}
