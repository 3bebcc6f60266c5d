//! Where webhook events and their deliveries live until they are delivered: [`Store`], over an
//! embedded SQLite database on local disk (`RELAY_DATA_DIR`, the default) or Redis (Streams with
//! a consumer group, shared by every replica, when `RELAY_REDIS_URL` is set).
//!
//! The life of an event, the same in both:
//! 1. [`Store::ingest`]: the event is stored durably (or recognised as a duplicate) before
//!    Qikchat gets its 200.
//! 2. [`Store::unrouted`] / [`Store::route`]: a router turns each event into deliveries, one per
//!    subscriber, in one atomic step. An event whose router died is routed again.
//! 3. [`Store::due`] claims deliveries whose time has come, for a lease; only the oldest pending
//!    delivery of a message to a subscriber is ever due, so a message's events arrive in order.
//!    A worker that dies loses its lease, and another delivers (at least once).
//! 4. [`Store::delivered`] removes a delivery; [`Store::failed`] schedules its retry, or makes it
//!    a dead letter, which [`Store::replay`] puts back.

use serde::{Deserialize, Serialize};

/// Where a full store drops delivered events down to, as a share of `RELAY_WEBHOOK_STORE_MAX_MB`,
/// in both stores: 10% of the bound is freed at once, so the search for delivered events runs once
/// per tenth of the bound filled, not on every event of a full store.
pub const ROOM_AFTER_DROPPING: f64 = 0.9;

/// The last write a store's backend refused for a lasting reason (disk full, read-only, Redis
/// out of memory), until a write succeeds again: what `/readyz` reports as `store_unwritable`.
#[derive(Debug, Default)]
pub struct WriteFailure(std::sync::Mutex<Option<String>>);

impl WriteFailure {
    pub fn failed(&self, why: String) {
        *crate::lock(&self.0) = Some(why);
    }

    pub fn cleared(&self) {
        *crate::lock(&self.0) = None;
    }

    pub fn last(&self) -> Option<String> {
        crate::lock(&self.0).clone()
    }
}

/// Which kind of event Qikchat sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A status change of a message sent through the relay (sent, delivered, read, failed).
    Status,
    /// A customer's message to the business.
    Inbound,
}

/// One event from Qikchat, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// What makes two deliveries by Qikchat the same event: `status:<id>:<status>`,
    /// `inbound:<id>`, or a hash of the body when it has no id.
    pub key: String,
    pub kind: Kind,
    /// The Qikchat message id the event is about (empty when it has none).
    pub message_id: String,
    /// For statuses: `sent`, `delivered`, `read`, `failed`, ... as Qikchat names it.
    pub status: Option<String>,
    /// The account whose webhook URL received it.
    pub account: String,
    /// Milliseconds since the Unix epoch, when the relay received it.
    pub received_at_ms: u64,
    /// Qikchat's `event` name, e.g. `whatsapp:message:status`.
    pub event: String,
    /// Qikchat's `payload`, as it came: unknown fields are kept.
    pub payload: serde_json::Value,
}

/// A delivery to create when an event is routed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewDelivery {
    /// Unique: the `webhook-id` the subscriber sees, the same on every retry.
    pub id: String,
    /// The caller whose subscriber this is.
    pub caller: String,
    pub url: String,
    /// Deliveries with the same key go out one at a time, oldest first: caller + message id.
    pub order_key: String,
    /// For a status: the `reference` its sender gave, known when it is routed (the sender's
    /// record may expire before the last retry) and put in the body on every attempt.
    pub reference: Option<String>,
}

/// A delivery claimed by [`Store::due`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    pub id: String,
    pub caller: String,
    pub url: String,
    pub order_key: String,
    /// The JSON body, built from the stored event ([`super::event::body`], the same bytes on every
    /// attempt): a delivery points at its event rather than keeping a copy of its payload.
    pub body: String,
    /// Attempts made before this one.
    pub attempts: u32,
}

/// A delivery that failed every attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeadLetter {
    /// The delivery's id (`webhook-id`); replay it with `POST /webhooks/dead-letters/{id}/replay`.
    pub id: String,
    pub caller: String,
    pub url: String,
    pub attempts: u32,
    /// Why the last attempt failed (an HTTP status or a connection error).
    pub last_error: String,
    /// Milliseconds since the Unix epoch, when it became a dead letter.
    pub dead_at_ms: u64,
    /// The event as it would be delivered.
    #[schema(value_type = Object)]
    pub body: serde_json::Value,
}

/// The last status received for a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LatestStatus {
    pub status: String,
    /// Qikchat's payload of that status event.
    pub payload: String,
}

/// Who sent a message, so its statuses go back to them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    pub caller: String,
    pub account: String,
    /// The caller's own id for the message, when it gave one: named again in its status reads
    /// and status webhooks. Absent from records made by an older relay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// The outbox's id (`msg_...`) of a message the outbox sent: its statuses carry that id, with
    /// Qikchat's as `qikchat_id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay_id: Option<String>,
}

/// What [`Store::ingest`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ingested {
    Stored,
    /// The same event was stored before: dropped.
    Duplicate,
    /// Not stored: events not yet delivered fill `RELAY_WEBHOOK_STORE_MAX_MB` by themselves (the
    /// delivered ones were dropped to make room first). Qikchat is answered 503 and retries.
    Full,
}

/// This module's error: the webhook store (SQLite or Redis) could not answer.
#[derive(Debug, thiserror::Error)]
#[error("the webhook store failed: {0}")]
pub struct Error(pub String);
