//! LLM metrics, registered in the one registry. Token, latency and duration histograms use the
//! OpenTelemetry gen_ai semantic-convention names (`gen_ai_client_token_usage`,
//! `gen_ai_server_time_to_first_token`, `gen_ai_server_time_per_output_token`,
//! `gen_ai_client_operation_duration`) with nodegate's identity label added.
use std::sync::Arc;

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, histogram::Histogram},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    pub identity: Arc<str>,
    pub gen_ai_provider_name: Arc<str>,
    pub gen_ai_request_model: Arc<str>,
    pub status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TokenLabels {
    pub identity: Arc<str>,
    pub gen_ai_provider_name: Arc<str>,
    pub gen_ai_request_model: Arc<str>,
    /// `input`, `output`, `cached_input`, `cache_creation`, `reasoning`.
    pub gen_ai_token_type: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabels {
    pub gen_ai_provider_name: Arc<str>,
    pub gen_ai_request_model: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabels {
    pub identity: Arc<str>,
    pub gen_ai_provider_name: Arc<str>,
    pub gen_ai_request_model: Arc<str>,
    pub gen_ai_operation_name: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BudgetLabels {
    pub budget: Arc<str>,
    pub identity: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderLabels {
    pub gen_ai_provider_name: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PickLabels {
    pub pool: Arc<str>,
    pub endpoint: Arc<str>,
    pub strategy: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolLabels {
    pub pool: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointSignal {
    pub pool: Arc<str>,
    pub endpoint: Arc<str>,
    /// `waiting`, `running`, `kv_cache`, `in_flight`, `ejected`.
    pub signal: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolPlace {
    pub pool: Arc<str>,
    /// `local` (this node) or `remote`.
    pub node: &'static str,
}

pub struct LlmMetrics {
    pub picks: Family<PickLabels, Counter>,
    pub pool_endpoints: Family<PoolPlace, prometheus_client::metrics::gauge::Gauge>,
    pub pick_duration: Family<PoolLabels, Histogram>,
    pub endpoint_load:
        Family<EndpointSignal, prometheus_client::metrics::gauge::Gauge<f64, std::sync::atomic::AtomicU64>>,
    pub calls: Family<CallLabels, Counter>,
    pub tokens: Family<TokenLabels, Counter>,
    pub token_usage: Family<TokenLabels, Histogram>,
    pub ttft: Family<ModelLabels, Histogram>,
    pub tpot: Family<ModelLabels, Histogram>,
    pub duration: Family<OpLabels, Histogram>,
    pub budget_refusals: Family<BudgetLabels, Counter>,
    pub budget_fallbacks: Counter,
    pub failovers: Family<ProviderLabels, Counter>,
    /// The model names used as label values: bounded (a client's arbitrary model names must
    /// not grow series without end).
    pub models: ModelNames,
}

/// Most distinct model names that become label values; the rest are `other`.
pub const MAX_MODEL_LABELS: usize = 256;

/// The model names metrics may carry: one a provider answered with success is admitted (up to
/// [`MAX_MODEL_LABELS`]); anything else, a refused call's model among them, is `other` unless
/// it was admitted before.
#[derive(Default)]
pub struct ModelNames {
    known: std::sync::Mutex<std::collections::HashSet<Arc<str>>>,
    other: std::sync::OnceLock<Arc<str>>,
}

impl ModelNames {
    /// The label for `model`; `admit`: the call succeeded, the name may be learned.
    pub fn label(&self, model: &str, admit: bool) -> Arc<str> {
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(k) = known.get(model) {
            return k.clone();
        }
        if admit && known.len() < MAX_MODEL_LABELS {
            let k: Arc<str> = Arc::from(model);
            known.insert(k.clone());
            return k;
        }
        self.other.get_or_init(|| Arc::from("other")).clone()
    }
}

fn seconds() -> Histogram {
    Histogram::new([0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92])
}

impl LlmMetrics {
    pub fn register(r: &mut Registry) -> Self {
        let calls = Family::default();
        r.register("nodegate_llm_calls", "LLM calls by identity, provider, model and status", calls.clone());
        let tokens = Family::default();
        r.register("nodegate_llm_tokens", "Tokens by identity, provider, model and type", tokens.clone());
        let token_usage = Family::<TokenLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([
                1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0,
            ])
        });
        r.register(
            "gen_ai_client_token_usage",
            "Tokens used per call (OpenTelemetry gen_ai)",
            token_usage.clone(),
        );
        let ttft = Family::<ModelLabels, Histogram>::new_with_constructor(seconds);
        r.register("gen_ai_server_time_to_first_token", "Seconds to the first streamed token", ttft.clone());
        let tpot = Family::<ModelLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([
                0.001, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 1.0, 2.5,
            ])
        });
        r.register(
            "gen_ai_server_time_per_output_token",
            "Seconds per output token after the first",
            tpot.clone(),
        );
        let duration = Family::<OpLabels, Histogram>::new_with_constructor(seconds);
        r.register(
            "gen_ai_client_operation_duration",
            "Seconds from request to the end of the response",
            duration.clone(),
        );
        let budget_refusals = Family::default();
        r.register("nodegate_llm_budget_refusals", "Requests refused by a budget", budget_refusals.clone());
        let budget_fallbacks = Counter::default();
        r.register(
            "nodegate_llm_budget_backend_fallbacks",
            "Budget operations done with local counters because Redis was unreachable",
            budget_fallbacks.clone(),
        );
        let failovers = Family::default();
        r.register(
            "nodegate_llm_failovers",
            "Attempts abandoned for the next provider, by the provider that failed",
            failovers.clone(),
        );
        let picks = Family::default();
        r.register(
            "nodegate_inference_picks",
            "Endpoint choices by pool, endpoint and strategy",
            picks.clone(),
        );
        let pick_duration = Family::<PoolLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([1e-6, 2e-6, 5e-6, 1e-5, 2e-5, 5e-5, 1e-4, 1e-3])
        });
        r.register(
            "nodegate_inference_pick_duration_seconds",
            "Time to choose an endpoint",
            pick_duration.clone(),
        );
        let endpoint_load = Family::default();
        r.register(
            "nodegate_inference_endpoint_load",
            "Load of each endpoint as the picker sees it",
            endpoint_load.clone(),
        );
        let pool_endpoints = Family::default();
        r.register(
            "nodegate_inference_pool_endpoints",
            "Endpoints each pool has now, on this node and on others",
            pool_endpoints.clone(),
        );
        Self {
            picks,
            pool_endpoints,
            pick_duration,
            endpoint_load,
            calls,
            tokens,
            token_usage,
            ttft,
            tpot,
            duration,
            budget_refusals,
            budget_fallbacks,
            failovers,
            models: ModelNames::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_labels_are_bounded_and_refusals_add_none() {
        let m = ModelNames::default();
        assert_eq!(&*m.label("junk-1", false), "other", "a refused call's model is not learned");
        assert_eq!(&*m.label("gpt-4o", true), "gpt-4o");
        assert_eq!(&*m.label("gpt-4o", false), "gpt-4o", "known names stay");
        for i in 0..MAX_MODEL_LABELS * 2 {
            m.label(&format!("m{i}"), true);
        }
        assert_eq!(&*m.label("one-too-many", true), "other");
        assert_eq!(m.known.lock().map(|k| k.len()).unwrap_or(0), MAX_MODEL_LABELS);
    }
}
