//! OpenTelemetry traces end to end: nodegate exports to a real OTLP receiver, Arize Phoenix
//! (PyPI `arize-phoenix`, in its own venv: .ci/run installs it at /opt/nodegate-phoenix, or set
//! NODEGATE_PHOENIX to its `phoenix` executable), over OTLP/HTTP and OTLP/gRPC. The spans of an
//! LLM call and of an MCP tool call arrive with the client's trace id, parent/child structure
//! (client span -> nodegate's action span -> its upstream attempt), and the gen_ai and MCP
//! semantic-convention attributes; the upstream is told the attempt's span. An unreachable
//! receiver costs traffic nothing: spans are counted as failed.
use std::{path::PathBuf, process::Stdio, time::Duration};

use nodegate_tests::{mcp::curl_post, *};
use serde_json::json;

const PHOENIX_HTTP: &str = "127.0.0.1:16006";
const PHOENIX_GRPC: &str = "127.0.0.1:14317";
const GW: &str = "127.0.0.1:15080";
const ADMIN: &str = "127.0.0.1:15000";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

fn phoenix_bin() -> PathBuf {
    let p = std::env::var("NODEGATE_PHOENIX")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from("/opt/nodegate-phoenix/bin/phoenix"));
    assert!(
        p.exists(),
        "Arize Phoenix is not installed at {} (.ci/run installs it: python3 -m venv /opt/nodegate-phoenix && /opt/nodegate-phoenix/bin/pip install arize-phoenix)",
        p.display()
    );
    p
}

/// Phoenix in `ns`, data in a fresh directory; killed on drop.
fn phoenix(ns: &Netns, dir: &std::path::Path) -> Proc {
    let bin = phoenix_bin();
    let work = dir.join("phoenix");
    std::fs::create_dir_all(&work).unwrap_or_else(|e| panic!("{e}"));
    // SAFETY: set before the child is spawned; read only by it.
    unsafe {
        std::env::set_var("PHOENIX_HOST", "127.0.0.1");
        std::env::set_var("PHOENIX_PORT", "16006");
        std::env::set_var("PHOENIX_GRPC_PORT", "14317");
        std::env::set_var("PHOENIX_TELEMETRY_ENABLED", "false");
        std::env::set_var("PHOENIX_WORKING_DIR", work.display().to_string());
    }
    let log = std::fs::File::create(dir.join("phoenix.log")).unwrap_or_else(|e| panic!("{e}"));
    let p = spawn(&bin, &["serve"], Some(ns), None, Stdio::from(log), Stdio::null());
    wait_until(Duration::from_secs(90), "Phoenix up", || {
        get(PHOENIX_HTTP, "/healthz", Some(ns), None)["status"] == 200
    });
    p
}

/// Phoenix's spans of `trace_id`, once `want` of them have arrived.
fn spans_of(ns: &Netns, trace_id: &str, want: usize) -> Vec<Value> {
    let mut found = Vec::new();
    wait_until(Duration::from_secs(20), &format!("{want} spans of trace {trace_id} in Phoenix"), || {
        let v = get(PHOENIX_HTTP, "/v1/projects/default/spans?limit=1000", Some(ns), None);
        found = v["body"]["data"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|s| s["context"]["trace_id"] == trace_id)
            .cloned()
            .collect();
        found.len() >= want
    });
    found
}

fn gateway(topo: &Topology, tag: &str, traces: &str) -> Gateway {
    let (dir, pin) = Gateway::prepare(tag);
    let cfg = format!(
        r#"
listeners: {{ explicit: {GW}, transparent: null }}
admin: {{ address: {ADMIN} }}
audit: {{ path: "{{AUDIT}}", flush_interval: 50ms }}
traces: {traces}
llm:
  providers:
    - {{ name: sim, kind: openai, endpoint: "http://127.0.0.1:18101" }}
  models:
    - {{ name: fast, targets: [ {{ provider: sim }} ] }}
mcp:
  servers:
    - {{ name: sim, url: "http://127.0.0.1:18401/mcp" }}
"#
    );
    Gateway::start(&dir, &pin, &cfg, Some(&topo.node), None)
}

