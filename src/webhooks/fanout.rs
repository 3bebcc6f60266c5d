//! From stored events to subscribers: the router decides who gets each event, the deliverer
//! sends it, signed as Standard Webhooks specifies, and retries with exponential backoff and
//! jitter until it is taken or becomes a dead letter. Both run in every replica; the store makes
//! sure each event and each delivery is worked on by one of them at a time.

use std::{sync::Arc, time::Duration};

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use tokio::sync::Notify;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{debug, info, warn};

use super::{Delivery, Error, Event, Ingested, Kind, NewDelivery, Owner, Store, event};
use crate::{
    config::WebhookSettings,
    conversation::{OptChange, OptOutHow},
    message::Recipient,
    metric,
    policy::{InboundFilter, Live, OptKeywords},
};

/// How many events or deliveries one pass takes.
const BATCH: usize = 32;
/// How long an event may stay claimed by a router before another takes it over.
const ROUTE_LEASE: Duration = Duration::from_secs(30);
/// With nothing to do, how often the store is asked again (new events also wake the workers).
const IDLE_POLL: Duration = Duration::from_millis(200);
/// The longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(3600);

/// The webhook machinery of one relay: settings, store, and the bell new events ring.
pub struct Webhooks {
    pub settings: WebhookSettings,
    pub store: Store,
    pub wake: Notify,
    /// Callers and their subscribers, as reloaded.
    policy: Arc<Live>,
    http: reqwest::Client,
}

