//! The `limits` section: how much of the node one client, one workload and everyone together may
//! hold at once. Past a limit nodegate answers at once (503 with `Retry-After`, 431) rather than
//! queue without bound; every refusal is counted in `nodegate_limit_hits_total{limit}` and
//! audited. docs/limits.md lists every limit in the product with its default.
use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Client connections open at once on the proxy listeners, all workloads together. A
    /// connection past it is answered `503` (HTTP) or closed (anything else).
    pub connections: usize,
    /// Client connections open at once from one workload (as the kernel names it).
    pub connections_per_workload: usize,
    /// Requests in flight at once (a streamed response counts until its last byte).
    pub requests: usize,
    /// Requests in flight at once from one workload.
    pub requests_per_workload: usize,
    /// Largest request header block accepted, in bytes (request line and headers, HTTP/1 and
    /// HTTP/2 alike); larger is answered `431`.
    pub header_bytes: usize,
    /// Most header fields in one HTTP/1 request; more is answered `431`. (A value other than
    /// 100, hyper's own, costs a heap allocation per request.)
    pub headers: usize,
    /// The `Retry-After` a shed request is told.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub retry_after: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            connections: 20_000,
            connections_per_workload: 4_096,
            requests: 10_000,
            requests_per_workload: 2_048,
            header_bytes: 64 << 10,
            headers: 100,
            retry_after: Duration::from_secs(1),
        }
    }
}

/// Problems with the section, as (path, message).
pub(super) fn check(l: &Limits, push: &mut impl FnMut(String, String)) {
    for (name, v) in [
        ("connections", l.connections),
        ("connections_per_workload", l.connections_per_workload),
        ("requests", l.requests),
        ("requests_per_workload", l.requests_per_workload),
        ("headers", l.headers),
    ] {
        if v == 0 {
            push(format!("limits.{name}"), "must be at least 1".into());
        }
    }
    if l.header_bytes < 1024 {
        push(
            "limits.header_bytes".into(),
            format!("{} is below the smallest accepted, 1024", l.header_bytes),
        );
    }
    if l.connections_per_workload > l.connections {
        push("limits.connections_per_workload".into(), "must not exceed limits.connections".into());
    }
    if l.requests_per_workload > l.requests {
        push("limits.requests_per_workload".into(), "must not exceed limits.requests".into());
    }
}
