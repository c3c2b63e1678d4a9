//! Upgrade or uninstall? On SIGTERM a DaemonSet pod cannot tell a rolling update from
//! `helm uninstall`; its DaemonSet can. Gone (404) or marked for deletion means uninstall.
use k8s_openapi::api::apps::v1::DaemonSet;
use kube::{Api, Client};

/// `Some(true)`: the DaemonSet is gone or going (uninstall); `Some(false)`: it stays (upgrade,
/// restart, eviction); `None`: the API server did not say within `timeout`.
pub async fn uninstalling(
    client: Client,
    namespace: &str,
    name: &str,
    timeout: std::time::Duration,
) -> Option<bool> {
    let api: Api<DaemonSet> = Api::namespaced(client, namespace);
    match tokio::time::timeout(timeout, api.get_opt(name)).await {
        Ok(Ok(None)) => Some(true),
        Ok(Ok(Some(ds))) => Some(ds.metadata.deletion_timestamp.is_some()),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, daemonset = %format!("{namespace}/{name}"), "cannot tell upgrade from uninstall");
            None
        }
        Err(_) => {
            tracing::warn!(daemonset = %format!("{namespace}/{name}"), "the API server did not answer in time; cannot tell upgrade from uninstall");
            None
        }
    }
}

/// `namespace/name` of this agent's DaemonSet, from config or the chart's environment.
pub fn daemonset(cfg: &crate::config::Kubernetes) -> Option<(String, String)> {
    if let Some(d) = &cfg.daemonset {
        let (ns, name) = d.split_once('/')?;
        return Some((ns.to_string(), name.to_string()));
    }
    let ns = std::env::var("POD_NAMESPACE").ok().filter(|s| !s.is_empty())?;
    let name = std::env::var("NODEGATE_DAEMONSET").ok().filter(|s| !s.is_empty())?;
    Some((ns, name))
}
