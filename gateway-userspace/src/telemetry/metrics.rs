//! The one Prometheus registry. Every metric nodegate exports is declared here and documented in
//! docs/metrics.md; handlers hold `Arc<Metrics>` and touch only the fields they need.
use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConnLabels {
    /// `transparent` or `explicit`.
    pub mode: &'static str,
    pub identity: Arc<str>,
    /// `http1`, `http2`, `tls`, `tcp`.
    pub protocol: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub identity: Arc<str>,
    /// The standard method names; anything else is `OTHER` (bounded cardinality, no allocation).
    pub method: &'static str,
    /// Status code class: `2xx`, `4xx`, `5xx`, ... or `error` when no response came.
    pub status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BytesLabels {
    pub identity: Arc<str>,
    /// `sent` (client to upstream) or `received` (upstream to client).
    pub direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct A2aLabels {
    /// A configured agent's name (bounded by the config).
    pub agent: std::sync::Arc<str>,
    /// The 1.0 method name, or `GetAgentCard`.
    pub method: &'static str,
    /// `ok`, `error`, `denied`, `not_found`.
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TlsLabels {
    /// `terminate` or `passthrough`.
    pub mode: &'static str,
    /// `ok`, `refused` (terminate), `allowed`, `denied` (passthrough).
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GrpcLabels {
    pub identity: Arc<str>,
    /// The call's `grpc-status` by name (`OK`, `PERMISSION_DENIED`, ...), `UNKNOWN_CODE` for a
    /// number outside the 17 codes, or `none` when the call ended without one.
    pub code: &'static str,
}

/// The name of a gRPC status code (bounded: 17 names and two fallbacks).
pub fn grpc_code(status: Option<u32>) -> &'static str {
    const NAMES: [&str; 17] = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];
    match status {
        None => "none",
        Some(s) => NAMES.get(s as usize).copied().unwrap_or("UNKNOWN_CODE"),
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyLabels {
    /// `policy.rules[].name` (bounded by the config).
    pub rule: Arc<str>,
    pub protocol: &'static str,
    /// `allow`, `deny`, `rate_limited` or `would_deny` (dry run).
    pub decision: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LimitLabels {
    /// The `limits.*` or `timeouts.*` field (or a protocol's own, `llm.max_body_bytes`) that
    /// refused or ended something.
    pub limit: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModeLabels {
    pub mode: &'static str,
}

pub struct Metrics {
    pub registry: Registry,
    pub connections: Family<ConnLabels, Counter>,
    pub active_connections: Family<ModeLabels, Gauge>,
    pub connection_errors: Family<OutcomeLabels, Counter>,
    pub requests: Family<RequestLabels, Counter>,
    pub request_duration: Family<ModeLabels, Histogram>,
    pub bytes: Family<BytesLabels, Counter>,
    /// Mirrors the eBPF programs' per-CPU counters, refreshed on every scrape.
    pub redirects: Family<OutcomeLabels, Counter>,
    pub heartbeat_age: Gauge<f64, AtomicU64>,
    pub intercept_entries: Gauge,
    pub config_reloads: Family<OutcomeLabels, Counter>,
    pub audit_records: Counter,
    pub audit_dropped: Counter,
    /// Audit records (or flushes) that failed to reach the file (a full disk).
    pub audit_write_errors: Counter,
    /// Intercepted TLS connections by what nodegate did with them.
    pub tls: Family<TlsLabels, Counter>,
    /// Leaf certificates minted from the node CA (a cache miss or a renewal each).
    pub tls_leaves_minted: Counter,
    /// A2A calls by agent, method and outcome.
    pub a2a_calls: Family<A2aLabels, Counter>,
    /// Requests, connections and bodies refused or ended by a limit or a timeout.
    pub limit_hits: Family<LimitLabels, Counter>,
    /// Requests a `policy.rules` rule decided, by rule, protocol and decision.
    pub policy_decisions: Family<PolicyLabels, Counter>,
    /// Forwarded gRPC calls by caller and `grpc-status`.
    pub grpc_calls: Family<GrpcLabels, Counter>,
    /// Requests in flight now (a streamed response counts until its last byte).
    pub requests_in_flight: Gauge,
    /// Spans by what became of them: `exported`, `failed` (the receiver refused or was
    /// unreachable), `dropped` (the export queue was full).
    pub trace_spans: Family<OutcomeLabels, Counter>,
    pub llm: super::llm_metrics::LlmMetrics,
    pub mcp: super::mcp_metrics::McpMetrics,
    pub k8s: super::k8s_metrics::K8sMetrics,
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        // No registry prefix: nodegate's own metrics are named nodegate_*, the LLM ones use the
        // OpenTelemetry gen_ai names.
        let mut registry = Registry::default();
        let connections = Family::default();
        registry.register("nodegate_connections", "Accepted client connections", connections.clone());
        let active_connections = Family::default();
        registry.register(
            "nodegate_active_connections",
            "Client connections open now",
            active_connections.clone(),
        );
        let connection_errors = Family::default();
        registry.register(
            "nodegate_connection_errors",
            "Client connections that ended in an error, by cause",
            connection_errors.clone(),
        );
        let requests = Family::default();
        registry.register("nodegate_requests", "Proxied HTTP requests", requests.clone());
        let request_duration = Family::<ModeLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                60.0,
            ])
        });
        registry.register(
            "nodegate_request_duration_seconds",
            "Time from request received to response headers sent",
            request_duration.clone(),
        );
        let bytes = Family::default();
        registry.register("nodegate_bytes", "Bytes relayed, by identity and direction", bytes.clone());
        let redirects = Family::default();
        registry.register(
            "nodegate_intercept_redirects",
            "Decisions of the eBPF programs on intercepted destinations, by outcome",
            redirects.clone(),
        );
        let heartbeat_age = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "nodegate_intercept_heartbeat_age_seconds",
            "Age of the heartbeat the programs see (stale means fail-open or fail-closed)",
            heartbeat_age.clone(),
        );
        let intercept_entries = Gauge::default();
        registry.register(
            "nodegate_intercept_table_entries",
            "Entries in the intercept table",
            intercept_entries.clone(),
        );
        let config_reloads = Family::default();
        registry.register(
            "nodegate_config_reloads",
            "Config reload attempts, by outcome",
            config_reloads.clone(),
        );
        let audit_records = Counter::default();
        registry.register("nodegate_audit_records", "Audit records written", audit_records.clone());
        let audit_dropped = Counter::default();
        registry.register(
            "nodegate_audit_dropped",
            "Audit records dropped because the writer fell behind (queue full)",
            audit_dropped.clone(),
        );
        let audit_write_errors = Counter::default();
        registry.register(
            "nodegate_audit_write_errors",
            "Audit writes or flushes that failed (a full disk): those records are lost",
            audit_write_errors.clone(),
        );
        let a2a_calls = Family::<A2aLabels, Counter>::default();
        registry.register(
            "nodegate_a2a_calls",
            "A2A calls through nodegate, by agent, method and outcome",
            a2a_calls.clone(),
        );
        let tls = Family::<TlsLabels, Counter>::default();
        registry.register(
            "nodegate_tls_connections",
            "Intercepted TLS connections, by mode (terminate, passthrough) and outcome",
            tls.clone(),
        );
        let tls_leaves_minted = Counter::default();
        registry.register(
            "nodegate_tls_leaf_certificates_minted",
            "Leaf certificates minted from the node CA",
            tls_leaves_minted.clone(),
        );
        let limit_hits = Family::<LimitLabels, Counter>::default();
        registry.register(
            "nodegate_limit_hits",
            "Requests, connections and bodies refused or ended by a limit or a timeout, by the setting",
            limit_hits.clone(),
        );
        let policy_decisions = Family::<PolicyLabels, Counter>::default();
        registry.register(
            "nodegate_policy_decisions",
            "Requests a policy rule decided, by rule, protocol and decision (allow, deny, rate_limited, would_deny)",
            policy_decisions.clone(),
        );
        let grpc_calls = Family::<GrpcLabels, Counter>::default();
        registry.register(
            "nodegate_grpc_calls",
            "Forwarded gRPC calls by caller and grpc-status (none: ended without one)",
            grpc_calls.clone(),
        );
        let requests_in_flight = Gauge::default();
        registry.register(
            "nodegate_requests_in_flight",
            "Requests in flight now (a streamed response counts until its last byte)",
            requests_in_flight.clone(),
        );
        let trace_spans = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "nodegate_trace_spans",
            "OpenTelemetry spans by what became of them (exported, failed, dropped)",
            trace_spans.clone(),
        );
        let llm = super::llm_metrics::LlmMetrics::register(&mut registry);
        let mcp = super::mcp_metrics::McpMetrics::register(&mut registry);
        let k8s = super::k8s_metrics::K8sMetrics::register(&mut registry);
        Arc::new(Self {
            a2a_calls,
            limit_hits,
            policy_decisions,
            grpc_calls,
            requests_in_flight,
            trace_spans,
            k8s,
            tls,
            tls_leaves_minted,
            llm,
            mcp,
            registry,
            connections,
            active_connections,
            connection_errors,
            requests,
            request_duration,
            bytes,
            redirects,
            heartbeat_age,
            intercept_entries,
            config_reloads,
            audit_records,
            audit_dropped,
            audit_write_errors,
        })
    }

    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::with_capacity(8192);
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }

    pub fn add_bytes(&self, identity: &Arc<str>, sent: u64, received: u64) {
        for (direction, n) in [("sent", sent), ("received", received)] {
            if n > 0 {
                self.bytes.get_or_create(&BytesLabels { identity: identity.clone(), direction }).inc_by(n);
            }
        }
    }

    /// Counts one refusal or ending by `limit` (a config field name).
    pub fn limit_hit(&self, limit: &'static str) {
        self.limit_hits.get_or_create(&LimitLabels { limit }).inc();
    }

    /// Sets a counter to an absolute value read from elsewhere (the kernel's counters).
    pub fn set_redirect_counter(&self, outcome: &'static str, value: u64) {
        self.redirects.get_or_create(&OutcomeLabels { outcome }).inner().store(value, Ordering::Relaxed);
    }
}

