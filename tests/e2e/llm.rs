//! The LLM gateway end to end: the official OpenAI and Anthropic Python SDKs against nodegate,
//! in front of the provider simulator (and, in llama.rs, a real llama.cpp server).
use std::{
    io::{Read, Write},
    process::Stdio,
    time::Duration,
};

use nodegate_tests::*;

const GW: &str = "http://127.0.0.1:15080";
const AGENT_KEY: &str = "agent-a-key-0001";

fn gateway(topo: &Topology, tag: &str, llm: &str) -> Gateway {
    let (dir, pin) = Gateway::prepare(tag);
    let cfg = format!(
        r#"
listeners: {{ explicit: 127.0.0.1:15080, transparent: null }}
audit: {{ path: "{{AUDIT}}", flush_interval: 50ms }}
identities:
  - {{ name: agent-a, api_keys: ["{AGENT_KEY}"] }}
llm:
{llm}
"#
    );
    // SAFETY: set before the gateway process is spawned; read only by it.
    unsafe { std::env::set_var("NG_TEST_SIM_KEY", "sk-provider-secret") };
    Gateway::start(&dir, &pin, &cfg, Some(&topo.node), None)
}

fn last_request(topo: &Topology, sim: &str) -> Value {
    get(sim, "/sim/last", Some(&topo.node), None)["body"].clone()
}

fn sim_count(topo: &Topology, sim: &str) -> u64 {
    get(sim, "/sim/count", Some(&topo.node), None)["body"]["count"].as_u64().unwrap_or(u64::MAX)
}

