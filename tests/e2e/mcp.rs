//! The MCP gateway end to end: the official `mcp` Python SDK as client, in both protocol eras,
//! against nodegate federating real servers: the npm `server-everything` (streamable HTTP,
//! SSE and stdio) and a Python SDK server (tests/python/mcp_server.py). This suite: federation,
//! naming and paging, policy, failing servers, bad input, transparent interception; sessions,
//! streams and what crosses them are in mcp_sessions.rs.
use std::time::Duration;

use nodegate_tests::{mcp::*, *};
use serde_json::{Value, json};

#[test]
fn federates_http_sse_and_stdio_servers_for_clients_of_both_eras() {
    require_root();
    let topo = Topology::new();
    let _files = mcp_server(&topo.node, "files", "http", "127.0.0.1", 9101);
    let _ev = everything(&topo.node, "streamableHttp", 9102);
    let _evsse = everything(&topo.node, "sse", 9103);
    let js = everything_js().display().to_string();
    let gw = start(
        &topo,
        "mcp-federation",
        &format!(
            r#"
  servers:
    - {{ name: files, url: "http://127.0.0.1:9101/mcp", headers: {{ Authorization: "Bearer files-server-secret" }} }}
    - {{ name: everything, url: "http://127.0.0.1:9102/mcp" }}
    - {{ name: evsse, transport: sse, url: "http://127.0.0.1:9103/sse" }}
    - {{ name: evstdio, transport: stdio, command: node, args: ["{js}", "stdio"] }}
"#
        ),
    );
    for era in ERAS {
        let l = client("lists", era, KEY_A, &[], &topo);
        let tools = strs(&l["tools"]);
        // Unique names stay as they are; names several servers share carry their server's name.
        for t in ["read_file", "whoami", "everything_echo", "evsse_echo", "evstdio_echo", "evstdio_get-sum"] {
            assert!(tools.contains(&t.to_string()), "{era}: {t} missing from {tools:?}");
        }
        assert!(!tools.contains(&"echo".to_string()), "{era}: a shared name must be prefixed: {tools:?}");
        assert!(strs(&l["prompts"]).contains(&"review".to_string()), "{era}: {l}");
        assert!(strs(&l["resources"]).contains(&"file:///files/readme".to_string()), "{era}: {l}");

        // Each call reaches the server that owns the name and returns its answer.
        let r = client(
            "calls",
            era,
            KEY_A,
            &[
                r#"[["whoami",{}],["everything_echo",{"message":"via http"}],["evsse_echo",{"message":"via sse"}],["evstdio_echo",{"message":"via stdio"}],["evstdio_get-sum",{"a":2,"b":40}],["fail",{}]]"#,
            ],
            &topo,
        );
        let texts: Vec<&str> =
            r["results"].as_array().unwrap().iter().map(|x| x["text"].as_str().unwrap_or("")).collect();
        assert_eq!(texts[0], "files", "{era}: {r}");
        assert_eq!(texts[1], "Echo: via http", "{era}: {r}");
        assert_eq!(texts[2], "Echo: via sse", "{era}: {r}");
        assert_eq!(texts[3], "Echo: via stdio", "{era}: {r}");
        assert!(texts[4].contains("42"), "{era}: {r}");
        assert_eq!(r["results"][5]["is_error"], true, "a tool error is the tool's result: {r}");

        // The server gets the credential configured for it; the agent's key never leaves nodegate.
        let auth = client("call", era, KEY_A, &["seen_auth"], &topo);
        assert_eq!(auth["text"], "Bearer files-server-secret", "{era}: {auth}");

        let rd = client("read", era, KEY_A, &["file:///files/readme"], &topo);
        assert_eq!(rd["text"], "readme of files", "{era}: {rd}");
        let rd = client(
            "read",
            era,
            KEY_A,
            &["everything+demo://resource/static/document/architecture.md"],
            &topo,
        );
        assert_eq!(rd["uri"], "everything+demo://resource/static/document/architecture.md", "{era}: {rd}");
        assert!(rd["text"].as_str().is_some_and(|t| !t.is_empty()), "{era}: {rd}");
        let p = client("prompt", era, KEY_A, &["review", r#"{"code":"fn main(){}"}"#], &topo);
        assert_eq!(p["text"], "files: please review fn main(){}", "{era}: {p}");
    }

    let call = gw.wait_audit("audited stdio call", |v| {
        v["kind"] == "mcp" && v["server"] == "evstdio" && v["name"] == "get-sum"
    });
    assert_eq!(call["principal"], "agent-a");
    assert_eq!(call["arguments"], json!({"a": 2, "b": 40}));
    assert_eq!(call["outcome"], "ok");
    assert!(
        call["duration_ms"].as_f64().is_some() && call["bytes_received"].as_u64().unwrap_or(0) > 0,
        "{call}"
    );
    let eras: Vec<Value> = gw
        .audit_lines()
        .into_iter()
        .filter(|v| v["name"] == "whoami")
        .map(|v| v["protocol_version"].clone())
        .collect();
    assert!(eras.contains(&json!("2026-07-28")) && eras.contains(&json!("2025-11-25")), "{eras:?}");
    let failed = gw.wait_audit("tool error", |v| v["name"] == "fail");
    assert_eq!(
        (failed["outcome"].as_str(), failed["tool_error"].as_bool()),
        (Some("ok"), Some(true)),
        "{failed}"
    );
    let m = metrics(&topo.node, ADMIN);
    assert!(
        m.lines().any(|l| l.starts_with("nodegate_mcp_calls_total{")
            && l.contains("server=\"evsse\"")
            && l.contains("tool=\"echo\"")
            && l.contains("identity=\"agent-a\"")
            && l.contains("outcome=\"ok\"")),
        "{m}"
    );
    assert!(m.contains("nodegate_mcp_request_duration_seconds_bucket{"), "{m}");
    // ng-probe parses a JSON body.
    let servers = probe(&["get", ADMIN, "/mcp/servers"], Some(&topo.node), None)["body"].clone();
    let by =
        |n: &str| servers.as_array().unwrap().iter().find(|s| s["name"] == n).cloned().unwrap_or_default();
    assert_eq!(
        by("files")["protocol"],
        "2026-07-28",
        "the Python server speaks the stateless era: {servers}"
    );
    assert_eq!(
        by("everything")["protocol"],
        "2025-11-25",
        "server-everything needs the handshake: {servers}"
    );
    assert!(servers.as_array().unwrap().iter().all(|s| s["up"] == true), "{servers}");
}

#[test]
fn prefix_always_and_pagination_cover_every_tool_once() {
    require_root();
    let topo = Topology::new();
    let _files = mcp_server(&topo.node, "files", "http", "127.0.0.1", 9111);
    let _ev = everything(&topo.node, "streamableHttp", 9112);
    let _gw = start(
        &topo,
        "mcp-pages",
        r#"
  prefix: always
  page_size: 4
  servers:
    - { name: files, url: "http://127.0.0.1:9111/mcp" }
    - { name: everything, url: "http://127.0.0.1:9112/mcp" }
"#,
    );
    // Every tool the server shows a plain client is there, prefixed (nodegate declares the
    // sampling, elicitation and roots capabilities, which makes server-everything show more).
    let direct = mcp_client("lists", "legacy", "http://127.0.0.1:9112/mcp", "-", &[], Some(&topo.node), None);
    let everything_tools = strs(&direct["tools"]);
    assert!(everything_tools.len() > 5, "{direct}");
    let files_direct =
        mcp_client("lists", "legacy", "http://127.0.0.1:9111/mcp", "-", &[], Some(&topo.node), None);
    let files_tools = strs(&files_direct["tools"]);
    for era in ERAS {
        let p = client("pages", era, KEY_A, &[], &topo);
        let tools = strs(&p["tools"]);
        let mut unique = tools.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), tools.len(), "{era}: a tool appeared twice across pages: {tools:?}");
        assert!(tools.iter().all(|t| t.starts_with("files_") || t.starts_with("everything_")), "{tools:?}");
        for t in &everything_tools {
            assert!(tools.contains(&format!("everything_{t}")), "{era}: everything_{t} missing: {p}");
        }
        for t in &files_tools {
            assert!(tools.contains(&format!("files_{t}")), "{era}: files_{t} missing: {p}");
        }
        assert_eq!(tools.iter().filter(|t| t.starts_with("files_")).count(), files_tools.len(), "{p}");
        assert_eq!(p["pages"].as_u64(), Some(tools.len().div_ceil(4) as u64), "{era}: {p}");
        let r = client("call", era, KEY_A, &["files_whoami"], &topo);
        assert_eq!(r["text"], "files", "{era}: {r}");
    }
}

