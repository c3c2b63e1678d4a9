//! `cargo xtask fuzz`: every cargo-fuzz target in fuzz/ (libFuzzer, nightly, AddressSanitizer)
//! for a fixed time each, one after another, with the executions and coverage each reached, and
//! any crash kept under fuzz/artifacts/<target>/ (each becomes a regression test, fuzz/README.md).
//! Needs `cargo install cargo-fuzz` and the nightly toolchain (both on this machine kind).
use std::{path::PathBuf, process::Command};

use anyhow::{Context as _, bail};
use serde_json::json;

#[derive(clap::Args)]
pub struct Args {
    /// Seconds per target.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Only these targets (default: all).
    #[arg(long)]
    target: Vec<String>,
    #[arg(long, default_value = "bench-results/fuzz.json")]
    out: PathBuf,
}

/// `#123 DONE cov: 456 ft: 789 corp: ...` and `stat::number_of_executed_units: N`.
fn figures(log: &str) -> (u64, u64, u64) {
    let field = |line: &str, key: &str| -> Option<u64> {
        let at = line.find(key)? + key.len();
        line[at..].split_whitespace().next()?.parse().ok()
    };
    let execs = log.lines().find_map(|l| field(l, "stat::number_of_executed_units:")).unwrap_or(0);
    let last = log.lines().rfind(|l| l.contains(" cov: ")).unwrap_or("");
    (execs, field(last, "cov: ").unwrap_or(0), field(last, "ft: ").unwrap_or(0))
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let fuzz = root.join("fuzz");
    let listed = Command::new("cargo").args(["+nightly", "fuzz", "list"]).current_dir(&fuzz).output();
    let listed = listed.context("cargo fuzz (cargo install cargo-fuzz)")?;
    if !listed.status.success() {
        bail!("cargo fuzz list failed: {}", String::from_utf8_lossy(&listed.stderr));
    }
    let all: Vec<String> = String::from_utf8_lossy(&listed.stdout).lines().map(str::to_string).collect();
    let targets: Vec<String> = if a.target.is_empty() { all } else { a.target.clone() };
    let mut rows = Vec::new();
    let mut crashed = Vec::new();
    for t in &targets {
        eprintln!("fuzzing {t} for {} s ...", a.seconds);
        let corpus = fuzz.join("corpus").join(t);
        std::fs::create_dir_all(&corpus)?;
        let out = Command::new("cargo")
            .args(["+nightly", "fuzz", "run", t, "--"])
            .arg(format!("-max_total_time={}", a.seconds))
            .args(["-print_final_stats=1", "-rss_limit_mb=2048", "-max_len=65536"])
            .current_dir(&fuzz)
            .output()
            .with_context(|| format!("cargo fuzz run {t}"))?;
        let log = String::from_utf8_lossy(&out.stderr).to_string();
        let (execs, cov, ft) = figures(&log);
        let ok = out.status.success();
        eprintln!(
            "{t:<14} {:>12} executions  cov {cov:>6}  ft {ft:>6}  {}",
            execs,
            if ok { "no crash" } else { "CRASH (see fuzz/artifacts)" }
        );
        if !ok {
            crashed.push(t.clone());
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("{}", tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
        }
        rows.push(json!({"target": t, "seconds": a.seconds, "executions": execs, "coverage": cov, "features": ft, "crashed": !ok}));
    }
    if let Some(parent) = a.out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&a.out, serde_json::to_string_pretty(&json!({"targets": rows}))?)?;
    eprintln!("wrote {}", a.out.display());
    if !crashed.is_empty() {
        bail!("crashes in: {}", crashed.join(", "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_from_libfuzzer_output() {
        let log = "#2 INITED cov: 10 ft: 11 corp: 1/1b\n#4096 pulse cov: 55 ft: 80\n#9000 DONE cov: 61 ft: 99 corp: 40/2Kb\nstat::number_of_executed_units: 9000\n";
        assert_eq!(figures(log), (9000, 61, 99));
    }
}
