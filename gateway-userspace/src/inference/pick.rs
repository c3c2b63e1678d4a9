//! Choosing an endpoint: the strategies, and the default scorer (prefix-cache affinity against
//! queue depth, KV-cache use and in-flight tokens, after a saturation filter). Returns every
//! healthy endpoint in the order to try them, so a connect failure retries on the next best.
use std::sync::{Arc, atomic::Ordering::Relaxed};

use super::{
    PoolState,
    endpoint::{EndpointState, Load},
};
use crate::config::PickStrategy;

pub struct Pick {
    pub order: Vec<Arc<EndpointState>>,
    pub reason: String,
}

fn busy(l: &Load) -> f64 {
    l.waiting + l.in_flight
}

impl PoolState {
    /// Picks for a prompt whose block hashes are `hashes`; remembers the choice for affinity.
    pub fn pick(&self, hashes: &[u64]) -> Pick {
        let now = self.now_ms();
        let stale = self.cfg.stale_after.as_millis() as u64;
        let n = self.endpoints.len();
        let mut loads: Vec<(usize, Load)> = self
            .endpoints
            .iter()
            .enumerate()
            .filter(|(_, e)| !e.ejected.load(Relaxed))
            .map(|(i, e)| (i, e.load(now, stale)))
            .collect();
        if loads.is_empty() {
            // Everything ejected: try them all anyway, the least failing first.
            let mut all = self.endpoints.to_vec();
            all.sort_by_key(|e| e.failures.load(Relaxed));
            return Pick { order: all, reason: "all endpoints ejected; trying anyway".into() };
        }
        let (chosen, reason) = match self.cfg.strategy {
            PickStrategy::RoundRobin => {
                let k = self.rr.fetch_add(1, Relaxed) % loads.len();
                (loads[k].0, "round-robin".to_string())
            }
            PickStrategy::Random => (loads[fastrand::usize(..loads.len())].0, "random".to_string()),
            PickStrategy::LeastRequest => {
                let best = loads.iter().min_by(|a, b| busy(&a.1).total_cmp(&busy(&b.1)));
                let (i, l) = best.map_or((loads[0].0, Load::default()), |(i, l)| (*i, *l));
                (i, format!("least-request: {} waiting or in flight", busy(&l)))
            }
            PickStrategy::PowerOfTwo => {
                let a = fastrand::usize(..loads.len());
                let mut b = fastrand::usize(..loads.len());
                if loads.len() > 1 && b == a {
                    b = (a + 1) % loads.len();
                }
                let (x, y) = (&loads[a], &loads[b]);
                let w = if busy(&y.1) < busy(&x.1) { y } else { x };
                (w.0, format!("power-of-two: {} waiting or in flight", busy(&w.1)))
            }
            PickStrategy::Scorer => self.score(&mut loads, hashes, n),
        };
        if !hashes.is_empty()
            && let Ok(mut idx) = self.prefix.lock()
        {
            idx.record(chosen, hashes);
        }
        self.endpoints[chosen].picks.fetch_add(1, Relaxed);
        let mut order = vec![self.endpoints[chosen].clone()];
        order.extend(loads.iter().filter(|(i, _)| *i != chosen).map(|(i, _)| self.endpoints[*i].clone()));
        Pick { order, reason }
    }

    fn score(&self, loads: &mut Vec<(usize, Load)>, hashes: &[u64], n: usize) -> (usize, String) {
        let sat = &self.cfg.saturation;
        let unsaturated: Vec<(usize, Load)> = loads
            .iter()
            .filter(|(_, l)| l.waiting <= sat.queue as f64 && l.kv_cache <= sat.kv_cache)
            .copied()
            .collect();
        if !unsaturated.is_empty() {
            *loads = unsaturated;
        }
        let mut depth = vec![0u32; n];
        if !hashes.is_empty()
            && let Ok(idx) = self.prefix.lock()
        {
            idx.depths(hashes, &mut depth);
        }
        let max_busy = loads.iter().map(|(_, l)| busy(l)).fold(0.0, f64::max);
        let max_tokens = loads.iter().map(|(_, l)| l.in_flight_tokens).fold(0.0, f64::max);
        let w = &self.cfg.weights;
        let blocks = hashes.len().max(1) as f64;
        let mut best = (f64::MIN, loads[0].0, 0.0, Load::default());
        for (i, l) in loads.iter() {
            let prefix = depth[*i] as f64 / blocks;
            let s = w.prefix * prefix
                - w.queue * busy(l) / (1.0 + max_busy)
                - w.kv_cache * l.kv_cache
                - w.in_flight * l.in_flight_tokens / (1.0 + max_tokens);
            if s > best.0 {
                best = (s, *i, prefix, *l);
            }
        }
        let (_, i, prefix, l) = best;
        (
            i,
            format!(
                "scorer: prefix {:.0}%, {} waiting or in flight, kv {:.0}%{}",
                prefix * 100.0,
                busy(&l),
                l.kv_cache * 100.0,
                if l.fresh { "" } else { " (no fresh scrape)" }
            ),
        )
    }
}
