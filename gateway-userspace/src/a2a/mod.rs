//! The A2A gateway: Agent2Agent agents served through the explicit listener at `/a2a/<name>`,
//! with cards rewritten to point back through nodegate, a policy per caller over agents and
//! methods, task ownership (only the caller that created a task may read, cancel, subscribe to
//! or configure it), push-notification callbacks checked against `a2a.push_allow`, streams
//! passed through unbuffered, and one audit record per call.
pub mod card;
pub mod convert;
pub mod discover;
pub mod exchange;
pub mod handler;
pub mod methods;
pub mod record;
pub mod shared;
pub mod stream;
pub mod tasks;
pub mod translate;
pub mod wire;

use std::{collections::HashMap, sync::Arc};

use crate::{
    config,
    identity::Identity,
    policy::{Pattern, Selector},
    proxy::egress::Egress,
};

/// One registered agent.
pub struct Agent {
    pub name: Arc<str>,
    /// `scheme://host:port` of its URL.
    pub origin: String,
    /// Its URL's path (no trailing slash): where the card is looked for.
    pub path: String,
    /// Its URL's host (lowercase) and port, for absolute-form requests naming it.
    host: String,
    port: u16,
    /// What it speaks, as its card last said.
    pub known: discover::Known,
}

/// One compiled `a2a.allow` entry.
struct Rule {
    selector: Selector,
    agents: Vec<Pattern>,
    methods: Vec<String>,
    /// Skill ids (patterns) and tags the rule allows; both empty: any.
    skills: Vec<Pattern>,
    tags: Vec<String>,
    index: usize,
}

/// The compiled `a2a` section, swapped on reload (the task owners carry over).
pub struct A2a {
    pub cfg: config::A2a,
    agents: HashMap<String, Arc<Agent>>,
    /// Agents whose URL names an IP address, by that address (intercepted traffic).
    by_addr: HashMap<std::net::SocketAddr, Arc<Agent>>,
    rules: Vec<Rule>,
    pub tasks: Arc<tasks::Tasks>,
    /// Task owners shared through Redis, when `a2a.redis_url` is set.
    shared: Option<Arc<shared::Shared>>,
    push: Egress,
    /// The client registered agents are called with (`http://` or `https://`, verified against
    /// the system's roots and `tls.upstream.ca_files`), made on first use.
    client: std::sync::OnceLock<AgentClient>,
}

/// A pooled client for registered agents' URLs.
pub type AgentClient = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<crate::proxy::upstream::Dialer>,
    crate::proxy::upstream::Body,
>;

impl A2a {
    pub fn build(cfg: &config::A2a, previous: Option<&A2a>) -> Self {
        let tasks = match previous {
            Some(p) => {
                p.tasks.set_limits(cfg.task_ttl, cfg.max_tasks);
                p.tasks.clone()
            }
            None => Arc::new(tasks::Tasks::new(cfg.task_ttl, cfg.max_tasks)),
        };
        let agents: HashMap<String, Arc<Agent>> = cfg
            .agents
            .iter()
            .filter_map(|a| {
                let (origin, path) = card::split(&a.url)?;
                let uri: http::Uri = a.url.parse().ok()?;
                let host = uri.host()?.to_ascii_lowercase();
                let port = uri.port_u16().unwrap_or(if uri.scheme_str() == Some("https") { 443 } else { 80 });
                let agent = Agent {
                    name: a.name.as_str().into(),
                    origin,
                    path,
                    host,
                    port,
                    known: Default::default(),
                };
                Some((a.name.clone(), Arc::new(agent)))
            })
            .collect();
        let by_addr = agents
            .values()
            .filter_map(|a| {
                let ip: std::net::IpAddr =
                    a.host.trim_start_matches('[').trim_end_matches(']').parse().ok()?;
                Some((std::net::SocketAddr::new(ip, a.port), a.clone()))
            })
            .collect();
        let rules = cfg
            .allow
            .iter()
            .enumerate()
            .map(|(i, r)| Rule {
                selector: Selector::new(&r.selector),
                agents: r.agents.iter().map(|a| Pattern::new(a)).collect(),
                methods: r.methods.clone(),
                skills: r.skills.iter().filter(|s| !s.starts_with("tag:")).map(|s| Pattern::new(s)).collect(),
                tags: r.skills.iter().filter_map(|s| s.strip_prefix("tag:")).map(str::to_string).collect(),
                index: i,
            })
            .collect();
        let push = Egress::new(&config::Egress { allow: cfg.push_allow.clone() });
        let shared = match (&cfg.redis_url, previous) {
            (Some(url), Some(p)) if p.cfg.redis_url.as_ref() == Some(url) => p.shared.clone(),
            (Some(url), _) => match shared::Shared::new(url.expose()) {
                Ok(s) => Some(Arc::new(s)),
                Err(e) => {
                    tracing::error!(error = %e, "a2a.redis_url is not usable; task owners stay on this node");
                    None
                }
            },
            (None, _) => None,
        };
        Self { cfg: cfg.clone(), agents, by_addr, rules, tasks, shared, push, client: Default::default() }
    }

