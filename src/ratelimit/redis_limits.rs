//! Limits in Redis, shared by every replica: each decision is one Lua script (the `.lua` files
//! beside this one), read and write together, on Redis's clock.

use std::sync::LazyLock;

use redis::aio::ConnectionManager;

use super::{Decision, Error, Rate};

/// How long a day's quota count stays in Redis: past the end of its day wherever in the day it
/// started, and then it goes by itself.
const QUOTA_TTL_S: u64 = 2 * 86_400;

/// GCRA in Redis, on Redis's clock, for several limits at once: all of them take a unit, or
/// none does. KEYS[i]: the TAT keys; ARGV[1]: `1` to take, `0` only to look; ARGV[2i],
/// ARGV[2i+1]: each one's interval (ms) and burst.
/// Returns, per key, {allowed (1/0), remaining, reset (ms), retry after (ms)}, each judged alone.
/// A TAT expires when it is reached (a key that has refilled is the same as no key): nothing
/// lingers. The TAT is written with `%d`: `tostring` would write a large number in exponent
/// notation.
const GCRA_LUA: &str = include_str!("gcra.lua");

/// One more under today's count (the UTC day on Redis's clock) unless it has reached the quota.
/// ARGV: the caller's key, the quota, the count's TTL in seconds ([`QUOTA_TTL_S`]), `1` to count
/// or `0` only to look.
/// Returns {allowed (1/0), today's count, reset (ms)}.
///
/// The key, `qikchat-relay:quota:<days since 1970-01-01>:<key>`, is built here from `TIME` rather
/// than passed in KEYS, so the day comes from the same clock as everything else. That is fine on
/// a single Redis (what the relay uses); Redis Cluster would want every key declared.
const DAILY_LUA: &str = include_str!("daily.lua");

/// One less under today's count, never below zero (a count back at zero is deleted).
/// ARGV: the caller's key.
const GIVE_BACK_LUA: &str = include_str!("give_back.lua");

/// Hashed once: `redis::Script` sends EVALSHA and loads the script only when Redis lacks it.
static GCRA_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(GCRA_LUA));
static DAILY_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(DAILY_LUA));
static GIVE_BACK_SCRIPT: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(GIVE_BACK_LUA));

/// GCRA for every limit, on Redis's clock; when `take` and all allow, each takes its unit.
pub(super) async fn judge(
    redis: &ConnectionManager,
    limits: &[(&str, Rate)],
    take: bool,
) -> Result<Vec<Decision>, Error> {
    if limits.is_empty() {
        return Ok(Vec::new());
    }
    let mut redis = redis.clone();
    let mut invocation = GCRA_SCRIPT.prepare_invoke();
    invocation.arg(u8::from(take));
    for (key, rate) in limits {
        invocation
            .key(format!("qikchat-relay:limit:{key}"))
            .arg(rate.interval_ms())
            .arg(rate.burst());
    }
    let answers: Vec<i64> = invocation
        .invoke_async(&mut redis)
        .await
        .map_err(redis_error)?;
    if answers.len() != 4 * limits.len() {
        return Err(Error(format!(
            "the GCRA script answered {} numbers for {} limits",
            answers.len(),
            limits.len()
        )));
    }
    Ok(limits
        .iter()
        .zip(answers.chunks_exact(4))
        .map(|((_, rate), answer)| {
            let (remaining, reset, retry_after) = (
                non_negative(answer[1]),
                non_negative(answer[2]),
                non_negative(answer[3]),
            );
            if answer[0] == 1 {
                Decision::allowed(rate.burst(), remaining, reset)
            } else {
                Decision::refused(rate.burst(), reset, retry_after)
            }
        })
        .collect())
}

/// Today's count under `key` against `quota`, on Redis's clock; counted one more when `take`.
pub(super) async fn daily(
    redis: &ConnectionManager,
    key: &str,
    quota: u64,
    take: bool,
) -> Result<Decision, Error> {
    let mut redis = redis.clone();
    let (allowed, count, reset): (i64, i64, i64) = DAILY_SCRIPT
        .arg(key)
        .arg(quota)
        .arg(QUOTA_TTL_S)
        .arg(u8::from(take))
        .invoke_async(&mut redis)
        .await
        .map_err(redis_error)?;
    let (count, reset) = (non_negative(count), non_negative(reset));
    Ok(if allowed == 1 {
        Decision::allowed(quota, quota.saturating_sub(count), reset)
    } else {
        Decision::refused(quota, reset, reset)
    })
}

/// One less under today's count, never below zero.
pub(super) async fn give_back_daily(redis: &ConnectionManager, key: &str) -> Result<(), Error> {
    let mut redis = redis.clone();
    GIVE_BACK_SCRIPT
        .arg(key)
        .invoke_async::<i64>(&mut redis)
        .await
        .map(drop)
        .map_err(redis_error)
}

/// A Redis error's message names the failure, never the URL (which can hold a password).
fn redis_error(e: redis::RedisError) -> Error {
    Error(e.to_string())
}

fn non_negative(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}
