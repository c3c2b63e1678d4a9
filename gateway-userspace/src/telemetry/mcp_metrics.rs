//! MCP metrics: calls by server, tool, identity and outcome with their durations, denials, and
//! each federated server's health.
use std::sync::{Arc, atomic::AtomicU64};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    pub server: Arc<str>,
    /// The server's own name of the tool, prompt or resource (`-` for lists).
    pub tool: Arc<str>,
    pub identity: Arc<str>,
    /// `tools/call`, `resources/read`, `prompts/get`, ...
    pub method: &'static str,
    /// `ok`, `error` (the server answered an error), `denied`, `cancelled`, `failed` (unreachable, hung).
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DurationLabels {
    pub server: Arc<str>,
    pub method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServerLabels {
    pub server: Arc<str>,
}

pub struct McpMetrics {
    pub calls: Family<CallLabels, Counter>,
    pub duration: Family<DurationLabels, Histogram>,
    pub server_up: Family<ServerLabels, Gauge<i64, std::sync::atomic::AtomicI64>>,
    pub server_failures: Family<ServerLabels, Gauge<u64, AtomicU64>>,
}

impl McpMetrics {
    pub fn register(r: &mut Registry) -> Self {
        let calls = Family::default();
        r.register(
            "nodegate_mcp_calls",
            "MCP requests by server, tool, identity, method and outcome",
            calls.clone(),
        );
        let duration = Family::<DurationLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ])
        });
        r.register(
            "nodegate_mcp_request_duration_seconds",
            "MCP request duration through nodegate",
            duration.clone(),
        );
        let server_up = Family::default();
        r.register(
            "nodegate_mcp_server_up",
            "1 when the MCP server answered its last request",
            server_up.clone(),
        );
        let server_failures = Family::default();
        r.register(
            "nodegate_mcp_server_failures",
            "Failed requests to the MCP server since start",
            server_failures.clone(),
        );
        Self { calls, duration, server_up, server_failures }
    }
}
