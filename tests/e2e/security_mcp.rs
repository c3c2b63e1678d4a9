//! The security suite, part three: sessions and state are isolated. One MCP session cannot act
//! on another's calls, notifications follow the caller's policy, and a reload keeps budgets and
//! calls in flight. As root, with a real MCP server.
use std::{process::Stdio, time::Duration};

use nodegate_tests::{attack::*, *};

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
    let (answer, _) =
        while_posting(&topo.node, &a, &call(7, 1.5), || mcp_post(&topo.node, Some(&b), &cancel(7)));
    assert!(answer.contains("waited"), "session B cancelled session A's call: {answer}");
    assert!(!marker.exists(), "the server saw a cancellation");

    // A cancelling its own call does cancel it (so the check above can fail).
    let (answer, _) =
        while_posting(&topo.node, &a, &call(8, 5.0), || mcp_post(&topo.node, Some(&a), &cancel(8)));
    assert!(answer.contains("cancelled"), "A's own cancellation must work: {answer}");

    // The server's own address is no way around /mcp: an absolute-form request or a CONNECT
    // tunnel to it through the explicit listener is refused, naming where to go.
    for (tunnel, path) in [(false, "/mcp"), (false, "//MCP/./"), (true, "/mcp")] {
        let mut cmd = std::process::Command::new("ip");
        cmd.args([
            "netns",
            "exec",
            &topo.node.name,
            "curl",
            "-s",
            "-m",
            "10",
            "-x",
            "http://127.0.0.1:15080",
        ]);
        if tunnel {
            cmd.args(["-p", "-o", "/dev/null", "-w", "%{http_connect}"]);
        } else {
            cmd.args(["-w", "\n%{http_code}", "-H", "content-type: application/json", "--data-binary", init]);
        }
        let out = cmd
            .args(["--path-as-is", &format!("http://127.0.0.1:9161{path}")])
            .output()
            .unwrap_or_else(|e| panic!("curl: {e}"));
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(text.ends_with("403"), "tunnel {tunnel} {path}: {text}");
        if !tunnel {
            assert!(text.contains("is MCP server files"), "{text}");
        }
    }
    let rec = gw.wait_audit("way around refused", |r| r["rule"] == "mcp.servers");
    assert_eq!(rec["decision"], "deny", "{rec}");
    drop(gw);
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
    let (answer, _) = while_posting(node, &session, &call(5, 2.0), || {
        reload(&gw, node, &cfg(", requests_per_minute: 100", "4m"), 2)
    });
    assert!(answer.contains("waited"), "a call in flight survives a reload: {answer}");

    let cancel =
        r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":6,"reason":"x"}}"#;
    let (answer, _) = while_posting(node, &session, &call(6, 10.0), || {
        reload(&gw, node, &cfg(", requests_per_minute: 100", "3m"), 3);
        mcp_post(node, Some(&session), cancel)
    });
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
