//! Configured providers at run time: base URL, the key (read from env or file when the config
//! is applied, never from the agent), credential injection, and cooldown after failures.
use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

use http::{HeaderMap, HeaderValue, Uri, header};

use crate::config::{Provider, ProviderKind};

pub struct ProviderState {
    pub name: std::sync::Arc<str>,
    pub kind: ProviderKind,
    /// Scheme and authority, e.g. `https://api.openai.com`.
    pub base: Uri,
    /// Path prefix of the endpoint (`/openai` in `https://host/openai`), without trailing `/`.
    pub prefix: String,
    key: Option<HeaderValue>,
    cooldown_until: Mutex<Option<Instant>>,
    /// How to ask the server for an exact prompt count (budget admission).
    pub tokenize: crate::config::Tokenize,
    /// The addresses the endpoint's host resolves to: intercepted traffic is matched to this
    /// provider by its original destination only, never by a Host header the client chose.
    pub addrs: arc_swap::ArcSwap<Vec<std::net::SocketAddr>>,
}

/// How often a provider's host name is resolved again.
const RESOLVE_EVERY: Duration = Duration::from_secs(30);

/// Keeps `p.addrs` current while the provider exists (IP literals need no lookups).
pub fn resolve_in_background(p: &std::sync::Arc<ProviderState>) {
    let Some(auth) = p.base.authority() else { return };
    let port = auth.port_u16().unwrap_or(if p.base.scheme_str() == Some("https") { 443 } else { 80 });
    let host = auth.host().trim_start_matches('[').trim_end_matches(']').to_string();
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        p.addrs.store(std::sync::Arc::new(vec![std::net::SocketAddr::new(ip, port)]));
        return;
    }
    let Ok(rt) = tokio::runtime::Handle::try_current() else { return };
    let weak = std::sync::Arc::downgrade(p);
    rt.spawn(async move {
        loop {
            let found = tokio::net::lookup_host((host.as_str(), port)).await;
            let Some(p) = weak.upgrade() else { return };
            match found {
                Ok(a) => p.addrs.store(std::sync::Arc::new(a.collect())),
                Err(e) => {
                    tracing::debug!(provider = %p.name, error = %e, "cannot resolve the provider's host")
                }
            }
            drop(p);
            tokio::time::sleep(RESOLVE_EVERY).await;
        }
    });
}

#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("provider {0}: endpoint {1:?} is not a valid URL")]
    Endpoint(String, String),
    #[error("provider {0}: environment variable {1} is not set")]
    Env(String, String),
    #[error("provider {0}: cannot read key file {1}: {2}")]
    File(String, String, std::io::Error),
    #[error("provider {0}: the key is not a valid header value")]
    Key(String),
    #[error("provider {0}: Kubernetes Secret key {1} has not been read")]
    Secret(String, String),
}

