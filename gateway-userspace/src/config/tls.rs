//! TLS settings: the node CA that terminated connections are re-signed with, how nodegate
//! verifies the upstreams it re-encrypts to, and which SNIs passthrough connections may name.
//! Per-destination choices (`tls`, `upstream_tls`) sit on `intercept.destinations[]`.
use std::{path::PathBuf, time::Duration};

use serde::{Deserialize, Serialize};

use super::types::{Decision, Selector};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Tls {
    /// The node CA leaf certificates are minted from for `tls: terminate` destinations
    /// (`nodegate ca init` creates one; in Kubernetes, a Secret mounted as files). Clients of
    /// terminated destinations must trust its certificate.
    pub ca: Option<CaFiles>,
    /// Lifetime of a minted leaf certificate; it is minted again before it runs out.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub leaf_ttl: Duration,
    /// Leaf certificates kept (one per server name); past this the oldest is dropped.
    pub leaf_cache: usize,
    /// Time a client has to complete its TLS handshake with nodegate.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub handshake_timeout: Duration,
    pub upstream: UpstreamRoots,
    pub passthrough: Passthrough,
    /// Client certificates on terminated TLS, as credentials: a verified certificate names a
    /// principal (its first URI SAN, such as a SPIFFE ID, else its subject CN). Off unless set.
    pub client_certs: Option<ClientCerts>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClientCerts {
    /// PEM files of the CAs client certificates must chain to (only these; not the system's).
    pub ca_files: Vec<PathBuf>,
    /// Refuse the handshake of a client that presents no certificate. Default: such a client is
    /// served and meets the defaults, as a caller with no credential does.
    #[serde(default)]
    pub required: bool,
}

impl Default for Tls {
    fn default() -> Self {
        Self {
            ca: None,
            leaf_ttl: Duration::from_secs(24 * 3600),
            leaf_cache: 1024,
            handshake_timeout: Duration::from_secs(10),
            upstream: UpstreamRoots::default(),
            passthrough: Passthrough::default(),
            client_certs: None,
        }
    }
}

/// A certificate and its private key, PEM files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CaFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// What upstream certificates are checked against when nodegate opens TLS itself.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamRoots {
    /// PEM files of extra CAs trusted beside the system's roots (the bundled Mozilla roots when
    /// the system has none).
    pub ca_files: Vec<PathBuf>,
}

/// Policy for TLS that nodegate relays without reading (`tls: passthrough`), by SNI.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Passthrough {
    /// Rules in order; the first whose selector and `sni` both match decides.
    pub rules: Vec<SniRule>,
    /// What a connection no rule matches meets (rule name `tls.passthrough.default`).
    pub default: Decision,
    /// What a ClientHello without a server name (or one that cannot be parsed) meets; unset:
    /// the same as `default`. Rule name `tls.passthrough.no_sni`.
    pub no_sni: Option<Decision>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SniRule {
    #[serde(default)]
    pub selector: Selector,
    /// Server names: exact (`api.openai.com`), `*.example.com` (any name below it) or `*`.
    pub sni: Vec<String>,
    pub decision: Decision,
}

/// What nodegate does with TLS arriving for a destination.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// Relay the encrypted bytes; allow or deny by SNI (`tls.passthrough`).
    #[default]
    Passthrough,
    /// Complete the handshake with a leaf minted from the node CA for the client's SNI, handle
    /// the requests inside like plain traffic, and re-encrypt to the destination (verified).
    Terminate,
    /// The client speaks plain HTTP; nodegate opens TLS to the destination (`upstream_tls.port`,
    /// `upstream_tls.server_name`). For clients that cannot be given the node CA.
    Originate,
}

/// How nodegate opens TLS toward a destination (terminate and originate).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct DestinationUpstreamTls {
    /// Check the upstream's certificate chain and name. Turning this off sends agents' requests
    /// (and injected provider keys: nodegate then injects none) to whoever answers.
    pub verify: bool,
    /// Name sent as SNI and verified (originate). Default: the destination's host name.
    pub server_name: Option<String>,
    /// Port nodegate connects to (originate). Default: 443.
    pub port: Option<u16>,
    /// A client certificate for upstreams that require mutual TLS.
    pub client_cert: Option<CaFiles>,
}

impl Default for DestinationUpstreamTls {
    fn default() -> Self {
        Self { verify: true, server_name: None, port: None, client_cert: None }
    }
}
