//! The audit sink: one JSON line per connection and per request, in one envelope for every kind
//! of traffic (time, identity, kind, target, decision, rule, trace id) with a kind-specific body.
//!
//! Handlers call [`Audit::emit`], which never blocks: records go through a bounded queue to one
//! writer task that buffers, flushes every `flush_interval` and on shutdown, and rotates the file
//! by size. When the queue is full a record is dropped and counted, never allowed to slow traffic.
use std::{
    io::Write,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime},
};

use serde::Serialize;
use tokio::sync::mpsc;

use crate::{config, identity::Identity, telemetry::metrics::Metrics};

#[derive(Debug, Serialize)]
pub struct Record {
    pub time: String,
    /// `connection` or `http`.
    pub kind: &'static str,
    /// The workload the kernel named (its cgroup's mapping or path; `unknown` when nothing is
    /// known). A credential never replaces it.
    pub identity: Arc<str>,
    /// The principal a valid credential (API key) added beside the workload.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub principal: Option<Arc<str>>,
    pub cgroup_id: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<Arc<str>>,
    /// Kubernetes: the caller pod (namespace, name, uid, service account, container).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodRef>,
    /// `transparent` or `explicit`.
    pub mode: &'static str,
    /// Where the client meant to go: the original destination or the requested authority.
    pub target: String,
    pub protocol: &'static str,
    /// `allow` or `deny`.
    pub decision: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<Arc<str>>,
    /// A `policy.rules` rule in dry run that would have denied this (it was not denied for it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub would_deny: Option<Arc<str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    #[serde(flatten)]
    pub body: Body,
    /// The action's trace context when traces are exported: its span (and its upstream
    /// attempts' spans) are made from this record when it is emitted.
    #[serde(skip)]
    pub trace: Option<Box<super::trace::Trace>>,
}

/// The caller pod as audit records name it.
#[derive(Debug, Clone, Serialize)]
pub struct PodRef {
    pub namespace: Arc<str>,
    pub name: Arc<str>,
    pub uid: Arc<str>,
    pub service_account: Arc<str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<Arc<str>>,
}

impl PodRef {
    pub fn of(id: &Identity) -> Option<Self> {
        let p = id.pod.as_deref()?;
        Some(Self {
            namespace: p.namespace.clone(),
            name: p.name.clone(),
            uid: p.uid.clone(),
            service_account: p.service_account.clone(),
            container: id.container.clone(),
        })
    }
}

#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Body {
    Llm(Box<LlmCall>),
    Mcp(Box<McpCall>),
    A2a(Box<A2aCall>),
    Connection {
        peer: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        sni: Option<String>,
        bytes_sent: u64,
        bytes_received: u64,
        duration_ms: f64,
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    Http {
        method: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        host: Option<String>,
        path: String,
        status: u16,
        /// A gRPC call (`content-type: application/grpc*`): service, method and `grpc-status`.
        #[serde(skip_serializing_if = "Option::is_none")]
        grpc: Option<GrpcCall>,
        bytes_sent: u64,
        bytes_received: u64,
        duration_ms: f64,
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
}

/// A gRPC call as its path and trailers name it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GrpcCall {
    pub service: String,
    pub method: String,
    /// The `grpc-status` the server ended with (trailers, or the headers of a trailers-only
    /// answer); absent when the call ended without one (broken off).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl GrpcCall {
    /// From a request's path (`/package.Service/Method`) when its content type is gRPC's.
    pub fn of(content_type: Option<&str>, path: &str) -> Option<Self> {
        if !content_type.is_some_and(|c| c.starts_with("application/grpc")) {
            return None;
        }
        let (service, method) = path.strip_prefix('/')?.split_once('/')?;
        Some(Self { service: service.to_string(), method: method.to_string(), status: None, message: None })
    }

    /// Reads `grpc-status` and `grpc-message` from trailers (or trailers-only headers).
    pub fn ended(&mut self, h: &http::HeaderMap) {
        if let Some(s) = h.get("grpc-status").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok()) {
            self.status = Some(s);
            self.message = h
                .get("grpc-message")
                .and_then(|v| v.to_str().ok())
                .filter(|m| !m.is_empty())
                .map(|m| m.chars().take(200).collect());
        }
    }
}

