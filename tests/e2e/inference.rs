//! Inference routing end to end against vLLM-like simulators (tests/support/vllm_sim.rs):
//! prefix-cache affinity, load steering from scraped metrics and in-flight counts, ejection and
//! retry when a server dies.
use std::{process::Stdio, time::Duration};

use nodegate_tests::*;

const GW: &str = "http://127.0.0.1:15080";
const SIMS: [&str; 3] = ["127.0.0.1:18401", "127.0.0.1:18402", "127.0.0.1:18403"];

fn vllm_sim(topo: &Topology, addr: &str, opts: &[&str]) -> Proc {
    let bin = bin_dir().join("vllm-sim");
    assert!(bin.exists(), "{} is missing: build it first (`cargo build --bins`)", bin.display());
    let mut args = vec![addr];
    args.extend_from_slice(opts);
    let p = spawn(&bin, &args, Some(&topo.node), None, Stdio::null(), Stdio::inherit());
    wait_until(Duration::from_secs(5), "vllm-sim up", || {
        get(addr, "/sim/stats", Some(&topo.node), None)["ok"] == true
    });
    p
}

/// One chat completion through `url` with `prompt`, by curl inside the node namespace.
fn chat(topo: &Topology, url: &str, model: &str, prompt: &str, max_tokens: u32) -> Value {
    let body = serde_json::json!({"model": model, "max_tokens": max_tokens, "messages": [{"role": "user", "content": prompt}]}).to_string();
    post_json(&topo.node, &format!("{url}/v1/chat/completions"), &body)
}

fn stats(topo: &Topology, sim: &str) -> Value {
    get(sim, "/sim/stats", Some(&topo.node), None)["body"].clone()
}

fn gateway(topo: &Topology, tag: &str) -> Gateway {
    let (dir, pin) = Gateway::prepare(tag);
    let endpoints: Vec<String> = SIMS.iter().map(|s| format!("      - {{ address: \"{s}\" }}")).collect();
    let cfg = format!(
        r#"
listeners: {{ explicit: 127.0.0.1:15080, transparent: null }}
audit: {{ path: "{{AUDIT}}", flush_interval: 50ms }}
inference:
  pools:
    - name: local
      models: [local-model]
      scrape_interval: 50ms
      eject_after: 2
      block_bytes: 64
      endpoints:
{}
"#,
        endpoints.join("\n")
    );
    Gateway::start(&dir, &pin, &cfg, Some(&topo.node), None)
}

fn tenant_prompt(tenant: usize, question: usize) -> String {
    let system: String = (0..300).map(|i| format!("tenant{tenant}-rule{i} ")).collect();
    format!("{system} question {question}: what now?")
}

#[test]
fn prefix_affinity_load_steering_and_ejection() {
    require_root();
    let topo = Topology::new();
    let mut sims: Vec<Proc> =
        SIMS.iter().map(|s| vllm_sim(&topo, s, &["--decode-base-us", "2000"])).collect();
    let gw = gateway(&topo, "inference");

    // Affinity: one tenant's requests, sharing a long system prompt, land on one server, which
    // then serves the prefix from its cache.
    for q in 0..6 {
        let v = chat(&topo, GW, "local-model", &tenant_prompt(1, q), 4);
        assert_eq!(v["usage"]["completion_tokens"], 4, "{v}");
    }
    let served: Vec<u64> = SIMS.iter().map(|s| stats(&topo, s)["served"].as_u64().unwrap_or(0)).collect();
    assert!(served.contains(&6), "one tenant's requests should stay on one server: {served:?}");
    let cached: u64 = SIMS.iter().map(|s| stats(&topo, s)["cached_tokens"].as_u64().unwrap_or(0)).sum();
    assert!(cached >= 5 * 288, "the shared prefix should be served from the prefix cache: {cached} tokens");
    let rec = gw.wait_audit("pick audit", |r| r["kind"] == "llm" && r["endpoint"].is_string());
    assert!(rec["pick_reason"].as_str().unwrap_or("").starts_with("scorer"), "{rec}");

    // Load: flood one server directly (not through the gateway); new requests avoid it.
    let busy = SIMS[0];
    let flood: Vec<_> = (0..12)
        .map(|i| {
            let body = serde_json::json!({"model": "m", "max_tokens": 400, "messages": [{"role": "user", "content": format!("flood {i}")}]}).to_string();
            post_json_spawn(&topo.node, &format!("http://{busy}/v1/chat/completions"), &body, 60)
        })
        .collect();
    // Every flood request has arrived (so later arrivals there can only be the gateway's).
    wait_until(Duration::from_secs(5), "the flooded server to hold all 12 requests", || {
        let s = stats(&topo, busy);
        s["waiting"].as_u64().unwrap_or(0) + s["running"].as_u64().unwrap_or(0) >= 12
    });
    std::thread::sleep(Duration::from_millis(200)); // a scrape or two
    let before = stats(&topo, busy)["served"].as_u64().unwrap_or(0);
    let running_before = stats(&topo, busy)["running"].as_u64().unwrap_or(0)
        + stats(&topo, busy)["waiting"].as_u64().unwrap_or(0);
    for q in 0..8 {
        let v = chat(
            &topo,
            GW,
            "local-model",
            &format!("independent question number {q} with no shared prefix"),
            2,
        );
        assert_eq!(v["usage"]["completion_tokens"], 2, "{v}");
    }
    let to_busy = stats(&topo, busy)["served"].as_u64().unwrap_or(0)
        + stats(&topo, busy)["running"].as_u64().unwrap_or(0)
        + stats(&topo, busy)["waiting"].as_u64().unwrap_or(0)
        - before
        - running_before;
    assert_eq!(to_busy, 0, "the saturated server should get none of the new requests");
    drop(flood);

    // A dead server: requests are retried on another and it is ejected.
    sims[1].kill9();
    for q in 0..4 {
        let v = chat(&topo, GW, "local-model", &format!("after the crash {q}"), 2);
        assert_eq!(v["usage"]["completion_tokens"], 2, "a dead endpoint must not fail requests: {v}");
    }
    // Ejection follows `eject_after` failed scrapes (50 ms apart): the requests above can all
    // finish before the second one, so wait for it (bounded) rather than read the gauge at once.
    let want = format!(
        "nodegate_inference_endpoint_load{{pool=\"local\",endpoint=\"{}\",signal=\"ejected\"}} 1",
        SIMS[1]
    );
    let mut text = String::new();
    wait_until(Duration::from_secs(3), "the dead endpoint ejected", || {
        let m = get("127.0.0.1:15000", "/metrics", Some(&topo.node), None);
        text = m["body"].as_str().unwrap_or_default().to_string();
        text.contains(&want)
    });
    assert!(text.contains("nodegate_inference_pick_duration_seconds_count{pool=\"local\"}"), "{text}");
}

