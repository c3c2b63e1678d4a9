//! Transparent interception end to end, as root, with real eBPF: a "node" namespace holding
//! nodegate and an upstream server, a "pod" namespace joined by veth, clients in enrolled and
//! non-enrolled cgroups.
use std::time::{Duration, Instant};

use nodegate_tests::*;

struct Setup {
    // Field order is drop order: processes, then gateway, then cgroups (children first), then
    // namespaces.
    _upstream: Proc,
    gw: Gateway,
    enrolled: Cgroup,
    other: Cgroup,
    _parent: Cgroup,
    topo: Topology,
    cg: String,
}

fn config(cg: &str, fail: &str) -> String {
    format!(
        r#"
listeners:
  transparent: 0.0.0.0:{TRANSPARENT_PORT}
  explicit: 127.0.0.1:15080
admin: {{ address: 127.0.0.1:15000 }}
log: {{ level: "nodegate=debug,info" }}
audit: {{ path: "{{AUDIT}}", flush_interval: 50ms }}
timeouts: {{ sniff: 300ms, idle: 30s }}
identities:
  - {{ name: agent-a, cgroup: "{cg}/enrolled" }}
intercept:
  enabled: true
  cgroups: ["{cg}/enrolled"]
  redirect_to: {NODE_IP}:{TRANSPARENT_PORT}
  pin_path: "{{PIN}}"
  fail: {fail}
  heartbeat: {{ interval: 200ms, timeout: 1s }}
  destinations:
    - {{ address: {SVC_IP}, ports: [{UPSTREAM_PORT}] }}
"#
    )
}

/// Builds the topology; the gateway runs in the node namespace, inside `proxy_cgroup`'s choice.
fn setup(fail: &str, proxy_in_enrolled: bool) -> Setup {
    require_root();
    let topo = Topology::new();
    let cg = format!("/{}", unique("ngtest"));
    let parent = Cgroup::new(&cg);
    let enrolled = Cgroup::new(&format!("{cg}/enrolled"));
    let other = Cgroup::new(&format!("{cg}/other"));
    let upstream = upstream(&topo.node, "upstream");
    let (dir, pin) = Gateway::prepare("transparent");
    let proxy_cg = if proxy_in_enrolled { Some(&enrolled) } else { None };
    let gw = Gateway::start(&dir, &pin, &config(&cg, fail), Some(&topo.node), proxy_cg);
    Setup { _upstream: upstream, gw, enrolled, other, _parent: parent, topo, cg }
}

fn svc() -> String {
    format!("{SVC_IP}:{UPSTREAM_PORT}")
}

fn peer_ip(v: &Value) -> String {
    v["body"]["peer"]
        .as_str()
        .unwrap_or_default()
        .rsplit_once(':')
        .map(|(ip, _)| ip.to_string())
        .unwrap_or_default()
}

