//! Who made a connection. Every connection, transparent or explicit, gets one [`Identity`].
//!
//! In transparent mode the kernel tells us the cgroup id of the process that called connect();
//! this module turns it into a cgroup path (the id is the inode of the cgroup's directory) and a
//! workload name: with Kubernetes on, the pod the kubelet cgroup belongs to (`namespace/name`,
//! with its service account, labels and container), else a config mapping, else the path.
//! Cgroup paths are cached per cgroup id; the pod is looked up on every call, so a relabelled pod
//! is named by its current labels. This module does not decide policy; it only names the caller.
use std::{
    collections::HashMap,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use crate::config::IdentityMapping;

pub mod credentials;
pub mod jwt;
pub mod peer;
pub mod sockdiag;

pub use credentials::{Keys, caller, strip_credentials};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// A pod on this node, as the Kubernetes API describes it.
    Pod,
    /// A kubelet pod cgroup that no watched pod owns (not listed yet, or not this node's view).
    UnknownPod,
    /// Named by a config mapping of its cgroup.
    Config,
    /// Named by its cgroup path (no mapping matched).
    Cgroup,
    /// Nothing known about the caller.
    Unknown,
}

/// Who is calling: the workload the kernel names (never replaced) and, beside it, the
/// principal a credential proves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Workload name used in audit records, metrics and policy (`workloads` selectors).
    pub workload: Arc<str>,
    /// The principal a valid credential added (`principals` selectors); None without one.
    pub principal: Option<Arc<str>>,
    /// Cgroup v2 id, 0 when unknown.
    pub cgroup_id: u64,
    /// Path below the cgroup2 mount, when found.
    pub cgroup_path: Option<Arc<str>>,
    pub source: Source,
    /// The pod (Kubernetes), when the cgroup is a known pod's.
    pub pod: Option<Arc<crate::k8s::pod::Pod>>,
    /// The container within the pod, when the cgroup is a container's and its id is known.
    pub container: Option<Arc<str>>,
    /// The claims of the valid JSON Web Token that named the principal (`source.claims` in
    /// policy); None for an API key or no credential.
    pub claims: Option<Arc<serde_json::Value>>,
}

impl Identity {
    pub fn unknown() -> Self {
        Self {
            workload: Arc::from("unknown"),
            principal: None,
            cgroup_id: 0,
            cgroup_path: None,
            source: Source::Unknown,
            pod: None,
            container: None,
            claims: None,
        }
    }

    pub fn named(name: &str) -> Self {
        Self {
            workload: Arc::from(name),
            principal: None,
            cgroup_id: 0,
            cgroup_path: None,
            source: Source::Config,
            pod: None,
            container: None,
            claims: None,
        }
    }

    /// The `identity` label of per-request metrics: the principal when a credential proved
    /// one, else the workload. Policy never uses it (selectors match the two separately) and
    /// the audit record carries both.
    pub fn label(&self) -> Arc<str> {
        self.principal.clone().unwrap_or_else(|| self.workload.clone())
    }
}

/// Largest number of cgroup ids remembered; past it the cache starts over.
const CACHE_MAX: usize = 16_384;

pub struct Resolver {
    root: Option<PathBuf>,
    /// Where to look first for a cgroup id (the enrolled cgroups).
    search_first: Mutex<Vec<String>>,
    /// (cgroup path prefix, name), longest prefix first.
    mappings: Mutex<Vec<(String, Arc<str>)>>,
    /// API key digests -> principal, for callers that present one.
    keys: arc_swap::ArcSwap<Keys>,
    /// Cgroup id -> where it is (path and, for kubelet cgroups, pod UID and container id).
    cache: Mutex<HashMap<u64, Arc<Located>>>,
    /// This node's pods, when Kubernetes is on.
    pods: arc_swap::ArcSwapOption<crate::k8s::store::Store>,
}

/// What a cgroup id's directory says, cached: it never changes for the life of the cgroup.
#[derive(Debug)]
struct Located {
    path: Option<Arc<str>>,
    pod: Option<crate::k8s::cgroup::PodCgroup>,
}

impl Resolver {
    pub fn new(root: Option<PathBuf>, mappings: &[IdentityMapping], search_first: &[String]) -> Self {
        let r = Self {
            root,
            search_first: Mutex::new(Vec::new()),
            mappings: Mutex::new(Vec::new()),
            keys: arc_swap::ArcSwap::from_pointee(Keys::default()),
            cache: Mutex::new(HashMap::new()),
            pods: arc_swap::ArcSwapOption::empty(),
        };
        r.update(mappings, search_first);
        r
    }

