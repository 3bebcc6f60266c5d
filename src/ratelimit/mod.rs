//! Rate limits and daily quotas: how many sends a caller (or a recipient) may make, and how fast.
//!
//! Rates use GCRA (the generic cell rate algorithm): one number per key, the theoretical arrival
//! time (TAT) of the next unit, instead of a window of timestamps; it allows a burst and then a
//! steady pace, and tells a refused caller exactly when to retry. Quotas count per UTC day.
//!
//! The state lives in memory (one replica: each replica would enforce its own limits) or in Redis
//! (shared by every replica). In Redis every decision is one Lua script, read and write together,
//! so two replicas can never both take the last unit; the scripts read Redis's clock (`TIME`), so
//! replicas whose clocks disagree still agree on the limits.

mod memory;
mod redis_limits;

pub use memory::MemoryLimits;

use std::{sync::Arc, time::Duration};

use redis::aio::ConnectionManager;

/// Keys the memory limiter holds per table (rates and quotas each), unless told otherwise: a
/// key costs roughly 150 to 200 bytes (an 80-byte `recipient:<name>:<sha256>` key and the map's
/// slot), so a full table is some 20 MB. Beyond that, deployments want Redis anyway.
pub const DEFAULT_MAX_KEYS: usize = 100_000;

/// The longest interval a rate may have. Keeps every TAT far below 2^53 ms, where Lua's numbers
/// (doubles) stop being exact, and far below `u64::MAX`.
const MAX_INTERVAL_MS: u64 = 365 * DAY_MS;

const DAY_MS: u64 = 86_400_000;

/// A rate as GCRA sees it: one unit every `interval`, with up to `burst` units at once.
///
/// Time is counted in whole milliseconds: an interval is rounded up to the next millisecond (so a
/// rate is never more generous than configured) and is at least 1 ms and at most a year. A burst
/// of 0 is read as 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub interval: Duration,
    pub burst: u32,
}

impl Rate {
    /// `count` units a minute, `burst` of them at once. A count of 0 is read as 1 (dividing by
    /// zero is not a rate), and so is a burst of 0.
    pub fn per_minute(count: u32, burst: u32) -> Self {
        Self {
            interval: Duration::from_secs(60) / count.max(1),
            burst: burst.max(1),
        }
    }

    /// `count` units a second, all of them at once if they were saved up.
    pub fn per_second(count: u32) -> Self {
        let count = count.max(1);
        Self {
            interval: Duration::from_secs(1) / count,
            burst: count,
        }
    }

    pub fn every(interval: Duration, burst: u32) -> Self {
        Self {
            interval,
            burst: burst.max(1),
        }
    }

    /// The interval in whole milliseconds, as the algorithm uses it.
    fn interval_ms(self) -> u64 {
        let ms = self.interval.as_nanos().div_ceil(1_000_000);
        u64::try_from(ms)
            .unwrap_or(u64::MAX)
            .clamp(1, MAX_INTERVAL_MS)
    }

    fn burst(self) -> u64 {
        u64::from(self.burst.max(1))
    }
}

/// The answer to one request for a unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// The most units available at once (burst, or the daily quota).
    pub limit: u64,
    /// Units still available right now, after this one if it was allowed.
    pub remaining: u64,
    /// Until `remaining` is back to `limit` (GCRA), or until the quota resets (daily).
    pub reset: Duration,
    /// When refused: how long until one unit is available (never zero when refused; round up).
    pub retry_after: Duration,
}

impl Decision {
    /// A refusal always says when to come back: at least a millisecond, so a caller that rounds
    /// up to seconds never tells its client "retry in 0 s".
    fn refused(limit: u64, reset_ms: u64, retry_after_ms: u64) -> Self {
        Self {
            allowed: false,
            limit,
            remaining: 0,
            reset: Duration::from_millis(reset_ms),
            retry_after: Duration::from_millis(retry_after_ms.max(1)),
        }
    }

    fn allowed(limit: u64, remaining: u64, reset_ms: u64) -> Self {
        Self {
            allowed: true,
            limit,
            remaining,
            reset: Duration::from_millis(reset_ms),
            retry_after: Duration::ZERO,
        }
    }
}

