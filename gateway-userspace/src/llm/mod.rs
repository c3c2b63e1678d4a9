//! The LLM gateway: OpenAI and Anthropic APIs and OpenAI-compatible servers, for explicit
//! callers (`/v1/...` on the explicit listener) and for intercepted traffic to a provider.
//!
//! Order of one call (see `handler`): identify -> parse -> route (aliases, failover targets) ->
//! allow list -> budget reservation -> upstream with credentials injected, failing over before
//! the first byte -> stream back while counting (`stream`) -> settle budget, metrics, audit.
pub mod bpe;
pub mod budget;
pub mod calibrate;
pub mod error;
pub mod format;
pub mod handler;
pub mod providers;
pub mod route;
pub mod server_tokens;
pub mod sse;
pub mod stream;
pub mod tokens;
pub mod usage;

use std::{collections::HashMap, sync::Arc};

use crate::{config, policy::ModelPolicy, telemetry::metrics::Metrics};

/// The LLM configuration compiled for serving; rebuilt on every config change.
pub struct Llm {
    pub providers: Vec<Arc<providers::ProviderState>>,
    pub by_name: HashMap<String, usize>,
    pub routes: HashMap<String, config::ModelRoute>,
    pub policy: ModelPolicy,
    pub budgets: Arc<budget::Budgets>,
    /// Learned prompt-token overhead per (provider, model); kept across reloads.
    pub calibration: Arc<calibrate::Calibration>,
    pub cfg: config::Llm,
}

impl Llm {
    /// Builds the serving state. Providers whose keys cannot be read are left out (and said so),
    /// so one missing secret does not take the others down. `previous` keeps budget counters
    /// across reloads that do not change budgets.
    pub fn build(cfg: &config::Llm, metrics: &Metrics, previous: Option<&Llm>) -> Self {
        let mut providers = Vec::new();
        let mut by_name = HashMap::new();
        for p in &cfg.providers {
            match providers::ProviderState::new(p) {
                Ok(s) => {
                    by_name.insert(p.name.clone(), providers.len());
                    let s = Arc::new(s);
                    providers::resolve_in_background(&s);
                    providers.push(s);
                }
                Err(e) => tracing::error!(error = %e, "LLM provider left out"),
            }
        }
        let budgets = match previous {
            Some(prev) if prev.cfg.budgets == cfg.budgets && prev.cfg.redis_url == cfg.redis_url => {
                prev.budgets.clone()
            }
            // New rules, the same counters: a reload never hands out a fresh budget, and calls
            // in flight settle into the counters the new rules read.
            _ => Arc::new(budget::Budgets::new(
                &cfg.budgets,
                cfg.redis_url.as_ref().map(|u| u.expose()),
                metrics.llm.budget_fallbacks.clone(),
                previous.map(|p| p.budgets.memory()),
            )),
        };
        Self {
            providers,
            by_name,
            routes: cfg.models.iter().map(|m| (m.name.clone(), m.clone())).collect(),
            policy: ModelPolicy::new(&cfg.allow, cfg.default),
            budgets,
            calibration: previous.map(|p| p.calibration.clone()).unwrap_or_default(),
            cfg: cfg.clone(),
        }
    }

    /// Cost in millionths of a USD of `usage` on provider model `model`.
    pub fn micro_usd(&self, model: &str, input: u64, cached: u64, output: u64) -> u64 {
        let Some(p) = self.cfg.prices.get(model) else { return 0 };
        let cached_price = p.cached_input.unwrap_or(p.input);
        // Prices are USD per million tokens, so tokens * price is micro-USD.
        (input.saturating_sub(cached) as f64 * p.input
            + cached as f64 * cached_price
            + output as f64 * p.output)
            .round() as u64
    }
}
