//! `cargo xtask bench k8s`: pod churn on one node. The API server fixture applies N pods on
//! this node at a steady rate (each with the bulky annotations and labels real pods carry) and
//! then deletes them; nodegate watches, enrolls each one's cgroup into the eBPF map and takes it
//! out again. Reported: the time from a watch event's arrival to the map write it caused (p50,
//! p99, max, measured inside the agent), the wall time for the whole set to be enrolled, and the
//! agent's resident memory per tracked pod (RSS growth over N pods, from a cold agent and again
//! once every pod has come and gone). Targets (issue 10):
//! p99 <= 100 ms, <= 2 KB per pod. Needs root.
use std::{path::PathBuf, time::Instant};

use anyhow::{Context as _, bail};
use nodegate_tests::{self as t, Cgroup, Gateway, Netns, kube};
use serde_json::{Value, json};

#[derive(clap::Args)]
pub struct Args {
    /// Pods on the node.
    #[arg(long, default_value_t = 1000)]
    pods: usize,
    /// Pods applied (then deleted) per second.
    #[arg(long, default_value_t = 200)]
    rate: u32,
    #[arg(long, default_value = "bench-results/k8s.json")]
    out: PathBuf,
}

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn metric(ns: &Netns, name: &str) -> f64 {
    let m = t::get("127.0.0.1:15000", "/metrics", Some(ns), None);
    m["body"]
        .as_str()
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(-1.0)
}

