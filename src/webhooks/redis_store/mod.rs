//! The webhook store in Redis, shared by every replica (`RELAY_REDIS_URL`).
//!
//! Keys, all under `qikchat-relay:webhooks:`:
//! - `seen:<event key>`: the events stored in the last 7 days, so a duplicate is dropped.
//! - `event:<n>`: an event's JSON, the one copy of its payload; `n` from the counter `event-seq`,
//!   zero-padded to 16 digits so that members of `delivered` with the same score sort by age.
//!   `bytes` is the sum of their sizes, which `RELAY_WEBHOOK_STORE_MAX_MB` bounds.
//! - `holds`: a hash, event number to how many still need the event (its stream entry until it is
//!   routed, then each delivery not yet delivered, dead letters included). With none left the
//!   event moves to `delivered`, a sorted set by the time (ms) that happened: kept for status
//!   reads for 7 days, and dropped oldest first when a new event needs the room.
//! - `events`: a stream of events not routed yet (`ref`: the event's number), read through the
//!   consumer group `relay` (each replica is one consumer). Routing acknowledges and deletes the
//!   entry: the stream is a work log, not an archive. An entry read but not routed within the
//!   lease (its router died) is claimed again with `XAUTOCLAIM`.
//! - `delivery:<id>`: a hash per delivery: caller, url, order_key, event (its number), attempts,
//!   reference (a status's sender's, when it gave one), and last_error and dead_at_ms once it
//!   failed. (A delivery stored by an older relay has its
//!   `body` instead of `event`, and a stream entry its `event` JSON instead of `ref`.)
//! - `order:<order key>`: a list of the pending deliveries of one order key, oldest first. Only
//!   its head is ever in `due`, so a message's events reach a subscriber in order.
//! - `due`: a sorted set of delivery ids by the time (ms) they are due; claiming one moves its
//!   score to the end of the lease, so a worker that dies loses it.
//! - `dead`: a sorted set of dead letters by the time they died.
//! - `status:<message id>`: a hash {rank, status, event}, the latest status (7 days) and the
//!   number of its event.
//! - `owner:<message id>`: who sent a message (JSON), for the TTL given.
//! - `last-sender:<account>:<pseudonym of a number>`: the caller that last sent to that number,
//!   for the same TTL.
//! - `watched:<account>`: when the account's first event arrived; `window:<account>:<pseudonym>`:
//!   when the customer last wrote (90 days); `opt-outs:<account>`: a hash, pseudonym to
//!   `{masked, opted_out, how, at}`, the account's opt-out list (`conversation.rs`).
//!
//! Every step is one Lua script (or one command), on Redis's clock (`TIME`): two replicas never
//! both take the same step. The scripts build their keys from the prefix (`ARGV[1]`) rather than
//! declaring them in KEYS, like the limits' daily quota: fine on a single Redis, which is what the
//! relay uses. Needs Redis 6.2 or later (`XAUTOCLAIM`).
//!
//! The operations are grouped by what they act on, each with the scripts it runs: `events.rs`
//! (store, read, route), `deliveries.rs` (claim, deliver, fail, dead letters) and `messages.rs`
//! (owners, last senders, latest statuses). Each script is a `.lua` file beside them, run after
//! `preamble.lua` (see `script`).

mod conversation;
mod deliveries;
mod events;
mod messages;

use std::{sync::Arc, time::Duration};

use redis::aio::ConnectionManager;

use super::{Error, store::WriteFailure};

/// Every key of the webhook store starts with this.
pub const PREFIX: &str = "qikchat-relay:webhooks:";

/// The longest delay (a lease or a retry) the scripts are given: ten years in ms. Keeps Redis's
/// scores and Lua's numbers (doubles) exact.
const MAX_DELAY_MS: u64 = 10 * 365 * 86_400_000;

/// Put before every script: effects replication (only needed before Redis 5, where a script that
/// reads `TIME` may not write otherwise), the prefix, and Redis's clock in ms.
const PREAMBLE_LUA: &str = include_str!("preamble.lua");