/// GCRA for one request at `now_ms`, given the key's stored TAT (`None`: never seen, or expired).
/// Returns the decision and the TAT to store; a refusal returns the stored TAT unchanged, so a
/// refused request takes nothing and a client hammering a limit does not push its retry further.
///
/// The memory limiter uses this directly; the Redis script, `gcra.lua`, is the same arithmetic.
pub fn gcra(tat_ms: Option<u64>, now_ms: u64, rate: Rate) -> (Decision, u64) {
    let interval = rate.interval_ms();
    let burst = rate.burst();
    // How far ahead of now the TAT may be and still let a unit through: the burst minus this one.
    let tolerance = (burst - 1).saturating_mul(interval);
    // A TAT in the past is a key that has fully refilled: the same as a fresh one.
    let tat = tat_ms.map_or(now_ms, |tat| tat.max(now_ms));
    let ahead = tat - now_ms;
    if ahead > tolerance {
        return (Decision::refused(burst, ahead, ahead - tolerance), tat);
    }
    let new_tat = tat.saturating_add(interval);
    // Units left after this one: what the tolerance still holds beyond `ahead`, whole units only.
    let remaining = (tolerance - ahead) / interval;
    (
        Decision::allowed(burst, remaining, new_tat - now_ms),
        new_tat,
    )
}

/// The day's count under one key, as of `unix_ms`: the decision and the new count (`None`: refused,
/// nothing counted).
fn daily(count: u64, quota: u64, unix_ms: u64) -> (Decision, Option<u64>) {
    let reset = DAY_MS - unix_ms % DAY_MS;
    if count >= quota {
        return (Decision::refused(quota, reset, reset), None);
    }
    (
        Decision::allowed(quota, quota - count - 1, reset),
        Some(count + 1),
    )
}

/// This module's error: the store of the limits (the memory table, or Redis) could not answer.
#[derive(Debug, thiserror::Error)]
#[error("the limits store is unreachable: {0}")]
pub struct Error(String);

/// Where the limits live: this process, or Redis shared by every replica.
pub enum Limiter {
    Memory(Arc<MemoryLimits>),
    Redis(ConnectionManager),
}

impl Limiter {
    /// Limits in this process, holding at most [`DEFAULT_MAX_KEYS`] keys per table.
    pub fn memory() -> Self {
        Self::memory_with_max_keys(DEFAULT_MAX_KEYS)
    }

    /// Limits in this process, holding at most `max_keys` keys per table (rates, quotas).
    pub fn memory_with_max_keys(max_keys: usize) -> Self {
        Self::Memory(MemoryLimits::new(max_keys))
    }

    /// Limits in Redis, connecting lazily ([`crate::redis_client`]): a decision fails rather
    /// than waits when Redis is down.
    pub fn redis(url: &str, timeout: Duration) -> redis::RedisResult<Self> {
        Ok(Self::Redis(crate::redis_client::connect_lazily(
            url, timeout,
        )?))
    }

    /// GCRA: takes one unit under `key` if `rate` allows it now. A refused request takes nothing.
    pub async fn take(&self, key: &str, rate: Rate) -> Result<Decision, Error> {
        let decisions = self.take_all(&[(key, rate)]).await?;
        decisions
            .into_iter()
            .next()
            .ok_or_else(|| Error("no decision for the key".to_owned()))
    }

    /// GCRA over several limits at once: one unit from each if every one allows it now, else
    /// nothing from any. Each decision is its limit's own verdict, in the order given; a send is
    /// allowed only if all are.
    pub async fn take_all(&self, limits: &[(&str, Rate)]) -> Result<Vec<Decision>, Error> {
        self.judge(limits, true).await
    }

    /// What [`Limiter::take_all`] would decide now, taking nothing: for the `RateLimit-*`
    /// headers of answers that send nothing.
    pub async fn peek_all(&self, limits: &[(&str, Rate)]) -> Result<Vec<Decision>, Error> {
        self.judge(limits, false).await
    }

    async fn judge(&self, limits: &[(&str, Rate)], take: bool) -> Result<Vec<Decision>, Error> {
        match self {
            Self::Memory(memory) => memory.judge_at(limits, memory.now_ms(), take),
            Self::Redis(redis) => redis_limits::judge(redis, limits, take).await,
        }
    }

    /// Counts one under `key` for the current UTC day (the day changes at 00:00 UTC), refusing
    /// beyond `quota`; a refused request counts nothing. `reset` = time until the next 00:00 UTC.
    pub async fn take_daily(&self, key: &str, quota: u64) -> Result<Decision, Error> {
        self.daily(key, quota, true).await
    }

