//! Kubernetes node agent end to end, as root, with real eBPF and real cgroups: nodegate watches
//! an API server fixture (tests/python/kube_api.py: real Kubernetes list/watch JSON, bookmarks,
//! 410 on compacted history, outages), attaches once at a kubepods cgroup laid out as the kubelet
//! does, and enrolls pods by label with map updates. Pods are processes in their container
//! cgroups inside a "pod" network namespace joined by veth to the "node" namespace where nodegate,
//! the fixture and the upstreams run. Assertions are on what the upstream saw (direct or through
//! the proxy) and on what the audit names each caller as.
use std::time::Duration;

use nodegate_tests::{kube::*, *};
use serde_json::json;

const NODE: &str = "node-1";
const LLM_PORT: u16 = 18111;
const API: &str = "127.0.0.1:16443";

const NODE_LOCAL: &str = "169.254.20.11";

/// `node_local`: the agent creates the node-local address and listens there; else the test
/// topology's node address is the redirect target.
fn config(kubepods: &str, api: &str, extra: &str, node_local: bool) -> String {
    let (listen, address, redirect) = if node_local {
        (format!("{NODE_LOCAL}:{TRANSPARENT_PORT}"), format!("node_address: {NODE_LOCAL}"), String::new())
    } else {
        (
            format!("0.0.0.0:{TRANSPARENT_PORT}"),
            String::new(),
            format!("redirect_to: {NODE_IP}:{TRANSPARENT_PORT}"),
        )
    };
    format!(
        r#"
listeners: {{ transparent: "{listen}", explicit: null }}
admin: {{ address: 127.0.0.1:15000 }}
log: {{ level: "nodegate=debug,info" }}
audit: {{ path: "{{AUDIT}}", flush_interval: 50ms }}
timeouts: {{ sniff: 300ms }}
kubernetes:
  enabled: true
  api_server: "{api}"
  node_name: {NODE}
  kubepods: "{kubepods}"
  rescan_interval: 200ms
  stale_after: 1s
  {address}
intercept:
  enabled: true
  {redirect}
  pin_path: "{{PIN}}"
  heartbeat: {{ interval: 200ms, timeout: 1s }}
  destinations:
    - {{ address: {SVC_IP}, ports: [{UPSTREAM_PORT}] }}
    - {{ address: {SVC_IP}, ports: [{LLM_PORT}], class: llm }}
{extra}
"#
    )
}

fn svc() -> String {
    format!("{SVC_IP}:{UPSTREAM_PORT}")
}

/// Whether a GET from `cg` in the pod namespace went through the proxy (the upstream saw the
/// proxy's address, not the pod's).
fn intercepted(topo: &Topology, cg: &Cgroup, path: &str) -> bool {
    let v = get(&svc(), path, Some(&topo.pod), Some(cg));
    assert_eq!(v["ok"], true, "GET {path} failed: {v}");
    let peer = v["body"]["peer"].as_str().unwrap_or_default();
    !peer.starts_with(&format!("{POD_IP}:"))
}

/// A chat completion POSTed from `cg` in the pod namespace: (HTTP status, body).
fn chat(topo: &Topology, cg: &Cgroup) -> (u16, serde_json::Value) {
    let url = format!("http://{SVC_IP}:{LLM_PORT}/v1/chat/completions");
    let body = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;
    post_json_status(&topo.pod, Some(cg), &url, body)
}

fn admin(topo: &Topology, path: &str) -> serde_json::Value {
    get("127.0.0.1:15000", path, Some(&topo.node), None)
}

fn label(on: bool) -> serde_json::Value {
    if on { json!({"nodegate.io/intercept": "enabled"}) } else { json!({}) }
}