#[test]
fn enrolled_client_is_redirected_others_go_direct() {
    // The proxy itself sits in the enrolled cgroup: its own upstream connection to the
    // intercepted address must not be looped back to itself.
    let s = setup("open", true);

    let v = get(&svc(), "/hello", Some(&s.topo.pod), Some(&s.enrolled));
    assert_eq!(v["ok"], true, "enrolled client request failed: {v}");
    assert_eq!(v["status"], 200);
    assert_eq!(v["body"]["path"], "/hello");
    assert_ne!(
        peer_ip(&v),
        POD_IP,
        "upstream saw the pod directly; the request did not go through the proxy: {v}"
    );
    // The application itself still believes it talks to the original destination.
    assert_eq!(v["peer"], svc(), "getpeername() must show the original destination: {v}");

    let rec =
        s.gw.wait_audit("http audit record for /hello", |r| r["kind"] == "http" && r["path"] == "/hello");
    assert_eq!(rec["identity"], "agent-a");
    assert_eq!(rec["cgroup"], format!("{}/enrolled", s.cg));
    assert_eq!(rec["target"], svc(), "audit must carry the original destination");
    assert_eq!(rec["mode"], "transparent");
    assert_eq!(rec["status"], 200);
    let conn =
        s.gw.wait_audit("connection audit record", |r| r["kind"] == "connection" && r["target"] == svc());
    assert_eq!(conn["identity"], "agent-a");
    assert!(conn["peer"].as_str().unwrap_or_default().starts_with(POD_IP), "{conn}");
    assert!(
        conn["bytes_sent"].as_u64().unwrap_or(0) > 0 && conn["bytes_received"].as_u64().unwrap_or(0) > 0,
        "{conn}"
    );

    // Not enrolled: straight to the upstream.
    let v = get(&svc(), "/direct", Some(&s.topo.pod), Some(&s.other));
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(peer_ip(&v), POD_IP, "a process outside the enrolled cgroup was redirected: {v}");

    // Enrolled, but a destination not in the table: direct.
    let other = format!("{OTHER_IP}:{UPSTREAM_PORT}");
    let v = get(&other, "/not-intercepted", Some(&s.topo.pod), Some(&s.enrolled));
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(peer_ip(&v), POD_IP, "a non-intercepted destination was redirected: {v}");

    assert!(
        s.gw.counter("own_traffic") >= 1,
        "the proxy's own upstream connect was not recognised by its mark: {}",
        s.gw.status()
    );
    assert_eq!(
        s.gw.counter("redirected"),
        1,
        "exactly one connection should have been redirected: {}",
        s.gw.status()
    );
    assert_eq!(s.gw.counter("rekeyed"), 1);
    let st = s.gw.status();
    assert_eq!(
        st["links"].as_array().map(Vec::len),
        Some(7),
        "connect4, connect6, sendmsg4, sendmsg6, getpeername4, getpeername6 and sock_ops on one cgroup: {st}"
    );

    // The eBPF side's own log line reaches the proxy's log at debug level (aya-log).
    assert!(
        s.gw.log_text().contains("connect4 redirected port 8080"),
        "no eBPF log line:\n{}",
        s.gw.log_text()
    );

    // Admin: ready, metrics per identity (with the kernel's counters), config dump.
    let ready = get("127.0.0.1:15000", "/readyz", Some(&s.topo.node), None);
    assert_eq!(ready["status"], 200, "{ready}");
    let m = get("127.0.0.1:15000", "/metrics", Some(&s.topo.node), None);
    let text = m["body"].as_str().unwrap_or_default().to_string();
    for want in [
        "nodegate_intercept_redirects_total{outcome=\"redirected\"} 1",
        "nodegate_requests_total{identity=\"agent-a\",method=\"GET\",status=\"2xx\"} 1",
        "nodegate_connections_total{mode=\"transparent\",identity=\"agent-a\",protocol=\"http1\"} 1",
        "nodegate_bytes_total{identity=\"agent-a\",direction=\"sent\"}",
        "nodegate_intercept_table_entries 1",
    ] {
        assert!(text.contains(want), "metrics lack {want}:\n{text}");
    }
    let dump = get("127.0.0.1:15000", "/config_dump", Some(&s.topo.node), None);
    assert_eq!(dump["body"]["intercept"]["cgroups"][0], format!("{}/enrolled", s.cg), "{dump}");
}

#[test]
fn fail_open_when_the_proxy_dies_and_a_restart_takes_over_the_pinned_maps() {
    let mut s = setup("open", false);
    let v = get(&svc(), "/before", Some(&s.topo.pod), Some(&s.enrolled));
    assert_ne!(peer_ip(&v), POD_IP, "not redirected while the proxy is up: {v}");

    // Dead proxy: the programs stay attached (pinned links) but the heartbeat goes stale.
    s.gw.proc.kill9();
    let killed = Instant::now();
    let mut last = Value::Null;
    wait_until(Duration::from_secs(6), "client connections to go direct after the proxy died", || {
        last = get(&svc(), "/after", Some(&s.topo.pod), Some(&s.enrolled));
        last["ok"] == true && peer_ip(&last) == POD_IP
    });
    let took = killed.elapsed();
    // Heartbeat timeout is 1 s; allow scheduling slack on a shared machine, but not much more.
    assert!(took < Duration::from_secs(4), "fail-open took {took:?} with a 1 s heartbeat timeout");
    let status = s.gw.status();
    assert_eq!(status["heartbeat_fresh"], false, "{status}");
    let fail_open_before = s.gw.counter("fail_open");
    assert!(fail_open_before >= 1, "{status}");
    let redirected_before = s.gw.counter("redirected");

    // A new proxy on the same pin path reuses the maps (counters survive) and replaces the links.
    let dir = s.gw.dir.clone();
    let pin = s.gw.pin.clone();
    let gw2 = Gateway::start(&dir, &pin, &config(&s.cg, "open"), Some(&s.topo.node), None);
    assert!(
        gw2.counter("fail_open") >= fail_open_before,
        "counters were reset: the pinned maps were not reused"
    );
    assert!(gw2.counter("redirected") >= redirected_before);
    let links = gw2.status()["links"].clone();
    let mine = format!("_p{}-", gw2.proc.pid());
    assert!(
        links
            .as_array()
            .is_some_and(|l| l.len() == 7 && l.iter().all(|n| n.as_str().unwrap_or("").contains(&mine))),
        "old links not replaced: {links}"
    );
    let v = get(&svc(), "/restarted", Some(&s.topo.pod), Some(&s.enrolled));
    assert_eq!(v["ok"], true, "{v}");
    assert_ne!(peer_ip(&v), POD_IP, "the restarted proxy does not intercept: {v}");
    assert_eq!(gw2.counter("redirected"), redirected_before + 1);
    drop(gw2);
}

