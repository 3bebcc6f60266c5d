//! The outbox: messages accepted now (`POST /messages`, `POST /messages/batch`) and delivered
//! later by a worker on every replica, at the account's pace, when they are due, each at most once.
//!
//! - [`store`]: where they wait, durably: SQLite in `RELAY_DATA_DIR` (`sqlite_store.rs`), or Redis
//!   shared by every replica (`redis_store.rs`). The life of a message is the same in both.
//! - `worker.rs`: claims due messages fairly between callers and sends each through the same
//!   pipeline as `POST /send` ([`crate::relay::Relay`]).
//! - `http/routes/outbox.rs` is the HTTP side: acceptance, reads, cancel.
//!
//! A message's life, as stored ([`State`]): `scheduled` or `accepted` (waiting), `claimed` (a
//! worker holds it for a lease; callers see `accepted`), `sending` (the worker is about to call
//! Qikchat: from here it is never sent again), then one end: `queued` (Qikchat took it: its later
//! statuses come from Qikchat's webhooks), `failed`, `expired`, `canceled` or `unknown`.

pub mod accept;
mod outcome;
pub mod redis_store;
pub mod sqlite_store;
pub mod status;
pub mod store;
pub mod worker;

pub use accept::{Refused, Submission, Taken};
pub use worker::Outbox;

pub use store::{
    Accepted, Cancel, Claimed, Error, Finish, NewMessage, Record, Shares, State, Stats,
};

pub use crate::config::OutboxSettings as Settings;

/// A relay message id: `msg_` and 26 characters of Crockford's base32 (a ULID: time first, so
/// ids sort by acceptance), unique without any coordination between replicas.
pub fn new_id() -> String {
    format!("msg_{}", ulid::Ulid::new())
}

/// Whether `id` has the shape of a relay message id (and so is looked up in the outbox, not
/// at Qikchat).
pub fn is_relay_id(id: &str) -> bool {
    id.strip_prefix("msg_")
        .is_some_and(|rest| rest.len() == 26 && rest.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// Where the outbox lives: this machine's disk, or Redis for every replica.
#[derive(Clone)]
pub enum Store {
    Sqlite(std::sync::Arc<sqlite_store::SqliteStore>),
    Redis(redis_store::RedisStore),
}

impl Store {
    /// Stores `messages` in one transaction, unless the waiting ones would then be more than
    /// `max_waiting`: then nothing is stored and the answer is `None`. Results are in order.
    pub async fn accept(
        &self,
        messages: Vec<NewMessage>,
        max_waiting: u64,
    ) -> Result<Option<Vec<Accepted>>, Error> {
        dispatch!(self, s => s.accept(messages, max_waiting).await)
    }

    /// The message stored under the caller's key (SHA-256 hex), if any, with its fingerprint.
    pub async fn by_key(
        &self,
        caller: &str,
        key_sha256: &str,
    ) -> Result<Option<(Record, String)>, Error> {
        dispatch!(self, s => s.by_key(caller, key_sha256).await)
    }

    /// Up to `limit` due messages for `token`, each for `lease_ms`, shared between callers in
    /// turn and by `shares` (see `store.rs`).
    pub async fn claim(
        &self,
        limit: usize,
        lease_ms: u64,
        token: &str,
        shares: &Shares,
    ) -> Result<Vec<Claimed>, Error> {
        dispatch!(self, s => s.claim(limit, lease_ms, token, shares).await)
    }

    /// Extends a claim's lease; `false` when `token` no longer holds it.
    pub async fn renew(&self, id: &str, token: &str, lease_ms: u64) -> Result<bool, Error> {
        dispatch!(self, s => s.renew(id, token, lease_ms).await)
    }

    /// Claimed to `sending`, for `lease_ms` (after which a sweep makes it `unknown`); `false` when
    /// `token` no longer holds it (its lease ran out, or it was canceled): then it is not sent.
    pub async fn start(&self, id: &str, token: &str, lease_ms: u64) -> Result<bool, Error> {
        dispatch!(self, s => s.start(id, token, lease_ms).await)
    }

    /// Back to waiting, due at `due_at_ms`, one attempt more, with why the last one failed.
    /// Only from `claimed` or `sending` under `token`.
    pub async fn retry(
        &self,
        id: &str,
        token: &str,
        due_at_ms: u64,
        error: (String, String),
    ) -> Result<bool, Error> {
        dispatch!(self, s => s.retry(id, token, due_at_ms, error).await)
    }

    /// Gives a held message its end; its body is forgotten. Only under `token`.
    pub async fn finish(&self, id: &str, token: &str, finish: Finish) -> Result<bool, Error> {
        dispatch!(self, s => s.finish(id, token, finish).await)
    }

    pub async fn get(&self, id: &str) -> Result<Option<Record>, Error> {
        dispatch!(self, s => s.get(id).await)
    }

    /// Cancels `caller`'s message `id` if nothing has started.
    pub async fn cancel(&self, caller: &str, id: &str) -> Result<Cancel, Error> {
        dispatch!(self, s => s.cancel(caller, id).await)
    }

    /// Ends as `unknown` each message left `sending` past its lease (its worker died), and
    /// forgets ended messages last changed more than `retention_ms` ago. Returns those made
    /// `unknown`.
    pub async fn sweep(&self, retention_ms: u64) -> Result<Vec<Record>, Error> {
        dispatch!(self, s => s.sweep(retention_ms).await)
    }

    pub async fn stats(&self) -> Result<Stats, Error> {
        dispatch!(self, s => s.stats().await)
    }

    /// The latest `limit` messages that ended `failed` or `unknown`, newest first.
    pub async fn dead_letters(&self, limit: usize) -> Result<Vec<Record>, Error> {
        dispatch!(self, s => s.dead_letters(limit).await)
    }
}