/// A node (cgroupfs layout) with the fixture up, namespace `agents` (enrolled when
/// `ns_enrolled`) and pod `agents/worker-<n>` for each QoS class given, each labelled for
/// enrollment when `pod_enrolled`. Fields drop in order: fixture, pods, cgroups, namespaces.
struct Node {
    api: KubeApi,
    pods: Vec<PodCgroups>,
    _qos: Vec<Cgroup>,
    kubepods: Cgroup,
    _base: Cgroup,
    topo: Topology,
}

fn node(ns_enrolled: bool, pod_enrolled: bool, classes: &[Qos]) -> Node {
    require_root();
    let topo = Topology::new();
    let base = Cgroup::new(&format!("/{}", unique("ngk8s")));
    let kubepods = Cgroup::new(&format!("{}/kubepods", base.rel));
    let qos = qos_parents(&kubepods.rel, false);
    let api = KubeApi::start(API, Some(&topo.node));
    api.apply_namespace("agents", label(ns_enrolled));
    let mut pods = Vec::new();
    for (i, class) in classes.iter().enumerate() {
        let (uid, cid) = ids();
        pods.push(PodCgroups::cgroupfs(&kubepods.rel, *class, &uid, &cid));
        let name = format!("worker-{i}");
        let mut pod = PodSpec {
            namespace: "agents",
            name: &name,
            uid: &uid,
            node: NODE,
            service_account: "worker",
            labels: label(pod_enrolled),
            annotations: json!({}),
            containers: &[("main", &cid)],
        }
        .json();
        if i == 0 {
            // The first pod owns the pod namespace's address.
            pod["status"]["podIP"] = json!(POD_IP);
            pod["status"]["podIPs"] = json!([{ "ip": POD_IP }]);
        }
        api.apply_pod(&pod);
    }
    Node { api, pods, _qos: qos, kubepods, _base: base, topo }
}

