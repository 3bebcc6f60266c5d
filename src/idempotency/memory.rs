//! Records in this process: [`MemoryStore`], a bounded map of records with their expiry.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, Weak},
    time::{Duration, Instant},
};

use super::Error;

/// Records in this process: bounded, expired ones purged in the background.
pub struct MemoryStore {
    entries: Mutex<HashMap<String, (String, Instant)>>,
    max_entries: usize,
}

impl MemoryStore {
    /// The purge task holds only a weak reference: it ends when the store is dropped.
    pub fn new(max_entries: usize) -> Arc<Self> {
        let store = Arc::new(Self {
            entries: Mutex::new(HashMap::new()),
            max_entries,
        });
        let weak: Weak<Self> = Arc::downgrade(&store);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(30));
            loop {
                every.tick().await;
                match weak.upgrade() {
                    Some(store) => store.purge(),
                    None => return,
                }
            }
        });
        store
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (String, Instant)>> {
        crate::lock(&self.entries)
    }

    fn purge(&self) {
        let now = Instant::now();
        self.lock().retain(|_, (_, expires)| *expires > now);
    }

    pub(super) fn set_if_absent(
        &self,
        key: &str,
        value: &str,
        ttl: Duration,
    ) -> Result<Option<String>, Error> {
        let now = Instant::now();
        let mut entries = self.lock();
        if let Some((existing, expires)) = entries.get(key) {
            if *expires > now {
                return Ok(Some(existing.clone()));
            }
        }
        if entries.len() >= self.max_entries {
            entries.retain(|_, (_, expires)| *expires > now);
            if entries.len() >= self.max_entries {
                // Evicting a stored answer could let a retry send twice: refuse instead.
                return Err(Error(format!(
                    "{} keys held (RELAY_IDEMPOTENCY_MAX_KEYS)",
                    self.max_entries
                )));
            }
        }
        entries.insert(key.to_owned(), (value.to_owned(), now + ttl));
        Ok(None)
    }

    pub(super) fn compare_and_set(
        &self,
        key: &str,
        expected: &str,
        new: Option<(&str, Duration)>,
    ) -> bool {
        let now = Instant::now();
        let mut entries = self.lock();
        let holds_expected = entries
            .get(key)
            .is_some_and(|(value, expires)| *expires > now && value == expected);
        if !holds_expected {
            return false;
        }
        match new {
            Some((value, ttl)) => entries.insert(key.to_owned(), (value.to_owned(), now + ttl)),
            None => entries.remove(key),
        };
        true
    }
}
