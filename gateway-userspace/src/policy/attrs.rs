//! The attributes rules see: one set across protocols, in families (`source`, `destination`,
//! `request`, `grpc`, `llm`, `mcp`, `a2a`) plus `protocol`. A family is turned into a CEL value
//! only when some rule names it, and at most once per request. A family the request does not
//! have (`mcp` on an HTTP request) is an empty map, so `has(mcp.tool)` is false and `mcp.tool`
//! an evaluation error (which denies). docs/policy.md lists every attribute.
use std::{collections::HashMap, net::SocketAddr};

use cel::Value;
use http::HeaderMap;

use super::guard::Scalar;
use crate::{config::PolicyProtocol, identity::Identity};

/// Attribute families, in the order [`Family::ALL`] lists them (an index into per-request caches).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Protocol,
    Source,
    Destination,
    Request,
    Grpc,
    Llm,
    Mcp,
    A2a,
}

impl Family {
    pub const ALL: [Self; 8] = [
        Self::Protocol,
        Self::Source,
        Self::Destination,
        Self::Request,
        Self::Grpc,
        Self::Llm,
        Self::Mcp,
        Self::A2a,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Protocol => "protocol",
            Self::Source => "source",
            Self::Destination => "destination",
            Self::Request => "request",
            Self::Grpc => "grpc",
            Self::Llm => "llm",
            Self::Mcp => "mcp",
            Self::A2a => "a2a",
        }
    }

    /// The protocol a family belongs to, for the families only one protocol has.
    pub fn protocol(self) -> Option<PolicyProtocol> {
        match self {
            Self::Grpc => Some(PolicyProtocol::Grpc),
            Self::Llm => Some(PolicyProtocol::Llm),
            Self::Mcp => Some(PolicyProtocol::Mcp),
            Self::A2a => Some(PolicyProtocol::A2a),
            _ => None,
        }
    }
}

/// What rules are evaluated over. Implemented by live requests ([`Input`]) and by the JSON
/// documents `nodegate policy test` reads ([`JsonInput`]), so both are judged the same way.
pub trait Attributes {
    fn protocol(&self) -> PolicyProtocol;
    /// The family as a CEL value (an empty map when the request has none of it).
    fn family(&self, f: Family) -> Value;
    /// Who a rate limit counts: the workload, and the principal when there is one.
    fn caller(&self) -> (&str, Option<&str>);
    /// A scalar attribute read natively, for guards (`policy::guard`); None: CEL decides.
    fn scalar(&self, _family: Family, _field: &str) -> Option<Scalar<'_>> {
        None
    }
    /// Whether map attribute `family.field` has `key`, read natively; None: CEL decides.
    fn has_key(&self, _family: Family, _field: &str, _key: &str) -> Option<bool> {
        None
    }
}

/// Where the request goes.
#[derive(Debug, Clone, Copy, Default)]
pub struct Destination<'a> {
    /// The name the client used (Host, `:authority`, absolute URI, SNI), when it used one.
    pub host: Option<&'a str>,
    pub port: u16,
    /// The address the connection was made to (transparent), when known.
    pub address: Option<SocketAddr>,
}

/// The HTTP request line and headers.
#[derive(Debug, Clone, Copy)]
pub struct RequestAttrs<'a> {
    pub method: &'a str,
    /// Path and query as sent.
    pub path: &'a str,
    pub headers: &'a HeaderMap,
}

#[derive(Debug, Clone, Copy)]
pub struct LlmAttrs<'a> {
    /// The provider (or local pool) the call goes to first.
    pub provider: &'a str,
    /// The model the client asked for.
    pub model: &'a str,
    /// The prompt's estimated tokens (the admission estimate).
    pub prompt_tokens: u64,
    /// The output the request allows (`max_tokens` or the gateway's default).
    pub max_tokens: u64,
    pub stream: bool,
}

#[derive(Debug, Clone, Copy)]
pub struct McpAttrs<'a> {
    pub method: &'a str,
    pub server: &'a str,
    /// The tool, prompt or resource named (the server's own name for it).
    pub tool: &'a str,
    pub arguments: &'a serde_json::Value,
}

#[derive(Debug, Clone, Copy)]
pub struct A2aAttrs<'a> {
    pub agent: &'a str,
    /// The 1.0 method name (`SendMessage`, `GetTask`, ...).
    pub method: &'a str,
    pub skill: Option<&'a str>,
    pub task: Option<&'a str>,
}

/// One live request's attributes.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    pub protocol: PolicyProtocol,
    pub source: &'a Identity,
    pub destination: Destination<'a>,
    pub request: Option<RequestAttrs<'a>>,
    /// `(service, method)` of a gRPC call.
    pub grpc: Option<(&'a str, &'a str)>,
    pub llm: Option<LlmAttrs<'a>>,
    pub mcp: Option<McpAttrs<'a>>,
    pub a2a: Option<A2aAttrs<'a>>,
}

