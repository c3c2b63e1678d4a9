//! `cargo xtask bench a2a`: A2A SendMessage through nodegate vs direct to the same agent, side by
//! side in one run (a fixed 1,000 messages/s, then closed-loop rounds interleaved), and the
//! added latency per streamed event (SendStreamingMessage answered with N status updates, read
//! whole, direct vs through nodegate). Each nodegate figure is also taken bridged: a REST
//! (HTTP+JSON) client through nodegate to the JSON-RPC agent, every request, answer and event
//! translated. The agent is `a2a-sim` (fast, so the gateway's cost shows); nodegate runs with
//! auditing on.
use std::{
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use serde_json::json;

use crate::bench_llm::{Killed, Run, load, pct, rss_mb, wait_http};

#[derive(clap::Args)]
pub struct Args {
    /// Seconds per run.
    #[arg(long, default_value_t = 6)]
    seconds: u64,
    /// Concurrent connections in the closed-loop runs.
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// Rounds of direct/nodegate closed-loop runs, interleaved.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Status events per streamed answer.
    #[arg(long, default_value_t = 200)]
    events: usize,
    #[arg(long, default_value = "bench-results/a2a.json")]
    out: PathBuf,
}

const SIM: &str = "127.0.0.1:18520";
const GW: &str = "http://127.0.0.1:18580/a2a/sim/";
/// The same agent through nodegate's REST interface (bridged to its JSON-RPC).
const REST: &str = "http://127.0.0.1:18580/a2a/sim/rest";

fn rest_message() -> Bytes {
    Bytes::from(
        json!({"message": {"messageId": "m1", "role": "ROLE_USER", "parts": [{"text": "benchmark hand-off"}]}})
            .to_string(),
    )
}

fn message(method: &str) -> Bytes {
    Bytes::from(
        json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": {"message": {
            "messageId": "m1", "role": "ROLE_USER", "parts": [{"text": "benchmark hand-off"}]}}})
        .to_string(),
    )
}

fn row(name: &str, r: &Run) -> serde_json::Value {
    eprintln!(
        "{name:<26} {:>9.0} msg/s  p50 {:>7.3} ms  p99 {:>7.3} ms  errors {}",
        r.rps, r.p50_ms, r.p99_ms, r.errors
    );
    json!({"run": name, "rps": r.rps, "p50_ms": r.p50_ms, "p99_ms": r.p99_ms, "errors": r.errors})
}

/// Mean seconds to read `n` streamed answers whole, one after another.
async fn streams(url: &str, body: Bytes, n: usize) -> anyhow::Result<f64> {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut took = Vec::with_capacity(n);
    for _ in 0..n {
        let req = hyper::Request::post(url)
            .header("content-type", "application/json")
            .header("a2a-version", "1.0")
            .body(Full::new(body.clone()))?;
        let t = Instant::now();
        let resp = client.request(req).await?;
        let bytes = resp.into_body().collect().await?.to_bytes();
        took.push(t.elapsed().as_secs_f64());
        anyhow::ensure!(bytes.windows(20).any(|w| w == b"TASK_STATE_COMPLETED"), "a stream did not complete");
    }
    Ok(pct(&mut took, 0.5))
}

