//! The `kubernetes` section: running as the node agent of a cluster.
use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Kubernetes {
    /// Watch this node's pods and namespaces: identities become pods, and (with
    /// `intercept.enabled`) pods are intercepted when enrolled by label.
    pub enabled: bool,
    /// This node's name (the pods watched are those with `spec.nodeName` equal to it). Default:
    /// the `NODE_NAME` environment variable (the chart sets it from the downward API).
    pub node_name: Option<String>,
    /// API server URL. Default: the in-cluster service account (`KUBERNETES_SERVICE_HOST`), else
    /// the kubeconfig (`KUBECONFIG`, `~/.kube/config`).
    pub api_server: Option<String>,
    /// A kubeconfig file to use instead of the in-cluster account.
    pub kubeconfig: Option<PathBuf>,
    /// The kubelet's pod cgroup (`/kubepods.slice` for the systemd driver, `/kubepods` for
    /// cgroupfs), below the cgroup2 mount. Detected when unset. The programs are attached here
    /// once; pods are enrolled by map update.
    pub kubepods: Option<String>,
    pub enroll: Enroll,
    /// The node-local address pods are redirected to (a pod's 127.0.0.1 is its own). The agent
    /// puts it on `node_interface` (a dummy link it creates; `lo` where the kernel has no dummy
    /// driver) before binding, and `intercept.redirect_to` defaults to it with the transparent
    /// listener's port. Unset: nothing is created; set `intercept.redirect_to` yourself.
    pub node_address: Option<std::net::Ipv4Addr>,
    pub node_interface: String,
    /// This agent's own pod UID (the chart sets `POD_UID` from the downward API): never
    /// enrolled, whatever its labels say.
    pub own_pod_uid: Option<String>,
    /// The DaemonSet this agent runs in (`namespace/name`; default from `POD_NAMESPACE` and
    /// `NODEGATE_DAEMONSET`, which the chart sets). On shutdown the agent asks for it: gone or
    /// being deleted means `helm uninstall`, so programs, pins and the node-local address are
    /// removed even with `intercept.keep_pinned`; present means an upgrade or a restart, so they
    /// stay for the next agent.
    pub daemonset: Option<String>,
    /// How often pods whose cgroup has not appeared yet are looked for again.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub rescan_interval: Duration,
    /// The API server unreachable for this long marks /readyz degraded (the agent keeps serving
    /// from its last good view meanwhile).
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub stale_after: Duration,
    /// Watch the gateway's own resources (`nodegate.io/v1alpha1`: LLMProvider, ModelRoute,
    /// ModelAccess, LLMBudget, ModelServerPool, MCPServer, MCPPolicy, A2AAgent, A2AAccess) and
    /// merge them with this file.
    pub resources: bool,
    /// How often the merge runs again without a change, re-reading the Kubernetes Secrets that
    /// provider credentials name (a rotated Secret takes effect within this).
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub resync: Duration,
}

impl Default for Kubernetes {
    fn default() -> Self {
        Self {
            enabled: false,
            node_name: None,
            api_server: None,
            kubeconfig: None,
            kubepods: None,
            enroll: Enroll::default(),
            node_address: None,
            node_interface: "nodegate0".into(),
            own_pod_uid: None,
            daemonset: None,
            rescan_interval: Duration::from_secs(1),
            stale_after: Duration::from_secs(30),
            resources: true,
            resync: Duration::from_secs(30),
        }
    }
}

/// Which pods are intercepted: those whose namespace or own labels carry `label: value`, unless
/// the pod's annotation `opt_out` says `disabled`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Enroll {
    pub label: String,
    pub value: String,
    /// Annotation that keeps one pod out of an enrolled namespace (`<opt_out>: disabled`).
    pub opt_out: String,
    /// Extra label requirements a pod must meet (all of them) to be enrolled.
    pub pod_selector: BTreeMap<String, String>,
}

impl Default for Enroll {
    fn default() -> Self {
        Self {
            label: "nodegate.io/intercept".into(),
            value: "enabled".into(),
            opt_out: "nodegate.io/intercept".into(),
            pod_selector: BTreeMap::new(),
        }
    }
}