/// A pool behind an intercepted Service address: an agent in an enrolled cgroup calls the
/// Service, and the gateway sends each request to a pool endpoint instead.
#[test]
fn intercepted_service_traffic_is_routed_across_the_pool() {
    require_root();
    let topo = Topology::new();
    let cgroups = TestCgroups::new();
    let _sims: Vec<Proc> = SIMS.iter().map(|s| vllm_sim(&topo, s, &[])).collect();
    let (dir, pin) = Gateway::prepare("inference-svc");
    let endpoints: Vec<String> = SIMS.iter().map(|s| format!("        - {{ address: \"{s}\" }}")).collect();
    let cfg = format!(
        r#"
listeners: {{ transparent: 0.0.0.0:{TRANSPARENT_PORT}, explicit: null }}
audit: {{ path: "{{AUDIT}}", flush_interval: 50ms }}
intercept:
  enabled: true
  cgroups: ["{}"]
  redirect_to: {NODE_IP}:{TRANSPARENT_PORT}
  pin_path: "{{PIN}}"
  destinations:
    - {{ address: {SVC_IP}, ports: [8000], class: llm }}
inference:
  pools:
    - name: svc-pool
      models: []
      service: "{SVC_IP}:8000"
      strategy: round-robin
      endpoints:
{}
"#,
        cgroups.enrolled.rel,
        endpoints.join("\n")
    );
    let gw = Gateway::start(&dir, &pin, &cfg, Some(&topo.node), None);
    for q in 0..6 {
        let body = serde_json::json!({"model": "whatever", "max_tokens": 2, "messages": [{"role": "user", "content": format!("q {q}")}]}).to_string();
        let out = spawn_child(
            std::path::Path::new("curl"),
            &[
                "-s",
                "-m",
                "20",
                "-H",
                "content-type: application/json",
                "--data-binary",
                &body,
                &format!("http://{SVC_IP}:8000/v1/chat/completions"),
            ],
            Some(&topo.pod),
            Some(&cgroups.enrolled),
            Stdio::piped(),
            Stdio::null(),
        )
        .wait_with_output()
        .unwrap_or_else(|e| panic!("{e}"));
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        assert_eq!(v["usage"]["completion_tokens"], 2, "{v}");
    }
    let served: Vec<u64> = SIMS.iter().map(|s| stats(&topo, s)["served"].as_u64().unwrap_or(0)).collect();
    assert_eq!(served, vec![2, 2, 2], "round-robin over the pool behind the Service");
    let rec = gw.wait_audit("pool record", |r| r["kind"] == "llm" && r["endpoint"].is_string());
    assert_eq!(rec["mode"], "transparent");
    assert_eq!(rec["target"], format!("{SVC_IP}:8000"));
}
