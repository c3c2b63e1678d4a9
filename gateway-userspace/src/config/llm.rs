//! Configuration of the LLM gateway: providers, model routes, budgets, prices.
use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use serde::{Deserialize, Serialize};

use super::{
    secret::Secret,
    types::{Decision, Selector},
};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Llm {
    pub providers: Vec<Provider>,
    /// Model names clients use, routed to provider models (aliases, failover, weights).
    pub models: Vec<ModelRoute>,
    /// Which models each caller may use; the first rule whose selector matches decides.
    pub allow: Vec<AllowRule>,
    /// What a caller no `allow` rule matches may do: `allow` (every model) or `deny`.
    pub default: Decision,
    pub budgets: Vec<Budget>,
    /// USD per million tokens, by provider model name.
    pub prices: BTreeMap<String, Price>,
    /// Redis holding budget counters shared by every node (`redis://host:6379/0`). Unset:
    /// counters in this process. While Redis is unreachable, local counters take over.
    pub redis_url: Option<Secret>,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    /// Output tokens reserved at admission when a request sets no max_tokens.
    pub default_max_tokens: u64,
    /// Cut a stream off (with a final error event) when it runs past what its budget allows.
    pub cut_off_streams: bool,
    /// How budgets admit calls. `standard`: reserve the prompt estimate (plus the overhead
    /// learned from the provider's own counts) and the output cap. `strict`: the same, and a
    /// (provider, model) never observed is admitted one call at a time until its first
    /// response teaches the overhead; requests without an output cap get `default_max_tokens`
    /// sent upstream. See docs/security.md for the bound each mode keeps.
    pub budget_mode: BudgetMode,
    /// Longest a strict-mode call waits for admission before it is refused with 429.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub admission_wait: Duration,
    /// How long a provider that failed is skipped.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub cooldown: Duration,
    /// Time for a provider to send its response headers (a stream: its first bytes); past it
    /// the call fails over to the next target, or fails naming this setting.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub response_timeout: Duration,
    /// Time a provider's answer may go without a byte once it has started (between stream
    /// events, or within a JSON body); past it a stream ends with an error event naming this
    /// setting, a JSON answer breaks off. Anthropic's pings and OpenAI's keep-alives count.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub stream_idle: Duration,
}

impl Default for Llm {
    fn default() -> Self {
        Self {
            providers: Vec::new(),
            models: Vec::new(),
            allow: Vec::new(),
            default: Decision::Allow,
            budgets: Vec::new(),
            prices: BTreeMap::new(),
            redis_url: None,
            max_body_bytes: 10 * 1024 * 1024,
            default_max_tokens: 4096,
            cut_off_streams: true,
            budget_mode: BudgetMode::Standard,
            admission_wait: Duration::from_secs(30),
            cooldown: Duration::from_secs(30),
            response_timeout: Duration::from_secs(300),
            stream_idle: Duration::from_secs(300),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum BudgetMode {
    #[default]
    Standard,
    Strict,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ProviderKind {
    Openai,
    Anthropic,
    /// vLLM, SGLang, TGI, llama.cpp and anything else speaking the OpenAI API.
    OpenaiCompatible,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Provider {
    pub name: String,
    pub kind: ProviderKind,
    /// Base URL, e.g. `https://api.openai.com` or `http://10.0.5.17:8000`.
    pub endpoint: String,
    #[serde(default)]
    pub credentials: Option<Credentials>,
    /// Ask the server itself how many tokens a prompt is, for budget admission: `llama-cpp`
    /// (`/apply-template` + `/tokenize`) or `vllm` (`/tokenize`). Costs one or two round trips
    /// per budgeted call; `none` (default) estimates and learns the template's overhead instead.
    #[serde(default)]
    pub tokenize: Tokenize,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Tokenize {
    #[default]
    None,
    LlamaCpp,
    Vllm,
}

/// Where a provider's key comes from: set exactly one. The key itself is never in the config
/// (so never in /config_dump) and never comes from the agent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Credentials {
    /// Name of an environment variable holding the key.
    pub env: Option<String>,
    /// File holding the key (trailing whitespace ignored); re-read on config reload.
    pub file: Option<PathBuf>,
    /// A key of a Kubernetes Secret holding the key (needs `kubernetes.enabled`); read through
    /// the API and re-read as it changes.
    pub secret: Option<SecretKeyRef>,
    /// The value read from `secret` (never serialized).
    #[serde(skip)]
    #[schemars(skip)]
    pub resolved: Option<Secret>,
}

/// One key of a Kubernetes Secret.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretKeyRef {
    pub name: String,
    pub key: String,
    /// Default: the agent's own namespace (`POD_NAMESPACE`). Reading another namespace's
    /// Secrets needs a Role there (docs/kubernetes.md).
    #[serde(default)]
    pub namespace: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelRoute {
    /// The model name clients ask for.
    pub name: String,
    pub targets: Vec<RouteTarget>,
    #[serde(default)]
    pub strategy: Strategy,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteTarget {
    pub provider: String,
    /// Model name at the provider (defaults to the route's name).
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default = "one")]
    pub weight: u32,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// First healthy target in order; the next on failure.
    #[default]
    Ordered,
    /// Spread by weight; the others on failure.
    Weighted,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AllowRule {
    pub selector: Selector,
    /// Model names (as clients ask for them); `*` matches any.
    pub models: Vec<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Each matching workload has its own counters.
    #[default]
    Workload,
    /// All matching workloads share one set of counters.
    Shared,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    pub name: String,
    pub selector: Selector,
    #[serde(default)]
    pub scope: Scope,
    #[serde(default)]
    pub requests_per_minute: Option<u64>,
    #[serde(default)]
    pub tokens_per_minute: Option<u64>,
    #[serde(default)]
    pub tokens_per_hour: Option<u64>,
    #[serde(default)]
    pub tokens_per_day: Option<u64>,
    #[serde(default)]
    pub tokens_per_month: Option<u64>,
    #[serde(default)]
    pub cost_per_day_usd: Option<f64>,
    #[serde(default)]
    pub cost_per_month_usd: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Price {
    pub input: f64,
    pub output: f64,
    /// Cached input tokens (defaults to `input`).
    pub cached_input: Option<f64>,
}
