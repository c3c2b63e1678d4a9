//! `cargo xtask bench tls`: new TLS connections per second and per-request latency for
//! (a) direct to the upstream, (b) passthrough through nodegate (SNI policy, bytes spliced),
//! (c) nodegate terminating with a cached leaf and re-encrypting, (d) the same with a fresh leaf
//! per connection (a new server name each time), and (e) haproxy doing the same termination and
//! re-encryption, with request logging on. One network namespace, one upstream (haproxy serving
//! a 2-byte answer over TLS), the same client binary (ng-tlsload: full handshakes, no
//! resumption, one GET each); interleaved rounds, medians reported. Also times leaf minting
//! in-process.
use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use nodegate_tests::{self as t, Cgroup, Gateway, Netns, Value, certs::TestCa};

#[derive(clap::Args)]
pub struct Args {
    /// Seconds per connection run.
    #[arg(long, default_value_t = 3)]
    secs: u64,
    /// Concurrent client connections.
    #[arg(long, default_value_t = 4)]
    threads: usize,
    /// Keep-alive requests per latency run.
    #[arg(long, default_value_t = 2000)]
    requests: usize,
    /// Interleaved rounds (the median is reported).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    #[arg(long, default_value = "bench-results/tls.json")]
    out: PathBuf,
}

const DIRECT_IP: &str = "169.254.88.30";

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn pem_bundle(dir: &Path, name: &str, leaf: &t::certs::Leaf) -> anyhow::Result<PathBuf> {
    let p = dir.join(format!("{name}.pem"));
    std::fs::write(&p, std::fs::read_to_string(&leaf.cert)? + &std::fs::read_to_string(&leaf.key)?)?;
    Ok(p)
}

fn haproxy(ns: &Netns, dir: &Path, name: &str, cfg: &str) -> anyhow::Result<t::Proc> {
    let path = dir.join(format!("{name}.cfg"));
    std::fs::write(&path, cfg)?;
    let p = path.display().to_string();
    let check = std::process::Command::new("haproxy")
        .args(["-c", "-q", "-f", &p])
        .output()
        .context("haproxy is not installed (apt-get install haproxy)")?;
    if !check.status.success() {
        bail!("haproxy config {name}: {}", String::from_utf8_lossy(&check.stderr));
    }
    let log = dir.join(format!("{name}.log"));
    let err = std::fs::File::create(&log)?;
    let mut proc =
        t::spawn(Path::new("haproxy"), &["-db", "-f", &p], Some(ns), None, Stdio::null(), Stdio::from(err));
    std::thread::sleep(Duration::from_millis(500));
    if !proc.is_running() {
        bail!("haproxy {name} exited: {}", std::fs::read_to_string(&log).unwrap_or_default());
    }
    Ok(proc)
}

fn load(ns: &Netns, cg: &Cgroup, args: &[&str]) -> anyhow::Result<Value> {
    let bin = t::bin_dir().join("ng-tlsload");
    let child = t::spawn_child(&bin, args, Some(ns), Some(cg), Stdio::piped(), Stdio::inherit());
    let out = child.wait_with_output().context("waiting for ng-tlsload")?;
    let v: Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("ng-tlsload printed {:?}", String::from_utf8_lossy(&out.stdout)))?;
    if v["ok"] != true || v["errors"].as_u64().unwrap_or(0) > 0 {
        bail!("ng-tlsload {args:?} failed: {v}");
    }
    std::thread::sleep(Duration::from_millis(200));
    Ok(v)
}

