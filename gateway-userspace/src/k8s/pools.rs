//! Inference pool members found in the cluster (`inference.pools[].kubernetes`): a Service's
//! ready endpoints from its EndpointSlices, the ready pods a label selector matches, or the pods
//! of a Gateway API Inference Extension InferencePool (`inference.networking.k8s.io/v1`: its
//! `selector.matchLabels` and `targetPorts`). Each member is marked local when it runs on this
//! node, which is what the picker prefers. One watch per pool; the list goes to a sink on every
//! change. When the API server goes away the last list stays in use.
use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use futures_util::StreamExt;
use k8s_openapi::api::{core::v1::Pod, discovery::v1::EndpointSlice};
use kube::{
    Api, Client, Resource,
    api::{ApiResource, DynamicObject, GroupVersionKind},
    runtime::{WatchStreamExt, watcher},
};

use crate::{config::PoolSource, inference::Member};

/// Receives a pool's members (by pool name) whenever they change.
pub type Sink = Arc<dyn Fn(&str, Vec<Member>) + Send + Sync>;

/// Most members one source yields; the pool keeps at most [`crate::inference::MAX_ENDPOINTS`].
const MAX_MEMBERS: usize = 4096;

/// Watches `source` for pool `pool` until aborted.
pub async fn run(client: Client, node: String, pool: String, source: PoolSource, sink: Sink) {
    let target = Target { node, pool, metrics_path: source.metrics_path.clone(), sink };
    if let Some((name, ns)) = source.service.as_deref().and_then(super::services::parse) {
        endpoint_slices(client, ns.to_string(), name.to_string(), source.port.clone(), target).await;
    } else if let Some((name, ns)) = source.inference_pool.as_deref().and_then(super::services::parse) {
        inference_pool(client, ns.to_string(), name.to_string(), target).await;
    } else if let Some(ns) = source.namespace.clone() {
        let selector = Selector { labels: source.selector.clone(), ports: source.target_ports.clone() };
        pods(client, ns, selector, target).await;
    }
}

struct Target {
    node: String,
    pool: String,
    metrics_path: String,
    sink: Sink,
}

impl Target {
    fn member(&self, ip: IpAddr, port: u16, node: Option<&str>) -> Member {
        Member {
            address: SocketAddr::new(ip, port).to_string(),
            metrics_path: self.metrics_path.clone(),
            local: node == Some(self.node.as_str()),
            node: node.map(str::to_string),
        }
    }

    /// Sends the union of `parts` when it differs from what was sent last.
    fn publish(&self, parts: &BTreeMap<String, Vec<Member>>, last: &mut Option<Vec<Member>>) {
        let mut all: Vec<Member> = parts.values().flatten().cloned().collect();
        all.sort();
        all.dedup();
        if all.len() > MAX_MEMBERS {
            tracing::warn!(pool = %self.pool, found = all.len(), kept = MAX_MEMBERS, "too many pool members found; keeping the first");
            all.truncate(MAX_MEMBERS);
        }
        if last.as_ref() != Some(&all) {
            (self.sink)(&self.pool, all.clone());
            *last = Some(all);
        }
    }
}

/// Keeps the objects of one watch by name, and publishes their members on every change.
async fn follow<K, S>(stream: S, what: &str, target: &Target, members: impl Fn(&K) -> Vec<Member>)
where
    K: Resource + Clone,
    S: futures_util::Stream<Item = Result<watcher::Event<K>, watcher::Error>>,
{
    futures_util::pin_mut!(stream);
    let mut parts: BTreeMap<String, Vec<Member>> = BTreeMap::new();
    let mut listing: Option<BTreeMap<String, Vec<Member>>> = None;
    let mut last = None;
    let name = |o: &K| o.meta().name.clone().unwrap_or_default();
    while let Some(ev) = stream.next().await {
        match ev {
            Ok(watcher::Event::Init) => listing = Some(BTreeMap::new()),
            Ok(watcher::Event::InitApply(o)) => {
                listing.get_or_insert_with(BTreeMap::new).insert(name(&o), members(&o));
            }
            Ok(watcher::Event::InitDone) => {
                parts = listing.take().unwrap_or_default();
                target.publish(&parts, &mut last);
            }
            Ok(watcher::Event::Apply(o)) => {
                parts.insert(name(&o), members(&o));
                target.publish(&parts, &mut last);
            }
            Ok(watcher::Event::Delete(o)) => {
                parts.remove(&name(&o));
                target.publish(&parts, &mut last);
            }
            Err(e) => {
                tracing::warn!(pool = %target.pool, source = what, error = %e, "pool member watch failed; keeping the last members")
            }
        }
    }
}

