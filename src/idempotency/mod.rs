//! `Idempotency-Key`: a caller's retry never sends a message twice.
//!
//! A key is claimed before Qikchat is called, marked "sending" just before the call, and holds the
//! answer afterwards. A claim is a lease, so a replica that dies holding a key cannot block it
//! forever; one that dies after it started sending leaves the key answering "outcome unknown".
//! The records live in memory (one replica) or in Redis (shared by replicas, kept across restarts),
//! behind the two atomic operations of [`Backend`].

mod memory;

pub use memory::MemoryStore;

use std::{
    sync::{Arc, LazyLock},
    time::Duration,
};

use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tracing::warn;

/// The header callers send.
pub const HEADER: &str = "idempotency-key";
/// The header on a replayed answer.
pub const REPLAYED: &str = "idempotent-replayed";

/// A valid `Idempotency-Key`: 1 to 255 visible ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key(String);

impl Key {
    /// A key as the `Idempotency-Key` header carries it: 1 to 255 visible ASCII characters.
    pub fn parse(bytes: &[u8]) -> Option<Self> {
        let valid = (1..=255).contains(&bytes.len()) && bytes.iter().all(|b| b.is_ascii_graphic());
        valid.then(|| Self(String::from_utf8_lossy(bytes).into_owned()))
    }

    /// The key's SHA-256 in hex: how logs name a key without holding it.
    pub fn sha256(&self) -> String {
        hex::encode(Sha256::digest(self.0.as_bytes()))
    }
}

/// An answer as it was given, to be given again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    pub status: u16,
    /// The JSON body, as sent.
    pub body: String,
}

/// What a key's record says, stored as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
enum Record {
    /// Claimed, Qikchat not called yet. Expires with the lease: a dead holder frees the key.
    Claimed {
        fingerprint: String,
        owner: String,
    },
    /// Qikchat is being called. Kept for the retention period: once `lease_until_ms` has passed
    /// the holder is presumed dead, and nobody knows whether the message went out.
    Sending {
        fingerprint: String,
        owner: String,
        lease_until_ms: u64,
    },
    Done {
        fingerprint: String,
        answer: Answer,
    },
}

impl Record {
    fn fingerprint(&self) -> &str {
        match self {
            Self::Claimed { fingerprint, .. }
            | Self::Sending { fingerprint, .. }
            | Self::Done { fingerprint, .. } => fingerprint,
        }
    }

    fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// What to do with a request that carries a key.
#[derive(Debug)]
pub enum Begin {
    /// The key is ours: send, then [`Idempotency::finish`].
    Proceed(Claim),
    /// The same request is being sent right now.
    InFlight,
    /// The key was used for a different request.
    Reused,
    /// The same request was answered before: give that answer again.
    Replay(Answer),
    /// Its holder died after it started sending: the message may have gone out.
    OutcomeUnknown,
}

/// Ownership of a key, from [`Begin::Proceed`] to [`Idempotency::finish`].
#[derive(Debug)]
pub struct Claim {
    store_key: String,
    fingerprint: String,
    owner: String,
    /// The record as last written by us; every update is a compare-and-set against it.
    current: String,
}

/// This module's error: the store of the keys (the memory table, or Redis) could not answer.
#[derive(Debug, thiserror::Error)]
#[error("the idempotency store is unavailable: {0}")]
pub struct Error(String);

/// The keys of every caller, with their lease and retention.
pub struct Idempotency {
    backend: Backend,
    lease: Duration,
    retention: Duration,
}

impl Idempotency {
    pub fn new(backend: Backend, lease: Duration, retention: Duration) -> Self {
        Self {
            backend,
            lease,
            retention,
        }
    }

    /// Claims `key` for `caller`'s request with this fingerprint, or says why not.
    pub async fn begin(&self, caller: &str, key: &Key, fingerprint: &str) -> Result<Begin, Error> {
        let store_key = format!("qikchat-relay:idempotency:{caller}:{}", key.sha256());
        let owner = uuid::Uuid::new_v4().simple().to_string();
        let claimed = Record::Claimed {
            fingerprint: fingerprint.to_owned(),
            owner: owner.clone(),
        }
        .to_json();
        // A record can expire between the failed claim and the read: then simply claim again.
        for _ in 0..3 {
            let Some(existing) = self
                .backend
                .set_if_absent(&store_key, &claimed, self.lease)
                .await?
            else {
                return Ok(Begin::Proceed(Claim {
                    store_key,
                    fingerprint: fingerprint.to_owned(),
                    owner,
                    current: claimed,
                }));
            };
            if existing.is_empty() {
                continue;
            }
            let record: Record = serde_json::from_str(&existing)
                .map_err(|e| Error(format!("an unreadable record under {store_key}: {e}")))?;
            return Ok(decide(&record, fingerprint, crate::unix_ms()));
        }
        Err(Error("the key kept changing under a claim".to_owned()))
    }