/// One A2A call: which agent, which method, the task it was about and how it ended.
#[derive(Debug, Default, Serialize)]
pub struct A2aCall {
    pub agent: Arc<str>,
    /// The 1.0 method name (`GetAgentCard` for a card).
    pub method: &'static str,
    /// The caller's protocol generation: `1.0` or `0.3`.
    pub protocol_version: &'static str,
    /// The caller's binding: `jsonrpc` or `rest`.
    pub binding: &'static str,
    /// The agent's wire, when nodegate bridged the call to another one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bridged_to: Option<&'static str>,
    /// The skill the message asked for (`metadata.skill`), when it named one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skill: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context_id: Option<String>,
    /// The task's last state seen in the answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    pub stream: bool,
    pub messages: u64,
    pub artifacts: u64,
    pub events: u64,
    pub status: u16,
    /// `ok`, `error`, `denied`, `not_found`.
    pub outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub duration_ms: f64,
    /// Moved into the record by [`Record::new`] (made only when traces are exported).
    #[serde(skip)]
    pub trace: Option<Box<super::trace::Trace>>,
}

/// One LLM call: who, which model at which provider, tokens by type, cost, latency.
#[derive(Debug, Default, Serialize)]
pub struct LlmCall {
    pub api: &'static str,
    pub method: String,
    pub path: String,
    pub provider: Option<Arc<str>>,
    /// The model the client asked for.
    pub requested_model: Option<String>,
    /// The model sent to the provider.
    pub model: Option<String>,
    /// Where the request actually went (`scheme://host:port` of the provider or endpoint).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    pub stream: bool,
    pub status: u16,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cached_input_tokens: u64,
    pub cache_creation_tokens: u64,
    pub reasoning_tokens: u64,
    /// Counts came from nodegate's tokenizer because the provider reported none.
    pub estimated: bool,
    pub cost_usd: f64,
    pub ttft_ms: Option<f64>,
    pub duration_ms: f64,
    /// Prompt tokens reserved at admission (estimate plus learned overhead, or the server's own
    /// count); compare with `input_tokens`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reserved_input_tokens: Option<u64>,
    /// The output cap was lowered to this many tokens: what a token budget had left.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_capped: Option<u64>,
    /// Providers (or pool endpoints) tried before this one answered.
    pub failovers: u32,
    /// Inference pool endpoint chosen, and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<Arc<str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pick_reason: Option<String>,
    /// Why the pick left this node's endpoints, when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spilled: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Moved into the record by [`Record::new`] (made only when traces are exported).
    #[serde(skip)]
    pub trace: Option<Box<super::trace::Trace>>,
}

/// One MCP request: who called which tool (prompt, resource) at which server, with what
/// arguments (redacted), and how it ended.
#[derive(Debug, Default, Serialize)]
pub struct McpCall {
    /// `tools/call`, `resources/read`, `prompts/get`, or a list method.
    pub method: String,
    pub server: Option<Arc<str>>,
    /// Tool or prompt name, or resource URI, as the server knows it.
    pub name: Option<String>,
    /// As the client named it (prefixed).
    pub requested: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arguments: Option<serde_json::Value>,
    /// The client's protocol era: `2025-11-25` or `2026-07-28`.
    pub protocol_version: String,
    /// `ok`, `error`, `denied`, `cancelled`, `failed`.
    pub outcome: &'static str,
    /// The tool reported an error in its result (`isError`).
    pub tool_error: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub duration_ms: f64,
    /// Moved into the record by [`Record::new`] (made only when traces are exported).
    #[serde(skip)]
    pub trace: Option<Box<super::trace::Trace>>,
}

impl Record {
    pub fn new(
        kind: &'static str,
        id: &Identity,
        mode: &'static str,
        target: String,
        protocol: &'static str,
        mut body: Body,
    ) -> Self {
        let trace = match &mut body {
            Body::Llm(c) => c.trace.take(),
            Body::Mcp(c) => c.trace.take(),
            Body::A2a(c) => c.trace.take(),
            _ => None,
        };
        Self {
            time: humantime::format_rfc3339_micros(SystemTime::now()).to_string(),
            kind,
            identity: id.workload.clone(),
            principal: id.principal.clone(),
            cgroup_id: id.cgroup_id,
            cgroup: id.cgroup_path.clone(),
            pod: PodRef::of(id),
            mode,
            target,
            protocol,
            decision: "allow",
            rule: None,
            would_deny: None,
            trace_id: None,
            body,
            trace,
        }
    }
}

/// Handle used by the proxy to emit records. Cheap to clone.
#[derive(Clone)]
pub struct Audit {
    tx: Option<mpsc::Sender<Record>>,
    metrics: Arc<Metrics>,
    /// Spans of sampled records, when traces are exported. Shared with the writer, which makes
    /// them off the request path; without a writer (auditing off) `emit` makes them.
    spans: Arc<std::sync::OnceLock<super::spans::Spans>>,
    /// What the dashboard shows, kept by the writer.
    live: Arc<super::live::Live>,
}