    /// The client for registered agents (made once per config version).
    pub fn client(&self, ctx: &crate::proxy::Ctx) -> &AgentClient {
        self.client.get_or_init(|| {
            let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .map(|b| b.with_root_certificates(ctx.tls.load().roots()).with_no_client_auth());
            let tls = tls.unwrap_or_else(|e| {
                tracing::error!(error = %e, "TLS client for A2A agents; using the system roots only");
                rustls::ClientConfig::builder()
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth()
            });
            let https = hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(tls)
                .https_or_http()
                .enable_http1()
                .wrap_connector(ctx.upstream.dialer.clone());
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .timer(hyper_util::rt::TokioTimer::new())
                .pool_timer(hyper_util::rt::TokioTimer::new())
                .pool_idle_timeout(std::time::Duration::from_secs(90))
                .pool_max_idle_per_host(64)
                .build(https)
        })
    }

    pub fn agent(&self, name: &str) -> Option<&Arc<Agent>> {
        self.agents.get(name)
    }

    /// The registered agent whose URL names `host:port`, for absolute-form requests.
    pub fn agent_named_by(&self, host: &str, port: u16) -> Option<&Arc<Agent>> {
        self.agents.values().find(|a| a.port == port && a.host.eq_ignore_ascii_case(host))
    }

    /// The registered agent at `dst` (its URL's address), for intercepted traffic.
    pub fn agent_at(&self, dst: std::net::SocketAddr) -> Option<&Arc<Agent>> {
        self.by_addr.get(&dst)
    }

    /// Whether `id` may call `method` (a 1.0 name; None: only reach the agent, as for its card)
    /// at `agent`; the refusing rule when not.
    pub fn check(&self, id: &Identity, agent: &str, method: Option<&str>) -> Result<(), String> {
        match self.rules.iter().find(|r| r.selector.matches(id)) {
            None if self.cfg.default == config::Decision::Allow => Ok(()),
            None => Err("a2a.default".into()),
            Some(r) => {
                let agent_ok = r.agents.iter().any(|p| p.matches(agent));
                let method_ok =
                    method.is_none_or(|m| r.methods.is_empty() || r.methods.iter().any(|x| x == m));
                if agent_ok && method_ok { Ok(()) } else { Err(format!("a2a.allow[{}]", r.index)) }
            }
        }
    }

    /// Whether `id`'s rule lets a message ask for `skill` (whose tags on the agent's card are
    /// `tags`); the refusing rule and why when not. A rule that lists skills refuses a message
    /// naming none.
    pub fn check_skill(
        &self,
        id: &Identity,
        skill: Option<&str>,
        tags: &[String],
    ) -> Result<(), (String, String)> {
        let Some(r) = self.rules.iter().find(|r| r.selector.matches(id)) else { return Ok(()) };
        if r.skills.is_empty() && r.tags.is_empty() {
            return Ok(());
        }
        let rule = format!("a2a.allow[{}]", r.index);
        let Some(skill) = skill else {
            return Err((
                rule,
                "the message names no skill (metadata.skill) and this caller may only ask for listed skills"
                    .into(),
            ));
        };
        if r.skills.iter().any(|p| p.matches(skill)) || tags.iter().any(|t| r.tags.contains(t)) {
            Ok(())
        } else {
            Err((rule, format!("skill {skill:?} is not one this caller may ask for")))
        }
    }

    /// Whether `id` may see a skill (id and tags) on a card: what [`Self::check_skill`] would allow.
    pub fn may_see_skill(&self, id: &Identity, skill: &str, tags: &[String]) -> bool {
        self.check_skill(id, Some(skill), tags).is_ok()
    }

    /// Whether `owner` may act on `task` at `agent`: it created it (as this node or, with Redis,
    /// any replica remembers).
    pub async fn may_act(&self, agent: &Arc<str>, task: &str, owner: &Arc<str>) -> bool {
        if self.tasks.access(agent, task, owner) == tasks::Access::Owner {
            return true;
        }
        let Some(s) = &self.shared else { return false };
        match s.owner(agent, task, self.cfg.task_ttl).await {
            Some(o) if *o == **owner => {
                self.tasks.record(agent, task, owner);
                true
            }
            _ => false,
        }
    }

    /// Records `owner` as the creator of `task`, here and in Redis; false when another caller
    /// owns it already (then that owner is what this node remembers).
    pub async fn claim(&self, agent: &Arc<str>, task: &str, owner: &Arc<str>) -> bool {
        let local = self.tasks.record(agent, task, owner);
        let Some(s) = &self.shared else { return local };
        match s.record(agent, task, owner, self.cfg.task_ttl).await {
            Some(existing) if *existing != **owner => {
                self.tasks.force(agent, task, &Arc::from(existing));
                false
            }
            _ => local,
        }
    }

    /// Whether an agent may be asked to call `url` back.
    pub fn push_allowed(&self, url: &str) -> Result<(), String> {
        let uri: http::Uri = url.parse().map_err(|_| format!("{url:?} is not a URL"))?;
        let host = uri.host().ok_or_else(|| format!("{url:?} has no host"))?;
        let port = uri.port_u16().unwrap_or(if uri.scheme_str() == Some("https") { 443 } else { 80 });
        if !matches!(uri.scheme_str(), Some("http" | "https")) {
            return Err(format!("{url:?} is not http(s)"));
        }
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<std::net::IpAddr>() {
            let local = ip.is_loopback()
                || ip.is_unspecified()
                || match ip {
                    std::net::IpAddr::V4(v4) => v4.is_link_local(),
                    std::net::IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
                };
            if local {
                return Err(format!("{host} is a loopback, link-local or unspecified address"));
            }
        }
        if bare.eq_ignore_ascii_case("localhost") {
            return Err("localhost".into());
        }
        if self.cfg.push_allow.is_empty() || !self.push.allows(bare, port) {
            return Err(format!("{host}:{port} is not in a2a.push_allow"));
        }
        Ok(())
    }
}
