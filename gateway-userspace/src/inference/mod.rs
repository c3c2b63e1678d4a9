//! Inference routing: pools of model servers on this node, each request sent to the one that
//! will answer fastest. Load comes from the servers' own metrics (scraped every
//! `scrape_interval`, ignored once older than `stale_after`) and from nodegate's own in-flight
//! counts, which react at once; prefix-cache affinity from the pool's routing history.
//! Requests reach a pool through the LLM gateway (by model name, or by the intercepted Service
//! address), so they are counted, limited and audited like any other LLM call.
pub mod endpoint;
pub mod pick;
pub mod prefix;
pub mod scrape;
pub mod signals;

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex, atomic::AtomicUsize},
    time::Instant,
};

use arc_swap::ArcSwap;

use crate::{
    config::{self, Provider, ProviderKind},
    llm::providers::ProviderState,
};

/// One model server a pool may send to, as configured or as found in the cluster.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Member {
    /// `host:port` of its OpenAI-compatible API.
    pub address: String,
    pub metrics_path: String,
    pub local: bool,
    pub node: Option<String>,
}

/// A pool's endpoints at one moment, with the prefix-cache history indexed by their positions.
pub struct Members {
    pub endpoints: Vec<Arc<endpoint::EndpointState>>,
    prefix: Mutex<prefix::PrefixIndex>,
}

/// At most this many endpoints per pool, configured and found together.
pub const MAX_ENDPOINTS: usize = 1024;

pub struct PoolState {
    pub name: Arc<str>,
    pub cfg: config::Pool,
    members: ArcSwap<Members>,
    rr: AtomicUsize,
    epoch: Instant,
    /// Set when a first round of scrapes has finished (readiness waits for it).
    pub scraped: std::sync::atomic::AtomicBool,
}

fn endpoint_state(pool: &str, m: &Member) -> Option<Arc<endpoint::EndpointState>> {
    let p = Provider {
        name: format!("{pool}/{}", m.address),
        kind: ProviderKind::OpenaiCompatible,
        endpoint: format!("http://{}", m.address),
        credentials: None,
        tokenize: Default::default(),
    };
    match ProviderState::new(&p) {
        Ok(s) => Some(Arc::new(endpoint::EndpointState::new(m, Arc::new(s)))),
        Err(err) => {
            tracing::error!(pool, endpoint = %m.address, error = %err, "inference endpoint left out");
            None
        }
    }
}