    /// Records that Qikchat is about to be called. From now on the key is never sent again.
    pub async fn sending(&self, claim: &mut Claim) -> Result<(), Error> {
        let lease_until_ms = crate::unix_ms() + self.lease.as_millis() as u64;
        let sending = Record::Sending {
            fingerprint: claim.fingerprint.clone(),
            owner: claim.owner.clone(),
            lease_until_ms,
        }
        .to_json();
        if self
            .backend
            .compare_and_set(
                &claim.store_key,
                &claim.current,
                Some((&sending, self.retention)),
            )
            .await?
        {
            claim.current = sending;
            Ok(())
        } else {
            Err(Error(
                "the claim on the key was lost before sending".to_owned(),
            ))
        }
    }

    /// Stores the answer for replays, or (`None`) frees the key because nothing was sent.
    pub async fn finish(&self, claim: Claim, answer: Option<Answer>) {
        let done = answer.map(|answer| {
            Record::Done {
                fingerprint: claim.fingerprint.clone(),
                answer,
            }
            .to_json()
        });
        let update = done.as_deref().map(|done| (done, self.retention));
        match self
            .backend
            .compare_and_set(&claim.store_key, &claim.current, update)
            .await
        {
            Ok(true) => {}
            // Left as it was, the key answers "outcome unknown" once the lease runs out: safe.
            Ok(false) => warn!("the idempotency record changed under its owner; left as it is"),
            Err(e) => {
                warn!(error = %e, "the answer could not be stored; retries under this key will answer outcome unknown")
            }
        }
    }

    /// Whether the store answers (always, in memory).
    pub async fn is_ready(&self) -> bool {
        self.backend.ping().await.is_ok()
    }

    pub fn is_shared(&self) -> bool {
        matches!(self.backend, Backend::Redis(_))
    }
}

fn decide(record: &Record, fingerprint: &str, now_ms: u64) -> Begin {
    if record.fingerprint() != fingerprint {
        return Begin::Reused;
    }
    match record {
        Record::Claimed { .. } => Begin::InFlight,
        Record::Sending { lease_until_ms, .. } if now_ms < *lease_until_ms => Begin::InFlight,
        Record::Sending { .. } => Begin::OutcomeUnknown,
        Record::Done { answer, .. } => Begin::Replay(answer.clone()),
    }
}

/// The fingerprint of a request: the SHA-256 of its normalised form.
pub fn fingerprint(normalised: &[u8]) -> String {
    hex::encode(Sha256::digest(normalised))
}

/// Where the records live: this process, or Redis. Both offer the same two atomic operations on
/// JSON strings.
pub enum Backend {
    Memory(Arc<MemoryStore>),
    Redis(ConnectionManager),
}

/// Compares the record with `ARGV[1]`; if equal, replaces it with `ARGV[2]` for `ARGV[3]` ms, or
/// deletes it when `ARGV[2]` is empty. Returns 1 when it changed the record.
static COMPARE_AND_SET: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(include_str!("compare_and_set.lua")));

impl Backend {
    /// Sets `key` to `value` for `ttl` unless it exists; returns the existing value if it does
    /// (empty if it vanished in between).
    async fn set_if_absent(
        &self,
        key: &str,
        value: &str,
        ttl: Duration,
    ) -> Result<Option<String>, Error> {
        match self {
            Self::Memory(memory) => memory.set_if_absent(key, value, ttl),
            Self::Redis(redis) => {
                let mut redis = redis.clone();
                let set: Option<String> = redis::cmd("SET")
                    .arg(key)
                    .arg(value)
                    .arg("NX")
                    .arg("PX")
                    .arg(ttl.as_millis() as u64)
                    .query_async(&mut redis)
                    .await
                    .map_err(redis_error)?;
                if set.is_some() {
                    return Ok(None);
                }
                let existing: Option<String> = redis::cmd("GET")
                    .arg(key)
                    .query_async(&mut redis)
                    .await
                    .map_err(redis_error)?;
                Ok(Some(existing.unwrap_or_default()))
            }
        }
    }

    /// If `key` holds `expected`, replaces it (`Some`) or deletes it (`None`). True if it did.
    async fn compare_and_set(
        &self,
        key: &str,
        expected: &str,
        new: Option<(&str, Duration)>,
    ) -> Result<bool, Error> {
        match self {
            Self::Memory(memory) => Ok(memory.compare_and_set(key, expected, new)),
            Self::Redis(redis) => {
                let mut redis = redis.clone();
                let (value, ttl) = new.unwrap_or(("", Duration::ZERO));
                let changed: i64 = COMPARE_AND_SET
                    .key(key)
                    .arg(expected)
                    .arg(value)
                    .arg(ttl.as_millis().max(1) as u64)
                    .invoke_async(&mut redis)
                    .await
                    .map_err(redis_error)?;
                Ok(changed == 1)
            }
        }
    }

