//! Enrollment: which pods on this node are intercepted, kept in step with the watched view.
//!
//! The programs are attached once at the kubepods cgroup and act only for processes below a
//! cgroup in the enrolled map, so enrolling a pod is one map insert of its pod-level cgroup id
//! (its containers, restarted or not, sit below it). A pod is enrolled when its namespace or
//! the pod itself carries `kubernetes.enroll.label: value`, unless its `opt_out` annotation says
//! `disabled`; nodegate's own pod never is. A pod seen before the kubelet made its cgroup is
//! retried every `rescan_interval`. Nothing is removed from the map before both watches have
//! listed once, so a restarted agent keeps the previous agent's enrollment meanwhile.
use std::{
    collections::{BTreeMap, HashMap},
    os::unix::fs::MetadataExt,
    path::PathBuf,
    sync::{Arc, Mutex},
};

use super::{pod::Pod, store::Store};
use crate::config::Enroll;

/// Where enrollment is written (the eBPF enrolled map; a fake in unit tests).
pub trait Target: Send + Sync {
    fn enroll(&self, cgroup_id: u64) -> Result<(), String>;
    fn unenroll(&self, cgroup_id: u64) -> Result<(), String>;
    /// Ids in the map now (including ones a previous agent left).
    fn enrolled(&self) -> Vec<u64>;
}

/// Why a pod is or is not enrolled, for `nodegate pods` and logs.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum State {
    Enrolled {
        cgroup: Arc<str>,
        cgroup_id: u64,
        by: &'static str,
    },
    /// Wanted, but its cgroup is not there yet (or could not be written).
    Pending {
        reason: String,
    },
    NotEnrolled {
        reason: &'static str,
    },
}

/// Whether `pod` should be intercepted, and why (or why not).
pub fn wanted(
    pod: &Pod,
    ns_labels: Option<&BTreeMap<String, String>>,
    cfg: &Enroll,
    own_uid: Option<&str>,
) -> Result<&'static str, &'static str> {
    if own_uid.is_some_and(|u| u == &*pod.uid) {
        return Err("nodegate's own pod");
    }
    if pod.annotations.get(&cfg.opt_out) == Some("disabled") {
        return Err("opted out by annotation");
    }
    if !cfg.pod_selector.iter().all(|(k, v)| pod.labels.get(k) == Some(v.as_str())) {
        return Err("pod_selector not matched");
    }
    if pod.labels.get(&cfg.label) == Some(cfg.value.as_str()) {
        return Ok("pod label");
    }
    if ns_labels.is_some_and(|l| l.get(&cfg.label) == Some(&cfg.value)) {
        return Ok("namespace label");
    }
    Err("not labelled")
}

/// The pod's own cgroup directory below `kubepods`, in either driver's layout.
pub fn pod_cgroup(cgroup_root: &std::path::Path, kubepods: &str, uid: &str) -> Option<(String, u64)> {
    let kp = kubepods.trim_end_matches('/');
    let candidates: Vec<String> = if kp.ends_with(".slice") {
        let u = uid.replace('-', "_");
        let mut c = vec![format!("{kp}/kubepods-pod{u}.slice")];
        for qos in ["burstable", "besteffort"] {
            c.push(format!("{kp}/kubepods-{qos}.slice/kubepods-{qos}-pod{u}.slice"));
        }
        c
    } else {
        let mut c = vec![format!("{kp}/pod{uid}")];
        for qos in ["burstable", "besteffort"] {
            c.push(format!("{kp}/{qos}/pod{uid}"));
        }
        c
    };
    candidates.into_iter().find_map(|rel| {
        let meta = std::fs::metadata(cgroup_root.join(rel.trim_start_matches('/'))).ok()?;
        meta.is_dir().then(|| (rel, meta.ino()))
    })
}

pub struct Enroller {
    store: Arc<Store>,
    target: Arc<dyn Target>,
    cgroup_root: PathBuf,
    kubepods: String,
    cfg: Enroll,
    own_uid: Option<String>,
    states: Mutex<HashMap<Arc<str>, State>>,
    /// Pod uid -> cgroup id this agent enrolled.
    ours: Mutex<HashMap<Arc<str>, u64>>,
    /// Microseconds from a watch event's arrival to the map write it caused (the oldest event of
    /// each pass that wrote), the last `LATENCIES_KEPT`.
    latencies_us: Mutex<Vec<u64>>,
}

const LATENCIES_KEPT: usize = 4096;

/// Percentiles of the enrollment latency, for `/pods` and the churn benchmark.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Latency {
    pub samples: usize,
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
}

