//! `cargo xtask bench inference`: open-loop Poisson arrivals against simulated servers of unequal
//! speed (tests/support/vllm_sim.rs), through nodegate, for every routing strategy side by side
//! in one run and three workloads: shared long prefixes (many tenants, each with its own system
//! prompt), mixed short/long prompts, and bursts. Reports TTFT p50/p99, end-to-end p99, output
//! tokens/s and goodput (requests meeting TTFT <= 500 ms and TPOT <= 50 ms per second).
use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use serde_json::json;

#[derive(clap::Args)]
pub struct Args {
    /// Seconds of arrivals per (workload, strategy).
    #[arg(long, default_value_t = 12)]
    seconds: u64,
    #[arg(long, default_value = "bench-results/inference.json")]
    out: PathBuf,
}

const SPEEDS: [f64; 4] = [1.0, 1.0, 1.6, 2.5];
const STRATEGIES: [&str; 5] = ["scorer", "round-robin", "random", "least-request", "power-of-two"];
const TTFT_SLO_MS: f64 = 500.0;
const TPOT_SLO_MS: f64 = 50.0;

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// xorshift: reproducible arrivals without a dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
    fn exp(&mut self, rate: f64) -> Duration {
        Duration::from_secs_f64(-(1.0 - self.next()).ln() / rate)
    }
}

#[derive(Clone, Copy)]
enum Workload {
    SharedPrefix,
    Mixed,
    Bursts,
}

impl Workload {
    fn name(self) -> &'static str {
        match self {
            Self::SharedPrefix => "shared-prefix",
            Self::Mixed => "mixed",
            Self::Bursts => "bursts",
        }
    }

    /// Arrival offsets and (prompt, max_tokens) for each request.
    fn requests(self, secs: u64, rng: &mut Rng) -> Vec<(Duration, String, u32)> {
        let mut out = Vec::new();
        let end = Duration::from_secs(secs);
        let words = |prefix: &str, n: usize| -> String { (0..n).map(|i| format!("{prefix}{i} ")).collect() };
        match self {
            Self::SharedPrefix => {
                let mut t = Duration::ZERO;
                let mut k = 0;
                while t < end {
                    t += rng.exp(22.0);
                    let tenant = (rng.next() * 16.0) as usize;
                    out.push((
                        t,
                        format!(
                            "{}{}",
                            words(&format!("tenant{tenant}-policy"), 600),
                            words(&format!("q{k}-"), 20)
                        ),
                        24,
                    ));
                    k += 1;
                }
            }
            Self::Mixed => {
                let mut t = Duration::ZERO;
                let mut k = 0;
                while t < end {
                    t += rng.exp(14.0);
                    if rng.next() < 0.5 {
                        out.push((t, words(&format!("short{k}-"), 40), 8));
                    } else {
                        out.push((t, words(&format!("long{k}-"), 800), 48));
                    }
                    k += 1;
                }
            }
            Self::Bursts => {
                for s in 0..secs {
                    for b in 0..14 {
                        let t = Duration::from_secs(s) + Duration::from_millis(b * 5);
                        out.push((t, words(&format!("burst{s}-{b}-"), 60), 16));
                    }
                }
            }
        }
        out
    }
}

struct Sample {
    ttft_ms: f64,
    e2e_ms: f64,
    tokens: u64,
}

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

async fn stream_one(
    client: HttpClient,
    model: String,
    prompt: String,
    max_tokens: u32,
) -> anyhow::Result<Sample> {
    let body = json!({"model": model, "stream": true, "max_tokens": max_tokens, "messages": [{"role": "user", "content": prompt}]}).to_string();
    let start = Instant::now();
    let req = hyper::Request::post("http://127.0.0.1:18580/v1/chat/completions")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))?;
    let resp = client.request(req).await?;
    if !resp.status().is_success() {
        bail!("status {}", resp.status());
    }
    let mut body = resp.into_body();
    let mut ttft = None;
    let mut tokens = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame?;
        if let Some(d) = frame.data_ref() {
            let n = d.windows(9).filter(|w| w == b"\"content\"").count() as u64;
            if n > 0 && ttft.is_none() {
                ttft = Some(start.elapsed());
            }
            tokens += n;
        }
    }
    let e2e = start.elapsed();
    Ok(Sample { ttft_ms: ttft.unwrap_or(e2e).as_secs_f64() * 1e3, e2e_ms: e2e.as_secs_f64() * 1e3, tokens })
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(((v.len() as f64 - 1.0) * p).round() as usize).copied().unwrap_or(0.0)
}

