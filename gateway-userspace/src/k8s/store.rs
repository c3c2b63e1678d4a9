//! The agent's view of its node: the pods scheduled here and the namespaces' labels, as the
//! watchers last saw them. Readers (identity, enrollment, `nodegate pods`) never wait on the API
//! server: when it is unreachable the last good view stays, and [`Health`] says so.
use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex, RwLock},
    time::Instant,
};

use super::pod::Pod;

/// Labels of one namespace.
pub type Labels = Arc<BTreeMap<String, String>>;

pub struct Store {
    pods: RwLock<HashMap<Arc<str>, Arc<Pod>>>,
    /// Pod IP -> pod UID, for pods on their own network (hostNetwork pods share the node's).
    by_ip: RwLock<HashMap<std::net::IpAddr, Arc<str>>>,
    namespaces: RwLock<HashMap<String, Labels>>,
    /// Bumped on every change; the enrollment loop waits on it.
    changed: tokio::sync::watch::Sender<u64>,
    /// When the oldest change not yet taken by the enrollment loop arrived.
    pending_since: Mutex<Option<Instant>>,
    pub pods_health: Health,
    pub namespaces_health: Health,
}

impl Default for Store {
    fn default() -> Self {
        Self {
            pods: RwLock::default(),
            by_ip: RwLock::default(),
            namespaces: RwLock::default(),
            changed: tokio::sync::watch::channel(0).0,
            pending_since: Mutex::new(None),
            pods_health: Health::default(),
            namespaces_health: Health::default(),
        }
    }
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    // A poisoned lock means a writer panicked between two whole-value assignments; the map is
    // still a valid map.
    l.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}

impl Store {
    pub fn pod(&self, uid: &str) -> Option<Arc<Pod>> {
        read(&self.pods).get(uid).cloned()
    }

    /// The pod that owns `ip` on this node (not hostNetwork pods: they share the node's).
    pub fn pod_by_ip(&self, ip: std::net::IpAddr) -> Option<Arc<Pod>> {
        let uid = read(&self.by_ip).get(&ip).cloned()?;
        self.pod(&uid)
    }

    fn index_ips(&self, old: Option<&Pod>, new: Option<&Pod>) {
        let mut by_ip = write(&self.by_ip);
        if let Some(old) = old {
            for ip in old.ips.iter() {
                if by_ip.get(ip) == Some(&old.uid) {
                    by_ip.remove(ip);
                }
            }
        }
        if let Some(new) = new.filter(|p| !p.host_network) {
            for ip in new.ips.iter() {
                by_ip.insert(*ip, new.uid.clone());
            }
        }
    }

    pub fn pods(&self) -> Vec<Arc<Pod>> {
        read(&self.pods).values().cloned().collect()
    }

    pub fn pod_count(&self) -> usize {
        read(&self.pods).len()
    }

    pub fn namespace_labels(&self, ns: &str) -> Option<Labels> {
        read(&self.namespaces).get(ns).cloned()
    }

    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }

    fn bump(&self) {
        self.pending_since.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert_with(Instant::now);
        self.changed.send_modify(|g| *g = g.wrapping_add(1));
    }

    /// When the oldest change since the last call arrived (None: no change since).
    pub fn take_pending_since(&self) -> Option<Instant> {
        self.pending_since.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    pub fn upsert_pod(&self, pod: Pod) {
        let uid = pod.uid.clone();
        let mut pods = write(&self.pods);
        if pods.get(&uid).is_some_and(|old| **old == pod) {
            return;
        }
        let pod = Arc::new(pod);
        let old = pods.insert(uid, pod.clone());
        drop(pods);
        self.index_ips(old.as_deref(), Some(&pod));
        self.bump();
    }

    pub fn remove_pod(&self, uid: &str) {
        let old = write(&self.pods).remove(uid);
        if let Some(old) = old {
            self.index_ips(Some(&old), None);
            self.bump();
        }
    }

    /// A relist: the pods listed are all there is.
    pub fn replace_pods(&self, all: Vec<Pod>) {
        let next: HashMap<Arc<str>, Arc<Pod>> =
            all.into_iter().map(|p| (p.uid.clone(), Arc::new(p))).collect();
        *write(&self.by_ip) = next
            .values()
            .filter(|p| !p.host_network)
            .flat_map(|p| p.ips.iter().map(|ip| (*ip, p.uid.clone())))
            .collect();
        *write(&self.pods) = next;
        self.bump();
    }

    pub fn upsert_namespace(&self, name: String, labels: BTreeMap<String, String>) {
        let mut ns = write(&self.namespaces);
        if ns.get(&name).is_some_and(|old| **old == labels) {
            return;
        }
        ns.insert(name, Arc::new(labels));
        drop(ns);
        self.bump();
    }

    pub fn remove_namespace(&self, name: &str) {
        if write(&self.namespaces).remove(name).is_some() {
            self.bump();
        }
    }

    pub fn replace_namespaces(&self, all: Vec<(String, BTreeMap<String, String>)>) {
        *write(&self.namespaces) = all.into_iter().map(|(n, l)| (n, Arc::new(l))).collect();
        self.bump();
    }
}

/// How one watch is doing.
#[derive(Default)]
pub struct Health {
    inner: Mutex<HealthState>,
}

#[derive(Default, Clone)]
struct HealthState {
    /// The first full list arrived.
    synced: bool,
    /// The last call to the API server failed (and no event has arrived since).
    failing: bool,
    since: Option<Instant>,
    last_error: Option<String>,
    errors: u64,
}

/// A snapshot for /readyz, `nodegate pods` and metrics.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HealthReport {
    pub synced: bool,
    pub connected: bool,
    /// Seconds since the watch last changed between connected and failing.
    pub for_seconds: f64,
    pub last_error: Option<String>,
    pub errors: u64,
}

impl Health {
    fn lock(&self) -> std::sync::MutexGuard<'_, HealthState> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn ok(&self, synced: bool) {
        let mut s = self.lock();
        if s.failing || s.since.is_none() {
            s.since = Some(Instant::now());
        }
        s.failing = false;
        s.synced |= synced;
    }

    pub fn failed(&self, error: String) {
        let mut s = self.lock();
        if !s.failing {
            s.since = Some(Instant::now());
        }
        s.failing = true;
        s.errors += 1;
        s.last_error = Some(error);
    }

    pub fn report(&self) -> HealthReport {
        let s = self.lock().clone();
        HealthReport {
            synced: s.synced,
            connected: !s.failing && s.since.is_some(),
            for_seconds: s.since.map_or(0.0, |t| t.elapsed().as_secs_f64()),
            last_error: s.last_error,
            errors: s.errors,
        }
    }
}