impl<'a> Input<'a> {
    pub fn new(protocol: PolicyProtocol, source: &'a Identity) -> Self {
        Self {
            protocol,
            source,
            destination: Destination::default(),
            request: None,
            grpc: None,
            llm: None,
            mcp: None,
            a2a: None,
        }
    }
}

fn text(s: &str) -> Option<Scalar<'_>> {
    Some(Scalar::Str(std::borrow::Cow::Borrowed(s)))
}

fn s(v: &str) -> Value {
    Value::String(std::sync::Arc::new(v.to_string()))
}

fn map(entries: Vec<(&'static str, Value)>) -> Value {
    let m: HashMap<cel::objects::Key, Value> =
        entries.into_iter().map(|(k, v)| (cel::objects::Key::from(k), v)).collect();
    Value::Map(cel::objects::Map::from(m))
}

fn empty() -> Value {
    Value::Map(cel::objects::Map::from(HashMap::<cel::objects::Key, Value>::new()))
}

/// The `source` family of an identity.
pub fn source(id: &Identity) -> Value {
    let pod = id.pod.as_deref();
    let labels: HashMap<cel::objects::Key, Value> = pod
        .map(|p| p.labels.iter().map(|(k, v)| (cel::objects::Key::from(k.to_string()), s(v))).collect())
        .unwrap_or_default();
    let claims = id.claims.as_deref().and_then(|c| cel::to_value(c).ok()).unwrap_or_else(empty);
    let how = serde_json::to_value(id.source).ok();
    map(vec![
        ("workload", s(&id.workload)),
        ("principal", s(id.principal.as_deref().unwrap_or(""))),
        ("cgroup", s(id.cgroup_path.as_deref().unwrap_or(""))),
        ("identified_by", s(how.as_ref().and_then(|v| v.as_str()).unwrap_or(""))),
        ("namespace", s(pod.map_or("", |p| &p.namespace))),
        ("pod", s(pod.map_or("", |p| &p.name))),
        ("service_account", s(pod.map_or("", |p| &p.service_account))),
        ("labels", Value::Map(cel::objects::Map::from(labels))),
        ("container", s(id.container.as_deref().unwrap_or(""))),
        ("claims", claims),
    ])
}

fn headers(h: &HeaderMap) -> Value {
    let mut m: HashMap<cel::objects::Key, Value> = HashMap::with_capacity(h.keys_len());
    for name in h.keys() {
        let joined = h.get_all(name).iter().filter_map(|v| v.to_str().ok()).collect::<Vec<_>>().join(", ");
        m.insert(cel::objects::Key::from(name.as_str().to_string()), s(&joined));
    }
    Value::Map(cel::objects::Map::from(m))
}

impl Attributes for Input<'_> {
    fn protocol(&self) -> PolicyProtocol {
        self.protocol
    }

    fn scalar(&self, family: Family, field: &str) -> Option<Scalar<'_>> {
        let id = self.source;
        let pod = id.pod.as_deref();
        match (family, field) {
            (Family::Source, "workload") => text(&id.workload),
            (Family::Source, "principal") => text(id.principal.as_deref().unwrap_or("")),
            (Family::Source, "namespace") => text(pod.map_or("", |p| &p.namespace)),
            (Family::Source, "service_account") => text(pod.map_or("", |p| &p.service_account)),
            (Family::Destination, "host") | (Family::Request, "host") => {
                text(self.destination.host.unwrap_or(""))
            }
            (Family::Destination, "port") => Some(Scalar::Int(i64::from(self.destination.port))),
            (Family::Request, "method") => text(self.request?.method),
            (Family::Request, "path") => text(self.request?.path),
            (Family::Grpc, "service") => text(self.grpc?.0),
            (Family::Grpc, "method") => text(self.grpc?.1),
            (Family::Llm, "provider") => text(self.llm?.provider),
            (Family::Llm, "model") => text(self.llm?.model),
            (Family::Llm, "stream") => Some(Scalar::Bool(self.llm?.stream)),
            (Family::Mcp, "method") => text(self.mcp?.method),
            (Family::Mcp, "server") => text(self.mcp?.server),
            (Family::Mcp, "tool") => text(self.mcp?.tool),
            (Family::A2a, "agent") => text(self.a2a?.agent),
            (Family::A2a, "method") => text(self.a2a?.method),
            (Family::A2a, "skill") => text(self.a2a?.skill.unwrap_or("")),
            (Family::A2a, "task") => text(self.a2a?.task.unwrap_or("")),
            _ => None,
        }
    }

    fn has_key(&self, family: Family, field: &str, key: &str) -> Option<bool> {
        match (family, field) {
            // The CEL map's keys are lower-case header names.
            (Family::Request, "headers") => {
                let r = self.request?;
                Some(!key.bytes().any(|b| b.is_ascii_uppercase()) && r.headers.contains_key(key))
            }
            (Family::Source, "labels") => {
                Some(self.source.pod.as_deref().is_some_and(|p| p.labels.get(key).is_some()))
            }
            _ => None,
        }
    }

    fn caller(&self) -> (&str, Option<&str>) {
        (&self.source.workload, self.source.principal.as_deref())
    }

    fn family(&self, f: Family) -> Value {
        match f {
            Family::Protocol => s(self.protocol.as_str()),
            Family::Source => source(self.source),
            Family::Destination => {
                let d = &self.destination;
                map(vec![
                    ("host", s(d.host.unwrap_or(""))),
                    ("port", Value::Int(i64::from(d.port))),
                    ("address", s(&d.address.map(|a| a.ip().to_string()).unwrap_or_default())),
                ])
            }
            Family::Request => match &self.request {
                Some(r) => map(vec![
                    ("method", s(r.method)),
                    ("path", s(r.path)),
                    ("host", s(self.destination.host.unwrap_or(""))),
                    ("headers", headers(r.headers)),
                ]),
                None => empty(),
            },
            Family::Grpc => match self.grpc {
                Some((service, method)) => map(vec![("service", s(service)), ("method", s(method))]),
                None => empty(),
            },
            Family::Llm => match &self.llm {
                Some(l) => map(vec![
                    ("provider", s(l.provider)),
                    ("model", s(l.model)),
                    ("prompt_tokens", Value::Int(i64::try_from(l.prompt_tokens).unwrap_or(i64::MAX))),
                    ("max_tokens", Value::Int(i64::try_from(l.max_tokens).unwrap_or(i64::MAX))),
                    ("stream", Value::Bool(l.stream)),
                ]),
                None => empty(),
            },
            Family::Mcp => match &self.mcp {
                Some(m) => map(vec![
                    ("method", s(m.method)),
                    ("server", s(m.server)),
                    ("tool", s(m.tool)),
                    ("arguments", cel::to_value(m.arguments).unwrap_or_else(|_| empty())),
                ]),
                None => empty(),
            },
            Family::A2a => match &self.a2a {
                Some(a) => map(vec![
                    ("agent", s(a.agent)),
                    ("method", s(a.method)),
                    ("skill", s(a.skill.unwrap_or(""))),
                    ("task", s(a.task.unwrap_or(""))),
                ]),
                None => empty(),
            },
        }
    }
}

