//! TLS for intercepted traffic: reading the SNI (`hello`), terminating with leaves minted from
//! the node CA (`ca`), re-encrypting to verified upstreams (`client`), and the SNI policy for
//! TLS relayed unread (`passthrough`). [`Tls`] is compiled from config once per version and
//! swapped on reload, keeping the CA (and its leaf cache) and the trust roots when their files
//! did not change.
pub mod ca;
pub mod client;
pub mod hello;
pub mod passthrough;
pub mod peer;

use std::{net::SocketAddr, sync::Arc};

use rustls::{RootCertStore, ServerConfig};

use crate::{
    config::{self, Destination, TlsMode},
    intercept::table,
    proxy::upstream::Dialer,
};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("tls.ca: {0}")]
    Ca(#[from] ca::CaError),
    #[error("{0}")]
    Client(#[from] client::ClientError),
}

/// What nodegate does with one destination's TLS.
pub struct DestTls {
    pub mode: TlsMode,
    pub settings: config::DestinationUpstreamTls,
    /// The host name the destination was configured with, if it was one.
    pub host: Option<String>,
    client: Arc<rustls::ClientConfig>,
}

pub struct Tls {
    pub cfg: config::Tls,
    pub ca: Option<Arc<ca::NodeCa>>,
    /// Server side of termination: leaves from `ca`, ALPN h2 and http/1.1.
    pub server: Option<Arc<ServerConfig>>,
    pub passthrough: passthrough::SniPolicy,
    roots: Arc<RootCertStore>,
    dests: Vec<DestTls>,
    /// Some destination originates TLS (so plain connections need their rule looked up).
    pub originates: bool,
    /// Rows of IP and CIDR destinations, for lookups when no eBPF table is kept (iptables mode).
    statics: table::Desired,
    origins: client::Origins,
}

impl Tls {
    /// Compiles `cfg`; `previous` lends its CA and roots when their files are unchanged.
    pub fn build(
        cfg: &config::Config,
        metrics: &crate::telemetry::metrics::Metrics,
        previous: Option<&Tls>,
    ) -> Result<Self, TlsError> {
        let t = &cfg.tls;
        let same =
            |p: &&Tls| p.cfg.ca == t.ca && p.cfg.leaf_ttl == t.leaf_ttl && p.cfg.leaf_cache == t.leaf_cache;
        let ca = match (previous.filter(same), &t.ca) {
            (Some(p), _) => p.ca.clone(),
            (None, None) => None,
            (None, Some(files)) => {
                let minted = metrics.tls_leaves_minted.clone();
                Some(Arc::new(ca::NodeCa::load(&files.cert, &files.key, t.leaf_ttl, t.leaf_cache, minted)?))
            }
        };
        let client_auth = match &t.client_certs {
            Some(c) => Some(peer::verifier(&c.ca_files, c.required)?),
            None => None,
        };
        let server = ca.as_ref().map(|ca| {
            let mut s =
                ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                    .with_safe_default_protocol_versions()
                    .map(|b| match &client_auth {
                        Some(v) => b.with_client_cert_verifier(v.clone()).with_cert_resolver(ca.clone()),
                        None => b.with_no_client_auth().with_cert_resolver(ca.clone()),
                    });
            if let Ok(s) = s.as_mut() {
                s.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
            }
            s.map(Arc::new)
        });
        let server = match server {
            Some(Ok(s)) => Some(s),
            Some(Err(e)) => return Err(TlsError::Ca(ca::CaError::Mint(e.to_string()))),
            None => None,
        };
        let roots = match previous.filter(|p| p.cfg.upstream == t.upstream) {
            Some(p) => p.roots.clone(),
            None => client::roots(&t.upstream.ca_files)?,
        };
        let dests = cfg
            .intercept
            .destinations
            .iter()
            .map(|d| {
                Ok(DestTls {
                    mode: d.tls,
                    settings: d.upstream_tls.clone(),
                    host: host_of(d),
                    client: client::config(&roots, &d.upstream_tls)?,
                })
            })
            .collect::<Result<Vec<_>, TlsError>>()?;
        let originates = dests.iter().any(|d| d.mode == TlsMode::Originate);
        Ok(Self {
            originates,
            cfg: t.clone(),
            ca,
            server,
            passthrough: passthrough::SniPolicy::new(&t.passthrough),
            roots,
            dests,
            statics: table::static_entries(&cfg.intercept.destinations).0,
            origins: client::Origins::new(1024),
        })
    }

    /// The roots upstream certificates are verified with (system's plus `tls.upstream.ca_files`).
    pub fn roots(&self) -> Arc<RootCertStore> {
        self.roots.clone()
    }

    /// The destination rule a connection to `dst` matched: the eBPF table's answer when there
    /// is one (it knows host names' addresses), else the static rows.
    pub fn destination(&self, rule: Option<usize>, dst: SocketAddr) -> Option<(usize, &DestTls)> {
        let i = rule.or_else(|| table::lookup(&self.statics, dst))?;
        self.dests.get(i).map(|d| (i, d))
    }

    /// The pinned upstream for a connection of destination `rule` to `addr`, named `name`.
    pub fn origin(
        &self,
        dialer: &Dialer,
        rule: usize,
        addr: SocketAddr,
        name: &str,
    ) -> Result<Arc<client::Origin>, TlsError> {
        let d = self.dests.get(rule).ok_or_else(|| client::ClientError::Name(name.to_string()))?;
        Ok(self.origins.get(dialer, &d.client, d.settings.verify, addr, name, rule)?)
    }
}

fn host_of(d: &Destination) -> Option<String> {
    match config::parse_target(&d.address) {
        Ok(config::Target::Host(h)) => Some(h),
        _ => None,
    }
}
