//! The gateway's own Kubernetes resources (group `nodegate.io`, version `v1alpha1`, cluster
//! scoped): each kind is one list of the YAML config, its `spec` the same Rust type as one list
//! item, so the CRDs, the config's JSON schema and the reference docs all come from these types
//! (`cargo xtask codegen`). A resource is merged into the file config as one more item, named by
//! its `metadata.name`, and checked with the same validation as `nodegate check`.
use schemars::{Schema, SchemaGenerator, generate::SchemaSettings};
use serde_json::{Map, Value, json};

use super::{Config, validate::Problem};

pub const GROUP: &str = "nodegate.io";
pub const VERSION: &str = "v1alpha1";

/// One resource kind and the config list it extends.
pub struct Kind {
    pub kind: &'static str,
    pub plural: &'static str,
    pub short: &'static str,
    /// The config list, as validation paths name it (`llm.providers`).
    pub list: &'static str,
    /// Whether the item has a `name` (taken from the resource's name).
    pub named: bool,
    schema: fn(&mut SchemaGenerator) -> Schema,
    merge: fn(&mut Config, Value) -> Result<(), Problem>,
    count: fn(&Config) -> usize,
}

fn item<T: serde::de::DeserializeOwned>(v: Value) -> Result<T, Problem> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { "spec".to_string() } else { format!("spec.{path}") };
        Problem { path, message: e.into_inner().to_string() }
    })
}

macro_rules! kind {
    ($kind:literal, $plural:literal, $short:literal, $list:literal, $named:literal, $ty:ty, $($field:ident).+) => {
        Kind {
            kind: $kind,
            plural: $plural,
            short: $short,
            list: $list,
            named: $named,
            schema: |g| g.subschema_for::<$ty>(),
            merge: |cfg, v| {
                cfg.$($field).+.push(item::<$ty>(v)?);
                Ok(())
            },
            count: |cfg| cfg.$($field).+.len(),
        }
    };
}

/// Every kind, in the order resources are merged (providers before the routes that name them).
pub static KINDS: &[Kind] = &[
    kind!(
        "LLMProvider",
        "llmproviders",
        "ngprov",
        "llm.providers",
        true,
        super::llm::Provider,
        llm.providers
    ),
    kind!("ModelRoute", "modelroutes", "ngroute", "llm.models", true, super::llm::ModelRoute, llm.models),
    kind!("ModelAccess", "modelaccesses", "ngaccess", "llm.allow", false, super::llm::AllowRule, llm.allow),
    kind!("LLMBudget", "llmbudgets", "ngbudget", "llm.budgets", true, super::llm::Budget, llm.budgets),
    kind!(
        "ModelServerPool",
        "modelserverpools",
        "ngpool",
        "inference.pools",
        true,
        super::inference::Pool,
        inference.pools
    ),
    kind!("MCPServer", "mcpservers", "ngmcp", "mcp.servers", true, super::mcp::McpServer, mcp.servers),
    kind!("MCPPolicy", "mcppolicies", "ngmcppol", "mcp.policies", false, super::mcp::McpPolicy, mcp.policies),
    kind!("A2AAgent", "a2aagents", "nga2a", "a2a.agents", true, super::a2a::A2aAgent, a2a.agents),
    kind!("A2AAccess", "a2aaccesses", "nga2aacc", "a2a.allow", false, super::a2a::A2aRule, a2a.allow),
];

impl Kind {
    /// Merges a resource's `spec` into `cfg` as one more item of this kind's list. The problem
    /// names the field as `spec.<path>`.
    pub fn merge(&self, cfg: &mut Config, name: &str, spec: Option<&Value>) -> Result<(), Problem> {
        let mut spec = match spec {
            Some(Value::Object(m)) => m.clone(),
            None => Map::new(),
            Some(_) => return Err(Problem { path: "spec".into(), message: "must be an object".into() }),
        };
        if self.named {
            if spec.get("name").is_some_and(|n| n.as_str() != Some(name)) {
                return Err(Problem {
                    path: "spec.name".into(),
                    message: "leave it out: the resource's metadata.name is the name".into(),
                });
            }
            spec.insert("name".into(), Value::String(name.to_string()));
        }
        (self.merge)(cfg, Value::Object(spec))
    }

