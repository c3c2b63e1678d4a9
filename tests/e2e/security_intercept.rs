//! The security suite, part two: intercepted traffic cannot go around the proxy. Classed
//! destinations fail closed, providers are matched by destination only, UDP and IPv6 are
//! refused where they would escape, and a restart as the same PID leaves no gap. As root, with
//! real eBPF.
use std::{process::Stdio, time::Duration};

use nodegate_tests::{attack::*, *};

#[test]
fn intercepted_traffic_is_routed_by_its_destination_and_classed_destinations_fail_closed() {
    require_root();
    let topo = Topology::new();
    let cgroups = TestCgroups::new();
    let (cg, enrolled) = (cgroups.base().to_string(), &cgroups.enrolled);
    // The provider nodegate holds a key for, and an ordinary in-cluster service classed llm.
    let _provider = llm_sim(&topo.node, "127.0.0.1:18311", "provider", &["--tokens", "3"]);
    let svc = format!("{SVC_IP}:{UPSTREAM_PORT}");
    let _service = llm_sim(&topo.node, &svc, "service", &["--tokens", "3"]);
    let mcp_dst = format!("{OTHER_IP}:{UPSTREAM_PORT}");
    let _mcp_upstream = llm_sim(&topo.node, &mcp_dst, "mcp-upstream", &[]);
    let (dir, pin) = Gateway::prepare("sec-transparent");
    let cfg = format!(
        r#"
listeners: {{ transparent: 0.0.0.0:{TRANSPARENT_PORT}, explicit: null }}
audit: {{ path: "{{AUDIT}}", flush_interval: 50ms }}
timeouts: {{ sniff: 300ms }}
identities:
  - {{ name: agent, cgroup: "{cg}/enrolled" }}
intercept:
  enabled: true
  cgroups: ["{cg}/enrolled"]
  redirect_to: {NODE_IP}:{TRANSPARENT_PORT}
  pin_path: "{{PIN}}"
  destinations:
    - {{ address: {SVC_IP}, ports: [{UPSTREAM_PORT}], class: llm }}
    - {{ address: {OTHER_IP}, ports: [{UPSTREAM_PORT}], class: mcp }}
llm:
  providers:
    - {{ name: provider, kind: openai, endpoint: "http://127.0.0.1:18311", credentials: {{ env: NG_SEC_PROVIDER_KEY }} }}
"#
    );
    // SAFETY: set before the gateway process is spawned; read only by it.
    unsafe { std::env::set_var("NG_SEC_PROVIDER_KEY", "sk-provider-secret-xyz") };
    let gw = Gateway::start(&dir, &pin, &cfg, Some(&topo.node), None);
    let pod = &topo.pod;

    // A pod names the provider's host on a connection to the ordinary service.
    let body = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"max_tokens":3}"#;
    let url = format!("http://{svc}/v1/chat/completions");
    let (status, answer) = curl(
        pod,
        Some(enrolled),
        &["-H", "content-type: application/json", "-H", "Host: 127.0.0.1:18311", "-d", body, &url],
    );
    assert_eq!(status, 200, "{answer}");
    assert!(answer.contains("service"), "the request must reach the service it was sent to: {answer}");
    assert_eq!(sim_count(&topo.node, "127.0.0.1:18311"), 0, "the provider must not be reached");
    let seen = get(&svc, "/sim/last", Some(&topo.node), None)["body"].clone();
    assert!(!seen.to_string().contains("sk-provider-secret-xyz"), "the provider's key leaked: {seen}");
    let rec = gw.wait_audit("llm record", |r| r["kind"] == "llm");
    assert_eq!(rec["upstream"], format!("http://{svc}"), "the audit names the upstream used: {rec}");

    // A half-sent request to a classed destination: refused after the sniff timeout, never spliced.
    let before = sim_count(&topo.node, &svc);
    let v = raw(pod, Some(enrolled), SVC_IP, UPSTREAM_PORT, "half-method");
    assert!(v["received"].as_str().unwrap_or("").starts_with("HTTP/1.1 400"), "{v}");
    // TLS to a classed destination (no termination configured): closed, never relayed blind.
    let v = raw(pod, Some(enrolled), SVC_IP, UPSTREAM_PORT, "tls-hello");
    assert_eq!(v["closed"], true, "{v}");
    assert!(!v["received"].as_str().unwrap_or("").starts_with("HTTP/1.1 200"), "{v}");
    assert_eq!(sim_count(&topo.node, &svc), before, "nothing reached the service");
    let rec = gw.wait_audit("class refusal", |r| r["rule"] == "intercept.class" && r["sni"].is_string());
    assert_eq!(rec["decision"], "deny", "{rec}");

    // JSON-RPC nodegate cannot read (a batch, a fractional id) to an mcp destination: a
    // JSON-RPC error from nodegate, nothing forwarded.
    for bad in [
        r#"json:[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x"}}]"#,
        r#"json:{"jsonrpc":"2.0","id":1.0,"method":"tools/call","params":{"name":"x"}}"#,
        "json:{not json",
    ] {
        let v = raw(pod, Some(enrolled), OTHER_IP, UPSTREAM_PORT, bad);
        let got = v["received"].as_str().unwrap_or("");
        assert!(got.starts_with("HTTP/1.1 400"), "{bad}: {v}");
        assert!(got.contains("\"jsonrpc\":\"2.0\"") && got.contains("\"error\""), "{bad}: {v}");
    }
    assert_eq!(sim_count(&topo.node, &mcp_dst), 0, "no unreadable message reached the MCP server");
    let rec = gw.wait_audit("unreadable mcp", |r| r["rule"] == "mcp.unreadable");
    assert_eq!(rec["identity"], "agent", "{rec}");
}

