//! `policy.rules`: one CEL rule set over every protocol, end to end with real peers. Each
//! attribute family drives a real allow and a real deny: plain HTTP through the explicit listener
//! (request, destination, source), gRPC intercepted by eBPF with a grpcio server and client
//! (grpc), and LLM (llm-sim), MCP (the Python SDK server) and A2A (the SDK agent) calls (llm, mcp,
//! a2a). Dry run records without denying, a rule's rate limit refuses with 429, an evaluation
//! error denies and says why, and a reload swaps the rules at once under load.
use std::{
    path::Path,
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use nodegate_tests::*;
use serde_json::{Value, json};

const GW: &str = "127.0.0.1:15080";
const ADMIN: &str = "127.0.0.1:15000";

/// curl through the explicit listener: (status, headers, body).
fn via(ns: &Netns, url: &str, headers: &[&str]) -> (u16, String, String) {
    let proxy = format!("http://{GW}");
    let mut args = vec!["-s", "-m", "10", "-D", "/dev/stderr", "-x", proxy.as_str(), "-w", "\n%{http_code}"];
    for h in headers {
        args.extend_from_slice(&["-H", h]);
    }
    args.push(url);
    let out = spawn_child(Path::new("curl"), &args, Some(ns), None, Stdio::piped(), Stdio::piped())
        .wait_with_output()
        .unwrap_or_else(|e| panic!("curl: {e}"));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), String::from_utf8_lossy(&out.stderr).to_string(), body.to_string())
}

fn admin_metrics(ns: &Netns) -> String {
    get(ADMIN, "/metrics", Some(ns), None)["body"].as_str().unwrap_or_default().to_string()
}

/// The audit record of the request to `path` (the last one).
fn record_of(gw: &Gateway, path: &str) -> Value {
    gw.wait_audit(&format!("the record of {path}"), |r| r["kind"] == "http" && r["path"] == path)
}