async fn endpoint_slices(client: Client, ns: String, service: String, port: Option<String>, target: Target) {
    let api: Api<EndpointSlice> = Api::namespaced(client, &ns);
    let cfg = watcher::Config::default().labels(&format!("kubernetes.io/service-name={service}"));
    let what = format!("service {service}.{ns}");
    follow(watcher(api, cfg).default_backoff(), &what, &target, |s| {
        slice_members(s, port.as_deref(), &target).unwrap_or_else(|e| {
            tracing::warn!(pool = %target.pool, source = %what, slice = ?s.metadata.name, "{e}");
            Vec::new()
        })
    })
    .await;
}

/// The ready endpoints of one EndpointSlice on the chosen port.
fn slice_members(s: &EndpointSlice, port: Option<&str>, target: &Target) -> Result<Vec<Member>, String> {
    if s.address_type != "IPv4" && s.address_type != "IPv6" {
        return Ok(Vec::new());
    }
    let ports: Vec<(Option<&str>, u16)> = s
        .ports
        .iter()
        .flatten()
        .filter(|p| p.protocol.as_deref().unwrap_or("TCP") == "TCP")
        .filter_map(|p| Some((p.name.as_deref(), u16::try_from(p.port?).ok()?)))
        .collect();
    let chosen = match port {
        Some(want) => ports
            .iter()
            .find(|(name, number)| *name == Some(want) || want.parse() == Ok(*number))
            .map(|(_, n)| *n)
            .ok_or_else(|| format!("no port {want:?} among the endpoints' ports {ports:?}"))?,
        None => match ports.as_slice() {
            [(_, n)] => *n,
            [] => return Ok(Vec::new()),
            _ => return Err(format!("the endpoints have several ports {ports:?}: name one with port:")),
        },
    };
    Ok(s.endpoints
        .iter()
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true))
        .flat_map(|e| {
            e.addresses
                .iter()
                .filter_map(|a| a.parse::<IpAddr>().ok())
                .map(|ip| target.member(ip, chosen, e.node_name.as_deref()))
                .collect::<Vec<_>>()
        })
        .collect())
}

/// Pods matching `labels`, served on `ports`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Selector {
    labels: BTreeMap<String, String>,
    ports: Vec<u16>,
}

impl Selector {
    fn query(&self) -> Option<String> {
        let ok = |s: &str| s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b));
        self.labels
            .iter()
            .map(|(k, v)| (!k.is_empty() && ok(k) && ok(v)).then(|| format!("{k}={v}")))
            .collect::<Option<Vec<_>>>()
            .map(|terms| terms.join(","))
            .filter(|q| !q.is_empty())
    }
}

async fn pods(client: Client, ns: String, selector: Selector, target: Target) {
    let Some(query) = selector.query() else {
        tracing::warn!(pool = %target.pool, labels = ?selector.labels, "pool selector is empty or not a plain label selector; no members");
        (target.sink)(&target.pool, Vec::new());
        return;
    };
    let api: Api<Pod> = Api::namespaced(client, &ns);
    let what = format!("pods {query} in {ns}");
    follow(watcher(api, watcher::Config::default().labels(&query)).default_backoff(), &what, &target, |p| {
        pod_members(p, &selector.ports, &target)
    })
    .await;
}

