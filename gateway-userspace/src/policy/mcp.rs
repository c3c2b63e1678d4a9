//! MCP rules: which servers and tools a workload sees and may call, and CEL conditions on
//! call arguments. The first rule whose selector matches the caller decides; no rule matches:
//! everything is visible and callable. Conditions are compiled once per config version.
use std::sync::Arc;

use serde_json::Value;

use super::{Pattern, Selector};
use crate::{config, identity::Identity};

pub struct McpPolicy {
    rules: Vec<Arc<McpRule>>,
    /// Governs callers no rule matches under `default: deny` (nothing visible, nothing
    /// callable); None under `default: allow`.
    deny_default: Option<Arc<McpRule>>,
}

pub struct McpRule {
    /// `mcp.policies[i]`, for errors and audit.
    pub name: String,
    selector: Selector,
    servers: Vec<Pattern>,
    tools: Vec<Pattern>,
    deny_tools: Vec<Pattern>,
    constraints: Vec<Constraint>,
    /// The `deny` default: no server is visible.
    deny_all: bool,
}

struct Constraint {
    name: String,
    tool: Pattern,
    source: String,
    /// None when the condition does not compile (config validation reported it): such a
    /// condition refuses every call, so a bad condition can never open access.
    program: Option<cel::Program>,
}

/// Why a call was refused: the rule and, for conditions, what it required.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallDenied {
    pub rule: String,
    pub reason: String,
}

impl McpPolicy {
    /// Builds the rules from config (conditions compiled here, once per config version).
    pub fn new(rules: &[config::McpPolicy], default: config::Decision) -> Self {
        let rules = rules
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let name = format!("mcp.policies[{i}]");
                let constraints = r
                    .constraints
                    .iter()
                    .enumerate()
                    .map(|(c, con)| Constraint {
                        name: format!("{name}.constraints[{c}]"),
                        tool: Pattern::new(&con.tool),
                        source: con.when.clone(),
                        program: cel::Program::compile(&con.when).ok(),
                    })
                    .collect();
                Arc::new(McpRule {
                    name,
                    selector: Selector::new(&r.selector),
                    servers: r.servers.iter().map(|s| Pattern::new(s)).collect(),
                    tools: r.tools.iter().map(|s| Pattern::new(s)).collect(),
                    deny_tools: r.deny_tools.iter().map(|s| Pattern::new(s)).collect(),
                    constraints,
                    deny_all: false,
                })
            })
            .collect();
        let deny_default = (default == config::Decision::Deny).then(|| {
            Arc::new(McpRule {
                name: "mcp.default".into(),
                selector: Selector::new(&config::Selector::default()),
                servers: Vec::new(),
                tools: Vec::new(),
                deny_tools: Vec::new(),
                constraints: Vec::new(),
                deny_all: true,
            })
        });
        Self { rules, deny_default }
    }

    /// The rule that governs `id`: the first whose selector matches, else the `deny` default;
    /// None when no rule matches and the default allows everything.
    pub fn rule_for(&self, id: &Identity) -> Option<Arc<McpRule>> {
        self.rules.iter().find(|r| r.selector.matches(id)).or(self.deny_default.as_ref()).cloned()
    }
}

/// How a refusal names the caller: the workload, and the principal when there is one.
pub fn who(id: &Identity) -> String {
    match &id.principal {
        Some(p) => format!("workload {} (principal {p})", id.workload),
        None => format!("workload {}", id.workload),
    }
}

impl McpRule {
    pub fn server_visible(&self, server: &str) -> bool {
        !self.deny_all && self.servers.is_empty() || self.servers.iter().any(|p| p.matches(server))
    }

    pub fn tool_visible(&self, server: &str, tool: &str) -> bool {
        if !self.server_visible(server) {
            return false;
        }
        let full = format!("{server}/{tool}");
        (self.tools.is_empty() || self.tools.iter().any(|p| p.matches(&full)))
            && !self.deny_tools.iter().any(|p| p.matches(&full))
    }

