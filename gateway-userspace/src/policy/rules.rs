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
    guard::{self, Guard},
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

/// Why a condition that gave something other than a boolean denies: names the type, never the
/// value (a condition reading a header or an argument would otherwise copy a credential into the
/// refusal, the audit record and the log).
pub(crate) fn not_boolean(source: &str, got: &Value) -> String {
    format!("condition `{source}` gave a {}, not a boolean", got.type_of())
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
    /// Conjuncts checked natively first: one false skips the rule; when they are the whole
    /// condition and all hold, the rule matches without CEL (`guard`).
    guards: Vec<Guard>,
    native: bool,
    /// The attribute families the condition names (made into CEL values only for it).
    families: Vec<Family>,
    action: PolicyAction,
    protocols: [bool; 5],
    dry_run: bool,
    rate_limit: Option<config::RuleRateLimit>,
}

/// `policy.rules` for one config version.
pub struct Rules {
    rules: Vec<Rule>,
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
                let guards = match &program {
                    Some(p) => guard::extract(p.expression()),
                    None => guard::Guards { guards: Vec::new(), complete: false },
                };
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
                    guards: guards.guards,
                    native: guards.complete,
                    families: named,
                    program,
                    action: r.action,
                    protocols,
                    dry_run: cfg.dry_run || r.dry_run,
                    rate_limit: r.rate_limit.clone(),
                }
            })
            .collect();
        Self { rules }
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
        // A family's CEL value is made once, for the first rule (its guards do not rule out)
        // that names it.
        let mut cx: Option<cel::Context<'_, '_>> = None;
        let mut added = 0u16;
        for r in self.rules.iter().filter(|r| r.protocols[index(protocol)]) {
            let mut all_hold = r.program.is_some();
            let mut ruled_out = false;
            for g in &r.guards {
                match g.holds(input) {
                    Some(false) => {
                        ruled_out = true;
                        break;
                    }
                    Some(true) => {}
                    None => all_hold = false,
                }
            }
            if ruled_out {
                continue;
            }
            let outcome = if r.native && all_hold {
                Ok(true)
            } else {
                let cx = cx.get_or_insert_with(|| root().new_inner_scope());
                for f in &r.families {
                    if added & (1 << *f as u8) == 0 {
                        cx.add_variable_from_value(f.name(), input.family(*f));
                        added |= 1 << *f as u8;
                    }
                }
                match &r.program {
                    None => Err(format!("condition `{}` does not compile", r.source)),
                    Some(p) => match p.execute(cx) {
                        Ok(Value::Bool(b)) => Ok(b),
                        Ok(other) => Err(not_boolean(&r.source, &other)),
                        Err(e) => Err(format!("condition `{}` failed: {e}", r.source)),
                    },
                }
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
        let r = rules("rules: [{name: not-bool, when: 'request.headers[\"authorization\"]', action: deny}]");
        let doc =
            json!({"protocol": "http", "request": {"headers": {"authorization": "Bearer sk-secret-123"}}});
        let reason = r.evaluate(&input(doc), &Limiter::default()).denied.unwrap().reason;
        assert!(reason.contains("gave a string, not a boolean"), "{reason}");
        assert!(!reason.contains("sk-secret-123"), "the value must not be copied into the reason: {reason}");
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

    /// Guards decide exactly as CEL does: every condition, judged through the rules (guards
    /// first) and by CEL alone over the same request, gives the same answer.
    #[test]
    fn guards_agree_with_cel() {
        let id = crate::identity::Identity {
            principal: Some(Arc::from("ops")),
            ..crate::identity::Identity::named("agent-7")
        };
        let mut h = http::HeaderMap::new();
        h.insert("x-team", "blue".parse().unwrap());
        let args = serde_json::json!({"path": "/srv/a"});
        let inputs: Vec<crate::policy::Input<'_>> = {
            let mut http = crate::policy::Input::new(PolicyProtocol::Http, &id);
            http.destination =
                crate::policy::attrs::Destination { host: Some("api.internal"), port: 8080, address: None };
            http.request =
                Some(crate::policy::attrs::RequestAttrs { method: "POST", path: "/v1/admin/x", headers: &h });
            let mut mcp = crate::policy::Input::new(PolicyProtocol::Mcp, &id);
            mcp.mcp = Some(crate::policy::attrs::McpAttrs {
                method: "tools/call",
                server: "files",
                tool: "read_file",
                arguments: &args,
            });
            vec![http, mcp]
        };
        let conditions = [
            r#"request.path.startsWith("/v1") && request.method == "POST""#,
            r#"request.path.startsWith("/v2") && request.method == "POST""#,
            r#"request.path.contains("admin") && destination.port >= 8080 && destination.port < 9000"#,
            r#"destination.port > 8080"#,
            r#"destination.host.endsWith(".internal") && source.principal != "ops""#,
            r#"source.workload in ["agent-7", "agent-8"] && "x-team" in request.headers"#,
            r#""X-Team" in request.headers"#,
            r#"source.principal == "ops" && destination.port == "8080""#,
            r#"mcp.tool in ["read_file"] && mcp.server == "files" && mcp.arguments.path.startsWith("/srv")"#,
            r#"mcp.tool == "read_file" && mcp.method != "tools/call""#,
            r#"source.workload == "agent-7""#,
            r#"request.path.matches("^/v[0-9]/admin") && request.method == "POST""#,
            r#"request.path.matches("^/v[2-9]/")"#,
            r#"request.path.matches("(")"#,
        ];
        for (c, when) in conditions.iter().enumerate() {
            let cfg = config::Policy {
                rules: vec![config::PolicyRule {
                    name: format!("c{c}"),
                    when: when.to_string(),
                    action: PolicyAction::Deny,
                    protocols: PolicyProtocol::ALL.to_vec(),
                    dry_run: false,
                    rate_limit: None,
                }],
                dry_run: false,
            };
            let rules = Rules::build(&cfg);
            let program = compile(when).unwrap();
            for input in &inputs {
                let mut cx = root().new_inner_scope();
                for f in Family::ALL {
                    cx.add_variable_from_value(f.name(), input.family(f));
                }
                let by_cel = match program.execute(&cx) {
                    Ok(Value::Bool(b)) => Some(b),
                    _ => None,
                };
                let v = rules.evaluate(input, &Limiter::default());
                let by_rules = match &v.denied {
                    None => Some(false),
                    Some(d) if d.reason.contains("holds") => Some(true),
                    Some(_) => None,
                };
                assert_eq!(by_rules, by_cel, "`{when}` on {:?}: {v:?}", input.protocol);
            }
        }
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

#[cfg(test)]
mod timing {
    use super::*;

    #[test]
    #[ignore = "timing probe: cargo test --release -- --ignored timing"]
    fn timing_probe() {
        let mut yaml = String::from("rules:\n");
        for i in 0..100 {
            let when = match i % 4 {
                0 => format!(r#"source.principal == "p-{i}" && request.path.startsWith("/admin-{i}")"#),
                1 => format!(r#""x-block-{i}" in request.headers"#),
                2 => format!(r#"destination.port == {} && source.workload.startsWith("w{i}")"#, 1000 + i),
                _ => format!(r#"llm.model == "m-{i}" && llm.max_tokens > {i}"#),
            };
            yaml.push_str(&format!("  - {{ name: r{i}, when: '{when}', action: deny }}\n"));
        }
        let cfg: config::Policy = serde_yaml_ng::from_str(&yaml).unwrap();
        let rules = Rules::build(&cfg);
        let id = crate::identity::Identity::named("bench");
        let mut h = http::HeaderMap::new();
        for (k, v) in [
            ("host", "127.0.0.1:18331"),
            ("authorization", "Bearer x"),
            ("user-agent", "bench"),
            ("accept", "*/*"),
        ] {
            h.insert(k, v.parse().unwrap());
        }
        let mut input = crate::policy::Input::new(PolicyProtocol::Http, &id);
        input.destination =
            super::super::attrs::Destination { host: Some("127.0.0.1"), port: 18331, address: None };
        input.request =
            Some(super::super::attrs::RequestAttrs { method: "GET", path: "/sim/count", headers: &h });
        let l = Limiter::default();
        let n = 20_000;
        let t = std::time::Instant::now();
        for _ in 0..n {
            assert!(rules.evaluate(&input, &l).denied.is_none());
        }
        let per = t.elapsed().as_secs_f64() / n as f64 * 1e6;
        // The same count of rules that no guard can rule out (CEL evaluates each).
        let mut yaml = String::from("rules:\n");
        for i in 0..75 {
            let when = match i % 3 {
                0 => format!(r#"size(request.path) > {}"#, 100 + i),
                1 => format!(r#"request.headers["user-agent"].endsWith("-{i}")"#),
                _ => format!(r#"size(source.workload) > {}"#, 60000 + i),
            };
            yaml.push_str(&format!("  - {{ name: r{i}, when: '{when}', action: deny }}\n"));
        }
        let cfg: config::Policy = serde_yaml_ng::from_str(&yaml).unwrap();
        let cel_only = Rules::build(&cfg);
        let t = std::time::Instant::now();
        for _ in 0..n {
            assert!(cel_only.evaluate(&input, &l).denied.is_none());
        }
        let cel = t.elapsed().as_secs_f64() / n as f64 * 1e6;
        eprintln!(
            "evaluate: {per:.2} us per request with 75 guarded rules, {cel:.2} us with 75 CEL-only rules"
        );
    }
}