    /// Applies a new config's mappings; cached identities are forgotten.
    pub fn update(&self, mappings: &[IdentityMapping], search_first: &[String]) {
        self.update_with_jwt(mappings, search_first, self.keys.load().jwt.clone());
    }

    /// [`Resolver::update`], with the verifier of JSON Web Tokens the new config asks for.
    pub fn update_with_jwt(
        &self,
        mappings: &[IdentityMapping],
        search_first: &[String],
        jwt: Option<Arc<jwt::JwtVerifier>>,
    ) {
        let mut m: Vec<(String, Arc<str>)> = mappings
            .iter()
            .filter_map(|m| Some((normalize(m.cgroup.as_deref()?), Arc::from(m.name.as_str()))))
            .collect();
        m.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
        *lock(&self.mappings) = m;
        self.keys.store(Arc::new(Keys::new(mappings).with_jwt(jwt)));
        *lock(&self.search_first) = search_first.iter().map(|s| normalize(s)).collect();
        lock(&self.cache).clear();
    }

    /// Names pods from this view from now on.
    pub fn set_pods(&self, store: Arc<crate::k8s::store::Store>) {
        self.pods.store(Some(store));
    }

    /// The pod that owns `ip` on this node, named as it would be from its cgroup (without the
    /// container, which an address does not say). None without Kubernetes or for other addresses.
    pub fn resolve_pod_ip(&self, ip: std::net::IpAddr) -> Option<Arc<Identity>> {
        let pod = self.pods.load().as_ref()?.pod_by_ip(ip)?;
        Some(Arc::new(Identity {
            workload: Arc::from(pod.workload()),
            source: Source::Pod,
            pod: Some(pod),
            ..Identity::unknown()
        }))
    }

    /// The identity of cgroup `id`. May walk the cgroup filesystem on a cache miss: call from a
    /// blocking context (see [`Self::resolve_async`]).
    pub fn resolve(&self, id: u64) -> Arc<Identity> {
        let hit = lock(&self.cache).get(&id).cloned();
        let located = match hit {
            Some(l) => l,
            None => {
                let l = Arc::new(Located::new(self.find_path(id)));
                let mut cache = lock(&self.cache);
                if cache.len() >= CACHE_MAX {
                    cache.clear();
                }
                cache.insert(id, l.clone());
                l
            }
        };
        Arc::new(self.name(id, &located))
    }

    /// The identity of the cgroup at `path` (below the cgroup2 mount), e.g. a same-host caller's.
    pub fn resolve_path(&self, path: &str) -> Arc<Identity> {
        let id = self
            .root
            .as_ref()
            .and_then(|r| std::fs::metadata(r.join(path.trim_start_matches('/'))).ok())
            .map_or(0, |m| m.ino());
        Arc::new(self.name(id, &Located::new(Some(path.to_string()))))
    }

    /// The API keys of the live config, as digests.
    pub fn keys(&self) -> Arc<Keys> {
        self.keys.load_full()
    }

    pub async fn resolve_async(self: &Arc<Self>, id: u64) -> Arc<Identity> {
        if let Some(hit) = lock(&self.cache).get(&id).cloned() {
            return Arc::new(self.name(id, &hit));
        }
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.resolve(id))
            .await
            .unwrap_or_else(|_| Arc::new(Identity { cgroup_id: id, ..Identity::unknown() }))
    }

    fn name(&self, id: u64, at: &Located) -> Identity {
        let base = Identity { cgroup_id: id, cgroup_path: at.path.clone(), ..Identity::unknown() };
        let Some(path) = at.path.clone() else {
            return Identity { workload: Arc::from(format!("cgroup:{id}")), ..base };
        };
        if let (Some(pc), Some(store)) = (&at.pod, self.pods.load().as_ref()) {
            return match store.pod(&pc.uid) {
                Some(pod) => Identity {
                    workload: Arc::from(pod.workload()),
                    source: Source::Pod,
                    container: pc.container_id.as_deref().and_then(|c| pod.container_named_by(c)),
                    pod: Some(pod),
                    ..base
                },
                None => Identity {
                    workload: Arc::from(format!("unknown-pod/{}", pc.uid)),
                    source: Source::UnknownPod,
                    ..base
                },
            };
        }
        let mapped = lock(&self.mappings)
            .iter()
            .find(|(prefix, _)| is_under(&path, prefix))
            .map(|(_, name)| name.clone());
        match mapped {
            Some(workload) => Identity { workload, source: Source::Config, ..base },
            None => Identity { workload: path, source: Source::Cgroup, ..base },
        }
    }

    fn find_path(&self, id: u64) -> Option<String> {
        let root = self.root.as_ref()?;
        let first = lock(&self.search_first).clone();
        for start in first.iter().map(String::as_str).chain(std::iter::once("/")) {
            let dir = root.join(start.trim_start_matches('/'));
            if let Some(found) = find_inode(&dir, id, 64) {
                let rel = found.strip_prefix(root).ok()?;
                return Some(format!("/{}", rel.display()));
            }
        }
        None
    }
}

