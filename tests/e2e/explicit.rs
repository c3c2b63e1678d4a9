//! The explicit listener: agents that address nodegate directly as an HTTP proxy, with
//! absolute-form requests and CONNECT tunnels.
use nodegate_tests::*;

#[test]
fn absolute_form_and_connect_are_proxied_and_audited() {
    require_root(); // for the private network namespace
    let topo = Topology::new();
    let node = &topo.node;
    let _up = upstream(node, "upstream");
    let (dir, pin) = Gateway::prepare("explicit");
    let cfg = r#"
listeners: { explicit: 127.0.0.1:15080, transparent: null }
audit: { path: "{AUDIT}", flush_interval: 50ms }
"#;
    let gw = Gateway::start(&dir, &pin, cfg, Some(node), None);
    let svc = format!("{SVC_IP}:{UPSTREAM_PORT}");

    let v = get("127.0.0.1:15080", &format!("http://{svc}/absolute?q=1"), Some(node), None);
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["status"], 200);
    assert_eq!(v["body"]["path"], "/absolute?q=1", "the upstream must get origin-form: {v}");
    let rec = gw.wait_audit("http record", |r| r["kind"] == "http" && r["path"] == "/absolute?q=1");
    assert_eq!(rec["mode"], "explicit");
    assert_eq!(rec["target"], svc);

    let v = probe(&["tunnel", "127.0.0.1:15080", &svc, "/in-tunnel"], Some(node), None);
    assert_eq!(v["status"], 200, "{v}");
    assert_eq!(v["inner_status"], 200, "{v}");
    assert_eq!(v["body"]["path"], "/in-tunnel");
    let rec = gw.wait_audit("tunnel record", |r| r["kind"] == "connection" && r["protocol"] == "connect");
    assert_eq!(rec["target"], svc);
    assert!(rec["bytes_sent"].as_u64().unwrap_or(0) > 0, "{rec}");

    let conn = gw.wait_audit("explicit connection record", |r| {
        r["kind"] == "connection" && r["mode"] == "explicit" && r["protocol"] == "http1"
    });
    assert_eq!(conn["target"], "127.0.0.1:15080", "{conn}");

    // Errors are answered, not dropped.
    let v = get("127.0.0.1:15080", "/origin-form", Some(node), None);
    assert_eq!(v["status"], 400, "{v}");
    let v = probe(&["tunnel", "127.0.0.1:15080", &format!("{SVC_IP}:1"), "/"], Some(node), None);
    assert_eq!(v["status"], 502, "CONNECT to a closed port must be a 502: {v}");
    let v = get("127.0.0.1:15080", "http://127.0.0.1:15080/loop", Some(node), None);
    assert_eq!(v["status"], 508, "a request to the proxy itself must be refused: {v}");
}

#[test]
fn same_host_callers_are_named_by_their_cgroup() {
    require_root();
    let topo = Topology::new();
    let node = &topo.node;
    let cgroups = TestCgroups::new();
    let _up = upstream(node, "upstream");
    let (dir, pin) = Gateway::prepare("explicit-cgroup");
    let cfg = format!(
        r#"
listeners: {{ explicit: 127.0.0.1:15080, transparent: null }}
audit: {{ path: "{{AUDIT}}", flush_interval: 50ms }}
identities:
  - {{ name: local-agent, cgroup: "{}" }}
"#,
        cgroups.enrolled.rel
    );
    let gw = Gateway::start(&dir, &pin, &cfg, Some(node), None);
    let svc = format!("{SVC_IP}:{UPSTREAM_PORT}");
    let v = get("127.0.0.1:15080", &format!("http://{svc}/who"), Some(node), Some(&cgroups.enrolled));
    assert_eq!(v["status"], 200, "{v}");
    let rec = gw.wait_audit("http record", |r| r["kind"] == "http" && r["path"] == "/who");
    assert_eq!(rec["identity"], "local-agent", "the caller's cgroup must name it: {rec}");
    assert_eq!(rec["cgroup"], cgroups.enrolled.rel);
    // A caller in another cgroup is not given that name.
    let v = get("127.0.0.1:15080", &format!("http://{svc}/other"), Some(node), None);
    assert_eq!(v["status"], 200, "{v}");
    let rec = gw.wait_audit("http record", |r| r["kind"] == "http" && r["path"] == "/other");
    assert_ne!(rec["identity"], "local-agent", "{rec}");
}
