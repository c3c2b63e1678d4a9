//! OpenTelemetry spans over OTLP. An audit record that carries a sampled [`Trace`] becomes a span
//! (the agent action, kind server) and a child span per upstream attempt (kind client), named and
//! attributed by the OpenTelemetry semantic conventions: gen_ai for LLM calls, MCP's for MCP
//! requests, HTTP's for forwarded requests. Spans go through a bounded queue to a thread of their
//! own that exports them in batches; a full queue drops and counts, never slows traffic.
use std::{borrow::Cow, sync::Arc, time::SystemTime};

use opentelemetry::{
    InstrumentationScope, KeyValue,
    trace::{SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState},
};
use opentelemetry_otlp::{Protocol, WithExportConfig as _};
use opentelemetry_sdk::{
    Resource,
    trace::{SpanData, SpanEvents, SpanExporter as _, SpanLinks},
};
use tokio::sync::mpsc;

use super::{
    audit::{Body, Record},
    metrics::{Metrics, OutcomeLabels},
    trace::{Sampler, Trace},
};
use crate::config::{OtlpProtocol, Traces};

#[derive(Debug, thiserror::Error)]
pub enum SpansError {
    #[error("traces.endpoint: cannot make the OTLP exporter: {0}")]
    Exporter(String),
    #[error("starting the trace exporter thread: {0}")]
    Thread(#[from] std::io::Error),
}

/// Where records' spans go. Cheap to clone.
#[derive(Clone)]
pub struct Spans {
    tx: mpsc::Sender<SpanData>,
    metrics: Arc<Metrics>,
    sampler: Sampler,
}

impl Spans {
    /// Starts the exporter thread when `traces.endpoint` is set. The receiver resolves when the
    /// thread has exported what was queued, after every [`Spans`] clone is dropped.
    pub fn start(
        cfg: &Traces,
        metrics: Arc<Metrics>,
    ) -> Result<Option<(Spans, tokio::sync::oneshot::Receiver<()>)>, SpansError> {
        let Some(endpoint) = cfg.endpoint.clone() else { return Ok(None) };
        let sampler = Sampler::new(cfg.sample_ratio);
        let (tx, rx) = mpsc::channel(cfg.queue);
        let (built_tx, built_rx) = std::sync::mpsc::channel();
        let (done, finished) = tokio::sync::oneshot::channel();
        let cfg = cfg.clone();
        let m = metrics.clone();
        std::thread::Builder::new().name("nodegate-traces".into()).spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = built_tx.send(Err(e.to_string()));
                    return;
                }
            };
            // The gRPC client is made inside the runtime it will run on.
            let exporter = rt.block_on(async { exporter(&cfg, &endpoint) });
            match exporter {
                Ok(exp) => {
                    let _ = built_tx.send(Ok(()));
                    rt.block_on(export_loop(rx, exp, &cfg, m));
                }
                Err(e) => {
                    let _ = built_tx.send(Err(e));
                }
            }
            let _ = done.send(());
        })?;
        match built_rx.recv() {
            Ok(Ok(())) => Ok(Some((Spans { tx, metrics, sampler }, finished))),
            Ok(Err(e)) => Err(SpansError::Exporter(e)),
            Err(_) => Err(SpansError::Exporter("the exporter thread ended".into())),
        }
    }

    /// The trace context of a new action, a child of the client's `traceparent` if valid.
    pub fn begin(&self, traceparent: Option<&str>) -> Trace {
        self.sampler.begin(traceparent)
    }

    /// Queues the spans of `record` (its action and upstream attempts), if it carries a
    /// sampled trace.
    pub fn record(&self, record: &Record) {
        let Some(trace) = record.trace.as_deref().filter(|t| t.sampled) else { return };
        for span in spans_of(record, trace) {
            if self.tx.try_send(span).is_err() {
                self.metrics.trace_spans.get_or_create(&OutcomeLabels { outcome: "dropped" }).inc();
            }
        }
    }
}

fn exporter(cfg: &Traces, endpoint: &str) -> Result<opentelemetry_otlp::SpanExporter, String> {
    let endpoint = endpoint.trim_end_matches('/');
    let built = match cfg.protocol {
        OtlpProtocol::Http => opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(format!("{endpoint}/v1/traces"))
            .with_timeout(cfg.timeout)
            .build(),
        OtlpProtocol::Grpc => opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .with_timeout(cfg.timeout)
            .build(),
    };
    let mut exp = built.map_err(|e| e.to_string())?;
    exp.set_resource(&Resource::builder_empty().with_service_name(cfg.service_name.clone()).build());
    Ok(exp)
}

