//! Kubernetes Services as intercept destinations: `intercept.destinations[].service:
//! name.namespace` is intercepted at the Service's ClusterIPs, on its TCP ports (or the
//! destination's own `ports`), as the API server says, kept current by one watch per Service.
//! A Service that does not exist (yet), or is headless, has no address to intercept.
use std::{collections::BTreeMap, net::IpAddr, sync::Arc};

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Service;
use kube::{
    Api, Client,
    runtime::{WatchStreamExt, watcher},
};

/// Where a Service is, as the table needs it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resolved {
    pub ips: Vec<IpAddr>,
    pub ports: Vec<u16>,
}

/// Resolved Services by `namespace/name`, shared with the intercept table.
pub type Table = Arc<std::sync::Mutex<BTreeMap<String, Resolved>>>;

/// Splits `name.namespace`.
pub fn parse(reference: &str) -> Option<(&str, &str)> {
    let (name, ns) = reference.split_once('.')?;
    let label = |s: &str| {
        !s.is_empty()
            && s.len() <= 63
            && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !s.starts_with('-')
            && !s.ends_with('-')
    };
    (label(name) && label(ns)).then_some((name, ns))
}

/// The ClusterIPs and TCP ports of a Service; empty for a headless one.
pub fn resolve(svc: &Service) -> Resolved {
    let spec = svc.spec.as_ref();
    let mut ips: Vec<IpAddr> = spec
        .and_then(|s| s.cluster_ips.clone().or_else(|| s.cluster_ip.clone().map(|ip| vec![ip])))
        .unwrap_or_default()
        .iter()
        .filter_map(|ip| ip.parse().ok())
        .collect();
    ips.sort();
    ips.dedup();
    let mut ports: Vec<u16> = spec
        .and_then(|s| s.ports.as_ref())
        .into_iter()
        .flatten()
        .filter(|p| p.protocol.as_deref().unwrap_or("TCP") == "TCP")
        .filter_map(|p| u16::try_from(p.port).ok())
        .collect();
    ports.sort_unstable();
    ports.dedup();
    Resolved { ips, ports }
}

/// Watches Service `namespace/name` until aborted, writing where it is into `table` and calling
/// `changed` when that moves.
pub async fn watch(
    client: Client,
    namespace: String,
    name: String,
    table: Table,
    changed: Arc<dyn Fn() + Send + Sync>,
) {
    let key = format!("{namespace}/{name}");
    let api: Api<Service> = Api::namespaced(client, &namespace);
    let stream =
        watcher(api, watcher::Config::default().fields(&format!("metadata.name={name}"))).default_backoff();
    futures_util::pin_mut!(stream);
    let mut seen_in_list = false;
    let set = |value: Option<Resolved>| {
        let mut t = table.lock().unwrap_or_else(|e| e.into_inner());
        let old = match &value {
            Some(v) => t.insert(key.clone(), v.clone()),
            None => t.remove(&key),
        };
        drop(t);
        if old != value {
            match &value {
                Some(v) => {
                    tracing::info!(service = %key, addresses = ?v.ips, ports = ?v.ports, "intercept service resolved")
                }
                None => {
                    tracing::warn!(service = %key, "intercept service not found; nothing to intercept for it")
                }
            }
            changed();
        }
    };
    while let Some(ev) = stream.next().await {
        match ev {
            Ok(watcher::Event::Init) => seen_in_list = false,
            Ok(watcher::Event::InitApply(s) | watcher::Event::Apply(s)) => {
                seen_in_list = true;
                set(Some(resolve(&s)));
            }
            Ok(watcher::Event::InitDone) if !seen_in_list => set(None),
            Ok(watcher::Event::InitDone) => {}
            Ok(watcher::Event::Delete(_)) => set(None),
            Err(e) => {
                tracing::warn!(service = %key, error = %e, "service watch failed; keeping its last addresses")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_and_resolution() {
        assert_eq!(parse("llm.agents"), Some(("llm", "agents")));
        for bad in ["llm", ".agents", "LLM.agents", "a.b.c", "-x.y"] {
            assert_eq!(parse(bad), None, "{bad}");
        }
        let svc: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "llm", "namespace": "agents"},
            "spec": {"clusterIP": "10.96.0.7", "clusterIPs": ["10.96.0.7", "fd00::7"],
                     "ports": [{"port": 8000}, {"port": 53, "protocol": "UDP"}, {"name": "m", "port": 9090, "protocol": "TCP"}]}
        }))
        .unwrap();
        let r = resolve(&svc);
        assert_eq!(r.ips, vec!["10.96.0.7".parse::<IpAddr>().unwrap(), "fd00::7".parse().unwrap()]);
        assert_eq!(r.ports, vec![8000, 9090], "UDP ports are not intercepted as TCP");
        let headless: Service = serde_json::from_value(
            serde_json::json!({"spec": {"clusterIP": "None", "ports": [{"port": 80}]}}),
        )
        .unwrap();
        assert!(resolve(&headless).ips.is_empty());
    }
}
