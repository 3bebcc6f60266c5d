//! The delivery worker, one per replica: claims due messages (fairly between callers, see
//! [`Store::claim`]), works on up to `RELAY_OUTBOX_CONCURRENCY` at once, and sends each through the
//! pipeline of `POST /send` ([`Relay::deliver_later`]). It also sweeps what a dead replica left
//! `sending`, keeps the outbox's gauges, and posts every change of a message to its caller's
//! `statuses` webhook.
//!
//! What a failure leads to: nothing reached Qikchat (unreachable, its 429, a store that could not
//! be read) → retried with exponential backoff and jitter until `valid_until`, then `expired`; the
//! relay's own rules refused it (opted out, forbidden, a template that no longer fits) or Qikchat
//! refused it → `failed`; anything that may have reached Qikchat (a timeout, a 5xx, an answer
//! without an id) → `unknown`, never sent again (`outcome.rs`).

use std::{sync::Arc, time::Duration};

use tokio::sync::{Notify, Semaphore};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{Instrument, info_span, warn};

use super::{Claimed, Record, Settings, Shares, State, Store, status};
use crate::{
    message::Message,
    metric,
    policy::{Caller, Live},
    relay::Relay,
    webhooks::Webhooks,
};

/// With nothing due, how often the store is asked again (an accepted message also wakes it).
const IDLE_POLL: Duration = Duration::from_millis(200);

/// How often stuck `sending` messages are swept and the gauges refreshed.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

pub struct Outbox {
    pub store: Store,
    pub settings: Settings,
    pub(super) relay: Arc<Relay>,
    policy: Arc<Live>,
    /// Where status changes go to callers, when webhooks are on.
    webhooks: Option<Arc<Webhooks>>,
    /// Messages this replica works on: `RELAY_OUTBOX_CONCURRENCY` permits.
    held: Arc<Semaphore>,
    /// How many messages this replica holds for each caller: no caller may hold more than half
    /// the permits, so one caller's backlog waiting for its pace leaves room for the
    /// others' messages (see [`Outbox::claim`]).
    held_by: std::sync::Mutex<std::collections::HashMap<String, usize>>,
    /// This replica's claims are made under this token.
    pub(super) token: String,
    pub wake: Notify,
}

impl Outbox {
    pub fn new(
        store: Store,
        settings: Settings,
        relay: Arc<Relay>,
        policy: Arc<Live>,
        webhooks: Option<Arc<Webhooks>>,
    ) -> Self {
        metrics::gauge!(metric::OUTBOX_MAX).set(settings.max as f64);
        Self {
            store,
            held: Arc::new(Semaphore::new(settings.concurrency)),
            settings,
            relay,
            policy,
            webhooks,
            held_by: std::sync::Mutex::default(),
            token: uuid::Uuid::new_v4().simple().to_string(),
            wake: Notify::new(),
        }
    }

    /// Runs the worker until `stop`; messages being sent finish (their tasks are `tasks`'), those
    /// claimed but not started are left to their lease.
    pub fn start(self: &Arc<Self>, tasks: &TaskTracker, stop: &CancellationToken) {
        let outbox = self.clone();
        let stop = stop.clone();
        let tracker = tasks.clone();
        tasks.spawn(async move {
            let mut last_sweep = tokio::time::Instant::now() - SWEEP_EVERY;
            while !stop.is_cancelled() {
                if last_sweep.elapsed() >= SWEEP_EVERY {
                    last_sweep = tokio::time::Instant::now();
                    outbox.sweep().await;
                }
                let claimed = match outbox.claim(&tracker).await {
                    Ok(claimed) => claimed,
                    Err(e) => {
                        // Said once a second at most, while the store is down.
                        warn!(error = %e, "the outbox cannot be read; due messages wait");
                        tokio::select! {
                            () = stop.cancelled() => {}
                            () = tokio::time::sleep(SWEEP_EVERY) => {}
                        }
                        continue;
                    }
                };
                if !claimed {
                    tokio::select! {
                        () = stop.cancelled() => {}
                        () = outbox.wake.notified() => {}
                        () = tokio::time::sleep(IDLE_POLL) => {}
                    }
                }
            }
        });
    }

    /// Claims as many due messages as there are free permits and starts each; `Ok(true)` when
    /// every permit found a message (there may be more).
    ///
    /// Fairness between callers, in three parts. The store shares each claim out in turn, one
    /// message per caller per round, the longest waiting first, so a caller with a few due
    /// messages is never behind another's backlog in a claim. No caller holds more than half the
    /// permits ([`Outbox::share`]): a backlog waiting for its account's pace cannot take every
    /// permit, so another caller's message is claimed at once. And at the pace callers take
    /// turns (`relay::PaceLanes`), so that message waits for one of the backlog, not for all.
    async fn claim(self: &Arc<Self>, tasks: &TaskTracker) -> Result<bool, super::Error> {
        let free = self.held.available_permits();
        if free == 0 || self.relay.is_draining() {
            // Woken again when one is done.
            return Ok(false);
        }
        let lease = millis(self.settings.lease);
        let shares = self.shares();
        let claimed = self.store.claim(free, lease, &self.token, &shares).await?;
        let full = claimed.len() == free;
        for message in claimed {
            let Ok(permit) = self.held.clone().try_acquire_owned() else {
                break;
            };
            *crate::lock(&self.held_by)
                .entry(message.caller.clone())
                .or_default() += 1;
            let outbox = self.clone();
            let span = info_span!("outbox", relay_id = %message.id, caller = %message.caller);
            tasks.spawn(
                async move {
                    let caller = message.caller.clone();
                    outbox.deliver(message).await;
                    outbox.let_go(&caller);
                    drop(permit);
                    outbox.wake.notify_one();
                }
                .instrument(span),
            );
        }
        Ok(full)
    }

