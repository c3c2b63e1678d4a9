//! How far a provider's own prompt-token counts run above nodegate's estimate, learned per
//! (provider, model) from the usage each response reports.
//!
//! Admission must reserve what the provider will charge, but nodegate only sees the visible
//! prompt: a chat template adds a system prompt and role markers (llama.cpp serving SmolLM2 counts
//! 36 tokens for a prompt tiktoken sees as 8), and another tokenizer splits text differently. So
//! each reservation adds the *largest* shortfall (actual minus estimate) seen in the last
//! [`WINDOW`] calls of that pair: conservative, and reset by evidence (a changed template stops
//! counting after [`WINDOW`] calls). Until a pair has been observed once, `strict` budgets admit
//! one call of it at a time ([`Calibration::probe`]), so a burst cannot spend on guesses.
use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex},
};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Observations kept per (provider, model).
pub const WINDOW: usize = 64;
/// Pairs remembered; past it the oldest learning is dropped (a bound on what clients can grow).
const MAX_PAIRS: usize = 4096;

#[derive(Default)]
struct Entry {
    shortfalls: VecDeque<u64>,
    max: u64,
    observed: bool,
    probe: Option<Arc<Semaphore>>,
}

#[derive(Default)]
pub struct Calibration {
    map: Mutex<HashMap<(Arc<str>, String), Entry>>,
}

impl Calibration {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(Arc<str>, String), Entry>> {
        // Each update leaves an entry whole; a panic elsewhere cannot corrupt one.
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Tokens to add to the estimate of a prompt for `model` at `provider`; None when the pair
    /// has never been observed.
    pub fn overhead(&self, provider: &Arc<str>, model: &str) -> Option<u64> {
        let map = self.lock();
        let e = map.get(&(provider.clone(), model.to_string()))?;
        e.observed.then_some(e.max)
    }

    /// Records one call: nodegate estimated `estimate` prompt tokens, the provider counted
    /// `actual`.
    pub fn observe(&self, provider: &Arc<str>, model: &str, estimate: u64, actual: u64) {
        let mut map = self.lock();
        let e = entry(&mut map, provider, model);
        e.shortfalls.push_back(actual.saturating_sub(estimate));
        if e.shortfalls.len() > WINDOW {
            e.shortfalls.pop_front();
        }
        e.max = e.shortfalls.iter().copied().max().unwrap_or(0);
        e.observed = true;
        // Calls waiting to probe go ahead with the learned overhead.
        if let Some(s) = e.probe.take() {
            s.add_permits(Semaphore::MAX_PERMITS / 2);
        }
    }

    /// For an unobserved pair: a permit that lets one call at a time through (the first call
    /// teaches the overhead; the others wait for it). None once the pair is observed.
    pub fn probe(&self, provider: &Arc<str>, model: &str) -> Option<Arc<Semaphore>> {
        let mut map = self.lock();
        let e = entry(&mut map, provider, model);
        if e.observed {
            return None;
        }
        Some(e.probe.get_or_insert_with(|| Arc::new(Semaphore::new(1))).clone())
    }
}

/// The pair's entry, made if new; past [`MAX_PAIRS`] the learning starts over (a bound on what
/// clients naming models can grow).
fn entry<'m>(
    map: &'m mut HashMap<(Arc<str>, String), Entry>,
    provider: &Arc<str>,
    model: &str,
) -> &'m mut Entry {
    let key = (provider.clone(), model.to_string());
    if map.len() >= MAX_PAIRS && !map.contains_key(&key) {
        map.clear();
    }
    map.entry(key).or_default()
}

/// A probe permit held for the length of one call.
pub type ProbePermit = OwnedSemaphorePermit;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_largest_recent_shortfall_is_kept() {
        let c = Calibration::default();
        let p: Arc<str> = Arc::from("llama");
        assert_eq!(c.overhead(&p, "smol"), None);
        c.observe(&p, "smol", 8, 36);
        c.observe(&p, "smol", 20, 40);
        assert_eq!(c.overhead(&p, "smol"), Some(28));
        c.observe(&p, "smol", 50, 10);
        assert_eq!(c.overhead(&p, "smol"), Some(28), "an overestimate never lowers the reserve");
        for _ in 0..WINDOW {
            c.observe(&p, "smol", 10, 15);
        }
        assert_eq!(c.overhead(&p, "smol"), Some(5), "old evidence ages out");
        assert_eq!(c.overhead(&p, "other"), None);
    }

    #[tokio::test]
    async fn unobserved_pairs_probe_one_call_at_a_time() {
        let c = Calibration::default();
        let p: Arc<str> = Arc::from("llama");
        let s = c.probe(&p, "smol").unwrap();
        let first = s.clone().try_acquire_owned().unwrap();
        assert!(s.clone().try_acquire_owned().is_err(), "a second call waits");
        c.observe(&p, "smol", 8, 36);
        assert!(s.clone().try_acquire_owned().is_ok(), "learning releases the waiters");
        drop(first);
        assert!(c.probe(&p, "smol").is_none());
    }
}