fn wait_for(ns: &Netns, name: &str, want: f64, limit_s: u64) -> anyhow::Result<f64> {
    let start = Instant::now();
    loop {
        if metric(ns, name) == want {
            return Ok(start.elapsed().as_secs_f64());
        }
        if start.elapsed().as_secs() > limit_s {
            bail!("{name} did not reach {want} in {limit_s}s (now {})", metric(ns, name));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn latency(ns: &Netns) -> Value {
    t::get("127.0.0.1:15000", "/pods", Some(ns), None)["body"]["enrollment_latency"].clone()
}

pub fn run(a: Args) -> anyhow::Result<()> {
    t::require_root();
    crate::cargo(&["build", "--release", "--bins"])?;
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    // SAFETY: single-threaded at this point; the harness reads it when spawning.
    unsafe { std::env::set_var("NODEGATE_BIN_DIR", root.join("target/release")) };

    let ns = Netns::new("ngk");
    let base = Cgroup::new(&format!("/{}", t::unique("ngbench-k8s")));
    let kubepods = Cgroup::new(&format!("{}/kubepods", base.rel));
    let qos = kube::qos_parents(&kubepods.rel, false);
    let mut uids = Vec::with_capacity(a.pods);
    let mut cgroups = Vec::with_capacity(a.pods);
    for i in 0..a.pods {
        let (uid, _) = kube::ids();
        let qos = ["burstable", "besteffort"][i % 2];
        cgroups.push(Cgroup::new(&format!("{}/{qos}/pod{uid}", kubepods.rel)));
        uids.push(uid);
    }
    let api = kube::KubeApi::start("127.0.0.1:16443", Some(&ns));
    api.apply_namespace("agents", json!({"nodegate.io/intercept": "enabled"}));
    let (dir, pin) = Gateway::prepare("bench-k8s");
    let cfg = format!(
        r#"
listeners: {{ transparent: 127.0.0.1:{tp}, explicit: null }}
log: {{ level: "warn,nodegate::app=info" }}
audit: {{ path: "" }}
kubernetes: {{ enabled: true, api_server: "{api}", node_name: node-1, kubepods: "{kp}" }}
intercept:
  enabled: true
  pin_path: "{{PIN}}"
  destinations:
    - {{ address: {svc}, ports: [{port}] }}
"#,
        tp = t::TRANSPARENT_PORT,
        api = api.api,
        kp = kubepods.rel,
        svc = t::SVC_IP,
        port = t::UPSTREAM_PORT,
    );
    let gw = Gateway::start(&dir, &pin, &cfg, Some(&ns), None);
    wait_for(&ns, "nodegate_kubernetes_pods", 0.0, 10)?;
    std::thread::sleep(std::time::Duration::from_millis(500));

    // What real pods carry: a last-applied-configuration annotation, several labels, managed
    // fields. nodegate keeps none of the bulk.
    let bulky = "x".repeat(1500);
    let pods: Vec<Value> = uids
        .iter()
        .enumerate()
        .map(|(i, uid)| {
            let mut p = kube::PodSpec {
                namespace: "agents",
                name: Box::leak(format!("agent-{i}").into_boxed_str()),
                uid,
                node: "node-1",
                service_account: "agent",
                labels: json!({"app": "agent", "team": format!("t{}", i % 10), "pod-template-hash": "5d8f7c9b6"}),
                annotations: json!({"kubectl.kubernetes.io/last-applied-configuration": bulky}),
                containers: &[("agent", "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")],
            }
            .json();
            p["metadata"]["managedFields"] = json!([{"manager": "kubelet", "operation": "Update", "apiVersion": "v1", "fieldsType": "FieldsV1", "fieldsV1": {"f:status": {"f:conditions": {}}}}]);
            p
        })
        .collect();
    let keys: Vec<(String, String)> =
        (0..a.pods).map(|i| ("agents".to_string(), format!("agent-{i}"))).collect();
    // Round 1 from a cold agent; round 2 after every pod has come and gone once (the allocator's
    // arenas are warm, so RSS growth is what tracking the pods holds).
    let mut rounds = Vec::new();
    for round in 1..=2 {
        let rss_before = rss_kb(gw.proc.pid());
        let started = Instant::now();
        api.batch(&pods, a.rate);
        wait_for(&ns, "nodegate_kubernetes_pods_enrolled", a.pods as f64, 120)?;
        let enroll_wall = started.elapsed().as_secs_f64();
        std::thread::sleep(std::time::Duration::from_millis(500));
        let rss_after = rss_kb(gw.proc.pid());
        let appear = latency(&ns);
        api.batch_delete(&keys, a.rate);
        wait_for(&ns, "nodegate_kubernetes_pods_enrolled", 0.0, 120)?;
        let all = latency(&ns);
        rounds.push((round, rss_before, rss_after, enroll_wall, appear, all));
    }
    let mut results = Vec::new();
    for (round, rss_before, rss_after, enroll_wall, appear, all) in rounds {
        let per_pod = (rss_after.saturating_sub(rss_before)) as f64 * 1024.0 / a.pods as f64;
        println!(
            "round {round}: {} pods at {}/s enrolled in {enroll_wall:.2}s wall (the apply itself takes {:.2}s)",
            a.pods,
            a.rate,
            a.pods as f64 / f64::from(a.rate)
        );
        println!(
            "  watch event -> enrolled map write (latencies so far), appearing: p50 {} us, p99 {} us, max {} us ({} writes); appear and go: p50 {} us, p99 {} us, max {} us",
            appear["p50_us"],
            appear["p99_us"],
            appear["max_us"],
            appear["samples"],
            all["p50_us"],
            all["p99_us"],
            all["max_us"]
        );
        println!("  RSS {rss_before} KB -> {rss_after} KB: {per_pod:.0} bytes per tracked pod");
        results.push(json!({
            "round": round, "enroll_wall_s": enroll_wall, "latency_appear": appear, "latency_all": all,
            "rss_before_kb": rss_before, "rss_after_kb": rss_after, "bytes_per_pod": per_pod,
        }));
    }
    let result = json!({
        "pods": a.pods, "rate": a.rate, "rounds": results,
        "targets": {"p99_us": 100_000, "bytes_per_pod": 2048},
    });
    let out = if a.out.is_absolute() { a.out.clone() } else { root.join(&a.out) };
    if let Some(d) = out.parent() {
        std::fs::create_dir_all(d)?;
    }
    std::fs::write(&out, serde_json::to_string_pretty(&result)?)
        .with_context(|| format!("writing {}", out.display()))?;
    println!("results written to {}", out.display());
    drop(gw);
    drop(cgroups);
    drop(qos);
    Ok(())
}
