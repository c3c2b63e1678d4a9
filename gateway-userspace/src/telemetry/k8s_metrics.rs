//! Kubernetes metrics: whether the watches reach the API server, how many pods this node's
//! view holds and how many are enrolled. Copied from the view on every scrape.
use std::sync::atomic::Ordering;

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResourceLabels {
    /// `pods` or `namespaces`.
    pub resource: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
    /// `accepted` or `refused`.
    pub state: &'static str,
}

pub struct K8sMetrics {
    pub resources: Family<KindLabels, Gauge>,
    pub api_connected: Family<ResourceLabels, Gauge>,
    pub watch_errors: Family<ResourceLabels, Counter>,
    pub pods: Gauge,
    pub pods_enrolled: Gauge,
}

impl K8sMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let api_connected = Family::default();
        registry.register(
            "nodegate_kubernetes_api_connected",
            "1 while the watch reaches the API server; 0 while it serves the last good view",
            api_connected.clone(),
        );
        let watch_errors = Family::default();
        registry.register(
            "nodegate_kubernetes_watch_errors",
            "Failed list or watch calls to the API server",
            watch_errors.clone(),
        );
        let pods = Gauge::default();
        registry.register("nodegate_kubernetes_pods", "Pods on this node in the agent's view", pods.clone());
        let pods_enrolled = Gauge::default();
        registry.register(
            "nodegate_kubernetes_pods_enrolled",
            "Pods on this node whose traffic is intercepted",
            pods_enrolled.clone(),
        );
        let resources = Family::default();
        registry.register(
            "nodegate_kubernetes_resources",
            "nodegate resources in the cluster by kind, accepted into the config or refused (see their status)",
            resources.clone(),
        );
        Self { resources, api_connected, watch_errors, pods, pods_enrolled }
    }

    /// Copies the view's state into the registry (before a scrape).
    pub fn refresh(&self, cluster: &crate::k8s::Cluster) {
        for (resource, h) in
            [("pods", &cluster.store.pods_health), ("namespaces", &cluster.store.namespaces_health)]
        {
            let r = h.report();
            let labels = ResourceLabels { resource };
            self.api_connected.get_or_create(&labels).set(i64::from(r.connected));
            self.watch_errors.get_or_create(&labels).inner().store(r.errors, Ordering::Relaxed);
        }
        self.pods.set(cluster.store.pod_count() as i64);
        if let Some(c) = cluster.composer.get() {
            for (kind, accepted, refused) in c.counts() {
                self.resources.get_or_create(&KindLabels { kind, state: "accepted" }).set(accepted as i64);
                self.resources.get_or_create(&KindLabels { kind, state: "refused" }).set(refused as i64);
            }
        }
        self.pods_enrolled.set(cluster.enroller.as_ref().map_or(0, |e| e.enrolled_count()) as i64);
    }
}