    /// What [`Limiter::take_daily`] would decide now, counting nothing.
    pub async fn peek_daily(&self, key: &str, quota: u64) -> Result<Decision, Error> {
        self.daily(key, quota, false).await
    }

    async fn daily(&self, key: &str, quota: u64, take: bool) -> Result<Decision, Error> {
        match self {
            Self::Memory(memory) => {
                memory.take_daily_at(key, quota, crate::unix_ms(), memory.now_ms(), take)
            }
            Self::Redis(redis) => redis_limits::daily(redis, key, quota, take).await,
        }
    }

    /// Gives back one unit taken by `take_daily` (used when a later check refuses the send, so the
    /// quota counts only what was sent).
    ///
    /// It goes back to the current day: a unit taken just before 00:00 UTC and given back just
    /// after lowers the new day's count instead (never below zero), at most one unit in the
    /// caller's favour.
    pub async fn give_back_daily(&self, key: &str) -> Result<(), Error> {
        match self {
            Self::Memory(memory) => {
                memory.give_back_daily(key);
                Ok(())
            }
            Self::Redis(redis) => redis_limits::give_back_daily(redis, key).await,
        }
    }

    /// Whether the store answers (always, in memory).
    pub async fn is_ready(&self) -> bool {
        match self {
            Self::Memory(_) => true,
            Self::Redis(redis) => {
                let mut redis = redis.clone();
                redis::cmd("PING")
                    .query_async::<String>(&mut redis)
                    .await
                    .is_ok()
            }
        }
    }

