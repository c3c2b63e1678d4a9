//! Telemetry: logs (tracing), Prometheus metrics (one registry for every handler) and the audit
//! sink (one JSON line per connection and per request). OpenTelemetry traces come later.
pub mod audit;
pub mod k8s_metrics;
pub mod llm_metrics;
pub mod logging;
pub mod mcp_metrics;
pub mod metrics;