#[test]
fn http_rules_decide_on_request_destination_and_source() {
    require_root();
    let topo = Topology::new();
    let ns = &topo.node;
    let _up = upstream(ns, "up");
    let (dir, pin) = Gateway::prepare("policy-http");
    let cfg = format!(
        r#"
listeners: {{ explicit: {GW}, transparent: null }}
admin: {{ address: {ADMIN} }}
audit: {{ path: "{{AUDIT}}", flush_interval: 50ms }}
identities:
  - {{ name: ops, api_keys: ["key-ops-0123456789"] }}
policy:
  rules:
    - name: ops-anything
      when: source.principal == "ops"
      action: allow
    - name: no-admin-paths
      when: request.path.startsWith("/admin")
      action: deny
    - name: team-header-for-writes
      when: request.method != "GET" && !("x-team" in request.headers)
      action: deny
    - name: no-direct-ip-hostcheck
      when: destination.host == "{SVC_IP}" && request.path == "/hostcheck"
      action: deny
    - name: only-the-service-port
      when: destination.port != {UPSTREAM_PORT}
      action: deny
    - name: watch-exports
      when: request.path == "/export"
      action: deny
      dry_run: true
    - name: limited
      when: request.path == "/limited"
      action: allow
      rate_limit: {{ requests: 2, per: 1h }}
    - name: typo
      when: request.path == "/typo" && request.headers["x-missing"] == "1"
      action: allow
"#
    );
    let gw = Gateway::start(&dir, &pin, &cfg, Some(ns), None);
    let url = |path: &str| format!("http://{SVC_IP}:{UPSTREAM_PORT}{path}");

    // request.path: denied, naming the rule; the upstream never sees it.
    let (s, _, body) = via(ns, &url("/admin/users"), &[]);
    assert_eq!(s, 403, "{body}");
    assert!(body.contains("no-admin-paths"), "the refusal names the rule: {body}");
    let rec = record_of(&gw, "/admin/users");
    assert_eq!(
        (rec["decision"].as_str(), rec["rule"].as_str()),
        (Some("deny"), Some("no-admin-paths")),
        "{rec}"
    );
    // ... and an ordinary path is forwarded.
    let (s, _, body) = via(ns, &url("/hello"), &[]);
    assert_eq!(s, 200, "{body}");
    assert!(body.contains("up"), "the upstream answered: {body}");

    // source.principal: an allow before the deny rules lets ops through; its record names it.
    let (s, _, _) = via(ns, &url("/admin/users"), &["authorization: Bearer key-ops-0123456789"]);
    assert_eq!(s, 200);
    let rec = gw.wait_audit("ops's admin call", |r| r["path"] == "/admin/users" && r["decision"] == "allow");
    assert_eq!(
        (rec["principal"].as_str(), rec["rule"].as_str()),
        (Some("ops"), Some("ops-anything")),
        "{rec}"
    );

    // request.method and request.headers.
    let post = |headers: &[&str]| {
        let proxy = format!("http://{GW}");
        let mut args =
            vec!["-s", "-m", "10", "-o", "/dev/null", "-w", "%{http_code}", "-x", &proxy, "-d", "x"];
        for x in headers {
            args.extend_from_slice(&["-H", x]);
        }
        let u = url("/write");
        args.push(&u);
        let out = spawn_child(Path::new("curl"), &args, Some(ns), None, Stdio::piped(), Stdio::null())
            .wait_with_output()
            .unwrap_or_else(|e| panic!("curl: {e}"));
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    assert_eq!(post(&[]), "403", "a write without x-team");
    assert_eq!(post(&["x-team: blue"]), "200", "a write with x-team");

    // destination.host is where nodegate connects: a Host header naming something else does
    // not walk around a rule on it.
    let (s, _, body) = via(ns, &url("/hostcheck"), &["Host: allowed.example"]);
    assert_eq!(s, 403, "a Host header changed the destination the rule saw: {body}");
    assert!(body.contains("no-direct-ip-hostcheck"), "{body}");

    // destination.port: another port is refused before any connection is tried.
    let (s, _, body) = via(ns, &format!("http://{SVC_IP}:9/"), &[]);
    assert_eq!(s, 403, "{body}");
    assert!(body.contains("only-the-service-port"), "{body}");

    // Dry run: forwarded, and the record says which rule would have denied it.
    let (s, _, _) = via(ns, &url("/export"), &[]);
    assert_eq!(s, 200, "a dry-run rule must not deny");
    let rec = record_of(&gw, "/export");
    // A request in a trace: the lines logged about it carry the trace id.
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let (s, _, _) = via(ns, &url("/export"), &[&format!("traceparent: 00-{trace}-00f067aa0ba902b7-01")]);
    assert_eq!(s, 200);
    wait_until(Duration::from_secs(5), "the dry-run line with the trace id", || {
        gw.log_text().lines().any(|l| l.contains("would deny") && l.contains(trace))
    });
    assert_eq!(
        (rec["decision"].as_str(), rec["would_deny"].as_str()),
        (Some("allow"), Some("watch-exports"))
    );

    // A rule's rate limit: two, then 429 with Retry-After, naming the rule.
    for _ in 0..2 {
        assert_eq!(via(ns, &url("/limited"), &[]).0, 200);
    }
    let (s, headers, body) = via(ns, &url("/limited"), &[]);
    assert_eq!(s, 429, "{body}");
    assert!(body.contains("limited"), "{body}");
    let retry = headers
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("retry-after:").map(|v| v.trim().to_string()))
        .unwrap_or_default();
    assert!(retry.parse::<u64>().is_ok_and(|s| s > 1000), "Retry-After of about 30 min: {headers}");
    // Another caller (ops, by principal... counted by workload, which is the same here) shares
    // the workload's allowance: the limit counts by workload by default.
    assert_eq!(
        via(ns, &url("/limited"), &["authorization: Bearer key-ops-0123456789"]).0,
        200,
        "ops-anything comes first"
    );

    // An evaluation error denies (fail closed) and says why.
    let (s, _, body) = via(ns, &url("/typo"), &[]);
    assert_eq!(s, 403, "{body}");
    assert!(body.contains("typo") && body.contains("failed"), "{body}");

    let m = admin_metrics(ns);
    for (rule, decision) in [
        ("no-admin-paths", "deny"),
        ("ops-anything", "allow"),
        ("watch-exports", "would_deny"),
        ("limited", "rate_limited"),
        ("limited", "allow"),
    ] {
        let n = metric_sum(
            &m,
            "nodegate_policy_decisions_total",
            &[&format!("rule=\"{rule}\""), &format!("decision=\"{decision}\""), "protocol=\"http\""],
        );
        assert!(n >= 1.0, "{rule} {decision} not counted: {m}");
    }
    assert_eq!(
        metric_sum(&m, "nodegate_policy_decisions_total", &["rule=\"limited\"", "decision=\"allow\""]),
        2.0
    );
}