    /// The most one caller may hold: half the permits (at least one). Half, not less: a single
    /// caller's campaign still has enough in flight to keep up with an account's pace of 80 a
    /// second against a Qikchat that takes 300 ms (32 at once, with the default 64).
    fn share(&self) -> usize {
        (self.settings.concurrency / 2).max(1)
    }

    /// This claim's shares: callers at their most get none, the others at most their share.
    fn shares(&self) -> Shares {
        let share = self.share();
        let held = crate::lock(&self.held_by);
        Shares {
            per_caller: Some(share),
            skip: held
                .iter()
                .filter(|(_, n)| **n >= share)
                .map(|(caller, _)| caller.clone())
                .collect(),
        }
    }

    fn let_go(&self, caller: &str) {
        let mut held = crate::lock(&self.held_by);
        if let Some(n) = held.get_mut(caller) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                held.remove(caller);
            }
        }
    }

    /// One message, from its claim to its end (or its next retry).
    async fn deliver(self: &Arc<Self>, message: Claimed) {
        let now = crate::unix_ms();
        if now >= message.valid_until_ms {
            return self.expire(&message).await;
        }
        let policy = self.policy.current();
        let rules = policy
            .callers
            .iter()
            .map(|(_, rules)| rules)
            .chain(policy.anonymous.iter())
            .find(|rules| *rules.name == *message.caller)
            .cloned();
        let Some(rules) = rules else {
            let error = (
                "forbidden".to_owned(),
                format!(
                    "caller {} is no longer in the callers file; nothing was sent",
                    message.caller
                ),
            );
            return self.end(&message, State::Failed, None, Some(error)).await;
        };
        let caller = Caller {
            name: rules.name.clone(),
            rules,
            policy,
        };
        let parsed = serde_json::from_str(&message.body)
            .map_err(|_| ())
            .and_then(|body| Message::parse(&body).map_err(|_| ()));
        let Ok(parsed) = parsed else {
            // Only a bug (or a hand-edited store) can put an unparsable body there.
            let error = (
                "internal_error".to_owned(),
                "the stored message could not be read; nothing was sent".to_owned(),
            );
            return self.end(&message, State::Failed, None, Some(error)).await;
        };

        // The lease is renewed while the message waits for its pace or a permit.
        let renewing = self.keep_lease(&message.id);
        let start = async {
            // Its pace may have taken it past its validity.
            if crate::unix_ms() >= message.valid_until_ms {
                self.expire(&message).await;
                return false;
            }
            let lease = millis(self.settings.lease);
            match self.store.start(&message.id, &self.token, lease).await {
                Ok(true) => {
                    self.publish(&message, State::Sending, None, None).await;
                    true
                }
                Ok(false) => false,
                Err(e) => {
                    warn!(error = %e, "the outbox cannot mark the message as sending; it is not sent now");
                    false
                }
            }
        };
        let delivery = self
            .relay
            .deliver_later(&caller, parsed, &message.id, start)
            .await;
        renewing.cancel();
        self.conclude(&message, delivery).await;
    }

    /// Renews the message's lease every third of it until the returned token is canceled.
    fn keep_lease(self: &Arc<Self>, id: &str) -> CancellationToken {
        let done = CancellationToken::new();
        let (outbox, id, until) = (self.clone(), id.to_owned(), done.clone());
        tokio::spawn(async move {
            let every = outbox.settings.lease / 3;
            loop {
                tokio::select! {
                    () = until.cancelled() => return,
                    () = tokio::time::sleep(every) => {}
                }
                let lease = millis(outbox.settings.lease);
                if let Err(e) = outbox.store.renew(&id, &outbox.token, lease).await {
                    warn!(error = %e, "the outbox cannot renew a claim; another replica may take the message (it is still sent once)");
                }
            }
        });
        done
    }

    /// Ends what dead replicas left `sending`, forgets old messages, and sets the gauges.
    async fn sweep(&self) {
        let retention = millis(self.relay.owner_ttl);
        match self.store.sweep(retention).await {
            Ok(lost) => {
                for record in lost {
                    metrics::counter!(metric::OUTBOX_TRANSITIONS_TOTAL, "status" => "unknown")
                        .increment(1);
                    warn!(relay_id = %record.id, "an outbox message was sending when its replica stopped: it is unknown, never sent again");
                    self.publish_record(&record).await;
                }
            }
            Err(e) => warn!(error = %e, "the outbox cannot be swept"),
        }
        match self.store.stats().await {
            Ok(stats) => {
                metrics::gauge!(metric::OUTBOX_WAITING).set(stats.waiting as f64);
                let age = stats.oldest_due_ms.map_or(0.0, |due| {
                    crate::unix_ms().saturating_sub(due) as f64 / 1000.0
                });
                metrics::gauge!(metric::OUTBOX_OLDEST_DUE_SECONDS).set(age);
            }
            Err(e) => warn!(error = %e, "the outbox's depth cannot be read"),
        }
    }

    /// Posts a change of `message` to its caller's `statuses` webhook (when webhooks are on).
    pub(super) async fn publish(
        &self,
        message: &Claimed,
        state: State,
        qikchat_id: Option<&str>,
        error: Option<(String, String)>,
    ) {
        let change = status::Change {
            id: &message.id,
            caller: &message.caller,
            account: &message.account,
            reference: message.reference.as_deref(),
            attempts: message.attempts,
            state,
            qikchat_id,
            error: error.as_ref(),
        };
        status::post(self.webhooks.as_deref(), &self.relay, change).await;
    }

    async fn publish_record(&self, record: &Record) {
        status::publish_record(self.webhooks.as_deref(), &self.relay, record).await;
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