#[test]
fn policy_filters_lists_and_checks_call_arguments() {
    require_root();
    let topo = Topology::new();
    let _files = mcp_server(&topo.node, "files", "http", "127.0.0.1", 9121);
    let _ev = everything(&topo.node, "streamableHttp", 9122);
    let gw = start(
        &topo,
        "mcp-policy",
        r#"
  servers:
    - { name: files, url: "http://127.0.0.1:9121/mcp" }
    - { name: everything, url: "http://127.0.0.1:9122/mcp" }
  redact: [token]
  policies:
    - selector: { principals: [agent-b] }
      servers: [files]
      tools: ["files/read_file", "files/get_file", "files/delete_file"]
      deny_tools: ["files/delete_file"]
      constraints:
        - { tool: "files/read_file", when: 'arguments.path.startsWith("/srv/data/") && !arguments.path.contains("..")' }
        - { tool: "files/get_file", when: 'arguments.repo in ["org/app", "org/lib"]' }
"#,
    );
    for era in ERAS {
        let b = client("lists", era, KEY_B, &[], &topo);
        assert_eq!(
            strs(&b["tools"]),
            ["get_file", "read_file"],
            "{era}: agent-b sees only what it may call: {b}"
        );
        let a = client("lists", era, KEY_A, &[], &topo);
        assert!(strs(&a["tools"]).len() > 10, "{era}: no rule for agent-a: everything: {a}");

        let r = client(
            "calls",
            era,
            KEY_B,
            &[
                r#"[["read_file",{"path":"/srv/data/report.txt"}],["read_file",{"path":"/etc/passwd"}],["read_file",{"path":"/srv/data/../../etc/passwd"}],["get_file",{"repo":"org/app","path":"README.md","token":"s3cret"}],["get_file",{"repo":"evil/app","path":"README.md"}],["delete_file",{"path":"/srv/data/x"}],["echo",{"message":"x"}]]"#,
            ],
            &topo,
        );
        let res = r["results"].as_array().unwrap();
        assert_eq!(res[0]["text"], "files read /srv/data/report.txt", "{era}: {r}");
        for (i, rule) in [
            (1, "mcp.policies[0].constraints[0]"),
            (2, "mcp.policies[0].constraints[0]"),
            (4, "mcp.policies[0].constraints[1]"),
            (5, "mcp.policies[0]"),
            (6, "mcp.policies[0]"),
        ] {
            assert_eq!(res[i]["code"], -32003, "{era}: call {i} must be denied: {r}");
            assert_eq!(res[i]["data"]["rule"], rule, "{era}: call {i}: {r}");
            assert!(
                res[i]["message"].as_str().unwrap_or("").contains(rule),
                "the message names the rule: {r}"
            );
        }
        assert_eq!(res[3]["text"], "files org/app:README.md", "{era}: {r}");
        // agent-a has no rule: the same calls go through.
        let r = client("call", era, KEY_A, &["delete_file", r#"{"path":"/etc/x"}"#], &topo);
        assert_eq!(r["text"], "files deleted /etc/x", "{era}: {r}");
    }
    let denied = gw.wait_audit("denied call", |v| {
        v["kind"] == "mcp" && v["decision"] == "deny" && v["name"] == "get_file"
    });
    assert_eq!(denied["rule"], "mcp.policies[0].constraints[1]");
    assert_eq!(denied["principal"], "agent-b");
    assert_eq!(denied["arguments"]["repo"], "evil/app");
    let allowed = gw.wait_audit("allowed get_file", |v| v["name"] == "get_file" && v["decision"] == "allow");
    assert_eq!(allowed["arguments"]["token"], "[redacted]", "{allowed}");
    let m = metrics(&topo.node, ADMIN);
    assert!(m.lines().any(|l| l.contains("outcome=\"denied\"") && l.contains("identity=\"agent-b\"")), "{m}");

    // A policy change in the file applies without a restart.
    let text = std::fs::read_to_string(&gw.config).unwrap_or_default();
    let widened = text.replace(
        "\"files/get_file\", \"files/delete_file\"]",
        "\"files/get_file\", \"files/delete_file\", \"files/whoami\"]",
    );
    assert_ne!(text, widened);
    std::fs::write(&gw.config, widened).unwrap_or_else(|e| panic!("{e}"));
    let mut tools = Vec::new();
    wait_until(Duration::from_secs(20), "the reloaded policy", || {
        tools = strs(&client("lists", "legacy", KEY_B, &[], &topo)["tools"]);
        tools.contains(&"whoami".to_string())
    });
    assert_eq!(tools, ["get_file", "read_file", "whoami"]);
}

#[test]
fn one_failing_server_never_breaks_the_others() {
    require_root();
    let topo = Topology::new();
    let _files = mcp_server(&topo.node, "files", "http", "127.0.0.1", 9131);
    let mut ev = everything(&topo.node, "streamableHttp", 9132);
    let _garbage = mcp_server(&topo.node, "junk", "garbage", "127.0.0.1", 9133);
    let _hang = mcp_server(&topo.node, "stuck", "hang", "127.0.0.1", 9134);
    let servers = r#"
  servers:
    - { name: files, url: "http://127.0.0.1:9131/mcp" }
    - { name: everything, url: "http://127.0.0.1:9132/mcp" }
    - { name: junk, url: "http://127.0.0.1:9133/mcp" }
    - { name: stuck, url: "http://127.0.0.1:9134/mcp", timeout: 1s }
    - { name: absent, transport: stdio, command: /nonexistent/mcp-server }
"#;
    let gw = start(&topo, "mcp-failures", servers);
    for era in ERAS {
        let l = client("lists", era, KEY_A, &[], &topo);
        let tools = strs(&l["tools"]);
        assert!(
            tools.contains(&"read_file".to_string()) && tools.contains(&"echo".to_string()),
            "{era}: {l}"
        );
        let missing: Vec<String> = l["tools_meta"]["nodegate/unavailable"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|u| u["server"].as_str().map(str::to_string))
            .collect();
        assert_eq!(missing, ["junk", "stuck", "absent"], "{era}: failing servers are reported: {l}");
        let why = |n: &str| {
            l["tools_meta"]["nodegate/unavailable"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|u| u["server"] == n)
                .and_then(|u| u["error"].as_str())
                .unwrap_or("")
                .to_string()
        };
        assert!(why("junk").contains("not MCP"), "{era}: {l}");
        assert!(why("absent").contains("/nonexistent/mcp-server"), "{era}: {l}");
    }
    // Kill one working server: the other keeps answering; calls to the dead one fail cleanly.
    ev.kill9();
    let r = client("calls", "legacy", KEY_A, &[r#"[["echo",{"message":"x"}],["whoami",{}]]"#], &topo);
    assert_eq!(r["results"][0]["code"], -32002, "{r}");
    assert!(r["results"][0]["message"].as_str().unwrap_or("").contains("everything"), "{r}");
    assert_eq!(r["results"][1]["text"], "files", "{r}");
    let l = client("lists", "auto", KEY_A, &[], &topo);
    assert!(strs(&l["tools"]).contains(&"whoami".to_string()), "{l}");
    let st = probe(&["get", ADMIN, "/mcp/servers"], Some(&topo.node), None)["body"].clone();
    let up = |n: &str| st.as_array().unwrap().iter().find(|s| s["name"] == n).map(|s| s["up"].clone());
    assert_eq!((up("files"), up("everything")), (Some(json!(true)), Some(json!(false))), "{st}");
    assert!(
        metrics(&topo.node, ADMIN).contains("nodegate_mcp_server_up{server=\"everything\"} 0"),
        "health in metrics"
    );
    drop(gw);

    // A server marked required fails the lists closed instead.
    let gw = start(&topo, "mcp-required", &servers.replace("timeout: 1s }", "timeout: 1s, required: true }"));
    let l = client("lists", "legacy", KEY_A, &[], &topo);
    assert_eq!(l["code"], -32002, "{l}");
    assert!(l["message"].as_str().unwrap_or("").contains("required MCP server stuck"), "{l}");
    drop(gw);
}

#[test]
fn bad_input_gets_clear_json_rpc_errors_and_disturbs_nothing() {
    require_root();
    let topo = Topology::new();
    let _files = mcp_server(&topo.node, "files", "http", "127.0.0.1", 9161);
    let gw = start(
        &topo,
        "mcp-bad-input",
        r#"
  max_body_bytes: 4096
  allowed_origins: ["http://localhost:6274"]
  servers:
    - { name: files, url: "http://127.0.0.1:9161/mcp" }
"#,
    );
    let ns = &topo.node;
    let h = modern_headers("tools/list");
    let h: Vec<&str> = h.iter().map(String::as_str).collect();
    let ok_body = modern_request(1, "tools/list", json!({}));

    let (s, v, _) = curl_post(ns, GW, &h, "{not json");
    assert_eq!((s, v["error"]["code"].as_i64()), (400, Some(-32700)), "{v}");
    let (s, v, _) = curl_post(ns, GW, &h, "[]");
    assert_eq!((s, v["error"]["code"].as_i64()), (400, Some(-32600)), "{v}");
    let (s, v, _) = curl_post(ns, GW, &h, r#"{"jsonrpc":"2.0","id":3,"method":1}"#);
    assert_eq!((s, v["error"]["code"].as_i64(), v["id"].as_i64()), (400, Some(-32600), Some(3)), "{v}");
    let unknown = modern_headers("nope/nothing");
    let unknown: Vec<&str> = unknown.iter().map(String::as_str).collect();
    let (s, v, _) = curl_post(ns, GW, &unknown, &modern_request(4, "nope/nothing", json!({})));
    assert_eq!((s, v["error"]["code"].as_i64()), (200, Some(-32601)), "{v}");
    let big = modern_request(
        5,
        "tools/call",
        json!({"name": "read_file", "arguments": {"path": "x".repeat(8000)}}),
    );
    let (s, v, _) = curl_post(ns, GW, &h, &big);
    assert_eq!((s, v["error"]["code"].as_i64()), (413, Some(-32600)), "{v}");
    let (s, v, _) =
        curl_post(ns, GW, &["content-type: application/json", "mcp-protocol-version: 1999-01-01"], &ok_body);
    assert_eq!((s, v["error"]["code"].as_i64()), (400, Some(-32022)), "{v}");
    assert!(
        v["error"]["data"]["supported"].as_array().is_some_and(|a| a.contains(&json!("2026-07-28"))),
        "{v}"
    );
    let mut mismatch = h.clone();
    mismatch[3] = "mcp-method: tools/call";
    let (s, v, _) = curl_post(ns, GW, &mismatch, &ok_body);
    assert_eq!((s, v["error"]["code"].as_i64()), (400, Some(-32020)), "{v}");
    let legacy = r#"{"jsonrpc":"2.0","id":6,"method":"tools/list"}"#;
    let (s, v, _) = curl_post(ns, GW, &["content-type: application/json"], legacy);
    assert_eq!((s, v["error"]["code"].as_i64()), (400, Some(-32600)), "no session: {v}");
    let (s, _, _) =
        curl_post(ns, GW, &["content-type: application/json", "mcp-session-id: forged.session"], legacy);
    assert_eq!(s, 404, "an unknown session is 404 so the client starts over");
    let mut origin = h.clone();
    origin.push("origin: http://evil.example");
    let (s, _, _) = curl_post(ns, GW, &origin, &ok_body);
    assert_eq!(s, 403, "a foreign Origin is refused");
    let (s, _, _) = curl_post(ns, GW, &["content-type: text/plain"], &ok_body);
    assert_eq!(s, 415);

    // None of that disturbed anything: an allowed origin and a plain client still work.
    let mut allowed = h.clone();
    allowed.push("origin: http://localhost:6274");
    let (s, v, _) = curl_post(ns, GW, &allowed, &ok_body);
    assert_eq!(s, 200, "{v}");
    assert!(
        v["result"]["tools"].as_array().is_some_and(|t| t.iter().any(|x| x["name"] == "read_file")),
        "{v}"
    );
    assert_eq!(v["result"]["resultType"], "complete", "2026-07-28 results carry resultType: {v}");
    let r = client("call", "legacy", KEY_A, &["whoami"], &topo);
    assert_eq!(r["text"], "files", "{r}");

    // A call's trace (W3C traceparent in `_meta`, MCP's carrier, or the header) is in its record.
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let mut body: Value =
        serde_json::from_str(&modern_request(9, "tools/call", json!({"name": "whoami"}))).unwrap();
    body["params"]["_meta"]["traceparent"] = json!(format!("00-{trace}-00f067aa0ba902b7-01"));
    let call = modern_headers("tools/call");
    let call: Vec<&str> = call.iter().map(String::as_str).collect();
    let (s, v, _) = curl_post(ns, GW, &call, &body.to_string());
    assert_eq!(s, 200, "{v}");
    let rec = gw.wait_audit("traced call", |v| v["kind"] == "mcp" && v["trace_id"].is_string());
    assert_eq!(rec["trace_id"], trace, "{rec}");
}

#[test]
fn garbage_and_hanging_servers_become_json_rpc_errors() {
    require_root();
    let topo = Topology::new();
    let _files = mcp_server(&topo.node, "files", "http", "127.0.0.1", 9171);
    let _stuck = mcp_server(&topo.node, "stuck", "hang", "127.0.0.1", 9172);
    let _gw = start(
        &topo,
        "mcp-hang",
        r#"
  servers:
    - { name: files, url: "http://127.0.0.1:9171/mcp", protocol: "2025-11-25" }
    - { name: stuck, url: "http://127.0.0.1:9172/mcp", timeout: 1500ms, protocol: "2026-07-28" }
"#,
    );
    // `stuck` hangs on its first request: the list still answers (without it) within the
    // timeout, and names it.
    let start = std::time::Instant::now();
    let l = client("lists", "legacy", KEY_A, &[], &topo);
    assert!(start.elapsed() < Duration::from_secs(15), "lists waited {:?}", start.elapsed());
    assert!(strs(&l["tools"]).contains(&"whoami".to_string()), "{l}");
    let u = &l["tools_meta"]["nodegate/unavailable"][0];
    assert_eq!(u["server"], "stuck", "{l}");
    assert!(u["error"].as_str().unwrap_or("").contains("no answer within"), "{l}");
    // The next list does not wait on it again: it is left out until `retry_after` passes.
    let l = client("lists", "auto", KEY_A, &[], &topo);
    assert_eq!(l["tools_meta"]["nodegate/unavailable"][0]["server"], "stuck", "{l}");
    let m = metrics(&topo.node, ADMIN);
    assert!(m.contains("nodegate_mcp_server_failures{server=\"stuck\"} 1"), "asked once, not twice:\n{m}");
    let r = client("call", "auto", KEY_A, &["whoami"], &topo);
    assert_eq!(r["text"], "files", "{r}");
}

#[test]
fn transparent_calls_to_an_mcp_server_are_policed_and_audited() {
    require_root();
    let topo = Topology::new();
    let cgroups = TestCgroups::new();
    let (cg, enrolled) = (cgroups.base().to_string(), &cgroups.enrolled);
    let _files = mcp_server(&topo.node, "files", "http", "0.0.0.0", UPSTREAM_PORT);
    let (dir, pin) = Gateway::prepare("mcp-transparent");
    let cfg = format!(
        r#"
listeners: {{ transparent: 0.0.0.0:{TRANSPARENT_PORT}, explicit: null }}
audit: {{ path: "{{AUDIT}}", flush_interval: 50ms }}
identities:
  - {{ name: research-agent, cgroup: "{cg}/enrolled" }}
intercept:
  enabled: true
  cgroups: ["{cg}/enrolled"]
  redirect_to: {NODE_IP}:{TRANSPARENT_PORT}
  pin_path: "{{PIN}}"
  destinations:
    - {{ address: {SVC_IP}, ports: [{UPSTREAM_PORT}], class: mcp }}
mcp:
  servers:
    - {{ name: files, url: "http://{SVC_IP}:{UPSTREAM_PORT}/mcp" }}
  policies:
    - selector: {{ workloads: [research-agent] }}
      tools: ["files/read_file", "files/whoami"]
      constraints:
        - {{ tool: "files/read_file", when: 'arguments.path.startsWith("/srv/data/")' }}
"#
    );
    let gw = Gateway::start(&dir, &pin, &cfg, Some(&topo.node), None);
    let url = format!("http://{SVC_IP}:{UPSTREAM_PORT}/mcp");
    for era in ERAS {
        // The agent calls the server directly; it has no idea nodegate is there.
        let l = mcp_client("lists", era, &url, "-", &[], Some(&topo.pod), Some(enrolled));
        assert_eq!(strs(&l["tools"]), ["read_file", "whoami"], "{era}: the list is filtered in flight: {l}");
        let r = mcp_client(
            "calls",
            era,
            &url,
            "-",
            &[
                r#"[["read_file",{"path":"/srv/data/a"}],["read_file",{"path":"/root/.ssh/id_rsa"}],["delete_file",{"path":"/srv/data/a"}]]"#,
            ],
            Some(&topo.pod),
            Some(enrolled),
        );
        assert_eq!(r["results"][0]["text"], "files read /srv/data/a", "{era}: {r}");
        assert_eq!(r["results"][1]["code"], -32003, "{era}: {r}");
        assert_eq!(r["results"][1]["data"]["rule"], "mcp.policies[0].constraints[0]", "{era}: {r}");
        assert_eq!(r["results"][2]["code"], -32003, "{era}: {r}");
    }
    let a = gw.wait_audit("transparent MCP call", |v| {
        v["kind"] == "mcp" && v["mode"] == "transparent" && v["outcome"] == "ok"
    });
    assert_eq!(a["identity"], "research-agent", "named by the kernel: {a}");
    assert_eq!(a["server"], "files");
    let d = gw.wait_audit("transparent denial", |v| v["kind"] == "mcp" && v["decision"] == "deny");
    assert_eq!(d["identity"], "research-agent");
    assert_eq!(d["arguments"]["path"], "/root/.ssh/id_rsa", "{d}");
    // Outside the enrolled cgroup nothing is intercepted: the server answers everything.
    let l = mcp_client("lists", "legacy", &url, "-", &[], Some(&topo.pod), None);
    assert!(strs(&l["tools"]).contains(&"delete_file".to_string()), "{l}");
}

/// Readiness means ready: right after start, a stdio server still starting keeps /readyz at
/// 503 (saying which), /readyz/detail shows each server's start (a failed one with its reason),
/// and a tools list asked for meanwhile waits for the starting server instead of answering
/// without its tools.
#[test]
fn readiness_and_lists_wait_for_a_starting_stdio_server() {
    require_root();
    let topo = Topology::new();
    let js = everything_js().display().to_string();
    let gw = start(
        &topo,
        "mcp-startup",
        &format!(
            r#"
  servers:
    - {{ name: slow, transport: stdio, command: sh, args: ["-c", "sleep 3; exec node {js} stdio"] }}
    - {{ name: absent, transport: stdio, command: /nonexistent/mcp-server }}
"#
        ),
    );
    let node = Some(&topo.node);
    let r = get(ADMIN, "/readyz", node, None);
    assert_eq!(r["status"], 503, "a starting stdio server must hold readiness: {r}");
    assert!(r["body"].as_str().unwrap_or("").contains("mcp server slow starting"), "{r}");
    let d = get(ADMIN, "/readyz/detail", node, None);
    let servers = d["body"]["mcp_servers"].as_array().cloned().unwrap_or_default();
    let by = |n: &str| servers.iter().find(|s| s["name"] == n).cloned().unwrap_or_default();
    assert_eq!(by("slow")["startup"], "starting", "{d}");
    assert_eq!(by("absent")["startup"], "failed", "{d}");
    assert!(by("absent")["error"].as_str().unwrap_or("").contains("/nonexistent/mcp-server"), "{d}");

    // Asked for while `slow` is still starting: the list waits for it.
    let started = std::time::Instant::now();
    let l = client("lists", "auto", KEY_A, &[], &topo);
    let tools = strs(&l["tools"]);
    assert!(tools.contains(&"echo".to_string()), "the starting server's tools are missing: {l}");
    assert!(started.elapsed() < Duration::from_secs(30), "{:?}", started.elapsed());
    wait_until(Duration::from_secs(10), "ready once slow has started", || {
        get(ADMIN, "/readyz", node, None)["status"] == 200
    });
    let d = get(ADMIN, "/readyz/detail", node, None);
    assert_eq!(d["body"]["ready"], true, "{d}");
    drop(gw);
}