/// An upgrade without a gap under interception (the chart's surge rollout): a new nodegate on the
/// same pin path takes the programs over and binds its listeners beside the old one
/// (`listeners.reuse_port`); the old one, told to stop with `keep_pinned`, finishes the request
/// it was serving while every new intercepted connection is answered, and leaves the programs
/// to its successor. Fail-closed, so a gap would show as refused connections.
#[test]
fn a_new_nodegate_takes_over_interception_while_the_old_one_drains() {
    require_root();
    let topo = Topology::new();
    in_netns(&topo.node, || std::fs::write("/proc/sys/net/ipv4/tcp_migrate_req", "1"))
        .unwrap_or_else(|e| panic!("net.ipv4.tcp_migrate_req (Linux 5.14+): {e}"));
    let cg = format!("/{}", unique("ngtest"));
    let _parent = Cgroup::new(&cg);
    let enrolled = Cgroup::new(&format!("{cg}/enrolled"));
    let _upstream = upstream(&topo.node, "upstream");
    let cfg = config(&cg, "closed")
        .replace("listeners:\n", "listeners:\n  reuse_port: true\n")
        .replace("  fail: closed\n", "  fail: closed\n  keep_pinned: true\n");
    let (dir, pin) = Gateway::prepare("overlap-old");
    let mut old = Gateway::start(&dir, &pin, &cfg, Some(&topo.node), None);
    let first = get(&svc(), "/first", Some(&topo.pod), Some(&enrolled));
    assert!(first["ok"] == true && peer_ip(&first) != POD_IP, "not intercepted: {first}");

    // A request in flight on the old process (the upstream answers /slow after 1.5 s).
    let accepted = old.counter("redirected");
    let slow = spawn_child(
        &probe_bin(),
        &["get", &svc(), "/slow-in-flight"],
        Some(&topo.pod),
        Some(&enrolled),
        std::process::Stdio::piped(),
        std::process::Stdio::null(),
    );
    wait_until(Duration::from_secs(5), "the slow request redirected", || {
        old.counter("redirected") > accepted
    });

    // The successor starts on the same pins while the old one serves.
    let (dir2, _) = Gateway::prepare("overlap-new");
    let new = Gateway::start(&dir2, &pin, &cfg, Some(&topo.node), None);
    let links = new.status()["links"].clone();
    let mine = format!("_p{}-", new.proc.pid());
    assert!(
        links
            .as_array()
            .is_some_and(|l| !l.is_empty() && l.iter().all(|n| n.as_str().unwrap_or("").contains(&mine))),
        "the new process did not take the links over: {links}"
    );
    let stop = std::sync::atomic::AtomicBool::new(false);
    let results = std::thread::scope(|scope| {
        let load = scope.spawn(|| {
            let mut out = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                out.push(get(&svc(), "/during", Some(&topo.pod), Some(&enrolled)));
                std::thread::sleep(Duration::from_millis(20));
            }
            out
        });
        std::thread::sleep(Duration::from_millis(300));
        old.stop();
        std::thread::sleep(Duration::from_millis(500));
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        load.join().unwrap_or_else(|e| panic!("load: {e:?}"))
    });
    let out = slow.wait_with_output().unwrap_or_else(|e| panic!("wait: {e}"));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    assert!(
        v["ok"] == true && v["status"] == 200 && v["body"]["path"] == "/slow-in-flight",
        "the request in flight on the old process was dropped: {v}"
    );
    assert!(results.len() >= 5, "too few connections during the handover: {}", results.len());
    let failed: Vec<_> =
        results.iter().filter(|v| !(v["ok"] == true && v["status"] == 200 && peer_ip(v) != POD_IP)).collect();
    assert!(
        failed.is_empty(),
        "{} of {} intercepted connections failed or went direct during the handover: {failed:?}",
        failed.len(),
        results.len()
    );
    // The old one left the pins alone: they are the successor's, for the next restart.
    assert!(old.log_text().contains("leaving programs attached"), "{}", old.log_text());
    assert_eq!(new.status()["links"], links, "the successor's pinned links after the old one stopped");
    // The successor governs alone, on the programs it took over.
    let after = get(&svc(), "/after", Some(&topo.pod), Some(&enrolled));
    assert!(after["ok"] == true && peer_ip(&after) != POD_IP, "{after}");
    new.wait_audit("the successor's record of /after", |r| {
        r["path"] == "/after" || r.to_string().contains("/after")
    });
    drop(new);
    drop(old);
}