#[test]
fn official_sdks_through_the_gateway_with_injected_credentials_and_usage() {
    require_root();
    let topo = Topology::new();
    let _sim = llm_sim(&topo.node, "127.0.0.1:18101", "primary", &["--tokens", "6"]);
    let gw = gateway(
        &topo,
        "llm-sdk",
        r#"
  providers:
    - { name: primary, kind: openai, endpoint: "http://127.0.0.1:18101/v1", credentials: { env: NG_TEST_SIM_KEY } }
  models:
    - { name: fast, targets: [ { provider: primary, model: gpt-4o-mini } ] }
    - { name: premium, targets: [ { provider: primary, model: gpt-4o } ] }
  allow:
    - { selector: { principals: [agent-a] }, models: [fast] }
  prices:
    gpt-4o-mini: { input: 0.15, output: 0.6 }
"#,
    );
    let node = Some(&topo.node);
    // Model allow list: agent-a may use `fast`, not `premium`; others (no rule) may use both.
    let v = sdk("chat_error", GW, AGENT_KEY, "premium", node, None);
    assert_eq!(v["raised"], "PermissionDeniedError", "{v}");
    let rec = gw.wait_audit("allow-list refusal", |r| r["kind"] == "llm" && r["status"] == 403);
    assert_eq!(
        (rec["decision"].as_str(), rec["rule"].as_str()),
        (Some("deny"), Some("llm.allow[0]")),
        "{rec}"
    );
    let v = sdk("chat", GW, "", "premium", node, None);
    assert_eq!(v["model"], "gpt-4o", "an unmatched workload is not limited: {v}");

    let v = sdk("chat", GW, AGENT_KEY, "fast", node, None);
    assert_eq!(v["text"], "w0 w1 w2 w3 w4 w5 ", "{v}");
    assert_eq!(v["model"], "gpt-4o-mini", "the alias must be rewritten to the provider model");
    let up = last_request(&topo, "127.0.0.1:18101");
    assert_eq!(
        up["headers"]["authorization"], "Bearer sk-provider-secret",
        "provider key not injected: {up}"
    );
    assert!(!up.to_string().contains(AGENT_KEY), "the agent's key leaked upstream: {up}");
    let rec = gw.wait_audit("llm record of the chat call", |r| {
        r["kind"] == "llm" && r["stream"] == false && r["requested_model"] == "fast" && r["status"] == 200
    });
    assert_eq!(rec["principal"], "agent-a", "the API key adds its principal: {rec}");
    assert_eq!(rec["identity"], "unknown", "beside the workload the kernel named (none here): {rec}");
    assert_eq!(rec["output_tokens"], 6);
    assert_eq!(rec["estimated"], false);
    assert!(rec["cost_usd"].as_f64().unwrap_or(0.0) > 0.0, "{rec}");

    // Streaming without asking for usage: the client gets exactly what it asked for, the
    // gateway still counts the tokens from the usage chunk it requested.
    let v = sdk("chat_stream", GW, AGENT_KEY, "fast", node, None);
    assert_eq!(v["text"], "w0 w1 w2 w3 w4 ", "{v}");
    assert_eq!(v["usage_seen_by_client"], Value::Null, "the added usage chunk must be hidden: {v}");
    assert_eq!(last_request(&topo, "127.0.0.1:18101")["body"]["stream_options"]["include_usage"], true);
    let rec = gw.wait_audit("llm record of the stream", |r| {
        r["kind"] == "llm" && r["stream"] == true && r["api"] == "chat"
    });
    assert_eq!(rec["output_tokens"], 5, "{rec}");
    assert_eq!(rec["estimated"], false, "usage must come from the provider's chunk: {rec}");
    assert!(rec["ttft_ms"].as_f64().is_some(), "{rec}");

    let v = sdk("chat_stream_usage", GW, AGENT_KEY, "fast", node, None);
    assert_eq!(v["usage_seen_by_client"]["completion_tokens"], 5, "asked for usage, must get it: {v}");

    let v = sdk("tools", GW, AGENT_KEY, "fast", node, None);
    assert_eq!(v["tool"], "get_weather", "{v}");
    assert_eq!(v["arguments"]["city"], "Paris");

    let v = sdk("responses", GW, AGENT_KEY, "fast", node, None);
    assert_eq!(v["usage"]["output_tokens"], 4, "{v}");
    let v = sdk("embeddings", GW, AGENT_KEY, "fast", node, None);
    assert_eq!(v["dims"], 3, "{v}");

    let v = sdk("messages", GW, AGENT_KEY, "fast", node, None);
    assert_eq!(v["text"], "w0 w1 w2 w3 w4 ", "{v}");
    let up = last_request(&topo, "127.0.0.1:18101");
    assert_eq!(up["path"], "/v1/messages");
    let v = sdk("messages_stream", GW, AGENT_KEY, "fast", node, None);
    assert_eq!(v["usage"]["output_tokens"], 6, "{v}");
    let rec = gw.wait_audit("anthropic stream record", |r| {
        r["kind"] == "llm" && r["path"] == "/v1/messages" && r["stream"] == true
    });
    assert_eq!((rec["input_tokens"].as_u64(), rec["output_tokens"].as_u64()), (Some(2), Some(6)), "{rec}");

    // Unknown model and a policy-free unknown key: provider-shaped errors the SDKs raise.
    let v = sdk("chat_error", GW, AGENT_KEY, "no-such-model", node, None);
    assert_eq!(v["raised"], "NotFoundError", "{v}");
    let v = sdk("messages_error", GW, AGENT_KEY, "no-such-model", node, None);
    assert_eq!(v["raised"], "NotFoundError", "{v}");

    let m = get("127.0.0.1:15000", "/metrics", node, None);
    let text = m["body"].as_str().unwrap_or_default();
    for want in [
        "gen_ai_client_token_usage_count{identity=\"agent-a\",gen_ai_provider_name=\"primary\",gen_ai_request_model=\"fast\",gen_ai_token_type=\"output\"}",
        "gen_ai_server_time_to_first_token_count{gen_ai_provider_name=\"primary\",gen_ai_request_model=\"fast\"}",
        "nodegate_llm_tokens_total{identity=\"agent-a\",gen_ai_provider_name=\"primary\",gen_ai_request_model=\"fast\",gen_ai_token_type=\"output\"}",
    ] {
        assert!(text.contains(want), "metrics lack {want}:\n{text}");
    }
}

