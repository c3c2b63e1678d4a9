//! Reading a pod and a container out of a cgroup path, as the kubelet lays them out.
//!
//! The kubelet puts every pod under a `kubepods` cgroup, in a QoS-class parent for burstable and
//! best-effort pods and directly under `kubepods` for guaranteed ones. Two drivers name them:
//!
//! - systemd: `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid with _>.slice/
//!   cri-containerd-<id>.scope` (`crio-<id>.scope`, `docker-<id>.scope`); guaranteed pods are
//!   `/kubepods.slice/kubepods-pod<uid>.slice`.
//! - cgroupfs: `/kubepods/burstable/pod<uid>/<id>`, `/kubepods/pod<uid>/<id>`.
//!
//! Anything may sit above `kubepods` (a kubelet `--cgroup-root`, a nested test hierarchy). The
//! pod segment gives the pod UID; the segment below it, when there is one, the container id.
//! CRI-O's `crio-conmon-<id>.scope` is its monitor process, not the container.

/// What a kubelet cgroup path says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodCgroup {
    /// The pod's UID in its canonical form (dashes, lower case).
    pub uid: String,
    /// Path of the pod's own cgroup (the prefix of the input up to the pod segment).
    pub pod_path: String,
    /// Container id (hex, no runtime prefix), when the path is a container's cgroup.
    pub container_id: Option<String>,
}

/// The pod (and container) a cgroup path belongs to; None when it is not below a kubelet pod.
pub fn parse(path: &str) -> Option<PodCgroup> {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let kubepods = segments.iter().position(|s| *s == "kubepods" || *s == "kubepods.slice")?;
    // The pod segment is directly below kubepods (guaranteed) or below its QoS class.
    for (i, seg) in segments.iter().enumerate().skip(kubepods + 1).take(2) {
        let Some(uid) = pod_uid(seg) else { continue };
        let pod_path = format!("/{}", segments[..=i].join("/"));
        let container_id = segments.get(i + 1).and_then(|c| container_id(c));
        return Some(PodCgroup { uid, pod_path, container_id });
    }
    None
}

/// `pod<uid>` (cgroupfs) or `kubepods[-<qos>]-pod<uid_with_underscores>.slice` (systemd).
fn pod_uid(segment: &str) -> Option<String> {
    let raw = if let Some(slice) = segment.strip_suffix(".slice") {
        let (_, uid) = slice.rsplit_once("-pod")?;
        uid
    } else {
        segment.strip_prefix("pod")?
    };
    let uid = raw.replace('_', "-").to_ascii_lowercase();
    is_uid(&uid).then_some(uid)
}

/// 8-4-4-4-12 hex digits.
fn is_uid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The container id in a container cgroup's name, for containerd, CRI-O and docker under
/// either driver.
fn container_id(segment: &str) -> Option<String> {
    let id = match segment.strip_suffix(".scope") {
        Some(scope) => {
            if scope.starts_with("crio-conmon-") {
                return None;
            }
            ["cri-containerd-", "crio-", "docker-", "cri-o-"].iter().find_map(|p| scope.strip_prefix(p))?
        }
        None => segment,
    };
    (id.len() >= 12 && id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| id.to_ascii_lowercase())
}

/// The container id of a pod status' `containerID` (`containerd://<id>`, `cri-o://<id>`,
/// `docker://<id>`).
pub fn status_container_id(container_id: &str) -> &str {
    container_id.split_once("://").map_or(container_id, |(_, id)| id)
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "8f3c2b1a-4d5e-4f60-8a7b-9c0d1e2f3a4b";
    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn uid_(u: &str) -> String {
        u.replace('-', "_")
    }

    #[test]
    fn systemd_driver_every_qos_class_and_runtime() {
        let u = uid_(UID);
        for (path, pod) in [
            (
                format!(
                    "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{u}.slice/cri-containerd-{ID}.scope"
                ),
                format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{u}.slice"),
            ),
            (
                format!(
                    "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{u}.slice/crio-{ID}.scope"
                ),
                format!("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{u}.slice"),
            ),
            (
                format!("/kubepods.slice/kubepods-pod{u}.slice/docker-{ID}.scope"),
                format!("/kubepods.slice/kubepods-pod{u}.slice"),
            ),
        ] {
            let got = parse(&path).unwrap_or_else(|| panic!("{path} not parsed"));
            assert_eq!(got.uid, UID, "{path}");
            assert_eq!(got.pod_path, pod, "{path}");
            assert_eq!(got.container_id.as_deref(), Some(ID), "{path}");
        }
    }

    #[test]
    fn cgroupfs_driver_every_qos_class() {
        for path in [
            format!("/kubepods/burstable/pod{UID}/{ID}"),
            format!("/kubepods/besteffort/pod{UID}/{ID}"),
            format!("/kubepods/pod{UID}/{ID}"),
        ] {
            let got = parse(&path).unwrap_or_else(|| panic!("{path} not parsed"));
            assert_eq!(got.uid, UID);
            assert_eq!(got.container_id.as_deref(), Some(ID));
            assert!(path.starts_with(&got.pod_path) && got.pod_path.ends_with(&format!("pod{UID}")));
        }
    }

    #[test]
    fn pod_level_nested_roots_and_non_pods() {
        let nested = format!("/ngtest-1/kubepods.slice/kubepods-pod{}.slice", uid_(UID));
        let got = parse(&nested).expect("nested kubepods");
        assert_eq!((got.uid.as_str(), got.container_id), (UID, None));
        assert_eq!(got.pod_path, nested);
        // CRI-O's monitor process is not the container.
        let conmon = format!("/kubepods/pod{UID}/crio-conmon-{ID}.scope");
        assert_eq!(parse(&conmon).and_then(|p| p.container_id), None);
        for not_pod in [
            "/system.slice/containerd.service",
            "/kubepods.slice/kubepods-burstable.slice",
            "/kubepods/burstable/podnot-a-uid/abc",
            "/user.slice/kubepods-pod1234.slice",
            "/",
        ] {
            assert_eq!(parse(not_pod), None, "{not_pod}");
        }
        // A pod segment deeper than the QoS level is not the kubelet's.
        assert_eq!(parse(&format!("/kubepods/a/b/pod{UID}")), None);
    }

    #[test]
    fn status_ids_lose_their_runtime_prefix() {
        assert_eq!(status_container_id(&format!("containerd://{ID}")), ID);
        assert_eq!(status_container_id(&format!("cri-o://{ID}")), ID);
        assert_eq!(status_container_id(ID), ID);
    }
}
