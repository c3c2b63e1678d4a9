//! MCP fixtures: the Python SDK server and client scripts in tests/python, the npm
//! `@modelcontextprotocol/server-everything` server, and raw JSON-RPC over curl.
use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use serde_json::Value;

use super::{Cgroup, Gateway, Netns, Proc, Topology, probe, repo_root, spawn, spawn_child, wait_until};

/// Where .ci/run installs server-everything; NODEGATE_MCP_EVERYTHING overrides.
pub fn everything_js() -> PathBuf {
    let p = std::env::var("NODEGATE_MCP_EVERYTHING").map(PathBuf::from).unwrap_or_else(|_| {
        PathBuf::from(
            "/var/cache/nodegate/npm/node_modules/@modelcontextprotocol/server-everything/dist/index.js",
        )
    });
    assert!(
        p.exists(),
        "{} is missing: install it with `npm install --prefix /var/cache/nodegate/npm \
         @modelcontextprotocol/server-everything` (.ci/run does)",
        p.display()
    );
    p
}

fn wait_listening(ns: &Netns, addr: &str, what: &str, proc: &mut Proc) {
    wait_until(Duration::from_secs(20), what, || {
        assert!(proc.is_running(), "{what}: the process exited");
        probe(&["get", addr, "/"], Some(ns), None).get("status").is_some_and(Value::is_u64)
    });
}

/// tests/python/mcp_server.py NAME MODE HOST PORT in `ns` (modes: http, sse, garbage, hang).
pub fn mcp_server(ns: &Netns, name: &str, mode: &str, host: &str, port: u16) -> Proc {
    let script = repo_root().join("tests/python/mcp_server.py").display().to_string();
    let port_s = port.to_string();
    let mut p = spawn(
        Path::new("python3"),
        &[&script, name, mode, host, &port_s],
        Some(ns),
        None,
        Stdio::null(),
        Stdio::inherit(),
    );
    wait_listening(ns, &format!("{host}:{port}"), &format!("MCP server {name} ({mode})"), &mut p);
    p
}

/// server-everything in `mode` (streamableHttp or sse) on 127.0.0.1:PORT in `ns`.
pub fn everything(ns: &Netns, mode: &str, port: u16) -> Proc {
    let js = everything_js().display().to_string();
    let env_port = format!("PORT={port}");
    let mut p = spawn(
        Path::new("env"),
        &[&env_port, "node", &js, mode],
        Some(ns),
        None,
        Stdio::null(),
        Stdio::null(),
    );
    wait_listening(ns, &format!("127.0.0.1:{port}"), &format!("server-everything ({mode})"), &mut p);
    p
}

/// Runs a scenario of tests/python/mcp_clients.py (the official `mcp` SDK).
pub fn mcp_client(
    scenario: &str,
    mode: &str,
    url: &str,
    key: &str,
    args: &[&str],
    ns: Option<&Netns>,
    cgroup: Option<&Cgroup>,
) -> Value {
    let script = repo_root().join("tests/python/mcp_clients.py").display().to_string();
    let mut argv = vec![script.as_str(), scenario, mode, url, key];
    argv.extend_from_slice(args);
    let child = spawn_child(Path::new("python3"), &argv, ns, cgroup, Stdio::piped(), Stdio::piped());
    let out = child.wait_with_output().unwrap_or_else(|e| panic!("python3: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("ModuleNotFoundError"),
        "the mcp SDK is not installed (pip install 'mcp>=2.3,<2.4'; .ci/run does): {stderr}"
    );
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("{scenario} printed {stdout:?} ({e}); stderr: {stderr}"))
}

/// POSTs `body` with extra `headers` via curl in `ns`: (HTTP status, JSON body or Null, headers).
pub fn curl_post(ns: &Netns, url: &str, headers: &[&str], body: &str) -> (u16, Value, String) {
    let mut args = vec!["-s", "-m", "20", "-D", "/dev/stderr", "-o", "/dev/stdout", "-w", "\n%{http_code}"];
    for h in headers {
        args.push("-H");
        args.push(h);
    }
    args.extend_from_slice(&["--data-binary", body, url]);
    let child = spawn_child(Path::new("curl"), &args, Some(ns), None, Stdio::piped(), Stdio::piped());
    let out = child.wait_with_output().unwrap_or_else(|e| panic!("curl: {e}"));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    let status = code.trim().parse().unwrap_or(0);
    (
        status,
        serde_json::from_str(body.trim()).unwrap_or(Value::Null),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The headers of a 2026-07-28 request for `method`.
pub fn modern_headers(method: &str) -> Vec<String> {
    vec![
        "content-type: application/json".into(),
        "accept: application/json, text/event-stream".into(),
        "mcp-protocol-version: 2026-07-28".into(),
        format!("mcp-method: {method}"),
    ]
}

/// A 2026-07-28 request body.
pub fn modern_request(id: u64, method: &str, params: Value) -> String {
    let mut p = match params {
        Value::Object(m) => m,
        _ => serde_json::Map::new(),
    };
    p.insert(
        "_meta".into(),
        serde_json::json!({
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientInfo": {"name": "curl", "version": "1"},
            "io.modelcontextprotocol/clientCapabilities": {},
        }),
    );
    serde_json::json!({"jsonrpc": "2.0", "id": id, "method": method, "params": p}).to_string()
}

/// `nodegate_mcp_*` and other metric lines from the admin endpoint.
pub fn metrics(ns: &Netns, admin: &str) -> String {
    probe(&["get", admin, "/metrics"], Some(ns), None)["body"].as_str().unwrap_or_default().to_string()
}

/// The MCP suites' gateway endpoint.
pub const GW: &str = "http://127.0.0.1:15080/mcp";
pub const ADMIN: &str = "127.0.0.1:15000";
pub const KEY_A: &str = "agent-a-key-0001";
pub const KEY_B: &str = "agent-b-key-0001";
/// The SDK's connect modes: 2026-07-28 (falling back to the handshake) and the handshake.
pub const ERAS: [&str; 2] = ["auto", "legacy"];

/// The MCP suites' gateway: explicit listener and admin on the default ports, two API-key
/// identities, audit flushed every 50 ms, and `mcp` (YAML under `mcp:`).
pub fn start(topo: &Topology, tag: &str, mcp: &str) -> Gateway {
    let (dir, pin) = Gateway::prepare(tag);
    let cfg = format!(
        r#"
listeners: {{ explicit: 127.0.0.1:15080, transparent: null }}
admin: {{ address: {ADMIN} }}
audit: {{ path: "{{AUDIT}}", flush_interval: 50ms }}
identities:
  - {{ name: agent-a, api_keys: ["{KEY_A}"] }}
  - {{ name: agent-b, api_keys: ["{KEY_B}"] }}
mcp:
{mcp}
"#
    );
    Gateway::start(&dir, &pin, &cfg, Some(&topo.node), None)
}

/// A tests/python/mcp_clients.py scenario against the gateway, from the node namespace.
pub fn client(scenario: &str, mode: &str, key: &str, args: &[&str], topo: &Topology) -> Value {
    mcp_client(scenario, mode, GW, key, args, Some(&topo.node), None)
}

/// The strings of a JSON array.
pub fn strs(v: &Value) -> Vec<String> {
    v.as_array().into_iter().flatten().filter_map(|x| x.as_str().map(str::to_string)).collect()
}
