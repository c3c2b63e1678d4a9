//! Work that must not wait behind the proxy: the admin server (health probes, metrics), the
//! intercept heartbeat and the audit writer each run on a thread of their own with a
//! single-threaded runtime. Saturated proxy workers cannot delay them, and their blocking calls
//! (file writes and rotation, BPF map writes) cannot stall the workers.
use std::future::Future;

/// Runs `fut` to completion on a new thread named `name`. The returned receiver resolves when
/// it has finished (or its thread died).
pub fn spawn<F>(name: &str, fut: F) -> std::io::Result<tokio::sync::oneshot::Receiver<()>>
where
    F: Future<Output = ()> + Send + 'static,
{
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let (done, finished) = tokio::sync::oneshot::channel();
    std::thread::Builder::new().name(name.to_string()).spawn(move || {
        rt.block_on(fut);
        let _ = done.send(());
    })?;
    Ok(finished)
}
