//! Hot reload: poll the config file (content, not mtime, so Kubernetes' ConfigMap symlink swaps
//! are seen), parse and validate a changed one, and swap it in whole. An invalid file is logged
//! with every problem and the running config stays.
use std::{path::PathBuf, sync::Arc, time::Duration};

use tokio::sync::watch;

use super::Config;

/// Runs until `shutdown` fires. Every accepted config goes to `apply`.
pub async fn watch_file(
    path: PathBuf,
    apply: impl Fn(Arc<Config>),
    interval: Duration,
    on_result: impl Fn(bool),
    mut shutdown: watch::Receiver<bool>,
) {
    let mut last = tokio::fs::read(&path).await.ok();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        let bytes = match tokio::fs::read(&path).await {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "config file unreadable; keeping the running config");
                continue;
            }
        };
        if last.as_deref() == Some(&bytes[..]) {
            continue;
        }
        last = Some(bytes.clone());
        let text = String::from_utf8_lossy(&bytes);
        match super::parse(&text, &path.display().to_string()) {
            Ok(cfg) => {
                apply(Arc::new(cfg));
                on_result(true);
                tracing::info!(path = %path.display(), "config reloaded");
            }
            Err(e) => {
                on_result(false);
                tracing::error!("config reload rejected, the running config stays: {e}");
            }
        }
    }
}