#[test]
fn pods_enrolled_by_label_are_intercepted_and_named_as_pods() {
    require_root();
    let topo = Topology::new();
    let base = Cgroup::new(&format!("/{}", unique("ngk8s")));
    let kubepods = Cgroup::new(&format!("{}/kubepods.slice", base.rel));
    let qos = qos_parents(&kubepods.rel, true);
    let (u_res, c_res) = ids();
    let (u_int, c_int) = ids();
    let (u_bat, c_bat) = ids();
    let (u_opt, c_opt) = ids();
    let researcher = PodCgroups::systemd(&kubepods.rel, Qos::Burstable, &u_res, &c_res);
    let intern = PodCgroups::systemd(&kubepods.rel, Qos::Guaranteed, &u_int, &c_int);
    let batch = PodCgroups::systemd(&kubepods.rel, Qos::BestEffort, &u_bat, &c_bat);
    let opted = PodCgroups::systemd(&kubepods.rel, Qos::Burstable, &u_opt, &c_opt);

    let api = KubeApi::start(API, Some(&topo.node));
    api.apply_namespace("agents", label(true));
    api.apply_namespace("batch", label(false));
    let pod = |ns: &'static str, name: &'static str, uid: &str, sa: &'static str, labels, ann, cid: &str| {
        PodSpec {
            namespace: ns,
            name,
            uid,
            node: NODE,
            service_account: sa,
            labels,
            annotations: ann,
            containers: &[("agent", cid)],
        }
        .json()
    };
    api.apply_pod(&pod(
        "agents",
        "researcher-0",
        &u_res,
        "researcher",
        json!({"team": "x"}),
        json!({}),
        &c_res,
    ));
    api.apply_pod(&pod("agents", "intern-0", &u_int, "default", json!({"team": "y"}), json!({}), &c_int));
    api.apply_pod(&pod("batch", "batch-0", &u_bat, "default", json!({}), json!({}), &c_bat));
    api.apply_pod(&pod(
        "agents",
        "opted-out-0",
        &u_opt,
        "default",
        json!({}),
        json!({"nodegate.io/intercept": "disabled"}),
        &c_opt,
    ));
    // A pod on another node never enters this node's view.
    let (u_far, c_far) = ids();
    let mut far = pod("agents", "elsewhere-0", &u_far, "default", json!({}), json!({}), &c_far);
    far["spec"]["nodeName"] = json!("node-2");
    api.apply_pod(&far);

    let _upstream = upstream(&topo.node, "upstream");
    let _sim = llm_sim(&topo.node, &format!("0.0.0.0:{LLM_PORT}"), "openai-sim", &["--tokens", "3"]);
    let policy = format!(
        r#"llm:
  default: deny
  providers:
    - {{ name: openai, kind: openai, endpoint: "http://{SVC_IP}:{LLM_PORT}" }}
  allow:
    - {{ selector: {{ namespaces: [agents], service_accounts: [researcher], labels: {{ team: x }} }}, models: ["*"] }}"#
    );
    let (dir, pin) = Gateway::prepare("k8s");
    let gw =
        Gateway::start(&dir, &pin, &config(&kubepods.rel, &api.api, &policy, false), Some(&topo.node), None);

    // Enrollment is asynchronous to readiness: wait for the namespace-labelled pods.
    wait_until(Duration::from_secs(10), "researcher pod enrolled", || {
        intercepted(&topo, &researcher.container, "/probe")
    });
    assert!(intercepted(&topo, &intern.container, "/intern"), "namespace label enrolls every pod in it");
    assert!(!intercepted(&topo, &batch.container, "/batch"), "a pod in an unlabelled namespace was touched");
    assert!(!intercepted(&topo, &opted.container, "/opted"), "the opt-out annotation was ignored");

    // Identity is the pod: the audit names it, and pod selectors decide the LLM allow list.
    let rec = gw.wait_audit("researcher http record", |r| r["kind"] == "http" && r["path"] == "/probe");
    assert_eq!(rec["identity"], "agents/researcher-0", "{rec}");
    assert_eq!(rec["pod"]["service_account"], "researcher", "{rec}");
    assert_eq!(rec["pod"]["container"], "agent", "{rec}");
    assert_eq!(rec["pod"]["uid"], u_res.as_str(), "{rec}");
    let (status, body) = chat(&topo, &researcher.container);
    assert_eq!(status, 200, "researcher (namespace agents, sa researcher, team x) is allowed: {body}");
    let (status, body) = chat(&topo, &intern.container);
    assert_eq!(status, 403, "intern (team y, sa default) matches no rule; llm.default is deny: {body}");
    let denied = gw.wait_audit("intern llm record", |r| r["kind"] == "llm" && r["decision"] == "deny");
    assert_eq!(denied["identity"], "agents/intern-0", "{denied}");
    assert_eq!(denied["rule"], "llm.default", "{denied}");

    // Labelled after it started: intercepted with nothing restarted. Unlabelled: left alone.
    api.apply_pod(&pod("batch", "batch-0", &u_bat, "default", label(true), json!({}), &c_bat));
    let took = wait_until(Duration::from_secs(5), "batch pod enrolled by its new label", || {
        intercepted(&topo, &batch.container, "/batch-labelled")
    });
    eprintln!("pod label -> intercepted in {took:?}");
    let rec = gw.wait_audit("batch record", |r| r["path"] == "/batch-labelled");
    assert_eq!(rec["identity"], "batch/batch-0", "{rec}");
    api.apply_pod(&pod("batch", "batch-0", &u_bat, "default", label(false), json!({}), &c_bat));
    wait_until(Duration::from_secs(5), "batch pod unenrolled when its label went", || {
        !intercepted(&topo, &batch.container, "/batch-unlabelled")
    });

    // What `nodegate pods` shows.
    let pods = admin(&topo, "/pods");
    let lines = pods["body"]["pods"].as_array().cloned().unwrap_or_default();
    let state = |id: &str| {
        lines.iter().find(|p| p["identity"] == id).map(|p| p["enrollment"].clone()).unwrap_or_default()
    };
    assert_eq!(lines.len(), 4, "the pod on node-2 must not be in this node's view: {pods}");
    assert_eq!(state("agents/researcher-0")["state"], "enrolled", "{pods}");
    assert_eq!(state("agents/researcher-0")["by"], "namespace label", "{pods}");
    assert_eq!(state("agents/opted-out-0")["reason"], "opted out by annotation", "{pods}");
    assert_eq!(state("batch/batch-0")["reason"], "not labelled", "{pods}");
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &topo.node.name])
        .arg(nodegate_bin())
        .args(["pods", "--admin", "127.0.0.1:15000"])
        .output()
        .unwrap_or_else(|e| panic!("nodegate pods: {e}"));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "nodegate pods failed: {}", String::from_utf8_lossy(&out.stderr));
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("agents/researcher-0") && l.contains("researcher") && l.contains(" yes ")),
        "{table}"
    );

    // Deleting the pod stops interception of whatever is left in its cgroup.
    api.delete_pod("agents", "researcher-0");
    wait_until(Duration::from_secs(5), "deleted pod unenrolled", || {
        !intercepted(&topo, &researcher.container, "/after-delete")
    });
    let m = admin(&topo, "/metrics");
    let text = m["body"].as_str().unwrap_or_default();
    assert!(text.contains("nodegate_kubernetes_pods 3"), "{text}");
    assert!(text.contains("nodegate_kubernetes_pods_enrolled 1"), "only intern-0 is left enrolled: {text}");

    drop(gw);
    drop((researcher, intern, batch, opted));
    drop(qos);
}

