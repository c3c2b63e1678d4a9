//! The configuration types: the one source of truth for what nodegate can be told.
//!
//! Every field has a default, so an empty file is a valid config. Unknown fields are errors (a
//! typo must not silently fall back to a default). Validation beyond types lives in `validate`.
use std::{net::SocketAddr, path::PathBuf, time::Duration};

use serde::{Deserialize, Serialize};

use super::secret::Secret;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub listeners: Listeners,
    pub admin: Admin,
    pub log: Log,
    pub audit: Audit,
    /// OpenTelemetry traces over OTLP (off unless `traces.endpoint` is set).
    pub traces: super::traces::Traces,
    pub timeouts: Timeouts,
    pub limits: super::limits::Limits,
    /// Workload names for cgroups, used when no Kubernetes metadata is available.
    pub identities: Vec<IdentityMapping>,
    /// JSON Web Tokens as credentials beside API keys (off unless set).
    pub jwt: Option<super::jwt::Jwt>,
    pub intercept: Intercept,
    pub llm: super::llm::Llm,
    pub inference: super::inference::Inference,
    pub mcp: super::mcp::Mcp,
    pub a2a: super::a2a::A2a,
    /// Named, ordered CEL rules for every protocol (docs/policy.md).
    pub policy: super::policy::Policy,
    /// Where explicit-listener callers may go (absolute-form requests and CONNECT).
    pub egress: Egress,
    pub tls: super::tls::Tls,
    pub kubernetes: super::kubernetes::Kubernetes,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Listeners {
    /// Explicit HTTP proxy (absolute-form requests and CONNECT). Agents address it directly.
    pub explicit: Option<SocketAddr>,
    /// Transparent listener: connections redirected by eBPF or iptables arrive here.
    pub transparent: Option<SocketAddr>,
    /// Bind every listener (admin included) with SO_REUSEPORT, so a new nodegate can bind while
    /// the old one drains: an upgrade without a moment where connections are refused (with
    /// `net.ipv4.tcp_migrate_req=1`, not even those queued on the old listener). Any process of
    /// the same user can then join the listeners: enable it only where nodegate runs as its own
    /// user or root (the Helm chart does).
    pub reuse_port: bool,
}