    /// Whether every replica sees the same limits.
    pub fn is_shared(&self) -> bool {
        matches!(self, Self::Redis(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn ms(value: u64) -> Duration {
        Duration::from_millis(value)
    }

    /// Takes at `now` from `tat`, as a limiter would store it.
    fn take(tat: &mut Option<u64>, now: u64, rate: Rate) -> Decision {
        let (decision, new_tat) = gcra(*tat, now, rate);
        *tat = Some(new_tat);
        decision
    }

    #[test]
    fn rates_are_built_from_counts() {
        assert_eq!(Rate::per_minute(30, 5), Rate::every(ms(2000), 5));
        assert_eq!(Rate::per_second(10), Rate::every(ms(100), 10));
        assert_eq!(Rate::per_minute(0, 0), Rate::every(ms(60_000), 1));
        assert_eq!(Rate::every(SECOND, 0).burst, 1);
        // 7 a minute is 8571.43 ms: rounded up, never more generous.
        assert_eq!(Rate::per_minute(7, 1).interval_ms(), 8572);
        assert_eq!(Rate::per_second(5000).interval_ms(), 1);
        assert_eq!(Rate::every(Duration::ZERO, 1).interval_ms(), 1);
        assert_eq!(Rate::every(Duration::MAX, 1).interval_ms(), MAX_INTERVAL_MS);
    }

    #[test]
    fn a_fresh_key_allows_the_burst_then_refuses() {
        let rate = Rate::every(SECOND, 5);
        let mut tat = None;
        for (i, remaining) in [4, 3, 2, 1, 0].into_iter().enumerate() {
            let decision = take(&mut tat, 10_000, rate);
            assert_eq!(
                decision,
                Decision {
                    allowed: true,
                    limit: 5,
                    remaining,
                    reset: SECOND * (i as u32 + 1),
                    retry_after: Duration::ZERO,
                },
                "take {}",
                i + 1
            );
        }
        assert_eq!(
            take(&mut tat, 10_000, rate),
            Decision {
                allowed: false,
                limit: 5,
                remaining: 0,
                reset: 5 * SECOND,
                retry_after: SECOND,
            }
        );
    }

    #[test]
    fn a_refused_request_changes_nothing() {
        let rate = Rate::every(SECOND, 2);
        let (first, tat) = gcra(None, 0, rate);
        let (second, tat) = gcra(Some(tat), 0, rate);
        assert!(first.allowed && second.allowed);
        assert_eq!(tat, 2000);
        for now in [0, 500, 999] {
            let (decision, after) = gcra(Some(tat), now, rate);
            assert!(!decision.allowed);
            assert_eq!(after, tat, "at {now}");
        }
    }

    #[test]
    fn retry_after_is_exact_to_the_millisecond() {
        let rate = Rate::every(SECOND, 2);
        let tat = Some(2000); // two taken at 0
        let (at_1, _) = gcra(tat, 1, rate);
        assert_eq!(
            (at_1.allowed, at_1.retry_after, at_1.reset),
            (false, ms(999), ms(1999))
        );
        let (at_999, _) = gcra(tat, 999, rate);
        assert_eq!((at_999.allowed, at_999.retry_after), (false, ms(1)));
        let (at_1000, new_tat) = gcra(tat, 1000, rate);
        assert!(at_1000.allowed, "allowed exactly when retry_after said");
        assert_eq!(
            (at_1000.remaining, at_1000.reset, new_tat),
            (0, ms(2000), 3000)
        );
    }

    #[test]
    fn units_come_back_one_interval_at_a_time() {
        let rate = Rate::every(SECOND, 3);
        let mut tat = None;
        for _ in 0..3 {
            assert!(take(&mut tat, 0, rate).allowed);
        }
        // Half a unit back is not a unit.
        assert!(!take(&mut tat, 500, rate).allowed);
        let one_back = take(&mut tat, 1500, rate);
        assert_eq!((one_back.allowed, one_back.remaining), (true, 0));
        // Long idle: full again, no more than the burst.
        let refilled = take(&mut tat, 60_000, rate);
        assert_eq!(
            (refilled.allowed, refilled.remaining, refilled.reset),
            (true, 2, SECOND)
        );
    }

    #[test]
    fn a_tat_in_the_past_is_the_same_as_none() {
        let rate = Rate::every(SECOND, 4);
        assert_eq!(gcra(Some(100), 5000, rate), gcra(None, 5000, rate));
    }

    #[test]
    fn a_burst_of_one_is_a_steady_pace() {
        let rate = Rate::every(ms(200), 1);
        let mut tat = None;
        let first = take(&mut tat, 0, rate);
        assert_eq!(
            (first.allowed, first.remaining, first.reset),
            (true, 0, ms(200))
        );
        let early = take(&mut tat, 150, rate);
        assert_eq!((early.allowed, early.retry_after), (false, ms(50)));
        assert!(take(&mut tat, 200, rate).allowed);
    }

    #[test]
    fn the_daily_count_refuses_at_the_quota_until_midnight() {
        let noon = 20_000 * DAY_MS + DAY_MS / 2;
        let (first, count) = daily(0, 2, noon);
        assert_eq!(
            first,
            Decision {
                allowed: true,
                limit: 2,
                remaining: 1,
                reset: ms(DAY_MS / 2),
                retry_after: Duration::ZERO,
            }
        );
        assert_eq!(count, Some(1));
        let (full, count) = daily(2, 2, noon);
        assert_eq!(count, None, "a refusal counts nothing");
        assert_eq!(
            (full.allowed, full.remaining, full.retry_after),
            (false, 0, ms(DAY_MS / 2))
        );
        let (last_ms, _) = daily(2, 2, 20_001 * DAY_MS - 1);
        assert_eq!(last_ms.retry_after, ms(1), "never zero");
        let (none, _) = daily(0, 0, noon);
        assert!(!none.allowed, "a quota of 0 allows nothing");
    }

    #[tokio::test]
    async fn memory_takes_until_refused_and_keys_are_independent() {
        let limiter = Limiter::memory();
        let rate = Rate::every(Duration::from_secs(60), 3);
        for remaining in [2, 1, 0] {
            let decision = limiter.take("caller:billing", rate).await.expect("memory");
            assert_eq!((decision.allowed, decision.remaining), (true, remaining));
        }
        let refused = limiter.take("caller:billing", rate).await.expect("memory");
        assert!(!refused.allowed);
        assert!(
            refused.retry_after > Duration::ZERO && refused.retry_after <= Duration::from_secs(60)
        );
        let other = limiter.take("caller:alerts", rate).await.expect("memory");
        assert_eq!((other.allowed, other.remaining), (true, 2));
        assert!(!limiter.is_shared());
        assert!(limiter.is_ready().await);
    }

    #[tokio::test]
    async fn memory_refills_after_the_interval() {
        let limiter = Limiter::memory();
        let rate = Rate::every(ms(50), 1);
        assert!(limiter.take("k", rate).await.expect("memory").allowed);
        let refused = limiter.take("k", rate).await.expect("memory");
        assert!(!refused.allowed);
        tokio::time::sleep(refused.retry_after + ms(5)).await;
        assert!(limiter.take("k", rate).await.expect("memory").allowed);
    }
}
