//! The outbox in Redis, shared by every replica (`RELAY_REDIS_URL`): one outbox however many
//! replicas claim from it.
//!
//! Keys, all under [`PREFIX`] (its hash tag `{outbox}` puts them in one cluster slot, so a script
//! may touch any of them):
//! - `msg:<id>`: a hash per message, kept until the sweep forgets it: caller, account, body (only
//!   while it waits: it holds the customer's number), reference, state, qikchat_id, send_at_ms,
//!   due_at_ms, valid_until_ms, attempts, error_code and error_detail, accepted_at_ms,
//!   updated_at_ms; key and fingerprint when it came with an `Idempotency-Key`; token and
//!   lease_until_ms while a worker holds it.
//! - `key:<caller>:<key SHA-256>`: the id of the message stored under a caller's key, as long as
//!   that message is kept. The SHA-256 is hex, so a caller's name with a `:` cannot pass for
//!   another's key.
//! - `waiting`: how many messages have not ended, kept at each acceptance and each end, so
//!   `RELAY_OUTBOX_MAX` is checked without counting.
//! - `due:<caller>`: a sorted set per caller of its waiting messages not held by a worker, by the
//!   time (ms) they are due. `callers`: a sorted set of the callers with such messages, by their
//!   oldest one's due time: a claim reads the callers due now from it, the longest waiting first,
//!   and goes round them, so a caller with many due messages never starves one with a few.
//! - `leases`: claimed ids by the end of their lease. A claim first puts back those whose lease
//!   ran out (their worker died or is late): waiting again, due when they were.
//! - `sending`: ids being sent by the end of their lease; the sweep ends as `unknown` those it
//!   ran out for.
//! - `ended`: ended ids by when they ended, for the sweep's retention; `dead`: those that ended
//!   `failed` or `unknown`, the dead letters, by the same time.
//!
//! A claim's token holds its message until the lease ends; a send's holds it until the sweep
//! ends it `unknown`, even past its lease, so that Qikchat's answer reaching a late worker is
//! still recorded rather than lost.
//!
//! Every step is one Lua script on Redis's clock (`TIME`), so two replicas never both take one
//! (two workers cannot both start a message). Each script is a `.lua` file beside this module,
//! run after `preamble.lua` (see `scripts.rs`); its first key (`KEYS[1]`) is one it touches, so a
//! cluster client sends it to the outbox's slot, and it builds the others from the prefix
//! (`ARGV[1]`), which the hash tag keeps in that slot.

use std::time::Duration;

use redis::aio::ConnectionManager;

mod fields;
mod scripts;

use fields::{malformed, number, record, records, redis_error, required, score, state};
use scripts::{
    ACCEPT, BY_KEY, CANCEL, CLAIM, DEAD_LETTERS, FINISH, GET, RENEW, RETRY, START, STATS, SWEEP,
};

use super::store::{
    Accepted, Cancel, Claimed, Error, Finish, INTERRUPTED, NewMessage, Record, Shares, State, Stats,
};

/// Every key of the outbox starts with this.
pub const PREFIX: &str = "qikchat-relay:{outbox}:";

/// The longest lease the scripts are given: ten years in ms. Keeps Redis's scores and Lua's
/// numbers (doubles) exact.
const MAX_DELAY_MS: u64 = 10 * 365 * 86_400_000;

/// At most this many ids are handed out per claim: a claim is one script, and a script holds
/// Redis for as long as it runs.
const MAX_CLAIM: usize = 1000;

/// A record as the scripts give it: the id and the preamble's `FIELDS`, in their order.
const RECORD_LEN: usize = 14;

/// A claimed message as `claim.lua` gives it.
const CLAIMED_LEN: usize = 8;

/// The outbox in Redis. Cheap to clone: the clones share one connection.
#[derive(Clone)]
pub struct RedisStore {
    redis: ConnectionManager,
}

impl RedisStore {
    /// Connects lazily, like the other Redis stores: the relay starts while Redis is down. Each
    /// connection attempt and each answer is given `timeout`, with one retry.
    pub fn new(url: &str, timeout: Duration) -> redis::RedisResult<Self> {
        Ok(Self {
            redis: crate::redis_client::connect_lazily(url, timeout)?,
        })
    }

