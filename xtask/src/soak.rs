//! `cargo xtask soak --minutes N`: mixed traffic through one nodegate on loopback (plain HTTP,
//! LLM plain and streaming, a pooled model server, MCP tool calls, A2A messages) for N minutes,
//! bounded in concurrency, while faults come and go on a one-minute cycle (Redis killed and
//! restarted, a model server's metrics turning to garbage, the audit disk full, the HTTP upstream
//! resetting every response mid-body) and the config is rewritten every 5 s. Two LLM upstreams
//! are faulty all along: one breaks every stream mid-response, one is slow. Each request is
//! checked for its documented outcome: complete answers where nothing is wrong; a stream whose
//! provider broke ends with a clean error event; a forwarded body whose upstream reset ends
//! broken (never as a short answer passing for complete). Reports, per 10 s window, requests and
//! errors by kind, p99, nodegate's RSS and open file descriptors; writes bench-results/soak.json;
//! fails when any request had another outcome than its documented one, when audit records do not
//! resume after the disk-full fault, or when RSS or descriptors grow more than 10% after warm-up.
use std::{
    collections::BTreeMap,
    io::{Read as _, Write as _},
    path::PathBuf,
    process::{Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use serde_json::json;

use crate::{
    bench_llm::{Killed, pct, rss_mb, wait_http},
    soak_faults::{AuditDisk, Fault, HTTP_BODY, Redis, http_upstream, model_server},
};

#[derive(clap::Args)]
pub struct Args {
    /// How long to run.
    #[arg(long, default_value_t = 10)]
    minutes: u64,
    /// Concurrent clients.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    #[arg(long, default_value = "bench-results/soak.json")]
    out: PathBuf,
}

const PROXY: &str = "127.0.0.1:19080";
const ADMIN: &str = "127.0.0.1:19090";
const KEY: &str = "sk-soak-agent-0123456789abcdef0123456789abcdef";
const WINDOW: u64 = 10;

/// The traffic kinds, each one request shape.
const KINDS: [&str; 8] = ["http", "llm", "llm_stream", "llm_slow", "llm_flaky", "pool", "mcp", "a2a"];

/// The documented outcome of a request that met a fault (an `Err` of [`one`] that is right):
/// a forwarded body whose upstream reset breaks off.
fn expected_error(kind: &str, fault: Fault, error: &str) -> bool {
    kind == "http"
        && fault == Fault::UpstreamReset
        && (error.starts_with("broken body") || error == "status 502")
}

struct Sample {
    at: f64,
    kind: &'static str,
    ms: f64,
    error: Option<String>,
    /// The fault in force when the request started.
    fault: Fault,
    /// ... and when it ended.
    fault_end: Fault,
}

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

fn chat(model: &str, stream: bool) -> Bytes {
    Bytes::from(
        json!({"model": model, "stream": stream, "max_tokens": 20,
               "messages": [{"role": "user", "content": "soak test prompt, short"}]})
        .to_string(),
    )
}

async fn post(
    client: &HttpClient,
    path: &str,
    body: Bytes,
    extra: &[(&str, &str)],
) -> Result<String, String> {
    let mut req = hyper::Request::post(format!("http://{PROXY}{path}"))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("authorization", format!("Bearer {KEY}"));
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(body)).map_err(|e| e.to_string())?;
    let resp = client.request(req).await.map_err(|e| format!("request: {e}"))?;
    let status = resp.status();
    let bytes = resp.into_body().collect().await.map_err(|_| "body broke".to_string())?.to_bytes();
    if !status.is_success() {
        return Err(format!("status {}", status.as_u16()));
    }
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Plain HTTP through the explicit proxy (absolute-form, a new connection each time): `path`
/// answered in full, or `broken body (n of N bytes)` when it ends short.
fn http_get(path: &str) -> Result<(), String> {
    let mut s = std::net::TcpStream::connect(PROXY).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(15))).map_err(|e| e.to_string())?;
    s.write_all(
        format!(
            "GET http://127.0.0.1:19601{path} HTTP/1.1\r\nhost: 127.0.0.1:19601\r\nconnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .map_err(|e| format!("write: {e}"))?;
    let mut out = Vec::new();
    // A reset or an early close both show as a short body below.
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out);
    if !text.starts_with("HTTP/1.1 200") {
        return Err(format!("status {}", text.get(9..12).unwrap_or("none")));
    }
    let body = text.find("\r\n\r\n").map_or(0, |at| out.len() - at - 4);
    if body == HTTP_BODY { Ok(()) } else { Err(format!("broken body ({body} of {HTTP_BODY} bytes)")) }
}

async fn one(client: &HttpClient, kind: &str, tool: &str) -> Result<(), String> {
    let check = |text: String, needle: &str| {
        if text.contains(needle) && !text.contains("\"error\"") {
            Ok(())
        } else {
            Err(format!("incomplete answer ({} bytes)", text.len()))
        }
    };
    match kind {
        "http" => tokio::task::spawn_blocking(|| http_get("/soak")).await.map_err(|e| e.to_string())?,
        "llm" => check(post(client, "/v1/chat/completions", chat("fast", false), &[]).await?, "\"usage\""),
        "llm_stream" => check(post(client, "/v1/chat/completions", chat("fast", true), &[]).await?, "[DONE]"),
        "llm_slow" => check(post(client, "/v1/chat/completions", chat("slow", true), &[]).await?, "[DONE]"),
        // Its provider breaks every stream: the documented outcome is a clean error event.
        "llm_flaky" => {
            let text = post(client, "/v1/chat/completions", chat("flaky", true), &[]).await?;
            if text.contains("\"upstream_error\"") && text.contains("[DONE]") {
                Ok(())
            } else {
                Err(format!("no clean error event ({} bytes)", text.len()))
            }
        }
        "pool" => {
            check(post(client, "/v1/chat/completions", chat("pooled", false), &[]).await?, "pooled answer")
        }
        "mcp" => {
            let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
                "name": tool, "arguments": {"q": "soak"},
                "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                          "io.modelcontextprotocol/clientInfo": {"name": "soak", "version": "1"},
                          "io.modelcontextprotocol/clientCapabilities": {}}}});
            let h = [("mcp-protocol-version", "2026-07-28")];
            check(post(client, "/mcp", Bytes::from(body.to_string()), &h).await?, "\"result\"")
        }
        "a2a" => {
            let body = json!({"jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": {"message": {
                "messageId": "soak", "role": "ROLE_USER", "parts": [{"text": "soak hand-off"}]}}});
            check(post(client, "/a2a/sim/", Bytes::from(body.to_string()), &[]).await?, "\"result\"")
        }
        _ => Err("unknown kind".into()),
    }
}

