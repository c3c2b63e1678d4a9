//! The gateway's own resources (nodegate.io/v1alpha1) end to end: nodegate watches them on the
//! API server fixture (tests/python/kube_api.py), merges them with its file config using the
//! validation `nodegate check` runs, answers each with an `Accepted` status condition, and reads
//! a provider's key from a Kubernetes Secret. Real chat completions through the explicit listener
//! to llm-sim show what is live; bad resources change nothing.
use std::time::Duration;

use nodegate_tests::{kube::*, *};
use serde_json::{Value, json};

const API: &str = "127.0.0.1:16445";
const GW: &str = "http://127.0.0.1:15080";
const SIM: &str = "127.0.0.1:18441";

fn b64(s: &str) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let b = s.as_bytes();
    let mut out = String::new();
    for c in b.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn secret(value: &str) -> Value {
    json!({"metadata": {"name": "sim-key", "namespace": "nodegate-system"}, "type": "Opaque", "data": {"token": b64(value)}})
}

fn resource(name: &str, spec: Value) -> Value {
    json!({"metadata": {"name": name}, "spec": spec})
}

/// One chat completion for `model` through the gateway: (HTTP status, body).
fn chat(topo: &Topology, model: &str) -> (u16, Value) {
    let body =
        json!({"model": model, "max_tokens": 2, "messages": [{"role": "user", "content": "hi"}]}).to_string();
    post_json_status(&topo.node, None, &format!("{GW}/v1/chat/completions"), &body)
}

fn accepted(api: &KubeApi, resource: &str, name: &str) -> Value {
    let o = api.object(resource, name);
    o["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Accepted"))
        .cloned()
        .unwrap_or(Value::Null)
}

fn wait_condition(api: &KubeApi, resource: &str, name: &str, status: &str, generation: i64) -> Value {
    let mut c = Value::Null;
    wait_until(
        Duration::from_secs(10),
        &format!("{resource}/{name} Accepted={status} at generation {generation}"),
        || {
            c = accepted(api, resource, name);
            c["status"] == status && c["observedGeneration"] == generation
        },
    );
    c
}

fn upstream_key(topo: &Topology) -> String {
    let last = get(SIM, "/sim/last", Some(&topo.node), None)["body"].clone();
    last["headers"]["authorization"].as_str().unwrap_or_default().to_string()
}

