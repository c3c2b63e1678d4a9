//! Configuration: types, the embedded default, loading (env substitution, YAML, validation) and
//! hot reload. Loading returns every problem found, each with its path in the file.
pub mod a2a;
mod env;
mod inference;
mod jwt;
mod kubernetes;
mod limits;
mod llm;
mod mcp;
mod policy;
pub mod reload;
pub mod resources;
mod secret;
mod tls;
mod traces;
mod types;
mod validate;

use std::{fmt, path::Path, sync::Arc};

pub use a2a::{A2a, A2aAgent, A2aRule};
pub use inference::{
    Endpoint, Engine, Inference, Pool, PoolSource, Saturation, Strategy as PickStrategy, Weights,
};
pub use jwt::Jwt;
pub use kubernetes::{Enroll, Kubernetes};
pub use limits::Limits;
pub use llm::*;
pub use mcp::*;
pub use policy::{
    Policy, PolicyAction, PolicyProtocol, PolicyRule, RateKey, RuleRateLimit, check as policy_check,
};
pub use secret::{REDACTED, Secret};
pub use tls::*;
pub use traces::{OtlpProtocol, Traces};
pub use types::*;
pub use validate::{Problem, Target, parse_target, validate, warnings};

/// The config nodegate runs on when given none: explicit proxy and admin on loopback,
/// interception off. Works on a fresh machine without privileges.
pub const DEFAULT_YAML: &str = include_str!("default.yaml");

/// A config that failed to load, with every problem found.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    pub source_name: String,
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} problem(s)", self.source_name, self.problems.len())?;
        for p in &self.problems {
            write!(f, "\n  {p}")?;
        }
        Ok(())
    }
}

/// Parses and validates config text. `source_name` names it in errors.
pub fn parse(text: &str, source_name: &str) -> Result<Config, ConfigError> {
    let fail = |problems| ConfigError { source_name: source_name.to_string(), problems };
    let text = env::substitute(text, |k| std::env::var(k).ok()).map_err(|errs| {
        fail(errs.into_iter().map(|e| Problem { path: "(env)".into(), message: e.to_string() }).collect())
    })?;
    let cfg: Config = if text.trim().is_empty() {
        Config::default()
    } else {
        let de = serde_yaml_ng::Deserializer::from_str(&text);
        serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner().to_string();
            // the YAML parser already names the path; keep the message after it.
            let message = inner.strip_prefix(&format!("{path}: ")).map_or(inner.clone(), str::to_string);
            fail(vec![Problem { path: if path == "." { "(root)".into() } else { path }, message }])
        })?
    };
    let problems = validate::validate(&cfg);
    if problems.is_empty() { Ok(cfg) } else { Err(fail(problems)) }
}

/// Loads a config file, or the embedded default when `path` is None.
pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
    match path {
        None => parse(DEFAULT_YAML, "embedded default"),
        Some(p) => {
            let name = p.display().to_string();
            let text = std::fs::read_to_string(p).map_err(|e| ConfigError {
                source_name: name.clone(),
                problems: vec![Problem { path: "(file)".into(), message: format!("cannot read: {e}") }],
            })?;
            parse(&text, &name)
        }
    }
}

/// The live config, swapped whole on reload and read without locks.
pub type Shared = Arc<arc_swap::ArcSwap<Config>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_is_valid_and_safe() {
        let cfg = parse(DEFAULT_YAML, "default").unwrap();
        assert!(!cfg.intercept.enabled, "the default must run without privileges");
        assert!(cfg.admin.address.ip().is_loopback());
        assert!(cfg.listeners.explicit.unwrap().ip().is_loopback());
    }

    #[test]
    fn an_open_admin_address_needs_a_token_and_open_defaults_are_warned_about() {
        let e = parse("admin: { address: 0.0.0.0:15000 }\n", "f.yaml").unwrap_err();
        assert_eq!(e.problems[0].path, "admin.address", "{e}");
        assert!(
            parse("admin: { address: 0.0.0.0:15000, token: a-long-admin-token-123 }\n", "f.yaml").is_ok()
        );
        let open = parse(
            "identities: [{ name: a, api_keys: [key-0123456789] }]\nllm: { providers: [{ name: p, kind: openai, endpoint: http://127.0.0.1:1 }] }\n",
            "f.yaml",
        )
        .unwrap();
        let w = warnings(&open);
        assert_eq!(w.iter().map(|p| p.path.as_str()).collect::<Vec<_>>(), ["llm.default"]);
        let mut closed = open.clone();
        closed.llm.default = Decision::Deny;
        assert!(warnings(&closed).is_empty());
        let dump = serde_json::to_string(&open).unwrap();
        assert!(!dump.contains("key-0123456789") && dump.contains(REDACTED), "{dump}");
    }

    #[test]
    fn empty_text_is_the_type_default() {
        assert_eq!(parse("", "x").unwrap(), Config::default());
    }

    #[test]
    fn type_errors_name_the_path() {
        let e = parse("intercept:\n  heartbeat:\n    interval: soon\n", "f.yaml").unwrap_err();
        assert_eq!(e.problems.len(), 1);
        assert_eq!(e.problems[0].path, "intercept.heartbeat.interval");
        let e = parse("intercept:\n  destinatons: []\n", "f.yaml").unwrap_err();
        assert!(e.problems[0].message.contains("unknown field `destinatons`"), "{e}");
    }

    #[test]
    fn every_semantic_error_is_reported_with_its_path() {
        let text = r#"
intercept:
  enabled: true
  cgroups: ["relative"]
  heartbeat: { interval: 2s, timeout: 1s }
  destinations:
    - { address: "10.0.0.1/8", ports: [80] }
    - { address: "ok.example", ports: [] }
    - { address: "1.2.3.4", ports: [0, 80] }
"#;
        let e = parse(text, "f.yaml").unwrap_err();
        let paths: Vec<_> = e.problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "intercept.cgroups[0]",
                "intercept.heartbeat.timeout",
                "intercept.destinations[0].address",
                "intercept.destinations[1].ports",
                "intercept.destinations[2].ports",
            ]
        );
    }
}
