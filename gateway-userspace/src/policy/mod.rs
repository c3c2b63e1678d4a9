//! Policy: `policy.rules` (named, ordered CEL rules over one attribute set for every protocol,
//! [`Engine`]) and the identity selector the protocols' own lists use (budgets, model allow
//! lists, MCP tool rules, A2A rules). Everything is compiled once per config version; MCP
//! argument conditions are evaluated by the same CEL environment and attributes.
pub mod attrs;
mod guard;
pub mod limit;
mod mcp;
pub mod offline;
pub mod paths;
mod rules;

use std::sync::Arc;

pub use attrs::{Attributes, Input, JsonInput};
pub use mcp::{CallDenied, McpPolicy, McpRule, who};
pub use rules::{Denial, Rules, Verdict, compile, root};

use crate::{
    config,
    identity::Identity,
    telemetry::{audit::Record, metrics::Metrics},
};

/// The live rules and the rate-limit buckets they share across config versions. A request
/// loads the rules once, so a reload swaps every rule at once: no request sees half of each.
pub struct Engine {
    pub rules: arc_swap::ArcSwap<Rules>,
    pub limiter: limit::Limiter,
}

impl Engine {
    pub fn new(cfg: &config::Policy) -> Self {
        Self { rules: arc_swap::ArcSwap::from_pointee(Rules::build(cfg)), limiter: Default::default() }
    }

    /// Decides for one request and counts the decision.
    pub fn decide(&self, metrics: &Metrics, input: &Input<'_>) -> Verdict {
        let rules = self.rules.load();
        if !rules.applies_to(input.protocol) {
            return Verdict::default();
        }
        let v = rules.evaluate(input, &self.limiter);
        let protocol = input.protocol.as_str();
        let count = |rule: &Arc<str>, decision| {
            metrics
                .policy_decisions
                .get_or_create(&crate::telemetry::metrics::PolicyLabels {
                    rule: rule.clone(),
                    protocol,
                    decision,
                })
                .inc();
        };
        if let Some(rule) = &v.rule {
            count(rule, v.label_of_decider());
        }
        if let Some(rule) = &v.would_deny {
            count(rule, "would_deny");
        }
        if let Some(why) = &v.would_deny_reason {
            tracing::info!(workload = %input.source.workload, protocol, reason = %why, "policy dry run: would deny");
        }
        v
    }
}

impl Verdict {
    /// The decision of the rule that decided, as metrics name it.
    fn label_of_decider(&self) -> &'static str {
        match &self.denied {
            Some(d) if d.retry_after.is_some() => "rate_limited",
            Some(_) => "deny",
            None => "allow",
        }
    }

    /// What the audit record of the request carries: the deciding rule and a dry run's finding.
    pub fn mark(&self) -> Mark {
        Mark { rule: self.rule.clone(), would_deny: self.would_deny.clone() }
    }

    /// The refusal message clients see.
    pub fn message(d: &Denial) -> String {
        format!("denied by nodegate policy rule {}: {}", d.rule, d.reason)
    }
}

/// A request's policy outcome as its audit record keeps it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mark {
    pub rule: Option<Arc<str>>,
    pub would_deny: Option<Arc<str>>,
}

impl Mark {
    /// Writes the outcome into a record (a rule already named there, one that refused, stays).
    pub fn apply(&self, rec: &mut Record) {
        if rec.rule.is_none() {
            rec.rule.clone_from(&self.rule);
        }
        if self.would_deny.is_some() {
            rec.would_deny.clone_from(&self.would_deny);
        }
    }
}

/// A name pattern: exact, `*`, or a `prefix*`.
#[derive(Debug, Clone)]
pub(crate) enum Pattern {
    Any,
    Exact(String),
    Prefix(String),
}

impl Pattern {
    pub(crate) fn new(p: &str) -> Self {
        if p == "*" {
            Self::Any
        } else if let Some(prefix) = p.strip_suffix('*') {
            Self::Prefix(prefix.to_string())
        } else {
            Self::Exact(p.to_string())
        }
    }

    pub(crate) fn matches(&self, s: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Exact(e) => e == s,
            Self::Prefix(p) => s.starts_with(p.as_str()),
        }
    }
}

/// Matches identities: every non-empty field must match (workload name patterns, cgroup path
/// prefixes on segment boundaries, principal name patterns, and the pod's namespace, service
/// account, labels and container; how the caller was named).
#[derive(Debug, Clone)]
pub struct Selector {
    workloads: Vec<Pattern>,
    cgroups: Vec<String>,
    principals: Vec<Pattern>,
    namespaces: Vec<Pattern>,
    service_accounts: Vec<Pattern>,
    labels: Vec<(String, Pattern)>,
    containers: Vec<Pattern>,
    sources: Vec<crate::identity::Source>,
}

fn patterns(v: &[String]) -> Vec<Pattern> {
    v.iter().map(|p| Pattern::new(p)).collect()
}

/// Empty list: anything; otherwise `value` must be present and match one pattern.
fn any_of(pats: &[Pattern], value: Option<&str>) -> bool {
    pats.is_empty() || value.is_some_and(|v| pats.iter().any(|p| p.matches(v)))
}

