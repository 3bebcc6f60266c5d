//! The deliveries: claimed when due, delivered or failed (retried, or a dead letter), and dead
//! letters listed and replayed.

use std::{sync::LazyLock, time::Duration};

use super::{PREFIX, RedisStore, delay_ms, redis_error, script};
use crate::webhooks::{
    Error,
    event::delivery_body,
    store::{DeadLetter, Delivery},
};

/// Claims due deliveries for the lease. ARGV: prefix, limit, lease (ms).
/// Returns {id, caller, url, order key, kept body, attempts, event JSON, reference, ...}: the
/// event's JSON, or for a delivery stored by an older relay the body it kept; the reference `''`
/// when there is none. An id whose hash is gone is
/// dropped.
const DUE_LUA: &str = include_str!("due.lua");

/// A delivery is done: removed, and the next of its order key becomes due (unless it already
/// is: `NX` never shortens a lease). ARGV: prefix, id. Returns 1 if there was such a delivery.
const DELIVERED_LUA: &str = include_str!("delivered.lua");

/// An attempt failed: counted; retried after ARGV[4] ms, or, when ARGV[4] is empty, a dead
/// letter, and the next of its order key becomes due. ARGV: prefix, id, error, retry (ms or '').
/// Returns 0 if there is no such pending delivery (delivered, or dead already), 1 for a retry,
/// 2 for a dead letter.
const FAILED_LUA: &str = include_str!("failed.lua");

/// The newest dead letters. ARGV: prefix, limit.
/// Returns {id, caller, url, attempts, last error, dead at (ms), kept body, event JSON,
/// reference, ...}.
const DEAD_LETTERS_LUA: &str = include_str!("dead_letters.lua");

/// A dead letter back at the end of its order key's line, attempts reset. ARGV: prefix, id.
/// Returns 1 if there was such a dead letter.
const REPLAY_LUA: &str = include_str!("replay.lua");

/// Hashed once: `redis::Script` sends EVALSHA and loads the script only when Redis lacks it.
static DUE: LazyLock<redis::Script> = LazyLock::new(|| script(DUE_LUA));
static DELIVERED: LazyLock<redis::Script> = LazyLock::new(|| script(DELIVERED_LUA));
static FAILED: LazyLock<redis::Script> = LazyLock::new(|| script(FAILED_LUA));
static DEAD_LETTERS: LazyLock<redis::Script> = LazyLock::new(|| script(DEAD_LETTERS_LUA));
static REPLAY: LazyLock<redis::Script> = LazyLock::new(|| script(REPLAY_LUA));

impl RedisStore {
    pub async fn due(&self, limit: usize, lease: Duration) -> Result<Vec<Delivery>, Error> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let flat: Vec<String> = DUE
            .arg(PREFIX)
            .arg(limit)
            .arg(delay_ms(lease))
            .invoke_async(&mut self.redis.clone())
            .await
            .map_err(redis_error)?;
        Ok(flat
            .chunks_exact(8)
            .map(|f| Delivery {
                id: f[0].clone(),
                caller: f[1].clone(),
                url: f[2].clone(),
                order_key: f[3].clone(),
                body: delivery_body(Some(&f[6]), &f[4], some(&f[7])),
                attempts: f[5].parse().unwrap_or(0),
            })
            .collect())
    }

    pub async fn delivered(&self, id: &str) -> Result<(), Error> {
        let _: i64 = DELIVERED
            .arg(PREFIX)
            .arg(id)
            .invoke_async(&mut self.redis.clone())
            .await
            .map_err(redis_error)?;
        Ok(())
    }

    pub async fn failed(
        &self,
        id: &str,
        retry_in: Option<Duration>,
        error: &str,
    ) -> Result<(), Error> {
        let retry = retry_in
            .map(|d| delay_ms(d).to_string())
            .unwrap_or_default();
        let _: i64 = FAILED
            .arg(PREFIX)
            .arg(id)
            .arg(error)
            .arg(retry)
            .invoke_async(&mut self.redis.clone())
            .await
            .map_err(redis_error)?;
        Ok(())
    }

    pub async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, Error> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let flat: Vec<String> = DEAD_LETTERS
            .arg(PREFIX)
            .arg(limit)
            .invoke_async(&mut self.redis.clone())
            .await
            .map_err(redis_error)?;
        Ok(flat
            .chunks_exact(9)
            .map(|f| DeadLetter {
                id: f[0].clone(),
                caller: f[1].clone(),
                url: f[2].clone(),
                attempts: f[3].parse().unwrap_or(0),
                last_error: f[4].clone(),
                // A score may come back as `1.7e12` from some Redis versions: read it as a float.
                dead_at_ms: f[5].parse::<f64>().map_or(0, |ms| ms as u64),
                body: {
                    let body = delivery_body(Some(&f[7]), &f[6], some(&f[8]));
                    serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body))
                },
            })
            .collect())
    }

    pub async fn replay(&self, id: &str) -> Result<bool, Error> {
        let replayed: i64 = REPLAY
            .arg(PREFIX)
            .arg(id)
            .invoke_async(&mut self.redis.clone())
            .await
            .map_err(redis_error)?;
        Ok(replayed == 1)
    }
}

/// A field Lua gives as `''` when absent.
fn some(field: &str) -> Option<&str> {
    (!field.is_empty()).then_some(field)
}
