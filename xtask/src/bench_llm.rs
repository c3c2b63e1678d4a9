//! `cargo xtask bench llm`: a 1 KB chat completion, non-streaming and streaming (100 chunks), 32
//! connections, against the provider simulator: direct, through nodegate (usage parsing and
//! budgets on), through a second nodegate exporting a span per call and per upstream attempt at
//! 100% sampling (OTLP/HTTP to an in-process sink), and through LiteLLM's proxy (when
//! installed), side by side in one run. Reports
//! requests per second, p50/p99 latency, added latency per streamed chunk, added p99 at a fixed
//! 1,000 requests per second, and each proxy's resident memory.
use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use serde_json::json;

#[derive(clap::Args)]
pub struct Args {
    /// Seconds per closed-loop run.
    #[arg(long, default_value_t = 8)]
    seconds: u64,
    /// Concurrent connections.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// LiteLLM's `litellm` executable (skipped, and said so, when missing).
    #[arg(long, default_value = "/var/cache/nodegate/litellm-venv/bin/litellm")]
    litellm: PathBuf,
    #[arg(long, default_value = "bench-results/llm.json")]
    out: PathBuf,
}

pub(crate) struct Killed(pub(crate) Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn rss_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

async fn one(client: &HttpClient, url: &str, body: &Bytes) -> anyhow::Result<(Duration, usize)> {
    let start = Instant::now();
    let req = hyper::Request::post(url)
        .header("content-type", "application/json")
        .header("authorization", "Bearer sk-bench-agent-0123456789abcdef0123456789abcdef")
        .body(Full::new(body.clone()))?;
    let resp = client.request(req).await?;
    if !resp.status().is_success() {
        bail!("status {}", resp.status());
    }
    let bytes = resp.into_body().collect().await?.to_bytes();
    // A response only counts when it is whole: no error event, and a stream ends with [DONE]
    // after all its chunks (a stream cut short would look fast).
    let text = String::from_utf8_lossy(&bytes);
    if text.contains("\"error\"") {
        bail!("error in the response body");
    }
    if text.starts_with("data:") && (!text.contains("[DONE]") || text.matches("\"content\"").count() < 100) {
        bail!("incomplete stream");
    }
    Ok((start.elapsed(), bytes.len()))
}

pub(crate) struct Run {
    pub(crate) rps: f64,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) errors: usize,
}

pub(crate) fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(((v.len() as f64 - 1.0) * p).round() as usize).copied().unwrap_or(0.0)
}