    /// A batch with nothing new to store (each item's key was used before) is answered even
    /// when the outbox is full: a caller retrying gets its message back, not `outbox_full`.
    pub async fn accept(
        &self,
        messages: Vec<NewMessage>,
        max_waiting: u64,
    ) -> Result<Option<Vec<Accepted>>, Error> {
        if messages.is_empty() {
            return Ok(Some(Vec::new()));
        }
        let mut invocation = ACCEPT.prepare_invoke();
        invocation.key(key("waiting")).arg(PREFIX).arg(max_waiting);
        for m in &messages {
            // Anything else would be counted as waiting and never handed out, or handed out
            // after it ended.
            if !matches!(m.state, State::Scheduled | State::Accepted) {
                return Err(Error(format!(
                    "a new message cannot be {}",
                    m.state.as_str()
                )));
            }
            let (sha, fingerprint) = m
                .key
                .as_ref()
                .map_or(("", ""), |(s, f)| (s.as_str(), f.as_str()));
            invocation
                .arg(&m.id)
                .arg(&m.caller)
                .arg(&m.account)
                .arg(&m.body)
                .arg(m.reference.as_deref().unwrap_or(""))
                .arg(sha)
                .arg(fingerprint)
                .arg(m.state.as_str())
                .arg(m.send_at_ms.map(|ms| ms.to_string()).unwrap_or_default())
                .arg(m.due_at_ms)
                .arg(m.valid_until_ms)
                .arg(m.accepted_at_ms);
        }
        let flat: Option<Vec<String>> = invocation
            .invoke_async(&mut self.redis.clone())
            .await
            .map_err(redis_error)?;
        let Some(flat) = flat else {
            return Ok(None);
        };
        if flat.len() != messages.len() * 3 {
            return Err(malformed("the answer to an acceptance"));
        }
        flat.chunks_exact(3)
            .map(|f| match f[0].as_str() {
                "stored" => Ok(Accepted::Stored {
                    id: f[1].clone(),
                    state: state(&f[2])?,
                }),
                "existing" => Ok(Accepted::Existing {
                    id: f[1].clone(),
                    state: state(&f[2])?,
                }),
                "reused" => Ok(Accepted::Reused),
                _ => Err(malformed("the answer to an acceptance")),
            })
            .collect::<Result<_, _>>()
            .map(Some)
    }

    pub async fn by_key(
        &self,
        caller: &str,
        key_sha256: &str,
    ) -> Result<Option<(Record, String)>, Error> {
        let flat: Option<Vec<Option<String>>> = BY_KEY
            .key(key(&format!("key:{caller}:{key_sha256}")))
            .arg(PREFIX)
            .invoke_async(&mut self.redis.clone())
            .await
            .map_err(redis_error)?;
        let Some(flat) = flat else { return Ok(None) };
        match flat.split_at_checked(RECORD_LEN) {
            Some((fields, [Some(fingerprint)])) => Ok(Some((record(fields)?, fingerprint.clone()))),
            _ => Err(malformed("a message's key")),
        }
    }

    /// At most `MAX_CLAIM` at once, whatever `limit` asks.
    pub async fn claim(
        &self,
        limit: usize,
        lease_ms: u64,
        token: &str,
        shares: &Shares,
    ) -> Result<Vec<Claimed>, Error> {
        let limit = limit.min(MAX_CLAIM);
        if limit == 0 {
            return Ok(Vec::new());
        }
        let flat: Vec<Option<String>> = CLAIM
            .key(key("leases"))
            .arg(PREFIX)
            .arg(limit)
            .arg(lease_ms.min(MAX_DELAY_MS))
            .arg(token)
            .arg(shares.per_caller.unwrap_or(limit))
            .arg(&shares.skip)
            .invoke_async(&mut self.redis.clone())
            .await
            .map_err(redis_error)?;
        if flat.len() % CLAIMED_LEN != 0 {
            return Err(malformed("a claim"));
        }
        flat.chunks_exact(CLAIMED_LEN)
            .map(|f| {
                Ok(Claimed {
                    id: required(&f[0], "id")?.to_owned(),
                    caller: required(&f[1], "caller")?.to_owned(),
                    account: required(&f[2], "account")?.to_owned(),
                    body: required(&f[3], "body")?.to_owned(),
                    reference: f[4].clone(),
                    attempts: number(&f[5], "attempts")?,
                    valid_until_ms: number(&f[6], "valid_until_ms")?,
                    accepted_at_ms: number(&f[7], "accepted_at_ms")?,
                })
            })
            .collect()
    }

    pub async fn renew(&self, id: &str, token: &str, lease_ms: u64) -> Result<bool, Error> {
        self.held(&RENEW, id, token, lease_ms).await
    }

    pub async fn start(&self, id: &str, token: &str, lease_ms: u64) -> Result<bool, Error> {
        self.held(&START, id, token, lease_ms).await
    }

