//! Checks a parsed config beyond what its types say, collecting every problem with its path in
//! the file (`intercept.destinations[2].ports`), so an operator fixes them all in one go.
use std::{fmt, net::IpAddr};

use ipnet::IpNet;

use super::types::{Class, Config, Destination, InterceptMode};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// What an intercept destination's `address` turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Net(IpNet),
    Host(String),
}

/// Parses a destination address: IP, CIDR or DNS name.
pub fn parse_target(address: &str) -> Result<Target, String> {
    if let Ok(ip) = address.parse::<IpAddr>() {
        return Ok(Target::Net(IpNet::from(ip)));
    }
    if address.contains('/') {
        let net: IpNet = address.parse().map_err(|e| format!("invalid CIDR {address:?}: {e}"))?;
        if net.trunc() != net {
            return Err(format!("CIDR {address:?} has host bits set (did you mean {}?)", net.trunc()));
        }
        return Ok(Target::Net(net));
    }
    let valid_label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    let name = address.strip_suffix('.').unwrap_or(address);
    if name.len() <= 253 && name.split('.').all(valid_label) {
        Ok(Target::Host(name.to_ascii_lowercase()))
    } else {
        Err(format!("{address:?} is not an IP address, a CIDR or a host name"))
    }
}

pub fn validate(cfg: &Config) -> Vec<Problem> {
    let mut p = Vec::new();
    let mut push = |path: String, message: String| p.push(Problem { path, message });

    if cfg.listeners.explicit.is_none() && cfg.listeners.transparent.is_none() {
        push("listeners".into(), "at least one of explicit or transparent must be set".into());
    }
    if let Err(e) = tracing_subscriber::EnvFilter::try_new(&cfg.log.level) {
        push("log.level".into(), format!("invalid filter {:?}: {e}", cfg.log.level));
    }
    if cfg.audit.queue == 0 {
        push("audit.queue".into(), "must be at least 1".into());
    }
    if cfg.audit.flush_interval.is_zero() {
        push("audit.flush_interval".into(), "must be greater than zero".into());
    }
    for (name, d) in [
        ("sniff", cfg.timeouts.sniff),
        ("connect", cfg.timeouts.connect),
        ("header_read", cfg.timeouts.header_read),
        ("idle", cfg.timeouts.idle),
        ("response", cfg.timeouts.response),
        ("body_idle", cfg.timeouts.body_idle),
        ("drain", cfg.timeouts.drain),
    ] {
        if d.is_zero() {
            push(format!("timeouts.{name}"), "must be greater than zero".into());
        }
    }
    super::limits::check(&cfg.limits, &mut push);
    super::traces::check(&cfg.traces, &mut push);
    super::policy::check(&cfg.policy, &mut push);
    if let Some(j) = &cfg.jwt {
        super::jwt::check(j, &mut push);
    }
    for (i, m) in cfg.identities.iter().enumerate() {
        if m.name.trim().is_empty() {
            push(format!("identities[{i}].name"), "must not be empty".into());
        }
        match &m.cgroup {
            Some(c) if !c.starts_with('/') => {
                push(format!("identities[{i}].cgroup"), format!("{c:?} must start with /"));
            }
            None if m.api_keys.is_empty() => {
                push(format!("identities[{i}]"), "give a cgroup, api_keys, or both".into());
            }
            _ => {}
        }
        for (k, key) in m.api_keys.iter().enumerate() {
            if key.expose().trim().len() < 8 {
                push(
                    format!("identities[{i}].api_keys[{k}]"),
                    "too short to be a secret (at least 8 characters)".into(),
                );
            }
        }
    }

    if !cfg.admin.address.ip().is_loopback() && cfg.admin.token.as_ref().is_none_or(|t| t.is_empty()) {
        push(
            "admin.address".into(),
            format!(
                "{} is not a loopback address: set admin.token so that /config_dump and the rest are not open to the network",
                cfg.admin.address
            ),
        );
    }
    if let Some(t) = &cfg.admin.token
        && t.expose().len() < 16
    {
        push("admin.token".into(), "too short to be a secret (at least 16 characters)".into());
    }
    for (i, r) in cfg.egress.allow.iter().enumerate() {
        let wildcard = r.address.strip_prefix("*.");
        if let Err(e) = parse_target(wildcard.unwrap_or(&r.address)) {
            push(format!("egress.allow[{i}].address"), e);
        }
    }

    let ic = &cfg.intercept;
    for (i, c) in ic.cgroups.iter().enumerate() {
        if !c.starts_with('/') || c.split('/').any(|s| s == "..") {
            push(
                format!("intercept.cgroups[{i}]"),
                format!("{c:?} must be an absolute path under the cgroup2 mount, without .."),
            );
        }
    }
    let ebpf = ic.enabled && ic.mode == InterceptMode::Ebpf;
    if ebpf && ic.cgroups.is_empty() && !cfg.kubernetes.enabled {
        push(
            "intercept.cgroups".into(),
            "interception is enabled but no cgroup is enrolled (list cgroups, or enable kubernetes to enroll pods by label)"
                .into(),
        );
    }
    let k = &cfg.kubernetes;
    if !k.enabled {
        for (i, d) in ic.destinations.iter().enumerate() {
            if d.service.is_some() {
                push(
                    format!("intercept.destinations[{i}].service"),
                    "naming a Kubernetes Service needs kubernetes.enabled".into(),
                );
            }
        }
    }
    if k.enabled {
        if let Some(url) = &k.api_server
            && url.parse::<http::Uri>().map_or(true, |u| u.scheme().is_none() || u.host().is_none())
        {
            push("kubernetes.api_server".into(), format!("{url:?} is not an absolute http(s) URL"));
        }
        if k.enroll.label.is_empty() || k.enroll.value.is_empty() {
            push("kubernetes.enroll".into(), "label and value must not be empty".into());
        }
        if let Some(kp) = &k.kubepods
            && !kp.starts_with('/')
        {
            push(
                "kubernetes.kubepods".into(),
                format!("{kp:?} must be a path below the cgroup2 mount, starting with /"),
            );
        }
        if ic.enabled && ic.mode != InterceptMode::Ebpf {
            push(
                "kubernetes.enabled".into(),
                "enrolling pods by label needs intercept.mode: ebpf (iptables rules are per network namespace)".into(),
            );
        }
    }
    if ic.enabled
        && cfg.listeners.transparent.is_none()
        && (ic.mode == InterceptMode::Iptables || ic.redirect_to.is_none())
    {
        push(
            "listeners.transparent".into(),
            "interception is enabled but there is no transparent listener".into(),
        );
    }
    if let Some(r) = ic.redirect_to {
        if !r.is_ipv4() {
            push(
                "intercept.redirect_to".into(),
                "must be an IPv4 address (use redirect_to_v6 for IPv6)".into(),
            );
        }
        if r.port() == 0 {
            push("intercept.redirect_to".into(), "port must not be 0".into());
        }
    }
    if ic.heartbeat.interval.is_zero() {
        push("intercept.heartbeat.interval".into(), "must be greater than zero".into());
    }
    if ic.heartbeat.timeout <= ic.heartbeat.interval {
        push(
            "intercept.heartbeat.timeout".into(),
            format!(
                "{} must be longer than the interval ({}) or a live proxy looks dead",
                humantime::format_duration(ic.heartbeat.timeout),
                humantime::format_duration(ic.heartbeat.interval)
            ),
        );
    }
    for (i, d) in ic.dns.search.iter().enumerate() {
        if !matches!(parse_target(d), Ok(Target::Host(_))) {
            push(format!("intercept.dns.search[{i}]"), format!("{d:?} is not a domain name"));
        }
    }
    if !ic.dns.search.is_empty() && ic.dns.servers.is_empty() {
        push("intercept.dns.search".into(), "search domains apply with dns.servers only".into());
    }
    if ic.dns.min_ttl > ic.dns.max_ttl {
        push("intercept.dns.min_ttl".into(), "must not exceed max_ttl".into());
    }
    if ic.proxy_mark == 0 {
        push("intercept.proxy_mark".into(), "must not be 0 (0 is every unmarked socket)".into());
    }
    if !ic.pin_path.is_absolute() {
        push("intercept.pin_path".into(), "must be an absolute path on a bpffs mount".into());
    }
    for (i, d) in ic.destinations.iter().enumerate() {
        check_destination(i, d, &mut push);
        check_destination_tls(cfg, i, d, &mut push);
    }
    if cfg.tls.leaf_cache == 0 {
        push("tls.leaf_cache".into(), "must be at least 1".into());
    }
    if cfg.tls.leaf_ttl < std::time::Duration::from_secs(600) {
        push(
            "tls.leaf_ttl".into(),
            "must be at least 10m (leaves are minted again before they expire)".into(),
        );
    }
    if cfg.tls.handshake_timeout.is_zero() {
        push("tls.handshake_timeout".into(), "must be greater than zero".into());
    }
    check_llm(&cfg.llm, &mut push);
    for (i, p) in cfg.llm.providers.iter().enumerate() {
        if p.credentials.as_ref().is_some_and(|c| c.secret.is_some()) && !cfg.kubernetes.enabled {
            push(
                format!("llm.providers[{i}].credentials.secret"),
                "reading a Kubernetes Secret needs kubernetes.enabled".into(),
            );
        }
    }
    check_inference(&cfg.inference, cfg.kubernetes.enabled, &mut push);
    check_a2a(&cfg.a2a, &mut push);
    super::mcp::check(&cfg.mcp, &mut push);
    p
}

