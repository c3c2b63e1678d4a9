//! Which provider (and provider model) a request goes to: a configured model route (aliases,
//! ordered or weighted failover), else the provider that was addressed (transparent mode), else
//! the intercepted destination itself as an OpenAI-compatible server.
use std::{net::SocketAddr, sync::Arc, time::Instant};

use super::{Llm, providers::ProviderState};
use crate::config::{Provider, ProviderKind, Strategy};

#[derive(Clone)]
pub struct Candidate {
    pub provider: Arc<ProviderState>,
    /// Model name sent to the provider.
    pub model: String,
    /// The inference-pool endpoint this candidate is, if it is one.
    pub endpoint: Option<Arc<crate::inference::endpoint::EndpointState>>,
    /// The intercepted destination itself over TLS nodegate opened (terminated or originated
    /// connections): the request goes there, pinned, rather than to the provider's URL.
    pub origin: Option<Arc<crate::tls::client::Origin>>,
}

/// How the request reached us.
#[derive(Debug, Clone)]
pub enum Via {
    Explicit,
    /// Intercepted on its way to `dst`.
    Transparent {
        dst: SocketAddr,
        /// Set when nodegate terminated the client's TLS (or originates TLS upstream).
        origin: Option<Arc<crate::tls::client::Origin>>,
    },
}

impl Llm {
    /// Candidates in the order to try them; empty when the model is unknown.
    pub fn candidates(&self, model: &str, via: &Via) -> Vec<Candidate> {
        if let Some(route) = self.routes.get(model) {
            let now = Instant::now();
            let mut all: Vec<(Candidate, u32)> = route
                .targets
                .iter()
                .filter_map(|t| {
                    let p = self.providers.get(*self.by_name.get(&t.provider)?)?;
                    Some((
                        Candidate {
                            provider: p.clone(),
                            model: t.model.clone().unwrap_or_else(|| model.to_string()),
                            endpoint: None,
                            origin: None,
                        },
                        t.weight,
                    ))
                })
                .collect();
            if route.strategy == Strategy::Weighted && all.len() > 1 {
                let total: u32 = all.iter().map(|(_, w)| w).sum();
                let mut pick = fastrand::u32(0..total.max(1));
                let first = all.iter().position(|(_, w)| {
                    if pick < *w {
                        true
                    } else {
                        pick -= w;
                        false
                    }
                });
                if let Some(i) = first {
                    let c = all.remove(i);
                    all.insert(0, c);
                }
            }
            // Healthy providers first, cooling ones last (still tried if nothing else is left).
            all.sort_by_key(|(c, _)| c.provider.cooling(now));
            return all.into_iter().map(|(c, _)| c).collect();
        }
        match via {
            Via::Explicit => Vec::new(),
            Via::Transparent { dst, origin } => {
                let provider = match self.addressed_provider(via) {
                    Some(p) => p,
                    None => match ad_hoc(*dst, origin.as_deref()) {
                        Some(p) => p,
                        None => return Vec::new(),
                    },
                };
                vec![Candidate { provider, model: model.to_string(), endpoint: None, origin: origin.clone() }]
            }
        }
    }

    /// The configured provider an intercepted request was addressed to: the one whose endpoint
    /// is (or resolves to) the original destination, or, for TLS nodegate terminated, the
    /// https provider whose host and port are the server name and port the upstream proved
    /// with a verified certificate. The request's Host header plays no part: a pod must not be
    /// able to have a provider's key injected by naming that provider's host on a connection to
    /// some other service.
    pub fn addressed_provider(&self, via: &Via) -> Option<Arc<ProviderState>> {
        let Via::Transparent { dst, origin } = via else { return None };
        self.providers
            .iter()
            .find(|p| p.addrs.load().contains(dst) || origin.as_deref().is_some_and(|o| p.is_named_by(o)))
            .cloned()
    }
}

/// An intercepted OpenAI-compatible server nobody configured: counted and governed all the same,
/// with no credentials injected.
fn ad_hoc(dst: SocketAddr, origin: Option<&crate::tls::client::Origin>) -> Option<Arc<ProviderState>> {
    let p = Provider {
        name: format!("intercepted:{dst}"),
        kind: ProviderKind::OpenaiCompatible,
        endpoint: origin.map_or_else(|| format!("http://{dst}"), |o| o.base()),
        credentials: None,
        tokenize: Default::default(),
    };
    ProviderState::new(&p).ok().map(Arc::new)
}
