//! The security suite, part one: who a caller is, what it may do by default, and what stays
//! secret. Each test performs an attack on nodegate's enforcement and shows it fail;
//! docs/security.md maps every promise to its test. As root, real sockets, curl as the attacker.
use std::time::Duration;

use nodegate_tests::{attack::*, *};

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