/// Leaf minting cost in-process: fresh names vs the cache.
fn mint_timing(dir: &Path, ca: &TestCa) -> anyhow::Result<(f64, f64, f64)> {
    let _ = dir;
    let node = nodegate::tls::ca::NodeCa::load(
        &ca.cert,
        &ca.key,
        Duration::from_secs(86400),
        4096,
        Default::default(),
    )?;
    let mut fresh = Vec::new();
    for i in 0..500 {
        let t0 = Instant::now();
        node.leaf(&format!("m{i}.bench.test"))?;
        fresh.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    let t0 = Instant::now();
    for i in 0..500 {
        node.leaf(&format!("m{i}.bench.test"))?;
    }
    let cached_us = t0.elapsed().as_secs_f64() * 1e6 / 500.0;
    let p99 = {
        let mut f = fresh.clone();
        f.sort_by(f64::total_cmp);
        f[(f.len() * 99 / 100).min(f.len() - 1)]
    };
    Ok((median(fresh), p99, cached_us))
}

pub fn run(a: Args) -> anyhow::Result<()> {
    t::require_root();
    crate::cargo(&["build", "--release", "--bins"])?;
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    // SAFETY: single-threaded at this point; the harness reads it when spawning.
    unsafe { std::env::set_var("NODEGATE_BIN_DIR", root.join("target/release")) };

    let ns = Netns::new("ngt");
    for ip in [t::SVC_IP, t::OTHER_IP, DIRECT_IP] {
        ns.ip(&["addr", "add", &format!("{ip}/32"), "dev", "lo"]);
    }
    let cg = format!("/{}", t::unique("ngbench"));
    let parent = Cgroup::new(&cg);
    let client = Cgroup::new(&format!("{cg}/client"));
    let (dir, pin) = Gateway::prepare("bench-tls");
    let upstream_ca = TestCa::new(&dir, "upstream-ca");
    let node_ca = TestCa::new(&dir, "node-ca");
    let up_leaf = upstream_ca.issue(&dir, "upstream", &["*.bench.test", "api.bench.test"], false);
    let up_pem = pem_bundle(&dir, "upstream", &up_leaf)?;
    let gw_leaf = node_ca.issue(&dir, "haproxy-gw", &["api.bench.test"], false);
    let gw_pem = pem_bundle(&dir, "haproxy-gw", &gw_leaf)?;
    let (svc, other) = (t::SVC_IP, t::OTHER_IP);
    let _upstream = haproxy(
        &ns,
        &dir,
        "upstream",
        &format!(
            "global\n  maxconn 8000\ndefaults\n  mode http\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\nfrontend up\n  bind {svc}:443 ssl crt {p}\n  bind {svc}:8443 ssl crt {p}\n  bind {DIRECT_IP}:443 ssl crt {p}\n  http-request return status 200 content-type text/plain string ok\n",
            p = up_pem.display()
        ),
    )?;
    let _haproxy_gw = haproxy(
        &ns,
        &dir,
        "gateway",
        &format!(
            "global\n  maxconn 8000\n  log stdout format raw local0\ndefaults\n  mode http\n  log global\n  option httplog\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\nfrontend gw\n  bind {other}:443 ssl crt {g}\n  default_backend up\nbackend up\n  http-reuse always\n  server up {DIRECT_IP}:443 ssl verify required ca-file {ca} sni str(api.bench.test)\n",
            g = gw_pem.display(),
            ca = upstream_ca.cert.display()
        ),
    )?;
    let cfg = format!(
        r#"
listeners: {{ transparent: 0.0.0.0:{tp}, explicit: null }}
log: {{ level: "warn,nodegate::app=info" }}
audit: {{ path: "{{AUDIT}}" }}
tls:
  ca: {{ cert: "{nc}", key: "{nk}" }}
  upstream: {{ ca_files: ["{uc}"] }}
intercept:
  enabled: true
  cgroups: ["{cg}/client"]
  redirect_to: 127.0.0.1:{tp}
  pin_path: "{{PIN}}"
  destinations:
    - {{ address: {svc}, ports: [443], class: http, tls: terminate }}
    - {{ address: {svc}, ports: [8443] }}
"#,
        tp = t::TRANSPARENT_PORT,
        nc = node_ca.cert.display(),
        nk = node_ca.key.display(),
        uc = upstream_ca.cert.display(),
    );
    let gw = Gateway::start(&dir, &pin, &cfg, Some(&ns), None);
    let (uca, nca) = (upstream_ca.cert.display().to_string(), node_ca.cert.display().to_string());
    let direct = format!("{DIRECT_IP}:443");
    let (term, pass, hap) = (format!("{svc}:443"), format!("{svc}:8443"), format!("{other}:443"));
    let paths: [(&str, &str, &str, &str); 5] = [
        ("direct", &direct, "api.bench.test", &uca),
        ("passthrough", &pass, "api.bench.test", &uca),
        ("terminate-cached", &term, "api.bench.test", &nca),
        ("terminate-fresh", &term, "n{n}.bench.test", &nca),
        ("haproxy", &hap, "api.bench.test", &nca),
    ];
    let (secs, threads, requests) = (a.secs.to_string(), a.threads.to_string(), a.requests.to_string());
    for (_, addr, sni, ca) in paths {
        load(&ns, &client, &["conns", addr, sni, ca, "1", "2"])?;
    }
    let mut runs: Vec<(String, String, Value)> = Vec::new();
    for round in 0..a.rounds {
        for (name, addr, sni, ca) in paths {
            let v = load(&ns, &client, &["conns", addr, sni, ca, &secs, &threads])?;
            eprintln!(
                "round {round} conns     {name:<17} {:>8.0}/s  p50 {:>7} us  p99 {:>7} us",
                v["per_second"].as_f64().unwrap_or(0.0),
                v["p50_us"],
                v["p99_us"]
            );
            runs.push(("conns".into(), name.into(), v));
        }
        for (name, addr, sni, ca) in [paths[0], paths[2], paths[4]] {
            let v = load(&ns, &client, &["keepalive", addr, sni, ca, &requests])?;
            eprintln!(
                "round {round} keepalive {name:<17} p50 {:>7} us  p99 {:>7} us",
                v["p50_us"], v["p99_us"]
            );
            runs.push(("keepalive".into(), name.into(), v));
        }
    }
    let terminated = gw.audit_lines().iter().filter(|r| r["protocol"] == "https").count();
    if terminated == 0 {
        bail!("nodegate terminated nothing: the benchmark did not measure what it claims");
    }
    let (mint_p50, mint_p99, cached_us) = mint_timing(&dir, &node_ca)?;
    let pick = |mode: &str, name: &str, f: &str| {
        median(
            runs.iter()
                .filter(|(m, n, _)| m == mode && n == name)
                .filter_map(|(_, _, v)| v[f].as_f64())
                .collect(),
        )
    };
    println!(
        "\nTLS benchmark: median of {} rounds, {} concurrent connections, {} s each",
        a.rounds, a.threads, a.secs
    );
    println!("{:<18} {:>12} {:>12} {:>12}", "path", "conns/s", "p50 us", "p99 us");
    let mut summary = serde_json::Map::new();
    for (name, ..) in paths {
        let (cps, p50, p99) =
            (pick("conns", name, "per_second"), pick("conns", name, "p50_us"), pick("conns", name, "p99_us"));
        println!("{name:<18} {cps:>12.0} {p50:>12.0} {p99:>12.0}");
        summary.insert(
            format!("conns.{name}"),
            serde_json::json!({"per_second": cps, "p50_us": p50, "p99_us": p99}),
        );
    }
    println!("\nkeep-alive request latency over one TLS connection:");
    for name in ["direct", "terminate-cached", "haproxy"] {
        let (p50, p99) = (pick("keepalive", name, "p50_us"), pick("keepalive", name, "p99_us"));
        println!("{name:<18} p50 {p50:>8.0} us  p99 {p99:>8.0} us");
        summary.insert(format!("keepalive.{name}"), serde_json::json!({"p50_us": p50, "p99_us": p99}));
    }
    let ratio = pick("conns", "terminate-cached", "per_second") / pick("conns", "haproxy", "per_second");
    let ratio_fresh = pick("conns", "terminate-fresh", "per_second") / pick("conns", "haproxy", "per_second");
    let added = pick("keepalive", "terminate-cached", "p50_us") - pick("keepalive", "direct", "p50_us");
    let added_hap = pick("keepalive", "haproxy", "p50_us") - pick("keepalive", "direct", "p50_us");
    println!(
        "\nnew connections/s, nodegate terminate / haproxy: {ratio:.2} cached leaf, {ratio_fresh:.2} fresh leaf (target >= 0.67, within 1.5x: {})",
        if ratio >= 1.0 / 1.5 { "met" } else { "MISSED" }
    );
    println!(
        "added p50 per keep-alive request over direct: nodegate {added:.0} us, haproxy {added_hap:.0} us"
    );
    println!(
        "leaf minting in-process: fresh p50 {mint_p50:.2} ms p99 {mint_p99:.2} ms (target <= 2 ms: {}), cached {cached_us:.1} us",
        if mint_p99 <= 2.0 { "met" } else { "MISSED" }
    );
    let result = serde_json::json!({
        "benchmark": "tls", "rounds": a.rounds, "threads": a.threads, "secs": a.secs,
        "results": summary,
        "conns_ratio_terminate_cached_over_haproxy": ratio,
        "conns_ratio_terminate_fresh_over_haproxy": ratio_fresh,
        "added_p50_keepalive_us_nodegate": added, "added_p50_keepalive_us_haproxy": added_hap,
        "leaf_mint_ms": {"p50": mint_p50, "p99": mint_p99}, "leaf_cached_us": cached_us,
        "terminated_connections_audited": terminated,
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