    async fn ping(&self) -> Result<(), Error> {
        match self {
            Self::Memory(_) => Ok(()),
            Self::Redis(redis) => {
                let mut redis = redis.clone();
                redis::cmd("PING")
                    .query_async::<String>(&mut redis)
                    .await
                    .map(drop)
                    .map_err(redis_error)
            }
        }
    }

    /// A Redis store that connects lazily, so the relay starts (not ready) while Redis is down.
    pub fn redis(url: &str, timeout: Duration) -> redis::RedisResult<Self> {
        Ok(Self::Redis(crate::redis_client::connect_lazily(
            url, timeout,
        )?))
    }
}

fn redis_error(e: redis::RedisError) -> Error {
    Error(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idempotency(lease: Duration) -> Idempotency {
        Idempotency::new(
            Backend::Memory(MemoryStore::new(10)),
            lease,
            Duration::from_secs(60),
        )
    }

    fn key(value: &str) -> Key {
        Key::parse(value.as_bytes()).expect("valid key")
    }

    #[test]
    fn keys_are_1_to_255_visible_ascii_characters() {
        assert!(Key::parse(b"order-1234:retry").is_some());
        assert!(Key::parse("k".repeat(255).as_bytes()).is_some());
        for bad in ["", "has space", &"k".repeat(256)] {
            assert!(Key::parse(bad.as_bytes()).is_none(), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn a_finished_key_replays_its_answer_and_a_different_request_is_refused() {
        let store = idempotency(Duration::from_secs(10));
        let Begin::Proceed(mut claim) = store
            .begin("billing", &key("k1"), "fp-a")
            .await
            .expect("store")
        else {
            panic!("the first request proceeds");
        };
        assert!(matches!(
            store.begin("billing", &key("k1"), "fp-a").await,
            Ok(Begin::InFlight)
        ));
        store.sending(&mut claim).await.expect("mark");
        let answer = Answer {
            status: 200,
            body: "{}".into(),
        };
        store.finish(claim, Some(answer.clone())).await;

        assert!(
            matches!(store.begin("billing", &key("k1"), "fp-a").await, Ok(Begin::Replay(a)) if a == answer)
        );
        assert!(matches!(
            store.begin("billing", &key("k1"), "fp-b").await,
            Ok(Begin::Reused)
        ));
        assert!(
            matches!(
                store.begin("alerts", &key("k1"), "fp-b").await,
                Ok(Begin::Proceed(_))
            ),
            "keys are per caller"
        );
    }

    #[tokio::test]
    async fn a_released_key_can_be_used_again() {
        let store = idempotency(Duration::from_secs(10));
        let Ok(Begin::Proceed(claim)) = store.begin("billing", &key("k2"), "fp").await else {
            panic!("proceeds");
        };
        store.finish(claim, None).await;
        assert!(matches!(
            store.begin("billing", &key("k2"), "fp").await,
            Ok(Begin::Proceed(_))
        ));
    }

    #[tokio::test]
    async fn a_dead_claim_frees_the_key_but_a_dead_send_answers_outcome_unknown() {
        let store = idempotency(Duration::from_millis(50));
        let Ok(Begin::Proceed(_abandoned)) = store.begin("billing", &key("before"), "fp").await
        else {
            panic!("proceeds");
        };
        let Ok(Begin::Proceed(mut sending)) = store.begin("billing", &key("after"), "fp").await
        else {
            panic!("proceeds");
        };
        store.sending(&mut sending).await.expect("mark");
        tokio::time::sleep(Duration::from_millis(80)).await;

        assert!(matches!(
            store.begin("billing", &key("before"), "fp").await,
            Ok(Begin::Proceed(_))
        ));
        assert!(matches!(
            store.begin("billing", &key("after"), "fp").await,
            Ok(Begin::OutcomeUnknown)
        ));
    }

    #[tokio::test]
    async fn a_full_memory_store_refuses_new_keys_rather_than_forget_answers() {
        let store = Idempotency::new(
            Backend::Memory(MemoryStore::new(2)),
            Duration::from_secs(10),
            Duration::from_secs(60),
        );
        for name in ["a", "b"] {
            assert!(matches!(
                store.begin("c", &key(name), "fp").await,
                Ok(Begin::Proceed(_))
            ));
        }
        assert!(store.begin("c", &key("c"), "fp").await.is_err());
    }
}