fn chat(ns: &Netns, trace_id: &str) -> u16 {
    let tp = format!("traceparent: 00-{trace_id}-{CLIENT_SPAN}-01");
    let (status, v, _) = curl_post(
        ns,
        &format!("http://{GW}/v1/chat/completions"),
        &["content-type: application/json", &tp],
        r#"{"model":"fast","messages":[{"role":"user","content":"hi"}]}"#,
    );
    assert!(v["choices"].is_array(), "{v}");
    status
}

fn by_name<'a>(spans: &'a [Value], name: &str) -> &'a Value {
    spans.iter().find(|s| s["name"] == name).unwrap_or_else(|| panic!("no span {name:?}: {spans:?}"))
}

#[test]
fn spans_of_llm_and_mcp_calls_reach_a_real_otlp_receiver_in_the_clients_trace() {
    require_root();
    let topo = Topology::new();
    let ns = &topo.node;
    let dir = scratch_dir("ng-traces-");
    let _phoenix = phoenix(ns, &dir);
    let _sim = llm_sim(ns, "127.0.0.1:18101", "sim", &["--tokens", "4"]);
    let _mcp = sim(ns, "mcp-sim", &["127.0.0.1:18401", "sim"]);

    // OTLP/HTTP.
    let gw = gateway(&topo, "traces-http", "{ endpoint: \"http://127.0.0.1:16006\", interval: 100ms }");
    let llm_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    assert_eq!(chat(ns, llm_trace), 200);
    let spans = spans_of(ns, llm_trace, 2);
    let action = by_name(&spans, "chat fast");
    let attempt = by_name(&spans, "POST");
    assert_eq!(action["parent_id"], CLIENT_SPAN, "nodegate's span is the client's child: {action}");
    assert_eq!(
        attempt["parent_id"], action["context"]["span_id"],
        "the attempt is the action's child: {attempt}"
    );
    let a = &action["attributes"];
    assert_eq!(
        (&a["gen_ai.operation.name"], &a["gen_ai.request.model"], &a["gen_ai.provider.name"]),
        (&json!("chat"), &json!("fast"), &json!("openai")),
        "{action}"
    );
    assert_eq!(
        (&a["gen_ai.usage.input_tokens"], &a["gen_ai.usage.output_tokens"]),
        (&json!(1), &json!(4)),
        "{a}"
    );
    assert_eq!(attempt["attributes"]["http.response.status_code"], 200, "{attempt}");
    // The provider was told the attempt's span: its own spans would be the attempt's children.
    let up = get("127.0.0.1:18101", "/sim/last", Some(ns), None)["body"]["headers"]["traceparent"].clone();
    assert_eq!(up, format!("00-{llm_trace}-{}-01", attempt["context"]["span_id"].as_str().unwrap_or("?")));
    // The audit record names the trace.
    let rec = gw.wait_audit("the traced LLM record", |r| r["kind"] == "llm");
    assert_eq!(rec["trace_id"], llm_trace, "{rec}");

    // A plain HTTP request through the explicit proxy: its span, and the upstream told of it.
    let _plain = llm_sim(ns, "127.0.0.1:18102", "plain", &[]);
    let http_trace = "8bf92f3577b34da6a3ce929d0e0e4730";
    let tp = format!("traceparent: 00-{http_trace}-{CLIENT_SPAN}-01");
    assert_eq!(curl_via_proxy(ns, GW, "http://127.0.0.1:18102/plain", &[&tp]), "404");
    let spans = spans_of(ns, http_trace, 1);
    let plain = by_name(&spans, "GET");
    assert_eq!(plain["parent_id"], CLIENT_SPAN, "{plain}");
    assert_eq!(plain["attributes"]["url.path"], "/plain", "{plain}");
    assert_eq!(plain["attributes"]["http.response.status_code"], 404, "{plain}");
    let up = get("127.0.0.1:18102", "/sim/last", Some(ns), None)["body"]["headers"]["traceparent"].clone();
    assert_eq!(up, format!("00-{http_trace}-{}-01", plain["context"]["span_id"].as_str().unwrap_or("?")));

    // An MCP tool call, its trace in `_meta.traceparent` (MCP's carrier).
    let mcp_trace = "0af7651916cd43dd8448eb211c80319c";
    let mut body: Value = serde_json::from_str(&mcp::modern_request(
        7,
        "tools/call",
        json!({"name": "tool_0", "arguments": {"q": "x"}}),
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    body["params"]["_meta"]["traceparent"] = json!(format!("00-{mcp_trace}-{CLIENT_SPAN}-01"));
    let headers = mcp::modern_headers("tools/call");
    let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
    let (status, v, _) = curl_post(ns, &format!("http://{GW}/mcp"), &headers, &body.to_string());
    assert_eq!(status, 200, "{v}");
    assert!(v["result"].is_object(), "{v}");
    let spans = spans_of(ns, mcp_trace, 1);
    let call = by_name(&spans, "tools/call tool_0");
    assert_eq!(call["parent_id"], CLIENT_SPAN, "{call}");
    let a = &call["attributes"];
    assert_eq!(
        (&a["mcp.method.name"], &a["gen_ai.tool.name"], &a["gen_ai.operation.name"]),
        (&json!("tools/call"), &json!("tool_0"), &json!("execute_tool")),
        "{call}"
    );
    drop(gw);

    // OTLP/gRPC, and sampling: a trace the client marked not sampled is not exported.
    let gw = gateway(
        &topo,
        "traces-grpc",
        &format!("{{ endpoint: \"http://{PHOENIX_GRPC}\", protocol: grpc, interval: 100ms }}"),
    );
    let grpc_trace = "5bf92f3577b34da6a3ce929d0e0e4737";
    assert_eq!(chat(ns, grpc_trace), 200);
    let spans = spans_of(ns, grpc_trace, 2);
    assert_eq!(by_name(&spans, "chat fast")["parent_id"], CLIENT_SPAN);
    let unsampled = "6bf92f3577b34da6a3ce929d0e0e4738";
    let tp = format!("traceparent: 00-{unsampled}-{CLIENT_SPAN}-00");
    let (s, _, _) = curl_post(
        ns,
        &format!("http://{GW}/v1/chat/completions"),
        &["content-type: application/json", &tp],
        r#"{"model":"fast","messages":[{"role":"user","content":"hi"}]}"#,
    );
    assert_eq!(s, 200);
    // Exported after it, so it would have arrived by the time this one has.
    let later = "7bf92f3577b34da6a3ce929d0e0e4739";
    assert_eq!(chat(ns, later), 200);
    spans_of(ns, later, 2);
    let all = get(PHOENIX_HTTP, "/v1/projects/default/spans?limit=1000", Some(ns), None);
    assert!(!all["body"].to_string().contains(unsampled), "an unsampled trace was exported");
    assert!(
        metric_sum(&mcp::metrics(ns, ADMIN), "nodegate_trace_spans_total", &["outcome=\"exported\""]) >= 4.0
    );
    drop(gw);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A receiver that is down costs traffic nothing: calls are answered as usual, spans are counted
/// as failed, and the gateway stays healthy.
#[test]
fn an_unreachable_receiver_never_slows_traffic() {
    require_root();
    let topo = Topology::new();
    let ns = &topo.node;
    let _sim = llm_sim(ns, "127.0.0.1:18101", "sim", &["--tokens", "4"]);
    let _gw = gateway(
        &topo,
        "traces-down",
        "{ endpoint: \"http://127.0.0.1:16999\", interval: 100ms, timeout: 1s }",
    );
    let t = std::time::Instant::now();
    for i in 0..20 {
        assert_eq!(chat(ns, &format!("{i:032x}").replace('0', "1")), 200);
    }
    assert!(t.elapsed() < Duration::from_secs(10), "20 calls took {:?}", t.elapsed());
    wait_until(Duration::from_secs(10), "the failed exports counted", || {
        metric_sum(&mcp::metrics(ns, ADMIN), "nodegate_trace_spans_total", &["outcome=\"failed\""]) >= 2.0
    });
    assert_eq!(get(ADMIN, "/healthz", Some(ns), None)["status"], 200);
}