#[test]
fn cgroupfs_layout_outage_and_relist_keep_the_view_right() {
    let n = node(false, true, &[Qos::Burstable, Qos::Guaranteed]);
    let (topo, api, kubepods) = (&n.topo, &n.api, &n.kubepods);
    let (agent, other) = (&n.pods[0], &n.pods[1]);
    let _upstream = upstream(&topo.node, "upstream");
    let (dir, pin) = Gateway::prepare("k8s-outage");
    let mut gw =
        Gateway::start(&dir, &pin, &config(&kubepods.rel, &api.api, "", true), Some(&topo.node), None);
    let addrs = || {
        let out = std::process::Command::new("ip").args(["-n", &topo.node.name, "-4", "-o", "addr"]).output();
        out.map(|o| String::from_utf8_lossy(&o.stdout).to_string()).unwrap_or_default()
    };
    assert!(
        addrs().contains(&format!("inet {NODE_LOCAL}/32")),
        "the agent must create its node-local address: {}",
        addrs()
    );
    wait_until(Duration::from_secs(10), "pods enrolled by pod label", || {
        intercepted(topo, &agent.container, "/a") && intercepted(topo, &other.container, "/b")
    });
    let rec = gw.wait_audit("worker record", |r| r["path"] == "/a");
    assert_eq!(rec["identity"], "agents/worker-0", "{rec}");
    assert_eq!(rec["pod"]["container"], "main", "{rec}");
    assert!(admin(topo, "/readyz")["body"].as_str().unwrap_or_default().contains("kubernetes: connected"));

    // The API server goes away: the agent keeps its view and its enrollment, and says so.
    api.down();
    wait_until(Duration::from_secs(10), "readyz reports the outage", || {
        admin(topo, "/readyz")["body"].as_str().unwrap_or_default().contains("unreachable")
    });
    let r = admin(topo, "/readyz");
    assert_eq!(r["status"], 200, "a node agent keeps serving its last good view: {r}");
    let text = admin(topo, "/metrics")["body"].as_str().unwrap_or_default().to_string();
    assert!(text.contains("nodegate_kubernetes_api_connected{resource=\"pods\"} 0"), "{text}");
    assert!(intercepted(topo, &agent.container, "/during-outage"), "enrollment must survive an API outage");
    let rec = gw.wait_audit("outage record", |r| r["path"] == "/during-outage");
    assert_eq!(rec["identity"], "agents/worker-0", "pods are still named during the outage: {rec}");

    // Back, then the history is compacted while worker-1 is deleted with no event a watch could
    // see: only the relist after 410 Gone can notice, and it must.
    api.up();
    wait_until(Duration::from_secs(15), "watch reconnected", || {
        admin(topo, "/metrics")["body"]
            .as_str()
            .unwrap_or_default()
            .contains("nodegate_kubernetes_api_connected{resource=\"pods\"} 1")
    });
    api.compact(&[("agents", "worker-1")]);
    wait_until(Duration::from_secs(15), "relist dropped the silently deleted pod", || {
        !intercepted(topo, &other.container, "/after-relist")
    });
    assert!(api.stats()["expired"].as_u64().unwrap_or(0) >= 1, "no watch was answered 410: {}", api.stats());
    assert!(
        intercepted(topo, &agent.container, "/still"),
        "the relist must keep the pod that is still there"
    );

    // A clean stop (not an upgrade that keeps the programs) takes its address away too.
    gw.stop();
    assert!(!addrs().contains(NODE_LOCAL), "the node-local address outlived the agent: {}", addrs());
    drop(gw);
}

