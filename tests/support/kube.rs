//! The Kubernetes API server fixture (tests/python/kube_api.py) and the kubelet's cgroup
//! layouts, for the Kubernetes suites. The fixture serves real Kubernetes JSON for list and
//! watch; these helpers drive it through its control listener and build pod cgroups the way the
//! kubelet names them.
use std::{
    path::Path,
    process::{Command, Stdio},
};

use serde_json::{Value, json};

use crate::{Cgroup, Netns, Proc, repo_root, spawn};

pub struct KubeApi {
    _proc: Proc,
    /// API server URL (inside `netns`).
    pub api: String,
    control: String,
    netns: Option<String>,
}

impl KubeApi {
    /// Starts the fixture on `listen` (inside `netns` when given).
    pub fn start(listen: &str, netns: Option<&Netns>) -> Self {
        let script = repo_root().join("tests/python/kube_api.py").display().to_string();
        let out = std::env::temp_dir().join(crate::unique("kube-api-")).with_extension("json");
        let f = std::fs::File::create(&out).unwrap_or_else(|e| panic!("create {}: {e}", out.display()));
        let proc = spawn(
            Path::new("python3"),
            &[&script, "--listen", listen, "--bookmark-interval", "0.5"],
            netns,
            None,
            Stdio::from(f),
            Stdio::inherit(),
        );
        let mut line = Value::Null;
        crate::wait_until(std::time::Duration::from_secs(10), "kube API fixture up", || {
            line = std::fs::read_to_string(&out)
                .ok()
                .and_then(|t| t.lines().next().and_then(|l| serde_json::from_str(l).ok()))
                .unwrap_or(Value::Null);
            !line.is_null()
        });
        let _ = std::fs::remove_file(&out);
        Self {
            _proc: proc,
            api: line["api"].as_str().unwrap_or_default().to_string(),
            control: line["control"].as_str().unwrap_or_default().to_string(),
            netns: netns.map(|n| n.name.clone()),
        }
    }

    fn curl(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let url = format!("{}{path}", self.control);
        // The body goes through a file: a batch of pods is larger than an argument may be.
        let file = body.map(|b| {
            let f = std::env::temp_dir().join(crate::unique("kube-body-"));
            std::fs::write(&f, b.to_string()).unwrap_or_else(|e| panic!("write {}: {e}", f.display()));
            f
        });
        let data = file.as_ref().map(|f| format!("@{}", f.display()));
        let mut args: Vec<&str> = vec!["-s", "-m", "10", "-X", method, &url];
        if let Some(d) = &data {
            args.extend(["-H", "content-type: application/json", "--data-binary", d]);
        }
        let out = match &self.netns {
            Some(ns) => Command::new("ip").args(["netns", "exec", ns, "curl"]).args(&args).output(),
            None => Command::new("curl").args(&args).output(),
        }
        .unwrap_or_else(|e| panic!("curl: {e}"));
        if let Some(f) = file {
            let _ = std::fs::remove_file(f);
        }
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!("fixture {method} {path}: {e}: {}", String::from_utf8_lossy(&out.stdout))
        })
    }

    /// Creates or replaces an object of `resource` (`services`, `endpointslices`, ...).
    pub fn apply(&self, resource: &str, obj: &Value) -> Value {
        self.curl("POST", &format!("/{resource}"), Some(obj))
    }

    /// The stored object (`key`: `ns/name`, or `name` when cluster scoped), status included.
    pub fn object(&self, resource: &str, key: &str) -> Value {
        self.curl("GET", &format!("/{resource}/{key}"), None)
    }

    /// Deletes a cluster-scoped object.
    pub fn delete_cluster(&self, resource: &str, name: &str) {
        self.curl("DELETE", &format!("/{resource}/{name}"), None);
    }

    pub fn delete(&self, resource: &str, ns: &str, name: &str) {
        self.curl("DELETE", &format!("/{resource}/{ns}/{name}"), None);
    }

    pub fn apply_pod(&self, pod: &Value) -> Value {
        self.curl("POST", "/pods", Some(pod))
    }

    pub fn delete_pod(&self, ns: &str, name: &str) {
        self.curl("DELETE", &format!("/pods/{ns}/{name}"), None);
    }

    pub fn apply_namespace(&self, name: &str, labels: Value) {
        self.curl("POST", "/namespaces", Some(&json!({"metadata": {"name": name, "labels": labels}})));
    }

    pub fn apply_daemonset(&self, ns: &str, name: &str) {
        self.curl("POST", "/daemonsets", Some(&json!({"metadata": {"name": name, "namespace": ns}})));
    }

    pub fn delete_daemonset(&self, ns: &str, name: &str) {
        self.curl("DELETE", &format!("/daemonsets/{ns}/{name}"), None);
    }

    /// Drops the watch history and ends every watch (watchers get 410 and relist); `silent`
    /// pods are deleted without a DELETED event, so only a relist can notice.
    pub fn compact(&self, silent: &[(&str, &str)]) {
        self.curl("POST", "/compact", Some(&json!({"delete": silent})));
    }

    /// Applies `pods` at `rate` per second in the background.
    pub fn batch(&self, pods: &[Value], rate: u32) {
        self.curl("POST", "/batch", Some(&json!({"pods": pods, "rate": rate})));
    }

    /// Deletes `keys` (namespace, name) at `rate` per second in the background.
    pub fn batch_delete(&self, keys: &[(String, String)], rate: u32) {
        self.curl("POST", "/batch_delete", Some(&json!({"keys": keys, "rate": rate})));
    }

    pub fn down(&self) {
        self.curl("POST", "/down", None);
    }

    pub fn up(&self) {
        self.curl("POST", "/up", None);
    }

    pub fn stats(&self) -> Value {
        self.curl("GET", "/", None)
    }
}

