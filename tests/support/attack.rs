//! What the security suites (tests/e2e/security*.rs) attack with: curl and raw sockets in a
//! test's namespaces and cgroups, and handshake-era MCP requests, as an agent would send them.
use std::{process::Stdio, time::Duration};

use crate::{Cgroup, Netns, Value, get, repo_root, spawn_child};

pub const KEY_A: &str = "sk-agent-a-0123456789abcdef";

pub const KEY_B: &str = "sk-pod-b-bound-0123456789ab";

pub const ADMIN_TOKEN: &str = "admin-token-0123456789abcdef";

/// Runs curl in `ns` (and `cg`); returns (HTTP status, body). Status 0: no HTTP answer.
pub fn curl(ns: &Netns, cg: Option<&Cgroup>, args: &[&str]) -> (u16, String) {
    let mut all = vec!["-sS", "--max-time", "10", "-o", "-", "-w", "\n%{http_code}"];
    all.extend_from_slice(args);
    let child = spawn_child(std::path::Path::new("curl"), &all, Some(ns), cg, Stdio::piped(), Stdio::piped());
    let out = child.wait_with_output().unwrap_or_else(|e| panic!("curl: {e}"));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or((&text, "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

pub fn chat(ns: &Netns, cg: Option<&Cgroup>, key: Option<&str>, model: &str) -> (u16, String) {
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

pub fn raw(ns: &Netns, cg: Option<&Cgroup>, host: &str, port: u16, mode: &str) -> Value {
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

pub fn sim_count(ns: &Netns, addr: &str) -> u64 {
    get(addr, "/sim/count", Some(ns), None)["body"]["count"].as_u64().unwrap_or(u64::MAX)
}

/// One POST to nodegate's `/mcp` in the handshake era; returns (session id header, body).
pub fn mcp_post(ns: &Netns, session: Option<&str>, body: &str) -> (Option<String>, String) {
    mcp_post_as(ns, None, session, body)
}

/// As [`mcp_post`], presenting `key` when given.
pub fn mcp_post_as(
    ns: &Netns,
    key: Option<&str>,
    session: Option<&str>,
    body: &str,
) -> (Option<String>, String) {
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

/// Posts `body` to `/mcp` for `session` on another thread, runs `during` once the call is under
/// way, then returns the call's answer and what `during` returned.
pub fn while_posting<R>(ns: &Netns, session: &str, body: &str, during: impl FnOnce() -> R) -> (String, R) {
    std::thread::scope(|s| {
        let call = s.spawn(|| mcp_post(ns, Some(session), body).1);
        std::thread::sleep(Duration::from_millis(400));
        let r = during();
        (call.join().unwrap_or_default(), r)
    })
}