async fn export_loop(
    mut rx: mpsc::Receiver<SpanData>,
    exporter: opentelemetry_otlp::SpanExporter,
    cfg: &Traces,
    metrics: Arc<Metrics>,
) {
    let count = |outcome: &'static str, n: usize| {
        metrics.trace_spans.get_or_create(&OutcomeLabels { outcome }).inc_by(n as u64);
    };
    let mut batch = Vec::with_capacity(cfg.batch);
    let mut failing_since: Option<std::time::Instant> = None;
    loop {
        // Wait for a first span, then up to `interval` for the batch to fill.
        if rx.recv_many(&mut batch, cfg.batch).await == 0 {
            break;
        }
        let deadline = tokio::time::Instant::now() + cfg.interval;
        while batch.len() < cfg.batch {
            let room = cfg.batch - batch.len();
            match tokio::time::timeout_at(deadline, rx.recv_many(&mut batch, room)).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        let n = batch.len();
        let sent = tokio::time::timeout(cfg.timeout, exporter.export(std::mem::take(&mut batch))).await;
        match sent {
            Ok(Ok(())) => {
                count("exported", n);
                failing_since = None;
            }
            Ok(Err(e)) => {
                count("failed", n);
                if failing_since.is_none_or(|t| t.elapsed() >= std::time::Duration::from_secs(10)) {
                    tracing::warn!(error = %e, spans = n, "trace export failed; spans are being lost");
                    failing_since = Some(std::time::Instant::now());
                }
            }
            Err(_) => {
                count("failed", n);
                tracing::warn!(spans = n, timeout = ?cfg.timeout, "trace export timed out (traces.timeout)");
            }
        }
        batch = Vec::with_capacity(cfg.batch);
    }
}

fn span_context(trace: &Trace, span_id: [u8; 8]) -> SpanContext {
    SpanContext::new(
        TraceId::from_bytes(trace.trace_id),
        SpanId::from_bytes(span_id),
        TraceFlags::SAMPLED,
        false,
        TraceState::default(),
    )
}

fn scope() -> InstrumentationScope {
    static SCOPE: std::sync::OnceLock<InstrumentationScope> = std::sync::OnceLock::new();
    SCOPE
        .get_or_init(|| {
            InstrumentationScope::builder("nodegate").with_version(env!("CARGO_PKG_VERSION")).build()
        })
        .clone()
}

fn kv(k: &'static str, v: impl Into<opentelemetry::Value>) -> KeyValue {
    KeyValue::new(k, v)
}

/// The action's span and its attempts' spans.
fn spans_of(r: &Record, trace: &Trace) -> Vec<SpanData> {
    let mut attrs = vec![
        kv("nodegate.kind", r.kind),
        kv("nodegate.identity", r.identity.to_string()),
        kv("nodegate.mode", r.mode),
        kv("nodegate.decision", r.decision),
        kv("server.address", r.target.clone()),
    ];
    if let Some(p) = &r.principal {
        attrs.push(kv("nodegate.principal", p.to_string()));
    }
    if let Some(rule) = &r.rule {
        attrs.push(kv("nodegate.rule", rule.to_string()));
    }
    if let Some(pod) = &r.pod {
        attrs.push(kv("k8s.namespace.name", pod.namespace.to_string()));
        attrs.push(kv("k8s.pod.name", pod.name.to_string()));
    }
    let (name, error) = describe(&r.body, &mut attrs);
    let failed = error.is_some() || r.decision == "deny";
    if let Some(e) = &error {
        attrs.push(kv("error.type", e.clone()));
    }
    let end = SystemTime::now();
    let mut out = Vec::with_capacity(1 + trace.attempts.len());
    out.push(SpanData {
        span_context: span_context(trace, trace.span_id),
        parent_span_id: trace.parent_span.map_or(SpanId::INVALID, SpanId::from_bytes),
        parent_span_is_remote: trace.parent_span.is_some(),
        span_kind: SpanKind::Server,
        name: Cow::Owned(name),
        start_time: trace.start,
        end_time: end.max(trace.start),
        attributes: attrs,
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status: if failed {
            Status::Error { description: Cow::Owned(error.unwrap_or_else(|| "denied".into())) }
        } else {
            Status::Unset
        },
        instrumentation_scope: scope(),
    });
    for a in &trace.attempts {
        let mut attrs = vec![kv("url.full", a.target.clone())];
        if let Some(s) = a.status {
            attrs.push(kv("http.response.status_code", i64::from(s)));
        }
        let bad = a.error.clone().or_else(|| a.status.filter(|s| *s >= 500).map(|s| s.to_string()));
        if let Some(e) = &bad {
            attrs.push(kv("error.type", e.clone()));
        }
        out.push(SpanData {
            span_context: span_context(trace, a.span_id),
            parent_span_id: SpanId::from_bytes(trace.span_id),
            parent_span_is_remote: false,
            span_kind: SpanKind::Client,
            name: Cow::Borrowed("POST"),
            start_time: a.start,
            end_time: a.end.max(a.start),
            attributes: attrs,
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: match bad {
                Some(e) => Status::Error { description: Cow::Owned(e) },
                None => Status::Unset,
            },
            instrumentation_scope: scope(),
        });
    }
    out
}