/// A pod's addresses on `ports` when it is running, ready and not going away.
fn pod_members(p: &Pod, ports: &[u16], target: &Target) -> Vec<Member> {
    let Some(status) = &p.status else { return Vec::new() };
    let ready = status.conditions.iter().flatten().any(|c| c.type_ == "Ready" && c.status == "True");
    if !ready || p.metadata.deletion_timestamp.is_some() || status.phase.as_deref() != Some("Running") {
        return Vec::new();
    }
    let mut ips: Vec<IpAddr> = status.pod_ips.iter().flatten().filter_map(|i| i.ip.parse().ok()).collect();
    if ips.is_empty() {
        ips.extend(status.pod_ip.as_deref().and_then(|i| i.parse::<IpAddr>().ok()));
    }
    let node = p.spec.as_ref().and_then(|s| s.node_name.as_deref());
    ips.iter().flat_map(|ip| ports.iter().map(move |port| target.member(*ip, *port, node))).collect()
}

/// The selector and ports an InferencePool (v1) names.
fn inference_pool_spec(o: &DynamicObject) -> Result<Selector, String> {
    let spec = o.data.get("spec").ok_or("no spec")?;
    let labels: BTreeMap<String, String> = spec
        .pointer("/selector/matchLabels")
        .and_then(|m| serde_json::from_value(m.clone()).ok())
        .ok_or("spec.selector.matchLabels is missing or not a map of strings")?;
    let ports: Vec<u16> = spec
        .get("targetPorts")
        .and_then(|p| p.as_array())
        .ok_or("spec.targetPorts is missing")?
        .iter()
        .map(|p| {
            p.get("number").and_then(|n| n.as_u64()).and_then(|n| u16::try_from(n).ok()).filter(|n| *n > 0)
        })
        .collect::<Option<_>>()
        .ok_or("spec.targetPorts[].number must be a port number")?;
    if labels.is_empty() || ports.is_empty() {
        return Err("spec.selector.matchLabels and spec.targetPorts must not be empty".into());
    }
    Ok(Selector { labels, ports })
}

/// Aborts a task when dropped.
struct Owned(tokio::task::JoinHandle<()>);

