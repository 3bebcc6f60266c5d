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

use std::{
    collections::HashMap,
    sync::{Arc, LazyLock, Mutex, MutexGuard, PoisonError},
    time::{Duration, Instant},
};

use redis::aio::ConnectionManager;

/// Keys the memory limiter holds per table (rates and quotas each), unless told otherwise: a
/// key costs roughly 150 to 200 bytes (an 80-byte `recipient:<name>:<sha256>` key and the map's
/// slot), so a full table is some 20 MB. Beyond that, deployments want Redis anyway.
pub const DEFAULT_MAX_KEYS: usize = 100_000;

/// Every this many new keys, the memory limiter drops the entries that have run out.
const SWEEP_EVERY: usize = 1024;

/// A full table sweeps at most this often: a table full of live keys must not cost a scan of
/// every key on every request.
const FULL_SWEEP_PAUSE_MS: u64 = 100;

/// The longest interval a rate may have. Keeps every TAT far below 2^53 ms, where Lua's numbers
/// (doubles) stop being exact, and far below `u64::MAX`.
const MAX_INTERVAL_MS: u64 = 365 * DAY_MS;

const DAY_MS: u64 = 86_400_000;

/// How long a day's quota count stays in Redis: past the end of its day wherever in the day it
/// started, and then it goes by itself.
const QUOTA_TTL_S: u64 = 2 * 86_400;

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
/// The memory limiter uses this directly; the Redis script [`GCRA_LUA`] is the same arithmetic.
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

/// GCRA in Redis, on Redis's clock, for several limits at once: all of them take a unit, or
/// none does. KEYS[i]: the TAT keys; ARGV[1]: `1` to take, `0` only to look; ARGV[2i],
/// ARGV[2i+1]: each one's interval (ms) and burst.
/// Returns, per key, {allowed (1/0), remaining, reset (ms), retry after (ms)}, each judged alone.
/// A TAT expires when it is reached (a key that has refilled is the same as no key): nothing
/// lingers. The TAT is written with `%d`: `tostring` would write a large number in exponent
/// notation.
const GCRA_LUA: &str = r"
if redis.replicate_commands then redis.replicate_commands() end
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local out, writes, all = {}, {}, ARGV[1] == '1'
for i, key in ipairs(KEYS) do
  local interval = tonumber(ARGV[2 * i])
  local burst = tonumber(ARGV[2 * i + 1])
  local tat = now
  local stored = redis.call('GET', key)
  if stored then tat = math.max(tonumber(stored) or now, now) end
  local tolerance = (burst - 1) * interval
  local ahead = tat - now
  if ahead > tolerance then
    all = false
    for _, v in ipairs({0, 0, ahead, ahead - tolerance}) do table.insert(out, v) end
  else
    local new_tat = tat + interval
    table.insert(writes, {key, new_tat})
    for _, v in ipairs({1, math.floor((tolerance - ahead) / interval), new_tat - now, 0}) do
      table.insert(out, v)
    end
  end
end
if all then
  for _, w in ipairs(writes) do
    redis.call('SET', w[1], string.format('%d', w[2]), 'PX', string.format('%d', w[2] - now))
  end
end
return out
";

/// One more under today's count (the UTC day on Redis's clock) unless it has reached the quota.
/// ARGV: the caller's key, the quota, the count's TTL in seconds ([`QUOTA_TTL_S`]), `1` to count
/// or `0` only to look.
/// Returns {allowed (1/0), today's count, reset (ms)}.
///
/// The key, `qikchat-relay:quota:<days since 1970-01-01>:<key>`, is built here from `TIME` rather
/// than passed in KEYS, so the day comes from the same clock as everything else. That is fine on
/// a single Redis (what the relay uses); Redis Cluster would want every key declared.
const DAILY_LUA: &str = r"
if redis.replicate_commands then redis.replicate_commands() end
local time = redis.call('TIME')
local secs = tonumber(time[1])
local day = math.floor(secs / 86400)
local now = secs * 1000 + math.floor(tonumber(time[2]) / 1000)
local reset = (day + 1) * 86400000 - now
local key = 'qikchat-relay:quota:' .. string.format('%d', day) .. ':' .. ARGV[1]
local quota = tonumber(ARGV[2])
local count = tonumber(redis.call('GET', key) or '0') or 0
if count >= quota then return {0, count, reset} end
if ARGV[4] ~= '1' then return {1, count + 1, reset} end
count = redis.call('INCR', key)
if count == 1 then redis.call('EXPIRE', key, ARGV[3]) end
return {1, count, reset}
";