#[test]
fn bad_input_gets_provider_shaped_errors_and_nothing_is_forwarded() {
    require_root();
    let topo = Topology::new();
    let _sim = llm_sim(&topo.node, "127.0.0.1:18111", "primary", &[]);
    let gw = gateway(
        &topo,
        "llm-bad",
        r#"
  max_body_bytes: 2000
  providers:
    - { name: primary, kind: openai, endpoint: "http://127.0.0.1:18111" }
  models:
    - { name: fast, targets: [ { provider: primary } ] }
"#,
    );
    let curl = |path: &str, ctype: &str, body: &str| -> (String, Value) {
        let out = std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                &topo.node.name,
                "curl",
                "-s",
                "-w",
                "\n%{http_code}",
                "-H",
                &format!("content-type: {ctype}"),
                "--data-binary",
                body,
            ])
            .arg(format!("{GW}{path}"))
            .stderr(Stdio::inherit())
            .output()
            .unwrap_or_else(|e| panic!("curl: {e}"));
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", ""));
        (code.to_string(), serde_json::from_str(body).unwrap_or(Value::Null))
    };
    let big =
        format!(r#"{{"model":"fast","messages":[{{"role":"user","content":"{}"}}]}}"#, "x".repeat(5000));
    let cases = [
        ("/v1/chat/completions", "application/json", "{not json", "400", "not valid JSON"),
        ("/v1/chat/completions", "text/plain", "{}", "415", "Content-Type"),
        ("/v1/chat/completions", "application/json", big.as_str(), "413", "exceeds 2000 bytes"),
        (
            "/v1/chat/completions",
            "application/json",
            r#"{"model":"gpt-unknown","messages":[]}"#,
            "404",
            "does not exist",
        ),
        ("/v1/chat/completions", "application/json", r#"{"messages":[]}"#, "400", "`model`"),
        ("/v1/chat/completions", "application/json", r#"{"model":"fast"}"#, "400", "`messages`"),
    ];
    for (path, ctype, body, code, msg) in cases {
        let (got, v) = curl(path, ctype, body);
        assert_eq!(got, code, "{path} {ctype}: {v}");
        assert!(v["error"]["message"].as_str().unwrap_or("").contains(msg), "{v}");
        assert!(v["error"]["type"].is_string(), "OpenAI error shape: {v}");
    }
    let (got, v) = curl("/v1/messages", "application/json", r#"{"model":"fast","messages":[]}"#);
    assert_eq!(got, "400");
    assert_eq!(v["type"], "error", "Anthropic error shape: {v}");
    assert!(v["error"]["message"].as_str().unwrap_or("").contains("max_tokens"));
    assert_eq!(sim_count(&topo, "127.0.0.1:18111"), 0, "nothing may reach the provider");
    gw.wait_audit("audit of the 413", |r| r["kind"] == "llm" && r["status"] == 413);
}

#[test]
fn failover_before_the_first_byte_and_clean_errors_after_it() {
    require_root();
    let topo = Topology::new();
    let _down =
        llm_sim(&topo.node, "127.0.0.1:18121", "down", &["--fail-first", "1000", "--fail-status", "503"]);
    let _backup = llm_sim(&topo.node, "127.0.0.1:18122", "backup", &[]);
    let _flaky =
        llm_sim(&topo.node, "127.0.0.1:18123", "flaky", &["--fail-mid-stream", "3", "--tokens", "20"]);
    let gw = gateway(
        &topo,
        "llm-failover",
        r#"
  cooldown: 1s
  providers:
    - { name: down, kind: openai, endpoint: "http://127.0.0.1:18121" }
    - { name: refused, kind: openai, endpoint: "http://127.0.0.1:18129" }
    - { name: backup, kind: openai, endpoint: "http://127.0.0.1:18122" }
    - { name: flaky, kind: openai, endpoint: "http://127.0.0.1:18123" }
  models:
    - { name: fast, targets: [ { provider: down }, { provider: refused }, { provider: backup } ] }
    - { name: flaky, targets: [ { provider: flaky }, { provider: backup } ] }
"#,
    );
    let node = Some(&topo.node);
    // 503 from the first, connection refused from the second: the third answers.
    let v = sdk("chat", GW, AGENT_KEY, "fast", node, None);
    assert_eq!(v["text"], "w0 w1 w2 w3 w4 w5 ", "{v}");
    let rec = gw.wait_audit("failover record", |r| r["kind"] == "llm" && r["provider"] == "backup");
    assert_eq!(rec["failovers"], 2, "{rec}");
    assert_eq!(sim_count(&topo, "127.0.0.1:18121"), 1);

    // Mid-stream failure: bytes already reached the client, so no failover, a clean error.
    let before = sim_count(&topo, "127.0.0.1:18122");
    let v = sdk("chat_stream_error", GW, AGENT_KEY, "flaky", node, None);
    assert_eq!(v["raised"], "APIError", "the SDK must raise on the gateway's error event: {v}");
    assert!(v["message"].as_str().unwrap_or("").contains("broke off"), "{v}");
    assert_eq!(
        sim_count(&topo, "127.0.0.1:18122"),
        before,
        "a half-sent stream must never be retried on another provider"
    );
    let rec = gw.wait_audit("mid-stream failure record", |r| r["kind"] == "llm" && r["provider"] == "flaky");
    assert!(rec["error"].as_str().unwrap_or("").contains("mid-response"), "{rec}");

    // Every provider down: a 502 in the provider's shape.
    let gw_text = gw.log_text();
    assert!(gw_text.contains("failing over to the next provider"), "{gw_text}");
}

fn budget_config(redis: Option<&str>) -> String {
    let redis = redis.map(|r| format!("  redis_url: \"{r}\"\n")).unwrap_or_default();
    format!(
        r#"{redis}  providers:
    - {{ name: primary, kind: openai, endpoint: "http://127.0.0.1:18131" }}
  models:
    - {{ name: fast, targets: [ {{ provider: primary }} ] }}
  budgets:
    - {{ name: team, selector: {{ principals: [agent-a] }}, tokens_per_day: 600 }}
"#
    )
}

/// 200 concurrent calls against a budget of 600 tokens per day (a per-minute window could roll
/// over mid-test and legitimately admit twice as much): the tokens actually used
/// never exceed it, and the refused calls are 429s the SDK raises as RateLimitError.
fn budget_holds(topo: &Topology, gw: &Gateway) {
    let v = sdk("concurrent", GW, AGENT_KEY, "fast", Some(&topo.node), None);
    let ok = v["outcomes"]["ok"].as_u64().unwrap_or(0);
    let refused = v["outcomes"]["429"].as_u64().unwrap_or(0);
    assert_eq!(ok + refused, 200, "every call is either served or refused with 429: {v}");
    assert!(ok > 0 && refused > 0, "{v}");
    let used = v["tokens_reported_to_clients"].as_u64().unwrap_or(u64::MAX);
    assert!(used <= 600, "budget overshot: {used} tokens used against 600: {v}");
    let rec = gw.wait_audit("a budget refusal", |r| r["kind"] == "llm" && r["status"] == 429);
    assert_eq!(rec["decision"], "deny");
    assert_eq!(rec["rule"], "llm.budgets.team", "{rec}");
}

#[test]
fn budget_never_overshoots_under_concurrency_in_memory() {
    require_root();
    let topo = Topology::new();
    let _sim = llm_sim(&topo.node, "127.0.0.1:18131", "primary", &["--tokens", "10"]);
    let gw = gateway(&topo, "llm-budget", &budget_config(None));
    budget_holds(&topo, &gw);
}

#[test]
fn budget_never_overshoots_under_concurrency_with_redis_and_falls_back_when_it_dies() {
    require_root();
    let topo = Topology::new();
    let mut redis = redis_server(&topo.node, 16379);
    let _sim = llm_sim(&topo.node, "127.0.0.1:18131", "primary", &["--tokens", "10"]);
    let gw = gateway(&topo, "llm-redis", &budget_config(Some("redis://127.0.0.1:16379/0")));
    budget_holds(&topo, &gw);
    // The counters are in Redis, not in the gateway.
    let scan = || {
        std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                &topo.node.name,
                "redis-cli",
                "-p",
                "16379",
                "--scan",
                "--pattern",
                "{nodegate-budgets}:*",
            ])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
            .unwrap_or_default()
    };
    let keys = scan();
    assert!(
        keys.contains("{nodegate-budgets}:team:agent-a:tok:day"),
        "no budget counter in redis (one hash tag for every budget key): {keys:?}"
    );
    // Every reservation above went through Redis (a fallback would split the budget in two).
    let m = get("127.0.0.1:15000", "/metrics", Some(&topo.node), None);
    assert!(
        m["body"].as_str().unwrap_or("").contains("nodegate_llm_budget_backend_fallbacks_total 0"),
        "budget operations fell back to local counters while Redis was up"
    );
    // Redis gone: local counters take over, said in logs and metrics.
    redis.kill9();
    let v = sdk("chat", GW, AGENT_KEY, "fast", Some(&topo.node), None);
    assert!(v["text"].is_string() || v["crashed"]["raised"] == "RateLimitError", "{v}");
    wait_until(Duration::from_secs(5), "the fallback warning", || {
        gw.log_text().contains("enforcing budgets with this node's local counters")
    });
    let m = get("127.0.0.1:15000", "/metrics", Some(&topo.node), None);
    assert!(
        !m["body"].as_str().unwrap_or("").contains("nodegate_llm_budget_backend_fallbacks_total 0"),
        "fallback not counted"
    );
    // Redis back (empty, as a restarted one is): the counters go there again, on a fresh
    // connection, once the link's 2 s rest is over.
    drop(redis);
    let _redis = redis_server(&topo.node, 16379);
    wait_until(Duration::from_secs(30), "budget counters written to the restarted redis", || {
        let _ = sdk("chat", GW, AGENT_KEY, "fast", Some(&topo.node), None);
        scan().contains("{nodegate-budgets}:team:agent-a:")
    });
}

#[test]
fn a_stream_that_outruns_its_budget_is_cut_off_cleanly() {
    require_root();
    let topo = Topology::new();
    // A server that ignores max_tokens and keeps talking.
    let _sim = llm_sim(&topo.node, "127.0.0.1:18141", "chatty", &["--tokens", "60", "--ignore-max-tokens"]);
    let gw = gateway(
        &topo,
        "llm-cut",
        r#"
  providers:
    - { name: chatty, kind: openai, endpoint: "http://127.0.0.1:18141" }
  models:
    - { name: fast, targets: [ { provider: chatty } ] }
  budgets:
    - { name: team, selector: { principals: [agent-a] }, tokens_per_day: 100000 }
"#,
    );
    let v = sdk("chat_stream_error", GW, AGENT_KEY, "fast", Some(&topo.node), None);
    assert_eq!(v["raised"], "APIError", "the SDK must see the gateway's final error event: {v}");
    assert!(v["message"].as_str().unwrap_or("").contains("token budget"), "{v}");
    let rec = gw.wait_audit("cut-off record", |r| r["kind"] == "llm" && r["stream"] == true);
    assert_eq!(rec["decision"], "deny", "{rec}");
    assert!(rec["error"].as_str().unwrap_or("").contains("cut off"), "{rec}");
    let out = rec["output_tokens"].as_u64().unwrap_or(0);
    assert!(out <= 10, "the stream was not stopped near its 5-token allowance: {out} tokens: {rec}");
}

#[test]
fn transparent_sdk_call_to_a_provider_host_name_gets_the_configured_key() {
    require_root();
    let topo = Topology::new();
    let cgroups = TestCgroups::new();
    let (cg, enrolled) = (cgroups.base().to_string(), &cgroups.enrolled);
    let _sim = llm_sim(&topo.node, &format!("0.0.0.0:{UPSTREAM_PORT}"), "openai-sim", &["--tokens", "4"]);
    let (dir, pin) = Gateway::prepare("llm-transparent");
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
    - {{ address: {SVC_IP}, ports: [{UPSTREAM_PORT}], class: llm }}
llm:
  providers:
    - {{ name: openai, kind: openai, endpoint: "http://{SVC_IP}:{UPSTREAM_PORT}", credentials: {{ env: NG_TEST_SIM_KEY }} }}
"#
    );
    // SAFETY: set before the gateway process is spawned; read only by it.
    unsafe { std::env::set_var("NG_TEST_SIM_KEY", "sk-provider-secret") };
    let gw = Gateway::start(&dir, &pin, &cfg, Some(&topo.node), None);

    // The agent resolves the provider's host name to the intercepted address in its own view
    // of /etc/hosts (a private mount namespace), and holds no key at all.
    let hosts = dir.join("hosts");
    std::fs::write(&hosts, format!("127.0.0.1 localhost\n{SVC_IP} api.openai.test\n"))
        .unwrap_or_else(|e| panic!("{e}"));
    let script = repo_root().join("tests/python/llm_clients.py");
    let inner = format!(
        "mount --bind {} /etc/hosts && exec python3 {} chat http://api.openai.test:{UPSTREAM_PORT} '' gpt-4o-mini",
        hosts.display(),
        script.display()
    );
    let child = spawn_child(
        std::path::Path::new("unshare"),
        &["--mount", "sh", "-c", &inner],
        Some(&topo.pod),
        Some(enrolled),
        Stdio::piped(),
        Stdio::piped(),
    );
    let out = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(v["text"], "w0 w1 w2 w3 ", "{v}");

    let up = get(&format!("{SVC_IP}:{UPSTREAM_PORT}"), "/sim/last", Some(&topo.node), None)["body"].clone();
    assert_eq!(
        up["headers"]["authorization"], "Bearer sk-provider-secret",
        "the configured key must be injected: {up}"
    );
    assert!(!up.to_string().contains("no-key-needed"), "the agent's placeholder key leaked upstream: {up}");
    assert_eq!(up["headers"]["host"], format!("{SVC_IP}:{UPSTREAM_PORT}"));
    let rec = gw.wait_audit("transparent llm record", |r| r["kind"] == "llm");
    assert_eq!(rec["identity"], "research-agent", "{rec}");
    assert_eq!(rec["mode"], "transparent");
    assert_eq!(rec["target"], format!("{SVC_IP}:{UPSTREAM_PORT}"));
    assert_eq!(rec["provider"], "openai");
    assert_eq!(rec["output_tokens"], 4);
}