fn config(audit_dir: &std::path::Path, generation: u64) -> String {
    // Every other generation adds a model alias and changes the MCP list TTL: a reload that
    // rebuilds the LLM and MCP gateways while traffic runs.
    let spare = if generation % 2 == 1 {
        "    - { name: spare, targets: [ { provider: ok, model: gpt-4o-mini } ] }\n"
    } else {
        ""
    };
    let ttl = if generation % 2 == 1 { "31s" } else { "30s" };
    format!(
        r#"# generation {generation}
listeners: {{ explicit: {PROXY}, transparent: null }}
admin: {{ address: {ADMIN} }}
log: {{ level: warn }}
audit: {{ path: "{}/audit.log", max_bytes: 1048576, keep: 1, flush_interval: 200ms }}
timeouts: {{ response: 15s, body_idle: 15s }}
identities:
  - {{ name: soak-agent, api_keys: ["{KEY}"] }}
llm:
  redis_url: "redis://127.0.0.1:19379/0"
  providers:
    - {{ name: ok, kind: openai, endpoint: "http://127.0.0.1:19301" }}
    - {{ name: flaky, kind: openai, endpoint: "http://127.0.0.1:19302" }}
    - {{ name: slow, kind: openai, endpoint: "http://127.0.0.1:19303" }}
  models:
    - {{ name: fast, targets: [ {{ provider: ok, model: gpt-4o-mini }} ] }}
    - {{ name: flaky, targets: [ {{ provider: flaky, model: gpt-4o-mini }} ] }}
    - {{ name: slow, targets: [ {{ provider: slow, model: gpt-4o-mini }} ] }}
{spare}  budgets:
    - {{ name: soak, selector: {{ principals: [soak-agent] }}, tokens_per_minute: 1000000000000, requests_per_minute: 1000000000 }}
inference:
  pools:
    - {{ name: local, models: [pooled], endpoints: [ {{ address: "127.0.0.1:19304" }} ], scrape_interval: 200ms }}
mcp:
  list_ttl: {ttl}
  servers:
    - {{ name: sim, url: "http://127.0.0.1:19401/mcp" }}
a2a:
  agents:
    - {{ name: sim, url: "http://127.0.0.1:19501" }}
"#,
        audit_dir.display()
    )
}

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

