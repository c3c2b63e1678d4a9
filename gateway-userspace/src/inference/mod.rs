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

use crate::{
    config::{self, Provider, ProviderKind},
    llm::providers::ProviderState,
};

pub struct PoolState {
    pub name: Arc<str>,
    pub cfg: config::Pool,
    pub endpoints: Vec<Arc<endpoint::EndpointState>>,
    prefix: Mutex<prefix::PrefixIndex>,
    rr: AtomicUsize,
    epoch: Instant,
}

impl PoolState {
    pub fn new(cfg: &config::Pool) -> Self {
        let endpoints = cfg
            .endpoints
            .iter()
            .filter_map(|e| {
                let p = Provider {
                    name: format!("{}/{}", cfg.name, e.address),
                    kind: ProviderKind::OpenaiCompatible,
                    endpoint: format!("http://{}", e.address),
                    credentials: None,
                    tokenize: Default::default(),
                };
                match ProviderState::new(&p) {
                    Ok(s) => Some(Arc::new(endpoint::EndpointState::new(&e.address, Arc::new(s)))),
                    Err(err) => {
                        tracing::error!(error = %err, "inference endpoint left out");
                        None
                    }
                }
            })
            .collect::<Vec<_>>();
        let n = endpoints.len();
        Self {
            name: cfg.name.as_str().into(),
            cfg: cfg.clone(),
            endpoints,
            prefix: Mutex::new(prefix::PrefixIndex::new(n, cfg.blocks_per_endpoint)),
            rr: AtomicUsize::new(0),
            epoch: Instant::now(),
        }
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

/// Every pool, by model name and by Service address.
#[derive(Default)]
pub struct Pools {
    pub pools: Vec<Arc<PoolState>>,
    by_model: HashMap<String, usize>,
    by_service: HashMap<SocketAddr, usize>,
}

impl Pools {
    pub fn build(cfg: &config::Inference) -> Self {
        let mut p = Self::default();
        for c in &cfg.pools {
            let i = p.pools.len();
            for m in &c.models {
                p.by_model.insert(m.clone(), i);
            }
            if let Some(s) = c.service.as_deref().and_then(|s| s.parse().ok()) {
                p.by_service.insert(s, i);
            }
            p.pools.push(Arc::new(PoolState::new(c)));
        }
        p
    }

    /// The pool for a request: by the intercepted Service it was sent to, else by model name.
    pub fn for_request(&self, model: &str, dst: Option<SocketAddr>) -> Option<&Arc<PoolState>> {
        dst.and_then(|d| self.by_service.get(&d))
            .or_else(|| self.by_model.get(model))
            .and_then(|i| self.pools.get(*i))
    }
}
