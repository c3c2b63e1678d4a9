//! Developer tasks: `cargo xtask test` (build every binary, then run every test) and
//! `cargo xtask bench redirect` (the interception benchmark).
mod bench_redirect;

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
}

pub fn cargo(args: &[&str]) -> anyhow::Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(&cargo).args(args).status().with_context(|| format!("running {cargo}"))?;
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().cmd {
        Cmd::Test { args } => {
            cargo(&["build", "--bins"])?;
            let mut all = vec!["test"];
            all.extend(args.iter().map(String::as_str));
            cargo(&all)
        }
        Cmd::Bench { which: Bench::Redirect(a) } => bench_redirect::run(a),
    }
}