/// What a pod's UDP and IPv6 attempts met: `ok` or the errno name, per attempt.
const AROUND: &str = r#"
import json, socket, sys
svc, v6 = sys.argv[1], sys.argv[2]
out = {}
def attempt(name, fn):
    try:
        fn(); out[name] = "ok"
    except OSError as e:
        out[name] = "EPERM" if e.errno == 1 else f"errno {e.errno}"
def udp_connect():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.connect((svc, 443)); s.send(b"q")
def udp_sendto():
    socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"q", (svc, 443))
def udp_other_port():
    socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"q", (svc, 9999))
def tcp_v6():
    s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM); s.settimeout(2); s.connect((v6, 8080))
attempt("udp_connect", udp_connect)
attempt("udp_sendto", udp_sendto)
attempt("udp_other_port", udp_other_port)
attempt("tcp_v6", tcp_v6)
print(json.dumps(out))
"#;

#[test]
fn udp_and_ipv6_to_intercepted_destinations_cannot_go_around_the_proxy() {
    require_root();
    let topo = Topology::new();
    let cgroups = TestCgroups::new();
    let cg = cgroups.base().to_string();
    let other = Cgroup::new(&format!("{cg}/other"));
    let v6 = "fd00:77::10";
    let (dir, pin) = Gateway::prepare("sec-udp-v6");
    let cfg = format!(
        r#"
listeners: {{ transparent: 0.0.0.0:{TRANSPARENT_PORT}, explicit: null }}
audit: {{ path: "{{AUDIT}}", flush_interval: 50ms }}
intercept:
  enabled: true
  cgroups: ["{cg}/enrolled"]
  redirect_to: {NODE_IP}:{TRANSPARENT_PORT}
  pin_path: "{{PIN}}"
  fail: closed
  destinations:
    - {{ address: {SVC_IP}, ports: [443, {UPSTREAM_PORT}] }}
    - {{ address: "{v6}", ports: [8080] }}
"#
    );
    let gw = Gateway::start(&dir, &pin, &cfg, Some(&topo.node), None);
    let run = |cg: &Cgroup| -> Value {
        let child = spawn_child(
            std::path::Path::new("python3"),
            &["-c", AROUND, SVC_IP, v6],
            Some(&topo.pod),
            Some(cg),
            Stdio::piped(),
            Stdio::piped(),
        );
        let out = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)))
    };
    let v = run(&cgroups.enrolled);
    assert_eq!(v["udp_connect"], "EPERM", "QUIC to an intercepted port must fall back to TCP: {v}");
    assert_eq!(v["udp_sendto"], "EPERM", "{v}");
    assert_eq!(v["udp_other_port"], "ok", "UDP to ports nobody intercepts is left alone: {v}");
    assert_eq!(
        v["tcp_v6"], "EPERM",
        "IPv6 under fail-closed without an IPv6 listener: refused, never direct: {v}"
    );
    let v = run(&other);
    assert_eq!(v["udp_sendto"], "ok", "a cgroup that is not enrolled is never touched: {v}");
    assert!(gw.counter("udp_refused") >= 2, "{}", gw.status());
    assert!(gw.counter("v6_refused") >= 1, "{}", gw.status());
}

