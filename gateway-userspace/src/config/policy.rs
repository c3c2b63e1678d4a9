//! The `policy` section: named, ordered rules in CEL over one attribute set shared by every
//! protocol (docs/policy.md). The first rule whose condition holds decides allow or deny (and an
//! allow may carry a rate limit); no rule holding leaves the request to the protocol's own lists
//! (`egress.allow`, `llm.allow`, `mcp.policies`, `a2a.allow`), which still apply after an allow.
use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    /// Evaluated in order; the first whose `when` is true decides.
    pub rules: Vec<PolicyRule>,
    /// Every rule in dry run: what a rule would deny is recorded (`would_deny` in the audit
    /// record, `nodegate_policy_decisions_total{decision="would_deny"}`) and not denied.
    pub dry_run: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyRule {
    /// Unique; named in every refusal, audit record and metric the rule causes.
    pub name: String,
    /// A CEL expression over `protocol`, `source`, `destination`, `request`, `grpc`, `llm`, `mcp`
    /// and `a2a` that must give a boolean. An evaluation error denies (fail closed).
    #[serde(default = "always")]
    pub when: String,
    pub action: PolicyAction,
    /// Protocols the rule applies to (`http`, `grpc`, `llm`, `mcp`, `a2a`). Empty: the ones whose
    /// attribute family the condition names (`mcp.tool` -> `mcp`), or every protocol when it names
    /// none of `grpc`, `llm`, `mcp` and `a2a`.
    #[serde(default)]
    pub protocols: Vec<PolicyProtocol>,
    /// Record what this rule would deny without denying.
    #[serde(default)]
    pub dry_run: bool,
    /// For `allow`: at most this many requests per caller in a sliding window; past it the request
    /// is refused (429, or the protocol's equivalent) naming the rule.
    #[serde(default)]
    pub rate_limit: Option<RuleRateLimit>,
}

fn always() -> String {
    "true".into()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PolicyAction {
    Allow,
    Deny,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PolicyProtocol {
    Http,
    Grpc,
    Llm,
    Mcp,
    A2a,
}

impl PolicyProtocol {
    pub const ALL: [Self; 5] = [Self::Http, Self::Grpc, Self::Llm, Self::Mcp, Self::A2a];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Grpc => "grpc",
            Self::Llm => "llm",
            Self::Mcp => "mcp",
            Self::A2a => "a2a",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleRateLimit {
    /// Requests allowed per `per`.
    pub requests: u32,
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub per: Duration,
    /// Whose requests are counted together: each `workload` (default), each `principal` (callers
    /// without one count as their workload), or everyone under the rule (`rule`).
    #[serde(default)]
    pub by: RateKey,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RateKey {
    #[default]
    Workload,
    Principal,
    Rule,
}

/// Problems with the section, as (path, message).
pub fn check(p: &Policy, push: &mut impl FnMut(String, String)) {
    let mut seen = std::collections::HashSet::new();
    for (i, r) in p.rules.iter().enumerate() {
        let at = format!("policy.rules[{i}]");
        if r.name.trim().is_empty() {
            push(format!("{at}.name"), "must not be empty".into());
        } else if !seen.insert(r.name.as_str()) {
            push(format!("{at}.name"), format!("`{}` is already the name of an earlier rule", r.name));
        }
        if let Err(e) = crate::policy::compile(&r.when) {
            push(format!("{at}.when"), e);
        }
        if let Some(l) = &r.rate_limit {
            if r.action != PolicyAction::Allow {
                push(format!("{at}.rate_limit"), "only an allow rule can carry a rate limit".into());
            }
            if l.requests == 0 {
                push(format!("{at}.rate_limit.requests"), "must be at least 1".into());
            }
            if l.per.is_zero() {
                push(format!("{at}.rate_limit.per"), "must be greater than zero".into());
            }
        }
    }
}