/// Things that are valid but probably not what a security-minded operator wants; `nodegate
/// check` prints them and `nodegate run` logs them.
pub fn warnings(cfg: &Config) -> Vec<Problem> {
    use super::types::Decision;
    let mut w = Vec::new();
    let named = !cfg.identities.is_empty();
    if named && cfg.llm.default == Decision::Allow && !cfg.llm.providers.is_empty() {
        w.push(Problem {
            path: "llm.default".into(),
            message: "identities are configured but callers no llm.allow rule matches (keyless, unknown) may use every model; set `default: deny`".into(),
        });
    }
    if named && cfg.mcp.default == Decision::Allow && !cfg.mcp.servers.is_empty() {
        w.push(Problem {
            path: "mcp.default".into(),
            message: "identities are configured but callers no mcp.policies rule matches (keyless, unknown) see and call every tool; set `default: deny`".into(),
        });
    }
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    for (i, s) in cfg.mcp.servers.iter().enumerate() {
        if root && s.transport == super::mcp::McpTransport::Stdio && s.user.is_none() {
            w.push(Problem {
                path: format!("mcp.servers[{i}].user"),
                message: "this stdio server would run as root: name an unprivileged user".into(),
            });
        }
    }
    w
}

fn check_llm(llm: &super::llm::Llm, push: &mut impl FnMut(String, String)) {
    use std::collections::BTreeSet;
    let mut names = BTreeSet::new();
    for (i, p) in llm.providers.iter().enumerate() {
        if !names.insert(p.name.as_str()) {
            push(format!("llm.providers[{i}].name"), format!("duplicate provider {:?}", p.name));
        }
        if let Some(c) = &p.credentials
            && [c.env.is_some(), c.file.is_some(), c.secret.is_some()].iter().filter(|s| **s).count() != 1
        {
            push(format!("llm.providers[{i}].credentials"), "set exactly one of env, file or secret".into());
        }
        match p.endpoint.parse::<http::Uri>() {
            Ok(u) if matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some() => {}
            _ => push(
                format!("llm.providers[{i}].endpoint"),
                format!("{:?} must be an http:// or https:// URL", p.endpoint),
            ),
        }
    }
    let mut routes = BTreeSet::new();
    for (i, m) in llm.models.iter().enumerate() {
        if !routes.insert(m.name.as_str()) {
            push(format!("llm.models[{i}].name"), format!("duplicate model route {:?}", m.name));
        }
        if m.targets.is_empty() {
            push(format!("llm.models[{i}].targets"), "list at least one target".into());
        }
        for (t, target) in m.targets.iter().enumerate() {
            if !names.contains(target.provider.as_str()) {
                push(
                    format!("llm.models[{i}].targets[{t}].provider"),
                    format!("no provider named {:?}", target.provider),
                );
            }
            if target.weight == 0 {
                push(format!("llm.models[{i}].targets[{t}].weight"), "must be at least 1".into());
            }
        }
    }
    for (i, b) in llm.budgets.iter().enumerate() {
        let limits = [
            b.requests_per_minute,
            b.tokens_per_minute,
            b.tokens_per_hour,
            b.tokens_per_day,
            b.tokens_per_month,
        ];
        if limits.iter().all(Option::is_none)
            && b.cost_per_day_usd.is_none()
            && b.cost_per_month_usd.is_none()
        {
            push(format!("llm.budgets[{i}]"), format!("budget {:?} sets no limit", b.name));
        }
        for (f, v) in [("cost_per_day_usd", b.cost_per_day_usd), ("cost_per_month_usd", b.cost_per_month_usd)]
        {
            if v.is_some_and(|v| v.is_nan() || v < 0.0) {
                push(format!("llm.budgets[{i}].{f}"), "must be a non-negative number".into());
            }
        }
    }
    if let Some(url) = llm.redis_url.as_ref().map(|u| u.expose())
        && !(url.starts_with("redis://") || url.starts_with("rediss://") || url.starts_with("unix://"))
    {
        // The URL may hold a password: say what is wrong without repeating it.
        push("llm.redis_url".into(), "must start with redis://, rediss:// or unix://".into());
    }
    if llm.response_timeout.is_zero() {
        push("llm.response_timeout".into(), "must be greater than zero".into());
    }
    if llm.stream_idle.is_zero() {
        push("llm.stream_idle".into(), "must be greater than zero".into());
    }
    if llm.max_body_bytes == 0 {
        push("llm.max_body_bytes".into(), "must be greater than zero".into());
    }
}

