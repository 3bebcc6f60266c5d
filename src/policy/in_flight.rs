//! Callers' sends in flight ([`InFlight`]), against their `max_in_flight`: one count that
//! outlives every reload, and a [`Slot`] per send that gives itself back.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

/// The sends in flight of each caller that has `max_in_flight`, by name. One count outlives every
/// reload (each new [`Policy`](super::Policy) takes it over), so a send that started before a
/// reload gives its slot back to the count the next policy checks, and a caller whose limit was
/// lowered is held to it at once.
#[derive(Debug, Default)]
pub struct InFlight {
    counts: Mutex<HashMap<Arc<str>, u32>>,
}

impl InFlight {
    /// One more send of `caller`, or `None` when it has `max` in flight already.
    pub fn take(self: &Arc<Self>, caller: &Arc<str>, max: u32) -> Option<Slot> {
        let mut counts = self.lock();
        let count = counts.entry(caller.clone()).or_insert(0);
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(Slot {
            counts: self.clone(),
            caller: caller.clone(),
        })
    }

    /// The caller's sends in flight now.
    pub fn of(&self, caller: &str) -> u32 {
        self.lock().get(caller).copied().unwrap_or(0)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, u32>> {
        crate::lock(&self.counts)
    }
}

/// One send in flight of a caller; dropping it gives the slot back (the entry goes with the last
/// one, so callers removed by a reload leave nothing behind).
#[derive(Debug)]
pub struct Slot {
    counts: Arc<InFlight>,
    caller: Arc<str>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.counts.lock();
        if let Some(count) = counts.get_mut(&self.caller) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(&self.caller);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::InFlight;

    #[test]
    fn a_callers_slots_are_its_own_and_each_comes_back_when_its_send_is_over() {
        let in_flight = Arc::new(InFlight::default());
        let billing: Arc<str> = Arc::from("billing");
        let alerts: Arc<str> = Arc::from("alerts");
        let first = in_flight.take(&billing, 2).expect("one of two");
        let second = in_flight.take(&billing, 2).expect("two of two");
        assert!(in_flight.take(&billing, 2).is_none(), "a third is refused");
        let other = in_flight
            .take(&alerts, 1)
            .expect("another caller has its own");
        assert_eq!(in_flight.of("billing"), 2);
        drop(first);
        let third = in_flight.take(&billing, 2).expect("a slot came back");
        drop((second, third, other));
        assert_eq!(in_flight.of("billing"), 0);
        assert!(
            in_flight.counts.lock().expect("lock").is_empty(),
            "no entry is left behind"
        );
    }
}