/// A method as a metrics label.
pub fn method_label(m: &http::Method) -> &'static str {
    match *m {
        http::Method::GET => "GET",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::DELETE => "DELETE",
        http::Method::HEAD => "HEAD",
        http::Method::OPTIONS => "OPTIONS",
        http::Method::PATCH => "PATCH",
        http::Method::CONNECT => "CONNECT",
        http::Method::TRACE => "TRACE",
        _ => "OTHER",
    }
}

/// `2xx`-style class of a status code.
pub fn status_class(code: u16) -> &'static str {
    match code {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// OpenMetrics text (what the registry encodes) as the Prometheus text format 0.0.4: a counter
/// family is named by its `_total` samples there, `# UNIT` and `# EOF` do not exist. The sample
/// lines are the same in both.
pub fn prometheus_text(openmetrics: &str) -> String {
    let mut counters = std::collections::HashSet::new();
    for l in openmetrics.lines() {
        if let Some(rest) = l.strip_prefix("# TYPE ")
            && let Some((name, "counter")) = rest.split_once(' ')
        {
            counters.insert(name);
        }
    }
    let mut out = String::with_capacity(openmetrics.len() + counters.len() * 12);
    for l in openmetrics.lines() {
        if l == "# EOF" || l.starts_with("# UNIT ") {
            continue;
        }
        let meta = l
            .strip_prefix("# HELP ")
            .map(|r| ("# HELP ", r))
            .or_else(|| l.strip_prefix("# TYPE ").map(|r| ("# TYPE ", r)));
        match meta {
            Some((kind, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                out.push_str(kind);
                out.push_str(name);
                if counters.contains(name) {
                    out.push_str("_total");
                }
                out.push(' ');
                out.push_str(tail);
            }
            None => out.push_str(l),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod text_tests {
    #[test]
    fn counters_are_named_by_their_samples_in_the_prometheus_format() {
        let om = "# HELP a_b Things.\n# TYPE a_b counter\na_b_total{x=\"1\"} 2\n# HELP g A gauge.\n# TYPE g gauge\n# UNIT g seconds\ng 1\n# EOF\n";
        assert_eq!(
            super::prometheus_text(om),
            "# HELP a_b_total Things.\n# TYPE a_b_total counter\na_b_total{x=\"1\"} 2\n# HELP g A gauge.\n# TYPE g gauge\ng 1\n"
        );
    }
}