    /// The problems of `problems` that concern item `index` of this kind's list, with their
    /// paths rewritten to the resource's `spec`.
    pub fn own_problems(&self, problems: &[Problem], index: usize) -> Vec<Problem> {
        let prefix = format!("{}[{index}]", self.list);
        problems
            .iter()
            .filter_map(|p| {
                let rest = p.path.strip_prefix(&prefix)?;
                let rest = rest.strip_prefix('.').unwrap_or(rest);
                let path = if rest.is_empty() { "spec".into() } else { format!("spec.{rest}") };
                Some(Problem { path: path.replace("spec.name", "metadata.name"), message: p.message.clone() })
            })
            .collect()
    }

    /// How many items this kind's list holds in `cfg`.
    pub fn len(&self, cfg: &Config) -> usize {
        (self.count)(cfg)
    }

    /// The CustomResourceDefinition, its schema generated from the item's Rust type.
    pub fn crd(&self) -> Value {
        let mut g = SchemaSettings::openapi3()
            .with(|s| {
                s.inline_subschemas = true;
                s.meta_schema = None;
            })
            .into_generator();
        let mut spec = (self.schema)(&mut g).to_value();
        structural(&mut spec);
        if self.named
            && let Some(o) = spec.as_object_mut()
        {
            o.get_mut("properties").and_then(Value::as_object_mut).map(|p| p.remove("name"));
            if let Some(r) = o.get_mut("required").and_then(Value::as_array_mut) {
                r.retain(|n| n != "name");
                if r.is_empty() {
                    o.remove("required");
                }
            }
        }
        let singular = self.kind.to_lowercase();
        json!({
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": format!("{}.{GROUP}", self.plural)},
            "spec": {
                "group": GROUP,
                "scope": "Cluster",
                "names": {"kind": self.kind, "listKind": format!("{}List", self.kind), "plural": self.plural,
                          "singular": singular, "shortNames": [self.short], "categories": ["nodegate"]},
                "versions": [{
                    "name": VERSION,
                    "served": true,
                    "storage": true,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        {"name": "Accepted", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Accepted\")].status"},
                        {"name": "Reason", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Accepted\")].reason"},
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}
                    ],
                    "schema": {"openAPIV3Schema": {
                        "type": "object",
                        "description": format!("One item of `{}` in nodegate's configuration, named by metadata.name. nodegate validates it as `nodegate check` does and says in status.conditions (type Accepted) what it made of it.", self.list),
                        "properties": {
                            "spec": spec,
                            "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}
                        },
                        "required": ["spec"]
                    }}
                }]
            }
        })
    }
}

/// Rewrites a generated schema into the structural form Kubernetes requires: no `$ref`, no
/// type arrays (`nullable` instead), no `additionalProperties: false` beside `properties`, no
/// defaults (nodegate applies its own), and shapes it cannot express structurally (untagged
/// unions) left open with `x-kubernetes-preserve-unknown-fields` for nodegate to check.
pub fn structural(v: &mut Value) {
    let Some(o) = v.as_object_mut() else { return };
    for k in ["$schema", "default", "examples", "const", "$defs", "definitions", "title"] {
        o.remove(k);
    }
    if let Some(Value::Array(types)) = o.get("type").cloned() {
        let real: Vec<Value> = types.iter().filter(|t| *t != "null").cloned().collect();
        if real.len() < types.len() {
            o.insert("nullable".into(), Value::Bool(true));
        }
        match real.as_slice() {
            [one] => {
                o.insert("type".into(), one.clone());
            }
            _ => {
                o.remove("type");
                o.insert("x-kubernetes-preserve-unknown-fields".into(), Value::Bool(true));
            }
        }
    }
    for key in ["oneOf", "anyOf"] {
        if let Some(Value::Array(alts)) = o.remove(key) {
            let non_null: Vec<Value> = alts
                .into_iter()
                .filter(|a| a.get("nullable").is_none() && a.get("type") != Some(&json!("null")))
                .collect();
            let all_strings = non_null.iter().all(|a| a.get("type") == Some(&json!("string")));
            if all_strings && !non_null.is_empty() {
                // Unit enum variants with their own doc comments.
                let values: Vec<Value> = non_null
                    .iter()
                    .filter_map(|a| a.get("enum").or(a.get("const")).cloned())
                    .flat_map(|e| match e {
                        Value::Array(v) => v,
                        one => vec![one],
                    })
                    .collect();
                o.insert("type".into(), json!("string"));
                if !values.is_empty() {
                    o.insert("enum".into(), Value::Array(values));
                }
            } else if let [only] = non_null.as_slice() {
                for (k, val) in only.as_object().cloned().unwrap_or_default() {
                    o.entry(k).or_insert(val);
                }
                o.insert("nullable".into(), Value::Bool(true));
            } else {
                o.insert("x-kubernetes-preserve-unknown-fields".into(), Value::Bool(true));
                if non_null.iter().all(|a| a.get("type") == Some(&json!("object"))) {
                    o.insert("type".into(), json!("object"));
                }
            }
        }
    }
    if o.get("allOf").and_then(Value::as_array).is_some_and(|a| a.len() == 1)
        && let Some(Value::Array(mut one)) = o.remove("allOf")
        && let Some(Value::Object(inner)) = one.pop()
    {
        for (k, val) in inner {
            o.entry(k).or_insert(val);
        }
    }
    if o.contains_key("properties") && o.get("additionalProperties") == Some(&Value::Bool(false)) {
        o.remove("additionalProperties");
    }
    if o.get("additionalProperties") == Some(&Value::Bool(true)) {
        o.remove("additionalProperties");
        o.insert("x-kubernetes-preserve-unknown-fields".into(), Value::Bool(true));
    }
    if o.get("nullable") == Some(&Value::Bool(false)) {
        o.remove("nullable");
    }
    if o.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true)) {
        o.remove("properties");
        o.remove("required");
        o.remove("additionalProperties");
        o.remove("enum");
        o.remove("format");
    }
    for (_, child) in o.iter_mut() {
        match child {
            Value::Object(_) => structural(child),
            Value::Array(items) => items.iter_mut().for_each(structural),
            _ => {}
        }
    }
    if let Some(Value::Object(props)) = o.get_mut("properties") {
        for (_, p) in props.iter_mut() {
            structural(p);
        }
    }
}