/// A request described as JSON (`nodegate policy test --input`): `{"protocol": "mcp",
/// "source": {...}, "mcp": {...}}`, families as the live attributes name them. What the document
/// leaves out of `source` is empty, as for a caller nodegate knows nothing about.
pub struct JsonInput {
    protocol: PolicyProtocol,
    families: HashMap<&'static str, Value>,
    workload: String,
    principal: Option<String>,
}

impl JsonInput {
    pub fn parse(doc: &serde_json::Value) -> Result<Self, String> {
        let obj = doc.as_object().ok_or("the input must be a JSON object")?;
        let protocol: PolicyProtocol =
            serde_json::from_value(obj.get("protocol").cloned().ok_or("the input must name its `protocol`")?)
                .map_err(|e| format!("protocol: {e}"))?;
        let known: Vec<&str> = Family::ALL.iter().map(|f| f.name()).collect();
        if let Some(k) = obj.keys().find(|k| !known.contains(&k.as_str())) {
            return Err(format!("unknown attribute family `{k}` (known: {})", known.join(", ")));
        }
        // The source family has every field a live caller's has, empty unless given.
        let mut src = serde_json::Map::new();
        for f in [
            "workload",
            "principal",
            "cgroup",
            "identified_by",
            "namespace",
            "pod",
            "service_account",
            "container",
        ] {
            src.insert(f.into(), serde_json::Value::String(String::new()));
        }
        src.insert("labels".into(), serde_json::json!({}));
        src.insert("claims".into(), serde_json::json!({}));
        if let Some(given) = obj.get("source") {
            let given = given.as_object().ok_or("source must be an object")?;
            src.extend(given.clone());
        }
        let text = |k: &str| src.get(k).and_then(|v| v.as_str()).unwrap_or("").to_string();
        let workload = text("workload");
        let principal = Some(text("principal")).filter(|p| !p.is_empty());
        let mut families = HashMap::new();
        for f in Family::ALL {
            let v = match f {
                Family::Protocol => s(protocol.as_str()),
                Family::Source => cel::to_value(&src).map_err(|e| format!("source: {e}"))?,
                _ => match obj.get(f.name()) {
                    Some(v) => cel::to_value(v).map_err(|e| format!("{}: {e}", f.name()))?,
                    None => empty(),
                },
            };
            families.insert(f.name(), v);
        }
        Ok(Self { protocol, families, workload, principal })
    }
}

impl Attributes for JsonInput {
    fn protocol(&self) -> PolicyProtocol {
        self.protocol
    }

    fn caller(&self) -> (&str, Option<&str>) {
        (&self.workload, self.principal.as_deref())
    }

    fn family(&self, f: Family) -> Value {
        self.families.get(f.name()).cloned().unwrap_or_else(empty)
    }
}