impl Audit {
    pub fn emit(&self, mut record: Record) {
        if let Some(t) = record.trace.as_deref() {
            // Every record of a traced action names its trace.
            if record.trace_id.is_none() {
                record.trace_id = Some(t.trace_id_hex());
            }
            if self.tx.is_none()
                && let Some(spans) = self.spans.get()
            {
                spans.record(&record);
            }
        }
        let Some(tx) = &self.tx else { return };
        if tx.try_send(record).is_err() {
            self.metrics.audit_dropped.inc();
        }
    }

    /// A sink that discards everything (auditing disabled).
    pub fn disabled(metrics: Arc<Metrics>) -> Self {
        Self { tx: None, metrics, spans: Arc::default(), live: Arc::default() }
    }

    /// Totals and recent records for the dashboard.
    pub fn live(&self) -> &super::live::Live {
        &self.live
    }

    /// Also makes the spans of sampled records.
    pub fn with_spans(self, spans: super::spans::Spans) -> Self {
        let _ = self.spans.set(spans);
        self
    }

    /// The trace context of a new agent action when traces are exported (a child of the
    /// client's `traceparent` if it is valid); `None` otherwise, and nothing is made.
    pub fn trace(&self, traceparent: Option<&str>) -> Option<Box<super::trace::Trace>> {
        self.spans.get().map(|s| Box::new(s.begin(traceparent)))
    }

    /// [`Audit::trace`] under the `traceparent` header of `headers`, looked up only when traces
    /// are exported (every forwarded request asks).
    pub fn trace_of(&self, headers: &http::HeaderMap) -> Option<Box<super::trace::Trace>> {
        let spans = self.spans.get()?;
        Some(Box::new(spans.begin(headers.get("traceparent").and_then(|v| v.to_str().ok()))))
    }
}

/// Starts the writer on a thread of its own (file writes and rotation block). Dropping every
/// [`Audit`] clone ends it after it wrote and flushed all queued records; await the returned
/// receiver on shutdown.
pub fn start(
    cfg: &config::Audit,
    metrics: Arc<Metrics>,
) -> std::io::Result<(Audit, tokio::sync::oneshot::Receiver<()>)> {
    if cfg.path.is_empty() {
        let (done, finished) = tokio::sync::oneshot::channel();
        let _ = done.send(());
        return Ok((Audit::disabled(metrics), finished));
    }
    let out = Output::open(&cfg.path, cfg.max_bytes, cfg.keep)?;
    let (tx, rx) = mpsc::channel(cfg.queue);
    let live = Arc::new(super::live::Live::default());
    let spans: Arc<std::sync::OnceLock<super::spans::Spans>> = Arc::default();
    let finished = crate::dedicated::spawn(
        "nodegate-audit",
        write_loop(rx, out, cfg.flush_interval, metrics.clone(), live.clone(), spans.clone()),
    )?;
    Ok((Audit { tx: Some(tx), metrics, spans, live }, finished))
}

async fn write_loop(
    mut rx: mpsc::Receiver<Record>,
    mut out: Output,
    every: Duration,
    metrics: Arc<Metrics>,
    live: Arc<super::live::Live>,
    spans: Arc<std::sync::OnceLock<super::spans::Spans>>,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut line = Vec::with_capacity(512);
    let mut failing = Failures::default();
    loop {
        tokio::select! {
            r = rx.recv() => match r {
                Some(rec) => {
                    if let Some(s) = spans.get() {
                        s.record(&rec);
                    }
                    line.clear();
                    if serde_json::to_writer(&mut line, &rec).is_ok() {
                        live.note(&rec, &line);
                        line.push(b'\n');
                        if let Err(e) = out.write(&line) {
                            failing.note(&metrics, "write", &e);
                        } else {
                            metrics.audit_records.inc();
                        }
                    }
                }
                None => break,
            },
            _ = tick.tick() => {
                if let Err(e) = out.flush() {
                    failing.note(&metrics, "flush", &e);
                }
            }
        }
    }
    if let Err(e) = out.flush() {
        tracing::error!(error = %e, "audit flush on shutdown failed");
    }
}

/// Write errors (a full disk) are counted in `nodegate_audit_write_errors_total` and logged at
/// most every 10 s with how many there were, not once per record: traffic goes on, and the log
/// does not become the next thing to fill the disk.
#[derive(Default)]
struct Failures {
    since_logged: u64,
    logged_at: Option<std::time::Instant>,
}