pub fn run(a: Args) -> anyhow::Result<()> {
    crate::cargo(&["build", "--release", "--bins"])?;
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let bins = root.join("target/release");
    let dir = std::env::temp_dir().join(format!("nodegate-bench-a2a-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let sim = Killed(
        Command::new(bins.join("a2a-sim"))
            .args([SIM, "--events", &a.events.to_string()])
            .stdout(Stdio::null())
            .spawn()
            .context("a2a-sim")?,
    );
    let cfg = dir.join("nodegate.yaml");
    std::fs::write(
        &cfg,
        format!(
            "listeners: {{ explicit: 127.0.0.1:18580, transparent: null }}\nadmin: {{ address: 127.0.0.1:18590 }}\n\
             log: {{ level: warn }}\naudit: {{ path: {} }}\na2a:\n  agents: [{{ name: sim, url: \"http://{SIM}\" }}]\n",
            dir.join("audit.log").display()
        ),
    )?;
    let ng = Killed(
        Command::new(bins.join("nodegate"))
            .args(["run", "--config"])
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("nodegate")?,
    );
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        wait_http("http://127.0.0.1:18590/healthz").await?;
        wait_http(&format!("http://{SIM}/.well-known/agent-card.json")).await?;
        let direct = format!("http://{SIM}/");
        let send = message("SendMessage");
        let warm = load(GW, send.clone(), 1, 1, None).await;
        anyhow::ensure!(warm.errors == 0 && warm.rps > 0.0, "SendMessage through nodegate failed while warming");

        let bridged_url = format!("{REST}/message:send");
        let (rest_send, rest_stream) = (rest_message(), rest_message());
        let warm = load(&bridged_url, rest_send.clone(), 1, 1, None).await;
        anyhow::ensure!(warm.errors == 0 && warm.rps > 0.0, "a bridged REST send through nodegate failed while warming");

        let mut runs = Vec::new();
        let d1k = load(&direct, send.clone(), 16, a.seconds, Some(1000.0)).await;
        runs.push(row("1000/s direct", &d1k));
        let n1k = load(GW, send.clone(), 16, a.seconds, Some(1000.0)).await;
        runs.push(row("1000/s nodegate", &n1k));
        let b1k = load(&bridged_url, rest_send.clone(), 16, a.seconds, Some(1000.0)).await;
        runs.push(row("1000/s bridged", &b1k));
        let (mut d_rps, mut n_rps, mut b_rps) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..a.rounds {
            let d = load(&direct, send.clone(), a.connections, a.seconds, None).await;
            runs.push(row(&format!("closed direct #{round}"), &d));
            tokio::time::sleep(Duration::from_secs(2)).await;
            let n = load(GW, send.clone(), a.connections, a.seconds, None).await;
            runs.push(row(&format!("closed nodegate #{round}"), &n));
            tokio::time::sleep(Duration::from_secs(2)).await;
            let b = load(&bridged_url, rest_send.clone(), a.connections, a.seconds, None).await;
            runs.push(row(&format!("closed bridged #{round}"), &b));
            tokio::time::sleep(Duration::from_secs(2)).await;
            d_rps.push(d.rps);
            n_rps.push(n.rps);
            b_rps.push(b.rps);
        }
        // Streams: interleaved rounds, median of each.
        let (mut sd, mut sn, mut sb) = (Vec::new(), Vec::new(), Vec::new());
        let stream_body = message("SendStreamingMessage");
        for _ in 0..3 {
            sd.push(streams(&direct, stream_body.clone(), 30).await?);
            sn.push(streams(GW, stream_body.clone(), 30).await?);
            sb.push(streams(&format!("{REST}/message:stream"), rest_stream.clone(), 30).await?);
        }
        let (sd, sn, sb) = (pct(&mut sd, 0.5), pct(&mut sn, 0.5), pct(&mut sb, 0.5));
        let per_event_us = (sn - sd) / a.events as f64 * 1e6;
        let bridged_per_event_us = (sb - sd) / a.events as f64 * 1e6;
        let ratio = pct(&mut n_rps.clone(), 0.5) / pct(&mut d_rps.clone(), 0.5);
        let bridged_ratio = pct(&mut b_rps.clone(), 0.5) / pct(&mut d_rps.clone(), 0.5);
        let added_p99 = n1k.p99_ms - d1k.p99_ms;
        let bridged_added_p99 = b1k.p99_ms - d1k.p99_ms;
        let summary = json!({
            "connections": a.connections, "seconds": a.seconds, "rounds": a.rounds, "events": a.events,
            "throughput_ratio_median": ratio, "bridged_throughput_ratio_median": bridged_ratio,
            "direct_rps_median": pct(&mut d_rps, 0.5), "nodegate_rps_median": pct(&mut n_rps, 0.5),
            "bridged_rps_median": pct(&mut b_rps, 0.5),
            "fixed_1000": {"direct_p50_ms": d1k.p50_ms, "direct_p99_ms": d1k.p99_ms, "nodegate_p50_ms": n1k.p50_ms,
                           "nodegate_p99_ms": n1k.p99_ms, "added_p99_ms": added_p99,
                           "bridged_p50_ms": b1k.p50_ms, "bridged_p99_ms": b1k.p99_ms,
                           "bridged_added_p99_ms": bridged_added_p99,
                           "direct_rps": d1k.rps, "nodegate_rps": n1k.rps, "bridged_rps": b1k.rps},
            "stream": {"direct_ms": sd * 1e3, "nodegate_ms": sn * 1e3, "added_us_per_event": per_event_us,
                       "bridged_ms": sb * 1e3, "bridged_added_us_per_event": bridged_per_event_us},
            "nodegate_rss_mb": rss_mb(ng.0.id()),
            "runs": runs,
        });
        eprintln!(
            "\nthroughput nodegate/direct {ratio:.3} (bridged {bridged_ratio:.3}); at 1,000 messages/s added p99 \
             {added_p99:.3} ms, bridged {bridged_added_p99:.3} ms (target <= 1); stream of {} events: direct {:.2} ms, \
             nodegate {:.2} ms, bridged {:.2} ms: added {per_event_us:.1} us per event, bridged \
             {bridged_per_event_us:.1} (target <= 50)",
            a.events,
            sd * 1e3,
            sn * 1e3,
            sb * 1e3
        );
        if let Some(parent) = a.out.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&a.out, serde_json::to_string_pretty(&summary)?)?;
        eprintln!("wrote {}", a.out.display());
        anyhow::Ok(())
    })?;
    drop(ng);
    drop(sim);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
