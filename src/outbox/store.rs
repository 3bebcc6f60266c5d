//! What outbox messages are, as stored, and the life [`super::Store`] keeps them to, over SQLite in `RELAY_DATA_DIR` (one replica) or Redis
//! (any number of replicas, one outbox). Both keep the same life for a message:
//!
//! 1. [`super::Store::accept`]: new messages are stored in one transaction, or none is (the outbox is
//!    full); an item whose caller already used its `Idempotency-Key` gets the stored message back
//!    instead (or [`Accepted::Reused`] when the key came with another message).
//! 2. [`super::Store::claim`] hands a worker messages that are due, fairly between callers (round robin:
//!    each caller with due messages gets its share of `limit` before any gets more), each for a
//!    lease under the worker's token. A claim whose lease ran out is due again.
//! 3. [`super::Store::start`] marks a claimed message `sending`, only while the token still holds it:
//!    the one step after which it is never sent again. Exactly one worker can start a message.
//! 4. [`super::Store::finish`] gives it its end (`queued`, `failed`, `expired`, `unknown`, `canceled`) and
//!    forgets its body (the customer's number is kept only while it is needed), or
//!    [`super::Store::retry`] puts it back, due later, when nothing reached Qikchat.
//! 5. [`super::Store::sweep`] ends as `unknown` what was `sending` when its worker died (its lease ran
//!    out), and forgets ended messages older than the retention.

use serde::{Deserialize, Serialize};

/// Where a message is in its life, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Scheduled,
    Accepted,
    /// Held by a worker for its lease: shown to callers as `accepted`.
    Claimed,
    Sending,
    Queued,
    Failed,
    Expired,
    Canceled,
    Unknown,
}

impl State {
    pub const ALL: [Self; 9] = [
        Self::Scheduled,
        Self::Accepted,
        Self::Claimed,
        Self::Sending,
        Self::Queued,
        Self::Failed,
        Self::Expired,
        Self::Canceled,
        Self::Unknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Scheduled => "scheduled",
            Self::Accepted => "accepted",
            Self::Claimed => "claimed",
            Self::Sending => "sending",
            Self::Queued => "queued",
            Self::Failed => "failed",
            Self::Expired => "expired",
            Self::Canceled => "canceled",
            Self::Unknown => "unknown",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == value)
    }

    /// Still to be sent (or being sent): what `RELAY_OUTBOX_MAX` bounds.
    pub fn is_waiting(self) -> bool {
        matches!(
            self,
            Self::Scheduled | Self::Accepted | Self::Claimed | Self::Sending
        )
    }

    /// A caller may still cancel it: nothing has started.
    pub fn is_cancelable(self) -> bool {
        matches!(self, Self::Scheduled | Self::Accepted | Self::Claimed)
    }
}

/// Why a message left `sending` past its lease (its replica died) is `unknown`: it may have
/// reached Qikchat, so it is never sent again.
pub const INTERRUPTED: (&str, &str) = (
    "interrupted",
    "the replica sending it stopped before Qikchat's answer was recorded; it may or may not have been sent, and is never sent again",
);

/// A message to store, checked and counted against its caller's limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    /// [`super::new_id`].
    pub id: String,
    pub caller: String,
    pub account: String,
    /// The message as the caller gave it (JSON, with its declared template resolved): parsed
    /// again at delivery. Holds the customer's number, so it is forgotten once the message ends.
    pub body: String,
    pub reference: Option<String>,
    /// The caller's `Idempotency-Key` (its SHA-256 in hex) and the fingerprint of what it came
    /// with: scoped to the caller.
    pub key: Option<(String, String)>,
    /// `scheduled` when `due_at_ms` is later than acceptance, else `accepted`.
    pub state: State,
    pub send_at_ms: Option<u64>,
    /// Not sent before this (`send_at`, or acceptance).
    pub due_at_ms: u64,
    pub valid_until_ms: u64,
    pub accepted_at_ms: u64,
}

/// What became of one [`NewMessage`] at acceptance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accepted {
    /// Stored now.
    Stored { id: String, state: State },
    /// Its caller's key was used before with the same message: that message, as it is now.
    Existing { id: String, state: State },
    /// Its caller's key was used before with a different message: nothing stored.
    Reused,
}

/// A message a worker holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    pub id: String,
    pub caller: String,
    pub account: String,
    pub body: String,
    pub reference: Option<String>,
    /// Attempts that ended without reaching Qikchat, before this one.
    pub attempts: u32,
    pub valid_until_ms: u64,
    pub accepted_at_ms: u64,
}

/// How a claim is shared out beyond its round robin: callers in `skip` get nothing (the worker
/// holds its most of theirs already), every other at most `per_caller`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Shares {
    pub per_caller: Option<usize>,
    pub skip: Vec<String>,
}

/// How a message ended, or (for `queued`) where Qikchat took over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finish {
    pub state: State,
    pub qikchat_id: Option<String>,
    /// `code` and `detail`, for `failed`, `expired` and `unknown`.
    pub error: Option<(String, String)>,
}

/// One message as stored, for reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub id: String,
    pub caller: String,
    pub account: String,
    pub state: State,
    pub qikchat_id: Option<String>,
    pub reference: Option<String>,
    pub send_at_ms: Option<u64>,
    pub due_at_ms: u64,
    pub valid_until_ms: u64,
    pub attempts: u32,
    pub error: Option<(String, String)>,
    pub accepted_at_ms: u64,
    pub updated_at_ms: u64,
}

/// What [`super::Store::cancel`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cancel {
    Canceled(Record),
    /// Sending started (or it ended): its record as it is.
    NotCancelable(Record),
    NotFound,
}

/// The outbox's depth, for metrics and `outbox_full`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Messages not yet ended ([`State::is_waiting`]).
    pub waiting: u64,
    /// When the oldest message that is due now (and not started) became due; `None` when none is.
    pub oldest_due_ms: Option<u64>,
}

/// This module's error: the outbox (SQLite or Redis) could not answer.
#[derive(Debug, thiserror::Error)]
#[error("the outbox failed: {0}")]
pub struct Error(pub String);
