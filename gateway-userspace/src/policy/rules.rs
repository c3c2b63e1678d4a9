//! The policy engine: `policy.rules` compiled once per config version and evaluated per request
//! over [`Attributes`]. The first rule (in order) that applies to the request's protocol and whose
//! condition is true decides: `deny` refuses, `allow` admits (after its rate limit, if it has one).
//! A condition that fails to evaluate or gives something other than a boolean denies, naming the
//! rule and why (fail closed). A rule in dry run records what it would deny and evaluation goes on
//! as if it had not matched. No rule matching leaves the request to the protocol's own lists.
use std::{sync::Arc, time::Duration};

use cel::Value;

use super::{
    attrs::{Attributes, Family},
    limit::{self, Limiter},
};
use crate::config::{self, PolicyAction, PolicyProtocol};

/// The CEL functions every condition may call besides the standard ones.
fn functions() -> cel::Context<'static, 'static> {
    let mut cx = cel::Context::default();
    super::paths::register(&mut cx);
    cx
}

/// The root context conditions are evaluated under (standard library and nodegate's functions),
/// made once per process: per request only a child scope holding the attributes is made.
pub fn root() -> &'static cel::Context<'static, 'static> {
    static ROOT: std::sync::LazyLock<cel::Context<'static, 'static>> = std::sync::LazyLock::new(functions);
    &ROOT
}

/// Compiles a condition; the error names each problem's line and column.
pub fn compile(source: &str) -> Result<cel::Program, String> {
    cel::Program::compile(source).map_err(|errs| {
        let each: Vec<String> = errs
            .errors
            .iter()
            .map(|e| format!("invalid CEL at line {}, column {}: {}", e.pos.0, e.pos.1 + 1, e.msg))
            .collect();
        if each.is_empty() { format!("invalid CEL: {errs}") } else { each.join("; ") }
    })
}

struct Rule {
    name: Arc<str>,
    source: String,
    /// None only for a condition that does not compile (config validation refuses those): it
    /// denies whatever it is asked, so a bad condition never opens anything.
    program: Option<cel::Program>,
    action: PolicyAction,
    protocols: [bool; 5],
    dry_run: bool,
    rate_limit: Option<config::RuleRateLimit>,
}

/// `policy.rules` for one config version.
pub struct Rules {
    rules: Vec<Rule>,
    /// Per protocol: the attribute families some applicable rule names (made per request).
    families: [Vec<Family>; 5],
}

fn index(p: PolicyProtocol) -> usize {
    PolicyProtocol::ALL.iter().position(|x| *x == p).unwrap_or(0)
}

/// The families a program names (`mcp.tool` names `mcp`).
fn named_families(p: &cel::Program) -> Vec<Family> {
    let refs = p.references();
    Family::ALL.into_iter().filter(|f| refs.has_variable(f.name())).collect()
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq)]
pub struct Denial {
    pub rule: Arc<str>,
    pub reason: String,
    /// Refused by the rule's rate limit: when to try again.
    pub retry_after: Option<Duration>,
}

/// What the rules decided for one request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Verdict {
    /// The rule that decided (allow or deny); None when no rule matched.
    pub rule: Option<Arc<str>>,
    pub denied: Option<Denial>,
    /// The first rule in dry run that would have denied.
    pub would_deny: Option<Arc<str>>,
    /// Why it would have.
    pub would_deny_reason: Option<String>,
}

