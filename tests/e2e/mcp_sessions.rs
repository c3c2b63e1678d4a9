//! MCP sessions and streams end to end (official `mcp` Python SDK in both eras, real servers):
//! sessions across a gateway restart, the server stream with resumption and DELETE, progress,
//! server-to-client requests (sampling, elicitation) in every pairing of eras, list changes,
//! cancellation, and a stdio server's supervision.
use std::time::Duration;

use nodegate_tests::{mcp::*, *};
use serde_json::{Value, json};

#[test]
fn a_session_survives_a_gateway_restart() {
    require_root();
    let topo = Topology::new();
    let _ev = everything(&topo.node, "streamableHttp", 9141);
    let mcp = r#"
  session_key: "a-shared-key-of-at-least-32-bytes!!"
  servers:
    - { name: everything, url: "http://127.0.0.1:9141/mcp" }
"#;
    let mut gw = start(&topo, "mcp-restart", mcp);
    let dir = gw.dir.clone();
    let (flag, ready) = (dir.join("go"), dir.join("ready"));
    let script = repo_root().join("tests/python/mcp_clients.py").display().to_string();
    let (flag_s, ready_s) = (flag.display().to_string(), ready.display().to_string());
    let child = spawn_child(
        std::path::Path::new("python3"),
        &[&script, "session_restart", "legacy", GW, KEY_A, &flag_s, &ready_s, "get-env"],
        Some(&topo.node),
        None,
        std::process::Stdio::piped(),
        std::process::Stdio::piped(),
    );
    wait_until(Duration::from_secs(20), "first call in the session", || ready.exists());
    gw.stop();
    let (pin, cfg) = (gw.pin.clone(), std::fs::read_to_string(&gw.config).unwrap_or_default());
    let gw2 = Gateway::start(&dir, &pin, &cfg, Some(&topo.node), None);
    std::fs::write(&flag, "go").unwrap_or_else(|e| panic!("{e}"));
    let out = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("{e}: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    });
    assert_eq!(v["first"]["is_error"], false, "{v}");
    assert_eq!(v["second"]["is_error"], false, "the same session id works on the restarted gateway: {v}");
    assert!(v["second"]["text"].as_str().is_some_and(|t| t.contains("PATH")), "{v}");
    drop(gw2);
    drop(gw);
}

#[test]
fn progress_sampling_and_list_changes_reach_the_client() {
    require_root();
    let topo = Topology::new();
    let _files = mcp_server(&topo.node, "files", "http", "127.0.0.1", 9151);
    let _ev = everything(&topo.node, "streamableHttp", 9152);
    let _gw = start(
        &topo,
        "mcp-relay",
        r#"
  servers:
    - { name: files, url: "http://127.0.0.1:9151/mcp" }
    - { name: everything, url: "http://127.0.0.1:9152/mcp" }
    - { name: fileshs, url: "http://127.0.0.1:9151/mcp", protocol: "2025-11-25" }
"#,
    );
    for era in ERAS {
        // Progress from a handshake-era server and from a stateless-era one.
        let p = client(
            "progress",
            era,
            KEY_A,
            &["trigger-long-running-operation", r#"{"duration":1,"steps":3}"#],
            &topo,
        );
        assert_eq!(p["progress"], json!([1.0, 2.0, 3.0]), "{era}: {p}");
        let p = client("progress", era, KEY_A, &["files_slow", r#"{"steps":4}"#], &topo);
        assert_eq!(p["text"], "files done after 4 steps", "{era}: {p}");
        assert_eq!(p["progress"].as_array().map(Vec::len), Some(4), "{era}: {p}");
    }
    // A server asks the calling client's model (sampling), in every pairing of eras: a
    // handshake-era server sends a request mid-call, which reaches a handshake-era client on the
    // answer's event stream (under a gateway id, its answer going back under the server's id)
    // and a 2026-07-28 client as an input_required round trip; a 2026-07-28 server answers
    // input_required, which a 2026-07-28 client retries through nodegate and which nodegate
    // asks a handshake-era client as a request on the event stream, then retries itself.
    for era in ERAS {
        for (tool, args, want) in [
            (
                "trigger-sampling-request",
                r#"{"prompt":"summarise the gateway","maxTokens":8}"#,
                "summarise the gateway",
            ),
            ("files_summarise", r#"{"question":"what is nodegate"}"#, "what is nodegate"),
            ("fileshs_summarise", r#"{"question":"what is nodegate"}"#, "what is nodegate"),
        ] {
            let s = client("sampling", era, KEY_A, &[tool, args], &topo);
            assert!(strs(&s["asked"]).iter().any(|a| a.contains(want)), "{era} {tool}: {s}");
            assert!(s["text"].as_str().unwrap_or("").contains("sampled by the client"), "{era} {tool}: {s}");
        }
    }
    // Elicitation takes the same paths: the user's answer reaches the server that asked.
    for era in ERAS {
        let e = client("elicit", era, KEY_A, &["trigger-elicitation-request", "{}"], &topo);
        assert!(!strs(&e["asked"]).is_empty(), "{era}: {e}");
        assert!(strs(&e["all_text"]).iter().any(|t| t.contains("Ada Lovelace")), "{era}: {e}");
    }
    // A tool added at the server: list_changed reaches clients of both eras, and the next list has it.
    for (era, tool) in [("legacy", "added_one"), ("auto", "added_two")] {
        let c = client("list_changed", era, KEY_A, &["files_add_tool", tool], &topo);
        assert!(c["notified"] == true || c["notified"] == "ToolsListChanged", "{era}: {c}");
        let has = |list: &Value| strs(list).iter().any(|t| t.ends_with(tool));
        assert!(!has(&c["before"]) && has(&c["after"]), "{c}");
    }
}

/// The children of `pid` (stdio servers nodegate launched).
fn children(pid: u32) -> Vec<u32> {
    let out = std::process::Command::new("pgrep")
        .args(["-P", &pid.to_string()])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| l.trim().parse().ok()).collect()
}

#[test]
fn a_stdio_server_that_dies_is_restarted() {
    require_root();
    let topo = Topology::new();
    let js = everything_js().display().to_string();
    let gw = start(
        &topo,
        "mcp-stdio",
        &format!(
            "  servers:\n    - {{ name: evstdio, transport: stdio, command: node, args: [\"{js}\", \"stdio\"] }}\n"
        ),
    );
    let r = client("call", "legacy", KEY_A, &["echo", r#"{"message":"before"}"#], &topo);
    assert_eq!(r["text"], "Echo: before", "{r}");
    let before = children(gw.proc.pid());
    assert_eq!(before.len(), 1, "one stdio child: {before:?}");
    // SAFETY: signalling the child nodegate started for this test, by its pid.
    unsafe { libc::kill(before[0] as i32, libc::SIGKILL) };
    let mut last = Value::Null;
    wait_until(Duration::from_secs(15), "the stdio server answering again", || {
        last = client("call", "auto", KEY_A, &["echo", r#"{"message":"after"}"#], &topo);
        last["text"] == "Echo: after"
    });
    let after = children(gw.proc.pid());
    assert_eq!(after.len(), 1, "{after:?}");
    assert_ne!(after, before, "a new process");
    assert!(gw.log_text().contains("MCP stdio server stopped"), "the restart is logged");
}

/// `curl -N` GET of the server stream for `secs` seconds; its output.
fn server_stream(ns: &Netns, session: &str, last_event: Option<&str>, secs: u32) -> String {
    let s = format!("mcp-session-id: {session}");
    let l = last_event.map(|l| format!("last-event-id: {l}"));
    let t = secs.to_string();
    let mut args = vec!["-s", "-N", "-m", &t, "-H", "accept: text/event-stream", "-H", &s];
    if let Some(l) = &l {
        args.extend_from_slice(&["-H", l]);
    }
    args.push(GW);
    let child = spawn_child(
        std::path::Path::new("curl"),
        &args,
        Some(ns),
        None,
        std::process::Stdio::piped(),
        std::process::Stdio::null(),
    );
    String::from_utf8_lossy(&child.wait_with_output().unwrap_or_else(|e| panic!("{e}")).stdout).into_owned()
}

#[test]
fn handshake_sessions_stream_resume_and_end() {
    require_root();
    let topo = Topology::new();
    let _files = mcp_server(&topo.node, "files", "http", "127.0.0.1", 9181);
    let _gw = start(
        &topo,
        "mcp-session",
        "  servers:\n    - { name: files, url: \"http://127.0.0.1:9181/mcp\" }\n",
    );
    let ns = &topo.node;
    let json = "content-type: application/json";
    let init = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"curl","version":"1"}}}"#;
    let (s, v, headers) = curl_post(ns, GW, &[json], init);
    assert_eq!((s, v["result"]["protocolVersion"].as_str()), (200, Some("2025-11-25")), "{v}");
    let session = headers
        .lines()
        .find_map(|l| l.strip_prefix("mcp-session-id: ").map(|v| v.trim().to_string()))
        .unwrap_or_else(|| panic!("no session id in {headers}"));
    let with = format!("mcp-session-id: {session}");
    let add = |name: &str| {
        let body = format!(
            r#"{{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{{"name":"add_tool","arguments":{{"tool_name":"{name}"}}}}}}"#
        );
        let (s, v, _) =
            curl_post(ns, GW, &[json, &with, "accept: application/json, text/event-stream"], &body);
        assert_eq!(s, 200, "{v}");
    };
    // A list change while the stream is open arrives on it, with an event id. (Two changes a
    // second apart, so a slow start of the stream on a loaded machine cannot miss both.)
    let stream = std::thread::scope(|sc| {
        let h = sc.spawn(|| server_stream(ns, &session, None, 5));
        std::thread::sleep(Duration::from_millis(1000));
        add("first_added");
        std::thread::sleep(Duration::from_millis(1000));
        add("first_added_again");
        h.join().unwrap_or_default()
    });
    assert!(stream.contains("notifications/tools/list_changed"), "{stream}");
    let id = stream
        .lines()
        .filter_map(|l| l.strip_prefix("id: "))
        .next_back()
        .unwrap_or_else(|| panic!("no event id: {stream}"));
    // One more change while nobody listens: a reconnect with Last-Event-ID gets it at once.
    add("second_added");
    let resumed = server_stream(ns, &session, Some(id), 2);
    assert_eq!(resumed.matches("notifications/tools/list_changed").count(), 1, "{resumed}");
    assert!(
        !resumed.contains(&format!("id: {id}\n")),
        "events up to the given id are not sent again: {resumed}"
    );

    // DELETE ends the session; it is then unknown.
    let del = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns.name,
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-X",
            "DELETE",
            "-H",
            &with,
            GW,
        ])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(String::from_utf8_lossy(&del.stdout), "200");
    let (s, _, _) = curl_post(ns, GW, &[json, &with], r#"{"jsonrpc":"2.0","id":3,"method":"tools/list"}"#);
    assert_eq!(s, 404, "an ended session is gone");
}

#[test]
fn a_cancelled_call_is_cancelled_at_the_server() {
    require_root();
    let topo = Topology::new();
    let _files = mcp_server(&topo.node, "files", "http", "127.0.0.1", 9191);
    let gw = start(
        &topo,
        "mcp-cancel",
        r#"
  prefix: always
  servers:
    - { name: modern, url: "http://127.0.0.1:9191/mcp" }
    - { name: hs, url: "http://127.0.0.1:9191/mcp", protocol: "2025-11-25" }
"#,
    );
    // The client gives up after 1 s (the SDK cancels: notifications/cancelled in the handshake
    // era, closing the request in 2026-07-28); the tool notices only if the server cancels it.
    for era in ERAS {
        for server in ["modern", "hs"] {
            let marker = gw.dir.join(format!("cancelled-{era}-{server}"));
            let args = json!({"seconds": 10, "marker": marker.display().to_string()}).to_string();
            let r = client("cancel", era, KEY_A, &[&format!("{server}_wait"), &args], &topo);
            assert_ne!(r["outcome"], "completed", "{r}");
            wait_until(
                Duration::from_secs(5),
                &format!("{era} client -> {server} server: tool cancelled"),
                || marker.exists(),
            );
        }
    }
    let rec = gw.wait_audit("cancelled call", |v| v["kind"] == "mcp" && v["outcome"] == "cancelled");
    assert_eq!(rec["name"], "wait", "{rec}");
}
