//! The soak's fault injectors: a model server whose metrics page can turn to garbage, an HTTP
//! upstream that can reset every response mid-body, Redis killed and restarted, the audit disk
//! filled, the config rewritten. Each is switched on and off by the schedule in `soak`.
use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use anyhow::Context as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::bench_llm::Killed;

/// A fault in force during part of each cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    None,
    RedisDown,
    MetricsGarbage,
    AuditDiskFull,
    UpstreamReset,
}

impl Fault {
    pub fn label(self) -> &'static str {
        match self {
            Fault::None => "none",
            Fault::RedisDown => "redis_down",
            Fault::MetricsGarbage => "metrics_garbage",
            Fault::AuditDiskFull => "audit_disk_full",
            Fault::UpstreamReset => "upstream_reset",
        }
    }

    /// The schedule: each minute, 10 s of each fault between quiet stretches.
    pub fn at(second: u64) -> Fault {
        match second % 60 {
            10..20 => Fault::RedisDown,
            30..40 => Fault::MetricsGarbage,
            40..50 => Fault::AuditDiskFull,
            50..58 => Fault::UpstreamReset,
            _ => Fault::None,
        }
    }
}

/// Bytes of the plain HTTP upstream's answer body.
pub const HTTP_BODY: usize = 1000;

/// The plain HTTP upstream: a 200 with a [`HTTP_BODY`]-byte body, or, while `reset` is set,
/// the head and a tenth of the body and then a TCP reset (SO_LINGER 0): an upstream that fails
/// mid-response.
pub async fn http_upstream(addr: &str, reset: Arc<AtomicBool>) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("bind {addr}"))?;
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let reset = reset.clone();
            tokio::spawn(async move {
                let mut buf = Vec::with_capacity(1024);
                let mut chunk = [0u8; 2048];
                loop {
                    if buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {HTTP_BODY}\r\n\r\n");
                        buf.clear();
                        if reset.load(Ordering::Relaxed) {
                            let _ = s.write_all(head.as_bytes()).await;
                            let _ = s.write_all(&[b'x'; HTTP_BODY / 10]).await;
                            let _ = s.flush().await;
                            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                            // Dropped with SO_LINGER 0: a reset, not a clean close.
                            let _ = s.set_zero_linger();
                            return;
                        }
                        let mut answer = head.into_bytes();
                        answer.extend_from_slice(&[b'x'; HTTP_BODY]);
                        if s.write_all(&answer).await.is_err() {
                            return;
                        }
                        continue;
                    }
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            });
        }
    });
    Ok(())
}

/// A vLLM-like pool endpoint: `/metrics` in vLLM's names (or garbage while `garbage` is set),
/// `/v1/chat/completions` a short answer with usage.
pub async fn model_server(addr: &str, garbage: Arc<AtomicBool>) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("bind {addr}"))?;
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let garbage = garbage.clone();
            tokio::spawn(async move {
                let mut buf = Vec::with_capacity(2048);
                let mut chunk = [0u8; 4096];
                loop {
                    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n");
                    if let Some(end) = head_end {
                        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                        let len = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        if buf.len() >= end + 4 + len {
                            let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
                            let body = answer(&path, garbage.load(Ordering::Relaxed));
                            let resp = format!(
                                "HTTP/1.1 200 OK\r\ncontent-type: {}\r\ncontent-length: {}\r\n\r\n",
                                if path.starts_with("/metrics") { "text/plain" } else { "application/json" },
                                body.len()
                            );
                            if s.write_all(resp.as_bytes()).await.is_err()
                                || s.write_all(&body).await.is_err()
                            {
                                return;
                            }
                            buf.drain(..end + 4 + len);
                            continue;
                        }
                    }
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            });
        }
    });
    Ok(())
}

fn answer(path: &str, garbage: bool) -> Vec<u8> {
    if path.starts_with("/metrics") {
        if garbage {
            // Not Prometheus text: binary noise, a huge line, numbers that are not numbers.
            let mut g =
                b"\x00\xff\xfe{{{ vllm:num_requests_waiting NaNx\nvllm:gpu_cache_usage_perc -\n".to_vec();
            g.extend(std::iter::repeat_n(b'#', 200_000));
            g.extend_from_slice(b"\nvllm:num_requests_running{model=\"\\\"} 1e999999\n");
            return g;
        }
        return b"# TYPE vllm:num_requests_waiting gauge\nvllm:num_requests_waiting{model_name=\"pooled\"} 0\n# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running{model_name=\"pooled\"} 1\n# TYPE vllm:gpu_cache_usage_perc gauge\nvllm:gpu_cache_usage_perc{model_name=\"pooled\"} 0.1\n".to_vec();
    }
    serde_json::json!({
        "id": "soak", "object": "chat.completion", "model": "pooled",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "pooled answer"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 2, "total_tokens": 14}
    })
    .to_string()
    .into_bytes()
}

/// Redis on `port`, restartable.
pub struct Redis {
    port: u16,
    proc: Option<Killed>,
}

impl Redis {
    pub fn start(port: u16) -> anyhow::Result<Self> {
        let mut r = Self { port, proc: None };
        r.up()?;
        Ok(r)
    }

    pub fn up(&mut self) -> anyhow::Result<()> {
        if self.proc.is_none() {
            let child = Command::new("redis-server")
                .args(["--port", &self.port.to_string(), "--save", "", "--appendonly", "no"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("redis-server (apt install redis-server)")?;
            self.proc = Some(Killed(child));
        }
        Ok(())
    }

    pub fn down(&mut self) {
        self.proc = None;
    }
}

/// The audit directory: a 4 MiB tmpfs when this process may mount one (root), so the disk can
/// really fill; else a plain directory and the disk-full fault is skipped (said so).
pub struct AuditDisk {
    pub dir: PathBuf,
    mounted: bool,
    filler: PathBuf,
}

impl AuditDisk {
    pub fn new(base: &Path) -> anyhow::Result<Self> {
        let dir = base.join("audit");
        std::fs::create_dir_all(&dir)?;
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=4m", "soak-audit"])
            .arg(&dir)
            .status()
            .is_ok_and(|s| s.success());
        let filler = dir.join("filler");
        Ok(Self { dir, mounted, filler })
    }

    pub fn can_fill(&self) -> bool {
        self.mounted
    }

    /// Takes every free byte of the tmpfs.
    pub fn fill(&self) {
        if !self.mounted || self.filler.exists() {
            return;
        }
        if let Ok(mut f) = std::fs::File::create(&self.filler) {
            use std::io::Write as _;
            let block = vec![0u8; 64 << 10];
            while f.write_all(&block).is_ok() {}
        }
    }

    pub fn free(&self) {
        let _ = std::fs::remove_file(&self.filler);
    }
}

impl Drop for AuditDisk {
    fn drop(&mut self) {
        self.free();
        if self.mounted {
            let _ = Command::new("umount").arg(&self.dir).status();
        }
    }
}
