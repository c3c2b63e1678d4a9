//! One model server as the picker sees it: what its last scrape said (with its age), what
//! nodegate itself has in flight there (which reacts instantly), and whether it is ejected.
use std::sync::{
    Arc,
    atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed},
};

use super::signals::Signals;
use crate::llm::providers::ProviderState;

pub struct EndpointState {
    pub address: Arc<str>,
    /// On this node (configured by address, or found in the cluster on this node).
    pub local: bool,
    /// The node it runs on, when the cluster says.
    pub node: Option<Arc<str>>,
    /// Where its metrics are read.
    pub metrics_url: Box<str>,
    /// How requests are sent there (an OpenAI-compatible provider without credentials).
    pub provider: Arc<ProviderState>,
    pub in_flight: AtomicU64,
    pub in_flight_tokens: AtomicU64,
    waiting: AtomicU64,
    running: AtomicU64,
    kv_cache: AtomicU64,
    /// Milliseconds since the pool's epoch of the last successful scrape; 0: never.
    scraped_ms: AtomicU64,
    pub failures: AtomicU32,
    pub ejected: AtomicBool,
    pub picks: AtomicU64,
}

/// Load as one pick sees it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Load {
    pub waiting: f64,
    pub running: f64,
    pub kv_cache: f64,
    pub in_flight: f64,
    pub in_flight_tokens: f64,
    /// Whether the scraped part is fresh.
    pub fresh: bool,
}

impl EndpointState {
    pub fn new(member: &super::Member, provider: Arc<ProviderState>) -> Self {
        Self {
            address: member.address.as_str().into(),
            local: member.local,
            node: member.node.as_deref().map(Into::into),
            metrics_url: format!("http://{}{}", member.address, member.metrics_path).into(),
            provider,
            in_flight: AtomicU64::new(0),
            in_flight_tokens: AtomicU64::new(0),
            waiting: AtomicU64::new(0),
            running: AtomicU64::new(0),
            kv_cache: AtomicU64::new(0),
            scraped_ms: AtomicU64::new(0),
            failures: AtomicU32::new(0),
            ejected: AtomicBool::new(false),
            picks: AtomicU64::new(0),
        }
    }

    pub fn record_scrape(&self, s: &Signals, now_ms: u64) {
        self.waiting.store(s.waiting.unwrap_or(0.0).to_bits(), Relaxed);
        self.running.store(s.running.unwrap_or(0.0).to_bits(), Relaxed);
        self.kv_cache.store(s.kv_cache.unwrap_or(0.0).clamp(0.0, 1.0).to_bits(), Relaxed);
        self.scraped_ms.store(now_ms.max(1), Relaxed);
        self.succeeded();
    }

    pub fn succeeded(&self) {
        self.failures.store(0, Relaxed);
        if self.ejected.swap(false, Relaxed) {
            tracing::info!(endpoint = %self.address, "inference endpoint healthy again");
        }
    }

    /// A failed scrape or connect; ejects after `limit` in a row.
    pub fn failed(&self, limit: u32) {
        let n = self.failures.fetch_add(1, Relaxed) + 1;
        if n >= limit && !self.ejected.swap(true, Relaxed) {
            tracing::warn!(endpoint = %self.address, failures = n, "inference endpoint ejected; probing it until it answers");
        }
    }

    pub fn load(&self, now_ms: u64, stale_ms: u64) -> Load {
        let at = self.scraped_ms.load(Relaxed);
        let fresh = at > 0 && now_ms.saturating_sub(at) <= stale_ms;
        let f = |a: &AtomicU64| if fresh { f64::from_bits(a.load(Relaxed)) } else { 0.0 };
        Load {
            waiting: f(&self.waiting),
            running: f(&self.running),
            kv_cache: f(&self.kv_cache),
            in_flight: self.in_flight.load(Relaxed) as f64,
            in_flight_tokens: self.in_flight_tokens.load(Relaxed) as f64,
            fresh,
        }
    }
}

/// Counts a request against its endpoint until dropped (when the response ends).
pub struct InFlight {
    ep: Arc<EndpointState>,
    tokens: u64,
}

impl InFlight {
    pub fn new(ep: Arc<EndpointState>, tokens: u64) -> Self {
        ep.in_flight.fetch_add(1, Relaxed);
        ep.in_flight_tokens.fetch_add(tokens, Relaxed);
        Self { ep, tokens }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.ep.in_flight.fetch_sub(1, Relaxed);
        self.ep.in_flight_tokens.fetch_sub(self.tokens, Relaxed);
    }
}
