//! Protocols through the transparent listener with real clients: curl over HTTP/2 prior
//! knowledge (h2c) to a hyper h2c server, and curl over TLS to `openssl s_server`, passed
//! through untouched with its SNI in the audit record.
use std::{
    process::{Command, Stdio},
    time::Duration,
};

use nodegate_tests::*;

fn config(cg: &str) -> String {
    format!(
        r#"
listeners: {{ transparent: 0.0.0.0:{TRANSPARENT_PORT}, explicit: null }}
audit: {{ path: "{{AUDIT}}", flush_interval: 50ms }}
intercept:
  enabled: true
  cgroups: ["{cg}/enrolled"]
  redirect_to: {NODE_IP}:{TRANSPARENT_PORT}
  pin_path: "{{PIN}}"
  destinations:
    - {{ address: {SVC_IP}, ports: [8443, 8082] }}
"#
    )
}

/// Runs a command in the pod namespace and enrolled cgroup; returns (success, stdout, stderr).
fn run_in(topo: &Topology, cg: &Cgroup, cmd: &str, args: &[&str]) -> (bool, String, String) {
    let child = spawn_child(
        std::path::Path::new(cmd),
        args,
        Some(&topo.pod),
        Some(cg),
        Stdio::piped(),
        Stdio::piped(),
    );
    let out = child.wait_with_output().unwrap_or_else(|e| panic!("{cmd}: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn h2c_is_proxied_as_http2_on_both_sides() {
    require_root();
    let topo = Topology::new();
    let cgroups = TestCgroups::new();
    let (cg, enrolled) = (cgroups.base().to_string(), &cgroups.enrolled);
    let _h2 = spawn(
        &probe_bin(),
        &["h2serve", "0.0.0.0:8082", "h2-upstream"],
        Some(&topo.node),
        None,
        Stdio::null(),
        Stdio::inherit(),
    );
    let (dir, pin) = Gateway::prepare("h2c");
    let gw = Gateway::start(&dir, &pin, &config(&cg), Some(&topo.node), None);
    let url = format!("http://{SVC_IP}:8082/h2-path");
    let mut last = (false, String::new(), String::new());
    wait_until(Duration::from_secs(5), "curl --http2-prior-knowledge through the proxy", || {
        last = run_in(&topo, enrolled, "curl", &["-sS", "--http2-prior-knowledge", "-m", "5", &url]);
        last.0
    });
    let body: Value = serde_json::from_str(&last.1).unwrap_or_else(|e| panic!("{e}: {last:?}"));
    assert_eq!(body["version"], "HTTP/2.0", "the upstream leg must be HTTP/2: {body}");
    assert_eq!(body["path"], "/h2-path");
    assert!(!body["peer"].as_str().unwrap_or("").starts_with(POD_IP), "not proxied: {body}");
    let rec = gw.wait_audit("h2 request record", |r| r["kind"] == "http" && r["path"] == "/h2-path");
    assert_eq!(rec["protocol"], "http2");
    assert_eq!(rec["status"], 200);
}

#[test]
fn tls_is_passed_through_with_its_sni_audited() {
    require_root();
    let topo = Topology::new();
    let cgroups = TestCgroups::new();
    let (cg, enrolled) = (cgroups.base().to_string(), &cgroups.enrolled);
    let (dir, pin) = Gateway::prepare("tls");
    let key = dir.join("key.pem");
    let cert = dir.join("cert.pem");
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=api.example.test",
        ])
        .args([
            "-addext",
            "subjectAltName=DNS:api.example.test",
            "-keyout",
            &key.display().to_string(),
            "-out",
            &cert.display().to_string(),
        ])
        .output()
        .unwrap_or_else(|e| panic!("openssl: {e}"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let _server = spawn(
        std::path::Path::new("openssl"),
        &[
            "s_server",
            "-quiet",
            "-www",
            "-accept",
            "8443",
            "-cert",
            &cert.display().to_string(),
            "-key",
            &key.display().to_string(),
        ],
        Some(&topo.node),
        None,
        Stdio::null(),
        Stdio::null(),
    );
    let gw = Gateway::start(&dir, &pin, &config(&cg), Some(&topo.node), None);
    let resolve = format!("api.example.test:8443:{SVC_IP}");
    let mut last = (false, String::new(), String::new());
    wait_until(Duration::from_secs(5), "curl over TLS through the proxy", || {
        last = run_in(
            &topo,
            enrolled,
            "curl",
            &[
                "-sS",
                "-m",
                "5",
                "--cacert",
                &cert.display().to_string(),
                "--resolve",
                &resolve,
                "https://api.example.test:8443/",
            ],
        );
        last.0
    });
    // The certificate verified against the real server's CA: the bytes were not touched.
    assert!(last.1.contains("s_server"), "unexpected TLS response: {last:?}");
    let rec = gw.wait_audit("TLS connection record", |r| r["kind"] == "connection" && r["protocol"] == "tls");
    assert_eq!(rec["sni"], "api.example.test");
    assert_eq!(rec["target"], format!("{SVC_IP}:8443"));
    assert!(rec["bytes_received"].as_u64().unwrap_or(0) > 500, "{rec}");
}

#[test]
fn http_upgrade_is_relayed_through_the_proxy() {
    require_root();
    let topo = Topology::new();
    let cgroups = TestCgroups::new();
    let _up = upstream(&topo.node, "upstream");
    let (dir, pin) = Gateway::prepare("upgrade");
    let cfg = config(cgroups.base())
        .replace("ports: [8443, 8082]", &format!("ports: [8443, 8082, {UPSTREAM_PORT}]"));
    let gw = Gateway::start(&dir, &pin, &cfg, Some(&topo.node), None);
    let v =
        probe(&["upgrade", &format!("{SVC_IP}:{UPSTREAM_PORT}")], Some(&topo.pod), Some(&cgroups.enrolled));
    assert_eq!(v["status"], "HTTP/1.1 101 Switching Protocols", "{v}");
    assert_eq!(v["echoed"], "hello through the upgrade", "bytes after the upgrade must be relayed: {v}");
    let rec = gw.wait_audit("upgrade record", |r| r["kind"] == "http" && r["status"] == 101);
    assert_eq!(rec["path"], "/ws");
}

/// gRPC (grpcio server and client, h2c) through the transparent listener: unary, server
/// streaming and an error all arrive intact (`te: trailers` reaches the server, trailers reach
/// the client), and each call's record names its service, method and `grpc-status`.
#[test]
fn grpc_calls_pass_intact_and_are_recorded_with_their_status() {
    require_root();
    let topo = Topology::new();
    let cgroups = TestCgroups::new();
    let (cg, enrolled) = (cgroups.base().to_string(), &cgroups.enrolled);
    let script = repo_root().join("tests/python/grpc_peer.py").display().to_string();
    let _server = spawn(
        std::path::Path::new("python3"),
        &[&script, "server", "0.0.0.0:8082"],
        Some(&topo.node),
        None,
        Stdio::null(),
        Stdio::inherit(),
    );
    wait_until(Duration::from_secs(15), "the gRPC server up", || {
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &topo.node.name,
                "python3",
                "-c",
                "import socket; socket.create_connection(('127.0.0.1', 8082), 1)",
            ])
            .status()
            .is_ok_and(|s| s.success())
    });
    let (dir, pin) = Gateway::prepare("grpc");
    let gw = Gateway::start(&dir, &pin, &config(&cg), Some(&topo.node), None);
    let target = format!("{SVC_IP}:8082");
    let (ok, out, err) = run_in(&topo, enrolled, "python3", &[&script, "client", &target]);
    assert!(ok && !err.contains("ModuleNotFoundError"), "grpcio client (.ci/run installs grpcio): {err}");
    let v: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out} {err}"));
    assert_eq!(v["say"], "echo: hi", "{v}");
    assert_eq!(v["trailers"]["x-echo-trailer"], "kept", "trailers must reach the client: {v}");
    assert_eq!(v["fail"]["code"], "PERMISSION_DENIED", "{v}");
    assert_eq!(v["stream"], serde_json::json!(["0:s", "1:s", "2:s"]), "{v}");
    let say = gw.wait_audit("the Say record", |r| r["grpc"]["method"] == "Say");
    assert_eq!(
        (say["grpc"]["service"].as_str(), say["grpc"]["status"].as_u64()),
        (Some("demo.Echo"), Some(0)),
        "{say}"
    );
    assert_eq!(say["protocol"], "http2", "{say}");
    let fail = gw.wait_audit("the Fail record", |r| r["grpc"]["method"] == "Fail");
    assert_eq!(fail["grpc"]["status"], 7, "PERMISSION_DENIED is 7: {fail}");
    assert_eq!(fail["grpc"]["message"], "not for you", "{fail}");
    let stream = gw.wait_audit("the Stream record", |r| r["grpc"]["method"] == "Stream");
    assert_eq!(stream["grpc"]["status"], 0, "{stream}");
}