/// gRPC intercepted by eBPF: a rule on `grpc.method` refuses one method with PERMISSION_DENIED
/// (which the grpcio client reports, with the rule in the details) and lets the others through;
/// a rate-limited service answers RESOURCE_EXHAUSTED once its allowance is spent.
#[test]
fn grpc_calls_are_ruled_by_service_and_method() {
    require_root();
    let topo = Topology::new();
    let cgroups = TestCgroups::new();
    let (cg, enrolled) = (cgroups.base().to_string(), &cgroups.enrolled);
    let script = repo_root().join("tests/python/grpc_peer.py").display().to_string();
    let _server = spawn(
        Path::new("python3"),
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
    let (dir, pin) = Gateway::prepare("policy-grpc");
    let cfg = format!(
        r#"
listeners: {{ transparent: 0.0.0.0:{TRANSPARENT_PORT}, explicit: null }}
audit: {{ path: "{{AUDIT}}", flush_interval: 50ms }}
intercept:
  enabled: true
  cgroups: ["{cg}/enrolled"]
  redirect_to: {NODE_IP}:{TRANSPARENT_PORT}
  pin_path: "{{PIN}}"
  destinations:
    - {{ address: {SVC_IP}, ports: [8082] }}
policy:
  rules:
    - name: no-fail-method
      when: grpc.service == "demo.Echo" && grpc.method == "Fail"
      action: deny
    - name: say-sparingly
      when: grpc.method == "Say"
      action: allow
      rate_limit: {{ requests: 1, per: 1h }}
"#
    );
    let gw = Gateway::start(&dir, &pin, &cfg, Some(&topo.node), None);
    let target = format!("{SVC_IP}:8082");
    let call = |method: &str| -> Value {
        let child = spawn_child(
            Path::new("python3"),
            &[&script, "one", &target, method],
            Some(&topo.pod),
            Some(enrolled),
            Stdio::piped(),
            Stdio::piped(),
        );
        let out = child.wait_with_output().unwrap_or_else(|e| panic!("python3: {e}"));
        let (o, e) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(!e.contains("ModuleNotFoundError"), "grpcio (.ci/run installs it): {e}");
        serde_json::from_str(o.trim()).unwrap_or_else(|err| panic!("{err}: {o} {e}"))
    };
    let fail = call("Fail");
    assert_eq!(fail["code"], "PERMISSION_DENIED", "{fail}");
    assert!(fail["details"].as_str().unwrap_or("").contains("no-fail-method"), "the rule is named: {fail}");
    // The server's own answer to Fail would be "not for you": the rule answered, not the server.
    assert!(!fail["details"].as_str().unwrap_or("").contains("not for you"), "{fail}");
    assert_eq!(call("Say")["ok"], "echo: hi");
    let again = call("Say");
    assert_eq!(again["code"], "RESOURCE_EXHAUSTED", "{again}");
    assert!(again["details"].as_str().unwrap_or("").contains("say-sparingly"), "{again}");
    let rec = gw.wait_audit("the refused Fail", |r| r["grpc"]["method"] == "Fail");
    assert_eq!(
        (rec["decision"].as_str(), rec["rule"].as_str()),
        (Some("deny"), Some("no-fail-method")),
        "{rec}"
    );
    assert_eq!(rec["grpc"]["status"], 7, "{rec}");
    let rec = gw.wait_audit("the allowed Say", |r| r["grpc"]["method"] == "Say" && r["decision"] == "allow");
    assert_eq!(
        (rec["rule"].as_str(), rec["grpc"]["status"].as_u64()),
        (Some("say-sparingly"), Some(0)),
        "{rec}"
    );
    let m = admin_metrics(&topo.node);
    for code in ["OK", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED"] {
        let n = metric_sum(&m, "nodegate_grpc_calls_total", &[&format!("code=\"{code}\"")]);
        assert_eq!(n, 1.0, "one {code} call counted: {m}");
    }
}

/// One config rules LLM, MCP and A2A calls with the same language: each family (llm, mcp, a2a)
/// and a JWT-less principal drive a real allow and a real deny, answered in each protocol's own
/// error format, with the rule named in the answer and the audit record.
#[test]
fn llm_mcp_and_a2a_calls_are_ruled_by_their_attributes() {
    require_root();
    let topo = Topology::new();
    let ns = &topo.node;
    let _sim = llm_sim(ns, "127.0.0.1:18101", "sim", &["--tokens", "3"]);
    let _files = nodegate_tests::mcp::mcp_server(ns, "files", "http", "127.0.0.1", 9161);
    let agent_script = repo_root().join("tests/python/a2a_agent.py").display().to_string();
    let _agent = spawn(
        Path::new("python3"),
        &[&agent_script, "--listen", "127.0.0.1:18611", "--name", "echo"],
        Some(ns),
        None,
        Stdio::null(),
        Stdio::inherit(),
    );
    wait_until(Duration::from_secs(15), "the A2A agent up", || {
        get("127.0.0.1:18611", "/.well-known/agent-card.json", Some(ns), None)["ok"] == true
    });
    let (dir, pin) = Gateway::prepare("policy-protocols");
    let cfg = format!(
        r#"
listeners: {{ explicit: {GW}, transparent: null }}
admin: {{ address: {ADMIN} }}
audit: {{ path: "{{AUDIT}}", flush_interval: 50ms }}
identities:
  - {{ name: alice, api_keys: ["key-alice-0123456"] }}
  - {{ name: bob, api_keys: ["key-bob-000123456"] }}
  - {{ name: carol, api_keys: ["key-carol-0123456"] }}
llm:
  allow:
    - {{ selector: {{ principals: [carol] }}, models: [fast] }}
  providers:
    - {{ name: sim, kind: openai, endpoint: "http://127.0.0.1:18101" }}
  models:
    - {{ name: fast, targets: [ {{ provider: sim }} ] }}
    - {{ name: big, targets: [ {{ provider: sim, model: fast }} ] }}
mcp:
  servers:
    - {{ name: files, url: "http://127.0.0.1:9161/mcp" }}
a2a:
  agents: [{{ name: echo, url: "http://127.0.0.1:18611" }}]
policy:
  rules:
    - name: big-model-for-alice-only
      when: llm.model == "big" && source.principal != "alice"
      action: deny
    - name: short-answers
      when: llm.max_tokens > 8192
      action: deny
    - name: no-etc
      when: mcp.tool == "read_file" && normalize_path(mcp.arguments.path).startsWith("/etc")
      action: deny
    - name: no-deleting
      when: mcp.server == "files" && mcp.tool == "delete_file"
      action: deny
    - name: no-slow-skill
      when: a2a.agent == "echo" && a2a.method == "SendMessage" && a2a.skill == "slow"
      action: deny
"#
    );
    let gw = Gateway::start(&dir, &pin, &cfg, Some(ns), None);

    // LLM: model and principal, and max_tokens; answered in OpenAI's error format.
    let chat = |key: &str, body: &str| -> (u16, Value, String) {
        nodegate_tests::mcp::curl_post(
            ns,
            &format!("http://{GW}/v1/chat/completions"),
            &["content-type: application/json", &format!("authorization: Bearer {key}")],
            body,
        )
    };
    let big = r#"{"model":"big","messages":[{"role":"user","content":"hi"}]}"#;
    assert_eq!(chat("key-alice-0123456", big).0, 200);
    let (s, v, _) = chat("key-bob-000123456", big);
    assert_eq!(s, 403, "{v}");
    assert!(v["error"]["message"].as_str().unwrap_or("").contains("big-model-for-alice-only"), "{v}");
    let rec = gw.wait_audit("bob's refused call", |r| r["kind"] == "llm" && r["decision"] == "deny");
    assert_eq!(
        (rec["principal"].as_str(), rec["rule"].as_str()),
        (Some("bob"), Some("big-model-for-alice-only"))
    );
    let (s, v, _) = chat(
        "key-bob-000123456",
        r#"{"model":"fast","max_tokens":10000,"messages":[{"role":"user","content":"hi"}]}"#,
    );
    assert_eq!(s, 403, "{v}");
    assert!(v["error"]["message"].as_str().unwrap_or("").contains("short-answers"), "{v}");
    assert_eq!(
        chat(
            "key-bob-000123456",
            r#"{"model":"fast","max_tokens":100,"messages":[{"role":"user","content":"hi"}]}"#
        )
        .0,
        200
    );

    // /v1/models lists what the caller may use: carol's allow list names only `fast`.
    let models = |key: &str| -> Vec<String> {
        let out = spawn_child(
            Path::new("curl"),
            &[
                "-s",
                "-m",
                "10",
                "-H",
                &format!("authorization: Bearer {key}"),
                &format!("http://{GW}/v1/models"),
            ],
            Some(ns),
            None,
            Stdio::piped(),
            Stdio::null(),
        )
        .wait_with_output()
        .unwrap_or_else(|e| panic!("curl: {e}"));
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        v["data"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m["id"].as_str().map(str::to_string))
            .collect()
    };
    assert_eq!(models("key-carol-0123456"), ["fast"]);
    assert_eq!(models("key-alice-0123456"), ["big", "fast"]);

    // MCP, through the Python SDK client: tool and arguments (a path walked around with `..` is
    // still /etc once normalised); answered as JSON-RPC errors naming the rule.
    let r = nodegate_tests::mcp::mcp_client(
        "calls",
        "legacy",
        &format!("http://{GW}/mcp"),
        "key-alice-0123456",
        &[
            r#"[["read_file",{"path":"/srv/data/a.txt"}],["read_file",{"path":"/srv/data/../../etc/passwd"}],["delete_file",{"path":"/tmp/x"}]]"#,
        ],
        Some(ns),
        None,
    );
    let res = r["results"].as_array().cloned().unwrap_or_default();
    assert_eq!(res.len(), 3, "{r}");
    assert_eq!(res[0]["text"], "files read /srv/data/a.txt", "{r}");
    assert_eq!(res[1]["data"]["rule"], "no-etc", "{r}");
    assert_eq!(res[2]["data"]["rule"], "no-deleting", "{r}");
    assert!(res[2]["message"].as_str().unwrap_or("").contains("no-deleting"), "{r}");
    let rec = gw.wait_audit("the refused delete", |r| r["kind"] == "mcp" && r["name"] == "delete_file");
    assert_eq!(
        (rec["decision"].as_str(), rec["rule"].as_str()),
        (Some("deny"), Some("no-deleting")),
        "{rec}"
    );

    // A2A: agent, method and skill; answered as an A2A JSON-RPC error naming the rule.
    let send = |skill: &str| -> (u16, Value) {
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": {"message": {
            "messageId": format!("m-{skill}"), "role": "ROLE_USER", "parts": [{"text": "echo hi"}],
            "metadata": {"skill": skill}}}})
        .to_string();
        let (s, v, _) = nodegate_tests::mcp::curl_post(
            ns,
            &format!("http://{GW}/a2a/echo"),
            &[
                "content-type: application/json",
                "A2A-Version: 1.0",
                "authorization: Bearer key-alice-0123456",
            ],
            &body,
        );
        (s, v)
    };
    let (_, v) = send("echo");
    assert!(v["result"].is_object(), "the echo skill is allowed: {v}");
    let (_, v) = send("slow");
    assert_eq!(v["error"]["code"], -32040, "{v}");
    assert!(v["error"]["message"].as_str().unwrap_or("").contains("no-slow-skill"), "{v}");
    let rec = gw.wait_audit("the refused A2A call", |r| r["kind"] == "a2a" && r["decision"] == "deny");
    assert_eq!((rec["rule"].as_str(), rec["skill"].as_str()), (Some("no-slow-skill"), Some("slow")), "{rec}");

    let m = admin_metrics(ns);
    for (rule, protocol) in
        [("big-model-for-alice-only", "llm"), ("no-deleting", "mcp"), ("no-slow-skill", "a2a")]
    {
        let n = metric_sum(
            &m,
            "nodegate_policy_decisions_total",
            &[&format!("rule=\"{rule}\""), &format!("protocol=\"{protocol}\""), "decision=\"deny\""],
        );
        assert!(n >= 1.0, "{rule}: {m}");
    }
}

