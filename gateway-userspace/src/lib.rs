//! nodegate: an eBPF-accelerated, node-level gateway for AI agent traffic.
//!
//! The request path, top to bottom: `proxy` accepts (transparent or explicit) -> `intercept`
//! says where the connection was going and which cgroup made it -> `identity` names the workload
//! -> `proxy::sniff` classifies -> `proxy::http` forwards (or `proxy::splice` relays) through
//! `proxy::upstream` -> `telemetry` accounts and audits. `config` feeds all of them; `admin`
//! shows their state.
pub mod a2a;
pub mod admin;
pub mod app;
pub mod audit_query;
pub mod cli;
pub mod config;
pub mod dedicated;
pub mod identity;
pub mod inference;
pub mod intercept;
pub mod k8s;
pub mod llm;
pub mod mcp;
pub mod policy;
pub mod proxy;
pub mod redis_link;
pub mod telemetry;
pub mod tls;
