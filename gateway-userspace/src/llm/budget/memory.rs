//! Budget counters in this process: one mutex, check-all-then-add-all, so concurrent requests
//! can never overshoot a limit together.
use std::{collections::HashMap, sync::Mutex};

use super::Item;

#[derive(Default)]
pub struct Memory {
    /// key -> (expires at, unix seconds; value)
    map: Mutex<HashMap<String, (u64, u64)>>,
}

impl Memory {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (u64, u64)>> {
        // A panic elsewhere cannot leave a counter half-updated: each update is one assignment.
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds every item's amount if all stay within their limits; else the index of the first
    /// that would not and what is left in it.
    pub fn reserve(&self, now: u64, items: &[Item]) -> Result<(), (usize, u64)> {
        let mut map = self.lock();
        if map.len() > 100_000 {
            map.retain(|_, (exp, _)| *exp > now);
        }
        for (i, it) in items.iter().enumerate() {
            let cur = map.get(&it.key).filter(|(exp, _)| *exp > now).map_or(0, |(_, v)| *v);
            if cur.saturating_add(it.amount) > it.limit {
                return Err((i, it.limit.saturating_sub(cur)));
            }
        }
        for it in items {
            let e = map.entry(it.key.clone()).or_insert((it.expires, 0));
            if e.0 <= now {
                *e = (it.expires, 0);
            }
            e.1 = e.1.saturating_add(it.amount);
        }
        Ok(())
    }

    /// Applies signed corrections (actual minus reserved).
    pub fn adjust(&self, now: u64, items: &[(String, i64, u64)]) {
        let mut map = self.lock();
        for (key, delta, expires) in items {
            let e = map.entry(key.clone()).or_insert((*expires, 0));
            if e.0 <= now {
                continue; // the window is over; nothing left to correct
            }
            e.1 = e.1.saturating_add_signed(*delta);
        }
    }

    pub fn get(&self, key: &str) -> u64 {
        self.lock().get(key).map_or(0, |(_, v)| *v)
    }
}
