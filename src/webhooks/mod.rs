//! Qikchat's webhooks, received and fanned out to internal subscribers.
//!
//! - `http/routes/webhooks.rs` receives them: `POST /webhooks/qikchat/{secret}` stores the event and
//!   answers 200; the dead-letter endpoints are there too.
//! - [`event`]: reading Qikchat's bodies, writing what subscribers get.
//! - [`store`]: events and deliveries, durable (SQLite on disk, or Redis shared by replicas).
//! - [`fanout`]: routing each event to its subscribers and delivering it, signed, with retries.

pub mod event;
pub mod fanout;
pub mod redis_store;
pub mod sqlite_store;
pub mod store;

pub use fanout::Webhooks;

use std::{sync::Arc, time::Duration};

use crate::{
    conversation::{CustomerFacts, OptChange, OptOut},
    message::Recipient,
};

pub use store::{
    DeadLetter, Delivery, Error, Event, Ingested, Kind, LatestStatus, NewDelivery, Owner,
};

/// Where events live: this machine's disk, or Redis for every replica.
#[derive(Clone)]
pub enum Store {
    Sqlite(Arc<sqlite_store::SqliteStore>),
    Redis(redis_store::RedisStore),
}

/// How far along a message is, so a late `sent` never hides an earlier `read`: statuses of one
/// message can arrive out of order. Unknown statuses rank lowest; `failed` ranks highest.
pub fn status_rank(status: &str) -> u8 {
    match status {
        "queued" | "accepted" => 1,
        "sent" => 2,
        "delivered" => 3,
        "read" => 4,
        "failed" | "undelivered" | "deleted" => 5,
        _ => 0,
    }
}

impl Store {
    /// Stores an event before Qikchat is told it arrived; the same event twice is a duplicate.
    /// A status event also becomes the message's latest status unless a later one is known
    /// (by [`status_rank`]).
    pub async fn ingest(&self, event: &Event) -> Result<Ingested, Error> {
        dispatch!(self, s => s.ingest(event).await)
    }

    /// Events stored but not routed yet, including those whose router died (after `lease`):
    /// each with the handle [`Store::route`] takes.
    pub async fn unrouted(
        &self,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<(String, Event)>, Error> {
        dispatch!(self, s => s.unrouted(limit, lease).await)
    }

    /// Creates an event's deliveries and marks it routed, in one atomic step.
    pub async fn route(&self, handle: &str, deliveries: &[NewDelivery]) -> Result<(), Error> {
        dispatch!(self, s => s.route(handle, deliveries).await)
    }

    /// Claims up to `limit` deliveries that are due, each for `lease`: the oldest pending one of
    /// each order key only.
    pub async fn due(&self, limit: usize, lease: Duration) -> Result<Vec<Delivery>, Error> {
        dispatch!(self, s => s.due(limit, lease).await)
    }

    /// The subscriber took it: gone, and the next one of its order key becomes due.
    pub async fn delivered(&self, id: &str) -> Result<(), Error> {
        dispatch!(self, s => s.delivered(id).await)
    }

    /// An attempt failed: counted, and retried after `retry_in`, or, with `None`, made a dead
    /// letter (and the next one of its order key becomes due).
    pub async fn failed(
        &self,
        id: &str,
        retry_in: Option<Duration>,
        error: &str,
    ) -> Result<(), Error> {
        dispatch!(self, s => s.failed(id, retry_in, error).await)
    }

    /// The newest dead letters first.
    pub async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, Error> {
        dispatch!(self, s => s.dead_letters(limit).await)
    }

    /// Puts a dead letter back in line, its attempts reset. `false` if there is no such letter.
    pub async fn replay(&self, id: &str) -> Result<bool, Error> {
        dispatch!(self, s => s.replay(id).await)
    }

    /// Remembers who sent a message to `to`, for `ttl`: the message's statuses go back to them,
    /// and they are the last to have written to `to` on the owner's account (for
    /// `inbound_replies`; not for an outbox message's own id, which comes with no `to`). The
    /// number itself is not stored, only its pseudonym.
    pub async fn remember_owner(
        &self,
        message_id: &str,
        owner: &Owner,
        to: Option<&Recipient>,
        ttl: Duration,
    ) -> Result<(), Error> {
        dispatch!(self, s => s.remember_owner(message_id, owner, to, ttl).await)
    }

    /// Why the store cannot be written now (disk full, read-only, Redis out of memory), if it
    /// cannot. Cheap while writes succeed.
    pub async fn unwritable(&self) -> Option<String> {
        match self {
            Store::Sqlite(s) => s.unwritable().await,
            // A Redis that is down shows as `redis_unreachable`; this is one that refuses writes.
            Store::Redis(s) => s.unwritable().await,
        }
    }

    /// The bytes stored events take now (this replica's disk, or every replica's Redis), what
    /// `RELAY_WEBHOOK_STORE_MAX_MB` bounds.
    pub async fn bytes(&self) -> Result<u64, Error> {
        dispatch!(self, s => s.bytes().await)
    }

    pub async fn owner(&self, message_id: &str) -> Result<Option<Owner>, Error> {
        dispatch!(self, s => s.owner(message_id).await)
    }

    /// The caller that last sent a message to `customer` on `account`, within the owners' TTL.
    pub async fn last_sender(
        &self,
        account: &str,
        customer: &Recipient,
    ) -> Result<Option<String>, Error> {
        dispatch!(self, s => s.last_sender(account, customer).await)
    }

    /// The latest status received for a message, if any.
    pub async fn latest_status(&self, message_id: &str) -> Result<Option<LatestStatus>, Error> {
        dispatch!(self, s => s.latest_status(message_id).await)
    }

    /// Records an event of `account` received at `at_ms`: the account is watched from its first
    /// event on; for a customer's message, when they wrote, and the change of their place on the
    /// opt-out list that their words make, if any. Safe to repeat (events are routed at least
    /// once): the earliest and latest times are kept, and an older change never undoes a newer.
    pub async fn observe(
        &self,
        account: &str,
        at_ms: u64,
        inbound: Option<(&Recipient, Option<OptChange>)>,
    ) -> Result<(), Error> {
        dispatch!(self, s => s.observe(account, at_ms, inbound).await)
    }

    /// What is known of `customer`'s conversation with `account`, in one read.
    pub async fn customer_facts(
        &self,
        account: &str,
        customer: &Recipient,
    ) -> Result<CustomerFacts, Error> {
        dispatch!(self, s => s.customer_facts(account, customer).await)
    }

    /// The customers on `account`'s opt-out list, the latest first, at most `limit`.
    pub async fn opt_outs(&self, account: &str, limit: usize) -> Result<Vec<OptOut>, Error> {
        dispatch!(self, s => s.opt_outs(account, limit).await)
    }

    /// Applies `change` as [`Store::observe`] would, and answers the customer's place now: on the
    /// list (since when, how) or not.
    pub async fn change_opt_out(
        &self,
        account: &str,
        customer: &Recipient,
        change: OptChange,
    ) -> Result<Option<OptOut>, Error> {
        dispatch!(self, s => s.change_opt_out(account, customer, change).await)
    }
}