fn check_destination(i: usize, d: &Destination, push: &mut impl FnMut(String, String)) {
    if let Some(svc) = &d.service {
        if !d.address.is_empty() {
            push(format!("intercept.destinations[{i}]"), "give either address or service, not both".into());
        }
        if crate::k8s::services::parse(svc).is_none() {
            push(
                format!("intercept.destinations[{i}].service"),
                format!("{svc:?} is not `name.namespace` (lower-case DNS labels)"),
            );
        }
        if d.ports.len() > 1 && d.ports.contains(&0) {
            push(
                format!("intercept.destinations[{i}].ports"),
                "0 (all ports) cannot be combined with other ports".into(),
            );
        }
        return;
    }
    if let Err(e) = parse_target(&d.address) {
        push(format!("intercept.destinations[{i}].address"), e);
    }
    if d.ports.is_empty() {
        push(format!("intercept.destinations[{i}].ports"), "list at least one port (0 for all)".into());
    }
    if d.ports.len() > 1 && d.ports.contains(&0) {
        push(
            format!("intercept.destinations[{i}].ports"),
            "0 (all ports) cannot be combined with other ports".into(),
        );
    }
}

fn check_destination_tls(cfg: &Config, i: usize, d: &Destination, push: &mut impl FnMut(String, String)) {
    use super::tls::TlsMode;
    let at = |f: &str| format!("intercept.destinations[{i}].{f}");
    if d.tls == TlsMode::Terminate && cfg.tls.ca.is_none() {
        push(at("tls"), "`terminate` needs a node CA: set tls.ca (`nodegate ca init` makes one)".into());
    }
    if d.tls != TlsMode::Passthrough && d.class == Class::Tcp {
        push(
            at("tls"),
            "a `tcp` destination is never read; terminate or originate needs another class".into(),
        );
    }
    let u = &d.upstream_tls;
    if d.tls != TlsMode::Originate && (u.port.is_some() || u.server_name.is_some()) {
        push(at("upstream_tls"), "`port` and `server_name` apply to `tls: originate` only".into());
    }
    if d.tls == TlsMode::Originate
        && u.server_name.is_none()
        && !matches!(parse_target(&d.address), Ok(Target::Host(_)))
    {
        push(
            at("upstream_tls.server_name"),
            "originating TLS to an IP or CIDR destination needs the name to verify the upstream as".into(),
        );
    }
    if u.port == Some(0) {
        push(at("upstream_tls.port"), "must not be 0".into());
    }
}