impl Rules {
    pub fn build(cfg: &config::Policy) -> Self {
        let rules: Vec<Rule> = cfg
            .rules
            .iter()
            .map(|r| {
                let program = compile(&r.when).ok();
                let named = program.as_ref().map(named_families).unwrap_or_default();
                let mut protocols = [false; 5];
                if r.protocols.is_empty() {
                    let implied: Vec<PolicyProtocol> = named.iter().filter_map(|f| f.protocol()).collect();
                    for p in PolicyProtocol::ALL {
                        protocols[index(p)] = implied.is_empty() || implied.contains(&p);
                    }
                } else {
                    for p in &r.protocols {
                        protocols[index(*p)] = true;
                    }
                }
                Rule {
                    name: Arc::from(r.name.as_str()),
                    source: r.when.clone(),
                    program,
                    action: r.action,
                    protocols,
                    dry_run: cfg.dry_run || r.dry_run,
                    rate_limit: r.rate_limit.clone(),
                }
            })
            .collect();
        let families = PolicyProtocol::ALL.map(|p| {
            let mut fams: Vec<Family> = Vec::new();
            for r in rules.iter().filter(|r| r.protocols[index(p)]) {
                for f in r.program.as_ref().map(named_families).unwrap_or_default() {
                    if !fams.contains(&f) {
                        fams.push(f);
                    }
                }
            }
            fams
        });
        Self { rules, families }
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Whether any rule applies to `protocol` (nothing to evaluate otherwise).
    pub fn applies_to(&self, protocol: PolicyProtocol) -> bool {
        self.rules.iter().any(|r| r.protocols[index(protocol)])
    }

    /// Decides for one request.
    pub fn evaluate(&self, input: &dyn Attributes, limiter: &Limiter) -> Verdict {
        let protocol = input.protocol();
        let mut verdict = Verdict::default();
        if !self.applies_to(protocol) {
            return verdict;
        }
        let mut cx = root().new_inner_scope();
        for f in &self.families[index(protocol)] {
            cx.add_variable_from_value(f.name(), input.family(*f));
        }
        for r in self.rules.iter().filter(|r| r.protocols[index(protocol)]) {
            let outcome = match &r.program {
                None => Err(format!("condition `{}` does not compile", r.source)),
                Some(p) => match p.execute(&cx) {
                    Ok(Value::Bool(b)) => Ok(b),
                    Ok(other) => Err(format!("condition `{}` gave {other:?}, not a boolean", r.source)),
                    Err(e) => Err(format!("condition `{}` failed: {e}", r.source)),
                },
            };
            let denial = match (outcome, r.action) {
                (Ok(false), _) => continue,
                (Err(why), _) => Denial { rule: r.name.clone(), reason: why, retry_after: None },
                (Ok(true), PolicyAction::Deny) => Denial {
                    rule: r.name.clone(),
                    reason: format!("`{}` holds", r.source),
                    retry_after: None,
                },
                (Ok(true), PolicyAction::Allow) => {
                    let limited = r.rate_limit.as_ref().and_then(|l| {
                        let (workload, principal) = input.caller();
                        limiter.take(&r.name, limit::key(l.by, workload, principal), l).err().map(|e| {
                            let per = humantime::format_duration(l.per);
                            Denial {
                                rule: r.name.clone(),
                                reason: format!(
                                    "rate limit of rule {}: {} requests per {per}",
                                    r.name, l.requests
                                ),
                                retry_after: Some(e.retry_after),
                            }
                        })
                    });
                    match limited {
                        None => {
                            verdict.rule = Some(r.name.clone());
                            return verdict;
                        }
                        Some(d) if r.dry_run => {
                            verdict.would_deny.get_or_insert_with(|| r.name.clone());
                            verdict.would_deny_reason.get_or_insert(d.reason);
                            verdict.rule = Some(r.name.clone());
                            return verdict;
                        }
                        Some(d) => d,
                    }
                }
            };
            if r.dry_run {
                verdict.would_deny.get_or_insert_with(|| r.name.clone());
                verdict.would_deny_reason.get_or_insert(denial.reason);
                continue;
            }
            verdict.rule = Some(denial.rule.clone());
            verdict.denied = Some(denial);
            return verdict;
        }
        verdict
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::attrs::JsonInput;
    use serde_json::json;

    fn rules(yaml: &str) -> Rules {
        let cfg: config::Policy = serde_yaml_ng::from_str(yaml).unwrap();
        let mut problems = Vec::new();
        config::policy_check(&cfg, &mut |p, m| problems.push(format!("{p}: {m}")));
        assert!(problems.is_empty(), "{problems:?}");
        Rules::build(&cfg)
    }

    fn input(doc: serde_json::Value) -> JsonInput {
        JsonInput::parse(&doc).unwrap()
    }

    const RULES: &str = r#"
rules:
  - name: no-delete
    when: mcp.tool == "delete_file"
    action: deny
  - name: admin-anything
    when: source.principal == "admin"
    action: allow
  - name: internal-only
    when: '!destination.host.endsWith(".internal")'
    protocols: [http, grpc]
    action: deny
  - name: no-grpc-admin
    when: grpc.service == "admin.Admin"
    action: deny
"#;

    #[test]
    fn the_first_rule_that_holds_decides_and_is_named() {
        let r = rules(RULES);
        let l = Limiter::default();
        let v = r.evaluate(&input(json!({"protocol": "mcp", "mcp": {"tool": "delete_file"}})), &l);
        assert_eq!(v.denied.as_ref().unwrap().rule.as_ref(), "no-delete");
        // An admin is allowed by the second rule before the third could deny.
        let v = r.evaluate(
            &input(json!({"protocol": "http", "source": {"principal": "admin"}, "destination": {"host": "x.com"}})),
            &l,
        );
        assert_eq!((v.rule.as_deref(), v.denied), (Some("admin-anything"), None));
        let v = r.evaluate(&input(json!({"protocol": "http", "destination": {"host": "x.com"}})), &l);
        assert_eq!(v.denied.unwrap().rule.as_ref(), "internal-only");
        let v = r.evaluate(&input(json!({"protocol": "http", "destination": {"host": "api.internal"}})), &l);
        assert_eq!(v, Verdict::default(), "no rule held");
        // `mcp.tool` names the mcp family: the rule does not apply to HTTP at all.
        let v = r.evaluate(&input(json!({"protocol": "llm"})), &l);
        assert_eq!(v, Verdict::default());
        let v = r.evaluate(
            &input(json!({"protocol": "grpc", "destination": {"host": "a.internal"}, "grpc": {"service": "admin.Admin"}})),
            &l,
        );
        assert_eq!(v.denied.unwrap().rule.as_ref(), "no-grpc-admin");
    }

    #[test]
    fn an_evaluation_error_denies_and_says_why() {
        let r = rules("rules: [{name: typo, when: 'request.hedaers[\"x\"] == \"1\"', action: allow}]");
        let v =
            r.evaluate(&input(json!({"protocol": "http", "request": {"headers": {}}})), &Limiter::default());
        let d = v.denied.unwrap();
        assert_eq!(d.rule.as_ref(), "typo");
        assert!(d.reason.contains("failed"), "{}", d.reason);
        let r = rules("rules: [{name: not-bool, when: 'source.workload', action: deny}]");
        let v = r.evaluate(&input(json!({"protocol": "http"})), &Limiter::default());
        assert!(v.denied.unwrap().reason.contains("not a boolean"));
    }

    #[test]
    fn dry_run_records_and_goes_on() {
        let r = rules(
            "rules: [{name: would, when: 'true', action: deny, dry_run: true}, {name: then, when: 'true', action: allow}]",
        );
        let v = r.evaluate(&input(json!({"protocol": "a2a"})), &Limiter::default());
        assert_eq!(v.would_deny.as_deref(), Some("would"));
        assert_eq!((v.rule.as_deref(), v.denied), (Some("then"), None));
        let r = rules("dry_run: true\nrules: [{name: all, when: 'true', action: deny}]");
        let v = r.evaluate(&input(json!({"protocol": "llm"})), &Limiter::default());
        assert!(v.denied.is_none() && v.would_deny.as_deref() == Some("all"));
    }

    #[test]
    fn an_allow_rule_rate_limits_per_caller() {
        let r = rules(
            "rules: [{name: slow, when: 'llm.model == \"big\"', action: allow, rate_limit: {requests: 2, per: 1h}}]",
        );
        let l = Limiter::default();
        let a = input(json!({"protocol": "llm", "source": {"workload": "a"}, "llm": {"model": "big"}}));
        let b = input(json!({"protocol": "llm", "source": {"workload": "b"}, "llm": {"model": "big"}}));
        assert!(r.evaluate(&a, &l).denied.is_none());
        assert!(r.evaluate(&a, &l).denied.is_none());
        let d = r.evaluate(&a, &l).denied.unwrap();
        assert_eq!(d.rule.as_ref(), "slow");
        assert!(d.retry_after.is_some_and(|t| t > Duration::from_secs(1700)), "{d:?}");
        assert!(r.evaluate(&b, &l).denied.is_none(), "b has its own allowance");
        // The bucket outlives a rebuild of the same rules (a reload).
        let again = rules(
            "rules: [{name: slow, when: 'llm.model == \"big\"', action: allow, rate_limit: {requests: 2, per: 1h}}]",
        );
        assert!(again.evaluate(&a, &l).denied.is_some());
    }

    #[test]
    fn bad_conditions_are_refused_at_load_with_their_position() {
        let cfg: config::Policy =
            serde_yaml_ng::from_str("rules: [{name: x, when: 'source.workload == \"a\" &&', action: deny}]")
                .unwrap();
        let mut problems = Vec::new();
        config::policy_check(&cfg, &mut |p, m| problems.push(format!("{p}: {m}")));
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with("policy.rules[0].when: invalid CEL at line 1, column"),
            "{problems:?}"
        );
    }

    #[test]
    fn claims_labels_and_headers_are_attributes() {
        let r = rules(
            r#"
rules:
  - name: team
    when: source.claims.team == "blue" && source.labels["app"] == "agent" && request.headers["x-env"] == "prod"
    action: deny
"#,
        );
        let hit = input(
            json!({"protocol": "http", "source": {"claims": {"team": "blue"}, "labels": {"app": "agent"}},
            "request": {"headers": {"x-env": "prod"}}}),
        );
        assert!(r.evaluate(&hit, &Limiter::default()).denied.is_some());
    }
}