/// One less under today's count, never below zero (a count back at zero is deleted).
/// ARGV: the caller's key.
const GIVE_BACK_LUA: &str = r"
if redis.replicate_commands then redis.replicate_commands() end
local time = redis.call('TIME')
local day = math.floor(tonumber(time[1]) / 86400)
local key = 'qikchat-relay:quota:' .. string.format('%d', day) .. ':' .. ARGV[1]
local count = tonumber(redis.call('GET', key) or '0') or 0
if count > 1 then redis.call('DECR', key) elseif count == 1 then redis.call('DEL', key) end
return 0
";

/// Hashed once: `redis::Script` sends EVALSHA and loads the script only when Redis lacks it.
static GCRA_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(GCRA_LUA));
static DAILY_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(DAILY_LUA));
static GIVE_BACK_SCRIPT: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(GIVE_BACK_LUA));

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
            Self::Redis(redis) => {
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
            Self::Redis(redis) => {
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
            Self::Redis(redis) => {
                let mut redis = redis.clone();
                GIVE_BACK_SCRIPT
                    .arg(key)
                    .invoke_async::<i64>(&mut redis)
                    .await
                    .map(drop)
                    .map_err(redis_error)
            }
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

/// A Redis error's message names the failure, never the URL (which can hold a password).
fn redis_error(e: redis::RedisError) -> Error {
    Error(e.to_string())
}

fn non_negative(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// Limits in this process.
///
/// Rates run on a monotonic clock (milliseconds since the limiter was made), so a wall clock
/// stepping back cannot refill anyone; quotas run on the wall clock, because a UTC day is a wall
/// clock notion. Each table holds at most `max_keys` keys: entries that have run out (a TAT in the
/// past, a count from another day, both the same as no entry) are dropped every
/// [`SWEEP_EVERY`] new keys and when the table is full, so per-recipient keys cannot grow memory
/// without bound. A table full of live keys refuses new keys with a [`Error`] rather than
/// forget a limit: the caller decides, as when Redis is down.
pub struct MemoryLimits {
    start: Instant,
    /// Key to TAT, in ms since `start`.
    rates: Mutex<Bounded<u64>>,
    /// Key to (day since 1970-01-01 UTC, count that day).
    quotas: Mutex<Bounded<(u64, u64)>>,
}

impl MemoryLimits {
    pub fn new(max_keys: usize) -> Arc<Self> {
        Arc::new(Self {
            start: Instant::now(),
            rates: Mutex::new(Bounded::new(max_keys)),
            quotas: Mutex::new(Bounded::new(max_keys)),
        })
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    #[cfg(test)]
    fn take_at(&self, key: &str, rate: Rate, now_ms: u64) -> Result<Decision, Error> {
        let decisions = self.judge_at(&[(key, rate)], now_ms, true)?;
        Ok(decisions[0])
    }

    /// GCRA for every limit at `now_ms`; when `take` and all allow, each takes its unit.
    fn judge_at(
        &self,
        limits: &[(&str, Rate)],
        now_ms: u64,
        take: bool,
    ) -> Result<Vec<Decision>, Error> {
        let mut rates = lock(&self.rates);
        let judged: Vec<(Decision, u64)> = limits
            .iter()
            .map(|(key, rate)| gcra(rates.get(key).copied(), now_ms, *rate))
            .collect();
        if take && judged.iter().all(|(decision, _)| decision.allowed) {
            for ((key, _), (_, new_tat)) in limits.iter().zip(&judged) {
                rates.set(key, *new_tat, now_ms, |tat| *tat > now_ms)?;
            }
        }
        Ok(judged.into_iter().map(|(decision, _)| decision).collect())
    }

    fn take_daily_at(
        &self,
        key: &str,
        quota: u64,
        unix_ms: u64,
        now_ms: u64,
        take: bool,
    ) -> Result<Decision, Error> {
        let today = unix_ms / DAY_MS;
        let mut quotas = lock(&self.quotas);
        let count = match quotas.get(key) {
            Some(&(day, count)) if day == today => count,
            _ => 0,
        };
        let (decision, new_count) = daily(count, quota, unix_ms);
        if let Some(count) = new_count.filter(|_| take) {
            quotas.set(key, (today, count), now_ms, |(day, _)| *day == today)?;
        }
        Ok(decision)
    }

    fn give_back_daily(&self, key: &str) {
        self.give_back_daily_at(key, crate::unix_ms());
    }

    fn give_back_daily_at(&self, key: &str, unix_ms: u64) {
        let today = unix_ms / DAY_MS;
        let mut quotas = lock(&self.quotas);
        match quotas.get(key) {
            Some(&(day, count)) if day == today && count > 1 => {
                quotas.entries.insert(key.to_owned(), (day, count - 1));
            }
            Some(&(day, _)) if day == today => {
                quotas.entries.remove(key);
            }
            _ => {}
        }
    }
}

fn lock<T>(table: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave a table half-updated: every update is one call.
    table.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A map with at most `max` keys whose dead entries (the same as absent ones) are dropped now and
/// then, when keys are added: no background task, and a sweep's cost is spread over many adds.
struct Bounded<V> {
    entries: HashMap<String, V>,
    max: usize,
    added_since_sweep: usize,
    /// On the limiter's monotonic clock.
    last_sweep_ms: Option<u64>,
}

impl<V> Bounded<V> {
    fn new(max: usize) -> Self {
        Self {
            entries: HashMap::new(),
            max,
            added_since_sweep: 0,
            last_sweep_ms: None,
        }
    }

    fn get(&self, key: &str) -> Option<&V> {
        self.entries.get(key)
    }

    /// Stores `value` under `key`. A new key first makes room: a sweep of the entries that are not
    /// `live` every [`SWEEP_EVERY`] new keys, or when the map is full (at most every
    /// [`FULL_SWEEP_PAUSE_MS`]); a map still full refuses the key.
    fn set(
        &mut self,
        key: &str,
        value: V,
        now_ms: u64,
        live: impl Fn(&V) -> bool,
    ) -> Result<(), Error> {
        if let Some(slot) = self.entries.get_mut(key) {
            *slot = value;
            return Ok(());
        }
        self.added_since_sweep += 1;
        let full = self.entries.len() >= self.max;
        let pause_over = self
            .last_sweep_ms
            .is_none_or(|last| now_ms.saturating_sub(last) >= FULL_SWEEP_PAUSE_MS);
        if self.added_since_sweep >= SWEEP_EVERY || (full && pause_over) {
            self.entries.retain(|_, value| live(value));
            self.added_since_sweep = 0;
            self.last_sweep_ms = Some(now_ms);
        }
        if self.entries.len() >= self.max {
            return Err(Error(format!(
                "{} keys held in memory, none expired",
                self.max
            )));
        }
        self.entries.insert(key.to_owned(), value);
        Ok(())
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

    #[test]
    fn a_full_table_purges_expired_keys_and_refuses_while_all_are_live() {
        let limits = MemoryLimits::new(3);
        let rate = Rate::every(ms(100), 1);
        for key in ["a", "b", "c"] {
            assert!(limits.take_at(key, rate, 0).expect("room").allowed);
        }
        assert!(limits.take_at("d", rate, 10).is_err(), "full of live keys");
        // Known keys still work when the table is full.
        assert!(!limits.take_at("a", rate, 20).expect("known key").allowed);
        // a, b and c refilled at 100: swept when d needs room.
        assert!(limits.take_at("d", rate, 150).expect("swept").allowed);
        assert_eq!(lock(&limits.rates).entries.len(), 1);
    }

    #[test]
    fn a_full_table_does_not_sweep_on_every_request() {
        let limits = MemoryLimits::new(2);
        let short = Rate::every(ms(10), 1);
        let long = Rate::every(Duration::from_secs(60), 1);
        assert!(limits.take_at("short", short, 0).expect("room").allowed);
        assert!(limits.take_at("long", long, 0).expect("room").allowed);
        assert!(
            limits.take_at("x", short, 5).is_err(),
            "swept at 5: all live"
        );
        // "short" ran out at 10, but the last sweep was under FULL_SWEEP_PAUSE_MS ago.
        assert!(limits.take_at("x", short, 50).is_err());
        assert!(limits.take_at("x", short, 5 + FULL_SWEEP_PAUSE_MS).is_ok());
    }

    #[test]
    fn expired_keys_are_swept_as_new_keys_come() {
        let limits = MemoryLimits::new(DEFAULT_MAX_KEYS);
        let rate = Rate::every(ms(10), 1);
        for i in 0..SWEEP_EVERY - 1 {
            limits
                .take_at(&format!("recipient:{i}"), rate, 0)
                .expect("room");
        }
        assert_eq!(lock(&limits.rates).entries.len(), SWEEP_EVERY - 1);
        limits.take_at("recipient:late", rate, 100).expect("room");
        assert_eq!(
            lock(&limits.rates).entries.len(),
            1,
            "only the live key is left"
        );
    }

    #[test]
    fn memory_quota_counts_per_day_and_gives_back() {
        let limits = MemoryLimits::new(10);
        let day = 20_000 * DAY_MS;
        let noon = day + DAY_MS / 2;
        let take = |key: &str, at: u64| limits.take_daily_at(key, 2, at, 0, true).expect("room");
        assert_eq!(take("q", noon).remaining, 1);
        assert_eq!(take("q", noon).remaining, 0);
        let refused = take("q", noon);
        assert!(!refused.allowed);
        assert_eq!(refused.retry_after, ms(DAY_MS / 2));
        assert!(take("other", noon).allowed, "keys are independent");

        limits.give_back_daily_at("q", noon);
        let again = take("q", noon);
        assert_eq!((again.allowed, again.remaining), (true, 0));

        // The next day starts from zero, and gives back nothing of the day before.
        let tomorrow = day + DAY_MS;
        limits.give_back_daily_at("q", tomorrow);
        assert_eq!(take("q", tomorrow).remaining, 1);
        // Giving back more than was taken never goes below zero.
        for _ in 0..3 {
            limits.give_back_daily_at("q", tomorrow);
        }
        assert_eq!(take("q", tomorrow).remaining, 1);
    }

    #[test]
    fn yesterdays_counts_are_swept() {
        let limits = MemoryLimits::new(2);
        let day = 20_000 * DAY_MS;
        limits.take_daily_at("a", 5, day, 0, true).expect("room");
        limits.take_daily_at("b", 5, day, 0, true).expect("room");
        assert!(
            limits.take_daily_at("c", 5, day, 1, true).is_err(),
            "full today"
        );
        assert!(
            limits
                .take_daily_at("c", 5, day + DAY_MS, 1000, true)
                .expect("swept")
                .allowed
        );
        assert_eq!(lock(&limits.quotas).entries.len(), 1);
    }
}