impl Located {
    fn new(path: Option<String>) -> Self {
        let pod = path.as_deref().and_then(crate::k8s::cgroup::parse);
        Self { path: path.map(Arc::from), pod }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned lock only means another thread panicked mid-update of a cache; the data is
    // still a valid map, so keep serving.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn normalize(p: &str) -> String {
    let t = p.trim_end_matches('/');
    if t.is_empty() { "/".into() } else { t.to_string() }
}

/// Whether `path` is `prefix` or below it, on `/` segment boundaries.
pub(crate) fn is_under(path: &str, prefix: &str) -> bool {
    prefix == "/"
        || path == prefix
        || (path.starts_with(prefix) && path.as_bytes().get(prefix.len()) == Some(&b'/'))
}

/// Depth-first search for the directory whose inode is `ino`.
fn find_inode(dir: &Path, ino: u64, depth: u32) -> Option<PathBuf> {
    let meta = std::fs::metadata(dir).ok()?;
    if meta.ino() == ino {
        return Some(dir.to_path_buf());
    }
    if depth == 0 {
        return None;
    }
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir())
            && let Some(found) = find_inode(&entry.path(), ino, depth - 1)
        {
            return Some(found);
        }
    }
    None
}

/// The cgroup2 mount point, from /proc/self/mountinfo: the first `cgroup2` filesystem.
pub fn detect_cgroup2_root() -> Option<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|line| {
        let (pre, post) = line.split_once(" - ")?;
        if post.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        pre.split_whitespace().nth(4).map(PathBuf::from)
    })
}

/// The cgroup v2 path of a process (`0::/path` in /proc/PID/cgroup).
pub fn cgroup_of_pid(pid: u32) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    text.lines().find_map(|l| l.strip_prefix("0::").map(str::to_string))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_matching_respects_path_segments() {
        assert!(is_under("/a/b", "/a"));
        assert!(is_under("/a", "/a"));
        assert!(!is_under("/ab", "/a"));
        assert!(is_under("/x", "/"));
    }

    #[test]
    fn resolves_a_directory_inode_to_its_mapped_name() {
        let root = std::env::temp_dir().join(format!("ng-ident-{}", std::process::id()));
        let leaf = root.join("pods/agent-a/c1");
        std::fs::create_dir_all(&leaf).unwrap();
        let ino = std::fs::metadata(&leaf).unwrap().ino();
        let other = std::fs::metadata(root.join("pods")).unwrap().ino();
        let maps = vec![
            IdentityMapping { name: "pods".into(), cgroup: Some("/pods".into()), api_keys: vec![] },
            IdentityMapping {
                name: "agent-a".into(),
                cgroup: Some("/pods/agent-a/".into()),
                api_keys: vec!["k1-long-key".into()],
            },
        ];
        let r = Resolver::new(Some(root.clone()), &maps, &["/pods".into()]);
        let id = r.resolve(ino);
        assert_eq!(&*id.workload, "agent-a", "longest prefix wins");
        assert_eq!(id.cgroup_path.as_deref(), Some("/pods/agent-a/c1"));
        assert_eq!(&*r.resolve(other).workload, "pods");
        assert_eq!(&*r.resolve(u64::MAX).workload, format!("cgroup:{}", u64::MAX));
        assert_eq!(r.keys().principal("k1-long-key", Some("/pods/agent-a/c1")).as_deref(), Some("agent-a"));
        assert!(r.keys().principal("k2-long-key", None).is_none());
        std::fs::remove_dir_all(&root).unwrap();
    }
}