/// The JSON schema of the whole YAML config file.
pub fn config_schema() -> Value {
    let mut s = schemars::schema_for!(Config).to_value();
    if let Some(o) = s.as_object_mut() {
        o.insert("title".into(), json!("nodegate configuration"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_merge_as_list_items_and_problems_name_their_fields() {
        let mut cfg = Config::default();
        let k = &KINDS[0];
        k.merge(
            &mut cfg,
            "sim",
            Some(&json!({"kind": "openai-compatible", "endpoint": "http://127.0.0.1:1"})),
        )
        .unwrap();
        assert_eq!(cfg.llm.providers[0].name, "sim");
        let e = k.merge(&mut cfg, "bad", Some(&json!({"kind": "nope", "endpoint": "x"}))).unwrap_err();
        assert_eq!(e.path, "spec.kind", "{e}");
        let e = k
            .merge(&mut cfg, "bad", Some(&json!({"name": "other", "kind": "openai", "endpoint": "x"})))
            .unwrap_err();
        assert_eq!(e.path, "spec.name");
        k.merge(&mut cfg, "bad-url", Some(&json!({"kind": "openai", "endpoint": "not a url"}))).unwrap();
        let problems = super::super::validate::validate(&cfg);
        let own = k.own_problems(&problems, 1);
        assert_eq!(own.len(), 1, "{problems:?}");
        assert_eq!(own[0].path, "spec.endpoint");
    }

    #[test]
    fn crds_are_structural() {
        fn walk(v: &Value, at: &str) {
            let Some(o) = v.as_object() else { panic!("{at}: not a schema: {v}") };
            assert!(
                !o.contains_key("$ref") && !o.contains_key("oneOf") && !o.contains_key("anyOf"),
                "{at}: {v}"
            );
            assert!(!o.get("type").is_some_and(Value::is_array), "{at}: type array");
            assert!(
                !(o.contains_key("properties") && o.contains_key("additionalProperties")),
                "{at}: properties with additionalProperties"
            );
            let open = o.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
            assert!(open || o.contains_key("type"), "{at}: no type: {v}");
            for (name, p) in o.get("properties").and_then(Value::as_object).into_iter().flatten() {
                walk(p, &format!("{at}.{name}"));
            }
            if let Some(i) = o.get("items") {
                walk(i, &format!("{at}[]"));
            }
            if let Some(a) = o.get("additionalProperties").filter(|a| a.is_object()) {
                walk(a, &format!("{at}{{}}"));
            }
        }
        for k in KINDS {
            let crd = k.crd();
            walk(&crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"], k.kind);
        }
    }
}
