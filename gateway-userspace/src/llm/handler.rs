//! One LLM call, top to bottom: identify -> parse -> route -> allow list -> reserve budget ->
//! upstream (credentials injected; failover before the first byte) -> account the response.
//! Every refusal is answered in the provider's error format and audited.
use std::{sync::Arc, time::Instant};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;

use super::{
    Llm,
    budget::Charge,
    error::LlmError,
    format::{self, Api},
    route::{Candidate, Via},
    stream::{Accounted, Settle},
    tokens,
};
use crate::{
    identity::Identity,
    inference::endpoint::InFlight,
    proxy::{Conn, Ctx, upstream::Body},
    telemetry::{
        audit::{Body as AuditBody, LlmCall, Record},
        llm_metrics::{BudgetLabels, CallLabels, PickLabels, PoolLabels, ProviderLabels},
    },
};

fn refuse(
    ctx: &Ctx,
    conn: &Conn,
    identity: &Identity,
    api: Api,
    mut call: LlmCall,
    err: LlmError,
    start: Instant,
) -> Response<Body> {
    call.status = err.status.as_u16();
    call.error = Some(err.message.clone());
    call.duration_ms = start.elapsed().as_secs_f64() * 1e3;
    let provider: Arc<str> = call.provider.clone().unwrap_or_else(|| Arc::from(""));
    ctx.metrics
        .llm
        .calls
        .get_or_create(&CallLabels {
            identity: identity.label(),
            gen_ai_provider_name: provider,
            gen_ai_request_model: ctx
                .metrics
                .llm
                .models
                .label(call.requested_model.as_deref().unwrap_or(""), false),
            status: crate::telemetry::metrics::status_class(err.status.as_u16()),
        })
        .inc();
    let target = conn.target.map(|t| t.to_string()).unwrap_or_default();
    let mut rec =
        Record::new("llm", identity, conn.mode, target, conn.protocol, AuditBody::Llm(Box::new(call)));
    if err.rule.is_some() {
        rec.decision = "deny";
        rec.rule = err.rule.as_deref().map(Arc::from);
    }
    ctx.audit.emit(rec);
    err.response(api.anthropic())
}