fn admin_metric(name: &str) -> f64 {
    let Ok(mut s) = std::net::TcpStream::connect(ADMIN) else { return 0.0 };
    let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nhost: admin\r\nconnection: close\r\n\r\n");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

pub fn run(a: Args) -> anyhow::Result<()> {
    crate::cargo(&["build", "--release", "--bins"])?;
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let bins = root.join("target/release");
    let dir = std::env::temp_dir().join(format!("nodegate-soak-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let disk = AuditDisk::new(&dir)?;
    if !disk.can_fill() {
        eprintln!("soak: cannot mount a tmpfs for the audit (not root?): the disk-full fault is skipped");
    }
    let spawn = |bin: &str, args: &[&str]| -> anyhow::Result<Killed> {
        Ok(Killed(
            Command::new(bins.join(bin))
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .with_context(|| bin.to_string())?,
        ))
    };
    let mut redis = Redis::start(19379)?;
    let _sims = [
        spawn("llm-sim", &["127.0.0.1:19301", "ok", "--tokens", "20"])?,
        spawn("llm-sim", &["127.0.0.1:19302", "flaky", "--tokens", "20", "--fail-mid-stream", "5"])?,
        spawn("llm-sim", &["127.0.0.1:19303", "slow", "--tokens", "20", "--chunk-delay-us", "50000"])?,
        spawn("mcp-sim", &["127.0.0.1:19401", "sim"])?,
        spawn("a2a-sim", &["127.0.0.1:19501"])?,
    ];
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let garbage = Arc::new(AtomicBool::new(false));
    rt.block_on(model_server("127.0.0.1:19304", garbage.clone()))?;
    let reset = Arc::new(AtomicBool::new(false));
    rt.block_on(http_upstream("127.0.0.1:19601", reset.clone()))?;
    let cfg_path = dir.join("nodegate.yaml");
    std::fs::write(&cfg_path, config(&disk.dir, 0))?;
    let ng = Killed(
        Command::new(bins.join("nodegate"))
            .args(["run", "--config"])
            .arg(&cfg_path)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("nodegate.log"))?)
            .spawn()
            .context("nodegate")?,
    );
    let pid = ng.0.id();
    rt.block_on(async {
        for url in [
            "http://127.0.0.1:19301/",
            "http://127.0.0.1:19401/",
            "http://127.0.0.1:19501/",
            &format!("http://{ADMIN}/readyz"),
        ] {
            wait_http(url).await?;
        }
        anyhow::Ok(())
    })?;
    std::thread::sleep(Duration::from_secs(1));

    // The MCP tool's federated name, from the gateway's own list.
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let tool = rt
        .block_on(async {
            let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"_meta": {
                "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientInfo": {"name": "soak", "version": "1"},
                "io.modelcontextprotocol/clientCapabilities": {}}}});
            post(&client, "/mcp", Bytes::from(body.to_string()), &[("mcp-protocol-version", "2026-07-28")])
                .await
        })
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v["result"]["tools"][0]["name"].as_str().map(str::to_string))
        .context("the gateway listed no MCP tool")?;

    let total = Duration::from_secs(a.minutes * 60);
    let start = Instant::now();
    let samples: Arc<Mutex<Vec<Sample>>> = Arc::default();
    let fault_now = Arc::new(Mutex::new(Fault::None));
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for w in 0..a.clients {
        let (client, samples, fault_now, stop, tool) =
            (client.clone(), samples.clone(), fault_now.clone(), stop.clone(), tool.clone());
        workers.push(rt.spawn(async move {
            let mut i = w;
            while !stop.load(Ordering::Relaxed) {
                let kind = KINDS[i % KINDS.len()];
                i += 1;
                let fault = *fault_now.lock().unwrap_or_else(|e| e.into_inner());
                let t = Instant::now();
                let r = match tokio::time::timeout(Duration::from_secs(20), one(&client, kind, &tool)).await {
                    Ok(r) => r,
                    Err(_) => Err("client timeout".into()),
                };
                let after = *fault_now.lock().unwrap_or_else(|e| e.into_inner());
                let s = Sample {
                    at: start.elapsed().as_secs_f64(),
                    kind,
                    ms: t.elapsed().as_secs_f64() * 1e3,
                    error: r.err(),
                    fault,
                    fault_end: after,
                };
                samples.lock().unwrap_or_else(|e| e.into_inner()).push(s);
                // Bounded: about 100 requests per second per client at most.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }));
    }

    // The fault schedule and the resource sampling, once a second.
    let mut resources: Vec<(u64, f64, usize)> = Vec::new();
    let mut generation = 0;
    let mut current = Fault::None;
    while start.elapsed() < total {
        std::thread::sleep(Duration::from_secs(1));
        let second = start.elapsed().as_secs();
        let want = Fault::at(second);
        if want != current {
            match current {
                Fault::RedisDown => redis.up()?,
                Fault::MetricsGarbage => garbage.store(false, Ordering::Relaxed),
                Fault::AuditDiskFull => disk.free(),
                Fault::UpstreamReset => reset.store(false, Ordering::Relaxed),
                Fault::None => {}
            }
            match want {
                Fault::RedisDown => redis.down(),
                Fault::MetricsGarbage => garbage.store(true, Ordering::Relaxed),
                Fault::AuditDiskFull => disk.fill(),
                Fault::UpstreamReset => reset.store(true, Ordering::Relaxed),
                Fault::None => {}
            }
            current = want;
            *fault_now.lock().unwrap_or_else(|e| e.into_inner()) = want;
        }
        if second.is_multiple_of(5) {
            generation += 1;
            std::fs::write(&cfg_path, config(&disk.dir, generation))?;
        }
        resources.push((second, rss_mb(pid), fds(pid)));
        if second.is_multiple_of(WINDOW) {
            let n = samples.lock().unwrap_or_else(|e| e.into_inner()).len();
            eprintln!(
                "soak: {second:>5} s  fault {:<16} requests {n:>8}  rss {:>6.1} MB  fds {}",
                want.label(),
                rss_mb(pid),
                fds(pid)
            );
        }
    }
    stop.store(true, Ordering::Relaxed);
    rt.block_on(async {
        for w in workers {
            let _ = w.await;
        }
    });
    redis.up()?;
    disk.free();
    reset.store(false, Ordering::Relaxed);
    // Nothing lost that was promised: once the disk has room again, records are written again.
    let marker = format!("/soak-final-{}", std::process::id());
    let final_ok = http_get(&marker).is_ok();
    std::thread::sleep(Duration::from_secs(1));
    let audit_resumed =
        final_ok && std::fs::read_to_string(disk.dir.join("audit.log")).is_ok_and(|t| t.contains(&marker));
    let audit_errors = admin_metric("nodegate_audit_write_errors_total");
    let reloads = admin_metric("nodegate_config_reloads_total{outcome=\"applied\"}");
    let alive = Command::new("kill").args(["-0", &pid.to_string()]).status().is_ok_and(|s| s.success());
    drop(ng);
    report(
        &a,
        &samples.lock().unwrap_or_else(|e| e.into_inner()),
        &resources,
        audit_errors,
        reloads,
        alive,
        disk.can_fill(),
        audit_resumed,
    )
}

fn is_expected(s: &Sample) -> bool {
    s.error
        .as_deref()
        .is_some_and(|e| expected_error(s.kind, s.fault, e) || expected_error(s.kind, s.fault_end, e))
}

#[allow(clippy::too_many_arguments)]
fn report(
    a: &Args,
    samples: &[Sample],
    resources: &[(u64, f64, usize)],
    audit_errors: f64,
    reloads: f64,
    alive: bool,
    disk_fault: bool,
    audit_resumed: bool,
) -> anyhow::Result<()> {
    let windows = (a.minutes * 60).div_ceil(WINDOW);
    let mut rows = Vec::new();
    eprintln!("\n window     requests  errors  expected  p99 ms (llm)  p99 ms (http)  rss MB  fds");
    for w in 0..windows {
        let (lo, hi) = ((w * WINDOW) as f64, ((w + 1) * WINDOW) as f64);
        let in_w: Vec<&Sample> = samples.iter().filter(|s| s.at >= lo && s.at < hi).collect();
        let errors = in_w.iter().filter(|s| s.error.is_some()).count();
        let expected = in_w.iter().filter(|s| is_expected(s)).count();
        let mut llm: Vec<f64> = in_w.iter().filter(|s| s.kind == "llm").map(|s| s.ms).collect();
        let mut http: Vec<f64> = in_w.iter().filter(|s| s.kind == "http").map(|s| s.ms).collect();
        let res: Vec<_> = resources.iter().filter(|r| r.0 >= w * WINDOW && r.0 < (w + 1) * WINDOW).collect();
        let rss = res.last().map_or(0.0, |r| r.1);
        let fd = res.last().map_or(0, |r| r.2);
        let (p_llm, p_http) = (pct(&mut llm, 0.99), pct(&mut http, 0.99));
        eprintln!(
            " {:>4}-{:<4} {:>9} {:>7} {:>9} {:>13.2} {:>14.2} {:>7.1} {:>4}",
            lo,
            hi,
            in_w.len(),
            errors,
            expected,
            p_llm,
            p_http,
            rss,
            fd
        );
        rows.push(json!({"from_s": lo, "to_s": hi, "requests": in_w.len(), "errors": errors,
            "expected_errors": expected, "p99_ms_llm": p_llm, "p99_ms_http": p_http, "rss_mb": rss, "fds": fd}));
    }
    // Latency by kind and the fault in force (successful requests).
    eprintln!("\nlatency by kind and fault in force (ok requests): p50 / p99 ms");
    let mut lat = Vec::new();
    for kind in KINDS {
        let mut line = format!("  {kind:<10}");
        for f in
            [Fault::None, Fault::RedisDown, Fault::MetricsGarbage, Fault::AuditDiskFull, Fault::UpstreamReset]
        {
            let mut v: Vec<f64> = samples
                .iter()
                .filter(|s| s.kind == kind && s.fault == f && s.error.is_none())
                .map(|s| s.ms)
                .collect();
            let n = v.len();
            let (p50, p99) = (pct(&mut v, 0.5), pct(&mut v, 0.99));
            line.push_str(&format!("  {}: {p50:>7.2} / {p99:>8.2} ({n})", f.label()));
            lat.push(json!({"kind": kind, "fault": f.label(), "requests": n, "p50_ms": p50, "p99_ms": p99}));
        }
        eprintln!("{line}");
    }
    // Errors by kind and the fault in force.
    let mut by: BTreeMap<(String, String, String), usize> = BTreeMap::new();
    for s in samples.iter().filter(|s| s.error.is_some()) {
        let e = s.error.clone().unwrap_or_default();
        *by.entry((s.kind.to_string(), s.fault.label().to_string(), e)).or_default() += 1;
    }
    eprintln!("\nerrors by kind, fault in force and cause:");
    for ((k, f, e), n) in &by {
        eprintln!("  {k:<10} {f:<16} {n:>7}  {e}");
    }
    let unexpected = samples.iter().filter(|s| s.error.is_some() && !is_expected(s)).count();
    let resets_met = samples.iter().filter(|s| is_expected(s)).count();
    // Warm-up: the first fifth of the run (at least a minute when there is room).
    let warm = (a.minutes * 60 / 5).max(if a.minutes >= 5 { 60 } else { 0 });
    // Flat means: the median over the last minute within 10% of the median over the first
    // minute after warm-up (a single sample swings with the requests in flight at that instant;
    // a leak moves the median).
    let after: Vec<_> = resources.iter().filter(|r| r.0 >= warm).collect();
    let end = resources.last().map_or(0, |r| r.0);
    let median = |from: u64, to: u64, f: &dyn Fn(&(u64, f64, usize)) -> f64| {
        let mut v: Vec<f64> = after.iter().filter(|r| r.0 >= from && r.0 < to).map(|r| f(r)).collect();
        pct(&mut v, 0.5)
    };
    let (first_to, last_from) = (warm + 60, end.saturating_sub(60).max(warm));
    let rss0 = median(warm, first_to, &|r| r.1);
    let rss1 = median(last_from, end + 1, &|r| r.1);
    let fd0 = median(warm, first_to, &|r| r.2 as f64);
    let fd1 = median(last_from, end + 1, &|r| r.2 as f64);
    let rss_max = after.iter().map(|r| r.1).fold(0.0, f64::max);
    let fd_max = after.iter().map(|r| r.2).max().unwrap_or(0);
    let rss_growth = if rss0 > 0.0 { rss1 / rss0 - 1.0 } else { 0.0 };
    let fd_growth = if fd0 > 0.0 { fd1 / fd0 - 1.0 } else { 0.0 };
    let total = samples.len();
    eprintln!(
        "\n{total} requests in {} min; unexpected errors {unexpected}; RSS (median, first minute after warm-up -> last minute) {rss0:.1} -> {rss1:.1} MB ({:+.1}%, max {rss_max:.1}); fds {fd0} -> {fd1} ({:+.1}%, max {fd_max}); audit write errors counted {audit_errors}; audit resumed after the disk-full fault: {audit_resumed}; upstream resets met with a broken body: {resets_met}; reloads applied {reloads}; nodegate alive at the end: {alive}",
        a.minutes,
        rss_growth * 100.0,
        fd_growth * 100.0
    );
    let summary = json!({
        "minutes": a.minutes, "clients": a.clients, "requests": total, "unexpected_errors": unexpected,
        "errors": by.iter().map(|((k, f, e), n)| json!({"kind": k, "fault": f, "error": e, "count": n})).collect::<Vec<_>>(),
        "rss_mb_after_warmup": rss0, "rss_mb_last_minute": rss1, "rss_mb_max": rss_max, "rss_growth": rss_growth,
        "fds_after_warmup": fd0, "fds_last_minute": fd1, "fds_max": fd_max, "fd_growth": fd_growth,
        "audit_write_errors": audit_errors, "audit_resumed": audit_resumed, "resets_met": resets_met,
        "reloads_applied": reloads, "alive": alive,
        "disk_full_fault": disk_fault, "windows": rows, "latency": lat,
    });
    if let Some(parent) = a.out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&a.out, serde_json::to_string_pretty(&summary)? + "\n")?;
    eprintln!("wrote {}", a.out.display());
    let mut failed = Vec::new();
    if !alive {
        failed.push("nodegate died".to_string());
    }
    if unexpected > 0 {
        failed.push(format!("{unexpected} requests ended otherwise than documented"));
    }
    if rss_growth > 0.10 {
        failed.push(format!("RSS grew {:.1}% after warm-up", rss_growth * 100.0));
    }
    if fd_growth > 0.10 {
        failed.push(format!("open descriptors grew {:.1}% after warm-up", fd_growth * 100.0));
    }
    if disk_fault && audit_errors == 0.0 {
        failed.push("the audit disk was full but no write error was counted".into());
    }
    if disk_fault && !audit_resumed {
        failed.push("audit records did not resume once the disk had room again".into());
    }
    if a.minutes >= 1 && resets_met == 0 {
        failed.push("no request met the upstream-reset fault".into());
    }
    if reloads < 1.0 {
        failed.push("no config reload was applied".into());
    }
    if !failed.is_empty() {
        bail!("soak failed: {}", failed.join("; "));
    }
    eprintln!("soak passed");
    Ok(())
}
