//! Log setup: tracing to stderr, text or JSON, with a filter from config that RUST_LOG
//! overrides. The `log` records of aya-log (the eBPF programs' diagnostics) are bridged in by
//! tracing-subscriber's `tracing-log` feature.
use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use crate::config::{Log, LogFormat};

/// Installs the global subscriber. Returns whether debug-level events are enabled for nodegate,
/// which decides how verbose the eBPF side's logging is compiled in at load.
pub fn init(cfg: &Log) -> bool {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .or_else(|| EnvFilter::try_new(&cfg.level).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let debug = filter.max_level_hint().is_none_or(|l| l >= tracing::Level::DEBUG);
    let registry = tracing_subscriber::registry().with(filter);
    let result = match cfg.format {
        LogFormat::Text => registry.with(fmt::layer().with_writer(std::io::stderr)).try_init(),
        LogFormat::Json => registry.with(fmt::layer().json().with_writer(std::io::stderr)).try_init(),
    };
    if let Err(e) = result {
        eprintln!("nodegate: logging already initialised: {e}");
    }
    debug
}
