//! `cargo xtask bench policy`: what `policy.rules` and tracing cost. Four nodegates run side by
//! side on the same provider simulator: no rules, 10 rules, 100 rules (none of which matches, so
//! every one is evaluated: the worst case for a request that is let through), 100 rules that only
//! the CEL interpreter can decide, and no rules with traces exported at 100% sampling. Each serves two workloads: plain HTTP forwarded through the
//! explicit listener (absolute-form GETs on keep-alive connections) and LLM chat completions
//! (JSON). Rounds are interleaved (every gateway and workload once per round); reported are the
//! median requests per second and the median over rounds of each round's ratio to the same
//! round's no-rules figure.
use std::{
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use serde_json::json;

use crate::bench_llm::{Killed, Run, load, pct, wait_http};

#[derive(clap::Args)]
pub struct Args {
    /// Seconds per run (each gateway and workload runs once per round).
    #[arg(long, default_value_t = 2)]
    seconds: u64,
    /// Interleaved rounds; the median is reported.
    #[arg(long, default_value_t = 7)]
    rounds: usize,
    /// Concurrent connections.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    #[arg(long, default_value = "bench-results/policy.json")]
    out: PathBuf,
}

const KEY: &str = "sk-bench-agent-0123456789abcdef0123456789abcdef";
const SIM: &str = "127.0.0.1:18331";

/// `n` rules that a bench request never matches, over the families real rules use; a quarter of
/// them are LLM-only (they name `llm`), the rest apply to every protocol. Their conditions start
/// with tests of an attribute against a constant, which nodegate decides natively (guards).
fn rules(n: usize) -> String {
    let mut out = String::from("policy:\n  rules:\n");
    for i in 0..n {
        let when = match i % 4 {
            0 => format!(r#"source.principal == "p-{i}" && request.path.startsWith("/admin-{i}")"#),
            1 => format!(r#""x-block-{i}" in request.headers"#),
            2 => format!(r#"destination.port == {} && source.workload.startsWith("w{i}")"#, 1000 + i),
            _ => format!(r#"llm.model == "m-{i}" && llm.max_tokens > {i}"#),
        };
        out.push_str(&format!("    - {{ name: r{i}, when: '{when}', action: deny }}\n"));
    }
    out
}

/// `n` rules no guard can decide: the CEL interpreter evaluates every one (comprehensions,
/// `size`, string concatenation).
fn cel_rules(n: usize) -> String {
    let mut out = String::from("policy:\n  rules:\n");
    for i in 0..n {
        let when = match i % 4 {
            0 => format!(r#"size(request.path) > {}"#, 1000 + i),
            1 => format!(r#"request.headers.exists(k, k == "x-block-{i}")"#),
            2 => format!(r#"size(source.workload) > {}"#, 1000 + i),
            _ => format!(r#"llm.model + "-x" == "m-{i}""#),
        };
        out.push_str(&format!("    - {{ name: c{i}, when: '{when}', action: deny }}\n"));
    }
    out
}

/// Closed loop through an HTTP proxy: `conns` keep-alive connections to `proxy`, each sending
/// absolute-form GETs for `url` back to back for `secs`.
async fn load_via_proxy(proxy: &str, url: &str, conns: usize, secs: u64) -> Run {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let (proxy, url) = (proxy.to_string(), url.to_string());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0usize;
            'reconnect: while Instant::now() < deadline {
                let Ok(stream) = tokio::net::TcpStream::connect(&proxy).await else {
                    errors += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let Ok((mut send, conn)) =
                    hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await
                else {
                    errors += 1;
                    continue;
                };
                tokio::spawn(conn);
                while Instant::now() < deadline {
                    let start = Instant::now();
                    let Ok(req) = hyper::Request::get(url.as_str())
                        .header("host", SIM)
                        .header("authorization", format!("Bearer {KEY}"))
                        .body(Empty::<Bytes>::new())
                    else {
                        errors += 1;
                        continue 'reconnect;
                    };
                    match send.send_request(req).await {
                        Ok(resp) if resp.status().is_success() => {
                            if resp.into_body().collect().await.is_err() {
                                errors += 1;
                                continue 'reconnect;
                            }
                            lat.push(start.elapsed().as_secs_f64() * 1e3);
                        }
                        _ => {
                            errors += 1;
                            continue 'reconnect;
                        }
                    }
                }
            }
            (lat, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        if let Ok((l, e)) = t.await {
            all.extend(l);
            errors += e;
        }
    }
    let n = all.len();
    Run { rps: n as f64 / secs as f64, p50_ms: pct(&mut all, 0.5), p99_ms: pct(&mut all, 0.99), errors }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

pub fn run(a: Args) -> anyhow::Result<()> {
    crate::cargo(&["build", "--release", "--bins"])?;
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let bins = root.join("target/release");
    let dir = std::env::temp_dir().join(format!("nodegate-bench-policy-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let sim = Killed(
        Command::new(bins.join("llm-sim"))
            .args([SIM, "sim", "--tokens", "20"])
            .stdout(Stdio::null())
            .spawn()
            .context("llm-sim")?,
    );
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let sink = rt.block_on(crate::bench_llm::otlp_sink("127.0.0.1:18339"))?;
    // (label, explicit port, the config's extra sections)
    let variants: Vec<(&str, u16, String)> = vec![
        ("0 rules", 18332, String::new()),
        ("10 rules", 18333, rules(10)),
        ("100 rules", 18334, rules(100)),
        ("100 CEL-only rules", 18336, cel_rules(100)),
        (
            "traced, 0 rules",
            18335,
            "traces: { endpoint: \"http://127.0.0.1:18339\", sample_ratio: 1.0 }\n".into(),
        ),
    ];
    let mut gateways = Vec::new();
    for (i, (label, port, extra)) in variants.iter().enumerate() {
        let cfg = dir.join(format!("g{i}.yaml"));
        std::fs::write(
            &cfg,
            format!(
                r#"
listeners: {{ explicit: 127.0.0.1:{port}, transparent: null }}
admin: {{ address: 127.0.0.1:{admin} }}
log: {{ level: warn }}
audit: {{ path: "{audit}" }}
identities:
  - {{ name: bench-agent, api_keys: ["{KEY}"] }}
llm:
  providers:
    - {{ name: sim, kind: openai, endpoint: "http://{SIM}" }}
  models:
    - {{ name: bench, targets: [ {{ provider: sim, model: gpt-4o-mini }} ] }}
{extra}"#,
                admin = port + 100,
                audit = dir.join(format!("g{i}.audit.log")).display(),
            ),
        )?;
        let out = Command::new(bins.join("nodegate"))
            .args(["check", &cfg.display().to_string()])
            .output()
            .context("nodegate check")?;
        if !out.status.success() {
            bail!("{label}: {}", String::from_utf8_lossy(&out.stderr));
        }
        let child = Command::new(bins.join("nodegate"))
            .args(["run", "--config", &cfg.display().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("nodegate ({label})"))?;
        gateways.push(Killed(child));
        rt.block_on(wait_http(&format!("http://127.0.0.1:{}/readyz", port + 100)))?;
    }
    rt.block_on(wait_http(&format!("http://{SIM}/sim/count")))?;
    let chat = Bytes::from(
        json!({"model": "bench", "messages": [{"role": "user", "content": "x".repeat(1000)}]}).to_string(),
    );
    println!(
        "policy: {} round(s) of {} s per gateway and workload, {} connections, interleaved",
        a.rounds, a.seconds, a.connections
    );
    // [variant][workload] -> rps per round
    let mut rps = vec![[Vec::new(), Vec::new()]; variants.len()];
    let mut p50 = vec![[Vec::new(), Vec::new()]; variants.len()];
    let mut errors = vec![[0usize, 0usize]; variants.len()];
    for round in 0..a.rounds {
        for (i, (label, port, _)) in variants.iter().enumerate() {
            let proxy = format!("127.0.0.1:{port}");
            let http = rt.block_on(load_via_proxy(
                &proxy,
                &format!("http://{SIM}/sim/count"),
                a.connections,
                a.seconds,
            ));
            let llm = rt.block_on(load(
                &format!("http://{proxy}/v1/chat/completions"),
                chat.clone(),
                a.connections,
                a.seconds,
                None,
            ));
            println!("  round {}: {label:>20}: http {:>8.0}/s  llm {:>7.0}/s", round + 1, http.rps, llm.rps);
            for (w, r) in [http, llm].into_iter().enumerate() {
                rps[i][w].push(r.rps);
                p50[i][w].push(r.p50_ms);
                errors[i][w] += r.errors;
            }
        }
    }
    println!(
        "{:>20} | {:>10} {:>8} {:>9} | {:>10} {:>8} {:>9}",
        "", "http/s", "share", "p50 ms", "llm/s", "share", "p50 ms"
    );
    let mut rows = Vec::new();
    for (i, (label, _, _)) in variants.iter().enumerate() {
        let m = [median(rps[i][0].clone()), median(rps[i][1].clone())];
        let l = [median(p50[i][0].clone()), median(p50[i][1].clone())];
        // Each round's figure against the same round's no-rules figure (the machine's speed
        // drifts between rounds more than the effect measured), then the median of those.
        let share =
            [0, 1].map(|w| median(rps[i][w].iter().zip(&rps[0][w]).map(|(x, b)| x / b.max(1e-9)).collect()));
        println!(
            "{label:>20} | {:>10.0} {:>7.1}% {:>9.3} | {:>10.0} {:>7.1}% {:>9.3}",
            m[0],
            share[0] * 100.0,
            l[0],
            m[1],
            share[1] * 100.0,
            l[1]
        );
        if errors[i].iter().any(|e| *e > 0) {
            println!("{label:>20}   errors: http {}, llm {}", errors[i][0], errors[i][1]);
        }
        rows.push(json!({
            "variant": label,
            "http_rps": m[0], "http_share": share[0], "http_p50_ms": l[0], "http_errors": errors[i][0],
            "llm_rps": m[1], "llm_share": share[1], "llm_p50_ms": l[1], "llm_errors": errors[i][1],
            "http_rounds": rps[i][0], "llm_rounds": rps[i][1],
        }));
    }
    let exported = sink.load(std::sync::atomic::Ordering::Relaxed);
    println!("OTLP export requests received by the sink: {exported}");
    let summary = json!({
        "seconds": a.seconds, "rounds": a.rounds, "connections": a.connections,
        "variants": rows, "otlp_exports": exported,
    });
    let out = if a.out.is_absolute() { a.out.clone() } else { root.join(&a.out) };
    if let Some(d) = out.parent() {
        std::fs::create_dir_all(d)?;
    }
    std::fs::write(&out, serde_json::to_string_pretty(&summary)?)?;
    println!("results written to {}", out.display());
    drop((gateways, sim));
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
