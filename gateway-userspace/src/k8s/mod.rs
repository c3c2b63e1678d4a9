//! Kubernetes: the node agent's view of its cluster.
//!
//! `watch` keeps a compact view of the pods scheduled on this node and of every namespace's
//! labels ([`store::Store`]); `cgroup` reads a pod UID and container id out of a kubelet cgroup
//! path, so identity can name a connection's caller as the pod it is; `enroll` keeps the eBPF
//! enrolled map in step with the pods that are labelled for interception. This module talks to
//! the API server and reads cgroup directories; it does not decide policy.
pub mod address;
pub mod cgroup;
pub mod enroll;
pub mod owner;
pub mod pod;
pub mod pools;
pub mod resources;
pub mod services;
pub mod status;
pub mod store;
pub mod watch;

use std::{path::Path, sync::Arc};

use crate::config::Kubernetes as Cfg;

#[derive(Debug, thiserror::Error)]
pub enum K8sError {
    #[error("kubernetes.node_name is not set and NODE_NAME is not in the environment")]
    NoNodeName,
    #[error("kubernetes.api_server {url:?}: {detail}")]
    ApiServer { url: String, detail: String },
    #[error("kubernetes client configuration: {0}")]
    Config(String),
    #[error(
        "no kubelet pod cgroup below {root}: set kubernetes.kubepods (looked for /kubepods.slice and /kubepods)"
    )]
    NoKubepods { root: String },
}

/// The running Kubernetes side: the view, and enrollment when interception is on.
pub struct Cluster {
    pub store: Arc<store::Store>,
    pub node: String,
    pub kubepods: Option<String>,
    pub enroller: Option<Arc<enroll::Enroller>>,
    pub client: kube::Client,
    daemonset: Option<(String, String)>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// One watch per Service an intercept destination names, by `namespace/name`.
    service_watches: std::sync::Mutex<std::collections::BTreeMap<String, tokio::task::JoinHandle<()>>>,
    /// The merge of the gateway's own resources with the file config, when it runs.
    pub composer: std::sync::OnceLock<Arc<resources::Composer>>,
    /// One member watch per inference pool found in the cluster, by pool name.
    pool_watches: std::sync::Mutex<PoolWatches>,
}

type PoolWatches =
    std::collections::BTreeMap<String, (crate::config::PoolSource, tokio::task::JoinHandle<()>)>;

impl Drop for Cluster {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        for t in self.service_watches.lock().unwrap_or_else(|e| e.into_inner()).values() {
            t.abort();
        }
        for (_, t) in self.pool_watches.lock().unwrap_or_else(|e| e.into_inner()).values() {
            t.abort();
        }
    }
}

/// The kubelet's pod cgroup below `root`: configured, else `/kubepods.slice` (systemd
/// driver) or `/kubepods` (cgroupfs), whichever exists.
pub fn kubepods(cfg: &Cfg, root: &Path) -> Result<String, K8sError> {
    if let Some(k) = &cfg.kubepods {
        return Ok(k.clone());
    }
    ["/kubepods.slice", "/kubepods"]
        .into_iter()
        .find(|k| root.join(k.trim_start_matches('/')).is_dir())
        .map(str::to_string)
        .ok_or_else(|| K8sError::NoKubepods { root: root.display().to_string() })
}

pub fn node_name(cfg: &Cfg) -> Result<String, K8sError> {
    cfg.node_name
        .clone()
        .or_else(|| std::env::var("NODE_NAME").ok().filter(|n| !n.is_empty()))
        .ok_or(K8sError::NoNodeName)
}

async fn client(cfg: &Cfg) -> Result<kube::Client, K8sError> {
    let config = if let Some(url) = &cfg.api_server {
        let uri = url
            .parse::<http::Uri>()
            .map_err(|e| K8sError::ApiServer { url: url.clone(), detail: e.to_string() })?;
        kube::Config::new(uri)
    } else if let Some(path) = &cfg.kubeconfig {
        let kc = kube::config::Kubeconfig::read_from(path).map_err(|e| K8sError::Config(e.to_string()))?;
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await
            .map_err(|e| K8sError::Config(e.to_string()))?
    } else {
        kube::Config::infer().await.map_err(|e| K8sError::Config(e.to_string()))?
    };
    kube::Client::try_from(config).map_err(|e| K8sError::Config(e.to_string()))
}