/// A stream asking for more output than its budget has left is admitted with its cap lowered to
/// what is left (the provider is told, and the cut-off enforces it when the provider ignores
/// it): it stops at the budget. Once nothing is left, streams are refused.
#[test]
fn a_stream_is_cut_at_what_the_budget_has_left() {
    require_root();
    let topo = Topology::new();
    let _sim = llm_sim(&topo.node, "127.0.0.1:18151", "chatty", &["--tokens", "60", "--ignore-max-tokens"]);
    let gw = gateway(
        &topo,
        "llm-cut-budget",
        r#"
  providers:
    - { name: chatty, kind: openai, endpoint: "http://127.0.0.1:18151" }
  models:
    - { name: fast, targets: [ { provider: chatty } ] }
  budgets:
    - { name: small, selector: { principals: [agent-a] }, tokens_per_day: 120 }
"#,
    );
    let stream = |max: u32| {
        let body = format!(
            r#"{{"model":"fast","stream":true,"max_tokens":{max},"messages":[{{"role":"user","content":"hi"}}]}}"#
        );
        let auth = format!("Authorization: Bearer {AGENT_KEY}");
        let args = [
            "-sS",
            "-N",
            "--max-time",
            "20",
            "-o",
            "-",
            "-w",
            "\n%{http_code}",
            "-H",
            "content-type: application/json",
            "-H",
            &auth,
            "-d",
            &body,
            "http://127.0.0.1:15080/v1/chat/completions",
        ];
        let child = spawn_child(
            std::path::Path::new("curl"),
            &args,
            Some(&topo.node),
            None,
            Stdio::piped(),
            Stdio::piped(),
        );
        let out = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // The first stream fits whole (its 40-token cap is cut off, the server ignores it).
    let first = stream(40);
    assert!(first.trim_end().ends_with("200"), "{first}");
    let rec = gw.wait_audit("first stream", |r| r["kind"] == "llm" && r["stream"] == true);
    assert!(rec.get("output_capped").is_none(), "{rec}");
    let spent_first = rec["input_tokens"].as_u64().unwrap_or(0) + rec["output_tokens"].as_u64().unwrap_or(0);
    // The second asks for 80; what is left is less: it is admitted with a smaller cap.
    let second = stream(80);
    assert!(second.trim_end().ends_with("200"), "{second}");
    let rec = gw.wait_audit("second stream", |r| r["kind"] == "llm" && r["output_capped"].is_u64());
    let cap = rec["output_capped"].as_u64().unwrap_or(0);
    assert!((1..80).contains(&cap), "{rec}");
    let spent_second = rec["input_tokens"].as_u64().unwrap_or(0) + rec["output_tokens"].as_u64().unwrap_or(0);
    assert!(
        spent_first + spent_second <= 120,
        "the stream was not stopped at what the budget had left: {spent_first} + {spent_second}: {rec}"
    );
    assert_eq!(
        last_request(&topo, "127.0.0.1:18151")["body"]["max_tokens"],
        cap,
        "the provider is told the lowered cap"
    );
    // Then nothing is left for a stream: refused.
    let third = stream(40);
    assert!(third.trim_end().ends_with("429"), "{third}");
    let spent: u64 = gw
        .audit_lines()
        .iter()
        .filter(|r| r["kind"] == "llm" && r["status"] == 200)
        .map(|r| r["input_tokens"].as_u64().unwrap_or(0) + r["output_tokens"].as_u64().unwrap_or(0))
        .sum();
    assert!(spent <= 120, "spent {spent} of a 120-token budget");
}

/// A client that reads a stream to its last event (`[DONE]`, `message_stop`) and closes without
/// waiting for the body's end has the whole answer: recorded as complete, with its usage. One
/// that gives up before the last event is recorded as such. Both providers here keep the body
/// open after the last event, as a server may.
#[test]
fn a_stream_read_to_its_last_event_and_one_abandoned_are_told_apart() {
    require_root();
    let topo = Topology::new();
    let _sim =
        llm_sim(&topo.node, "127.0.0.1:18151", "lingers", &["--tokens", "6", "--hold-after-done-ms", "5000"]);
    let _slow =
        llm_sim(&topo.node, "127.0.0.1:18152", "slow", &["--tokens", "30", "--chunk-delay-us", "200000"]);
    let gw = gateway(
        &topo,
        "llm-ends",
        r#"
  providers:
    - { name: lingers, kind: openai, endpoint: "http://127.0.0.1:18151" }
    - { name: lingers-a, kind: anthropic, endpoint: "http://127.0.0.1:18151" }
    - { name: slow, kind: openai, endpoint: "http://127.0.0.1:18152" }
  models:
    - { name: fast, targets: [ { provider: lingers } ] }
    - { name: slow, targets: [ { provider: slow } ] }
    - { name: claude, targets: [ { provider: lingers-a } ] }
"#,
    );
    // Sends a streamed request and reads until `until` has arrived; then closes.
    let read_until = |path: &str, model: &str, until: &str| {
        let body = format!(
            r#"{{"model":"{model}","stream":true,"max_tokens":6,"messages":[{{"role":"user","content":"hi"}}]}}"#
        );
        let mut s = nodegate_tests::raw::connect(&topo.node, "127.0.0.1:15080");
        let req = format!(
            "POST {path} HTTP/1.1\r\nhost: nodegate\r\nauthorization: Bearer {AGENT_KEY}\r\nx-api-key: {AGENT_KEY}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).unwrap_or_else(|e| panic!("write: {e}"));
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&seen).contains(until) {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => {
                    panic!("the stream ended before {until:?}: {}", String::from_utf8_lossy(&seen))
                }
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
        drop(s);
    };
    read_until("/v1/chat/completions", "fast", "data: [DONE]");
    let rec =
        gw.wait_audit("the OpenAI stream's record", |r| r["kind"] == "llm" && r["requested_model"] == "fast");
    assert!(rec["error"].is_null(), "a stream read to [DONE] is complete: {rec}");
    assert_eq!(rec["output_tokens"], 6, "{rec}");
    read_until("/v1/messages", "claude", "message_stop");
    let rec = gw.wait_audit("the Anthropic stream's record", |r| {
        r["kind"] == "llm" && r["requested_model"] == "claude"
    });
    assert!(rec["error"].is_null(), "a stream read to message_stop is complete: {rec}");
    // Closed after the first of 30 events 200 ms apart: abandoned, and the record says so.
    read_until("/v1/chat/completions", "slow", "data: {");
    let abandoned = gw.wait_audit("the abandoned stream's record", |r| {
        r["kind"] == "llm" && r["requested_model"] == "slow"
    });
    assert_eq!(abandoned["error"], "client closed before the response ended", "{abandoned}");
}
