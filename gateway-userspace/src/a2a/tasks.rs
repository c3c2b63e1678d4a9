//! Who created each A2A task: the first caller whose call produced a task id owns it. Bounded
//! (`a2a.max_tasks`, oldest created forgotten first) and expiring (`a2a.task_ttl` after it was
//! last used). Kept across config reloads. Scoped by agent: two agents may use the same id.
use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

struct Entry {
    owner: Arc<str>,
    seen: Instant,
}

struct Inner {
    map: HashMap<(Arc<str>, String), Entry>,
    order: VecDeque<(Arc<str>, String)>,
    ttl: Duration,
    max: usize,
}

pub struct Tasks {
    inner: Mutex<Inner>,
}

/// Whether a caller may act on a task.
#[derive(Debug, PartialEq, Eq)]
pub enum Access {
    Owner,
    /// Not known to nodegate, or another caller's: both answer "task not found".
    NotFound,
}

impl Tasks {
    pub fn new(ttl: Duration, max: usize) -> Self {
        let inner = Inner { map: HashMap::new(), order: VecDeque::new(), ttl, max: max.max(1) };
        Self { inner: Mutex::new(inner) }
    }

    /// New limits from a reloaded config (what is remembered stays).
    pub fn set_limits(&self, ttl: Duration, max: usize) {
        let mut inner = self.lock();
        inner.ttl = ttl;
        inner.max = max.max(1);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records `owner` as the creator of `task` at `agent`; a task already owned keeps its owner
    /// (returns false when that owner is someone else).
    pub fn record(&self, agent: &Arc<str>, task: &str, owner: &Arc<str>) -> bool {
        let mut inner = self.lock();
        let (ttl, max) = (inner.ttl, inner.max);
        let key = (agent.clone(), task.to_string());
        let now = Instant::now();
        if let Some(e) = inner.map.get_mut(&key)
            && now.duration_since(e.seen) <= ttl
        {
            e.seen = now;
            return e.owner == *owner;
        }
        inner.map.insert(key.clone(), Entry { owner: owner.clone(), seen: now });
        inner.order.push_back(key);
        while inner.map.len() > max {
            let Some(old) = inner.order.pop_front() else { break };
            inner.map.remove(&old);
        }
        // The order queue may hold keys already replaced; keep it from growing past twice the map.
        if inner.order.len() > 2 * max {
            let Inner { map, order, .. } = &mut *inner;
            order.retain(|k| map.contains_key(k));
        }
        true
    }

    /// Records `owner` for `task` whatever was remembered (what a shared store says wins).
    pub fn force(&self, agent: &Arc<str>, task: &str, owner: &Arc<str>) {
        let mut inner = self.lock();
        let key = (agent.clone(), task.to_string());
        if let Some(e) = inner.map.get_mut(&key) {
            e.owner = owner.clone();
            e.seen = Instant::now();
        }
    }

    /// Whether `caller` may act on `task` at `agent`.
    pub fn access(&self, agent: &Arc<str>, task: &str, caller: &Arc<str>) -> Access {
        let mut inner = self.lock();
        let ttl = inner.ttl;
        let key = (agent.clone(), task.to_string());
        let now = Instant::now();
        match inner.map.get_mut(&key) {
            Some(e) if now.duration_since(e.seen) > ttl => {
                inner.map.remove(&key);
                Access::NotFound
            }
            Some(e) if e.owner == *caller => {
                e.seen = now;
                Access::Owner
            }
            _ => Access::NotFound,
        }
    }

    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_bounds_and_expiry() {
        let t = Tasks::new(Duration::from_secs(60), 2);
        let (agent, a, b): (Arc<str>, Arc<str>, Arc<str>) = ("echo".into(), "a".into(), "b".into());
        assert!(t.record(&agent, "t1", &a));
        assert!(!t.record(&agent, "t1", &b), "a task keeps its first owner");
        assert_eq!(t.access(&agent, "t1", &a), Access::Owner);
        assert_eq!(t.access(&agent, "t1", &b), Access::NotFound);
        assert_eq!(t.access(&"other".into(), "t1", &a), Access::NotFound, "scoped by agent");
        t.record(&agent, "t2", &a);
        t.record(&agent, "t3", &a);
        assert_eq!(t.len(), 2);
        assert_eq!(t.access(&agent, "t1", &a), Access::NotFound, "the oldest is forgotten past the bound");
        let short = Tasks::new(Duration::from_millis(1), 10);
        short.record(&agent, "t", &a);
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(short.access(&agent, "t", &a), Access::NotFound);
    }
}