    /// Visibility, then every condition that applies to the tool.
    pub fn check_call(
        &self,
        id: &Identity,
        server: &str,
        tool: &str,
        arguments: &Value,
    ) -> Result<(), CallDenied> {
        if !self.tool_visible(server, tool) {
            return Err(CallDenied {
                rule: self.name.clone(),
                reason: format!("tool {server}/{tool} is not allowed for {}", who(id)),
            });
        }
        let full = format!("{server}/{tool}");
        for c in self.constraints.iter().filter(|c| c.tool.matches(&full)) {
            let deny = |why: String| CallDenied { rule: c.name.clone(), reason: why };
            // The same environment and attributes as `policy.rules` (`source`, `mcp`), plus the
            // short names conditions were first written with.
            let mut cx = super::root().new_inner_scope();
            let args = cel::to_value(arguments).map_err(|e| deny(format!("arguments: {e}")))?;
            cx.add_variable_from_value("arguments", args.clone());
            cx.add_variable_from_value("source", super::attrs::source(id));
            cx.add_variable_from_value(
                "mcp",
                cel::Value::Map(cel::objects::Map::from(std::collections::HashMap::from([
                    ("method", cel::Value::from("tools/call")),
                    ("server", cel::Value::from(server)),
                    ("tool", cel::Value::from(tool)),
                    ("arguments", args),
                ]))),
            );
            cx.add_variable_from_value("tool", tool.to_string());
            cx.add_variable_from_value("server", server.to_string());
            cx.add_variable_from_value("identity", id.workload.to_string());
            cx.add_variable_from_value("principal", id.principal.as_deref().unwrap_or("").to_string());
            let Some(program) = &c.program else {
                return Err(deny(format!("condition `{}` does not compile", c.source)));
            };
            match program.execute(&cx) {
                Ok(cel::Value::Bool(true)) => {}
                Ok(cel::Value::Bool(false)) => {
                    return Err(deny(format!("condition `{}` is false", c.source)));
                }
                Ok(other) => {
                    return Err(deny(super::rules::not_boolean(&c.source, &other)));
                }
                Err(e) => return Err(deny(format!("condition `{}` failed: {e}", c.source))),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn policy() -> McpPolicy {
        McpPolicy::new(
            &[config::McpPolicy {
                selector: config::Selector { workloads: vec!["agent".into()], ..Default::default() },
                servers: vec!["files".into(), "git*".into()],
                tools: vec!["files/*".into(), "github/list_repos".into(), "github/get_file".into()],
                deny_tools: vec!["files/delete".into()],
                constraints: vec![
                    config::McpConstraint {
                        tool: "files/read".into(),
                        when: r#"path_within(arguments.path, "/srv/data")"#.into(),
                    },
                    config::McpConstraint {
                        tool: "github/get_file".into(),
                        when: r#"arguments.repo in ["org/app", "org/lib"]"#.into(),
                    },
                ],
            }],
            config::Decision::Deny,
        )
    }

    #[test]
    fn visibility_follows_servers_tools_and_denials() {
        let p = policy();
        let r = p.rule_for(&Identity::named("agent")).unwrap();
        assert!(r.server_visible("files") && r.server_visible("github") && !r.server_visible("db"));
        assert!(r.tool_visible("files", "read"));
        assert!(!r.tool_visible("files", "delete"));
        assert!(!r.tool_visible("github", "delete_repo"));
        let other = p.rule_for(&Identity::named("other")).unwrap();
        assert_eq!(other.name, "mcp.default");
        assert!(!other.server_visible("files") && !other.tool_visible("files", "read"));
        assert!(McpPolicy::new(&[], config::Decision::Allow).rule_for(&Identity::named("other")).is_none());
    }

    #[test]
    fn conditions_decide_on_the_arguments_and_name_the_rule() {
        let p = policy();
        let id = Identity::named("agent");
        let r = p.rule_for(&id).unwrap();
        assert!(r.check_call(&id, "files", "read", &json!({"path": "/srv/data/a.txt"})).is_ok());
        let e = r.check_call(&id, "files", "read", &json!({"path": "/etc/passwd"})).unwrap_err();
        assert_eq!(e.rule, "mcp.policies[0].constraints[0]");
        assert!(r.check_call(&id, "files", "read", &json!({"path": "/srv/data/../x"})).is_err());
        // A missing argument is an evaluation error: denied, never allowed.
        assert!(r.check_call(&id, "files", "read", &json!({})).is_err());
        assert!(r.check_call(&id, "github", "get_file", &json!({"repo": "org/app"})).is_ok());
        assert!(r.check_call(&id, "github", "get_file", &json!({"repo": "evil/app"})).is_err());
        // The shared attribute families work in conditions too.
        let shared = McpPolicy::new(
            &[config::McpPolicy {
                selector: config::Selector::default(),
                constraints: vec![config::McpConstraint {
                    tool: "*".into(),
                    when: r#"mcp.arguments.n < 3 && source.workload == "agent" && mcp.tool == "t""#.into(),
                }],
                ..Default::default()
            }],
            config::Decision::Allow,
        );
        let sr = shared.rule_for(&id).unwrap();
        assert!(sr.check_call(&id, "s", "t", &json!({"n": 2})).is_ok());
        assert!(sr.check_call(&id, "s", "t", &json!({"n": 3})).is_err());
        assert!(sr.check_call(&Identity::named("other"), "s", "t", &json!({"n": 2})).is_err());
        assert_eq!(r.check_call(&id, "files", "delete", &json!({})).unwrap_err().rule, "mcp.policies[0]");
    }
}
