//! Developer tasks: `cargo xtask test` (build every binary, then run every test) and
//! `cargo xtask bench redirect` (the interception benchmark).
mod bench_a2a;
mod bench_inference;
mod bench_k8s;
mod bench_llm;
mod bench_mcp;
mod bench_pick;
mod bench_policy;
mod bench_redirect;
mod bench_tls;
mod codegen;
mod fuzz;
mod soak;
mod soak_faults;

use std::process::Command;

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build all binaries (the end-to-end suites run them), then run every test.
    Test {
        /// Extra arguments for `cargo test` (a filter, `--nocapture`, ...).
        #[arg(trailing_var_arg = true)]
        args: Vec<String>,
    },
    /// Write the CRDs, the config JSON schema and the configuration reference from the Rust
    /// config types (`--check`: fail when any is stale).
    Codegen(codegen::Args),
    /// Every fuzz target in fuzz/ for a fixed time each; executions, coverage, crashes.
    Fuzz(fuzz::Args),
    /// Mixed traffic for N minutes with faults injected; errors by kind, p99, RSS and open
    /// descriptors over time (bench-results/soak.json).
    Soak(soak::Args),
    /// Benchmarks; each prints ratios measured side by side in one run and writes JSON.
    Bench {
        #[command(subcommand)]
        which: Bench,
    },
}

#[derive(Subcommand)]
enum Bench {
    /// Direct vs eBPF redirect vs iptables REDIRECT through the same nodegate (needs root).
    Redirect(bench_redirect::Args),
    /// Chat completions direct vs through nodegate vs through LiteLLM's proxy.
    Llm(bench_llm::Args),
    /// Cost of one endpoint pick (prefix hashing included) at 64 endpoints.
    Pick,
    /// Routing strategies side by side against simulated servers of unequal speed.
    Inference(bench_inference::Args),
    /// MCP tools/call through nodegate vs direct; tools/list over 10 federated servers.
    Mcp(bench_mcp::Args),
    /// New TLS connections/s and request latency: direct, passthrough, terminate (cached and
    /// fresh leaf) and haproxy terminating the same way (needs root and haproxy).
    Tls(bench_tls::Args),
    /// A2A SendMessage through nodegate vs direct (a fixed 1,000/s and closed loop), and the
    /// added latency per streamed event.
    A2a(bench_a2a::Args),
    /// Cost of policy.rules (0, 10, 100 rules) and of tracing at 100%, HTTP and LLM, side by side.
    Policy(bench_policy::Args),
    /// Pod churn on one node: watch event -> enrolled map write latency, memory per pod (needs
    /// root).
    K8s(bench_k8s::Args),
}

pub fn cargo(args: &[&str]) -> anyhow::Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(&cargo).args(args).status().with_context(|| format!("running {cargo}"))?;
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    Ok(())
}

/// Runs `cargo test`, passing its output through, then prints the totals of every test binary
/// as the last line (`tests: N passed, N failed, N ignored`), so the summary is not the
/// `0 passed` of a crate without tests.
fn test(args: &[String]) -> anyhow::Result<()> {
    use std::io::{BufRead as _, BufReader};
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut child = Command::new(&cargo)
        .arg("test")
        .args(args)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("running {cargo} test"))?;
    let (mut passed, mut failed, mut ignored) = (0u64, 0u64, 0u64);
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).lines() {
            let line = line?;
            println!("{line}");
            if let Some(rest) = line.strip_prefix("test result: ") {
                for part in rest.split(';') {
                    let mut w = part.split_whitespace().rev();
                    let (Some(what), Some(n)) = (w.next(), w.next()) else { continue };
                    let n: u64 = n.parse().unwrap_or(0);
                    match what {
                        "passed" => passed += n,
                        "failed" => failed += n,
                        "ignored" => ignored += n,
                        _ => {}
                    }
                }
            }
        }
    }
    let status = child.wait()?;
    println!("tests: {passed} passed, {failed} failed, {ignored} skipped");
    if !status.success() || failed > 0 {
        bail!("cargo test failed ({status})");
    }
    if passed == 0 {
        bail!("cargo test ran no test");
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().cmd {
        Cmd::Test { args } => {
            cargo(&["build", "--bins"])?;
            test(&args)
        }
        Cmd::Bench { which: Bench::Redirect(a) } => bench_redirect::run(a),
        Cmd::Bench { which: Bench::Llm(a) } => bench_llm::run(a),
        Cmd::Bench { which: Bench::Pick } => bench_pick::run(),
        Cmd::Bench { which: Bench::Inference(a) } => bench_inference::run(a),
        Cmd::Bench { which: Bench::Mcp(a) } => bench_mcp::run(a),
        Cmd::Bench { which: Bench::Tls(a) } => bench_tls::run(a),
        Cmd::Bench { which: Bench::K8s(a) } => bench_k8s::run(a),
        Cmd::Bench { which: Bench::A2a(a) } => bench_a2a::run(a),
        Cmd::Bench { which: Bench::Policy(a) } => bench_policy::run(a),
        Cmd::Codegen(a) => codegen::run(&a),
        Cmd::Fuzz(a) => fuzz::run(a),
        Cmd::Soak(a) => soak::run(a),
    }
}