/// The span name and kind-specific attributes of a record body, and its error if any.
fn describe(body: &Body, attrs: &mut Vec<KeyValue>) -> (String, Option<String>) {
    match body {
        Body::Llm(c) => {
            let op = match c.api {
                "embeddings" => "embeddings",
                "text_completion" => "text_completion",
                _ => "chat",
            };
            attrs.push(kv("gen_ai.operation.name", op));
            let provider = if c.path.starts_with("/v1/messages") { "anthropic" } else { "openai" };
            attrs.push(kv("gen_ai.provider.name", provider));
            attrs.push(kv("gen_ai.system", provider));
            if let Some(p) = &c.provider {
                attrs.push(kv("nodegate.llm.provider", p.to_string()));
            }
            if let Some(m) = &c.requested_model {
                attrs.push(kv("gen_ai.request.model", m.clone()));
            }
            if let Some(m) = &c.model {
                attrs.push(kv("gen_ai.response.model", m.clone()));
            }
            attrs.push(kv("gen_ai.usage.input_tokens", c.input_tokens as i64));
            attrs.push(kv("gen_ai.usage.output_tokens", c.output_tokens as i64));
            attrs.push(kv("nodegate.llm.stream", c.stream));
            attrs.push(kv("nodegate.llm.cost_usd", c.cost_usd));
            attrs.push(kv("http.response.status_code", i64::from(c.status)));
            let name = match &c.requested_model {
                Some(m) => format!("{op} {m}"),
                None => op.to_string(),
            };
            let error = c.error.clone().or_else(|| (c.status >= 400).then(|| c.status.to_string()));
            (name, error)
        }
        Body::Mcp(c) => {
            attrs.push(kv("mcp.method.name", c.method.clone()));
            attrs.push(kv("mcp.protocol.version", c.protocol_version.clone()));
            if let Some(s) = &c.server {
                attrs.push(kv("nodegate.mcp.server", s.to_string()));
            }
            if c.method == "tools/call" {
                attrs.push(kv("gen_ai.operation.name", "execute_tool"));
                if let Some(n) = &c.name {
                    attrs.push(kv("gen_ai.tool.name", n.clone()));
                }
            } else if let Some(n) = &c.name {
                attrs.push(kv("nodegate.mcp.name", n.clone()));
            }
            attrs.push(kv("nodegate.mcp.outcome", c.outcome));
            let name = match &c.name {
                Some(n) => format!("{} {n}", c.method),
                None => c.method.clone(),
            };
            let error = c.error.clone().or_else(|| c.tool_error.then(|| "tool_error".to_string()));
            (name, error)
        }
        Body::A2a(c) => {
            attrs.push(kv("nodegate.a2a.agent", c.agent.to_string()));
            attrs.push(kv("nodegate.a2a.method", c.method));
            if let Some(t) = &c.task_id {
                attrs.push(kv("nodegate.a2a.task_id", t.clone()));
            }
            if let Some(s) = &c.skill {
                attrs.push(kv("nodegate.a2a.skill", s.clone()));
            }
            attrs.push(kv("http.response.status_code", i64::from(c.status)));
            (format!("a2a {}", c.method), c.error.clone())
        }
        Body::Http { method, path, status, error, host, .. } => {
            attrs.push(kv("http.request.method", method.clone()));
            attrs.push(kv("url.path", path.split('?').next().unwrap_or("").to_string()));
            attrs.push(kv("http.response.status_code", i64::from(*status)));
            if let Some(h) = host {
                attrs.push(kv("nodegate.http.host", h.clone()));
            }
            let error = error.clone().or_else(|| (*status >= 500).then(|| status.to_string()));
            (method.clone(), error)
        }
        Body::Connection { error, .. } => ("connection".to_string(), error.clone()),
    }
}