#[test]
fn fail_closed_refuses_while_the_proxy_is_dead() {
    let mut s = setup("closed", false);
    let v = get(&svc(), "/up", Some(&s.topo.pod), Some(&s.enrolled));
    assert_eq!(v["ok"], true, "{v}");
    s.gw.proc.kill9();
    let mut last = Value::Null;
    wait_until(
        Duration::from_secs(6),
        "connections to be refused after the proxy died (fail-closed)",
        || {
            // Right after the kill the heartbeat is still fresh: connections are redirected to the
            // dead listener (ECONNREFUSED) until it goes stale, then refused by the program.
            last = get(&svc(), "/down", Some(&s.topo.pod), Some(&s.enrolled));
            last["errno"] == libc::EPERM
        },
    );
    assert_eq!(last["errno"], libc::EPERM, "fail-closed should refuse connect() with EPERM: {last}");
    assert!(s.gw.counter("fail_closed") >= 1);
    // Processes outside the enrolled cgroup are never affected.
    let v = get(&svc(), "/other", Some(&s.topo.pod), Some(&s.other));
    assert_eq!(v["ok"], true, "{v}");
    // Cleaning up detaches the programs: traffic flows again.
    let out = std::process::Command::new(nodegate_bin())
        .args(["intercept", "cleanup", "--pin-path", &s.gw.pin.display().to_string()])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!s.gw.pin.exists());
    let v = get(&svc(), "/cleaned", Some(&s.topo.pod), Some(&s.enrolled));
    assert_eq!(v["ok"], true, "after cleanup, connections must go direct: {v}");
    assert_eq!(peer_ip(&v), POD_IP);
}

#[test]
fn clean_shutdown_detaches_and_unpins() {
    let mut s = setup("open", false);
    assert!(s.gw.pin.exists());
    s.gw.stop();
    assert!(!s.gw.pin.exists(), "pin directory left behind after a clean shutdown");
    let v = get(&svc(), "/after-stop", Some(&s.topo.pod), Some(&s.enrolled));
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(peer_ip(&v), POD_IP, "still redirected after shutdown");
    assert!(s.gw.log_text().contains("programs detached and maps unpinned"));
}

