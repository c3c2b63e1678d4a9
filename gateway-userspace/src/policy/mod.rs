//! Policy: the one identity selector every rule uses (budgets and model allow lists today; MCP
//! tool lists; A2A rules later), compiled from config once per config version. CEL
//! conditions over request fields will extend this module rather than fork it.
mod mcp;
pub mod paths;

pub use mcp::{CallDenied, McpPolicy, McpRule, who};

use crate::{config, identity::Identity};

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
    use std::sync::Arc;

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