/// A DaemonSet pod cannot tell a rolling update from `helm uninstall` by its SIGTERM; its
/// DaemonSet can. Present: programs, pins and the node-local address stay for the next agent.
/// Gone: nothing is left behind.
#[test]
fn upgrade_keeps_programs_and_uninstall_leaves_nothing() {
    let n = node(true, false, &[Qos::BestEffort]);
    let (topo, api, kubepods, agent) = (&n.topo, &n.api, &n.kubepods, &n.pods[0]);
    api.apply_daemonset("nodegate-system", "nodegate");
    let _upstream = upstream(&topo.node, "upstream");
    let (dir, pin) = Gateway::prepare("k8s-upgrade");
    let cfg = config(&kubepods.rel, &api.api, "", true)
        .replace(
            "  rescan_interval: 200ms",
            "  rescan_interval: 200ms\n  daemonset: nodegate-system/nodegate",
        )
        .replace("intercept:\n  enabled: true\n", "intercept:\n  enabled: true\n  keep_pinned: true\n");
    assert!(cfg.contains("keep_pinned: true") && cfg.contains("daemonset:"), "{cfg}");
    let addrs = || {
        let out = std::process::Command::new("ip").args(["-n", &topo.node.name, "-4", "-o", "addr"]).output();
        out.map(|o| String::from_utf8_lossy(&o.stdout).to_string()).unwrap_or_default()
    };

    let mut first = Gateway::start(&dir, &pin, &cfg, Some(&topo.node), None);
    wait_until(Duration::from_secs(10), "pod enrolled", || intercepted(topo, &agent.container, "/v1"));
    first.stop();
    let verdict = |gw: &Gateway| {
        gw.log_text().lines().find(|l| l.contains("upgrade or uninstall?")).unwrap_or_default().to_string()
    };
    assert!(verdict(&first).contains("Some(false)"), "{}", first.log_text());
    assert!(
        pin.join("links").read_dir().is_ok_and(|mut d| d.next().is_some()),
        "an upgrade must keep the links pinned"
    );
    assert!(addrs().contains(NODE_LOCAL), "an upgrade must keep the node-local address: {}", addrs());

    let mut second = Gateway::start(&dir, &pin, &cfg, Some(&topo.node), None);
    wait_until(Duration::from_secs(10), "the new agent serves the pod", || {
        intercepted(topo, &agent.container, "/v2")
    });
    api.delete_daemonset("nodegate-system", "nodegate");
    second.stop();
    assert!(verdict(&second).contains("Some(true)"), "{}", second.log_text());
    assert!(!pin.exists(), "uninstall left pins behind: {:?}", pin.read_dir().map(|d| d.count()));
    assert!(!addrs().contains(NODE_LOCAL), "uninstall left the node-local address: {}", addrs());
    assert!(!intercepted(topo, &agent.container, "/after"), "programs still attached after uninstall");
    drop((first, second));
}

