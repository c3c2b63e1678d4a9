//! `cargo xtask bench redirect`: connection setup and request latency for (a) direct to the
//! upstream, (b) eBPF redirect through nodegate, (c) iptables REDIRECT (nat OUTPUT) to the same
//! nodegate listener. Same client binary, same proxy process, same upstream, one network
//! namespace; the three run interleaved, several rounds, and the median of each is reported.
use std::{path::PathBuf, process::Stdio, time::Duration};

use anyhow::{Context as _, bail};
use nodegate_tests::{self as t, Cgroup, Gateway, Netns, Value};

#[derive(clap::Args)]
pub struct Args {
    /// New-connection requests per run.
    #[arg(long, default_value_t = 3000)]
    conn_requests: usize,
    /// Keep-alive requests per run.
    #[arg(long, default_value_t = 5000)]
    keepalive_requests: usize,
    /// Client threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Interleaved rounds (the median is reported).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Where to write the JSON results.
    #[arg(long, default_value = "bench-results/redirect.json")]
    out: PathBuf,
}

const DIRECT_IP: &str = "169.254.88.30";

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

pub fn run(a: Args) -> anyhow::Result<()> {
    t::require_root();
    crate::cargo(&["build", "--release", "--bins"])?;
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let bins = root.join("target/release");
    // SAFETY: single-threaded at this point; the harness reads it when spawning.
    unsafe { std::env::set_var("NODEGATE_BIN_DIR", &bins) };

    let ns = Netns::new("ngb");
    for ip in [t::SVC_IP, t::OTHER_IP, DIRECT_IP] {
        ns.ip(&["addr", "add", &format!("{ip}/32"), "dev", "lo"]);
    }
    let cg = format!("/{}", t::unique("ngbench"));
    let parent = Cgroup::new(&cg);
    let client = Cgroup::new(&format!("{cg}/client"));
    let _up = t::upstream(&ns, "upstream");
    let (dir, pin) = Gateway::prepare("bench");
    let cfg = format!(
        r#"
listeners: {{ transparent: 0.0.0.0:{tp}, explicit: null }}
log: {{ level: "warn,nodegate::app=info" }}
audit: {{ path: "{{AUDIT}}" }}
intercept:
  enabled: true
  cgroups: ["{cg}/client"]
  redirect_to: 127.0.0.1:{tp}
  pin_path: "{{PIN}}"
  destinations:
    - {{ address: {svc}, ports: [{port}] }}
"#,
        tp = t::TRANSPARENT_PORT,
        svc = t::SVC_IP,
        port = t::UPSTREAM_PORT,
    );
    let gw = Gateway::start(&dir, &pin, &cfg, Some(&ns), None);
    let port = t::UPSTREAM_PORT.to_string();
    t::iptables_redirect(&ns, t::OTHER_IP, t::UPSTREAM_PORT, t::TRANSPARENT_PORT);

    let paths = [("direct", DIRECT_IP), ("ebpf", t::SVC_IP), ("iptables", t::OTHER_IP)];
    let threads = a.threads.to_string();
    let mut runs: Vec<(String, String, Value)> = Vec::new();
    // Warm-up: pools, caches, the proxy's first connections.
    for (_, ip) in paths {
        bench(&ns, &client, &format!("{ip}:{port}"), "keepalive", 500, &threads)?;
    }
    for round in 0..a.rounds {
        for mode in ["conn", "keepalive"] {
            let n = if mode == "conn" { a.conn_requests } else { a.keepalive_requests };
            for (name, ip) in paths {
                let v = bench(&ns, &client, &format!("{ip}:{port}"), mode, n, &threads)?;
                eprintln!(
                    "round {round} {mode:<9} {name:<8} {:>9.0}/s  connect p50 {:>6.1} us  request p50 {:>7.1} us p99 {:>7.1} us",
                    v["per_second"].as_f64().unwrap_or(0.0),
                    v["connect_p50_us"].as_f64().unwrap_or(0.0),
                    v["request_p50_us"].as_f64().unwrap_or(0.0),
                    v["request_p99_us"].as_f64().unwrap_or(0.0)
                );
                runs.push((mode.to_string(), name.to_string(), v));
            }
        }
    }
    let redirected = gw.counter("redirected");
    if redirected == 0 {
        bail!("the eBPF path redirected nothing: the benchmark did not measure what it claims");
    }
    let pick = |mode: &str, name: &str, field: &str| {
        median(
            runs.iter()
                .filter(|(m, n, _)| m == mode && n == name)
                .filter_map(|(_, _, v)| v[field].as_f64())
                .collect(),
        )
    };
    let mut summary = serde_json::Map::new();
    for mode in ["conn", "keepalive"] {
        for (name, _) in paths {
            summary.insert(
                format!("{mode}.{name}"),
                serde_json::json!({
                    "per_second": pick(mode, name, "per_second"),
                    "connect_p50_us": pick(mode, name, "connect_p50_us"),
                    "connect_p99_us": pick(mode, name, "connect_p99_us"),
                    "request_p50_us": pick(mode, name, "request_p50_us"),
                    "request_p99_us": pick(mode, name, "request_p99_us"),
                }),
            );
        }
    }
    let setup_ratio = pick("conn", "ebpf", "connect_p50_us") / pick("conn", "iptables", "connect_p50_us");
    let cps_ratio = pick("conn", "ebpf", "per_second") / pick("conn", "iptables", "per_second");
    let added_p50 =
        pick("keepalive", "ebpf", "request_p50_us") - pick("keepalive", "direct", "request_p50_us");
    let added_p50_ipt =
        pick("keepalive", "iptables", "request_p50_us") - pick("keepalive", "direct", "request_p50_us");
    println!("\nredirect benchmark: median of {} rounds, {} thread(s)", a.rounds, a.threads);
    println!(
        "{:<10} {:<9} {:>10} {:>14} {:>14} {:>14} {:>14}",
        "mode", "path", "req/s", "connect p50us", "connect p99us", "request p50us", "request p99us"
    );
    for mode in ["conn", "keepalive"] {
        for (name, _) in paths {
            // Keep-alive runs open one connection per thread: their connect figures are one sample.
            let (c50, c99) = if mode == "conn" {
                (
                    format!("{:.1}", pick(mode, name, "connect_p50_us")),
                    format!("{:.1}", pick(mode, name, "connect_p99_us")),
                )
            } else {
                ("-".into(), "-".into())
            };
            println!(
                "{:<10} {:<9} {:>10.0} {:>14} {:>14} {:>14.1} {:>14.1}",
                mode,
                name,
                pick(mode, name, "per_second"),
                c50,
                c99,
                pick(mode, name, "request_p50_us"),
                pick(mode, name, "request_p99_us")
            );
        }
    }
    println!(
        "\nconnection setup, eBPF / iptables (connect p50):  {setup_ratio:.3}  (target <= 1.0: {})",
        if setup_ratio <= 1.0 { "met" } else { "MISSED" }
    );
    println!("connections per second, eBPF / iptables:          {cps_ratio:.3}");
    println!(
        "added p50 per keep-alive request over direct:     {added_p50:.1} us via eBPF, {added_p50_ipt:.1} us via iptables (target <= 50 us: {})",
        if added_p50 <= 50.0 { "met" } else { "MISSED" }
    );
    let result = serde_json::json!({
        "benchmark": "redirect",
        "rounds": a.rounds, "threads": a.threads,
        "conn_requests": a.conn_requests, "keepalive_requests": a.keepalive_requests,
        "results": summary,
        "setup_ratio_ebpf_over_iptables": setup_ratio,
        "cps_ratio_ebpf_over_iptables": cps_ratio,
        "added_p50_keepalive_us_ebpf": added_p50,
        "added_p50_keepalive_us_iptables": added_p50_ipt,
        "redirected_connections": redirected,
    });
    let out = if a.out.is_absolute() { a.out.clone() } else { root.join(&a.out) };
    if let Some(d) = out.parent() {
        std::fs::create_dir_all(d)?;
    }
    std::fs::write(&out, serde_json::to_string_pretty(&result)?)
        .with_context(|| format!("writing {}", out.display()))?;
    println!("results written to {}", out.display());
    drop(gw);
    drop(client);
    drop(parent);
    Ok(())
}

fn bench(ns: &Netns, cg: &Cgroup, addr: &str, mode: &str, n: usize, threads: &str) -> anyhow::Result<Value> {
    let n = n.to_string();
    let child = t::spawn_child(
        &t::probe_bin(),
        &["bench", addr, mode, &n, threads],
        Some(ns),
        Some(cg),
        Stdio::piped(),
        Stdio::inherit(),
    );
    let out = child.wait_with_output().context("waiting for the bench client")?;
    let v: Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("bench client printed {:?}", String::from_utf8_lossy(&out.stdout)))?;
    if v["ok"] != true {
        bail!("bench {mode} {addr} failed: {v}");
    }
    std::thread::sleep(Duration::from_millis(100));
    Ok(v)
}
