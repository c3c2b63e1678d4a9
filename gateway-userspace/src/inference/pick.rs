//! Choosing an endpoint: the strategies, and the default scorer (prefix-cache affinity against
//! queue depth, KV-cache use and in-flight tokens, after a saturation filter). Returns every
//! healthy endpoint in the order to try them, so a connect failure retries on the next best.
use std::sync::{Arc, atomic::Ordering::Relaxed};

use super::{
    Members, PoolState,
    endpoint::{EndpointState, Load},
};
use crate::config::PickStrategy;

pub struct Pick {
    pub order: Vec<Arc<EndpointState>>,
    pub reason: String,
    /// Why this pick left this node, when it did.
    pub spilled: Option<String>,
}

fn busy(l: &Load) -> f64 {
    l.waiting + l.in_flight
}

impl PoolState {
    fn saturated(&self, l: &Load) -> bool {
        let sat = &self.cfg.saturation;
        l.waiting > sat.queue as f64 || l.kv_cache > sat.kv_cache
    }

    /// Which healthy endpoints a pick considers: this node's while one of them has room, else
    /// the others, with the reason they were spilled to.
    fn locality(
        &self,
        eps: &[Arc<EndpointState>],
        healthy: &[(usize, Load)],
    ) -> (Vec<(usize, Load)>, Option<String>) {
        if !self.cfg.prefer_local || eps.iter().all(|e| e.local) {
            return (healthy.to_vec(), None);
        }
        let local: Vec<(usize, Load)> = healthy.iter().filter(|(i, _)| eps[*i].local).copied().collect();
        if local.iter().any(|(_, l)| !self.saturated(l)) {
            return (local.into_iter().filter(|(_, l)| !self.saturated(l)).collect(), None);
        }
        let remote: Vec<(usize, Load)> = healthy.iter().filter(|(i, _)| !eps[*i].local).copied().collect();
        if remote.is_empty() {
            return (healthy.to_vec(), None);
        }
        let locals = eps.iter().filter(|e| e.local).count();
        let reason = if locals == 0 {
            "no endpoint on this node".to_string()
        } else if local.is_empty() {
            format!("all {locals} endpoint(s) on this node ejected")
        } else {
            let sat = &self.cfg.saturation;
            format!(
                "{} of {locals} endpoint(s) on this node saturated (queue > {} or kv cache > {:.0}%){}",
                local.len(),
                sat.queue,
                sat.kv_cache * 100.0,
                if local.len() < locals { ", the rest ejected" } else { "" }
            )
        };
        (remote, Some(reason))
    }

    /// Picks for a prompt whose block hashes are `hashes`; remembers the choice for affinity.
    pub fn pick(&self, hashes: &[u64]) -> Pick {
        let now = self.now_ms();
        let stale = self.cfg.stale_after.as_millis() as u64;
        let members = self.members();
        let eps = &members.endpoints;
        let n = eps.len();
        let healthy: Vec<(usize, Load)> = eps
            .iter()
            .enumerate()
            .filter(|(_, e)| !e.ejected.load(Relaxed))
            .map(|(i, e)| (i, e.load(now, stale)))
            .collect();
        if healthy.is_empty() {
            // Everything ejected: try them all anyway, this node's and the least failing first.
            let mut all = eps.to_vec();
            all.sort_by_key(|e| (!e.local, e.failures.load(Relaxed)));
            let reason = if all.is_empty() { "no endpoints" } else { "all endpoints ejected; trying anyway" };
            return Pick { order: all, reason: reason.into(), spilled: None };
        }
        let (mut loads, spilled) = self.locality(eps, &healthy);
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
            PickStrategy::Scorer => self.score(&members, &mut loads, hashes, n),
        };
        if !hashes.is_empty()
            && let Ok(mut idx) = members.prefix.lock()
        {
            idx.record(chosen, hashes);
        }
        eps[chosen].picks.fetch_add(1, Relaxed);
        // The chosen one, then the others considered, then (on connect failures only) the rest.
        let mut order = vec![eps[chosen].clone()];
        order.extend(loads.iter().filter(|(i, _)| *i != chosen).map(|(i, _)| eps[*i].clone()));
        order.extend(
            healthy
                .iter()
                .filter(|(i, _)| *i != chosen && !loads.iter().any(|(j, _)| j == i))
                .map(|(i, _)| eps[*i].clone()),
        );
        let reason = match &spilled {
            Some(why) => format!("{reason}; spilled to another node: {why}"),
            None => reason,
        };
        Pick { order, reason, spilled }
    }

    fn score(
        &self,
        members: &Members,
        loads: &mut Vec<(usize, Load)>,
        hashes: &[u64],
        n: usize,
    ) -> (usize, String) {
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
            && let Ok(idx) = members.prefix.lock()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inference::{Member, signals::Signals};

    fn pool() -> PoolState {
        let cfg: crate::config::Pool = serde_yaml_ng::from_str(
            "{ name: p, models: [m], strategy: least-request, saturation: { queue: 4 }, stale_after: 1h, endpoints: [{ address: '127.0.0.1:1' }] }",
        )
        .unwrap();
        let p = PoolState::new(&cfg);
        let member = |a: &str, local| Member {
            address: a.into(),
            metrics_path: "/metrics".into(),
            local,
            node: Some(if local { "n1" } else { "n2" }.into()),
        };
        p.set_found(vec![member("10.0.0.2:8000", true), member("10.0.1.2:8000", false)]);
        p
    }

    fn load(p: &PoolState, address: &str, waiting: f64) {
        let m = p.members();
        let ep = m.endpoints.iter().find(|e| &*e.address == address).unwrap();
        ep.record_scrape(&Signals { waiting: Some(waiting), running: None, kv_cache: None }, p.now_ms());
    }

    #[test]
    fn this_node_first_then_spill_with_the_reason() {
        let p = pool();
        load(&p, "10.0.1.2:8000", 0.0);
        load(&p, "127.0.0.1:1", 3.0);
        load(&p, "10.0.0.2:8000", 2.0);
        let pick = p.pick(&[]);
        assert_eq!(
            &*pick.order[0].address, "10.0.0.2:8000",
            "the idle remote one is not used while a local one has room"
        );
        assert!(pick.spilled.is_none());
        assert_eq!(&*pick.order[2].address, "10.0.1.2:8000", "remote ones come last, for connect failures");

        load(&p, "127.0.0.1:1", 9.0);
        load(&p, "10.0.0.2:8000", 5.0);
        let pick = p.pick(&[]);
        assert_eq!(&*pick.order[0].address, "10.0.1.2:8000");
        let why = pick.spilled.unwrap_or_default();
        assert!(why.contains("2 of 2 endpoint(s) on this node saturated"), "{why}");

        let m = p.members();
        m.endpoints.iter().filter(|e| e.local).for_each(|e| e.failed(1));
        let pick = p.pick(&[]);
        assert_eq!(pick.spilled.as_deref(), Some("all 2 endpoint(s) on this node ejected"));
    }

    #[test]
    fn a_changed_member_set_keeps_the_state_of_survivors() {
        let p = pool();
        let before = p.members();
        before.endpoints[1].failed(1);
        p.set_found(vec![Member {
            address: "10.0.0.2:8000".into(),
            metrics_path: "/metrics".into(),
            local: true,
            node: Some("n1".into()),
        }]);
        let after = p.members();
        assert_eq!(after.endpoints.len(), 2, "the configured endpoint stays");
        assert!(Arc::ptr_eq(&before.endpoints[1], &after.endpoints[1]), "same state object for a survivor");
        assert!(after.endpoints[1].ejected.load(Relaxed));
    }
}