/// A destination may name a Service; its ClusterIP and ports come from the API and follow it.
#[test]
fn a_service_destination_follows_the_api() {
    let n = node(true, false, &[Qos::Guaranteed]);
    let (topo, api, kubepods, agent) = (&n.topo, &n.api, &n.kubepods, &n.pods[0]);
    let service = |ports: &[u16]| {
        let ports: Vec<_> =
            ports.iter().map(|p| json!({"name": format!("p{p}"), "port": p, "protocol": "TCP"})).collect();
        json!({"metadata": {"name": "upstream", "namespace": "agents"},
               "spec": {"type": "ClusterIP", "clusterIP": SVC_IP, "clusterIPs": [SVC_IP], "ports": ports}})
    };
    api.apply("services", &service(&[UPSTREAM_PORT]));
    let _upstream = upstream(&topo.node, "upstream");
    let (dir, pin) = Gateway::prepare("k8s-svc");
    let cfg = config(&kubepods.rel, &api.api, "", false)
        .replace(
            &format!("    - {{ address: {SVC_IP}, ports: [{UPSTREAM_PORT}] }}\n"),
            "    - { service: upstream.agents }\n",
        )
        .replace("explicit: null", "explicit: \"0.0.0.0:15080\"");
    assert!(cfg.contains("service: upstream.agents"), "{cfg}");
    let gw = Gateway::start(&dir, &pin, &cfg, Some(&topo.node), None);
    wait_until(Duration::from_secs(10), "service destination intercepted", || {
        intercepted(topo, &agent.container, "/svc")
    });
    let rec = gw.wait_audit("service record", |r| r["path"] == "/svc");
    assert_eq!(rec["identity"], "agents/worker-0", "{rec}");

    // The Service stops exposing the port: the table follows; back again: intercepted again.
    api.apply("services", &service(&[9999]));
    wait_until(Duration::from_secs(10), "port gone from the table", || {
        !intercepted(topo, &agent.container, "/svc-port-gone")
    });
    api.apply("services", &service(&[UPSTREAM_PORT]));
    wait_until(Duration::from_secs(10), "port back", || intercepted(topo, &agent.container, "/svc-back"));
    // The explicit listener names a caller from a pod's own network by its pod IP; a caller
    // on the node with no cgroup mapping stays unknown.
    for (ns, path) in [(&topo.pod, "/explicit-from-pod"), (&topo.node, "/explicit-from-node")] {
        let url = format!("http://{SVC_IP}:{UPSTREAM_PORT}{path}");
        let out = std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns.name,
                "curl",
                "-s",
                "-m",
                "10",
                "-x",
                &format!("http://{NODE_IP}:15080"),
                &url,
            ])
            .output()
            .unwrap_or_else(|e| panic!("curl: {e}"));
        assert!(out.status.success(), "explicit request {path} failed");
    }
    let rec = gw.wait_audit("explicit record from the pod", |r| {
        r["kind"] == "http" && r["path"] == "/explicit-from-pod"
    });
    assert_eq!(rec["mode"], "explicit", "{rec}");
    assert_eq!(rec["identity"], "agents/worker-0", "a pod calling from its own address is that pod: {rec}");
    assert_eq!(rec["pod"]["service_account"], "worker", "{rec}");
    let rec = gw.wait_audit("explicit record from the node", |r| r["path"] == "/explicit-from-node");
    assert_ne!(rec["identity"], "agents/worker-0", "the node's own address is no pod's: {rec}");

    api.delete("services", "agents", "upstream");
    wait_until(Duration::from_secs(10), "deleted service leaves the table", || {
        !intercepted(topo, &agent.container, "/svc-deleted")
    });
    drop(gw);
}
