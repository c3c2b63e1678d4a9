//! Transparent interception: loads the eBPF programs, attaches them to the enrolled cgroups,
//! keeps the intercept table and the programs' settings in step with config, writes the
//! heartbeat, and answers "where was this accepted connection going, and who made it".
//!
//! Maps and links are pinned under `intercept.pin_path`, so the programs stay attached while the
//! proxy restarts (the heartbeat then decides: fail-open or fail-closed) and a new proxy takes
//! over the same maps. This module does not accept connections or decide policy.
mod bpffs;
pub mod dns;
pub mod origdst;
pub mod status;
pub mod table;

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, MutexGuard},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, MapData, lpm_trie::LpmTrie},
    programs::{
        CgroupAttachMode, CgroupSockAddr, SockOps,
        links::{FdLink, PinnedLink},
    },
};
use gateway_common::{OrigDst, ProxyConfig, SockKey, maps, programs};

use crate::config::{Config, FailMode};

pub use bpffs::remove_pins;

/// The eBPF object built by build.rs from gateway-ebpf.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/nodegate"));

#[derive(Debug, thiserror::Error)]
pub enum InterceptError {
    #[error("no cgroup2 mount found in /proc/self/mountinfo; set intercept.cgroup_root")]
    NoCgroup2,
    #[error("cannot prepare the bpffs pin directory {path}: {source}")]
    PinDir { path: PathBuf, source: std::io::Error },
    #[error("loading the eBPF object failed (are we root with CAP_BPF and CAP_SYS_ADMIN?): {0}")]
    Load(#[from] aya::EbpfError),
    #[error("eBPF program {name}: {source}")]
    Program { name: &'static str, source: aya::programs::ProgramError },
    #[error("eBPF map {name}: {detail}")]
    Map { name: &'static str, detail: String },
    #[error("enrolled cgroup {path}: {detail}")]
    Cgroup { path: String, detail: String },
    #[error("pinning a link at {path}: {detail}")]
    Pin { path: PathBuf, detail: String },
}

fn map_err(name: &'static str) -> impl Fn(aya::maps::MapError) -> InterceptError {
    move |e| InterceptError::Map { name, detail: e.to_string() }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Poisoning only follows a panic elsewhere; the map handles inside stay valid.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// CLOCK_MONOTONIC in nanoseconds: the clock bpf_ktime_get_ns() reads.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: valid out-pointer; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

pub struct Interceptor {
    ebpf: Mutex<Ebpf>,
    pin_dir: PathBuf,
    /// Names this process start's link pins (PID and start time).
    instance: String,
    cgroup_root: PathBuf,
    /// Links we attached, by enrolled cgroup path.
    links: Mutex<BTreeMap<String, Vec<PinnedLink>>>,
    config_map: Mutex<Array<MapData, ProxyConfig>>,
    heartbeat: Mutex<Array<MapData, u64>>,
    orig: Mutex<HashMap<MapData, SockKey, OrigDst>>,
    /// Pod cgroups whose processes are intercepted when `enrolled_only` (Kubernetes).
    enrolled: Mutex<HashMap<MapData, u64, u32>>,
    table: Mutex<table::Table>,
    resolved: dns::Resolved,
    /// Kubernetes Services named by destinations, as their watches last saw them.
    services: crate::k8s::services::Table,
    destinations: Mutex<Vec<crate::config::Destination>>,
    dns_task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    _log_task: tokio::task::JoinHandle<()>,
}

impl Interceptor {
    /// Loads, configures and attaches everything. Call from within the tokio runtime.
    pub fn start(cfg: &Config, debug_logs: bool) -> Result<Arc<Self>, InterceptError> {
        let ic = &cfg.intercept;
        let cgroup_root = ic
            .cgroup_root
            .clone()
            .or_else(crate::identity::detect_cgroup2_root)
            .ok_or(InterceptError::NoCgroup2)?;
        let pin_dir = ic.pin_path.clone();
        bpffs::ensure_pin_dir(&pin_dir)
            .map_err(|source| InterceptError::PinDir { path: pin_dir.clone(), source })?;

        // aya-log levels: 2 = warn, 4 = debug. Disabled levels are pruned by the verifier.
        let level: u8 = if debug_logs { 4 } else { 2 };
        let mut ebpf = EbpfLoader::new()
            .default_map_pin_directory(&pin_dir)
            .override_global("AYA_LOG_LEVEL", &level, false)
            .load(EBPF_OBJECT)?;
        let log_task = spawn_logger(&mut ebpf);

        for name in programs::SOCK_ADDR {
            let p: &mut CgroupSockAddr = program(&mut ebpf, name)?;
            p.load().map_err(|source| InterceptError::Program { name, source })?;
        }
        let p: &mut SockOps = program(&mut ebpf, programs::SOCK_OPS)?;
        p.load().map_err(|source| InterceptError::Program { name: programs::SOCK_OPS, source })?;

        let take = |ebpf: &mut Ebpf, name: &'static str| {
            ebpf.take_map(name).ok_or(InterceptError::Map { name, detail: "missing from the object".into() })
        };
        let config_map = Array::try_from(take(&mut ebpf, maps::CONFIG)?).map_err(map_err(maps::CONFIG))?;
        let heartbeat =
            Array::try_from(take(&mut ebpf, maps::HEARTBEAT)?).map_err(map_err(maps::HEARTBEAT))?;
        let orig = HashMap::try_from(take(&mut ebpf, maps::ORIG_DST)?).map_err(map_err(maps::ORIG_DST))?;
        let enrolled =
            HashMap::try_from(take(&mut ebpf, maps::ENROLLED)?).map_err(map_err(maps::ENROLLED))?;
        let v4 =
            LpmTrie::try_from(take(&mut ebpf, maps::INTERCEPT_V4)?).map_err(map_err(maps::INTERCEPT_V4))?;
        let v6 =
            LpmTrie::try_from(take(&mut ebpf, maps::INTERCEPT_V6)?).map_err(map_err(maps::INTERCEPT_V6))?;

        let this = Arc::new(Self {
            ebpf: Mutex::new(ebpf),
            pin_dir,
            instance: format!(
                "p{}-{}",
                std::process::id(),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos())
            ),
            cgroup_root,
            links: Mutex::new(BTreeMap::new()),
            config_map: Mutex::new(config_map),
            heartbeat: Mutex::new(heartbeat),
            orig: Mutex::new(orig),
            enrolled: Mutex::new(enrolled),
            table: Mutex::new(table::Table::new(v4, v6)),
            resolved: Default::default(),
            services: Default::default(),
            destinations: Mutex::new(Vec::new()),
            dns_task: Mutex::new(None),
            _log_task: log_task,
        });
        // Beat before attaching so a fail-closed node never sees a stale heartbeat from us.
        this.beat()?;
        let previous = this.pinned_links();
        this.apply(cfg)?;
        // Links an earlier proxy left: ours are attached now, so theirs can go.
        for path in previous {
            match PinnedLink::from_pin(&path) {
                Ok(l) => match l.unpin() {
                    Ok(fd) => drop(fd),
                    Err(e) => tracing::warn!(path = %path.display(), error = %e, "cannot unpin old link"),
                },
                Err(e) => tracing::warn!(path = %path.display(), error = %e, "cannot open old link"),
            }
            tracing::info!(path = %path.display(), "replaced link left by a previous nodegate");
        }
        Ok(this)
    }

    fn pinned_links(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.pin_dir.join("links"))
            .map(|rd| rd.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    }

    /// Brings settings, table and attachments in line with `cfg`.
    pub fn apply(self: &Arc<Self>, cfg: &Config) -> Result<(), InterceptError> {
        let ic = &cfg.intercept;
        let redirect = ic
            .redirect_to
            .or_else(|| {
                let node = cfg.kubernetes.node_address.filter(|_| cfg.kubernetes.enabled)?;
                Some(SocketAddr::new(node.into(), cfg.listeners.transparent?.port()))
            })
            .or(cfg.listeners.transparent)
            .ok_or(InterceptError::Map { name: maps::CONFIG, detail: "no redirect target".into() })?;
        let proxy_v4 = match redirect {
            SocketAddr::V4(a) => u32::from_ne_bytes(a.ip().octets()),
            SocketAddr::V6(_) => 0,
        };
        let proxy_v6 = ic.redirect_to_v6.map(|ip| {
            let b = ip.octets();
            [0, 4, 8, 12].map(|i| u32::from_ne_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]))
        });
        let settings = ProxyConfig {
            enabled: 1,
            fail_closed: u32::from(ic.fail == FailMode::Closed),
            proxy_v4,
            proxy_port: u32::from(redirect.port().to_be()),
            proxy_v6: proxy_v6.unwrap_or_default(),
            proxy_mark: ic.proxy_mark,
            enrolled_only: u32::from(cfg.kubernetes.enabled),
            heartbeat_timeout_ns: ic.heartbeat.timeout.as_nanos() as u64,
        };
        lock(&self.config_map).set(0, settings, 0).map_err(map_err(maps::CONFIG))?;

        let hosts_changed = {
            let mut d = lock(&self.destinations);
            let changed = *d != ic.destinations;
            *d = ic.destinations.clone();
            changed
        };
        self.resync_table()?;
        if hosts_changed {
            self.restart_dns(ic);
        }
        let mut cgroups = ic.cgroups.clone();
        if cfg.kubernetes.enabled {
            let kubepods = crate::k8s::kubepods(&cfg.kubernetes, &self.cgroup_root)
                .map_err(|e| InterceptError::Cgroup { path: "kubepods".into(), detail: e.to_string() })?;
            cgroups.push(kubepods);
        }
        self.sync_cgroups(&cgroups)
    }