fn check_inference(
    inf: &super::inference::Inference,
    kubernetes: bool,
    push: &mut impl FnMut(String, String),
) {
    let mut names = std::collections::BTreeSet::new();
    for (i, p) in inf.pools.iter().enumerate() {
        if !names.insert(p.name.as_str()) {
            push(format!("inference.pools[{i}].name"), format!("duplicate pool {:?}", p.name));
        }
        match &p.kubernetes {
            None if p.endpoints.is_empty() => push(
                format!("inference.pools[{i}].endpoints"),
                "list at least one endpoint (or find them with kubernetes:)".into(),
            ),
            None => {}
            Some(_) if !kubernetes => push(
                format!("inference.pools[{i}].kubernetes"),
                "finding endpoints in the cluster needs kubernetes.enabled".into(),
            ),
            Some(k) => {
                check_pool_source(k, &mut |f, m| push(format!("inference.pools[{i}].kubernetes{f}"), m))
            }
        }
        if p.endpoints.len() > 1024 {
            push(format!("inference.pools[{i}].endpoints"), "at most 1024 endpoints per pool".into());
        }
        for (e, ep) in p.endpoints.iter().enumerate() {
            if ep.address.parse::<std::net::SocketAddr>().is_err() && !ep.address.contains(':') {
                push(
                    format!("inference.pools[{i}].endpoints[{e}].address"),
                    format!("{:?} must be host:port", ep.address),
                );
            }
        }
        if let Some(s) = &p.service
            && s.parse::<std::net::SocketAddr>().is_err()
        {
            push(format!("inference.pools[{i}].service"), format!("{s:?} must be ip:port"));
        }
        if p.scrape_interval.is_zero() {
            push(format!("inference.pools[{i}].scrape_interval"), "must be greater than zero".into());
        }
        if p.block_bytes == 0 {
            push(format!("inference.pools[{i}].block_bytes"), "must be greater than zero".into());
        }
        if !(0.0..=1.0).contains(&p.saturation.kv_cache) {
            push(format!("inference.pools[{i}].saturation.kv_cache"), "must be between 0 and 1".into());
        }
    }
}