/// Closed loop: `conns` workers send back to back for `secs`. With `rate`, an open loop instead:
/// each worker sends on a fixed schedule; a request sent late because its predecessor overran is
/// measured from its scheduled time.
pub(crate) async fn load(url: &str, body: Bytes, conns: usize, secs: u64, rate: Option<f64>) -> Run {
    let client: HttpClient = Client::builder(TokioExecutor::new()).pool_max_idle_per_host(conns).build_http();
    let deadline = Instant::now() + Duration::from_secs(secs);
    let url: Arc<str> = url.into();
    let mut tasks = Vec::new();
    for w in 0..conns {
        let (client, url, body) = (client.clone(), url.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0;
            let interval = rate.map(|r| Duration::from_secs_f64(conns as f64 / r));
            // An open loop measures steady state: each worker's connection is opened (and the
            // proxy's per-connection work done) by one unmeasured request first.
            if interval.is_some() {
                let _ = one(&client, &url, &body).await;
            }
            let mut next =
                Instant::now() + interval.map_or(Duration::ZERO, |i| i.mul_f64(w as f64 / conns as f64));
            while Instant::now() < deadline {
                // Open loop: a request that could not start on time because the previous one
                // was still running counts from its scheduled time (no coordinated omission);
                // one that waited for its slot counts from when it was sent, so the timer's
                // wake-up jitter (about a millisecond) is not charged to the system measured.
                let behind = interval.is_some() && Instant::now() > next;
                if interval.is_some() && !behind {
                    tokio::time::sleep_until(next.into()).await;
                }
                let scheduled = next;
                match one(&client, &url, &body).await {
                    Ok((d, _)) => {
                        lat.push(if behind { scheduled.elapsed().max(d) } else { d }.as_secs_f64() * 1e3)
                    }
                    Err(_) => errors += 1,
                }
                if let Some(i) = interval {
                    next += i;
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

pub(crate) async fn wait_http(url: &str) -> anyhow::Result<()> {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    for _ in 0..600 {
        if let Ok(uri) = url.parse::<hyper::Uri>()
            && let Ok(r) = client.get(uri).await
            && r.status().as_u16() < 500
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("{url} did not come up in 60 s")
}

pub fn run(a: Args) -> anyhow::Result<()> {
    crate::cargo(&["build", "--release", "--bins"])?;
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let bins = root.join("target/release");
    let dir = std::env::temp_dir().join(format!("nodegate-bench-llm-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let sim = Killed(
        Command::new(bins.join("llm-sim"))
            .args(["127.0.0.1:18301", "sim", "--tokens", "100"])
            .stdout(Stdio::null())
            .spawn()
            .context("llm-sim")?,
    );
    let write_cfg = |name: &str, port: u16, admin: u16, extra: &str| -> anyhow::Result<PathBuf> {
        let cfg = dir.join(name);
        std::fs::write(
            &cfg,
            format!(
                r#"
listeners: {{ explicit: 127.0.0.1:{port}, transparent: null }}
admin: {{ address: 127.0.0.1:{admin} }}
log: {{ level: warn }}
audit: {{ path: "{}/{name}.audit.log" }}
{extra}
identities:
  - {{ name: bench-agent, api_keys: ["sk-bench-agent-0123456789abcdef0123456789abcdef"] }}
llm:
  providers:
    - {{ name: sim, kind: openai, endpoint: "http://127.0.0.1:18301", credentials: {{ env: BENCH_KEY }} }}
  models:
    - {{ name: bench, targets: [ {{ provider: sim, model: gpt-4o-mini }} ] }}
  prices:
    gpt-4o-mini: {{ input: 0.15, output: 0.6 }}
  budgets:
    - {{ name: bench, selector: {{ principals: [bench-agent] }}, tokens_per_minute: 1000000000000, requests_per_minute: 1000000000 }}
"#,
                dir.display()
            ),
        )?;
        Ok(cfg)
    };
    let start_ng = |cfg: PathBuf| -> anyhow::Result<Killed> {
        Ok(Killed(
            Command::new(bins.join("nodegate"))
                .args(["run", "--config"])
                .arg(&cfg)
                .env("BENCH_KEY", "sk-sim")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("nodegate")?,
        ))
    };
    let ng = start_ng(write_cfg("nodegate.yaml", 18380, 18390, "")?)?;
    let traced = start_ng(write_cfg(
        "traced.yaml",
        18381,
        18391,
        "traces: { endpoint: \"http://127.0.0.1:18450\", sample_ratio: 1.0 }",
    )?)?;
    let litellm = if a.litellm.exists() {
        let lcfg = dir.join("litellm.yaml");
        std::fs::write(
            &lcfg,
            "model_list:\n  - model_name: bench\n    litellm_params:\n      model: openai/gpt-4o-mini\n      api_base: http://127.0.0.1:18301/v1\n      api_key: sk-sim\n",
        )?;
        Some(Killed(
            Command::new(&a.litellm)
                .args(["--config"])
                .arg(&lcfg)
                .args(["--port", "18400", "--num_workers", "1"])
                .env("LITELLM_MASTER_KEY", "sk-bench-agent-0123456789abcdef0123456789abcdef")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("litellm")?,
        ))
    } else {
        eprintln!(
            "LiteLLM not found at {} (python3 -m venv ... && pip install 'litellm[proxy]'): its column is skipped",
            a.litellm.display()
        );
        None
    };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let sink_spans = rt.block_on(otlp_sink("127.0.0.1:18450"))?;
    let prompt = "lorem ipsum dolor sit amet ".repeat(38); // ~1 KB of prompt
    let body = |stream: bool| {
        Bytes::from(json!({"model": "bench", "stream": stream, "max_tokens": 100, "messages": [{"role": "user", "content": prompt}]}).to_string())
    };
    let mut targets = vec![
        ("direct", "http://127.0.0.1:18301/v1/chat/completions"),
        ("nodegate", "http://127.0.0.1:18380/v1/chat/completions"),
        ("traced", "http://127.0.0.1:18381/v1/chat/completions"),
    ];
    if litellm.is_some() {
        targets.push(("litellm", "http://127.0.0.1:18400/v1/chat/completions"));
    }
    let results = rt.block_on(async {
        wait_http("http://127.0.0.1:18301/sim/count").await?;
        wait_http("http://127.0.0.1:18390/readyz").await?;
        wait_http("http://127.0.0.1:18391/readyz").await?;
        if litellm.is_some() {
            wait_http("http://127.0.0.1:18400/health/liveliness").await?;
        }
        let mut out = Vec::new();
        for stream in [false, true] {
            for (name, url) in &targets {
                // Direct calls use the provider model name; the proxies map `bench` themselves.
                let b = if *name == "direct" {
                    Bytes::from(
                        String::from_utf8_lossy(&body(stream)).replace("\"bench\"", "\"gpt-4o-mini\""),
                    )
                } else {
                    body(stream)
                };
                let _ = load(url, b.clone(), a.connections, 1, None).await; // warm-up
                let r = load(url, b, a.connections, a.seconds, None).await;
                eprintln!(
                    "{:<9} {:<8} {:>8.0} req/s  p50 {:>7.2} ms  p99 {:>7.2} ms  errors {}",
                    if stream { "stream" } else { "json" },
                    name,
                    r.rps,
                    r.p50_ms,
                    r.p99_ms,
                    r.errors
                );
                out.push((stream, name.to_string(), r));
            }
        }
        let mut fixed_stream = Vec::new();
        for (name, url) in targets.iter().take(2) {
            let b = if *name == "direct" {
                Bytes::from(String::from_utf8_lossy(&body(true)).replace("\"bench\"", "\"gpt-4o-mini\""))
            } else {
                body(true)
            };
            let r = load(url, b, a.connections, a.seconds, Some(50.0)).await;
            eprintln!(
                "stream50  {:<8} {:>8.0} req/s  p50 {:>7.2} ms  p99 {:>7.2} ms  errors {}",
                name, r.rps, r.p50_ms, r.p99_ms, r.errors
            );
            fixed_stream.push((name.to_string(), r));
        }
        let mut fixed = Vec::new();
        for (name, url) in targets.iter().take(2) {
            let b = if *name == "direct" {
                Bytes::from(String::from_utf8_lossy(&body(false)).replace("\"bench\"", "\"gpt-4o-mini\""))
            } else {
                body(false)
            };
            let r = load(url, b, a.connections, a.seconds, Some(1000.0)).await;
            eprintln!(
                "1000/s    {:<8} {:>8.0} req/s  p50 {:>7.2} ms  p99 {:>7.2} ms  errors {}",
                name, r.rps, r.p50_ms, r.p99_ms, r.errors
            );
            fixed.push((name.to_string(), r));
        }
        anyhow::Ok((out, fixed, fixed_stream))
    })?;
    let (runs, fixed, fixed_stream) = results;
    let get =
        |stream: bool, name: &str| runs.iter().find(|(s, n, _)| *s == stream && n == name).map(|(_, _, r)| r);
    let ng_rss = rss_mb(ng.0.id());
    let lite_rss = litellm.as_ref().map(|l| {
        // LiteLLM runs its server in child processes; count the whole tree.
        let mut total = rss_mb(l.0.id());
        if let Ok(out) = Command::new("pgrep").args(["-P", &l.0.id().to_string()]).output() {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace().filter_map(|p| p.parse().ok())
            {
                total += rss_mb(pid);
            }
        }
        total
    });
    println!(
        "\nLLM benchmark: {} connections, {} s per run, 100-token completions of a 1 KB prompt",
        a.connections, a.seconds
    );
    println!("{:<8} {:<9} {:>10} {:>10} {:>10} {:>7}", "body", "path", "req/s", "p50 ms", "p99 ms", "errors");
    for (s, n, r) in &runs {
        println!(
            "{:<8} {:<9} {:>10.0} {:>10.2} {:>10.2} {:>7}",
            if *s { "stream" } else { "json" },
            n,
            r.rps,
            r.p50_ms,
            r.p99_ms,
            r.errors
        );
    }
    let mut summary = json!({"connections": a.connections, "seconds": a.seconds, "nodegate_rss_mb": ng_rss, "litellm_rss_mb": lite_rss});
    if let [(_, d), (_, n)] = &fixed_stream[..] {
        let per_chunk_p99 = (n.p99_ms - d.p99_ms) * 1000.0 / 100.0;
        let per_chunk_p50 = (n.p50_ms - d.p50_ms) * 1000.0 / 100.0;
        println!(
            "added latency per streamed chunk at 50 streams/s (stream time over direct / 100 chunks): p50 {per_chunk_p50:.1} us, p99 {per_chunk_p99:.1} us (target p99 <= 100 us)"
        );
        summary["added_per_chunk_us"] = json!({"p50": per_chunk_p50, "p99": per_chunk_p99});
    }
    if let (Some(d), Some(n)) = (get(true, "direct"), get(true, "nodegate")) {
        let saturated = (n.p99_ms - d.p99_ms) * 1000.0 / 100.0;
        println!(
            "(closed loop at saturation the same difference is {saturated:.1} us per chunk: CPU queueing on shared cores)"
        );
        summary["added_per_chunk_p99_us_saturated"] = json!(saturated);
    }
    if let [(_, d), (_, n)] = &fixed[..] {
        let added = n.p99_ms - d.p99_ms;
        println!(
            "at 1,000 req/s: direct p99 {:.2} ms, nodegate p99 {:.2} ms: added {:.2} ms (target <= 1 ms)",
            d.p99_ms, n.p99_ms, added
        );
        summary["fixed_rate_1000"] = json!({"direct_p99_ms": d.p99_ms, "nodegate_p99_ms": n.p99_ms, "added_p99_ms": added, "direct_rps": d.rps, "nodegate_rps": n.rps});
    }
    for stream in [false, true] {
        if let (Some(n), Some(t)) = (get(stream, "nodegate"), get(stream, "traced")) {
            let cost = 1.0 - t.rps / n.rps.max(0.001);
            println!(
                "{} throughput cost of tracing every call (100% sampled, exported): {:.1}% (target <= 10%)",
                if stream { "stream" } else { "json" },
                cost * 100.0
            );
            summary[if stream { "tracing_cost_stream" } else { "tracing_cost_json" }] = json!(cost);
        }
    }
    let received = sink_spans.load(std::sync::atomic::Ordering::Relaxed);
    println!("OTLP sink received {received} export requests from the traced nodegate");
    summary["otlp_export_requests"] = json!(received);
    for stream in [false, true] {
        if let (Some(n), Some(l)) = (get(stream, "nodegate"), get(stream, "litellm")) {
            let ratio = n.rps / l.rps.max(0.001);
            println!(
                "{} throughput nodegate / LiteLLM: {ratio:.1}x (target >= 10x)",
                if stream { "stream" } else { "json" }
            );
            summary[if stream { "ratio_stream" } else { "ratio_json" }] = json!(ratio);
        }
    }
    println!(
        "resident memory: nodegate {ng_rss:.0} MB{}",
        lite_rss.map(|r| format!(", LiteLLM {r:.0} MB")).unwrap_or_default()
    );
    summary["runs"] = json!(runs.iter().map(|(s, n, r)| json!({"stream": s, "path": n, "rps": r.rps, "p50_ms": r.p50_ms, "p99_ms": r.p99_ms, "errors": r.errors})).collect::<Vec<_>>());
    let out = if a.out.is_absolute() { a.out.clone() } else { root.join(&a.out) };
    if let Some(d) = out.parent() {
        std::fs::create_dir_all(d)?;
    }
    std::fs::write(&out, serde_json::to_string_pretty(&summary)?)?;
    println!("results written to {}", out.display());
    drop((sim, ng, traced, litellm));
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// A stand-in OTLP/HTTP receiver: answers every export `200` with an empty
/// `ExportTraceServiceResponse` and counts the requests.
pub(crate) async fn otlp_sink(addr: &str) -> anyhow::Result<Arc<std::sync::atomic::AtomicU64>> {
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("bind {addr}"))?;
    let count = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let c = count.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let c = c.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let c = c.clone();
                    async move {
                        let _ = req.into_body().collect().await;
                        c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        hyper::Response::builder()
                            .header("content-type", "application/x-protobuf")
                            .body(Full::new(Bytes::new()))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(count)
}