#[test]
fn bad_clients_do_not_disturb_others() {
    let s = setup("open", false);
    let addr = svc();
    let silent = spawn(
        &probe_bin(),
        &["hold", &addr, "silent", "20"],
        Some(&s.topo.pod),
        Some(&s.enrolled),
        std::process::Stdio::null(),
        std::process::Stdio::null(),
    );
    let garbage = spawn(
        &probe_bin(),
        &["hold", &addr, "garbage", "20"],
        Some(&s.topo.pod),
        Some(&s.enrolled),
        std::process::Stdio::null(),
        std::process::Stdio::null(),
    );
    let early = probe_status(&["hold", &addr, "early-close", "0"], &s);
    assert!(early.success());
    let mut silent = silent;
    let mut garbage = garbage;
    std::thread::sleep(Duration::from_millis(200));
    for i in 0..5 {
        let v = get(&addr, &format!("/ok{i}"), Some(&s.topo.pod), Some(&s.enrolled));
        assert_eq!(v["ok"], true, "a well-behaved client failed while bad ones were connected: {v}");
        assert_ne!(peer_ip(&v), POD_IP);
    }
    assert!(
        silent.is_running() && garbage.is_running(),
        "the bad clients should still be connected during the check"
    );
    // The silent client is treated as opaque TCP after the sniff timeout and relayed; the
    // garbage one was relayed as TCP. Both show up in the audit when they end.
    drop(silent);
    drop(garbage);
    s.gw.wait_audit("connection record of a relayed non-HTTP client", |r| {
        r["kind"] == "connection" && r["protocol"] == "tcp"
    });
}