/// A reload swaps the whole rule set at once while requests are in flight: every answer comes
/// from one version or the other (a 200, or a 403 naming a rule of that version), nothing fails,
/// and both versions are seen.
#[test]
fn a_reload_swaps_the_rules_atomically_under_load() {
    require_root();
    let topo = Topology::new();
    let ns = &topo.node;
    let _up = upstream(ns, "up");
    let (dir, pin) = Gateway::prepare("policy-reload");
    let version = |v: &str, denied: &str| {
        format!(
            r#"
listeners: {{ explicit: {GW}, transparent: null }}
admin: {{ address: {ADMIN} }}
audit: {{ path: "{{AUDIT}}", flush_interval: 50ms }}
policy:
  rules:
    - name: {v}-first
      when: request.path == "/{denied}"
      action: deny
    - name: {v}-rest
      when: "true"
      action: allow
"#
        )
    };
    let gw = Gateway::start(&dir, &pin, &version("a", "x"), Some(ns), None);
    let audit = gw.audit.display().to_string();
    let pin_s = pin.display().to_string();
    let text = |v: &str, d: &str| version(v, d).replace("{AUDIT}", &audit).replace("{PIN}", &pin_s);
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..3)
        .map(|_| {
            let (ns_name, stop) = (ns.name.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut codes = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    for path in ["/x", "/y"] {
                        let out = Command::new("ip")
                            .args(["netns", "exec", &ns_name, "curl", "-s", "-m", "10", "-o", "/dev/null"])
                            .args(["-w", "%{http_code}", "-x", &format!("http://{GW}")])
                            .arg(format!("http://{SVC_IP}:{UPSTREAM_PORT}{path}"))
                            .output();
                        let code =
                            out.map(|o| String::from_utf8_lossy(&o.stdout).to_string()).unwrap_or_default();
                        codes.push((path, code));
                    }
                }
                codes
            })
        })
        .collect();
    // The file is polled every second: a change every 1.3 s is each seen on its own.
    for i in 0..6 {
        std::thread::sleep(Duration::from_millis(1300));
        let cfg = if i % 2 == 0 { text("b", "y") } else { text("a", "x") };
        std::fs::write(&gw.config, cfg).unwrap_or_else(|e| panic!("{e}"));
    }
    std::thread::sleep(Duration::from_millis(1300));
    stop.store(true, Ordering::Relaxed);
    let codes: Vec<(&str, String)> = workers.into_iter().flat_map(|w| w.join().unwrap_or_default()).collect();
    assert!(codes.len() > 40, "too little load: {}", codes.len());
    let bad: Vec<_> = codes.iter().filter(|(_, c)| c != "200" && c != "403").collect();
    assert!(bad.is_empty(), "answers other than 200/403 during reloads: {bad:?}");
    // Every record names the rule of one version, consistent with its answer.
    std::thread::sleep(Duration::from_millis(300));
    let recs: Vec<Value> = gw.audit_lines().into_iter().filter(|r| r["kind"] == "http").collect();
    assert!(recs.len() >= codes.len(), "{} records for {} requests", recs.len(), codes.len());
    let mut seen = std::collections::BTreeSet::new();
    for r in &recs {
        let (path, rule, decision) = (r["path"].as_str(), r["rule"].as_str(), r["decision"].as_str());
        let ok = matches!(
            (path, rule, decision),
            (Some("/x"), Some("a-first"), Some("deny"))
                | (Some("/y"), Some("a-rest"), Some("allow"))
                | (Some("/y"), Some("b-first"), Some("deny"))
                | (Some("/x"), Some("b-rest"), Some("allow"))
        );
        assert!(ok, "a record no single version explains: {r}");
        seen.insert(rule.unwrap_or_default().to_string());
    }
    assert_eq!(seen.len(), 4, "both versions must have decided requests: {seen:?}");
    let reloads = metric_sum(&admin_metrics(ns), "nodegate_config_reloads_total", &["outcome=\"applied\""]);
    assert_eq!(reloads, 6.0, "every version applied");
}