fn check_a2a(a: &super::a2a::A2a, push: &mut impl FnMut(String, String)) {
    let mut names = std::collections::BTreeSet::new();
    for (i, ag) in a.agents.iter().enumerate() {
        let ok = !ag.name.is_empty()
            && ag.name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
        if !ok {
            push(
                format!("a2a.agents[{i}].name"),
                format!("{:?}: use letters, digits, '-', '_' or '.'", ag.name),
            );
        }
        if !names.insert(ag.name.as_str()) {
            push(format!("a2a.agents[{i}].name"), format!("duplicate agent {:?}", ag.name));
        }
        match ag.url.parse::<http::Uri>() {
            Ok(u) if matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some() => {}
            _ => push(
                format!("a2a.agents[{i}].url"),
                format!("{:?} must be an http:// or https:// URL", ag.url),
            ),
        }
    }
    for (i, r) in a.allow.iter().enumerate() {
        for (m, name) in r.methods.iter().enumerate() {
            if crate::a2a::methods::parse(name).is_none_or(|(_, v)| v != crate::a2a::methods::Version::V1) {
                push(
                    format!("a2a.allow[{i}].methods[{m}]"),
                    format!("{name:?} is not an A2A 1.0 method name"),
                );
            }
        }
    }
    for (i, r) in a.allow.iter().enumerate() {
        for (k, skill) in r.skills.iter().enumerate() {
            if skill.is_empty() || skill == "tag:" {
                push(format!("a2a.allow[{i}].skills[{k}]"), "an empty skill id or tag".into());
            }
        }
    }
    for (i, p) in a.push_allow.iter().enumerate() {
        if let Err(e) = parse_target(&p.address) {
            push(format!("a2a.push_allow[{i}].address"), e);
        }
    }
    if a.max_body_bytes == 0 || a.max_card_bytes == 0 || a.max_tasks == 0 {
        push("a2a".into(), "max_body_bytes, max_card_bytes and max_tasks must be greater than zero".into());
    }
    if a.timeout.is_zero() || a.stream_idle.is_zero() {
        push("a2a.timeout".into(), "timeout and stream_idle must be greater than zero".into());
    }
}