    /// The cgroup2 mount the programs attach under.
    pub fn cgroup_root(&self) -> &Path {
        &self.cgroup_root
    }

    fn restart_dns(self: &Arc<Self>, ic: &crate::config::Intercept) {
        let (_, hosts) = table::static_entries(&ic.destinations);
        let mut names: Vec<String> = hosts.into_iter().map(|(_, h)| h).collect();
        names.sort();
        names.dedup();
        lock(&self.resolved).retain(|h, _| names.contains(h));
        let weak = Arc::downgrade(self);
        let task = tokio::spawn(dns::run(names, ic.dns.clone(), self.resolved.clone(), move || {
            if let Some(this) = weak.upgrade()
                && let Err(e) = this.resync_table()
            {
                tracing::error!(error = %e, "intercept table update after DNS change failed");
            }
        }));
        if let Some(old) = lock(&self.dns_task).replace(task) {
            old.abort();
        }
    }

    /// The Services table the Kubernetes watches write into.
    pub fn services(&self) -> &crate::k8s::services::Table {
        &self.services
    }

    /// Writes static destinations plus the current DNS answers and Service addresses into the
    /// tries.
    pub fn resync_table(&self) -> Result<(), InterceptError> {
        let dests = lock(&self.destinations).clone();
        let (mut desired, hosts) = table::static_entries(&dests);
        {
            let resolved = lock(&self.resolved);
            for (rule, host) in hosts {
                if let Some(ips) = resolved.get(&host) {
                    desired.extend(table::host_entries(ips, &dests[rule], rule));
                }
            }
        }
        {
            let services = lock(&self.services);
            for (rule, d) in dests.iter().enumerate() {
                let Some((name, ns)) = d.service.as_deref().and_then(crate::k8s::services::parse) else {
                    continue;
                };
                let Some(at) = services.get(&format!("{ns}/{name}")) else { continue };
                let ports = if d.ports.is_empty() { &at.ports } else { &d.ports };
                let with_ports = crate::config::Destination { ports: ports.clone(), ..d.clone() };
                desired.extend(table::host_entries(&at.ips, &with_ports, rule));
            }
        }
        let (added, removed) = lock(&self.table).sync(&desired).map_err(map_err(maps::INTERCEPT_V4))?;
        if added + removed > 0 {
            tracing::info!(entries = desired.len(), added, removed, "intercept table updated");
        }
        Ok(())
    }