impl Drop for Owned {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn inference_pool(client: Client, ns: String, name: String, target: Target) {
    let gvk = GroupVersionKind::gvk("inference.networking.k8s.io", "v1", "InferencePool");
    let resource = ApiResource::from_gvk_with_plural(&gvk, "inferencepools");
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &resource);
    let cfg = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let stream = watcher(api, cfg).default_backoff();
    futures_util::pin_mut!(stream);
    let target = Arc::new(target);
    let mut current: Option<(Selector, Owned)> = None;
    let mut seen_in_list = false;
    let key = format!("{name}.{ns}");
    let mut follow_spec = |spec: Option<Selector>| {
        if current.as_ref().map(|(s, _)| s) == spec.as_ref() && spec.is_some() {
            return;
        }
        current = spec.map(|s| {
            tracing::info!(pool = %target.pool, inference_pool = %key, labels = ?s.labels, ports = ?s.ports, "following InferencePool");
            let t = Target {
                node: target.node.clone(),
                pool: target.pool.clone(),
                metrics_path: target.metrics_path.clone(),
                sink: target.sink.clone(),
            };
            (s.clone(), Owned(tokio::spawn(pods(client.clone(), ns.clone(), s, t))))
        });
        if current.is_none() {
            (target.sink)(&target.pool, Vec::new());
        }
    };
    while let Some(ev) = stream.next().await {
        match ev {
            Ok(watcher::Event::Init) => seen_in_list = false,
            Ok(watcher::Event::InitApply(o) | watcher::Event::Apply(o)) => {
                seen_in_list = true;
                match inference_pool_spec(&o) {
                    Ok(s) => follow_spec(Some(s)),
                    Err(e) => {
                        tracing::warn!(pool = %target.pool, inference_pool = %key, "InferencePool not usable: {e}; no members");
                        follow_spec(None);
                    }
                }
            }
            Ok(watcher::Event::InitDone) if !seen_in_list => {
                tracing::warn!(pool = %target.pool, inference_pool = %key, "InferencePool not found; no members");
                follow_spec(None);
            }
            Ok(watcher::Event::InitDone) => {}
            Ok(watcher::Event::Delete(_)) => follow_spec(None),
            Err(e) => tracing::warn!(
                pool = %target.pool,
                inference_pool = %key,
                error = %e,
                "InferencePool watch failed (is the Gateway API Inference Extension's v1 CRD installed?); keeping the last members"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> Target {
        Target {
            node: "n1".into(),
            pool: "p".into(),
            metrics_path: "/metrics".into(),
            sink: Arc::new(|_, _| {}),
        }
    }

    #[test]
    fn slices_give_ready_endpoints_on_the_named_port() {
        let s: EndpointSlice = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "vllm-abc", "namespace": "models", "labels": {"kubernetes.io/service-name": "vllm"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8000, "protocol": "TCP"}, {"name": "metrics", "port": 9090}],
            "endpoints": [
                {"addresses": ["10.0.0.5"], "conditions": {"ready": true}, "nodeName": "n1"},
                {"addresses": ["10.0.1.5"], "nodeName": "n2"},
                {"addresses": ["10.0.0.6"], "conditions": {"ready": false}, "nodeName": "n1"}
            ]
        }))
        .unwrap();
        let t = target();
        let m = slice_members(&s, Some("http"), &t).unwrap();
        let got: Vec<(&str, bool)> = m.iter().map(|m| (m.address.as_str(), m.local)).collect();
        assert_eq!(
            got,
            vec![("10.0.0.5:8000", true), ("10.0.1.5:8000", false)],
            "not-ready endpoints are left out"
        );
        assert_eq!(slice_members(&s, Some("9090"), &t).unwrap()[0].address, "10.0.0.5:9090");
        assert!(slice_members(&s, None, &t).unwrap_err().contains("several ports"));
        assert!(slice_members(&s, Some("grpc"), &t).unwrap_err().contains("no port"));
    }

    #[test]
    fn inference_pools_name_a_selector_and_ports() {
        let o: DynamicObject = serde_json::from_value(serde_json::json!({
            "apiVersion": "inference.networking.k8s.io/v1", "kind": "InferencePool",
            "metadata": {"name": "llama", "namespace": "models"},
            "spec": {"selector": {"matchLabels": {"app": "vllm-llama"}}, "targetPorts": [{"number": 8000}],
                     "endpointPickerRef": {"name": "epp", "port": {"number": 9002}}}
        }))
        .unwrap();
        let s = inference_pool_spec(&o).unwrap();
        assert_eq!(s.ports, vec![8000]);
        assert_eq!(s.query().as_deref(), Some("app=vllm-llama"));
        let mut bad = o.clone();
        bad.data["spec"]["targetPorts"] = serde_json::json!([{"number": 0}]);
        assert!(inference_pool_spec(&bad).is_err());
        let injected = Selector { labels: [("app".into(), "x,role!=y".into())].into(), ports: vec![1] };
        assert_eq!(injected.query(), None, "a value cannot widen the selector");
    }

    #[test]
    fn pods_count_only_when_running_and_ready() {
        let mut p: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "vllm-0", "namespace": "models"},
            "spec": {"nodeName": "n2", "containers": []},
            "status": {"phase": "Running", "podIP": "10.0.1.7", "podIPs": [{"ip": "10.0.1.7"}],
                       "conditions": [{"type": "Ready", "status": "True"}]}
        }))
        .unwrap();
        let t = target();
        let m = pod_members(&p, &[8000, 8001], &t);
        assert_eq!(m.len(), 2);
        assert!(!m[0].local && m[0].node.as_deref() == Some("n2"));
        if let Some(s) = p.status.as_mut() {
            s.conditions = Some(vec![
                serde_json::from_value(serde_json::json!({"type": "Ready", "status": "False"})).unwrap(),
            ]);
        }
        assert!(pod_members(&p, &[8000], &t).is_empty());
    }
}