/// `GET /v1/models`: the model names this gateway routes that `identity` may use (its
/// `llm.allow` rule, or the default): a caller is not told of models it would be refused.
fn models(llm: &Llm, identity: &Identity) -> Response<Body> {
    let mut names: Vec<&String> =
        llm.routes.keys().filter(|m| llm.policy.check(identity, m).is_ok()).collect();
    names.sort();
    let data: Vec<_> = names
        .iter()
        .map(|n| serde_json::json!({"id": n, "object": "model", "created": 0, "owned_by": "nodegate"}))
        .collect();
    let body = serde_json::json!({"object": "list", "data": data});
    let mut r =
        Response::new(Full::new(Bytes::from(body.to_string())).map_err(|never| match never {}).boxed());
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

pub async fn handle(
    ctx: Arc<Ctx>,
    conn: Arc<Conn>,
    req: Request<Incoming>,
    api: Api,
    via: Via,
) -> Response<Body> {
    let start = Instant::now();
    let llm = ctx.llm.load_full();
    let keys = ctx.identities.keys();
    let identity = crate::identity::caller(&keys, &conn.identity, req.headers());
    let path =
        req.uri().path_and_query().map_or_else(|| req.uri().path().to_string(), |p| p.as_str().to_string());
    let mut call = LlmCall {
        api: api.label(),
        method: req.method().to_string(),
        path: path.clone(),
        ..LlmCall::default()
    };
    // When traces are exported: this call's span, under the client's `traceparent`.
    call.trace = ctx.audit.trace_of(req.headers());

    if api == Api::Models && req.method() == http::Method::GET && matches!(via, Via::Explicit) {
        return models(&llm, &identity);
    }
    if req.method() != http::Method::POST {
        let e = LlmError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request_error",
            format!("{} is not supported on {path}", req.method()),
        );
        return refuse(&ctx, &conn, &identity, api, call, e, start);
    }
    let json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !json {
        let e = LlmError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "invalid_request_error",
            "Content-Type must be application/json".into(),
        );
        return refuse(&ctx, &conn, &identity, api, call, e, start);
    }
    let (parts, body) = req.into_parts();
    let bytes = match Limited::new(body, llm.cfg.max_body_bytes).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            let too_big = e.downcast_ref::<http_body_util::LengthLimitError>().is_some();
            let e = if too_big {
                LlmError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "invalid_request_error",
                    format!("request body exceeds {} bytes", llm.cfg.max_body_bytes),
                )
            } else {
                LlmError::bad_request(format!("reading the request body: {e}"))
            };
            return refuse(&ctx, &conn, &identity, api, call, e, start);
        }
    };
    let mut parsed = match format::parse(api, &bytes) {
        Ok(p) => p,
        Err(e) => return refuse(&ctx, &conn, &identity, api, call, e, start),
    };
    call.requested_model = Some(parsed.model.clone());
    call.stream = parsed.stream;

    // A local inference pool (by intercepted Service or model name) or the configured routes.
    let prompt_text = format::prompt_text(api, &parsed.body);
    let dst = match &via {
        Via::Transparent { dst, .. } => Some(*dst),
        Via::Explicit => None,
    };
    let pool = ctx.pools.load().for_request(&parsed.model, dst).cloned();
    let mut candidates = if pool.is_some() { Vec::new() } else { llm.candidates(&parsed.model, &via) };
    if pool.is_none() && candidates.is_empty() {
        let e = LlmError::new(
            StatusCode::NOT_FOUND,
            "model_not_found",
            format!("The model `{}` does not exist or is not routed by this gateway", parsed.model),
        );
        return refuse(&ctx, &conn, &identity, api, call, e, start);
    }
    if let Err(d) = llm.policy.check(&identity, &parsed.model) {
        let mut e = LlmError::new(
            StatusCode::FORBIDDEN,
            "permission_denied",
            format!("{} may not use model `{}` ({})", crate::policy::who(&identity), parsed.model, d.rule),
        );
        e.rule = Some(d.rule);
        return refuse(&ctx, &conn, &identity, api, call, e, start);
    }
    let provider_name: Arc<str> = match (&pool, candidates.first()) {
        (Some(p), _) => p.name.clone(),
        (None, Some(c)) => c.provider.name.clone(),
        (None, None) => Arc::from(""),
    };
    let verdict = {
        let mut input = crate::policy::Input::new(crate::config::PolicyProtocol::Llm, &identity);
        input.destination.address = dst;
        input.request = Some(crate::policy::attrs::RequestAttrs {
            method: parts.method.as_str(),
            path: &path,
            headers: &parts.headers,
        });
        input.llm = Some(crate::policy::attrs::LlmAttrs {
            provider: &provider_name,
            model: &parsed.model,
            prompt_tokens: (prompt_text.len() as u64).div_ceil(4),
            max_tokens: parsed.max_tokens.unwrap_or(llm.cfg.default_max_tokens),
            stream: parsed.stream,
        });
        ctx.policy.decide(&ctx.metrics, &input)
    };
    if let Some(d) = &verdict.denied {
        let (status, kind) = match d.retry_after {
            Some(_) => (StatusCode::TOO_MANY_REQUESTS, "rate_limit_exceeded"),
            None => (StatusCode::FORBIDDEN, "permission_denied"),
        };
        let mut e = LlmError::new(status, kind, crate::policy::Verdict::message(d));
        e.retry_after = d.retry_after;
        e.rule = Some(d.rule.to_string());
        return refuse(&ctx, &conn, &identity, api, call, e, start);
    }

    if let Some(p) = &pool
        && p.members().endpoints.is_empty()
    {
        let e = LlmError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_endpoints",
            format!("Inference pool `{}` has no ready endpoint", p.name),
        );
        return refuse(&ctx, &conn, &identity, api, call, e, start);
    }
    // Admission: reserve the worst case, prompt estimate plus the output cap.
    let upstream_model = candidates.first().map_or_else(|| parsed.model.clone(), |c| c.model.clone());
    // Calibration is learned per (provider, model): the pool stands for its endpoints.
    let cal_provider = provider_name.clone();
    let messages = parsed.body.get("messages").and_then(|m| m.as_array()).map_or(1, Vec::len);
    // The tokenizer costs a regex pass over the prompt: run it now only when a budget needs the
    // number at admission; otherwise keep the text and count it at the end if the provider
    // reports no usage.
    let budgeted = api.charged() && llm.budgets.applies(&identity);
    let strict = budgeted && llm.cfg.budget_mode == crate::config::BudgetMode::Strict;
    let prompt_estimate = if budgeted {
        tokens::estimate_prompt(&upstream_model, &prompt_text, messages)
    } else {
        (prompt_text.len() as u64).div_ceil(4)
    };
    // The server's own count, where the operator asked for it: exact, so nothing to learn.
    let mut counted = None;
    if budgeted
        && pool.is_none()
        && let Some(first) = candidates.first()
        && first.provider.tokenize != crate::config::Tokenize::None
    {
        match super::server_tokens::count(
            &ctx.upstream,
            &first.provider,
            first.provider.tokenize,
            &parsed.body,
            &upstream_model,
        )
        .await
        {
            Ok(n) => counted = Some(n),
            Err(e) => {
                tracing::debug!(provider = %first.provider.name, error = %e, "the server's token count failed; estimating")
            }
        }
    }
    // Strict: a pair never observed goes one call at a time until the provider's count of a
    // prompt teaches what its template adds.
    let mut probe = None;
    if strict
        && counted.is_none()
        && let Some(sem) = llm.calibration.probe(&cal_provider, &upstream_model)
    {
        match tokio::time::timeout(llm.cfg.admission_wait, sem.acquire_owned()).await {
            Ok(Ok(permit)) => probe = Some(permit),
            _ => {
                let mut e = LlmError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limit_exceeded",
                    format!(
                        "strict budget admission: `{upstream_model}` at `{cal_provider}` is still being calibrated; retry shortly"
                    ),
                );
                e.retry_after = Some(std::time::Duration::from_secs(1));
                e.rule = Some("llm.budget_mode".into());
                return refuse(&ctx, &conn, &identity, api, call, e, start);
            }
        }
    }
    let overhead =
        if budgeted { llm.calibration.overhead(&cal_provider, &upstream_model).unwrap_or(0) } else { 0 };
    if strict {
        format::cap_output(api, &mut parsed, llm.cfg.default_max_tokens);
    }
    let mut output_cap =
        if api == Api::Embeddings { 0 } else { parsed.max_tokens.unwrap_or(llm.cfg.default_max_tokens) };
    let prompt_reserved = counted.unwrap_or_else(|| prompt_estimate.saturating_add(overhead));
    if budgeted {
        call.reserved_input_tokens = Some(prompt_reserved);
    }
    let mut reservation = None;
    // A stream that asks for more output than a token budget has left is admitted with its cap
    // lowered to what is left (told to the provider, and enforced by the cut-off): it stops at
    // the budget instead of being refused outright. Budgets are tried again at most twice.
    for attempt in 0..3 {
        if !api.charged() {
            break;
        }
        let charge = Charge {
            requests: 1,
            tokens: prompt_reserved.saturating_add(output_cap),
            micro_usd: llm.micro_usd(&upstream_model, prompt_reserved, 0, output_cap),
        };
        match llm.budgets.reserve(&identity, charge).await {
            Ok(r) => {
                reservation = Some(r);
                break;
            }
            Err(refusal) => {
                let room = refusal.tokens_left.map(|left| left.saturating_sub(prompt_reserved));
                // The cut-off gives its running estimate a quarter of slack (see
                // `stream::Accounted`): leave room for it, so even a provider that ignores the
                // cap is stopped within what is left.
                let cap = room.map(|r| r.saturating_sub(1) * 4 / 5);
                if let Some(cap) = cap
                    && attempt < 2
                    && parsed.stream
                    && llm.cfg.cut_off_streams
                    && cap > 0
                    && cap < output_cap
                {
                    output_cap = cap;
                    format::lower_output(api, &mut parsed, cap);
                    call.output_capped = Some(cap);
                    continue;
                }
                ctx.metrics
                    .llm
                    .budget_refusals
                    .get_or_create(&BudgetLabels {
                        budget: refusal.budget.clone(),
                        identity: identity.label(),
                    })
                    .inc();
                let mut e = LlmError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limit_exceeded",
                    format!(
                        "budget `{}` exhausted ({}) for {}; retry after {}s",
                        refusal.budget,
                        refusal.limit,
                        crate::policy::who(&identity),
                        refusal.retry_after.as_secs()
                    ),
                );
                e.retry_after = Some(refusal.retry_after);
                e.rule = Some(format!("llm.budgets.{}", refusal.budget));
                return refuse(&ctx, &conn, &identity, api, call, e, start);
            }
        }
    }
    // A stream may not produce more output than was reserved for it.
    let allowance = (llm.cfg.cut_off_streams && reservation.as_ref().is_some_and(|r| !r.is_empty()))
        .then_some(output_cap);

    if let Some(p) = &pool {
        let t0 = Instant::now();
        let hashes = p.block_hashes(&parsed.model, &prompt_text);
        let pick = p.pick(&hashes);
        let m = &ctx.metrics.llm;
        m.pick_duration
            .get_or_create(&PoolLabels { pool: p.name.clone() })
            .observe(t0.elapsed().as_secs_f64());
        if let Some(first) = pick.order.first() {
            m.picks
                .get_or_create(&PickLabels {
                    pool: p.name.clone(),
                    endpoint: first.address.clone(),
                    strategy: strategy_label(p.cfg.strategy),
                })
                .inc();
        }
        call.pick_reason = Some(pick.reason);
        call.spilled = pick.spilled;
        candidates = pick
            .order
            .into_iter()
            .map(|ep| Candidate {
                provider: ep.provider.clone(),
                model: parsed.model.clone(),
                endpoint: Some(ep),
                origin: None,
            })
            .collect();
    }

    // Kept for an exact count at the end when only a rough estimate was made above.
    let mut prompt_kept = (!budgeted).then_some((prompt_text, messages));

    // Upstream, failing over before any byte reached the client.
    let hide_usage_chunk = format::adds_usage_option(api, &parsed);
    let last = candidates.len().saturating_sub(1);
    let mut failovers = 0;
    let mut last_error = String::new();
    for (i, cand) in candidates.iter().enumerate() {
        let body = format::upstream_body(api, &parsed, &cand.model);
        let uri = match &cand.origin {
            Some(o) => o.uri(&format!("{}{path}", cand.provider.prefix)),
            None => cand.provider.url(&path),
        };
        let uri = match uri {
            Ok(u) => u,
            Err(e) => {
                last_error = format!("provider {}: bad URL: {e}", cand.provider.name);
                continue;
            }
        };
        let built = Request::builder()
            .method(http::Method::POST)
            .uri(uri)
            .body(Full::new(Bytes::from(body)).map_err(|never| match never {}).boxed());
        let Ok(mut up_req) = built else { continue };
        for (name, value) in &parts.headers {
            if !crate::proxy::http::is_hop_or_framing(name) {
                up_req.headers_mut().append(name.clone(), value.clone());
            }
        }
        up_req.headers_mut().remove(header::CONTENT_LENGTH);
        crate::identity::strip_credentials(&keys, up_req.headers_mut());
        if cand.origin.as_ref().is_none_or(|o| o.verified) {
            cand.provider.inject(up_req.headers_mut());
        } else {
            // An upstream nobody verified gets no key, whatever the agent sent either.
            crate::llm::providers::ProviderState::remove_credentials(up_req.headers_mut());
        }
        // The attempt's own span, named upstream so the provider's spans are its children.
        let attempt = call.trace.as_ref().map(|t| {
            let (id, traceparent) = t.attempt();
            up_req.headers_mut().insert("traceparent", traceparent);
            (id, std::time::SystemTime::now(), up_req.uri().to_string())
        });
        let in_flight =
            cand.endpoint.as_ref().map(|ep| InFlight::new(ep.clone(), prompt_estimate + output_cap));
        let sent = async {
            match &cand.origin {
                Some(o) => o.request(up_req).await,
                None => ctx.upstream.llm.request(up_req).await,
            }
        };
        let result = match tokio::time::timeout(llm.cfg.response_timeout, sent).await {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(_) => {
                ctx.metrics.limit_hit("llm.response_timeout");
                Err(format!("no response within {:?} (llm.response_timeout)", llm.cfg.response_timeout))
            }
        };
        if let (Err(_), Some(ep), Some(p)) = (&result, &cand.endpoint, &pool) {
            ep.failed(p.cfg.eject_after);
        }
        if let (Some(t), Some((id, at, target))) = (call.trace.as_mut(), attempt) {
            let (status, error) = match &result {
                Ok(r) => (Some(r.status().as_u16()), None),
                Err(e) => (None, Some(e.clone())),
            };
            t.attempted(id, at, target, status, error);
        }
        let retryable = match &result {
            Err(e) => {
                last_error = format!("provider {}: {e}", cand.provider.name);
                true
            }
            Ok(r) if r.status() == StatusCode::TOO_MANY_REQUESTS || r.status().is_server_error() => {
                last_error = format!("provider {} answered {}", cand.provider.name, r.status());
                true
            }
            Ok(_) => false,
        };
        if retryable && i < last {
            cand.provider.cool_down(llm.cfg.cooldown);
            ctx.metrics
                .llm
                .failovers
                .get_or_create(&ProviderLabels { gen_ai_provider_name: cand.provider.name.clone() })
                .inc();
            tracing::info!(provider = %cand.provider.name, error = %last_error, "failing over to the next provider");
            failovers += 1;
            continue;
        }
        let resp = match result {
            Ok(r) => r,
            Err(_) => {
                cand.provider.cool_down(llm.cfg.cooldown);
                break;
            }
        };
        if !retryable {
            cand.provider.recovered();
        }
        call.model = Some(cand.model.clone());
        call.upstream = Some(cand.provider.base.to_string().trim_end_matches('/').to_string());
        call.endpoint = cand.endpoint.as_ref().map(|ep| ep.address.clone());
        call.status = resp.status().as_u16();
        call.failovers = failovers;
        let (mut rparts, rbody) = resp.into_parts();
        let sse = rparts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        // Our rewriting changes the length; hyper re-frames the body.
        if sse || hide_usage_chunk {
            rparts.headers.remove(header::CONTENT_LENGTH);
        }
        for h in ["connection", "keep-alive", "transfer-encoding"] {
            rparts.headers.remove(h);
        }
        let settle = Settle {
            ctx: ctx.clone(),
            llm: llm.clone(),
            conn: conn.clone(),
            identity: identity.clone(),
            api,
            provider: cand.provider.name.clone(),
            call,
            reservation,
            prompt_estimate,
            prompt_text: prompt_kept.take(),
            start,
            first_token: None,
            usage: None,
            estimated_output: 0,
            decision: "allow",
            rule: None,
            policy: verdict.mark(),
            in_flight,
            calibrate: budgeted.then(|| (cal_provider.clone(), upstream_model.clone(), prompt_estimate)),
            probe: probe.take(),
        };
        let body = Accounted::new(rbody, sse, hide_usage_chunk, allowance, llm.cfg.stream_idle, settle);
        return Response::from_parts(rparts, body.boxed());
    }
    // Every candidate failed before answering.
    if let Some(r) = reservation {
        let budgets = llm.budgets.clone();
        tokio::spawn(async move { budgets.settle(r, Charge { requests: 1, tokens: 0, micro_usd: 0 }).await });
    }
    call.failovers = failovers;
    let e = LlmError::new(
        StatusCode::BAD_GATEWAY,
        "upstream_error",
        format!("no provider answered: {last_error}"),
    );
    refuse(&ctx, &conn, &identity, api, call, e, start)
}

fn strategy_label(s: crate::config::PickStrategy) -> &'static str {
    use crate::config::PickStrategy::*;
    match s {
        Scorer => "scorer",
        RoundRobin => "round-robin",
        Random => "random",
        LeastRequest => "least-request",
        PowerOfTwo => "power-of-two",
    }
}
