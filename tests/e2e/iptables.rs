//! The iptables fallback (nodes without cgroup eBPF): nat OUTPUT REDIRECT sends connections to
//! the same transparent listener, which finds the original destination with SO_ORIGINAL_DST and
//! marks its own upstream sockets so the rules let them through.
use nodegate_tests::*;

#[test]
fn iptables_redirect_reaches_the_original_destination() {
    require_root();
    let topo = Topology::new();
    let node = &topo.node;
    let _up = upstream(node, "upstream");
    let target = format!("{OTHER_IP}:{UPSTREAM_PORT}");
    let (dir, pin) = Gateway::prepare("iptables");
    let cfg = format!(
        r#"
listeners: {{ transparent: 0.0.0.0:{TRANSPARENT_PORT}, explicit: null }}
audit: {{ path: "{{AUDIT}}", flush_interval: 50ms }}
intercept: {{ enabled: true, mode: iptables, pin_path: "{{PIN}}" }}
"#
    );
    let gw = Gateway::start(&dir, &pin, &cfg, Some(node), None);
    assert!(!pin.exists(), "iptables mode must not load or pin eBPF");
    iptables_redirect(node, OTHER_IP, UPSTREAM_PORT, TRANSPARENT_PORT);

    let v = get(&target, "/via-iptables", Some(node), None);
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["body"]["path"], "/via-iptables");
    let rec = gw.wait_audit("audit record of the redirected request", |r| {
        r["kind"] == "http" && r["path"] == "/via-iptables"
    });
    assert_eq!(rec["target"], target, "SO_ORIGINAL_DST must give the pre-NAT destination: {rec}");
    assert_eq!(rec["mode"], "transparent");
    assert_eq!(rec["status"], 200);
}
