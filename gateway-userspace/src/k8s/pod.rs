//! What nodegate keeps of a Pod: the fields identity, policy and enrollment read, nothing else
//! (a full Pod object is tens of kilobytes; this is a few hundred bytes).
use std::{net::IpAddr, sync::Arc};

use k8s_openapi::api::core::v1 as core;

/// Annotations kept: only nodegate's own (`nodegate.io/...`); the rest can be large and
/// nothing here reads them.
const ANNOTATION_PREFIX: &str = "nodegate.io/";

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Pod {
    pub uid: Arc<str>,
    pub namespace: Arc<str>,
    pub name: Arc<str>,
    pub service_account: Arc<str>,
    pub labels: Labels,
    pub annotations: Labels,
    pub containers: Box<[Container]>,
    pub ips: Box<[IpAddr]>,
    pub host_network: bool,
    /// The API server has marked it for deletion (its processes may still run).
    pub terminating: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Container {
    pub name: Arc<str>,
    /// Runtime container id, no `containerd://` prefix; None until it has started.
    pub id: Option<Box<str>>,
}

/// Labels or annotations: a sorted boxed slice (a pod has a handful; a map allocates room for
/// eleven per node and is most of a pod's footprint).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Labels(Box<[(Box<str>, Box<str>)]>);

impl Labels {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.binary_search_by(|(k, _)| (**k).cmp(key)).ok().map(|i| &*self.0[i].1)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (&**k, &**v))
    }
}

impl<K: AsRef<str>, V: AsRef<str>> FromIterator<(K, V)> for Labels {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut v: Vec<(Box<str>, Box<str>)> =
            iter.into_iter().map(|(k, v)| (Box::from(k.as_ref()), Box::from(v.as_ref()))).collect();
        v.sort();
        v.dedup_by(|a, b| a.0 == b.0);
        Self(v.into_boxed_slice())
    }
}

impl serde::Serialize for Labels {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(k, v)| (&**k, &**v)))
    }
}

impl Pod {
    /// The compact form of an API object; None without the identifying fields (uid, namespace,
    /// name), which every real pod has.
    pub fn from_api(p: &core::Pod) -> Option<Self> {
        let meta = &p.metadata;
        let spec = p.spec.as_ref();
        let status = p.status.as_ref();
        let mut containers: Vec<Container> = Vec::new();
        let statuses = status.into_iter().flat_map(|s| {
            s.init_container_statuses.iter().flatten().chain(s.container_statuses.iter().flatten())
        });
        for cs in statuses {
            containers.push(Container {
                name: Arc::from(cs.name.as_str()),
                id: cs.container_id.as_deref().map(|id| Box::from(super::cgroup::status_container_id(id))),
            });
        }
        // Containers in the spec that have no status yet still have a name.
        for c in spec.into_iter().flat_map(|s| s.init_containers.iter().flatten().chain(s.containers.iter()))
        {
            if !containers.iter().any(|k| *k.name == c.name) {
                containers.push(Container { name: Arc::from(c.name.as_str()), id: None });
            }
        }
        let ips: Vec<IpAddr> = status
            .and_then(|s| s.pod_ips.as_ref())
            .into_iter()
            .flatten()
            .filter_map(|ip| ip.ip.parse().ok())
            .collect();
        Some(Self {
            uid: Arc::from(meta.uid.as_deref()?),
            namespace: Arc::from(meta.namespace.as_deref()?),
            name: Arc::from(meta.name.as_deref()?),
            service_account: Arc::from(
                spec.and_then(|s| s.service_account_name.as_deref()).unwrap_or("default"),
            ),
            labels: meta.labels.iter().flatten().collect(),
            annotations: meta
                .annotations
                .iter()
                .flatten()
                .filter(|(k, _)| k.starts_with(ANNOTATION_PREFIX))
                .collect(),
            containers: containers.into_boxed_slice(),
            ips: ips.into_boxed_slice(),
            host_network: spec.and_then(|s| s.host_network).unwrap_or(false),
            terminating: meta.deletion_timestamp.is_some(),
        })
    }

    /// `namespace/name`: the workload name audit records and metrics show.
    pub fn workload(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// The name of the container with runtime id `id`.
    pub fn container_named_by(&self, id: &str) -> Option<Arc<str>> {
        self.containers.iter().find(|c| c.id.as_deref() == Some(id)).map(|c| c.name.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_identity_fields_and_only_nodegate_annotations() {
        let api: core::Pod = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {
                "name": "researcher-0", "namespace": "agents", "uid": "8f3c2b1a-4d5e-4f60-8a7b-9c0d1e2f3a4b",
                "labels": {"team": "x"},
                "annotations": {"nodegate.io/intercept": "disabled", "kubectl.kubernetes.io/last-applied-configuration": "{...}"}
            },
            "spec": {"serviceAccountName": "researcher", "containers": [{"name": "agent"}, {"name": "sidecar"}]},
            "status": {"podIPs": [{"ip": "10.1.0.7"}], "containerStatuses": [
                {"name": "agent", "containerID": "containerd://abc123abc123abc1", "image": "i", "imageID": "", "ready": true, "restartCount": 0}
            ]}
        }))
        .unwrap();
        let p = Pod::from_api(&api).unwrap();
        assert_eq!(p.workload(), "agents/researcher-0");
        assert_eq!(&*p.service_account, "researcher");
        assert_eq!(p.annotations.len(), 1, "only nodegate.io/ annotations are kept");
        assert_eq!(p.container_named_by("abc123abc123abc1").as_deref(), Some("agent"));
        assert!(p.containers.iter().any(|c| &*c.name == "sidecar" && c.id.is_none()));
        assert_eq!(&*p.ips, &["10.1.0.7".parse::<IpAddr>().unwrap()]);
        assert_eq!(p.labels.get("team"), Some("x"));
        assert_eq!(p.labels.get("other"), None);
        assert!(!p.terminating);
    }
}