impl Selector {
    pub fn new(s: &config::Selector) -> Self {
        Self {
            workloads: patterns(&s.workloads),
            cgroups: s.cgroups.iter().map(|c| c.trim_end_matches('/').to_string()).collect(),
            principals: patterns(&s.principals),
            namespaces: patterns(&s.namespaces),
            service_accounts: patterns(&s.service_accounts),
            labels: s.labels.iter().map(|(k, v)| (k.clone(), Pattern::new(v))).collect(),
            containers: patterns(&s.containers),
            sources: s.sources.clone(),
        }
    }

    /// Whether the selector names principals only (a budget scoped to it counts per principal).
    pub fn by_principal(&self) -> bool {
        !self.principals.is_empty() && self.workloads.is_empty() && self.cgroups.is_empty()
    }

    pub fn matches(&self, id: &Identity) -> bool {
        if !any_of(&self.principals, id.principal.as_deref()) || !any_of(&self.workloads, Some(&id.workload))
        {
            return false;
        }
        if !self.sources.is_empty() && !self.sources.contains(&id.source) {
            return false;
        }
        let cgroup_ok = self.cgroups.is_empty()
            || id.cgroup_path.as_deref().is_some_and(|path| {
                self.cgroups.iter().any(|c| c.is_empty() || crate::identity::is_under(path, c))
            });
        if !cgroup_ok {
            return false;
        }
        let pod = id.pod.as_deref();
        any_of(&self.namespaces, pod.map(|p| &*p.namespace))
            && any_of(&self.service_accounts, pod.map(|p| &*p.service_account))
            && any_of(&self.containers, id.container.as_deref())
            && self
                .labels
                .iter()
                .all(|(k, v)| pod.and_then(|p| p.labels.get(k)).is_some_and(|l| v.matches(l)))
    }
}

/// Model allow lists: the first rule whose selector matches decides; no rule matches: the
/// configured default (`llm.default`).
pub struct ModelPolicy {
    rules: Vec<(Selector, Vec<Pattern>, usize)>,
    default: config::Decision,
}

/// A refusal names the rule (its index in `llm.allow`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    pub rule: String,
}

impl ModelPolicy {
    pub fn new(rules: &[config::AllowRule], default: config::Decision) -> Self {
        Self {
            default,
            rules: rules
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    (Selector::new(&r.selector), r.models.iter().map(|m| Pattern::new(m)).collect(), i)
                })
                .collect(),
        }
    }

    pub fn check(&self, id: &Identity, model: &str) -> Result<(), Denied> {
        match self.rules.iter().find(|(sel, _, _)| sel.matches(id)) {
            None if self.default == config::Decision::Allow => Ok(()),
            None => Err(Denied { rule: "llm.default".into() }),
            Some((_, models, _)) if models.iter().any(|m| m.matches(model)) => Ok(()),
            Some((_, _, i)) => Err(Denied { rule: format!("llm.allow[{i}]") }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(name: &str, cg: Option<&str>) -> Identity {
        Identity { cgroup_path: cg.map(Arc::from), ..Identity::named(name) }
    }

    #[test]
    fn selectors_match_names_and_cgroup_prefixes() {
        let s = Selector::new(&config::Selector {
            workloads: vec!["agent-*".into()],
            cgroups: vec!["/pods".into()],
            ..Default::default()
        });
        assert!(s.matches(&id("agent-a", Some("/pods/a"))));
        assert!(!s.matches(&id("agent-a", Some("/podsx/a"))), "prefix on a path segment boundary only");
        assert!(!s.matches(&id("other", Some("/pods/a"))));
        assert!(Selector::new(&config::Selector::default()).matches(&id("anyone", None)));
    }

    #[test]
    fn first_matching_allow_rule_decides() {
        let p = ModelPolicy::new(
            &[
                config::AllowRule {
                    selector: config::Selector { workloads: vec!["cheap".into()], ..Default::default() },
                    models: vec!["gpt-4o-mini".into()],
                },
                config::AllowRule { selector: config::Selector::default(), models: vec!["*".into()] },
            ],
            config::Decision::Deny,
        );
        assert!(p.check(&id("cheap", None), "gpt-4o-mini").is_ok());
        assert_eq!(p.check(&id("cheap", None), "gpt-4o").unwrap_err().rule, "llm.allow[0]");
        assert!(p.check(&id("rich", None), "gpt-4o").is_ok());
    }

    #[test]
    fn principals_are_matched_beside_the_workload_and_the_default_decides_the_rest() {
        let p = ModelPolicy::new(
            &[config::AllowRule {
                selector: config::Selector { principals: vec!["team-a".into()], ..Default::default() },
                models: vec!["fast".into()],
            }],
            config::Decision::Deny,
        );
        let keyed = Identity { principal: Some(Arc::from("team-a")), ..id("unknown", None) };
        assert!(p.check(&keyed, "fast").is_ok());
        assert_eq!(p.check(&id("unknown", None), "fast").unwrap_err().rule, "llm.default");
        let named_like_it = id("team-a", None);
        assert!(p.check(&named_like_it, "fast").is_err(), "a workload name is not a principal");
    }
}