impl ProviderState {
    pub fn new(p: &Provider) -> Result<Self, ProviderError> {
        let uri: Uri =
            p.endpoint.parse().map_err(|_| ProviderError::Endpoint(p.name.clone(), p.endpoint.clone()))?;
        let (Some(scheme), Some(auth)) = (uri.scheme_str(), uri.authority()) else {
            return Err(ProviderError::Endpoint(p.name.clone(), p.endpoint.clone()));
        };
        let base: Uri = format!("{scheme}://{auth}")
            .parse()
            .map_err(|_| ProviderError::Endpoint(p.name.clone(), p.endpoint.clone()))?;
        let mut prefix = uri.path().trim_end_matches('/').to_string();
        // `https://api.openai.com/v1` and `https://api.openai.com` both mean the same API root.
        if prefix.ends_with("/v1") {
            prefix.truncate(prefix.len() - 3);
        }
        let key = match p.credentials.as_ref().map(|c| (&c.env, &c.file)) {
            _ if p.credentials.as_ref().is_some_and(|c| c.secret.is_some()) => {
                let c = p.credentials.as_ref();
                let r = c.and_then(|c| c.resolved.as_ref()).ok_or_else(|| {
                    let s = c.and_then(|c| c.secret.as_ref());
                    ProviderError::Secret(
                        p.name.clone(),
                        s.map(|s| format!("{}/{}", s.name, s.key)).unwrap_or_default(),
                    )
                })?;
                Some(r.expose().to_string())
            }
            None | Some((None, None)) => None,
            Some((Some(var), _)) => {
                Some(std::env::var(var).map_err(|_| ProviderError::Env(p.name.clone(), var.clone()))?)
            }
            Some((None, Some(path))) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| ProviderError::File(p.name.clone(), path.display().to_string(), e))?
                    .trim()
                    .to_string(),
            ),
        };
        let key = match key {
            None => None,
            Some(k) => {
                let v = match p.kind {
                    ProviderKind::Anthropic => HeaderValue::from_str(&k),
                    _ => HeaderValue::from_str(&format!("Bearer {k}")),
                };
                let mut v = v.map_err(|_| ProviderError::Key(p.name.clone()))?;
                v.set_sensitive(true);
                Some(v)
            }
        };
        Ok(Self {
            name: p.name.as_str().into(),
            kind: p.kind,
            base,
            prefix,
            key,
            cooldown_until: Mutex::new(None),
            tokenize: p.tokenize,
            addrs: arc_swap::ArcSwap::from_pointee(Vec::new()),
        })
    }

    /// The URL of `path_and_query` (`/v1/chat/completions`) at this provider.
    pub fn url(&self, path_and_query: &str) -> Result<Uri, http::uri::InvalidUri> {
        format!("{}{}{}", self.base.to_string().trim_end_matches('/'), self.prefix, path_and_query).parse()
    }

    /// Whether this https provider is the server `o` reaches with a verified certificate for the
    /// provider's own host name and port.
    pub fn is_named_by(&self, o: &crate::tls::client::Origin) -> bool {
        let Some(auth) = self.base.authority() else { return false };
        o.verified
            && self.base.scheme_str() == Some("https")
            && auth.host().eq_ignore_ascii_case(&o.server_name)
            && auth.port_u16().unwrap_or(443) == o.addr.port()
    }

    /// Removes whatever credentials the agent sent and adds the provider's.
    pub fn inject(&self, h: &mut HeaderMap) {
        Self::remove_credentials(h);
        if let Some(k) = &self.key {
            match self.kind {
                ProviderKind::Anthropic => {
                    h.insert("x-api-key", k.clone());
                    if !h.contains_key("anthropic-version") {
                        h.insert("anthropic-version", HeaderValue::from_static("2023-06-01"));
                    }
                }
                _ => {
                    h.insert(header::AUTHORIZATION, k.clone());
                }
            }
        }
        if let Some(host) = self.base.authority().and_then(|a| HeaderValue::from_str(a.as_str()).ok()) {
            h.insert(header::HOST, host);
        }
    }

    /// Removes every credential header an agent might have sent.
    pub fn remove_credentials(h: &mut HeaderMap) {
        h.remove(header::AUTHORIZATION);
        h.remove("x-api-key");
        h.remove("api-key");
        h.remove(header::PROXY_AUTHORIZATION);
    }

    pub fn cooling(&self, now: Instant) -> bool {
        self.cooldown_until.lock().unwrap_or_else(|e| e.into_inner()).is_some_and(|t| t > now)
    }

    pub fn cool_down(&self, d: Duration) {
        *self.cooldown_until.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now() + d);
    }

    pub fn recovered(&self) {
        *self.cooldown_until.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Credentials;

    #[test]
    fn injects_the_providers_key_and_drops_the_agents() {
        // SAFETY: test-only variable, unique name.
        unsafe { std::env::set_var("NG_TEST_PROVIDER_KEY", "sk-provider") };
        let p = Provider {
            name: "oa".into(),
            kind: ProviderKind::Openai,
            endpoint: "http://127.0.0.1:9/v1".into(),
            credentials: Some(Credentials { env: Some("NG_TEST_PROVIDER_KEY".into()), ..Default::default() }),
            tokenize: Default::default(),
        };
        let s = ProviderState::new(&p).unwrap();
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer agent-key"));
        h.insert("x-api-key", HeaderValue::from_static("agent-key"));
        s.inject(&mut h);
        assert_eq!(h[header::AUTHORIZATION], "Bearer sk-provider");
        assert!(!h.contains_key("x-api-key"));
        assert_eq!(
            s.url("/v1/chat/completions").unwrap().to_string(),
            "http://127.0.0.1:9/v1/chat/completions"
        );
        let a = Provider { kind: ProviderKind::Anthropic, ..p };
        let s = ProviderState::new(&a).unwrap();
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer agent-key"));
        s.inject(&mut h);
        assert_eq!(h["x-api-key"], "sk-provider");
        assert!(!h.contains_key(header::AUTHORIZATION));
        assert_eq!(h["anthropic-version"], "2023-06-01");
    }
}
