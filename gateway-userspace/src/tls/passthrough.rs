//! Passthrough policy: which server names a caller may reach with TLS nodegate does not read.
//! The first rule whose selector matches the caller and whose `sni` list matches the name
//! decides; no rule: `tls.passthrough.default`. A ClientHello without a usable server name meets
//! `no_sni` (which defaults to `default`).
use crate::{config, identity::Identity, policy::Selector};

/// A server-name pattern: `*`, `*.suffix` (names below it, not the suffix itself) or exact.
#[derive(Debug, Clone)]
enum Host {
    Any,
    Below(String),
    Exact(String),
}

impl Host {
    fn new(p: &str) -> Self {
        let p = p.trim().trim_end_matches('.').to_ascii_lowercase();
        if p == "*" {
            Self::Any
        } else if let Some(s) = p.strip_prefix("*.") {
            Self::Below(format!(".{s}"))
        } else {
            Self::Exact(p)
        }
    }

    fn matches(&self, name: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Below(suffix) => name.len() > suffix.len() && name.ends_with(suffix.as_str()),
            Self::Exact(e) => e == name,
        }
    }
}

pub struct SniPolicy {
    rules: Vec<(Selector, Vec<Host>, config::Decision)>,
    default: config::Decision,
    no_sni: config::Decision,
}

/// A decision and the rule that made it (for the audit record).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub allow: bool,
    pub rule: String,
}

impl SniPolicy {
    pub fn new(p: &config::Passthrough) -> Self {
        Self {
            rules: p
                .rules
                .iter()
                .map(|r| {
                    (Selector::new(&r.selector), r.sni.iter().map(|s| Host::new(s)).collect(), r.decision)
                })
                .collect(),
            default: p.default,
            no_sni: p.no_sni.unwrap_or(p.default),
        }
    }

    pub fn check(&self, id: &Identity, sni: Option<&str>) -> Verdict {
        let Some(name) = sni.map(|s| s.trim_end_matches('.').to_ascii_lowercase()) else {
            return Verdict {
                allow: self.no_sni == config::Decision::Allow,
                rule: "tls.passthrough.no_sni".into(),
            };
        };
        for (i, (sel, hosts, decision)) in self.rules.iter().enumerate() {
            if sel.matches(id) && hosts.iter().any(|h| h.matches(&name)) {
                return Verdict {
                    allow: *decision == config::Decision::Allow,
                    rule: format!("tls.passthrough.rules[{i}]"),
                };
            }
        }
        Verdict { allow: self.default == config::Decision::Allow, rule: "tls.passthrough.default".into() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Decision, Passthrough, Selector as Sel, SniRule};

    #[test]
    fn first_matching_rule_decides_then_default_and_no_sni() {
        let p = SniPolicy::new(&Passthrough {
            rules: vec![
                SniRule {
                    selector: Sel { workloads: vec!["agent".into()], ..Default::default() },
                    sni: vec!["*.openai.com".into()],
                    decision: Decision::Allow,
                },
                SniRule {
                    selector: Sel::default(),
                    sni: vec!["evil.example".into()],
                    decision: Decision::Deny,
                },
            ],
            default: Decision::Deny,
            no_sni: None,
        });
        let agent = Identity::named("agent");
        assert!(p.check(&agent, Some("API.openai.com.")).allow);
        assert!(!p.check(&agent, Some("openai.com")).allow, "*.x matches names below x only");
        assert!(!p.check(&agent, Some("api.openai.com.evil.example")).allow);
        assert_eq!(
            p.check(&Identity::named("other"), Some("api.openai.com")).rule,
            "tls.passthrough.default"
        );
        assert_eq!(p.check(&agent, Some("evil.example")).rule, "tls.passthrough.rules[1]");
        let none = p.check(&agent, None);
        assert!(!none.allow);
        assert_eq!(none.rule, "tls.passthrough.no_sni");
    }
}
