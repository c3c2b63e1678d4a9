//! Configuration of local inference pools: sets of model servers on this node, and how to pick
//! one per request.
use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Inference {
    pub pools: Vec<Pool>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// Queue depth, KV-cache use, in-flight tokens and prefix-cache affinity, after a
    /// saturation filter.
    #[default]
    Scorer,
    RoundRobin,
    Random,
    /// Fewest requests in flight (nodegate's count plus the server's queue).
    LeastRequest,
    /// Power of two choices: the less loaded of two picked at random.
    PowerOfTwo,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// Recognise the engine from the metric names it exports.
    #[default]
    Auto,
    Vllm,
    Sglang,
    Tgi,
    Triton,
    Llamacpp,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    /// `host:port` of the server's OpenAI-compatible API.
    pub address: String,
    #[serde(default)]
    pub engine: Engine,
    /// Path of its Prometheus metrics.
    #[serde(default = "metrics_path")]
    pub metrics_path: String,
}

fn metrics_path() -> String {
    "/metrics".into()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Weights {
    pub queue: f64,
    pub kv_cache: f64,
    pub in_flight: f64,
    pub prefix: f64,
}

impl Default for Weights {
    fn default() -> Self {
        Self { queue: 1.0, kv_cache: 1.0, in_flight: 1.0, prefix: 2.0 }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Saturation {
    /// An endpoint with more requests waiting than this is skipped while others are not.
    pub queue: u64,
    /// An endpoint whose KV cache is fuller than this (0..1) is skipped while others are not.
    pub kv_cache: f64,
}

impl Default for Saturation {
    fn default() -> Self {
        Self { queue: 32, kv_cache: 0.95 }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Pool {
    pub name: String,
    /// Model names clients use that this pool serves (explicit mode, and transparent requests
    /// for these models).
    pub models: Vec<String>,
    /// Intercepted Service address (`ip:port`) whose requests go to this pool.
    #[serde(default)]
    pub service: Option<String>,
    /// Model servers named by address (always members, counted as on this node).
    #[serde(default)]
    pub endpoints: Vec<Endpoint>,
    /// Members found in the cluster, kept current as they come, go and turn ready.
    #[serde(default)]
    pub kubernetes: Option<PoolSource>,
    /// Send requests to endpoints on this node while one of them is neither saturated nor
    /// ejected; spill to other nodes' endpoints only then (the reason goes in the audit).
    #[serde(default = "prefer_local")]
    pub prefer_local: bool,
    #[serde(default)]
    pub strategy: Strategy,
    #[serde(default)]
    pub weights: Weights,
    #[serde(default)]
    pub saturation: Saturation,
    /// How often each server's metrics are read.
    #[serde(default = "scrape_interval", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub scrape_interval: Duration,
    /// Scraped load older than this is ignored (nodegate's own counts are used alone).
    #[serde(default = "stale_after", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub stale_after: Duration,
    /// Consecutive failed scrapes or connects before an endpoint is ejected (and probed).
    #[serde(default = "eject_after")]
    pub eject_after: u32,
    /// Prompt bytes per block for prefix-cache affinity.
    #[serde(default = "block_bytes")]
    pub block_bytes: usize,
    /// Blocks remembered per endpoint.
    #[serde(default = "blocks_per_endpoint")]
    pub blocks_per_endpoint: usize,
}

/// Where a pool's members come from in Kubernetes: exactly one of `service`, `selector` or
/// `inference_pool`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct PoolSource {
    /// `name.namespace` of a Service: its ready endpoints, from its EndpointSlices.
    pub service: Option<String>,
    /// The endpoints' port, by name or number; needed when the Service has more than one.
    pub port: Option<String>,
    /// Ready pods carrying these labels in `namespace`, on `target_ports`.
    pub selector: std::collections::BTreeMap<String, String>,
    pub namespace: Option<String>,
    pub target_ports: Vec<u16>,
    /// `name.namespace` of a Gateway API Inference Extension InferencePool
    /// (`inference.networking.k8s.io/v1`): its `selector.matchLabels` and `targetPorts`.
    pub inference_pool: Option<String>,
    /// Path of the members' Prometheus metrics.
    pub metrics_path: String,
}

impl Default for PoolSource {
    fn default() -> Self {
        Self {
            service: None,
            port: None,
            selector: Default::default(),
            namespace: None,
            target_ports: Vec::new(),
            inference_pool: None,
            metrics_path: metrics_path(),
        }
    }
}

fn prefer_local() -> bool {
    true
}
fn scrape_interval() -> Duration {
    Duration::from_millis(100)
}
fn stale_after() -> Duration {
    Duration::from_secs(2)
}
fn eject_after() -> u32 {
    3
}
fn block_bytes() -> usize {
    256
}
fn blocks_per_endpoint() -> usize {
    16_384
}