async fn wait_http(url: &str) -> anyhow::Result<()> {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    for _ in 0..200 {
        if let Ok(uri) = url.parse::<hyper::Uri>()
            && let Ok(r) = client.get(uri).await
            && r.status().is_success()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("{url} did not come up")
}

async fn post(url: &str) {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    if let Ok(req) = hyper::Request::post(url).body(Full::new(Bytes::new())) {
        let _ = client.request(req).await;
    }
}

pub fn run(a: Args) -> anyhow::Result<()> {
    crate::cargo(&["build", "--release", "--bins"])?;
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let bins = root.join("target/release");
    let dir = std::env::temp_dir().join(format!("nodegate-bench-inference-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let addrs: Vec<String> = (0..SPEEDS.len()).map(|i| format!("127.0.0.1:{}", 18501 + i)).collect();
    let _sims: Vec<Killed> = addrs
        .iter()
        .zip(SPEEDS)
        .map(|(addr, speed)| {
            Command::new(bins.join("vllm-sim"))
                .args([
                    addr.as_str(),
                    "--speed",
                    &speed.to_string(),
                    "--cache-blocks",
                    "200",
                    "--prefill-us",
                    "200",
                    "--max-batch",
                    "8",
                ])
                .stdout(Stdio::null())
                .spawn()
                .map(Killed)
                .context("vllm-sim")
        })
        .collect::<Result<_, _>>()?;
    let endpoints: String = addrs.iter().map(|a| format!("        - {{ address: \"{a}\" }}\n")).collect();
    let pools: String = STRATEGIES
        .iter()
        .map(|s| format!("    - name: {s}\n      models: [{s}]\n      strategy: {s}\n      scrape_interval: 50ms\n      endpoints:\n{endpoints}"))
        .collect();
    let cfg = dir.join("nodegate.yaml");
    std::fs::write(
        &cfg,
        format!(
            "listeners: {{ explicit: 127.0.0.1:18580, transparent: null }}\nadmin: {{ address: 127.0.0.1:18590 }}\nlog: {{ level: warn }}\naudit: {{ path: \"{}/audit.log\" }}\ninference:\n  pools:\n{pools}",
            dir.display()
        ),
    )?;
    let _ng = Killed(
        Command::new(bins.join("nodegate"))
            .args(["run", "--config"])
            .arg(&cfg)
            .stdout(Stdio::null())
            .spawn()
            .context("nodegate")?,
    );
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let mut rows = Vec::new();
    rt.block_on(async {
        for a in &addrs {
            wait_http(&format!("http://{a}/sim/stats")).await?;
        }
        wait_http("http://127.0.0.1:18590/readyz").await?;
        let client: HttpClient = Client::builder(TokioExecutor::new()).pool_max_idle_per_host(256).build_http();
        for workload in [Workload::SharedPrefix, Workload::Mixed, Workload::Bursts] {
            for strategy in STRATEGIES {
                for a in &addrs {
                    post(&format!("http://{a}/sim/reset")).await;
                }
                let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
                let reqs = workload.requests(a.seconds, &mut rng);
                let n = reqs.len();
                let start = Instant::now();
                let mut tasks = Vec::with_capacity(n);
                for (at, prompt, max) in reqs {
                    tokio::time::sleep_until((start + at).into()).await;
                    tasks.push(tokio::spawn(stream_one(client.clone(), strategy.to_string(), prompt, max)));
                }
                let mut samples = Vec::new();
                let mut errors = 0;
                for t in tasks {
                    match t.await {
                        Ok(Ok(s)) => samples.push(s),
                        _ => errors += 1,
                    }
                }
                let wall = start.elapsed().as_secs_f64();
                let good = samples
                    .iter()
                    .filter(|s| s.ttft_ms <= TTFT_SLO_MS && (s.tokens <= 1 || (s.e2e_ms - s.ttft_ms) / (s.tokens - 1) as f64 <= TPOT_SLO_MS))
                    .count();
                let mut ttft: Vec<f64> = samples.iter().map(|s| s.ttft_ms).collect();
                let mut e2e: Vec<f64> = samples.iter().map(|s| s.e2e_ms).collect();
                let tokens: u64 = samples.iter().map(|s| s.tokens).sum();
                let row = json!({
                    "workload": workload.name(), "strategy": strategy, "requests": n, "errors": errors,
                    "ttft_p50_ms": pct(&mut ttft, 0.5), "ttft_p99_ms": pct(&mut ttft, 0.99), "e2e_p99_ms": pct(&mut e2e, 0.99),
                    "output_tokens_per_s": tokens as f64 / wall, "goodput_per_s": good as f64 / a.seconds as f64,
                });
                eprintln!("{:<14} {:<14} ttft p50 {:>8.1} p99 {:>8.1} ms  e2e p99 {:>8.1} ms  {:>6.0} tok/s  goodput {:>5.1}/s  errors {}",
                    workload.name(), strategy, row["ttft_p50_ms"].as_f64().unwrap_or(0.0), row["ttft_p99_ms"].as_f64().unwrap_or(0.0),
                    row["e2e_p99_ms"].as_f64().unwrap_or(0.0), row["output_tokens_per_s"].as_f64().unwrap_or(0.0), row["goodput_per_s"].as_f64().unwrap_or(0.0), errors);
                rows.push(row);
            }
        }
        anyhow::Ok(())
    })?;
    let get = |w: &str, s: &str, f: &str| {
        rows.iter()
            .find(|r| r["workload"] == w && r["strategy"] == s)
            .and_then(|r| r[f].as_f64())
            .unwrap_or(0.0)
    };
    println!(
        "\ninference routing: {} servers (speed factors {:?}), {} s of arrivals per run",
        SPEEDS.len(),
        SPEEDS,
        a.seconds
    );
    println!(
        "{:<14} {:<14} {:>10} {:>10} {:>10} {:>10} {:>9}",
        "workload", "strategy", "ttft p50", "ttft p99", "e2e p99", "tok/s", "goodput"
    );
    for r in &rows {
        println!(
            "{:<14} {:<14} {:>10.1} {:>10.1} {:>10.1} {:>10.0} {:>9.2}",
            r["workload"].as_str().unwrap_or(""),
            r["strategy"].as_str().unwrap_or(""),
            r["ttft_p50_ms"].as_f64().unwrap_or(0.0),
            r["ttft_p99_ms"].as_f64().unwrap_or(0.0),
            r["e2e_p99_ms"].as_f64().unwrap_or(0.0),
            r["output_tokens_per_s"].as_f64().unwrap_or(0.0),
            r["goodput_per_s"].as_f64().unwrap_or(0.0)
        );
    }
    let ttft_ratio = get("shared-prefix", "scorer", "ttft_p99_ms")
        / get("shared-prefix", "round-robin", "ttft_p99_ms").max(1e-9);
    let goodput_ratio = get("shared-prefix", "scorer", "goodput_per_s")
        / get("shared-prefix", "round-robin", "goodput_per_s").max(1e-9);
    println!(
        "\nshared-prefix: scorer TTFT p99 / round-robin = {ttft_ratio:.3} (target <= 0.333), goodput scorer / round-robin = {goodput_ratio:.2}x (target >= 1.5)"
    );
    let mut vs_lr = serde_json::Map::new();
    for w in ["shared-prefix", "mixed", "bursts"] {
        let r = get(w, "scorer", "goodput_per_s") / get(w, "least-request", "goodput_per_s").max(1e-9);
        println!("{w}: goodput scorer / least-request = {r:.3} (target >= 0.95)");
        vs_lr.insert(w.into(), json!(r));
    }
    let out = if a.out.is_absolute() { a.out.clone() } else { root.join(&a.out) };
    if let Some(d) = out.parent() {
        std::fs::create_dir_all(d)?;
    }
    std::fs::write(
        &out,
        serde_json::to_string_pretty(
            &json!({"rows": rows, "shared_prefix_ttft_p99_ratio_vs_rr": ttft_ratio, "shared_prefix_goodput_ratio_vs_rr": goodput_ratio, "goodput_vs_least_request": vs_lr}),
        )?,
    )?;
    println!("results written to {}", out.display());
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