impl Enroller {
    pub fn new(
        store: Arc<Store>,
        target: Arc<dyn Target>,
        cgroup_root: PathBuf,
        kubepods: String,
        cfg: Enroll,
        own_uid: Option<String>,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            target,
            cgroup_root,
            kubepods,
            cfg,
            own_uid,
            states: Mutex::default(),
            ours: Mutex::default(),
            latencies_us: Mutex::default(),
        })
    }

    pub fn states(&self) -> HashMap<Arc<str>, State> {
        lock(&self.states).clone()
    }

    pub fn latency(&self) -> Latency {
        let mut v = lock(&self.latencies_us).clone();
        v.sort_unstable();
        let at =
            |q: f64| v.get(((v.len() as f64 * q).ceil() as usize).saturating_sub(1)).copied().unwrap_or(0);
        Latency {
            samples: v.len(),
            p50_us: at(0.5),
            p99_us: at(0.99),
            max_us: v.last().copied().unwrap_or(0),
        }
    }

    pub fn enrolled_count(&self) -> usize {
        lock(&self.ours).len()
    }

    /// Runs until aborted: one pass per store change, and one every `interval` for pods whose
    /// cgroup was missing.
    pub async fn run(self: Arc<Self>, interval: std::time::Duration) {
        let mut changes = self.store.subscribe();
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                r = changes.changed() => {
                    if r.is_err() { return; }
                }
                _ = tick.tick() => {}
            };
            let started = self.store.take_pending_since();
            let this = self.clone();
            let wrote = tokio::task::spawn_blocking(move || this.pass()).await.unwrap_or(false);
            if let (Some(t), true) = (started, wrote) {
                let mut l = lock(&self.latencies_us);
                if l.len() >= LATENCIES_KEPT {
                    l.remove(0);
                }
                l.push(t.elapsed().as_micros() as u64);
            }
        }
    }

    /// One reconciliation; true when the map changed.
    pub fn pass(&self) -> bool {
        let pods = self.store.pods();
        let synced = self.store.pods_health.report().synced && self.store.namespaces_health.report().synced;
        let mut states = HashMap::with_capacity(pods.len());
        let mut ours = lock(&self.ours);
        let mut wrote = false;
        for pod in &pods {
            let ns = self.store.namespace_labels(&pod.namespace);
            let state = match wanted(pod, ns.as_deref(), &self.cfg, self.own_uid.as_deref()) {
                Err(reason) => {
                    if let Some(id) = ours.remove(&pod.uid) {
                        wrote |= self.unenroll(pod, id);
                    }
                    State::NotEnrolled { reason }
                }
                // Enrolled already: a pod's cgroup lives as long as the pod, so no second look.
                Ok(by) if let Some(&id) = ours.get(&pod.uid) => {
                    let cgroup = match self.states_get(&pod.uid) {
                        Some(State::Enrolled { cgroup, .. }) => cgroup,
                        _ => Arc::from(""),
                    };
                    State::Enrolled { cgroup, cgroup_id: id, by }
                }
                Ok(by) => match pod_cgroup(&self.cgroup_root, &self.kubepods, &pod.uid) {
                    None => State::Pending {
                        reason: format!("no cgroup for pod {} below {}", pod.uid, self.kubepods),
                    },
                    Some((cgroup, id)) => match self.target.enroll(id) {
                        Ok(()) => {
                            wrote = true;
                            tracing::info!(pod = %pod.workload(), %cgroup, by, "pod enrolled");
                            ours.insert(pod.uid.clone(), id);
                            State::Enrolled { cgroup: Arc::from(cgroup), cgroup_id: id, by }
                        }
                        Err(e) => State::Pending { reason: format!("enrolled map: {e}") },
                    },
                },
            };
            states.insert(pod.uid.clone(), state);
        }
        // Pods gone from the view.
        let gone: Vec<(Arc<str>, u64)> =
            ours.iter().filter(|(uid, _)| !states.contains_key(*uid)).map(|(u, i)| (u.clone(), *i)).collect();
        for (uid, id) in gone {
            ours.remove(&uid);
            if self.target.unenroll(id).is_ok() {
                wrote = true;
                tracing::info!(pod_uid = %uid, "pod gone; unenrolled");
            }
        }
        // Entries a previous agent left for pods that are no longer wanted: only once the view
        // is whole, so an agent restart never drops a live pod's enrollment.
        if synced {
            let keep: std::collections::HashSet<u64> = ours.values().copied().collect();
            for id in self.target.enrolled() {
                if !keep.contains(&id) && self.target.unenroll(id).is_ok() {
                    wrote = true;
                    tracing::info!(cgroup_id = id, "stale enrollment removed");
                }
            }
        }
        *lock(&self.states) = states;
        wrote
    }

    fn states_get(&self, uid: &str) -> Option<State> {
        lock(&self.states).get(uid).cloned()
    }

    fn unenroll(&self, pod: &Pod, id: u64) -> bool {
        match self.target.unenroll(id) {
            Ok(()) => {
                tracing::info!(pod = %pod.workload(), "pod unenrolled");
                true
            }
            Err(e) => {
                tracing::warn!(pod = %pod.workload(), error = %e, "cannot unenroll pod");
                false
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::k8s::pod::Container;

    fn pod(uid: &str, labels: &[(&str, &str)], annotations: &[(&str, &str)]) -> Pod {
        Pod {
            uid: Arc::from(uid),
            namespace: Arc::from("agents"),
            name: Arc::from("p"),
            service_account: Arc::from("default"),
            labels: labels.iter().copied().collect(),
            annotations: annotations.iter().copied().collect(),
            containers: Box::new([Container { name: Arc::from("c"), id: None }]),
            ips: Box::new([]),
            host_network: false,
            terminating: false,
        }
    }

    #[test]
    fn enrollment_rules() {
        let cfg = Enroll::default();
        let on = [("nodegate.io/intercept", "enabled")];
        let ns_on: BTreeMap<String, String> =
            on.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        assert_eq!(wanted(&pod("u1", &on, &[]), None, &cfg, None), Ok("pod label"));
        assert_eq!(wanted(&pod("u1", &[], &[]), Some(&ns_on), &cfg, None), Ok("namespace label"));
        assert_eq!(wanted(&pod("u1", &[], &[]), None, &cfg, None), Err("not labelled"));
        let out = [("nodegate.io/intercept", "disabled")];
        assert_eq!(wanted(&pod("u1", &[], &out), Some(&ns_on), &cfg, None), Err("opted out by annotation"));
        assert_eq!(wanted(&pod("me", &on, &[]), Some(&ns_on), &cfg, Some("me")), Err("nodegate's own pod"));
        let sel =
            Enroll { pod_selector: [("app".to_string(), "agent".to_string())].into(), ..Enroll::default() };
        assert_eq!(wanted(&pod("u1", &on, &[]), None, &sel, None), Err("pod_selector not matched"));
    }

    #[derive(Default)]
    struct FakeMap(Mutex<Vec<u64>>);
    impl Target for FakeMap {
        fn enroll(&self, id: u64) -> Result<(), String> {
            lock(&self.0).push(id);
            Ok(())
        }
        fn unenroll(&self, id: u64) -> Result<(), String> {
            lock(&self.0).retain(|x| *x != id);
            Ok(())
        }
        fn enrolled(&self) -> Vec<u64> {
            lock(&self.0).clone()
        }
    }

    #[test]
    fn reconciles_labels_cgroups_and_stale_entries() {
        let root = std::env::temp_dir().join(format!("ng-enroll-{}", std::process::id()));
        let uid = "8f3c2b1a-4d5e-4f60-8a7b-9c0d1e2f3a4b";
        let dir = root.join(format!("kubepods/burstable/pod{uid}"));
        std::fs::create_dir_all(&dir).unwrap();
        let ino = std::fs::metadata(&dir).unwrap().ino();
        let store = Arc::new(Store::default());
        let map = Arc::new(FakeMap::default());
        lock(&map.0).push(4242); // left by a previous agent
        let e = Enroller::new(
            store.clone(),
            map.clone(),
            root.clone(),
            "/kubepods".into(),
            Enroll::default(),
            None,
        );
        store.replace_pods(vec![
            pod(uid, &[("nodegate.io/intercept", "enabled")], &[]),
            pod("other", &[], &[]),
        ]);
        e.pass();
        assert_eq!(map.enrolled(), vec![4242, ino], "not synced yet: the old entry stays");
        store.pods_health.ok(true);
        store.namespaces_health.ok(true);
        e.pass();
        assert_eq!(map.enrolled(), vec![ino]);
        assert!(matches!(e.states().get(uid), Some(State::Enrolled { by: "pod label", .. })));
        store.upsert_pod(pod(uid, &[], &[]));
        e.pass();
        assert!(map.enrolled().is_empty(), "label removed: unenrolled");
        store.upsert_pod(pod(uid, &[("nodegate.io/intercept", "enabled")], &[]));
        e.pass();
        store.remove_pod(uid);
        e.pass();
        assert!(map.enrolled().is_empty(), "pod deleted: unenrolled");
        std::fs::remove_dir_all(&root).unwrap();
    }
}
