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
    /// The pods on this node: what each is named as, and whether it is intercepted (asks the
    /// running agent's admin endpoint `/pods`).
    Pods {
        /// Take the admin address and token from this config.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Admin address (overrides the config; default 127.0.0.1:15000).
        #[arg(long)]
        admin: Option<std::net::SocketAddr>,
        /// Print the JSON the agent answered.
        #[arg(long)]
        json: bool,
    },
    /// Read the audit files (rotated ones too, oldest first): records matching the filters, the
    /// last N of them, or a per-workload summary (requests, LLM calls, tokens, cost, tool calls,
    /// denials).
    Audit {
        /// Take `audit.path` from this config.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// The audit file (overrides the config).
        #[arg(long)]
        path: Option<PathBuf>,
        /// Only this workload (the record's `identity`).
        #[arg(long)]
        workload: Option<String>,
        /// Only this principal (API key's identity).
        #[arg(long)]
        principal: Option<String>,
        /// Only this kind: llm, mcp, a2a, http, connection.
        #[arg(long)]
        kind: Option<String>,
        /// Only this decision: allow or deny.
        #[arg(long)]
        decision: Option<String>,
        /// From this time on: a duration ago (10m, 2h) or RFC 3339.
        #[arg(long)]
        since: Option<String>,
        /// Up to this time: a duration ago or RFC 3339.
        #[arg(long)]
        until: Option<String>,
        /// Only the last N matching records.
        #[arg(long)]
        tail: Option<usize>,
        /// Totals per workload instead of records.
        #[arg(long)]
        summary: bool,
        /// Records as JSON lines (with --summary: the totals as JSON).
        #[arg(long)]
        json: bool,
    },
    /// Policy rules (`policy.rules`) offline.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// The node CA that terminated TLS is re-signed with.
    Ca {
        #[command(subcommand)]
        command: CaCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Judge requests described as JSON against a config's rules, as the gateway would. Exit
    /// status 0: every request allowed; 1: some denied; 2: the config or input is unusable.
    Test {
        /// The config file whose `policy` section is judged.
        file: PathBuf,
        /// A request as JSON (`{"protocol": "mcp", "source": {...}, "mcp": {...}}`), or an array
        /// of them. docs/policy.md lists the attributes.
        #[arg(long)]
        input: PathBuf,
        /// One JSON object per request instead of a line of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Create a CA (ECDSA P-256): the certificate (give it to clients to trust) and its key
    /// (mode 0600; point `tls.ca` at both).
    Init {
        #[arg(long, default_value = "nodegate-ca.crt")]
        cert: PathBuf,
        #[arg(long, default_value = "nodegate-ca.key")]
        key: PathBuf,
        /// Common name of the CA certificate.
        #[arg(long, default_value = "nodegate node CA")]
        name: String,
        /// Validity in days.
        #[arg(long, default_value_t = 365)]
        days: u32,
        /// Replace existing files.
        #[arg(long)]
        force: bool,
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
