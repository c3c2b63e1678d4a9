//! Telemetry: logs (tracing), Prometheus metrics (one registry for every handler) and the audit
//! sink (one JSON line per connection and per request), and OpenTelemetry traces made from the
//! audit records of traced actions (trace: W3C context; spans: OTLP export).
pub mod audit;
pub mod k8s_metrics;
pub mod live;
pub mod llm_metrics;
pub mod logging;
pub mod mcp_metrics;
pub mod metrics;
pub mod spans;
pub mod trace;
