//! Inference pools whose members come from the cluster, end to end: nodegate watches the API
//! server fixture (tests/python/kube_api.py) for a Service's EndpointSlices and for an
//! InferencePool (inference.networking.k8s.io/v1) and its pods, and routes real chat completions
//! to vLLM-like simulators (tests/support/vllm_sim.rs) at the addresses the API names. Endpoints
//! on this node are preferred; requests spill to other nodes' only when every local one is
//! saturated or gone, and the audit says why.
use std::{process::Stdio, time::Duration};

use nodegate_tests::{kube::*, *};
use serde_json::{Value, json};

const NODE: &str = "node-1";
const API: &str = "127.0.0.1:16444";
const GW: &str = "http://127.0.0.1:15080";
const PORT: u16 = 18421;
/// Simulated model servers: two on this node and one on another behind the Service; one here
/// and one elsewhere in the InferencePool; one address listed but never ready.
const LOCAL_A: &str = "127.0.0.21";
const LOCAL_B: &str = "127.0.0.22";
const REMOTE_C: &str = "127.0.0.23";
const POOL_LOCAL: &str = "127.0.0.24";
const POOL_REMOTE: &str = "127.0.0.25";
const NOT_READY: &str = "127.0.0.26";

fn sim(topo: &Topology, ip: &str, opts: &[&str]) -> Proc {
    let bin = bin_dir().join("vllm-sim");
    assert!(bin.exists(), "{} is missing: build it first (`cargo build --bins`)", bin.display());
    let addr = format!("{ip}:{PORT}");
    let mut args = vec![addr.as_str()];
    args.extend_from_slice(opts);
    let p = spawn(&bin, &args, Some(&topo.node), None, Stdio::null(), Stdio::inherit());
    wait_until(Duration::from_secs(5), "vllm-sim up", || {
        get(&addr, "/sim/stats", Some(&topo.node), None)["ok"] == true
    });
    p
}

fn served(topo: &Topology, ip: &str) -> u64 {
    let s = get(&format!("{ip}:{PORT}"), "/sim/stats", Some(&topo.node), None)["body"].clone();
    s["served"].as_u64().unwrap_or(0)
        + s["running"].as_u64().unwrap_or(0)
        + s["waiting"].as_u64().unwrap_or(0)
}

/// One chat completion through the gateway: (HTTP status, body).
fn chat(topo: &Topology, model: &str, tag: &str) -> (u16, Value) {
    let body =
        json!({"model": model, "max_tokens": 2, "messages": [{"role": "user", "content": tag}]}).to_string();
    post_json_status(&topo.node, None, &format!("{GW}/v1/chat/completions"), &body)
}

fn slice(endpoints: &[(&str, &str, bool)]) -> Value {
    let eps: Vec<Value> = endpoints
        .iter()
        .map(|(ip, node, ready)| json!({"addresses": [ip], "conditions": {"ready": ready}, "nodeName": node}))
        .collect();
    json!({
        "metadata": {"name": "vllm-x7k2p", "namespace": "models", "labels": {"kubernetes.io/service-name": "vllm"}},
        "addressType": "IPv4",
        "ports": [{"name": "metrics", "port": 9090, "protocol": "TCP"}, {"name": "http", "port": PORT, "protocol": "TCP"}],
        "endpoints": eps
    })
}

fn model_pod(name: &str, ip: &str, node: &str, ready: bool) -> Value {
    json!({
        "metadata": {"name": name, "namespace": "models", "uid": format!("uid-{name}"), "labels": {"app": "llama"}},
        "spec": {"nodeName": node, "containers": [{"name": "server", "image": "vllm:1"}]},
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
                   "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}
    })
}