/// A Pod as the API returns it, scheduled on `node`.
pub struct PodSpec<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub uid: &'a str,
    pub node: &'a str,
    pub service_account: &'a str,
    pub labels: Value,
    pub annotations: Value,
    /// (container name, runtime container id)
    pub containers: &'a [(&'a str, &'a str)],
}

impl PodSpec<'_> {
    pub fn json(&self) -> Value {
        let containers: Vec<Value> =
            self.containers.iter().map(|(n, _)| json!({"name": n, "image": "agent:1"})).collect();
        let statuses: Vec<Value> = self
            .containers
            .iter()
            .map(|(n, id)| {
                json!({"name": n, "containerID": format!("containerd://{id}"), "image": "agent:1",
                       "imageID": "sha256:0", "ready": true, "restartCount": 0, "started": true,
                       "state": {"running": {"startedAt": "2026-12-02T00:00:00Z"}}})
            })
            .collect();
        json!({
            "metadata": {"name": self.name, "namespace": self.namespace, "uid": self.uid,
                         "labels": self.labels, "annotations": self.annotations},
            "spec": {"nodeName": self.node, "serviceAccountName": self.service_account, "containers": containers},
            "status": {"phase": "Running", "podIP": "10.244.0.9", "podIPs": [{"ip": "10.244.0.9"}],
                       "containerStatuses": statuses}
        })
    }
}

/// The kubelet's cgroups for one pod: the pod cgroup and one container cgroup below it, under
/// `kubepods` (a path below the cgroup2 mount). Fields drop container first.
pub struct PodCgroups {
    pub container: Cgroup,
    pub pod: Cgroup,
}

/// QoS class as the kubelet lays pods out.
#[derive(Clone, Copy)]
pub enum Qos {
    Guaranteed,
    Burstable,
    BestEffort,
}

impl PodCgroups {
    /// systemd driver: `kubepods.slice/kubepods-<qos>.slice/kubepods-<qos>-pod<uid_>.slice/
    /// cri-containerd-<id>.scope` (guaranteed pods directly under kubepods.slice). The QoS
    /// parents must exist already (see [`qos_parents`]).
    pub fn systemd(kubepods: &str, qos: Qos, uid: &str, container_id: &str) -> Self {
        let u = uid.replace('-', "_");
        let pod = match qos {
            Qos::Guaranteed => format!("{kubepods}/kubepods-pod{u}.slice"),
            Qos::Burstable => format!("{kubepods}/kubepods-burstable.slice/kubepods-burstable-pod{u}.slice"),
            Qos::BestEffort => {
                format!("{kubepods}/kubepods-besteffort.slice/kubepods-besteffort-pod{u}.slice")
            }
        };
        let pod = Cgroup::new(&pod);
        let container = Cgroup::new(&format!("{}/cri-containerd-{container_id}.scope", pod.rel));
        Self { container, pod }
    }

    /// cgroupfs driver: `kubepods/<qos>/pod<uid>/<id>` (guaranteed: `kubepods/pod<uid>/<id>`).
    pub fn cgroupfs(kubepods: &str, qos: Qos, uid: &str, container_id: &str) -> Self {
        let pod = match qos {
            Qos::Guaranteed => format!("{kubepods}/pod{uid}"),
            Qos::Burstable => format!("{kubepods}/burstable/pod{uid}"),
            Qos::BestEffort => format!("{kubepods}/besteffort/pod{uid}"),
        };
        let pod = Cgroup::new(&pod);
        let container = Cgroup::new(&format!("{}/{container_id}", pod.rel));
        Self { container, pod }
    }
}

/// The QoS parent cgroups below `kubepods` for a driver (`systemd` or `cgroupfs`); drop them
/// after the pods.
pub fn qos_parents(kubepods: &str, systemd: bool) -> Vec<Cgroup> {
    let names: [&str; 2] = if systemd {
        ["kubepods-burstable.slice", "kubepods-besteffort.slice"]
    } else {
        ["burstable", "besteffort"]
    };
    names.iter().map(|n| Cgroup::new(&format!("{kubepods}/{n}"))).collect()
}

/// A random pod UID and a 64-hex container id.
pub fn ids() -> (String, String) {
    let mut b = [0u8; 48];
    for x in b.iter_mut() {
        *x = fastrand_u8();
    }
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    let uid = format!("{}-{}-4{}-8{}-{}", &h[0..8], &h[8..12], &h[13..16], &h[17..20], &h[20..32]);
    (uid, h[32..96].to_string())
}

fn fastrand_u8() -> u8 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static STATE: AtomicU64 = AtomicU64::new(0);
    let mut s = STATE.load(Ordering::Relaxed);
    if s == 0 {
        s = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            ^ u64::from(std::process::id());
    }
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    STATE.store(s, Ordering::Relaxed);
    (s >> 24) as u8
}