/// A script as Redis runs it: [`PREAMBLE_LUA`] and then `body`, the text of one of the `.lua`
/// files beside this module, exactly as they are (the files start with an empty line).
fn script(body: &str) -> redis::Script {
    redis::Script::new(&format!("{PREAMBLE_LUA}{body}"))
}

/// The webhook store in Redis. Cheap to clone: the clones share one connection.
#[derive(Clone)]
pub struct RedisStore {
    redis: ConnectionManager,
    /// This replica's name in the consumer group (e.g. host name and pid).
    consumer: Arc<str>,
    /// `RELAY_WEBHOOK_STORE_MAX_MB` in bytes: what the events may take, shared by every replica.
    max_bytes: u64,
    /// Why the last write was refused for memory (`OOM`: Redis is at its `maxmemory`), until a
    /// write succeeds: readiness reports it.
    write_failure: Arc<WriteFailure>,
}

impl RedisStore {
    /// Connects lazily, like the limits and idempotency stores: the relay starts while Redis is
    /// down. Each connection attempt and each answer is given `timeout`, with one retry.
    /// `consumer` names this replica in the consumer group; replicas must not share a name.
    /// The events' payloads are bounded to `max_bytes`.
    pub fn new(
        url: &str,
        timeout: Duration,
        consumer: String,
        max_bytes: u64,
    ) -> redis::RedisResult<Self> {
        Ok(Self {
            redis: crate::redis_client::connect_lazily(url, timeout)?,
            consumer: consumer.into(),
            max_bytes,
            write_failure: Arc::default(),
        })
    }

    /// A failed write: remembered when Redis refused it for memory, then as [`redis_error`].
    fn write_error(&self, e: redis::RedisError) -> Error {
        if is_out_of_memory(&e) {
            self.write_failure.failed(e.to_string());
        }
        redis_error(e)
    }

    fn wrote(&self) {
        self.write_failure.cleared();
    }

    /// Why Redis refuses writes now (out of memory), if it does: nothing is written unless the
    /// last write was refused; then one small write with a one-second life tells whether it
    /// takes writes again.
    pub async fn unwritable(&self) -> Option<String> {
        let failed = self.write_failure.last();
        failed.as_ref()?;
        let probe: redis::RedisResult<()> = redis::cmd("SET")
            .arg(format!("{PREFIX}probe"))
            .arg("1")
            .arg("PX")
            .arg(1000)
            .query_async(&mut self.redis.clone())
            .await;
        match probe {
            Ok(()) => {
                self.wrote();
                None
            }
            Err(e) if is_out_of_memory(&e) => Some(e.to_string()),
            // Unreachable: readiness says so through the idempotency store's ping.
            Err(_) => failed,
        }
    }

    /// The bytes the events take now, shared by every replica.
    pub async fn bytes(&self) -> Result<u64, Error> {
        let bytes: Option<i64> = redis::cmd("GET")
            .arg(format!("{PREFIX}bytes"))
            .query_async(&mut self.redis.clone())
            .await
            .map_err(redis_error)?;
        Ok(bytes.map_or(0, |b| u64::try_from(b).unwrap_or(0)))
    }
}

/// Redis refused a write because it is at its `maxmemory` (with a policy that does not evict).
/// Inside a script the refusal comes back with the script's own error code, so the text is read
/// too.
fn is_out_of_memory(e: &redis::RedisError) -> bool {
    e.code() == Some("OOM") || e.to_string().contains("OOM command not allowed")
}

/// A lease, retry or TTL in whole ms, as the scripts take it (at most [`MAX_DELAY_MS`]).
fn delay_ms(delay: Duration) -> u64 {
    u64::try_from(delay.as_millis())
        .unwrap_or(u64::MAX)
        .min(MAX_DELAY_MS)
}

/// The error without the URL (a Redis error names the failure, not the server's address).
fn redis_error(e: redis::RedisError) -> Error {
    Error(e.to_string())
}
