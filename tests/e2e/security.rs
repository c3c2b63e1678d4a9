//! The security suite: each test performs an attack on nodegate's enforcement and shows it fail.
//! docs/security.md maps every promise nodegate makes to the test here that proves it. As root,
//! with real eBPF where the attack goes through interception, real sockets, curl as the attacker.
use std::{process::Stdio, time::Duration};

use nodegate_tests::*;

const KEY_A: &str = "sk-agent-a-0123456789abcdef";
const KEY_B: &str = "sk-pod-b-bound-0123456789ab";
const ADMIN_TOKEN: &str = "admin-token-0123456789abcdef";

/// Runs curl in `ns` (and `cg`); returns (HTTP status, body). Status 0: no HTTP answer.
fn curl(ns: &Netns, cg: Option<&Cgroup>, args: &[&str]) -> (u16, String) {
    let mut all = vec!["-sS", "--max-time", "10", "-o", "-", "-w", "\n%{http_code}"];
    all.extend_from_slice(args);
    let child = spawn_child(std::path::Path::new("curl"), &all, Some(ns), cg, Stdio::piped(), Stdio::piped());
    let out = child.wait_with_output().unwrap_or_else(|e| panic!("curl: {e}"));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or((&text, "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

fn chat(ns: &Netns, cg: Option<&Cgroup>, key: Option<&str>, model: &str) -> (u16, String) {
    let body =
        format!(r#"{{"model":"{model}","messages":[{{"role":"user","content":"hi"}}],"max_tokens":4}}"#);
    let auth = key.map(|k| format!("Authorization: Bearer {k}"));
    let mut args = vec!["-H", "content-type: application/json", "-d", &body];
    if let Some(a) = &auth {
        args.extend(["-H", a.as_str()]);
    }
    args.push("http://127.0.0.1:15080/v1/chat/completions");
    curl(ns, cg, &args)
}

fn raw(ns: &Netns, cg: Option<&Cgroup>, host: &str, port: u16, mode: &str) -> Value {
    let script = repo_root().join("tests/python/raw_client.py");
    let args =
        [script.display().to_string(), host.to_string(), port.to_string(), mode.to_string(), "3".into()];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let child =
        spawn_child(std::path::Path::new("python3"), &args, Some(ns), cg, Stdio::piped(), Stdio::piped());
    let out = child.wait_with_output().unwrap_or_else(|e| panic!("python3: {e}"));
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("raw_client printed {:?}: {e}", String::from_utf8_lossy(&out.stderr)))
}

fn sim_count(ns: &Netns, addr: &str) -> u64 {
    get(addr, "/sim/count", Some(ns), None)["body"]["count"].as_u64().unwrap_or(u64::MAX)
}

#[test]
fn a_key_adds_a_principal_never_replaces_the_workload_and_unmatched_callers_meet_the_deny_default() {
    require_root();
    let topo = Topology::new();
    let cgroups = TestCgroups::new();
    let base = cgroups.base().to_string();
    let pod_a = Cgroup::new(&format!("{base}/a"));
    let pod_b = Cgroup::new(&format!("{base}/b"));
    let _sim = llm_sim(&topo.node, "127.0.0.1:18301", "provider", &["--tokens", "3"]);
    let (dir, pin) = Gateway::prepare("sec-identity");
    let cfg = format!(
        r#"
listeners: {{ explicit: 127.0.0.1:15080, transparent: null }}
audit: {{ path: "{{AUDIT}}", flush_interval: 50ms }}
identities:
  - {{ name: agent-a, api_keys: ["{KEY_A}"] }}
  - {{ name: pod-b, cgroup: "{base}/b", api_keys: ["{KEY_B}"] }}
  - {{ name: pod-a, cgroup: "{base}/a" }}
llm:
  default: deny
  providers:
    - {{ name: sim, kind: openai, endpoint: "http://127.0.0.1:18301/v1" }}
  models:
    - {{ name: fast, targets: [ {{ provider: sim, model: m-fast }} ] }}
    - {{ name: premium, targets: [ {{ provider: sim, model: m-premium }} ] }}
  allow:
    - {{ selector: {{ workloads: [pod-a] }}, models: [fast] }}
    - {{ selector: {{ principals: [agent-a] }}, models: [fast, premium] }}
    - {{ selector: {{ principals: [pod-b] }}, models: [premium] }}
  budgets:
    - {{ name: pod-a-cap, selector: {{ workloads: [pod-a] }}, requests_per_minute: 2 }}
"#
    );
    let gw = Gateway::start(&dir, &pin, &cfg, Some(&topo.node), None);
    let node = &topo.node;

    // Keyless and foreign-key callers from no known cgroup meet the default: deny.
    for key in [None, Some("sk-not-a-key-of-ours-000000")] {
        let (status, body) = chat(node, None, key, "fast");
        assert_eq!(status, 403, "key {key:?}: {body}");
        assert!(body.contains("llm.default"), "the refusal names the default rule: {body}");
    }
    let rec = gw.wait_audit("default refusal", |r| r["kind"] == "llm" && r["rule"] == "llm.default");
    assert_eq!(rec["decision"], "deny", "{rec}");

    // A valid key adds its principal beside the (unknown) workload.
    let (status, body) = chat(node, None, Some(KEY_A), "premium");
    assert_eq!(status, 200, "{body}");
    let rec = gw.wait_audit("agent-a call", |r| r["kind"] == "llm" && r["principal"] == "agent-a");
    assert_eq!(rec["identity"], "unknown", "the kernel's answer stays: {rec}");

    // pod-a presenting agent-a's key stays under pod-a's rule: the key does not carry it out.
    let (status, body) = chat(node, Some(&pod_a), Some(KEY_A), "premium");
    assert_eq!(status, 403, "a key must not lift a workload out of its allow rule: {body}");
    assert!(body.contains("llm.allow[0]"), "{body}");
    let rec = gw.wait_audit("pod-a with agent-a's key", |r| {
        r["kind"] == "llm" && r["identity"] == "pod-a" && r["principal"] == "agent-a"
    });
    assert_eq!(
        (rec["decision"].as_str(), rec["rule"].as_str()),
        (Some("deny"), Some("llm.allow[0]")),
        "{rec}"
    );

    // pod-b's key is bound to pod-b's cgroup: from pod-a it proves nothing.
    let (status, body) = chat(node, Some(&pod_a), Some(KEY_B), "fast");
    assert_eq!(status, 200, "{body}");
    let rec = gw.wait_audit("pod-a with pod-b's key", |r| {
        r["kind"] == "llm" && r["identity"] == "pod-a" && r["status"] == 200
    });
    assert!(rec.get("principal").is_none(), "a key used from another cgroup adds no principal: {rec}");
    let (status, body) = chat(node, Some(&pod_b), Some(KEY_B), "premium");
    assert_eq!(status, 200, "the bound key works from its own cgroup: {body}");

    // pod-a's budget (2 requests a minute) counts pod-a's calls with and without a key alike:
    // one call above, one keyless now, and the keyed one after it is refused.
    let (status, body) = chat(node, Some(&pod_a), None, "fast");
    assert_eq!(status, 200, "{body}");
    let (status, body) = chat(node, Some(&pod_a), Some(KEY_A), "fast");
    assert_eq!(status, 429, "presenting a key must not buy a second budget: {body}");
    assert!(body.contains("pod-a-cap"), "{body}");
}

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

#[test]
fn secrets_stay_secret_and_the_explicit_proxy_cannot_reach_nodegate_itself() {
    require_root();
    let topo = Topology::new();
    let _sim = llm_sim(&topo.node, "127.0.0.1:18321", "upstream", &["--tokens", "2"]);
    let _other = llm_sim(&topo.node, "127.0.0.1:18322", "not-allowed", &[]);
    let (dir, pin) = Gateway::prepare("sec-secrets");
    let secrets = [
        KEY_A,
        ADMIN_TOKEN,
        "mcp-header-secret-5678",
        "session-key-secret-0123456789abcdef0123",
        "redis-password-secret",
        "stdio-env-secret-4321",
    ];
    let cfg = format!(
        r#"
listeners: {{ explicit: 127.0.0.1:15080, transparent: null }}
admin: {{ address: 127.0.0.1:15000, token: "{ADMIN_TOKEN}" }}
log: {{ level: debug }}
audit: {{ path: "{{AUDIT}}", flush_interval: 50ms }}
identities:
  - {{ name: agent-a, api_keys: ["{KEY_A}"] }}
egress:
  allow:
    - {{ address: 127.0.0.1, ports: [18321, 15000, 15080] }}
    - {{ address: localhost, ports: [15000] }}
llm:
  redis_url: "redis://:redis-password-secret@127.0.0.1:1/0"
  providers:
    - {{ name: sim, kind: openai, endpoint: "http://127.0.0.1:18321/v1" }}
  models:
    - {{ name: anything, targets: [ {{ provider: sim }} ] }}
  budgets:
    - {{ name: b, selector: {{ principals: [agent-a] }}, tokens_per_day: 100000 }}
mcp:
  default: deny
  session_key: "session-key-secret-0123456789abcdef0123"
  servers:
    - {{ name: remote, url: "http://127.0.0.1:18321/mcp", headers: {{ Authorization: "Bearer mcp-header-secret-5678" }} }}
    - {{ name: local, transport: stdio, command: sleep, args: ["600"], env: {{ TOKEN: "stdio-env-secret-4321" }}, user: nobody }}
  policies:
    - {{ selector: {{ principals: [agent-a] }} }}
"#
    );
    let gw = Gateway::start(&dir, &pin, &cfg, Some(&topo.node), None);
    let node = &topo.node;

    // An LLM call (with a Redis URL that fails: the fallback is logged) and MCP traffic, so
    // that every secret has had its chance to reach a log line.
    let (status, body) = chat(node, None, Some(KEY_A), "anything");
    assert_eq!(status, 200, "{body}");
    let (status, _) = curl(
        node,
        None,
        &[
            "-H",
            &format!("Authorization: Bearer {KEY_A}"),
            "-H",
            "content-type: application/json",
            "-H",
            "accept: application/json, text/event-stream",
            "-d",
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#,
            "http://127.0.0.1:15080/mcp",
        ],
    );
    assert_ne!(status, 0, "the MCP endpoint answered");

    // The admin server wants its token; with it, the dump redacts every secret.
    let (status, _) = curl(node, None, &["http://127.0.0.1:15000/config_dump"]);
    assert_eq!(status, 401, "no token, no config dump");
    let auth = format!("Authorization: Bearer {ADMIN_TOKEN}");
    let (status, dump) = curl(node, None, &["-H", &auth, "http://127.0.0.1:15000/config_dump"]);
    assert_eq!(status, 200, "{dump}");
    assert!(dump.contains("[redacted]"), "{dump}");
    let (status, _) = curl(node, None, &["http://127.0.0.1:15000/healthz"]);
    assert_eq!(status, 200, "health stays open for probes");

    // The explicit proxy, asked for the admin server by every name, refuses; the egress list
    // lets those names through, so it is the own-listener guard that holds.
    for url in [
        "http://127.0.0.1:15000/config_dump",
        "http://localhost:15000/config_dump",
        "http://[::ffff:127.0.0.1]:15000/config_dump",
        "http://127.0.0.1:15080/v1/models",
    ] {
        let (status, body) = curl(node, None, &["-x", "http://127.0.0.1:15080", "-H", &auth, url]);
        assert_eq!(status, 508, "{url} through the proxy: {body}");
        assert!(!body.contains("redacted") && !body.contains("listeners"), "{url}: {body}");
    }
    let (status, _) = curl(
        node,
        None,
        &["-p", "-x", "http://127.0.0.1:15080", "-H", &auth, "http://localhost:15000/config_dump"],
    );
    assert_ne!(status, 200, "CONNECT to the admin server by name must fail");

    // Egress allow list: a destination not on it is refused and audited.
    let (status, body) = curl(node, None, &["-x", "http://127.0.0.1:15080", "http://127.0.0.1:18322/x"]);
    assert_eq!(status, 403, "{body}");
    assert_eq!(sim_count(node, "127.0.0.1:18322"), 0);
    gw.wait_audit("egress refusal", |r| r["rule"] == "egress.allow" && r["decision"] == "deny");

    // A forwarded request loses the nodegate key it carried, and keeps any other credential.
    let (status, body) = curl(
        node,
        None,
        &[
            "-x",
            "http://127.0.0.1:15080",
            "-H",
            &format!("Authorization: Bearer {KEY_A}"),
            "-H",
            "x-api-key: the-agents-own-service-token",
            "http://127.0.0.1:18321/anything",
        ],
    );
    assert_eq!(status, 404, "the upstream's own answer comes back: {body}");
    assert!(body.contains("no route /anything"), "{body}");
    let seen = get("127.0.0.1:18321", "/sim/last", Some(node), None)["body"].clone();
    assert!(seen["headers"].get("authorization").is_none(), "a nodegate key went upstream: {seen}");
    assert_eq!(seen["headers"]["x-api-key"], "the-agents-own-service-token", "{seen}");

    std::thread::sleep(Duration::from_millis(300));
    let log = gw.log_text();
    let audit = std::fs::read_to_string(&gw.audit).unwrap_or_default();
    for s in secrets {
        assert!(!dump.contains(s), "/config_dump shows {s}: {dump}");
        assert!(!log.contains(s), "the log shows {s}:\n{log}");
        assert!(!audit.contains(s), "the audit log shows {s}");
    }
}

#[test]
fn stdio_servers_start_with_a_cleared_environment_as_the_configured_user() {
    require_root();
    let topo = Topology::new();
    let (dir, pin) = Gateway::prepare("sec-stdio");
    let out = dir.join("stdio-env");
    std::fs::create_dir_all(&out).unwrap_or_else(|e| panic!("{e}"));
    // The server runs as nobody: let it write its report here.
    sh("chmod", &["0777", &out.display().to_string()]);
    let report = out.join("report");
    let script = format!("(id -u; env) > {} ; exec sleep 60", report.display());
    let cfg = format!(
        r#"
listeners: {{ explicit: 127.0.0.1:15080, transparent: null }}
audit: {{ path: "{{AUDIT}}", flush_interval: 50ms }}
mcp:
  servers:
    - {{ name: env, transport: stdio, command: sh, args: ["-c", "{script}"], env: {{ GIVEN: "configured-value" }}, user: nobody }}
"#
    );
    // SAFETY: set before the gateway process is spawned; read only by it.
    unsafe { std::env::set_var("NG_SEC_NODE_SECRET", "a-key-only-nodegate-holds") };
    let gw = Gateway::start(&dir, &pin, &cfg, Some(&topo.node), None);
    wait_until(Duration::from_secs(10), "the stdio server's report", || {
        std::fs::read_to_string(&report).is_ok_and(|t| t.contains("GIVEN="))
    });
    let text = std::fs::read_to_string(&report).unwrap_or_default();
    let uid = text.lines().next().unwrap_or_default();
    let nobody = std::process::Command::new("id").args(["-u", "nobody"]).output().map(|o| o.stdout);
    let nobody = String::from_utf8_lossy(&nobody.unwrap_or_default()).trim().to_string();
    assert_eq!(uid, nobody, "the server runs as the configured user: {text}");
    assert!(text.contains("GIVEN=configured-value"), "{text}");
    assert!(!text.contains("a-key-only-nodegate-holds"), "nodegate's environment leaked: {text}");
    assert!(!text.contains("NG_SEC_NODE_SECRET"), "{text}");
    drop(gw);
}

/// One POST to nodegate's `/mcp` in the handshake era; returns (session id header, body).
fn mcp_post(ns: &Netns, session: Option<&str>, body: &str) -> (Option<String>, String) {
    mcp_post_as(ns, None, session, body)
}

/// As [`mcp_post`], presenting `key` when given.
fn mcp_post_as(ns: &Netns, key: Option<&str>, session: Option<&str>, body: &str) -> (Option<String>, String) {
    let sid = session.map(|s| format!("Mcp-Session-Id: {s}"));
    let auth = key.map(|k| format!("Authorization: Bearer {k}"));
    let mut args = vec![
        "-sS",
        "--max-time",
        "20",
        "-D",
        "-",
        "-H",
        "content-type: application/json",
        "-H",
        "accept: application/json, text/event-stream",
        "-H",
        "MCP-Protocol-Version: 2025-11-25",
        "-d",
        body,
    ];
    if let Some(s) = &sid {
        args.extend(["-H", s.as_str()]);
    }
    if let Some(a) = &auth {
        args.extend(["-H", a.as_str()]);
    }
    args.push("http://127.0.0.1:15080/mcp");
    let child =
        spawn_child(std::path::Path::new("curl"), &args, Some(ns), None, Stdio::piped(), Stdio::piped());
    let out = child.wait_with_output().unwrap_or_else(|e| panic!("curl: {e}"));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let session = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("mcp-session-id").then(|| v.trim().to_string())
    });
    (session, rest.to_string())
}

#[test]
fn one_mcp_session_cannot_cancel_or_answer_another_sessions_calls() {
    require_root();
    let topo = Topology::new();
    let _files = nodegate_tests::mcp::mcp_server(&topo.node, "files", "http", "127.0.0.1", 9161);
    let (dir, pin) = Gateway::prepare("sec-mcp-sessions");
    let cfg = r#"
listeners: { explicit: 127.0.0.1:15080, transparent: null }
audit: { path: "{AUDIT}", flush_interval: 50ms }
mcp:
  servers:
    - { name: files, url: "http://127.0.0.1:9161/mcp" }
"#;
    let gw = Gateway::start(&dir, &pin, cfg, Some(&topo.node), None);
    let init = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"attacker-test","version":"1"}}}"#;
    // Two sessions of the same workload (both keyless, unknown): the weakest separation there is.
    let (a, _) = mcp_post(&topo.node, None, init);
    let (b, _) = mcp_post(&topo.node, None, init);
    let (a, b) = (a.expect("session A"), b.expect("session B"));
    assert_ne!(a, b);

    let marker = dir.join("cancelled-a");
    let call = |id: u32, secs: f64| {
        format!(
            r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"wait","arguments":{{"seconds":{secs},"marker":"{}"}}}}}}"#,
            marker.display()
        )
    };
    let cancel = |id: u32| {
        format!(
            r#"{{"jsonrpc":"2.0","method":"notifications/cancelled","params":{{"requestId":{id},"reason":"x"}}}}"#
        )
    };
    // B cancels A's in-flight request 7 by its (guessable) id: nothing happens to A's call.
    let ns_name = topo.node.name.clone();
    let a2 = a.clone();
    let body7 = call(7, 1.5);
    let n = ns_name.clone();
    let waiter = std::thread::spawn(move || mcp_post_owned(n, &a2, &body7));
    std::thread::sleep(Duration::from_millis(400));
    let _ = mcp_post(&topo.node, Some(&b), &cancel(7));
    let answer = waiter.join().unwrap_or_default();
    assert!(answer.contains("waited"), "session B cancelled session A's call: {answer}");
    assert!(!marker.exists(), "the server saw a cancellation");

    // A cancelling its own call does cancel it (so the check above can fail).
    let a3 = a.clone();
    let body8 = call(8, 5.0);
    let waiter = std::thread::spawn(move || mcp_post_owned(ns_name, &a3, &body8));
    std::thread::sleep(Duration::from_millis(400));
    let _ = mcp_post(&topo.node, Some(&a), &cancel(8));
    let answer = waiter.join().unwrap_or_default();
    assert!(answer.contains("cancelled"), "A's own cancellation must work: {answer}");
    drop(gw);
}