    /// Runs `script` (renew or start) on a message `token` holds, for a lease of `lease_ms`.
    async fn held(
        &self,
        script: &redis::Script,
        id: &str,
        token: &str,
        lease_ms: u64,
    ) -> Result<bool, Error> {
        let done: i64 = script
            .key(message_key(id))
            .arg(PREFIX)
            .arg(id)
            .arg(token)
            .arg(lease_ms.min(MAX_DELAY_MS))
            .invoke_async(&mut self.redis.clone())
            .await
            .map_err(redis_error)?;
        Ok(done == 1)
    }

    pub async fn retry(
        &self,
        id: &str,
        token: &str,
        due_at_ms: u64,
        error: (String, String),
    ) -> Result<bool, Error> {
        let done: i64 = RETRY
            .key(message_key(id))
            .arg(PREFIX)
            .arg(id)
            .arg(token)
            .arg(due_at_ms)
            .arg(error.0)
            .arg(error.1)
            .invoke_async(&mut self.redis.clone())
            .await
            .map_err(redis_error)?;
        Ok(done == 1)
    }

    pub async fn finish(&self, id: &str, token: &str, finish: Finish) -> Result<bool, Error> {
        // A waiting state here would leave the message counted as waiting and never handed out.
        if finish.state.is_waiting() {
            return Err(Error(format!(
                "a message cannot end {}",
                finish.state.as_str()
            )));
        }
        let (code, detail) = finish.error.unwrap_or_default();
        let done: i64 = FINISH
            .key(message_key(id))
            .arg(PREFIX)
            .arg(id)
            .arg(token)
            .arg(finish.state.as_str())
            .arg(finish.qikchat_id.unwrap_or_default())
            .arg(code)
            .arg(detail)
            .invoke_async(&mut self.redis.clone())
            .await
            .map_err(redis_error)?;
        Ok(done == 1)
    }

    pub async fn get(&self, id: &str) -> Result<Option<Record>, Error> {
        let flat: Option<Vec<Option<String>>> = GET
            .key(message_key(id))
            .arg(PREFIX)
            .arg(id)
            .invoke_async(&mut self.redis.clone())
            .await
            .map_err(redis_error)?;
        flat.map(|f| record(&f)).transpose()
    }

    pub async fn cancel(&self, caller: &str, id: &str) -> Result<Cancel, Error> {
        let flat: Vec<Option<String>> = CANCEL
            .key(message_key(id))
            .arg(PREFIX)
            .arg(id)
            .arg(caller)
            .invoke_async(&mut self.redis.clone())
            .await
            .map_err(redis_error)?;
        match flat.split_first() {
            Some((Some(kind), [])) if kind == "not_found" => Ok(Cancel::NotFound),
            Some((Some(kind), fields)) if kind == "canceled" => {
                Ok(Cancel::Canceled(record(fields)?))
            }
            Some((Some(kind), fields)) if kind == "not_cancelable" => {
                Ok(Cancel::NotCancelable(record(fields)?))
            }
            _ => Err(malformed("the answer to a cancel")),
        }
    }

    pub async fn sweep(&self, retention_ms: u64) -> Result<Vec<Record>, Error> {
        let flat: Vec<Option<String>> = SWEEP
            .key(key("sending"))
            .arg(PREFIX)
            // Redis's clock minus the retention stays a number Lua holds exactly.
            .arg(retention_ms.min(1 << 52))
            .arg(INTERRUPTED.0)
            .arg(INTERRUPTED.1)
            .invoke_async(&mut self.redis.clone())
            .await
            .map_err(redis_error)?;
        records(&flat)
    }

    pub async fn stats(&self) -> Result<Stats, Error> {
        let (waiting, oldest): (Option<String>, Option<String>) = STATS
            .key(key("callers"))
            .arg(PREFIX)
            .invoke_async(&mut self.redis.clone())
            .await
            .map_err(redis_error)?;
        Ok(Stats {
            waiting: number::<i64>(&waiting, "waiting")?.max(0).unsigned_abs(),
            oldest_due_ms: oldest.as_deref().map(score).transpose()?,
        })
    }

    pub async fn dead_letters(&self, limit: usize) -> Result<Vec<Record>, Error> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let flat: Vec<Option<String>> = DEAD_LETTERS
            .key(key("dead"))
            .arg(PREFIX)
            .arg(limit)
            .invoke_async(&mut self.redis.clone())
            .await
            .map_err(redis_error)?;
        records(&flat)
    }
}

fn key(name: &str) -> String {
    format!("{PREFIX}{name}")
}

fn message_key(id: &str) -> String {
    key(&format!("msg:{id}"))
}