impl Cluster {
    /// Starts the watches, and enrollment into `target` when given. Call within the runtime.
    pub async fn start(
        cfg: &Cfg,
        cgroup_root: Option<&Path>,
        target: Option<Arc<dyn enroll::Target>>,
    ) -> Result<Self, K8sError> {
        let node = node_name(cfg)?;
        let client = client(cfg).await?;
        let store = Arc::new(store::Store::default());
        let mut tasks = vec![
            tokio::spawn(watch::pods(client.clone(), node.clone(), store.clone())),
            tokio::spawn(watch::namespaces(client.clone(), store.clone())),
            tokio::spawn(watch::recover(
                client.clone(),
                node.clone(),
                store.clone(),
                std::time::Duration::from_secs(1),
            )),
        ];
        let kubepods = match cgroup_root {
            Some(root) => Some(kubepods(cfg, root)?),
            None => None,
        };
        let enroller = match (target, cgroup_root, &kubepods) {
            (Some(target), Some(root), Some(kp)) => {
                let own = cfg
                    .own_pod_uid
                    .clone()
                    .or_else(|| std::env::var("POD_UID").ok().filter(|u| !u.is_empty()));
                let e = enroll::Enroller::new(
                    store.clone(),
                    target,
                    root.to_path_buf(),
                    kp.clone(),
                    cfg.enroll.clone(),
                    own,
                );
                tasks.push(tokio::spawn(e.clone().run(cfg.rescan_interval)));
                Some(e)
            }
            _ => None,
        };
        tracing::info!(%node, kubepods = kubepods.as_deref().unwrap_or("-"), enrollment = enroller.is_some(), "kubernetes view started");
        Ok(Self {
            store,
            node,
            kubepods,
            enroller,
            client,
            daemonset: owner::daemonset(cfg),
            tasks,
            service_watches: Default::default(),
            pool_watches: Default::default(),
            composer: Default::default(),
        })
    }

    /// Watches exactly the Services `destinations` name (`service: name.namespace`), writing
    /// their addresses into `table`; watches for Services no longer named stop, and their
    /// entries go.
    pub fn watch_services(
        &self,
        destinations: &[crate::config::Destination],
        table: &services::Table,
        changed: Arc<dyn Fn() + Send + Sync>,
    ) {
        let wanted: std::collections::BTreeSet<(String, String)> = destinations
            .iter()
            .filter_map(|d| services::parse(d.service.as_deref()?))
            .map(|(name, ns)| (ns.to_string(), name.to_string()))
            .collect();
        let mut watches = self.service_watches.lock().unwrap_or_else(|e| e.into_inner());
        let keep: std::collections::BTreeSet<String> =
            wanted.iter().map(|(ns, n)| format!("{ns}/{n}")).collect();
        let mut dropped = false;
        watches.retain(|k, t| {
            let stay = keep.contains(k);
            if !stay {
                t.abort();
                table.lock().unwrap_or_else(|e| e.into_inner()).remove(k);
                dropped = true;
            }
            stay
        });
        for (ns, name) in wanted {
            let key = format!("{ns}/{name}");
            if watches.contains_key(&key) {
                continue;
            }
            let task =
                tokio::spawn(services::watch(self.client.clone(), ns, name, table.clone(), changed.clone()));
            watches.insert(key, task);
        }
        if dropped {
            changed();
        }
    }

    /// Watches the members of every pool `inference` finds in the cluster, sending them to
    /// `sink`; a pool whose source changed is watched anew, a pool gone gets no members.
    pub fn watch_pools(&self, inference: &crate::config::Inference, sink: pools::Sink) {
        let wanted: std::collections::BTreeMap<&str, &crate::config::PoolSource> =
            inference.pools.iter().filter_map(|p| Some((p.name.as_str(), p.kubernetes.as_ref()?))).collect();
        let mut watches = self.pool_watches.lock().unwrap_or_else(|e| e.into_inner());
        watches.retain(|name, (source, task)| {
            let stay = wanted.get(name.as_str()) == Some(&&*source);
            if !stay {
                task.abort();
                sink(name, Vec::new());
            }
            stay
        });
        for (name, source) in wanted {
            if watches.contains_key(name) {
                continue;
            }
            let task = tokio::spawn(pools::run(
                self.client.clone(),
                self.node.clone(),
                name.to_string(),
                source.clone(),
                sink.clone(),
            ));
            watches.insert(name.to_string(), (source.clone(), task));
        }
    }

    /// Whether this shutdown is an uninstall (the agent's DaemonSet is gone or going). False
    /// when no DaemonSet is known or the API server cannot say: keeping programs attached is
    /// the safe side (the heartbeat's fail mode governs, `nodegate intercept cleanup` clears).
    pub async fn uninstalling(&self) -> bool {
        let Some((ns, name)) = &self.daemonset else { return false };
        let gone =
            owner::uninstalling(self.client.clone(), ns, name, std::time::Duration::from_secs(3)).await;
        tracing::info!(daemonset = %format!("{ns}/{name}"), uninstall = ?gone, "shutdown: upgrade or uninstall?");
        gone == Some(true)
    }

    /// Whether both watches are connected and listed; the reason when not.
    pub fn health(&self, stale_after: std::time::Duration) -> Result<(), String> {
        for (what, h) in
            [("pods", self.store.pods_health.report()), ("namespaces", self.store.namespaces_health.report())]
        {
            if !h.synced {
                return Err(format!("kubernetes {what} not listed yet{}", err_suffix(&h.last_error)));
            }
            if !h.connected && h.for_seconds >= stale_after.as_secs_f64() {
                return Err(format!(
                    "kubernetes API unreachable for {:.0}s, serving the last good view of {what}{}",
                    h.for_seconds,
                    err_suffix(&h.last_error)
                ));
            }
        }
        Ok(())
    }
}

fn err_suffix(e: &Option<String>) -> String {
    e.as_deref().map(|e| format!(": {e}")).unwrap_or_default()
}