impl Default for Listeners {
    fn default() -> Self {
        Self {
            explicit: Some(SocketAddr::from(([127, 0, 0, 1], 15080))),
            transparent: Some(SocketAddr::from(([127, 0, 0, 1], 15001))),
            reuse_port: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Admin {
    /// Health, readiness, metrics and config dump. Keep it on loopback: a non-loopback address
    /// is refused unless `token` is set.
    pub address: SocketAddr,
    /// Bearer token every admin endpoint but `/healthz` and `/readyz` requires when set
    /// (`Authorization: Bearer TOKEN`). Required for a non-loopback `address`.
    pub token: Option<Secret>,
}

impl Default for Admin {
    fn default() -> Self {
        Self { address: SocketAddr::from(([127, 0, 0, 1], 15000)), token: None }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Log {
    /// A tracing filter: `info`, `debug`, `nodegate=debug,hyper=info`. RUST_LOG overrides it.
    pub level: String,
    pub format: LogFormat,
}

impl Default for Log {
    fn default() -> Self {
        Self { level: "info".into(), format: LogFormat::Text }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Audit {
    /// File to append JSON lines to; `-` is standard output; empty disables auditing.
    pub path: String,
    /// Rotate when the file grows past this many bytes (0: never).
    pub max_bytes: u64,
    /// Rotated files kept beside the live one (`audit.log.1` is the newest).
    pub keep: u32,
    /// Longest time a record waits in the buffer before it is written out.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub flush_interval: Duration,
    /// Records queued between the proxy and the writer; past this, records are dropped and
    /// counted in `nodegate_audit_dropped_total` rather than slowing traffic.
    pub queue: usize,
}

impl Default for Audit {
    fn default() -> Self {
        Self {
            path: "-".into(),
            max_bytes: 100 * 1024 * 1024,
            keep: 3,
            flush_interval: Duration::from_secs(1),
            queue: 65_536,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Timeouts {
    /// How long to wait for a client's first bytes before treating the connection as opaque TCP
    /// (server-speaks-first protocols).
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub sniff: Duration,
    /// Upstream connect timeout.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub connect: Duration,
    /// Time to receive a request's headers on an HTTP connection.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub header_read: Duration,
    /// A spliced TCP connection (or an upgraded one, such as a WebSocket) with no bytes either
    /// way for this long is closed.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub idle: Duration,
    /// Time for an upstream to send a forwarded HTTP request's response headers; past it the
    /// client gets `504`. (The LLM, MCP and A2A gateways have their own, in their sections.)
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub response: Duration,
    /// A forwarded HTTP body (request or response, streams included) that moves no byte for
    /// this long is ended with an error; an event stream that must stay quiet longer sends
    /// comments to keep alive.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub body_idle: Duration,
    /// Grace period for in-flight connections on shutdown.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub drain: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            sniff: Duration::from_millis(1000),
            connect: Duration::from_secs(5),
            header_read: Duration::from_secs(30),
            idle: Duration::from_secs(3600),
            response: Duration::from_secs(120),
            body_idle: Duration::from_secs(300),
            drain: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IdentityMapping {
    /// Workload name reported in audit records and metrics.
    pub name: String,
    /// Cgroup path relative to the cgroup2 mount (`/kubepods/pod123`); it and every cgroup
    /// below it map to `name`. The longest matching path wins.
    #[serde(default)]
    pub cgroup: Option<String>,
    /// Keys a caller presents (`Authorization: Bearer KEY`, `x-api-key: KEY` or
    /// `Proxy-Authorization: Bearer KEY`) to add the principal `name` beside the workload the
    /// kernel names; a key never replaces that workload. With `cgroup` set too, a key counts
    /// only from that cgroup. Use `${ENV}` rather than literal keys. Held as SHA-256 digests in
    /// memory, removed before anything goes upstream, redacted everywhere.
    #[serde(default)]
    pub api_keys: Vec<Secret>,
}

/// Which callers a rule applies to: every listed field must match (an empty field matches
/// all). One type for budgets, model allow lists, MCP tool lists and, later, A2A rules.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Selector {
    /// Workload names as the kernel names the caller (its cgroup's mapping, or the cgroup path;
    /// `unknown` when nothing is known); `*` matches any, a trailing `*` a prefix.
    pub workloads: Vec<String>,
    /// Cgroup path prefixes.
    pub cgroups: Vec<String>,
    /// Principals proven by a credential (an `identities[].api_keys` entry's `name`); a
    /// caller without a valid credential matches no non-empty list.
    pub principals: Vec<String>,
    /// Kubernetes: the caller pod's namespace (patterns as for `workloads`). A caller that is
    /// not a known pod matches no non-empty pod field.
    pub namespaces: Vec<String>,
    /// Kubernetes: the caller pod's service account name.
    pub service_accounts: Vec<String>,
    /// Kubernetes: labels the caller pod must carry, every one (`*` as a value: any value).
    pub labels: std::collections::BTreeMap<String, String>,
    /// Kubernetes: the container name within the pod.
    pub containers: Vec<String>,
    /// How the caller was named: `pod` (a known pod on this node), `unknown_pod` (a kubelet pod
    /// cgroup no watched pod owns), `config` (an `identities` mapping), `cgroup` (a cgroup path,
    /// no mapping), `unknown` (nothing known).
    pub sources: Vec<crate::identity::Source>,
}

/// What a protocol's policy decides for a caller no rule matches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    /// Unmatched callers may do anything (the historical behaviour; `nodegate check` warns
    /// when identities are configured and this is left open).
    #[default]
    Allow,
    /// Unmatched callers are refused, naming the rule `<protocol>.default`.
    Deny,
}

/// Where explicit-listener callers may go. nodegate's own listeners are never reachable, by any
/// name, whatever this says.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Egress {
    /// Destinations explicit callers may reach through absolute-form requests and CONNECT:
    /// an IP, a CIDR, a host name or `*.suffix`, with ports (`[]` or `[0]`: any). Empty: any
    /// destination.
    pub allow: Vec<EgressRule>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EgressRule {
    pub address: String,
    #[serde(default)]
    pub ports: Vec<u16>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum FailMode {
    /// Proxy dead or hung: intercepted connections go directly to their destination.
    #[default]
    Open,
    /// Proxy dead or hung: intercepted connections are refused (EPERM on connect).
    Closed,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum InterceptMode {
    /// cgroup/connect4, connect6 and sock_ops programs redirect enrolled cgroups' connections.
    #[default]
    Ebpf,
    /// The node's own iptables rules redirect (nat REDIRECT/DNAT to the transparent listener) and
    /// the proxy reads SO_ORIGINAL_DST; for nodes without cgroup eBPF. nodegate loads nothing and
    /// only marks its upstream sockets with `proxy_mark` so the rules can exclude them.
    Iptables,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Class {
    /// Decide from the bytes.
    #[default]
    Auto,
    Http,
    Llm,
    Mcp,
    A2a,
    /// Opaque TCP: never parsed, always spliced.
    Tcp,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Destination {
    /// An IP address (`169.254.88.10`), a CIDR (`10.96.0.0/12`) or a host name
    /// (`api.openai.com`, resolved and re-resolved when its DNS TTL runs out). Empty when
    /// `service` names the destination.
    #[serde(default)]
    pub address: String,
    /// Kubernetes: a Service, `name.namespace`, intercepted at its ClusterIPs as the API server
    /// says (needs `kubernetes.enabled`; instead of `address`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// Ports to intercept on that address; `0` means every port. For a `service`, empty means
    /// the Service's own TCP ports.
    #[serde(default)]
    pub ports: Vec<u16>,
    #[serde(default)]
    pub class: Class,
    /// TLS arriving for this destination: `passthrough` (default), `terminate` or `originate`.
    #[serde(default)]
    pub tls: super::tls::TlsMode,
    /// How nodegate opens TLS to this destination (terminate, originate).
    #[serde(default)]
    pub upstream_tls: super::tls::DestinationUpstreamTls,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Heartbeat {
    /// How often the proxy writes its heartbeat into the kernel.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub interval: Duration,
    /// A heartbeat older than this means the proxy is gone: fail open (or closed).
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub timeout: Duration,
}

impl Default for Heartbeat {
    fn default() -> Self {
        Self { interval: Duration::from_millis(500), timeout: Duration::from_secs(3) }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Dns {
    /// Re-resolve no sooner than this, whatever the record's TTL.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub min_ttl: Duration,
    /// Re-resolve at least this often.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub max_ttl: Duration,
    /// DNS servers (`ip:port`) to resolve host-name destinations with instead of the node's
    /// `/etc/resolv.conf`: in a cluster, the DNS Service pods use (for example
    /// `10.96.0.10:53`), so a name means what it means to the pod.
    pub servers: Vec<SocketAddr>,
    /// Search domains appended to a name with fewer than `ndots` dots, as a pod's resolv.conf
    /// does (`svc.cluster.local`, `cluster.local`); with `servers` only.
    pub search: Vec<String>,
    pub ndots: usize,
}

impl Default for Dns {
    fn default() -> Self {
        Self {
            min_ttl: Duration::from_secs(5),
            max_ttl: Duration::from_secs(300),
            servers: Vec::new(),
            search: Vec::new(),
            ndots: 5,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Intercept {
    /// Load the eBPF programs and redirect enrolled cgroups' traffic. Needs root (CAP_BPF,
    /// CAP_NET_ADMIN, CAP_SYS_ADMIN).
    pub enabled: bool,
    pub mode: InterceptMode,
    /// Mount point of the cgroup2 hierarchy; detected from /proc/self/mountinfo when unset.
    pub cgroup_root: Option<PathBuf>,
    /// Cgroups (paths under the cgroup2 mount) whose processes are intercepted, with everything
    /// below them.
    pub cgroups: Vec<String>,
    /// Address the programs rewrite intercepted IPv4 connections to. Defaults to the transparent
    /// listener; in Kubernetes a node-local address the pods can reach.
    pub redirect_to: Option<SocketAddr>,
    /// Address for intercepted IPv6 connections (port must match `redirect_to`). Unset: IPv6
    /// destinations are matched but left alone.
    pub redirect_to_v6: Option<std::net::Ipv6Addr>,
    pub destinations: Vec<Destination>,
    pub fail: FailMode,
    pub heartbeat: Heartbeat,
    /// bpffs directory where maps and links are pinned so a restarted proxy takes over.
    pub pin_path: PathBuf,
    /// Leave programs attached and maps pinned on a clean shutdown (upgrades: the next proxy
    /// picks them up; the heartbeat decides meanwhile).
    pub keep_pinned: bool,
    /// SO_MARK set on the proxy's own upstream sockets so they are never redirected.
    pub proxy_mark: u32,
    pub dns: Dns,
}

impl Default for Intercept {
    fn default() -> Self {
        Self {
            enabled: false,
            mode: InterceptMode::Ebpf,
            cgroup_root: None,
            cgroups: Vec::new(),
            redirect_to: None,
            redirect_to_v6: None,
            destinations: Vec::new(),
            fail: FailMode::Open,
            heartbeat: Heartbeat::default(),
            pin_path: PathBuf::from("/sys/fs/bpf/nodegate"),
            keep_pinned: false,
            proxy_mark: 0x4e47_0001,
            dns: Dns::default(),
        }
    }
}
