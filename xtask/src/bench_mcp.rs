//! `cargo xtask bench mcp`: tools/call through nodegate vs direct to the same MCP server, side
//! by side in one run (closed loop, then a fixed 500 calls/s), and tools/list over 10 federated
//! servers with their lists cached. The servers are `mcp-sim` (fast, so the gateway's cost shows);
//! nodegate runs with auditing on. Requests are 2026-07-28 (stateless) JSON-RPC over HTTP/1.1.
use std::{
    path::PathBuf,
    process::{Command, Stdio},
};

use anyhow::Context as _;
use bytes::Bytes;
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
    #[arg(long, default_value = "bench-results/mcp.json")]
    out: PathBuf,
}

const SERVERS: u16 = 10;
const SIM_PORT: u16 = 18410;
const GW: &str = "http://127.0.0.1:18480/mcp";

fn request(id: u64, method: &str, params: serde_json::Value) -> Bytes {
    let mut p = params;
    p["_meta"] = json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientInfo": {"name": "bench", "version": "1"},
        "io.modelcontextprotocol/clientCapabilities": {},
    });
    Bytes::from(json!({"jsonrpc": "2.0", "id": id, "method": method, "params": p}).to_string())
}

fn row(name: &str, r: &Run) -> serde_json::Value {
    eprintln!(
        "{name:<28} {:>9.0} req/s  p50 {:>7.3} ms  p99 {:>7.3} ms  errors {}",
        r.rps, r.p50_ms, r.p99_ms, r.errors
    );
    json!({"run": name, "rps": r.rps, "p50_ms": r.p50_ms, "p99_ms": r.p99_ms, "errors": r.errors})
}

pub fn run(a: Args) -> anyhow::Result<()> {
    crate::cargo(&["build", "--release", "--bins"])?;
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let bins = root.join("target/release");
    let dir = std::env::temp_dir().join(format!("nodegate-bench-mcp-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut sims = Vec::new();
    let mut servers = String::new();
    for i in 0..SERVERS {
        let addr = format!("127.0.0.1:{}", SIM_PORT + i);
        sims.push(Killed(
            Command::new(bins.join("mcp-sim"))
                .args([addr.as_str(), &format!("s{i}"), "--tools", "20"])
                .stdout(Stdio::null())
                .spawn()
                .context("mcp-sim")?,
        ));
        servers.push_str(&format!("    - {{ name: s{i}, url: \"http://{addr}/mcp\" }}\n"));
    }
    let cfg = dir.join("nodegate.yaml");
    std::fs::write(
        &cfg,
        format!(
            "listeners: {{ explicit: 127.0.0.1:18480, transparent: null }}\nadmin: {{ address: 127.0.0.1:18490 }}\n\
             log: {{ level: warn }}\naudit: {{ path: {} }}\nmcp:\n  list_ttl: 1h\n  servers:\n{servers}",
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
        wait_http("http://127.0.0.1:18490/healthz").await?;
        for i in 0..SERVERS {
            wait_http(&format!("http://127.0.0.1:{}/", SIM_PORT + i)).await?;
        }
        let direct = format!("http://127.0.0.1:{SIM_PORT}/mcp");
        // Ten servers share tool names, so nodegate shows s0's tool_3 as s0_tool_3.
        let call_direct = request(7, "tools/call", json!({"name": "tool_3", "arguments": {"q": "bench"}}));
        let call_gw = request(7, "tools/call", json!({"name": "s0_tool_3", "arguments": {"q": "bench"}}));
        let list = request(8, "tools/list", json!({}));
        // Warm: discover every server and fill the list cache.
        let warm = load(GW, list.clone(), 1, 1, None).await;
        anyhow::ensure!(warm.errors == 0 && warm.rps > 0.0, "tools/list through nodegate failed while warming");

        // Fixed-rate runs first: a closed-loop run leaves work behind (the audit writer drains
        // tens of thousands of records), which would land in whatever is measured next.
        let mut runs = Vec::new();
        let d500 = load(&direct, call_direct.clone(), 32, a.seconds, Some(500.0)).await;
        runs.push(row("500/s direct", &d500));
        let n500 = load(GW, call_gw.clone(), 32, a.seconds, Some(500.0)).await;
        runs.push(row("500/s nodegate", &n500));
        let list_direct = load(&direct, list.clone(), 8, a.seconds, Some(200.0)).await;
        runs.push(row("tools/list 1 server direct", &list_direct));
        let list_gw = load(GW, list.clone(), 8, a.seconds, Some(200.0)).await;
        runs.push(row("tools/list 10 servers ngate", &list_gw));
        let (mut d_rps, mut n_rps) = (Vec::new(), Vec::new());
        for round in 0..a.rounds {
            let d = load(&direct, call_direct.clone(), a.connections, a.seconds, None).await;
            runs.push(row(&format!("closed direct #{round}"), &d));
            tokio::time::sleep(std::time::Duration::from_secs(2)).await;
            let n = load(GW, call_gw.clone(), a.connections, a.seconds, None).await;
            runs.push(row(&format!("closed nodegate #{round}"), &n));
            tokio::time::sleep(std::time::Duration::from_secs(2)).await;
            d_rps.push(d.rps);
            n_rps.push(n.rps);
        }
        let ratio = pct(&mut n_rps.clone(), 0.5) / pct(&mut d_rps.clone(), 0.5);
        let added_p99 = n500.p99_ms - d500.p99_ms;
        let summary = json!({
            "connections": a.connections, "seconds": a.seconds, "rounds": a.rounds,
            "throughput_ratio_median": ratio,
            "direct_rps_median": pct(&mut d_rps, 0.5), "nodegate_rps_median": pct(&mut n_rps, 0.5),
            "fixed_500": {"direct_p50_ms": d500.p50_ms, "direct_p99_ms": d500.p99_ms, "nodegate_p50_ms": n500.p50_ms,
                          "nodegate_p99_ms": n500.p99_ms, "added_p99_ms": added_p99},
            "tools_list_10_servers_cached": {"p50_ms": list_gw.p50_ms, "p99_ms": list_gw.p99_ms, "errors": list_gw.errors},
            "nodegate_rss_mb": rss_mb(ng.0.id()),
            "runs": runs,
        });
        eprintln!(
            "\nthroughput nodegate/direct {ratio:.3}; at 500 calls/s added p99 {added_p99:.3} ms (target <= 1); \
             tools/list over 10 cached servers p99 {:.3} ms (target <= 2)",
            list_gw.p99_ms
        );
        if let Some(parent) = a.out.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&a.out, serde_json::to_string_pretty(&summary)?)?;
        eprintln!("wrote {}", a.out.display());
        anyhow::Ok(())
    })?;
    drop(ng);
    drop(sims);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
