//! /metrics as a scraper and promtool read it: after LLM, MCP, A2A and plain HTTP traffic the
//! page passes `promtool check metrics` (Debian's prometheus package; .ci/run installs it) in
//! the Prometheus text format, OpenMetrics is served to a scraper that asks for it, and model
//! names a client makes up do not become label values (series cannot grow without bound).
use std::{process::Stdio, time::Duration};

use nodegate_tests::{mcp::curl_post, *};
use serde_json::json;

const GW: &str = "127.0.0.1:15080";
const ADMIN: &str = "127.0.0.1:15000";

fn scrape(ns: &Netns, accept: Option<&str>) -> (String, String) {
    let mut args = vec!["-s", "-D", "/dev/stderr"];
    let h = accept.map(|a| format!("accept: {a}"));
    if let Some(h) = &h {
        args.extend_from_slice(&["-H", h]);
    }
    let url = format!("http://{ADMIN}/metrics");
    args.push(&url);
    let out =
        spawn_child(std::path::Path::new("curl"), &args, Some(ns), None, Stdio::piped(), Stdio::piped())
            .wait_with_output()
            .unwrap_or_else(|e| panic!("curl: {e}"));
    (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn metrics_pass_promtool_and_client_model_names_do_not_grow_series() {
    require_root();
    let promtool = std::process::Command::new("promtool").arg("--version").output();
    assert!(
        promtool.is_ok_and(|o| o.status.success()),
        "promtool is not installed (.ci/run installs Debian's prometheus package)"
    );
    let topo = Topology::new();
    let ns = &topo.node;
    let _sim = llm_sim(ns, "127.0.0.1:18101", "sim", &["--tokens", "4"]);
    let _up = upstream(ns, "upstream");
    let _mcp = sim(ns, "mcp-sim", &["127.0.0.1:18401", "sim"]);
    let _a2a = sim(ns, "a2a-sim", &["127.0.0.1:18501"]);
    let (dir, pin) = Gateway::prepare("metrics");
    let cfg = format!(
        r#"
listeners: {{ explicit: {GW}, transparent: null }}
admin: {{ address: {ADMIN} }}
audit: {{ path: "{{AUDIT}}", flush_interval: 50ms }}
llm:
  providers:
    - {{ name: sim, kind: openai, endpoint: "http://127.0.0.1:18101" }}
  models:
    - {{ name: fast, targets: [ {{ provider: sim }} ] }}
mcp:
  servers:
    - {{ name: sim, url: "http://127.0.0.1:18401/mcp" }}
a2a:
  agents:
    - {{ name: sim, url: "http://127.0.0.1:18501" }}
"#
    );
    let _gw = Gateway::start(&dir, &pin, &cfg, Some(ns), None);
    wait_until(Duration::from_secs(10), "the A2A simulator up", || {
        get("127.0.0.1:18501", "/.well-known/agent-card.json", Some(ns), None)["ok"] == true
    });
    let chat = |model: &str| {
        let (s, _, _) = curl_post(
            ns,
            &format!("http://{GW}/v1/chat/completions"),
            &["content-type: application/json"],
            &json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}).to_string(),
        );
        s
    };
    assert_eq!(chat("fast"), 200);
    for i in 0..30 {
        assert_eq!(chat(&format!("made-up-model-{i}")), 404);
    }
    let headers = mcp::modern_headers("tools/call");
    let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
    let body = mcp::modern_request(1, "tools/call", json!({"name": "tool_0", "arguments": {"q": "x"}}));
    let (s, v, _) = curl_post(ns, &format!("http://{GW}/mcp"), &headers, &body);
    assert_eq!(s, 200, "{v}");
    let a2a = json!({"jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": {"message": {
        "messageId": "m1", "role": "ROLE_USER", "parts": [{"text": "hello"}]}}});
    let (s, v, _) = curl_post(
        ns,
        &format!("http://{GW}/a2a/sim/"),
        &["content-type: application/json"],
        &a2a.to_string(),
    );
    assert_eq!(s, 200, "{v}");
    // Plain HTTP through the explicit proxy.
    let plain = curl_via_proxy(ns, GW, &format!("http://{SVC_IP}:{UPSTREAM_PORT}/plain"), &[]);
    assert_eq!(plain, "200");

    let (text, head) = scrape(ns, None);
    assert!(head.to_ascii_lowercase().contains("content-type: text/plain; version=0.0.4"), "{head}");
    for family in [
        "nodegate_llm_calls_total",
        "nodegate_mcp_",
        "nodegate_a2a_calls_total",
        "nodegate_requests_in_flight",
    ] {
        assert!(text.contains(family), "{family} missing from:\n{text}");
    }
    let file = dir.join("metrics.txt");
    std::fs::write(&file, &text).unwrap_or_else(|e| panic!("{e}"));
    let out = std::process::Command::new("sh")
        .args(["-c", &format!("promtool check metrics < {}", file.display())])
        .output()
        .unwrap_or_else(|e| panic!("promtool: {e}"));
    let said = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && said.trim().is_empty(), "promtool check metrics: {said}");
    assert!(!text.contains("made-up-model"), "a client's made-up model names became label values");
    assert!(text.contains("gen_ai_request_model=\"other\",status=\"4xx\"} 30"), "{text}");
    assert!(text.contains("gen_ai_request_model=\"fast\""), "{text}");

    let (om, head) = scrape(ns, Some("application/openmetrics-text; version=1.0.0"));
    assert!(head.contains("application/openmetrics-text"), "{head}");
    assert!(om.trim_end().ends_with("# EOF") && om.contains("# TYPE nodegate_llm_calls counter"), "{om}");
}