fn check_pool_source(k: &super::inference::PoolSource, push: &mut impl FnMut(&str, String)) {
    let sources = [k.service.is_some(), !k.selector.is_empty(), k.inference_pool.is_some()];
    if sources.iter().filter(|s| **s).count() != 1 {
        push("", "name exactly one of service, selector or inference_pool".into());
    }
    for (field, reference) in [(".service", &k.service), (".inference_pool", &k.inference_pool)] {
        if let Some(r) = reference
            && crate::k8s::services::parse(r).is_none()
        {
            push(field, format!("{r:?} must be name.namespace (lowercase DNS labels)"));
        }
    }
    if !k.selector.is_empty() {
        if k.namespace.as_deref().is_none_or(str::is_empty) {
            push(".namespace", "a selector needs the namespace its pods are in".into());
        }
        if k.target_ports.is_empty() {
            push(".target_ports", "a selector needs the port(s) the model servers listen on".into());
        }
    }
    if k.target_ports.contains(&0) {
        push(".target_ports", "ports must not be 0".into());
    }
    if k.service.is_none() && k.port.is_some() {
        push(".port", "only for a service (a selector uses target_ports)".into());
    }
    if !k.metrics_path.starts_with('/') {
        push(".metrics_path", format!("{:?} must start with /", k.metrics_path));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse() {
        assert_eq!(parse_target("10.0.0.1").unwrap(), Target::Net("10.0.0.1/32".parse().unwrap()));
        assert_eq!(parse_target("10.96.0.0/12").unwrap(), Target::Net("10.96.0.0/12".parse().unwrap()));
        assert_eq!(parse_target("API.OpenAI.com").unwrap(), Target::Host("api.openai.com".into()));
        assert!(parse_target("10.96.0.1/12").unwrap_err().contains("host bits"));
        assert!(parse_target("not a host").is_err());
    }

    #[test]
    fn tls_destinations_are_checked() {
        let yaml = r#"
intercept:
  destinations:
    - { address: 10.0.0.1, ports: [443], class: llm, tls: terminate }
    - { address: 10.0.0.2, ports: [80], tls: originate }
    - { address: 10.0.0.3, ports: [443], class: tcp, tls: terminate }
    - { address: 10.0.0.4, ports: [443], upstream_tls: { port: 8443 } }
tls: { leaf_ttl: 1m }
"#;
        let e = crate::config::parse(yaml, "t").unwrap_err();
        let paths: Vec<&str> = e.problems.iter().map(|p| p.path.as_str()).collect();
        for want in [
            "intercept.destinations[0].tls",
            "intercept.destinations[1].upstream_tls.server_name",
            "intercept.destinations[2].tls",
            "intercept.destinations[3].upstream_tls",
            "tls.leaf_ttl",
        ] {
            assert!(paths.contains(&want), "{want} missing from {paths:?}");
        }
    }
}