    fn sync_cgroups(&self, wanted: &[String]) -> Result<(), InterceptError> {
        let mut links = lock(&self.links);
        let stale: Vec<String> = links.keys().filter(|k| !wanted.contains(k)).cloned().collect();
        for path in stale {
            for l in links.remove(&path).unwrap_or_default() {
                if let Ok(fd) = l.unpin() {
                    drop(fd);
                }
            }
            tracing::info!(cgroup = %path, "cgroup no longer enrolled; programs detached");
        }
        for path in wanted {
            if links.contains_key(path) {
                continue;
            }
            let attached = self.attach(path)?;
            tracing::info!(cgroup = %path, "cgroup enrolled; connect4/6, sendmsg4/6, getpeername4/6 and sock_ops attached");
            links.insert(path.clone(), attached);
        }
        Ok(())
    }

    fn attach(&self, cgroup: &str) -> Result<Vec<PinnedLink>, InterceptError> {
        let dir = self.cgroup_root.join(cgroup.trim_start_matches('/'));
        let cg_err = |detail: String| InterceptError::Cgroup { path: cgroup.to_string(), detail };
        let file =
            std::fs::File::open(&dir).map_err(|e| cg_err(format!("cannot open {}: {e}", dir.display())))?;
        let ino = file.metadata().map_err(|e| cg_err(e.to_string()))?.ino();
        let mut ebpf = lock(&self.ebpf);
        let mut out = Vec::new();
        for name in programs::SOCK_ADDR.into_iter().chain([programs::SOCK_OPS]) {
            let link: FdLink = if name == programs::SOCK_OPS {
                let p: &mut SockOps = program(&mut ebpf, name)?;
                let id = p
                    .attach(&file, CgroupAttachMode::Single)
                    .map_err(|source| InterceptError::Program { name, source })?;
                let l = p.take_link(id).map_err(|source| InterceptError::Program { name, source })?;
                l.try_into().map_err(|e: aya::programs::links::LinkError| cg_err(e.to_string()))?
            } else {
                let p: &mut CgroupSockAddr = program(&mut ebpf, name)?;
                let id = p
                    .attach(&file, CgroupAttachMode::Single)
                    .map_err(|source| InterceptError::Program { name, source })?;
                let l = p.take_link(id).map_err(|source| InterceptError::Program { name, source })?;
                l.try_into().map_err(|e: aya::programs::links::LinkError| cg_err(e.to_string()))?
            };
            // Unique per process start, not per PID: a restarted container's nodegate is PID 1
            // again, and must pin beside the links its predecessor left (they are replaced only
            // once ours are attached, so fail-closed never has a gap).
            let pin = self.pin_dir.join("links").join(format!("{name}_cg{ino}_{}", self.instance));
            let pinned = link
                .pin(&pin)
                .map_err(|e| InterceptError::Pin { path: pin.clone(), detail: e.to_string() })?;
            out.push(pinned);
        }
        Ok(out)
    }