/// As [`mcp_post`], from another thread (by namespace name).
fn mcp_post_owned(ns: String, session: &str, body: &str) -> String {
    let ns = Netns { name: ns };
    let (_, out) = mcp_post(&ns, Some(session), body);
    // The namespace belongs to the test's topology: do not delete it with this handle.
    std::mem::forget(ns);
    out
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

/// Rewrites the gateway's config file and waits until the reload was applied (`n` reloads so far).
fn reload(gw: &Gateway, ns: &Netns, yaml: &str, n: u64) {
    let text = yaml.replace("{AUDIT}", &gw.audit.display().to_string());
    std::fs::write(&gw.config, text).unwrap_or_else(|e| panic!("{e}"));
    let want = format!("nodegate_config_reloads_total{{outcome=\"applied\"}} {n}");
    wait_until(Duration::from_secs(10), "the reload to be applied", || {
        get("127.0.0.1:15000", "/metrics", Some(ns), None)["body"].as_str().unwrap_or("").contains(&want)
    });
}

#[test]
fn a_reload_keeps_budget_counters_and_mcp_calls_in_flight() {
    require_root();
    let topo = Topology::new();
    let node = &topo.node;
    let _sim = llm_sim(node, "127.0.0.1:18331", "provider", &["--tokens", "10"]);
    let _files = nodegate_tests::mcp::mcp_server(node, "files", "http", "127.0.0.1", 9171);
    let (dir, pin) = Gateway::prepare("sec-reload");
    let cfg = |limit_extra: &str, ttl: &str| {
        format!(
            r#"
listeners: {{ explicit: 127.0.0.1:15080, transparent: null }}
admin: {{ address: 127.0.0.1:15000 }}
audit: {{ path: "{{AUDIT}}", flush_interval: 50ms }}
identities:
  - {{ name: agent-a, api_keys: ["{KEY_A}"] }}
llm:
  default: deny
  allow: [ {{ selector: {{ principals: [agent-a] }}, models: ["*"] }} ]
  providers: [ {{ name: sim, kind: openai, endpoint: "http://127.0.0.1:18331/v1" }} ]
  models: [ {{ name: fast, targets: [ {{ provider: sim }} ] }} ]
  budgets:
    - {{ name: daily, selector: {{ principals: [agent-a] }}, tokens_per_day: 60{limit_extra} }}
mcp:
  list_ttl: {ttl}
  servers: [ {{ name: files, url: "http://127.0.0.1:9171/mcp" }} ]
"#
        )
    };
    let gw = Gateway::start(&dir, &pin, &cfg("", "5m"), Some(node), None);
    // Spend the budget until it refuses.
    let mut ok = 0;
    loop {
        let (status, body) = chat(node, None, Some(KEY_A), "fast");
        if status == 429 {
            break;
        }
        assert_eq!(status, 200, "{body}");
        ok += 1;
        assert!(ok < 20, "a 60-token budget never refused");
    }
    assert!(ok >= 2, "{ok}");
    // New budget rules (a limit added): the tokens already spent stay spent.
    reload(&gw, node, &cfg(", requests_per_minute: 100", "5m"), 1);
    let (status, body) = chat(node, None, Some(KEY_A), "fast");
    assert_eq!(status, 429, "a reload must not hand out a fresh budget: {body}");

    // An MCP call in flight across a reload completes, and can still be cancelled by its session.
    let init = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"reload-test","version":"1"}}}"#;
    let (session, _) = mcp_post(node, None, init);
    let session = session.expect("session");
    let marker = dir.join("cancelled");
    let call = |id: u32, secs: f64| {
        format!(
            r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"wait","arguments":{{"seconds":{secs},"marker":"{}"}}}}}}"#,
            marker.display()
        )
    };
    let (n, s, body) = (node.name.clone(), session.clone(), call(5, 2.0));
    let waiter = std::thread::spawn(move || mcp_post_owned(n, &s, &body));
    std::thread::sleep(Duration::from_millis(300));
    reload(&gw, node, &cfg(", requests_per_minute: 100", "4m"), 2);
    let answer = waiter.join().unwrap_or_default();
    assert!(answer.contains("waited"), "a call in flight survives a reload: {answer}");

    let (n, s, body) = (node.name.clone(), session.clone(), call(6, 10.0));
    let waiter = std::thread::spawn(move || mcp_post_owned(n, &s, &body));
    std::thread::sleep(Duration::from_millis(300));
    reload(&gw, node, &cfg(", requests_per_minute: 100", "3m"), 3);
    let cancel =
        r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":6,"reason":"x"}}"#;
    let _ = mcp_post(node, Some(&session), cancel);
    let answer = waiter.join().unwrap_or_default();
    assert!(answer.contains("cancelled"), "the reloaded gateway still knows the call in flight: {answer}");
    wait_until(Duration::from_secs(5), "the server to see the cancellation", || marker.exists());
}