#[test]
fn resources_merge_validate_and_say_so_in_their_status() {
    require_root();
    let topo = Topology::new();
    let api = KubeApi::start(API, Some(&topo.node));
    let _sim = llm_sim(&topo.node, SIM, "sim", &[]);
    api.apply("secrets", &secret("sk-from-secret-1"));
    let provider = |endpoint: &str| {
        resource(
            "sim",
            json!({"kind": "openai-compatible", "endpoint": endpoint,
                   "credentials": {"secret": {"name": "sim-key", "key": "token", "namespace": "nodegate-system"}}}),
        )
    };
    api.apply("llmproviders", &provider(&format!("http://{SIM}")));
    api.apply(
        "modelroutes",
        &resource("chat", json!({"targets": [{"provider": "sim", "model": "sim-model"}]})),
    );
    api.apply(
        "modelaccesses",
        &resource("everyone", json!({"selector": {"workloads": ["*"]}, "models": ["chat"]})),
    );

    let (dir, pin) = Gateway::prepare("k8s-resources");
    let cfg = format!(
        r#"
listeners: {{ explicit: 127.0.0.1:15080, transparent: null }}
admin: {{ address: 127.0.0.1:15000 }}
audit: {{ path: "{{AUDIT}}", flush_interval: 50ms }}
kubernetes: {{ enabled: true, api_server: "{api}", node_name: node-1, resync: 1s }}
llm:
  default: deny
"#,
        api = api.api
    );
    let gw = Gateway::start(&dir, &pin, &cfg, Some(&topo.node), None);

    // The resources are merged: the route answers, with the key read from the Secret.
    wait_until(Duration::from_secs(10), "the route from the cluster answers", || {
        chat(&topo, "chat").0 == 200
    });
    assert_eq!(upstream_key(&topo), "Bearer sk-from-secret-1");
    for (r, n) in [("llmproviders", "sim"), ("modelroutes", "chat"), ("modelaccesses", "everyone")] {
        let c = wait_condition(&api, r, n, "True", 1);
        assert_eq!(c["reason"], "Accepted", "{c}");
    }
    let dump = get("127.0.0.1:15000", "/config_dump", Some(&topo.node), None)["body"].to_string();
    assert!(
        dump.contains("sim-key") && !dump.contains("sk-from-secret-1"),
        "the dump names the Secret, never its value"
    );

    // A resource with an invalid field: refused, naming the field; nothing else changes.
    api.apply("llmproviders", &resource("broken", json!({"kind": "nope", "endpoint": "http://127.0.0.1:1"})));
    let c = wait_condition(&api, "llmproviders", "broken", "False", 1);
    assert_eq!(c["reason"], "Invalid", "{c}");
    assert!(
        c["message"].as_str().unwrap_or_default().starts_with("spec.kind: unknown variant `nope`"),
        "{c}"
    );
    // One that is well-formed but fails validation with the rest: the field is named too.
    api.apply("modelroutes", &resource("dangling", json!({"targets": [{"provider": "ghost"}]})));
    let c = wait_condition(&api, "modelroutes", "dangling", "False", 1);
    assert!(c["message"].as_str().unwrap_or_default().starts_with("spec.targets[0].provider"), "{c}");
    let (code, v) = chat(&topo, "dangling");
    assert_eq!(code, 404, "a refused route is not live: {v}");
    assert_eq!(chat(&topo, "chat").0, 200, "the good resources stay live");

    // A good resource changed into a bad one: refused at its new generation, and the previous
    // spec stays in force.
    api.apply("llmproviders", &provider("not a url"));
    let c = wait_condition(&api, "llmproviders", "sim", "False", 2);
    let msg = c["message"].as_str().unwrap_or_default();
    assert!(msg.starts_with("spec.endpoint") && msg.contains("generation 1 stays in force"), "{c}");
    assert_eq!(chat(&topo, "chat").0, 200, "the previous good provider still answers");

    // The Secret rotates: the next merge reads the new key.
    api.apply("secrets", &secret("sk-from-secret-2"));
    wait_until(Duration::from_secs(10), "the rotated key in use", || {
        chat(&topo, "chat").0 == 200 && upstream_key(&topo) == "Bearer sk-from-secret-2"
    });

    // A2A agents come from the cluster too: a good one is served, a bad URL is refused by name.
    api.apply("a2aagents", &resource("planner", json!({"url": "http://10.0.9.9:9999"})));
    api.apply("a2aagents", &resource("bad-agent", json!({"url": "ftp://10.0.9.9/"})));
    wait_condition(&api, "a2aagents", "planner", "True", 1);
    let c = wait_condition(&api, "a2aagents", "bad-agent", "False", 1);
    assert!(c["message"].as_str().unwrap_or_default().starts_with("spec.url"), "{c}");
    let dump = get("127.0.0.1:15000", "/config_dump", Some(&topo.node), None)["body"].to_string();
    assert!(dump.contains("10.0.9.9:9999") && !dump.contains("ftp://"), "{dump}");

    // The access rule goes: `llm.default: deny` from the file applies again.
    api.delete_cluster("modelaccesses", "everyone");
    wait_until(Duration::from_secs(10), "access refused without the rule", || chat(&topo, "chat").0 == 403);
    let metrics = get("127.0.0.1:15000", "/metrics", Some(&topo.node), None)["body"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        metrics.contains("nodegate_kubernetes_resources{kind=\"ModelRoute\",state=\"refused\"} 1"),
        "{metrics}"
    );
    drop(gw);
}
