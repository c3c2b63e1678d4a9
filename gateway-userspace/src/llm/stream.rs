//! The response side of an LLM call: the provider's body streams through to the client as it
//! arrives while usage is read from it (SSE events parsed one by one; JSON bodies copied aside
//! and parsed at the end). The usage chunk the gateway asked for on the client's behalf is
//! removed; a stream that outruns its budget is ended with a final error event. When the body
//! ends (or the client goes away) the call is settled: budget true-up, metrics, one audit record.
use std::{
    collections::VecDeque,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body::Frame;
use hyper::body::{Body as _, Incoming};

use super::{
    Llm,
    budget::{Charge, Reservation},
    error::LlmError,
    format::Api,
    sse::Splitter,
    tokens,
    usage::{Keep, StreamUsage, Usage},
};
use crate::{
    proxy::{Conn, Ctx},
    telemetry::{
        audit::{Body as AuditBody, LlmCall, Record},
        llm_metrics::{CallLabels, ModelLabels, OpLabels, TokenLabels},
        metrics::status_class,
    },
};

/// Largest non-streamed body kept aside for reading its usage.
const JSON_COPY_MAX: usize = 16 * 1024 * 1024;

/// Everything needed to settle a call when its response ends.
pub struct Settle {
    pub ctx: Arc<Ctx>,
    pub llm: Arc<Llm>,
    pub conn: Arc<Conn>,
    pub identity: Arc<crate::identity::Identity>,
    pub api: Api,
    pub call: LlmCall,
    pub provider: Arc<str>,
    pub reservation: Option<Reservation>,
    pub prompt_estimate: u64,
    /// The prompt and its message count, when the estimate above is only a rough one.
    pub prompt_text: Option<(String, usize)>,
    pub start: Instant,
    pub first_token: Option<Instant>,
    pub usage: Option<Usage>,
    pub estimated_output: u64,
    pub decision: &'static str,
    pub rule: Option<String>,
    /// What `policy.rules` decided (the allowing rule, a dry run's finding).
    pub policy: crate::policy::Mark,
    /// Keeps the pool endpoint's in-flight count until the response ends.
    pub in_flight: Option<crate::inference::endpoint::InFlight>,
    /// (provider or pool, model, prompt estimate): what the provider's own prompt count teaches.
    pub calibrate: Option<(Arc<str>, String, u64)>,
    /// A strict-mode probe admission, released when the call has taught its overhead.
    pub probe: Option<super::calibrate::ProbePermit>,
}

impl Drop for Settle {
    fn drop(&mut self) {
        let model = self.call.model.clone().unwrap_or_default();
        let (usage, estimated) = match self.usage {
            Some(u) => (u, false),
            None if self.call.status / 100 == 2 && self.api.charged() => {
                let input = match &self.prompt_text {
                    Some((text, messages)) => tokens::estimate_prompt(&model, text, *messages),
                    None => self.prompt_estimate,
                };
                (Usage { input, output: self.estimated_output, ..Usage::default() }, true)
            }
            None => (Usage::default(), false),
        };
        if let (Some((provider, model, estimate)), false) = (&self.calibrate, estimated)
            && usage.input > 0
        {
            self.llm.calibration.observe(provider, model, *estimate, usage.input);
        }
        let micro = self.llm.micro_usd(&model, usage.input, usage.cached_input, usage.output);
        if let Some(r) = self.reservation.take() {
            let budgets = self.llm.budgets.clone();
            let actual = Charge { requests: 1, tokens: usage.total(), micro_usd: micro };
            tokio::spawn(async move { budgets.settle(r, actual).await });
        }
        let m = &self.ctx.metrics.llm;
        let ident = self.identity.label();
        let succeeded = (200..300).contains(&self.call.status) && self.call.error.is_none();
        let model_label = m.models.label(self.call.requested_model.as_deref().unwrap_or(""), succeeded);
        let status = if self.call.status == 0 { "error" } else { status_class(self.call.status) };
        m.calls
            .get_or_create(&CallLabels {
                identity: ident.clone(),
                gen_ai_provider_name: self.provider.clone(),
                gen_ai_request_model: model_label.clone(),
                status,
            })
            .inc();
        for (ty, n) in [
            ("input", usage.input),
            ("output", usage.output),
            ("cached_input", usage.cached_input),
            ("cache_creation", usage.cache_creation),
            ("reasoning", usage.reasoning),
        ] {
            let labels = TokenLabels {
                identity: ident.clone(),
                gen_ai_provider_name: self.provider.clone(),
                gen_ai_request_model: model_label.clone(),
                gen_ai_token_type: ty,
            };
            if n > 0 {
                m.tokens.get_or_create(&labels).inc_by(n);
            }
            if (ty == "input" || ty == "output") && usage.total() > 0 {
                m.token_usage.get_or_create(&labels).observe(n as f64);
            }
        }
        let elapsed = self.start.elapsed();
        let ml = ModelLabels {
            gen_ai_provider_name: self.provider.clone(),
            gen_ai_request_model: model_label.clone(),
        };
        if let Some(first) = self.first_token {
            m.ttft.get_or_create(&ml).observe(first.duration_since(self.start).as_secs_f64());
            if usage.output > 1 {
                m.tpot.get_or_create(&ml).observe(first.elapsed().as_secs_f64() / (usage.output - 1) as f64);
            }
            self.call.ttft_ms = Some(first.duration_since(self.start).as_secs_f64() * 1e3);
        }
        m.duration
            .get_or_create(&OpLabels {
                identity: ident,
                gen_ai_provider_name: self.provider.clone(),
                gen_ai_request_model: model_label,
                gen_ai_operation_name: self.api.label(),
            })
            .observe(elapsed.as_secs_f64());

        let mut call = std::mem::take(&mut self.call);
        call.input_tokens = usage.input;
        call.output_tokens = usage.output;
        call.cached_input_tokens = usage.cached_input;
        call.cache_creation_tokens = usage.cache_creation;
        call.reasoning_tokens = usage.reasoning;
        call.estimated = estimated;
        call.cost_usd = micro as f64 / 1e6;
        call.duration_ms = elapsed.as_secs_f64() * 1e3;
        call.provider = Some(self.provider.clone());
        let target = self.conn.target.map(|t| t.to_string()).unwrap_or_else(|| self.provider.to_string());
        let mut rec = Record::new(
            "llm",
            &self.identity,
            self.conn.mode,
            target,
            self.conn.protocol,
            AuditBody::Llm(Box::new(call)),
        );
        rec.decision = self.decision;
        rec.rule = self.rule.take().map(Arc::from);
        self.policy.apply(&mut rec);
        self.ctx.audit.emit(rec);
    }
}

pub struct Accounted {
    inner: Incoming,
    api: Api,
    model: String,
    sse: Option<Splitter>,
    json: Option<Vec<u8>>,
    stream: StreamUsage,
    hide_usage_chunk: bool,
    /// Output tokens this stream may produce before it is cut off (None: no limit).
    allowance: Option<u64>,
    counted_chars: usize,
    out: VecDeque<Bytes>,
    ended: bool,
    settle: Option<Settle>,
    /// The provider's last event has been handed to the client: a close from here on is a
    /// client done reading, not one that gave up.
    end_delivered: bool,
    /// A stream's end at the shutdown drain deadline, if nodegate stops while it runs.
    deadline: Option<crate::proxy::Deadline>,
    /// `llm.stream_idle`: the longest the provider may go without a byte.
    idle: Duration,
    /// Made the first time the provider keeps us waiting (most reads are ready at once).
    idle_timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

/// A JSON answer whose provider went quiet mid-body.
#[derive(Debug, thiserror::Error)]
#[error("the provider sent nothing for {0:?} (llm.stream_idle)")]
pub struct ProviderIdle(pub Duration);

impl Accounted {
    pub fn new(
        inner: Incoming,
        sse: bool,
        hide_usage_chunk: bool,
        allowance: Option<u64>,
        idle: Duration,
        settle: Settle,
    ) -> Self {
        let model = settle.call.model.clone().unwrap_or_default();
        let deadline = sse.then(|| crate::proxy::deadline(settle.ctx.deadline.clone()));
        Self {
            deadline,
            inner,
            api: settle.api,
            model,
            sse: sse.then(Splitter::default),
            json: (!sse).then(Vec::new),
            stream: StreamUsage::default(),
            hide_usage_chunk,
            allowance,
            counted_chars: 0,
            out: VecDeque::new(),
            ended: false,
            settle: Some(settle),
            end_delivered: false,
            idle,
            idle_timer: None,
        }
    }

    /// The provider went quiet for `llm.stream_idle`: a stream ends with an error event the
    /// SDKs raise; a JSON answer breaks off (`Some`: the error to return).
    fn went_idle(&mut self) -> Option<crate::proxy::upstream::BoxError> {
        let idle = ProviderIdle(self.idle);
        let reported = self.stream.reported;
        if let Some(s) = self.settle.as_mut() {
            s.ctx.metrics.limit_hit("llm.stream_idle");
            s.call.error = Some(idle.to_string());
            s.usage = reported;
        }
        self.ended = true;
        if self.sse.is_some() {
            let err = LlmError::new(http::StatusCode::GATEWAY_TIMEOUT, "upstream_timeout", idle.to_string());
            self.out.push_back(err.sse_event(self.api.anthropic()));
            return None;
        }
        self.settle = None;
        Some(Box::new(idle))
    }

    fn on_data(&mut self, data: &Bytes) {
        if let Some(buf) = self.json.as_mut() {
            if buf.len() + data.len() <= JSON_COPY_MAX {
                buf.extend_from_slice(data);
            }
            self.out.push_back(data.clone());
            return;
        }
        let Some(splitter) = self.sse.as_mut() else { return };
        for ev in splitter.push(data) {
            let keep = self.stream.on_event(self.api, ev.name.as_deref(), &ev.data, self.hide_usage_chunk);
            if keep == Keep::Yes {
                self.out.push_back(ev.raw);
            }
            self.count_new_text();
            if self.over_allowance() {
                self.cut_off();
                return;
            }
        }
    }

    /// Tokenizes only the text that arrived since the last event.
    /// Keeps a cheap running estimate of the output (one token per content chunk, or a token
    /// per four bytes if that is more): the tokenizer costs a regex pass per call, so it runs
    /// once at the end, and only when the provider reported no usage.
    fn count_new_text(&mut self) {
        let text = &self.stream.output_text;
        if text.len() > self.counted_chars {
            self.counted_chars = text.len();
            let estimate = self.stream.chunks.max(text.len().div_ceil(4) as u64);
            if let Some(s) = self.settle.as_mut() {
                s.estimated_output = estimate;
                if s.first_token.is_none() {
                    s.first_token = Some(Instant::now());
                }
            }
        }
    }

    fn over_allowance(&self) -> bool {
        let (Some(limit), Some(s)) = (self.allowance, self.settle.as_ref()) else { return false };
        let reported = self.stream.reported.map_or(0, |u| u.output);
        // The running estimate is approximate: give it a quarter of slack so a stream that stays
        // within its max_tokens is never cut; a reported count is exact.
        reported > limit || s.estimated_output > limit + limit / 4 + 1
    }

    fn cut_off(&mut self) {
        let err = LlmError::new(
            http::StatusCode::TOO_MANY_REQUESTS,
            "insufficient_quota",
            "the stream ran past the workload's remaining token budget and was ended by the gateway".into(),
        );
        self.out.push_back(err.sse_event(self.api.anthropic()));
        self.ended = true;
        if let Some(s) = self.settle.as_mut() {
            s.call.error = Some("cut off: token budget exhausted mid-stream".into());
            s.decision = "deny";
            s.rule = Some("budget (mid-stream)".into());
        }
    }

    fn finish(&mut self) {
        if let Some(rest) = self.sse.as_mut().and_then(Splitter::finish) {
            self.stream.on_event(self.api, rest.name.as_deref(), &rest.data, false);
            self.out.push_back(rest.raw);
            self.count_new_text();
        }
        if let Some(s) = self.settle.as_mut() {
            s.usage = match &self.json {
                Some(buf) => super::usage::from_json(self.api, buf),
                None => self.stream.reported,
            };
            if s.usage.is_none() && !self.stream.output_text.is_empty() {
                s.estimated_output = tokens::count(&self.model, &self.stream.output_text);
            }
        }
        self.ended = true;
    }
}

impl hyper::body::Body for Accounted {
    type Data = Bytes;
    type Error = crate::proxy::upstream::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, crate::proxy::upstream::BoxError>>> {
        // Accounted is Unpin (every field is), so plain field access is fine.
        let this = self.get_mut();
        loop {
            if let Some(b) = this.out.pop_front() {
                // Everything read so far goes out now: once the provider's last event has been
                // read, the client has it all.
                this.end_delivered = this.stream.finished;
                // Events completed by one upstream read go out as one frame (one write).
                if this.out.is_empty() {
                    return Poll::Ready(Some(Ok(Frame::data(b))));
                }
                let mut all =
                    bytes::BytesMut::with_capacity(b.len() + this.out.iter().map(Bytes::len).sum::<usize>());
                all.extend_from_slice(&b);
                while let Some(more) = this.out.pop_front() {
                    all.extend_from_slice(&more);
                }
                return Poll::Ready(Some(Ok(Frame::data(all.freeze()))));
            }
            if this.ended {
                // Dropping Settle (in Drop of self or here) writes the record.
                this.settle = None;
                return Poll::Ready(None);
            }
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => {
                    // Shutting down and the drain deadline passed: end with a clean error the
                    // SDKs raise, rather than a connection cut mid-stream.
                    if this.deadline.as_mut().is_some_and(|d| d.as_mut().poll(cx).is_ready()) {
                        this.deadline = None;
                        let err = LlmError::new(
                            http::StatusCode::SERVICE_UNAVAILABLE,
                            "gateway_shutting_down",
                            "nodegate is shutting down: the stream was ended at the drain deadline (timeouts.drain); retry"
                                .into(),
                        );
                        let reported = this.stream.reported;
                        if let Some(s) = this.settle.as_mut() {
                            s.call.error = Some("ended at the shutdown drain deadline".into());
                            s.usage = reported;
                        }
                        this.out.push_back(err.sse_event(this.api.anthropic()));
                        this.ended = true;
                        continue;
                    }
                    let idle = this.idle;
                    let timer = this.idle_timer.get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                    if timer.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    match this.went_idle() {
                        Some(e) => return Poll::Ready(Some(Err(e))),
                        None => continue,
                    }
                }
                Poll::Ready(None) => this.finish(),
                Poll::Ready(Some(Err(e))) => {
                    let reported = this.stream.reported;
                    if let Some(s) = this.settle.as_mut() {
                        s.call.error = Some(format!("upstream failed mid-response: {e}"));
                        s.usage = reported;
                    }
                    if this.sse.is_some() {
                        // A stream ends with a clean error event the SDKs raise, never a
                        // truncated or spliced answer.
                        let err = LlmError::new(
                            http::StatusCode::BAD_GATEWAY,
                            "upstream_error",
                            format!("the provider's stream broke off: {e}"),
                        );
                        let anthropic = this.api.anthropic();
                        this.out.push_back(err.sse_event(anthropic));
                        this.ended = true;
                        continue;
                    }
                    this.settle = None;
                    this.ended = true;
                    return Poll::Ready(Some(Err(e.into())));
                }
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        if let Some(t) = this.idle_timer.as_mut() {
                            t.as_mut().reset(tokio::time::Instant::now() + this.idle);
                        }
                        this.on_data(&data);
                        // A body of known length is complete without a final `None`; the
                        // server may never poll again, so settle now.
                        if this.inner.is_end_stream() {
                            this.finish();
                        }
                    }
                    Err(frame) => return Poll::Ready(Some(Ok(frame))),
                },
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended && self.out.is_empty()
    }
}

impl Drop for Accounted {
    fn drop(&mut self) {
        // The client went away before the end: settle with what was seen.
        if !self.ended && self.settle.is_some() {
            let complete = self.inner.is_end_stream() || self.end_delivered;
            self.finish();
            if let Some(s) = self.settle.as_mut()
                && !complete
            {
                s.call.error.get_or_insert_with(|| "client closed before the response ended".into());
            }
        }
    }
}