impl Webhooks {
    pub fn new(
        settings: WebhookSettings,
        store: Store,
        policy: Arc<Live>,
    ) -> Result<Arc<Self>, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(settings.delivery_timeout)
            .connect_timeout(settings.delivery_timeout.min(Duration::from_secs(3)))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("qikchat-relay/", env!("CARGO_PKG_VERSION")))
            .build()?;
        // Exported at 0 from the start, so that alerts on them have a series to work with.
        for kind in ["status", "inbound"] {
            for result in ["stored", "duplicate", "full"] {
                metrics::counter!(metric::WEBHOOK_EVENTS_TOTAL, "kind" => kind, "result" => result)
                    .increment(0);
            }
        }
        for outcome in ["delivered", "retried", "dead_letter"] {
            metrics::counter!(metric::WEBHOOK_DELIVERIES_TOTAL, "outcome" => outcome).increment(0);
        }
        metrics::counter!(metric::WEBHOOK_STORE_DROPPED_TOTAL).increment(0);
        Ok(Arc::new(Self {
            settings,
            store,
            wake: Notify::new(),
            policy,
            http,
        }))
    }

    /// Starts the router and the deliverer on `tasks`; they stop when `stop` is cancelled. A
    /// batch cut off half-way is safe: its events and deliveries stay leased and are taken up
    /// again when the leases run out (at least once, never lost).
    pub fn start(self: &Arc<Self>, tasks: &TaskTracker, stop: &CancellationToken) {
        let (router, stop_routing) = (self.clone(), stop.clone());
        tasks.spawn(async move {
            while stop_routing
                .run_until_cancelled(router.route_some())
                .await
                .is_some()
            {}
        });
        let (deliverer, stop_delivering) = (self.clone(), stop.clone());
        tasks.spawn(async move {
            while stop_delivering
                .run_until_cancelled(deliverer.clone().deliver_some())
                .await
                .is_some()
            {}
        });
    }

    /// Routes one batch of new events, or waits for some.
    async fn route_some(&self) {
        let events = match self.store.unrouted(BATCH, ROUTE_LEASE).await {
            Ok(events) if !events.is_empty() => events,
            Ok(_) => return self.idle().await,
            Err(e) => {
                warn!(error = %e, "webhook store unavailable for routing");
                return self.idle().await;
            }
        };
        for (handle, event) in events {
            // Before its deliveries: an event routed is one the conversation has seen.
            if let Err(e) = self.observe(&event).await {
                warn!(error = %e, "the conversation could not be updated; the event will be routed later");
                continue;
            }
            let deliveries = match self.deliveries(&event).await {
                Ok(deliveries) => deliveries,
                Err(e) => {
                    // Left unrouted: claimed again once its lease runs out.
                    warn!(error = %e, "cannot look up who sent a message; its status will be routed later");
                    continue;
                }
            };
            let count = deliveries.len();
            match self.store.route(&handle, &deliveries).await {
                Ok(()) => {
                    debug!(event = %event.key, deliveries = count, "webhook event routed");
                    self.wake.notify_waiters();
                }
                Err(e) => {
                    warn!(error = %e, "a webhook event could not be routed; it will be again")
                }
            }
        }
    }

    /// Stores an event the relay itself tells (an outbox message's change), to be routed like
    /// Qikchat's. Best effort: an event that cannot be stored is logged and lost, which loses a
    /// webhook call, never a message.
    pub async fn publish(&self, event: &Event) {
        match self.store.ingest(event).await {
            Ok(Ingested::Stored | Ingested::Duplicate) => self.wake.notify_waiters(),
            Ok(Ingested::Full) => {
                warn!(
                    status = event.status.as_deref(),
                    "the webhook store is full; an outbox message's status change is not posted"
                )
            }
            Err(e) => {
                warn!(error = %e, status = event.status.as_deref(), "an outbox message's status change cannot be stored; it is not posted")
            }
        }
    }

    /// What `event` tells of the conversation ([`Store::observe`]): the account is watched; a
    /// customer's message opens their window, and one of the account's keywords opts them out or
    /// in. Timed by the event's arrival, so that routing it again changes nothing.
    async fn observe(&self, event: &Event) -> Result<(), Error> {
        let customer = match event.kind {
            Kind::Inbound => event::customer(event),
            Kind::Status => None,
        };
        let change = customer.as_ref().and(event::text(event)).and_then(|text| {
            let policy = self.policy.current();
            let keywords = policy
                .accounts
                .get(&event.account)
                .map(|a| &a.spec.keywords);
            let opted_out = match keywords {
                Some(keywords) => keywords.change(text),
                None => OptKeywords::default().change(text),
            }?;
            Some(OptChange {
                opted_out,
                how: OptOutHow::Keyword,
                at_ms: event.received_at_ms,
            })
        });
        self.store
            .observe(
                &event.account,
                event.received_at_ms,
                customer.as_ref().map(|customer| (customer, change)),
            )
            .await?;
        if let Some(change) = change {
            let direction = if change.opted_out {
                "opt_out"
            } else {
                "opt_in"
            };
            metrics::counter!(metric::OPT_OUT_CHANGES_TOTAL, "change" => direction, "how" => "keyword")
                .increment(1);
            info!(account = %event.account, change = direction, "a customer's keyword changed their place on the opt-out list");
        }
        Ok(())
    }

    /// Who gets `event`: for a status, the caller that sent the message; for a customer's
    /// message, every caller of that account with an inbound subscriber whose filter wants it.
    async fn deliveries(&self, event: &Event) -> Result<Vec<NewDelivery>, Error> {
        let policy = self.policy.current();
        let callers = policy.callers.iter().map(|(_, rules)| rules);
        let delivery =
            |caller: &str, url: &url::Url, order: &str, reference: Option<&String>| NewDelivery {
                id: format!("msg_{}", uuid::Uuid::new_v4().simple()),
                caller: caller.to_owned(),
                url: url.to_string(),
                order_key: format!("{caller}:{order}"),
                reference: reference.cloned(),
            };
        match event.kind {
            Kind::Status => {
                let Some(Owner {
                    caller,
                    reference,
                    relay_id,
                    ..
                }) = self.store.owner(&event.message_id).await?
                else {
                    debug!(qikchat_id = %event.message_id, "a status for a message the relay did not send, or no longer remembers");
                    return Ok(Vec::new());
                };
                // A message the outbox sent: its statuses are told as the outbox's message's,
                // by an event of that id (stored before this one counts as routed).
                if let Some(own) = relay_id.and_then(|id| event::as_relay_status(event, &id)) {
                    self.store.ingest(&own).await?;
                    self.wake.notify_waiters();
                    return Ok(Vec::new());
                }
                Ok(callers
                    .filter(|rules| *rules.name == *caller)
                    .filter_map(|rules| {
                        let url = rules.webhooks.as_ref()?.statuses.as_ref()?;
                        Some(delivery(
                            &caller,
                            url,
                            &event.message_id,
                            reference.as_ref(),
                        ))
                    })
                    .collect())
            }
            Kind::Inbound => {
                let customer = event::customer(event);
                let first_word = event::text(event).and_then(InboundFilter::word);
                let subscribers: Vec<_> = callers
                    .filter(|rules| rules.account == event.account)
                    .filter_map(|rules| {
                        let hooks = rules.webhooks.as_ref()?;
                        Some((&*rules.name, hooks.inbound.as_ref()?, &hooks.inbound_filter))
                    })
                    .collect();
                let last_sender = match &customer {
                    Some(customer) if subscribers.iter().any(|(_, _, filter)| filter.replies) => {
                        self.store.last_sender(&event.account, customer).await?
                    }
                    _ => None,
                };
                let order = format!(
                    "from:{}",
                    customer
                        .as_ref()
                        .map(Recipient::pseudonym)
                        .unwrap_or_default()
                );
                Ok(subscribers
                    .into_iter()
                    .filter(|(caller, _, filter)| {
                        let replies_to_caller = last_sender.as_deref() == Some(*caller);
                        filter.wants(first_word.as_deref(), replies_to_caller)
                    })
                    .map(|(caller, url, _)| delivery(caller, url, &order, None))
                    .collect())
            }
        }
    }

    /// Makes one batch of due delivery attempts side by side, or waits for some to be due.
    async fn deliver_some(self: Arc<Self>) {
        let lease = self.settings.delivery_timeout + Duration::from_secs(5);
        let due = match self.store.due(BATCH, lease).await {
            Ok(due) if !due.is_empty() => due,
            Ok(_) => return self.idle().await,
            Err(e) => {
                warn!(error = %e, "webhook store unavailable for delivery");
                return self.idle().await;
            }
        };
        let mut attempts = tokio::task::JoinSet::new();
        for delivery in due {
            let this = self.clone();
            attempts.spawn(async move { this.attempt(delivery).await });
        }
        while attempts.join_next().await.is_some() {}
    }

    /// One attempt: success removes the delivery; a failure schedules the next attempt, or
    /// makes it a dead letter after `RELAY_WEBHOOK_MAX_ATTEMPTS`.
    async fn attempt(&self, delivery: Delivery) {
        let outcome = self.send(&delivery).await;
        let attempt = delivery.attempts + 1;
        let counted = match &outcome {
            Ok(()) => "delivered",
            Err(_) if attempt >= self.settings.max_attempts => "dead_letter",
            Err(_) => "retried",
        };
        metrics::counter!(metric::WEBHOOK_DELIVERIES_TOTAL, "outcome" => counted).increment(1);
        let stored = match outcome {
            Ok(()) => {
                debug!(webhook_id = %delivery.id, caller = %delivery.caller, attempt, "webhook delivered");
                self.store.delivered(&delivery.id).await
            }
            Err(error) if attempt >= self.settings.max_attempts => {
                warn!(webhook_id = %delivery.id, caller = %delivery.caller, attempt, error = %error, "webhook delivery failed for the last time: now a dead letter");
                self.store.failed(&delivery.id, None, &error).await
            }
            Err(error) => {
                let retry_in = backoff(self.settings.retry_base, delivery.attempts);
                info!(webhook_id = %delivery.id, caller = %delivery.caller, attempt, error = %error, retry_in_ms = retry_in.as_millis() as u64, "webhook delivery failed; retrying");
                self.store
                    .failed(&delivery.id, Some(retry_in), &error)
                    .await
            }
        };
        if let Err(e) = stored {
            // The lease runs out and the delivery is attempted again: at least once.
            warn!(error = %e, webhook_id = %delivery.id, "the outcome of a webhook delivery could not be stored");
        }
    }

    async fn send(&self, delivery: &Delivery) -> Result<(), String> {
        let policy_key = self.key_for(&delivery.caller);
        let Some(key) = policy_key else {
            return Err(format!(
                "caller {} has no webhook secret any more",
                delivery.caller
            ));
        };
        let timestamp = crate::unix_ms() / 1000;
        let signature = sign(&key, &delivery.id, timestamp, &delivery.body);
        let answer = self
            .http
            .post(&delivery.url)
            .header("content-type", "application/json")
            .header("webhook-id", &delivery.id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(delivery.body.clone())
            .send()
            .await
            .map_err(|e| crate::qikchat::error_chain(&e))?;
        if answer.status().is_success() {
            Ok(())
        } else {
            Err(format!("HTTP {}", answer.status().as_u16()))
        }
    }

    /// The caller's signing key as the policy has it now (a rotated secret signs the next
    /// attempt).
    fn key_for(&self, caller: &str) -> Option<Arc<[u8]>> {
        let policy = self.policy.current();
        policy
            .callers
            .iter()
            .find(|(_, rules)| *rules.name == *caller)
            .and_then(|(_, rules)| rules.webhooks.as_ref())
            .map(|hooks| hooks.key.0.clone())
    }

    async fn idle(&self) {
        let _ = tokio::time::timeout(IDLE_POLL, self.wake.notified()).await;
    }
}

/// `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`, as Standard Webhooks specifies.
pub fn sign(key: &[u8], id: &str, timestamp: u64, body: &str) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(key) {
        Ok(mac) => mac,
        // HMAC takes keys of any length.
        Err(_) => return String::new(),
    };
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body.as_bytes());
    let signature = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    format!("v1,{signature}")
}

/// `base * 2^attempts`, capped, with jitter of ±50% so that retries after an outage spread out.
pub fn backoff(base: Duration, attempts: u32) -> Duration {
    let exponential = base
        .saturating_mul(1u32 << attempts.min(20))
        .min(MAX_BACKOFF);
    exponential.mul_f64(0.5 + fastrand::f64())
}