/// Starts nodegate as PID 1 of a new PID namespace (as in a container), in `ns`; waits until ready.
fn start_as_pid1(ns: &Netns, config: &std::path::Path, log: &std::path::Path) -> Proc {
    let logf = std::fs::File::create(log).unwrap_or_else(|e| panic!("{e}"));
    let errf = logf.try_clone().unwrap_or_else(|e| panic!("{e}"));
    let bin = nodegate_bin().display().to_string();
    let cfg = config.display().to_string();
    let mut p = spawn(
        std::path::Path::new("unshare"),
        &["--pid", "--fork", "--kill-child", &bin, "run", "--config", &cfg],
        Some(ns),
        None,
        Stdio::from(logf),
        Stdio::from(errf),
    );
    let start = std::time::Instant::now();
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains("nodegate ready") {
            return p;
        }
        assert!(
            p.is_running() && start.elapsed() < Duration::from_secs(20),
            "nodegate (PID 1) did not become ready:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_restart_that_reuses_the_pid_takes_over_the_pinned_links() {
    require_root();
    let topo = Topology::new();
    let cgroups = TestCgroups::new();
    let cg = cgroups.base().to_string();
    let _up = upstream(&topo.node, "upstream");
    let (dir, pin) = Gateway::prepare("sec-pid1");
    // Removes the pins whatever happens below.
    struct Cleanup(std::path::PathBuf);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = std::process::Command::new(nodegate_bin())
                .args(["intercept", "cleanup", "--pin-path", &self.0.display().to_string()])
                .output();
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _cleanup = Cleanup(pin.clone());
    let config = dir.join("nodegate.yaml");
    std::fs::write(
        &config,
        format!(
            r#"
listeners: {{ transparent: 0.0.0.0:{TRANSPARENT_PORT}, explicit: null }}
audit: {{ path: "{}", flush_interval: 50ms }}
intercept:
  enabled: true
  cgroups: ["{cg}/enrolled"]
  redirect_to: {NODE_IP}:{TRANSPARENT_PORT}
  pin_path: "{}"
  fail: closed
  keep_pinned: true
  heartbeat: {{ interval: 100ms, timeout: 1s }}
  destinations:
    - {{ address: {SVC_IP}, ports: [{UPSTREAM_PORT}] }}
"#,
            dir.join("audit.log").display(),
            pin.display()
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let links = || -> Vec<String> {
        std::fs::read_dir(pin.join("links"))
            .map(|rd| rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default()
    };
    let svc = format!("{SVC_IP}:{UPSTREAM_PORT}");

    let mut first = start_as_pid1(&topo.node, &config, &dir.join("first.log"));
    let v = get(&svc, "/one", Some(&topo.pod), Some(&cgroups.enrolled));
    assert_eq!(v["ok"], true, "{v}");
    let before = links();
    assert!(
        !before.is_empty() && before.iter().all(|l| l.contains("_p1-")),
        "nodegate ran as PID 1: {before:?}"
    );
    first.kill9();

    // The same PID again: it must start (no clash with the pins it left), take the links over,
    // and govern the very next connection.
    let _second = start_as_pid1(&topo.node, &config, &dir.join("second.log"));
    let after = links();
    assert_eq!(after.len(), before.len(), "one set of links, the new one: {after:?}");
    assert!(
        after.iter().all(|l| !before.contains(l)),
        "the old links were replaced: {before:?} -> {after:?}"
    );
    let v = get(&svc, "/two", Some(&topo.pod), Some(&cgroups.enrolled));
    assert_eq!(v["ok"], true, "{v}");
    wait_until(Duration::from_secs(10), "the second nodegate's audit record of /two", || {
        std::fs::read_to_string(dir.join("audit.log"))
            .unwrap_or_default()
            .lines()
            .any(|l| l.contains("\"mode\":\"transparent\"") && l.contains("/two"))
    });
    let _ = std::fs::remove_dir_all(&dir);
}