fn metrics(topo: &Topology) -> String {
    get("127.0.0.1:15000", "/metrics", Some(&topo.node), None)["body"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn wait_members(topo: &Topology, pool: &str, local: u32, remote: u32) {
    let want = [
        format!("nodegate_inference_pool_endpoints{{pool=\"{pool}\",node=\"local\"}} {local}"),
        format!("nodegate_inference_pool_endpoints{{pool=\"{pool}\",node=\"remote\"}} {remote}"),
    ];
    wait_until(Duration::from_secs(10), &format!("pool {pool}: {local} local, {remote} remote"), || {
        let m = metrics(topo);
        want.iter().all(|w| m.contains(w.as_str()))
    });
}

#[test]
fn pools_follow_the_cluster_and_prefer_this_node() {
    require_root();
    let topo = Topology::new();
    let api = KubeApi::start(API, Some(&topo.node));
    // One request at a time on the local servers, so a few direct requests saturate them.
    let slow = ["--max-batch", "1", "--decode-base-us", "20000"];
    let _sims: Vec<Proc> = [
        (LOCAL_A, &slow[..]),
        (LOCAL_B, &slow[..]),
        (REMOTE_C, &[][..]),
        (POOL_LOCAL, &[][..]),
        (POOL_REMOTE, &[][..]),
    ]
    .iter()
    .map(|(ip, opts)| sim(&topo, ip, opts))
    .collect();
    api.apply(
        "endpointslices",
        &slice(&[
            (LOCAL_A, NODE, true),
            (LOCAL_B, NODE, true),
            (REMOTE_C, "node-2", true),
            (NOT_READY, NODE, false),
        ]),
    );

    let (dir, pin) = Gateway::prepare("k8s-pools");
    let cfg = format!(
        r#"
listeners: {{ explicit: 127.0.0.1:15080, transparent: null }}
admin: {{ address: 127.0.0.1:15000 }}
audit: {{ path: "{{AUDIT}}", flush_interval: 50ms }}
kubernetes: {{ enabled: true, api_server: "{api}", node_name: {NODE} }}
inference:
  pools:
    - name: svc
      models: [svc-model]
      strategy: round-robin
      scrape_interval: 50ms
      saturation: {{ queue: 1 }}
      kubernetes: {{ service: vllm.models, port: http }}
    - name: gie
      models: [gie-model]
      scrape_interval: 50ms
      kubernetes: {{ inference_pool: llama.models }}
"#,
        api = api.api
    );
    let gw = Gateway::start(&dir, &pin, &cfg, Some(&topo.node), None);

    // The Service's ready endpoints, two here and one on node-2; the not-ready one is left out.
    wait_members(&topo, "svc", 2, 1);
    for q in 0..6 {
        let (code, v) = chat(&topo, "svc-model", &format!("question {q}"));
        assert_eq!(code, 200, "{v}");
    }
    assert_eq!(served(&topo, REMOTE_C), 0, "nothing leaves the node while a local endpoint has room");
    assert_eq!(served(&topo, LOCAL_A) + served(&topo, LOCAL_B), 6);
    let rec = gw.wait_audit("local pick", |r| r["kind"] == "llm" && r["requested_model"] == "svc-model");
    assert!(rec["spilled"].is_null(), "{rec}");
    assert!(
        rec["endpoint"].as_str().is_some_and(|e| e.starts_with(LOCAL_A) || e.starts_with(LOCAL_B)),
        "{rec}"
    );

    // Both local servers saturated (one running, more waiting than `saturation.queue`): the
    // next request goes to node-2, and the audit says why.
    let flood: Vec<Proc> = [LOCAL_A, LOCAL_B]
        .iter()
        .flat_map(|ip| {
            (0..4).map(move |i| {
                let body = json!({"model": "m", "max_tokens": 200, "messages": [{"role": "user", "content": format!("flood {i}")}]}).to_string();
                (format!("http://{ip}:{PORT}/v1/chat/completions"), body)
            })
        })
        .map(|(url, body)| post_json_spawn(&topo.node, &url, &body, 60))
        .collect();
    wait_until(Duration::from_secs(5), "both local servers queueing", || {
        [LOCAL_A, LOCAL_B].iter().all(|ip| {
            let s = get(&format!("{ip}:{PORT}"), "/sim/stats", Some(&topo.node), None)["body"].clone();
            s["waiting"].as_u64().unwrap_or(0) >= 3
        })
    });
    std::thread::sleep(Duration::from_millis(250)); // a few scrapes
    let (code, v) = chat(&topo, "svc-model", "spill over");
    assert_eq!(code, 200, "{v}");
    assert_eq!(served(&topo, REMOTE_C), 1, "the saturated node spills to node-2");
    let rec = gw.wait_audit("spilled pick", |r| r["kind"] == "llm" && r["spilled"].is_string());
    assert!(
        rec["spilled"].as_str().unwrap_or_default().contains("2 of 2 endpoint(s) on this node saturated"),
        "{rec}"
    );
    assert!(rec["endpoint"].as_str().unwrap_or_default().starts_with(REMOTE_C), "{rec}");
    drop(flood);

    // The API changes the Service's endpoints: the pool follows; no endpoints: a clear 503.
    api.apply("endpointslices", &slice(&[(LOCAL_B, NODE, true)]));
    wait_members(&topo, "svc", 1, 0);
    api.delete("endpointslices", "models", "vllm-x7k2p");
    wait_members(&topo, "svc", 0, 0);
    let (code, v) = chat(&topo, "svc-model", "nobody home");
    assert_eq!(code, 503, "{v}");
    assert!(v["error"]["message"].as_str().unwrap_or_default().contains("no ready endpoint"), "{v}");

    // An InferencePool: its selector's ready pods on its target port, this node's first.
    api.apply("pods", &model_pod("llama-0", POOL_LOCAL, NODE, true));
    api.apply("pods", &model_pod("llama-1", POOL_REMOTE, "node-2", true));
    api.apply("pods", &json!({"metadata": {"name": "other", "namespace": "models", "labels": {"app": "other"}},
        "spec": {"nodeName": NODE, "containers": []},
        "status": {"phase": "Running", "podIP": NOT_READY, "conditions": [{"type": "Ready", "status": "True"}]}}));
    api.apply(
        "inferencepools",
        &json!({"metadata": {"name": "llama", "namespace": "models"},
                "spec": {"selector": {"matchLabels": {"app": "llama"}}, "targetPorts": [{"number": PORT}],
                         "endpointPickerRef": {"name": "llama-epp", "port": {"number": 9002}}}}),
    );
    wait_members(&topo, "gie", 1, 1);
    let before = served(&topo, POOL_REMOTE);
    for q in 0..3 {
        let (code, v) = chat(&topo, "gie-model", &format!("pool question {q}"));
        assert_eq!(code, 200, "{v}");
    }
    assert_eq!(served(&topo, POOL_REMOTE), before, "the local pod serves while it has room");
    // The local pod stops being ready: only node-2's is left, and the audit says so.
    api.apply("pods", &model_pod("llama-0", POOL_LOCAL, NODE, false));
    wait_members(&topo, "gie", 0, 1);
    let (code, v) = chat(&topo, "gie-model", "after the local pod");
    assert_eq!(code, 200, "{v}");
    assert_eq!(served(&topo, POOL_REMOTE), before + 1);
    let rec =
        gw.wait_audit("pool spill", |r| r["requested_model"] == "gie-model" && r["spilled"].is_string());
    assert_eq!(rec["spilled"], "no endpoint on this node", "{rec}");
    // The InferencePool is deleted: no members.
    api.delete("inferencepools", "models", "llama");
    wait_members(&topo, "gie", 0, 0);
    drop(gw);
}