/// `nodegate policy test` judges requests offline with the same engine: the exit status says
/// whether any was denied, and a bad condition is refused with its position.
#[test]
fn policy_test_judges_requests_offline() {
    let dir = scratch_dir("ng-policy-test-");
    let cfg = dir.join("c.yaml");
    std::fs::write(
        &cfg,
        r#"
policy:
  rules:
    - { name: no-delete, when: 'mcp.tool == "delete_file"', action: deny }
    - { name: agents-ok, when: 'source.workload.startsWith("agent")', action: allow }
    - { name: rest, when: 'true', action: deny, dry_run: true }
"#,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let input = dir.join("in.json");
    let run = |doc: &str, json: bool| {
        std::fs::write(&input, doc).unwrap_or_else(|e| panic!("{e}"));
        let mut args = vec!["policy".to_string(), "test".into(), cfg.display().to_string(), "--input".into()];
        args.push(input.display().to_string());
        if json {
            args.push("--json".into());
        }
        let out = Command::new(nodegate_bin()).args(&args).output().unwrap_or_else(|e| panic!("{e}"));
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (code, out, _) =
        run(r#"{"protocol":"mcp","source":{"workload":"agent-1"},"mcp":{"tool":"delete_file"}}"#, true);
    assert_eq!(code, Some(1), "{out}");
    let v: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!((v["decision"].as_str(), v["rule"].as_str()), (Some("deny"), Some("no-delete")), "{v}");
    let (code, out, _) = run(
        r#"[{"protocol":"mcp","source":{"workload":"agent-1"},"mcp":{"tool":"read_file"}},{"protocol":"http","source":{"workload":"batch"}}]"#,
        false,
    );
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("request 0: allow: rule agents-ok"), "{out}");
    assert!(out.contains("request 1: allow") && out.contains("rule rest would deny"), "{out}");
    let (code, _, err) = run(r#"{"protocol":"smtp"}"#, false);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("protocol"), "{err}");
    std::fs::write(&cfg, "policy: { rules: [ { name: x, when: 'mcp.tool ==', action: deny } ] }")
        .unwrap_or_else(|e| panic!("{e}"));
    let (code, _, err) = run(r#"{"protocol":"mcp"}"#, false);
    assert_eq!(code, Some(2));
    assert!(err.contains("policy.rules[0].when: invalid CEL at line 1, column"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
