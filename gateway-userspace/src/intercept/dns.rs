//! Keeps host-name destinations of the intercept table resolved: each name is looked up, its
//! addresses handed to the table, and looked up again when its DNS TTL runs out (clamped to
//! `dns.min_ttl..=dns.max_ttl`). A failed lookup keeps the last known addresses.
use std::{collections::BTreeMap, net::IpAddr, sync::Arc, time::Duration};

use std::str::FromStr;

use hickory_resolver::{
    Name, TokioResolver,
    config::{NameServerConfig, NameServerConfigGroup, ResolverConfig},
    name_server::TokioConnectionProvider,
    proto::xfer::Protocol,
};
use tokio::time::Instant;

use crate::config::Dns;

/// Resolved addresses per host name, shared with the table sync.
pub type Resolved = Arc<std::sync::Mutex<BTreeMap<String, Vec<IpAddr>>>>;

/// The node's resolver, or one asking `dns.servers` with `dns.search` and `dns.ndots`.
fn resolver(dns: &Dns) -> Option<TokioResolver> {
    if dns.servers.is_empty() {
        return match TokioResolver::builder_tokio() {
            Ok(b) => Some(b.build()),
            Err(e) => {
                tracing::error!(error = %e, "cannot read the system DNS config; host-name destinations are not intercepted");
                None
            }
        };
    }
    let mut servers = NameServerConfigGroup::new();
    for s in &dns.servers {
        servers.push(NameServerConfig::new(*s, Protocol::Udp));
        servers.push(NameServerConfig::new(*s, Protocol::Tcp));
    }
    let search: Vec<Name> = dns.search.iter().filter_map(|d| Name::from_str(d).ok()).collect();
    let config = ResolverConfig::from_parts(None, search, servers);
    let mut b = TokioResolver::builder_with_config(config, TokioConnectionProvider::default());
    b.options_mut().ndots = dns.ndots;
    Some(b.build())
}

/// Resolves `hosts` until aborted, calling `changed` whenever a name's addresses change.
pub async fn run(hosts: Vec<String>, dns: Dns, resolved: Resolved, changed: impl Fn() + Send + 'static) {
    if hosts.is_empty() {
        return;
    }
    let Some(resolver) = resolver(&dns) else { return };
    // With our own servers, names are looked up as a pod's resolver would (search domains,
    // ndots); otherwise as fully qualified names through the node's resolver.
    let query = |host: &str| if dns.servers.is_empty() { format!("{host}.") } else { host.to_string() };
    let mut due: BTreeMap<String, Instant> = hosts.iter().map(|h| (h.clone(), Instant::now())).collect();
    loop {
        let Some((host, when)) = due.iter().min_by_key(|(_, t)| **t).map(|(h, t)| (h.clone(), *t)) else {
            return;
        };
        tokio::time::sleep_until(when).await;
        let next = match resolver.lookup_ip(query(&host)).await {
            Ok(lookup) => {
                let mut ips: Vec<IpAddr> = lookup.iter().collect();
                ips.sort();
                ips.dedup();
                let ttl = lookup.valid_until().saturating_duration_since(std::time::Instant::now());
                let mut map = resolved.lock().unwrap_or_else(|e| e.into_inner());
                let old = map.insert(host.clone(), ips.clone());
                drop(map);
                if old.as_ref() != Some(&ips) {
                    tracing::info!(%host, addresses = ?ips, ttl_s = ttl.as_secs(), "intercept destination resolved");
                    changed();
                }
                ttl.clamp(dns.min_ttl, dns.max_ttl)
            }
            Err(e) => {
                tracing::warn!(%host, error = %e, "cannot resolve intercept destination; keeping its last addresses");
                dns.min_ttl.max(Duration::from_secs(1))
            }
        };
        due.insert(host, Instant::now() + next);
    }
}
