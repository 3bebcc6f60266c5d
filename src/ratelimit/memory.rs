//! Limits in this process: [`MemoryLimits`], its two tables of bounded size, and their sweeps.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Instant,
};

use super::{DAY_MS, Decision, Error, Rate, daily, gcra};
use crate::lock;

/// Every this many new keys, the memory limiter drops the entries that have run out.
const SWEEP_EVERY: usize = 1024;

/// A full table sweeps at most this often: a table full of live keys must not cost a scan of
/// every key on every request.
const FULL_SWEEP_PAUSE_MS: u64 = 100;

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

    pub(super) fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    #[cfg(test)]
    fn take_at(&self, key: &str, rate: Rate, now_ms: u64) -> Result<Decision, Error> {
        let decisions = self.judge_at(&[(key, rate)], now_ms, true)?;
        Ok(decisions[0])
    }

    /// GCRA for every limit at `now_ms`; when `take` and all allow, each takes its unit.
    pub(super) fn judge_at(
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

    pub(super) fn take_daily_at(
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

    pub(super) fn give_back_daily(&self, key: &str) {
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
    use std::time::Duration;

    use super::*;
    use crate::ratelimit::DEFAULT_MAX_KEYS;

    fn ms(value: u64) -> Duration {
        Duration::from_millis(value)
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
