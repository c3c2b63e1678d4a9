//! Command line.
use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "nodegate", version, about = "eBPF-accelerated node-level gateway for AI agent traffic")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway (on the embedded default config when --config is not given).
    Run {
        /// YAML config file; watched and hot-reloaded on change.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Validate a config file and print every problem with its path.
    Check { file: PathBuf },
    /// Print the embedded default config.
    DefaultConfig,
    /// Inspect or clean up the eBPF interception state on this node.
    Intercept {
        #[command(subcommand)]
        command: InterceptCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum InterceptCommand {
    /// Attached programs, table entries, heartbeat age and redirect counters (read from the
    /// pinned maps, so it works while the proxy is down).
    Status {
        /// Take the pin path from this config.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Pin directory (overrides the config).
        #[arg(long)]
        pin_path: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Detach the programs and remove the pinned maps left by a proxy that kept them
    /// (intercept.keep_pinned) or was killed.
    Cleanup {
        #[arg(long, short)]
        config: Option<PathBuf>,
        #[arg(long)]
        pin_path: Option<PathBuf>,
    },
}