    /// Writes the heartbeat: the programs redirect only while it is fresh.
    pub fn beat(&self) -> Result<(), InterceptError> {
        lock(&self.heartbeat).set(0, monotonic_ns(), 0).map_err(map_err(maps::HEARTBEAT))
    }

    /// Takes the record of an accepted connection: its original destination and the client's
    /// cgroup id. Removes it, so the table only holds connections not yet accepted.
    pub fn take_orig_dst(&self, peer: SocketAddr) -> Option<OrigDst> {
        let key = origdst::key_for_peer(peer);
        let mut orig = lock(&self.orig);
        let found = orig.get(&key, 0).ok()?;
        let _ = orig.remove(&key);
        Some(found)
    }

    /// Index of the `intercept.destinations` entry a connection to `dst` was redirected by.
    pub fn rule_for(&self, dst: SocketAddr) -> Option<usize> {
        lock(&self.table).rule_for(dst)
    }

    pub fn pin_dir(&self) -> &Path {
        &self.pin_dir
    }

    pub fn table_len(&self) -> usize {
        lock(&self.table).len()
    }

    pub fn attached_cgroups(&self) -> usize {
        lock(&self.links).len()
    }

    /// Detaches and unpins everything, unless `keep` (then the next proxy takes over).
    pub fn shutdown(&self, keep: bool) {
        if let Some(t) = lock(&self.dns_task).take() {
            t.abort();
        }
        if keep {
            tracing::info!(pin_dir = %self.pin_dir.display(), "leaving programs attached and maps pinned (intercept.keep_pinned)");
            return;
        }
        let mut links = lock(&self.links);
        for (_, ls) in std::mem::take(&mut *links) {
            for l in ls {
                if let Ok(fd) = l.unpin() {
                    drop(fd);
                }
            }
        }
        match bpffs::remove_pins(&self.pin_dir) {
            Ok(()) => {
                tracing::info!(pin_dir = %self.pin_dir.display(), "programs detached and maps unpinned")
            }
            Err(e) => {
                tracing::warn!(pin_dir = %self.pin_dir.display(), error = %e, "could not remove every pin")
            }
        }
    }
}

/// Kubernetes enrollment writes the pod cgroups into `NG_ENROLLED`.
impl crate::k8s::enroll::Target for Interceptor {
    fn enroll(&self, cgroup_id: u64) -> Result<(), String> {
        lock(&self.enrolled).insert(cgroup_id, 1, 0).map_err(|e| e.to_string())
    }

    fn unenroll(&self, cgroup_id: u64) -> Result<(), String> {
        match lock(&self.enrolled).remove(&cgroup_id) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    }

    fn enrolled(&self) -> Vec<u64> {
        lock(&self.enrolled).keys().flatten().collect()
    }
}

fn program<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut T, InterceptError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    let p = ebpf
        .program_mut(name)
        .ok_or(InterceptError::Map { name, detail: "program missing from the object".into() })?;
    p.try_into().map_err(|source| InterceptError::Program { name, source })
}

/// Forwards aya-log records from the programs to our log (at their own level).
fn spawn_logger(ebpf: &mut Ebpf) -> tokio::task::JoinHandle<()> {
    let logger = match aya_log::EbpfLogger::init(ebpf) {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, "eBPF logs unavailable");
            return tokio::spawn(async {});
        }
    };
    tokio::spawn(async move {
        // SAFETY: the logger owns its ring buffer fd and lives inside the AsyncFd until this task
        // ends, so the fd stays open and is not reused while registered.
        let registered = unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE)
        };
        let Ok(mut fd) = registered else {
            tracing::warn!("eBPF log ring buffer cannot be polled");
            return;
        };
        loop {
            let Ok(mut guard) = fd.readable_mut().await else { return };
            guard.get_inner_mut().flush();
            guard.clear_ready();
        }
    })
}