fn probe_status(args: &[&str], s: &Setup) -> std::process::ExitStatus {
    let mut p = spawn(
        &probe_bin(),
        args,
        Some(&s.topo.pod),
        Some(&s.enrolled),
        std::process::Stdio::null(),
        std::process::Stdio::null(),
    );
    p.child.wait().unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn hot_reload_updates_the_table_in_place_and_rejects_bad_configs() {
    let s = setup("open", false);
    let other = format!("{OTHER_IP}:{UPSTREAM_PORT}");
    let v = get(&other, "/x", Some(&s.topo.pod), Some(&s.enrolled));
    assert_eq!(peer_ip(&v), POD_IP, "not intercepted yet: {v}");

    // Invalid: rejected with its path, the running config stays.
    let good = std::fs::read_to_string(&s.gw.config).unwrap_or_default();
    std::fs::write(&s.gw.config, good.replace("ports: [8080]", "ports: []"))
        .unwrap_or_else(|e| panic!("{e}"));
    wait_until(Duration::from_secs(10), "the bad config to be rejected", || {
        s.gw.log_text().contains("config reload rejected")
    });
    assert!(
        s.gw.log_text().contains("intercept.destinations[0].ports"),
        "rejection must name the path:\n{}",
        s.gw.log_text()
    );
    let v = get(&svc(), "/still", Some(&s.topo.pod), Some(&s.enrolled));
    assert_ne!(peer_ip(&v), POD_IP, "interception broke after a rejected reload: {v}");

    // Valid: a new destination appears in the table without a restart.
    let added = good.replace(
        &format!("    - {{ address: {SVC_IP}, ports: [{UPSTREAM_PORT}] }}"),
        &format!("    - {{ address: {SVC_IP}, ports: [{UPSTREAM_PORT}] }}\n    - {{ address: 169.254.88.16/28, ports: [{UPSTREAM_PORT}] }}"),
    );
    assert_ne!(added, good);
    std::fs::write(&s.gw.config, added).unwrap_or_else(|e| panic!("{e}"));
    wait_until(Duration::from_secs(10), "the new config to be applied", || {
        s.gw.log_text().contains("config reloaded")
    });
    let mut v = Value::Null;
    wait_until(Duration::from_secs(5), "the CIDR destination to be intercepted", || {
        v = get(&other, "/cidr", Some(&s.topo.pod), Some(&s.enrolled));
        v["ok"] == true && peer_ip(&v) != POD_IP
    });
    let rows = s.gw.status()["entries"].clone();
    assert!(rows.as_array().is_some_and(|r| r.iter().any(|e| e["network"] == "169.254.88.16/28")), "{rows}");
}

#[test]
fn host_name_destinations_are_resolved_into_the_table() {
    require_root();
    let topo = Topology::new();
    let cgroups = TestCgroups::new();
    let (cg, enrolled) = (cgroups.base().to_string(), &cgroups.enrolled);
    let _up = upstream(&topo.node, "upstream");
    let (dir, pin) = Gateway::prepare("dns");
    // `localhost` comes from /etc/hosts through the system resolver config.
    let cfg = config(&cg, "open").replace(
        &format!("    - {{ address: {SVC_IP}, ports: [{UPSTREAM_PORT}] }}"),
        &format!("    - {{ address: localhost, ports: [{UPSTREAM_PORT}] }}"),
    );
    let gw = Gateway::start(&dir, &pin, &cfg, Some(&topo.node), None);
    let mut rows = Value::Null;
    wait_until(Duration::from_secs(10), "localhost to be resolved into the intercept table", || {
        rows = gw.status()["entries"].clone();
        rows.as_array()
            .is_some_and(|r| r.iter().any(|e| e["network"] == "127.0.0.1/32" && e["port"] == "8080"))
    });
    // A client on the node, enrolled, connecting to 127.0.0.1:8080 is redirected.
    let v = get(&format!("127.0.0.1:{UPSTREAM_PORT}"), "/by-name", Some(&topo.node), Some(enrolled));
    assert_eq!(v["ok"], true, "{v}");
    let rec = gw.wait_audit("record of the request to the named destination", |r| r["path"] == "/by-name");
    assert_eq!(rec["target"], format!("127.0.0.1:{UPSTREAM_PORT}"));
    assert!(gw.log_text().contains("intercept destination resolved"));
}

/// A host-name destination resolved by the cluster's DNS server (here a small authoritative
/// server in the node namespace) with the pod's search domains: `upstream.agents` means
/// `upstream.agents.svc.cluster.local`, a name the node's own resolver does not know.
#[test]
fn host_name_destinations_can_use_the_cluster_dns_view() {
    require_root();
    let topo = Topology::new();
    let cgroups = TestCgroups::new();
    let (cg, enrolled) = (cgroups.base().to_string(), &cgroups.enrolled);
    let _up = upstream(&topo.node, "upstream");
    let log = std::env::temp_dir().join(unique("dns-log-"));
    let script = repo_root().join("tests/python/dns_server.py");
    let dns_out = std::env::temp_dir().join(unique("dns-out-"));
    let f = std::fs::File::create(&dns_out).unwrap_or_else(|e| panic!("{e}"));
    let _dns = spawn(
        std::path::Path::new("python3"),
        &[
            &script.display().to_string(),
            "--listen",
            "127.0.0.1:15353",
            "--record",
            "upstream.agents.svc.cluster.local=127.0.0.1",
            "--ttl",
            "1",
            "--log",
            &log.display().to_string(),
        ],
        Some(&topo.node),
        None,
        std::process::Stdio::from(f),
        std::process::Stdio::inherit(),
    );
    wait_until(Duration::from_secs(5), "DNS fixture up", || {
        std::fs::read_to_string(&dns_out).is_ok_and(|t| t.contains("listen"))
    });
    let (dir, pin) = Gateway::prepare("cluster-dns");
    let cfg = config(&cg, "open")
        .replace(
            &format!("    - {{ address: {SVC_IP}, ports: [{UPSTREAM_PORT}] }}"),
            &format!("    - {{ address: upstream.agents, ports: [{UPSTREAM_PORT}] }}"),
        )
        .replace(
            "  heartbeat:",
            "  dns: { servers: [127.0.0.1:15353], search: [svc.cluster.local, cluster.local], min_ttl: 1s }\n  heartbeat:",
        );
    let gw = Gateway::start(&dir, &pin, &cfg, Some(&topo.node), None);
    wait_until(Duration::from_secs(10), "upstream.agents resolved through the cluster DNS", || {
        let rows = gw.status()["entries"].clone();
        rows.as_array()
            .is_some_and(|r| r.iter().any(|e| e["network"] == "127.0.0.1/32" && e["port"] == "8080"))
    });
    let asked = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        asked.contains("\"upstream.agents.svc.cluster.local\""),
        "the name was completed with the first search domain, as in a pod: {asked}"
    );
    let v = get(&format!("127.0.0.1:{UPSTREAM_PORT}"), "/by-cluster-name", Some(&topo.node), Some(enrolled));
    assert_eq!(v["ok"], true, "{v}");
    let rec = gw.wait_audit("record of the request to the cluster name", |r| r["path"] == "/by-cluster-name");
    assert_eq!(rec["target"], format!("127.0.0.1:{UPSTREAM_PORT}"));
    let _ = std::fs::remove_file(&log);
    let _ = std::fs::remove_file(&dns_out);
}