impl Failures {
    fn note(&mut self, metrics: &Metrics, what: &str, e: &std::io::Error) {
        metrics.audit_write_errors.inc();
        self.since_logged += 1;
        if self.logged_at.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
            tracing::error!(error = %e, failures = self.since_logged, "audit {what} failed; records are being lost");
            self.since_logged = 0;
            self.logged_at = Some(std::time::Instant::now());
        }
    }
}

/// The file (or stdout) records go to, with size-based rotation.
struct Output {
    path: Option<PathBuf>,
    w: std::io::BufWriter<Box<dyn Write + Send>>,
    written: u64,
    max_bytes: u64,
    keep: u32,
}

impl Output {
    fn open(path: &str, max_bytes: u64, keep: u32) -> std::io::Result<Self> {
        if path == "-" {
            return Ok(Self {
                path: None,
                w: std::io::BufWriter::with_capacity(64 * 1024, Box::new(std::io::stdout())),
                written: 0,
                max_bytes: 0,
                keep,
            });
        }
        let p = PathBuf::from(path);
        if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let f = std::fs::OpenOptions::new().create(true).append(true).open(&p)?;
        let written = f.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(Self {
            path: Some(p),
            w: std::io::BufWriter::with_capacity(64 * 1024, Box::new(f)),
            written,
            max_bytes,
            keep,
        })
    }

    fn write(&mut self, line: &[u8]) -> std::io::Result<()> {
        self.w.write_all(line)?;
        self.written += line.len() as u64;
        if self.max_bytes > 0 && self.written >= self.max_bytes {
            self.rotate()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.w.flush()
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        let Some(path) = self.path.clone() else { return Ok(()) };
        self.w.flush()?;
        let numbered = |n: u32| PathBuf::from(format!("{}.{n}", path.display()));
        if self.keep == 0 {
            std::fs::remove_file(&path)?;
        } else {
            for n in (1..self.keep).rev() {
                let from = numbered(n);
                if from.exists() {
                    std::fs::rename(&from, numbered(n + 1))?;
                }
            }
            std::fs::rename(&path, numbered(1))?;
        }
        let f = std::fs::OpenOptions::new().create(true).append(true).open(&path)?;
        self.w = std::io::BufWriter::with_capacity(64 * 1024, Box::new(f));
        self.written = 0;
        Ok(())
    }
}

/// For tests and tools: the audit lines in a file (and its rotated siblings, oldest first).
pub fn read_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;

    fn cfg(path: &Path, max_bytes: u64) -> config::Audit {
        config::Audit {
            path: path.display().to_string(),
            max_bytes,
            keep: 2,
            flush_interval: Duration::from_secs(3600),
            queue: 1024,
        }
    }

    fn record(i: usize) -> Record {
        let id = Identity::unknown();
        Record::new(
            "connection",
            &id,
            "transparent",
            format!("10.0.0.1:{i}"),
            "tcp",
            Body::Connection {
                peer: "10.0.0.2:1".into(),
                sni: None,
                bytes_sent: i as u64,
                bytes_received: 0,
                duration_ms: 1.0,
                error: None,
            },
        )
    }

    #[tokio::test]
    async fn flushes_everything_on_shutdown_and_rotates_by_size() {
        let dir = std::env::temp_dir().join(format!("ng-audit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("audit.log");
        let metrics = Metrics::new();
        let (audit, handle) = start(&cfg(&path, 2_000), metrics.clone()).unwrap();
        for i in 0..40 {
            audit.emit(record(i));
        }
        drop(audit);
        handle.await.unwrap();
        let mut all = Vec::new();
        for p in [dir.join("audit.log.2"), dir.join("audit.log.1"), path.clone()] {
            all.extend(read_lines(&p));
        }
        // keep = 2: the oldest rotated files are gone, but what is kept is complete and in order.
        assert!(dir.join("audit.log.1").exists(), "rotation by size did not happen");
        assert!(!dir.join("audit.log.3").exists());
        let sent: Vec<u64> = all.iter().map(|v| v["bytes_sent"].as_u64().unwrap()).collect();
        assert_eq!(*sent.last().unwrap(), 39, "the last record was not flushed on shutdown");
        assert!(sent.windows(2).all(|w| w[1] == w[0] + 1));
        assert_eq!(metrics.audit_records.get(), 40);
        assert_eq!(all[0]["kind"], "connection");
        assert_eq!(all[0]["identity"], "unknown");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