impl PoolState {
    pub fn new(cfg: &config::Pool) -> Self {
        let endpoints: Vec<_> =
            Self::configured(cfg).iter().filter_map(|m| endpoint_state(&cfg.name, m)).collect();
        let n = endpoints.len();
        Self {
            name: cfg.name.as_str().into(),
            cfg: cfg.clone(),
            members: ArcSwap::from_pointee(Members {
                endpoints,
                prefix: Mutex::new(prefix::PrefixIndex::new(n, cfg.blocks_per_endpoint)),
            }),
            rr: AtomicUsize::new(0),
            epoch: Instant::now(),
            scraped: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The endpoints named in the configuration (on this node).
    fn configured(cfg: &config::Pool) -> Vec<Member> {
        cfg.endpoints
            .iter()
            .map(|e| Member {
                address: e.address.clone(),
                metrics_path: e.metrics_path.clone(),
                local: true,
                node: None,
            })
            .collect()
    }

    /// The endpoints now.
    pub fn members(&self) -> Arc<Members> {
        self.members.load_full()
    }

    /// Replaces the endpoints found in the cluster with `found` (configured ones stay). An
    /// endpoint that stays keeps its load, ejection state and prefix-cache history.
    pub fn set_found(&self, mut found: Vec<Member>) {
        let mut wanted = Self::configured(&self.cfg);
        found.sort();
        found.dedup();
        wanted
            .extend(found.into_iter().filter(|m| !self.cfg.endpoints.iter().any(|e| e.address == m.address)));
        if wanted.len() > MAX_ENDPOINTS {
            tracing::warn!(pool = %self.name, found = wanted.len(), kept = MAX_ENDPOINTS, "pool has more endpoints than it keeps");
            wanted.truncate(MAX_ENDPOINTS);
        }
        let old = self.members.load_full();
        let same = |e: &endpoint::EndpointState, m: &Member| {
            *e.address == *m.address && e.local == m.local && e.node.as_deref() == m.node.as_deref()
        };
        if old.endpoints.len() == wanted.len() && old.endpoints.iter().zip(&wanted).all(|(e, m)| same(e, m)) {
            return;
        }
        let mut moved = vec![None; old.endpoints.len()];
        let mut endpoints = Vec::with_capacity(wanted.len());
        for m in &wanted {
            let kept = old.endpoints.iter().position(|e| same(e, m));
            let state = match kept {
                Some(i) => Some(old.endpoints[i].clone()),
                None => endpoint_state(&self.cfg.name, m),
            };
            if let Some(state) = state {
                if let Some(i) = kept {
                    moved[i] = Some(endpoints.len());
                }
                endpoints.push(state);
            }
        }
        let prefix = match old.prefix.lock() {
            Ok(p) => p.carried(&moved, endpoints.len()),
            Err(_) => prefix::PrefixIndex::new(endpoints.len(), self.cfg.blocks_per_endpoint),
        };
        let (local, remote) =
            (endpoints.iter().filter(|e| e.local).count(), endpoints.iter().filter(|e| !e.local).count());
        tracing::info!(pool = %self.name, local, remote, "inference pool endpoints changed");
        self.members.store(Arc::new(Members { endpoints, prefix: Mutex::new(prefix) }));
    }

    pub fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    pub fn block_hashes(&self, model: &str, prompt: &str) -> Vec<u64> {
        if self.cfg.strategy != config::PickStrategy::Scorer {
            return Vec::new();
        }
        prefix::block_hashes(model, prompt.as_bytes(), self.cfg.block_bytes)
    }
}

/// Endpoints found in the cluster, by pool name: kept outside the pools so a pool rebuilt on
/// reload starts from what is known.
pub type Found = Arc<Mutex<HashMap<String, Vec<Member>>>>;

/// Every pool, by model name and by Service address.
#[derive(Default)]
pub struct Pools {
    pub pools: Vec<Arc<PoolState>>,
    by_model: HashMap<String, usize>,
    by_service: HashMap<SocketAddr, usize>,
}

impl Pools {
    pub fn build(cfg: &config::Inference, found: &Found) -> Self {
        let mut p = Self::default();
        let found = found.lock().unwrap_or_else(|e| e.into_inner());
        for c in &cfg.pools {
            let i = p.pools.len();
            for m in &c.models {
                p.by_model.insert(m.clone(), i);
            }
            if let Some(s) = c.service.as_deref().and_then(|s| s.parse().ok()) {
                p.by_service.insert(s, i);
            }
            let pool = PoolState::new(c);
            if let Some(f) = found.get(&c.name) {
                pool.set_found(f.clone());
            }
            p.pools.push(Arc::new(pool));
        }
        p
    }

    /// Gives every pool what `found` holds for it (no change where it has it already).
    pub fn refresh(&self, found: &Found) {
        let found = found.lock().unwrap_or_else(|e| e.into_inner());
        for p in &self.pools {
            if p.cfg.kubernetes.is_some() {
                p.set_found(found.get(&*p.name).cloned().unwrap_or_default());
            }
        }
    }

    pub fn by_name(&self, name: &str) -> Option<&Arc<PoolState>> {
        self.pools.iter().find(|p| &*p.name == name)
    }

    /// The pool for a request: by the intercepted Service it was sent to, else by model name.
    pub fn for_request(&self, model: &str, dst: Option<SocketAddr>) -> Option<&Arc<PoolState>> {
        dst.and_then(|d| self.by_service.get(&d))
            .or_else(|| self.by_model.get(model))
            .and_then(|i| self.pools.get(*i))
    }
}