#[test]
fn notifications_about_a_hidden_server_do_not_reach_callers_who_may_not_see_it() {
    require_root();
    let topo = Topology::new();
    let node = &topo.node;
    let _files = nodegate_tests::mcp::mcp_server(node, "files", "http", "127.0.0.1", 9181);
    let _ev = nodegate_tests::mcp::everything(node, "streamableHttp", 9182);
    let (dir, pin) = Gateway::prepare("sec-mcp-notify");
    let cfg = format!(
        r#"
listeners: {{ explicit: 127.0.0.1:15080, transparent: null }}
audit: {{ path: "{{AUDIT}}", flush_interval: 50ms }}
identities:
  - {{ name: agent-a, api_keys: ["{KEY_A}"] }}
  - {{ name: agent-b, api_keys: ["{KEY_B}"] }}
mcp:
  servers:
    - {{ name: files, url: "http://127.0.0.1:9181/mcp" }}
    - {{ name: everything, url: "http://127.0.0.1:9182/mcp" }}
  policies:
    - {{ selector: {{ principals: [agent-a] }} }}
    - {{ selector: {{ principals: [agent-b] }}, servers: [files] }}
  default: deny
"#
    );
    let _gw = Gateway::start(&dir, &pin, &cfg, Some(node), None);
    let init = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"notify-test","version":"1"}}}"#;
    let (sa, _) = mcp_post_as(node, Some(KEY_A), None, init);
    let (sb, _) = mcp_post_as(node, Some(KEY_B), None, init);
    let (sa, sb) = (sa.expect("session A"), sb.expect("session B"));
    // Both open their server streams (8 s), written to files.
    let stream = |key: &str, session: &str, out: &std::path::Path| {
        let (auth, sid) = (format!("Authorization: Bearer {key}"), format!("Mcp-Session-Id: {session}"));
        let out = out.display().to_string();
        spawn(
            std::path::Path::new("curl"),
            &[
                "-sS",
                "-N",
                "--max-time",
                "8",
                "-o",
                &out,
                "-H",
                "accept: text/event-stream",
                "-H",
                "MCP-Protocol-Version: 2025-11-25",
                "-H",
                &auth,
                "-H",
                &sid,
                "http://127.0.0.1:15080/mcp",
            ],
            Some(node),
            None,
            Stdio::null(),
            Stdio::null(),
        )
    };
    let (out_a, out_b) = (dir.join("stream-a"), dir.join("stream-b"));
    let mut a = stream(KEY_A, &sa, &out_a);
    let mut b = stream(KEY_B, &sb, &out_b);
    std::thread::sleep(Duration::from_millis(500));
    // A subscribes to one of everything's resources and turns its updates on.
    let (_, list) = mcp_post_as(
        node,
        Some(KEY_A),
        Some(&sa),
        r#"{"jsonrpc":"2.0","id":2,"method":"resources/list","params":{}}"#,
    );
    let uri = list
        .split('"')
        .find(|s| s.starts_with("demo://"))
        .unwrap_or_else(|| panic!("no resource of everything in {list}"))
        .to_string();
    let sub =
        format!(r#"{{"jsonrpc":"2.0","id":3,"method":"resources/subscribe","params":{{"uri":"{uri}"}}}}"#);
    let (_, r) = mcp_post_as(node, Some(KEY_A), Some(&sa), &sub);
    assert!(r.contains("\"result\""), "{r}");
    let toggle = r#"{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"toggle-subscriber-updates","arguments":{}}}"#;
    let (_, r) = mcp_post_as(node, Some(KEY_A), Some(&sa), toggle);
    assert!(r.contains("\"result\""), "{r}");
    let _ = a.child.wait();
    let _ = b.child.wait();
    let seen_a = std::fs::read_to_string(&out_a).unwrap_or_default();
    let seen_b = std::fs::read_to_string(&out_b).unwrap_or_default();
    assert!(seen_a.contains("notifications/resources/updated"), "A sees everything's updates: {seen_a}");
    assert!(
        !seen_b.contains("notifications/resources/updated") && !seen_b.contains(&uri),
        "B may not see everything, nor its notifications: {seen_b}"
    );
}
