//! The `traces` section: OpenTelemetry spans over OTLP, one per agent action (an LLM call, an MCP
//! request, an A2A call, a forwarded HTTP request) with a child span per upstream attempt. Off
//! unless `endpoint` is set. Applied at start (a reload that changes it says it needs a restart).
use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum OtlpProtocol {
    /// OTLP/HTTP with protobuf bodies, `POST {endpoint}/v1/traces`.
    #[default]
    Http,
    /// OTLP/gRPC (`TraceService/Export`) at `endpoint`.
    Grpc,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Traces {
    /// The OTLP receiver, plain HTTP: `http://collector:4318` (HTTP) or `http://collector:4317`
    /// (gRPC). Unset: no spans are made or sent (a client's `traceparent` still reaches the
    /// upstream and names the trace in audit records).
    pub endpoint: Option<String>,
    pub protocol: OtlpProtocol,
    /// Share of traces kept when the client's `traceparent` does not decide (0.0 to 1.0). A
    /// client's sampled flag is followed either way (parent-based).
    pub sample_ratio: f64,
    /// `service.name` of the spans.
    pub service_name: String,
    /// Spans waiting for export at most; past it new spans are dropped and counted
    /// (`nodegate_trace_spans_total{outcome="dropped"}`), never slowing traffic.
    pub queue: usize,
    /// Spans per export request at most.
    pub batch: usize,
    /// How long spans wait to fill a batch.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub interval: Duration,
    /// One export request's time limit.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub timeout: Duration,
}

impl Default for Traces {
    fn default() -> Self {
        Self {
            endpoint: None,
            protocol: OtlpProtocol::Http,
            sample_ratio: 1.0,
            service_name: "nodegate".into(),
            queue: 4096,
            batch: 512,
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(10),
        }
    }
}

/// Problems with the section, as (path, message).
pub(super) fn check(t: &Traces, push: &mut impl FnMut(String, String)) {
    if let Some(e) = &t.endpoint {
        match e.parse::<http::Uri>() {
            Ok(u) if u.scheme_str() == Some("http") && u.host().is_some() => {}
            Ok(_) => push("traces.endpoint".into(), "must be an http:// URL with a host".into()),
            Err(err) => push("traces.endpoint".into(), format!("not a URL: {err}")),
        }
    }
    if !(0.0..=1.0).contains(&t.sample_ratio) {
        push("traces.sample_ratio".into(), "must be between 0.0 and 1.0".into());
    }
    if t.service_name.is_empty() {
        push("traces.service_name".into(), "must not be empty".into());
    }
    for (name, v) in [("queue", t.queue), ("batch", t.batch)] {
        if v == 0 {
            push(format!("traces.{name}"), "must be at least 1".into());
        }
    }
    for (name, d) in [("interval", t.interval), ("timeout", t.timeout)] {
        if d.is_zero() {
            push(format!("traces.{name}"), "must be greater than zero".into());
        }
    }
}
