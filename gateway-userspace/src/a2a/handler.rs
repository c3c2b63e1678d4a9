//! `/a2a/<name>/...` on the explicit listener: the agent's card (rewritten) and its JSON-RPC
//! interface, governed. Anything else under the prefix (the REST binding) is refused rather than
//! passed on ungoverned.
use std::{sync::Arc, time::Instant};

use bytes::Bytes;
use http::{HeaderValue, Method as HttpMethod, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Empty, Full, Limited};
use hyper::body::Incoming;
use serde_json::{Value, json};

use super::{
    A2a, Agent,
    methods::{self, Method, Version, code},
    stream::{SseReader, Summary},
};
use crate::{
    identity::Identity,
    proxy::{
        Conn, Ctx,
        observed::{Observed, Observer},
        upstream::Body,
    },
    telemetry::{
        audit::{A2aCall, Body as AuditBody, Record},
        metrics::A2aLabels,
    },
};

pub const PREFIX: &str = "/a2a/";
const CARD_PATHS: [&str; 2] = ["/.well-known/agent-card.json", "/.well-known/agent.json"];
/// Largest non-streamed answer read from an agent (kept to learn the task and filter lists).
const MAX_ANSWER: usize = 16 << 20;

fn json_response(status: StatusCode, v: &Value) -> Response<Body> {
    let mut r = Response::new(full(Bytes::from(serde_json::to_vec(v).unwrap_or_default())));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn full(b: Bytes) -> Body {
    Full::new(b).map_err(|never| match never {}).boxed()
}

fn rpc_error(id: &Value, code: i64, message: &str) -> Response<Body> {
    json_response(
        StatusCode::OK,
        &json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}}),
    )
}

/// Removes what is not passed on from `h` (hop-by-hop and framing headers), keeping
/// `content-length` when `keep_length` (an answer passed through as it is).
fn not_copied(h: &mut http::HeaderMap, keep_length: bool) {
    let drop: Vec<header::HeaderName> = h
        .keys()
        .filter(|n| {
            crate::proxy::http::is_hop_or_framing(n) && !(keep_length && *n == header::CONTENT_LENGTH)
        })
        .cloned()
        .collect();
    for n in drop {
        h.remove(n);
    }
}

/// Where a call goes: a registered agent's origin (explicit mode), or the destination an
/// intercepted connection was going to (transparent mode; through TLS when it was terminated).
pub enum Upstream {
    Registered(String),
    Intercepted { dst: std::net::SocketAddr, origin: Option<Arc<crate::tls::client::Origin>> },
}

impl Upstream {
    fn uri(&self, path: &str) -> Result<http::Uri, String> {
        let r = match self {
            Self::Registered(origin) => format!("{origin}{path}").parse::<http::Uri>(),
            Self::Intercepted { origin: Some(o), .. } => o.uri(path),
            Self::Intercepted { dst, origin: None } => format!("http://{dst}{path}").parse::<http::Uri>(),
        };
        r.map_err(|e| e.to_string())
    }

    async fn send(&self, ctx: &Ctx, req: Request<Body>) -> Result<Response<Incoming>, String> {
        let r = match self {
            Self::Intercepted { origin: Some(o), .. } => o.request(req).await,
            _ => ctx.upstream.http1.request(req).await,
        };
        r.map_err(|e| e.to_string())
    }
}

/// One call being handled: what the audit record and metrics will say.
struct Call {
    ctx: Arc<Ctx>,
    conn: Arc<Conn>,
    identity: Arc<Identity>,
    agent: Arc<str>,
    trace_id: Option<String>,
    start: Instant,
    rec: A2aCall,
    decision: &'static str,
    rule: Option<Arc<str>>,
}

impl Call {
    fn new(
        ctx: &Arc<Ctx>,
        conn: &Arc<Conn>,
        keys: &crate::identity::Keys,
        req: &Request<Incoming>,
        agent: Arc<str>,
    ) -> Self {
        let identity = crate::identity::caller(keys, &conn.identity, req.headers());
        let trace_id = req
            .headers()
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .and_then(crate::mcp::handler::trace_id);
        Self {
            ctx: ctx.clone(),
            conn: conn.clone(),
            identity,
            agent: agent.clone(),
            trace_id,
            start: Instant::now(),
            rec: A2aCall { agent, protocol_version: "1.0", ..Default::default() },
            decision: "allow",
            rule: None,
        }
    }

    fn finish(mut self) {
        self.rec.duration_ms = self.start.elapsed().as_secs_f64() * 1000.0;
        let labels =
            A2aLabels { agent: self.agent.clone(), method: self.rec.method, outcome: self.rec.outcome };
        self.ctx.metrics.a2a_calls.get_or_create(&labels).inc();
        let target = format!("a2a/{}", self.agent);
        let mut r = Record::new(
            "a2a",
            &self.identity,
            self.conn.mode,
            target,
            "a2a",
            AuditBody::A2a(Box::new(std::mem::take(&mut self.rec))),
        );
        r.decision = self.decision;
        r.rule = self.rule.take();
        r.trace_id = self.trace_id.take();
        self.ctx.audit.emit(r);
    }

    fn refuse(mut self, outcome: &'static str, rule: Option<&str>, error: String) {
        self.rec.outcome = outcome;
        self.rec.error = Some(error);
        if let Some(r) = rule {
            self.decision = "deny";
            self.rule = Some(r.into());
        }
        self.finish();
    }
}

pub async fn handle(ctx: Arc<Ctx>, conn: Arc<Conn>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    let rest = path.strip_prefix(PREFIX).unwrap_or("");
    let (name, sub) = rest.split_once('/').map_or((rest, ""), |(n, s)| (n, s));
    let sub = format!("/{sub}");
    let a2a = ctx.a2a.load_full();
    let Some(agent) = a2a.agent(name).cloned() else {
        return json_response(
            StatusCode::NOT_FOUND,
            &json!({"error": format!("no A2A agent named {name:?} here")}),
        );
    };
    let keys = ctx.identities.keys();
    let call = Call::new(&ctx, &conn, &keys, &req, agent.name.clone());
    match *req.method() {
        HttpMethod::GET if CARD_PATHS.contains(&sub.as_str()) => card(&a2a, &agent, req, sub, call).await,
        HttpMethod::POST => {
            let up = Upstream::Registered(agent.origin.clone());
            rpc(&a2a, agent.name.clone(), up, req, sub, call, &keys).await
        }
        _ => {
            let msg = "nodegate serves an A2A agent's card and JSON-RPC interface here; other bindings are not governed and not passed on";
            call.refuse("error", None, msg.into());
            json_response(StatusCode::METHOD_NOT_ALLOWED, &json!({"error": msg}))
        }
    }
}

/// An intercepted request to an A2A agent (a destination classed `a2a`, or a registered agent's
/// address): governed in place. JSON-RPC calls get the same policy, ownership and audit as at
/// `/a2a/<name>`; the card passes unchanged (the client is talking to the agent itself); other
/// requests (the REST binding) are refused rather than passed on ungoverned.
pub async fn transparent(
    ctx: Arc<Ctx>,
    conn: Arc<Conn>,
    req: Request<Incoming>,
    dst: std::net::SocketAddr,
) -> Response<Body> {
    let agent: Arc<str> =
        ctx.a2a.load().agent_at(dst).map_or_else(|| Arc::from(dst.to_string()), |a| a.name.clone());
    let up = Upstream::Intercepted { dst, origin: conn.origin.clone() };
    governed(ctx, conn, req, agent, up).await
}

/// A request addressed to an agent directly (intercepted, or an absolute-form request on the
/// explicit listener naming a registered agent's address): governed as at `/a2a/<name>`.
pub async fn governed(
    ctx: Arc<Ctx>,
    conn: Arc<Conn>,
    req: Request<Incoming>,
    agent: Arc<str>,
    up: Upstream,
) -> Response<Body> {
    let a2a = ctx.a2a.load_full();
    let keys = ctx.identities.keys();
    let call = Call::new(&ctx, &conn, &keys, &req, agent.clone());
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str()).to_string();
    match *req.method() {
        HttpMethod::POST => rpc(&a2a, agent, up, req, path, call, &keys).await,
        HttpMethod::GET if CARD_PATHS.contains(&req.uri().path()) => {
            passthrough_card(&a2a, agent, up, req, call).await
        }
        _ => {
            let msg =
                "nodegate governs this A2A agent's JSON-RPC interface; other requests are not passed on";
            call.refuse("error", None, msg.into());
            json_response(StatusCode::METHOD_NOT_ALLOWED, &json!({"error": msg}))
        }
    }
}

/// The card of an intercepted agent, as it is (policy still decides who may read it).
async fn passthrough_card(
    a2a: &A2a,
    agent: Arc<str>,
    up: Upstream,
    req: Request<Incoming>,
    mut call: Call,
) -> Response<Body> {
    call.rec.method = "GetAgentCard";
    if let Err(rule) = a2a.check(&call.identity, &agent, None) {
        let msg = format!("{} may not reach agent {agent} ({rule})", crate::policy::who(&call.identity));
        call.refuse("denied", Some(&rule), msg.clone());
        return json_response(StatusCode::FORBIDDEN, &json!({"error": msg}));
    }
    let (mut parts, _) = req.into_parts();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
    parts.uri = match up.uri(&path) {
        Ok(u) => u,
        Err(e) => {
            call.refuse("error", None, e.clone());
            return json_response(StatusCode::BAD_GATEWAY, &json!({"error": e}));
        }
    };
    not_copied(&mut parts.headers, false);
    crate::identity::strip_credentials(&call.ctx.identities.keys(), &mut parts.headers);
    let request = Request::from_parts(parts, Empty::<Bytes>::new().map_err(|never| match never {}).boxed());
    let ctx = call.ctx.clone();
    let got = tokio::time::timeout(a2a.cfg.timeout, async {
        let resp = up.send(&ctx, request).await?;
        let status = resp.status();
        let (rparts, body) = resp.into_parts();
        let body =
            Limited::new(body, a2a.cfg.max_card_bytes).collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok::<_, String>((status, rparts, body))
    })
    .await
    .unwrap_or_else(|_| Err("the agent did not answer in time".into()));
    match got {
        Ok((status, mut rparts, body)) => {
            call.rec.status = status.as_u16();
            call.rec.bytes_received = body.len() as u64;
            call.rec.outcome = if status.is_success() { "ok" } else { "error" };
            call.finish();
            not_copied(&mut rparts.headers, false);
            Response::from_parts(rparts, full(body))
        }
        Err(e) => {
            let msg = format!("agent {agent}: {e}");
            call.refuse("error", None, msg.clone());
            json_response(StatusCode::BAD_GATEWAY, &json!({"error": msg}))
        }
    }
}

/// The agent's card, rewritten to point back through nodegate.
async fn card(
    a2a: &A2a,
    agent: &Agent,
    req: Request<Incoming>,
    sub: String,
    mut call: Call,
) -> Response<Body> {
    call.rec.method = "GetAgentCard";
    if let Err(rule) = a2a.check(&call.identity, &agent.name, None) {
        let msg =
            format!("{} may not reach agent {} ({rule})", crate::policy::who(&call.identity), agent.name);
        call.refuse("denied", Some(&rule), msg.clone());
        return json_response(StatusCode::FORBIDDEN, &json!({"error": msg}));
    }
    let host =
        req.headers().get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("localhost").to_string();
    let url = format!("{}{}{sub}", agent.origin, agent.path);
    let fetched = tokio::time::timeout(a2a.cfg.timeout, async {
        let up = Request::get(&url)
            .header(header::ACCEPT, "application/json")
            .body(Empty::<Bytes>::new().map_err(|never| match never {}).boxed())
            .map_err(|e| e.to_string())?;
        let resp = call.ctx.upstream.http1.request(up).await.map_err(|e| e.to_string())?;
        let status = resp.status();
        let body = Limited::new(resp.into_body(), a2a.cfg.max_card_bytes)
            .collect()
            .await
            .map_err(|e| format!("reading the card: {e}"))?
            .to_bytes();
        Ok::<_, String>((status, body))
    })
    .await
    .unwrap_or_else(|_| Err("the agent did not answer in time".into()));
    let (status, body) = match fetched {
        Ok(x) => x,
        Err(e) => {
            let msg = format!("agent {}: {e}", agent.name);
            call.refuse("error", None, msg.clone());
            return json_response(StatusCode::BAD_GATEWAY, &json!({"error": msg}));
        }
    };
    call.rec.status = status.as_u16();
    call.rec.bytes_received = body.len() as u64;
    if !status.is_success() {
        call.refuse("error", None, format!("the agent answered {status}"));
        return json_response(
            StatusCode::BAD_GATEWAY,
            &json!({"error": format!("agent {} answered {status} for its card", agent.name)}),
        );
    }
    let mut card: Value = match serde_json::from_slice(&body) {
        Ok(v @ Value::Object(_)) => v,
        _ => {
            call.refuse("error", None, "the agent's card is not a JSON object".into());
            return json_response(
                StatusCode::BAD_GATEWAY,
                &json!({"error": format!("agent {}'s card is not a JSON object", agent.name)}),
            );
        }
    };
    let gateway = format!("http://{host}{PREFIX}{}", agent.name);
    let dropped = super::card::rewrite(&mut card, &agent.origin, &gateway);
    if dropped > 0 {
        tracing::debug!(agent = %agent.name, dropped, "card interfaces nodegate cannot govern left out");
    }
    let out = Bytes::from(serde_json::to_vec(&card).unwrap_or_default());
    call.rec.bytes_sent = out.len() as u64;
    call.rec.outcome = "ok";
    call.finish();
    let mut r = Response::new(full(out));
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

async fn rpc(
    a2a: &Arc<A2a>,
    agent: Arc<str>,
    target: Upstream,
    req: Request<Incoming>,
    sub: String,
    mut call: Call,
    keys: &crate::identity::Keys,
) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let bytes = match Limited::new(body, a2a.cfg.max_body_bytes).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            let too_big = e.downcast_ref::<http_body_util::LengthLimitError>().is_some();
            let msg = if too_big {
                format!("request body larger than a2a.max_body_bytes ({} bytes)", a2a.cfg.max_body_bytes)
            } else {
                format!("reading the request: {e}")
            };
            call.refuse("error", None, msg.clone());
            let status = if too_big { StatusCode::PAYLOAD_TOO_LARGE } else { StatusCode::BAD_REQUEST };
            return json_response(
                status,
                &json!({"jsonrpc": "2.0", "id": null, "error": {"code": code::INVALID_REQUEST, "message": msg}}),
            );
        }
    };
    call.rec.bytes_sent = bytes.len() as u64;
    let v: Value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(e) => {
            call.refuse("error", None, format!("not JSON: {e}"));
            return rpc_error(&Value::Null, code::PARSE, &format!("Parse error: {e}"));
        }
    };
    let id = v.get("id").cloned().unwrap_or(Value::Null);
    let Some((method, version)) =
        v.get("method").and_then(Value::as_str).and_then(methods::parse).filter(|_| v.is_object())
    else {
        let what = match &v {
            Value::Array(_) => "JSON-RPC batches are not supported".to_string(),
            _ => match v.get("method").and_then(Value::as_str) {
                Some(m) => format!("Method not found: {m}"),
                None => "Invalid Request: no method".to_string(),
            },
        };
        let code = if what.starts_with("Method") { code::METHOD_NOT_FOUND } else { code::INVALID_REQUEST };
        call.refuse("error", None, what.clone());
        return rpc_error(&id, code, &what);
    };
    call.rec.method = method.name();
    call.rec.stream = method.streams();
    call.rec.protocol_version = if version == Version::V03 { "0.3" } else { "1.0" };
    let params = v.get("params").cloned().unwrap_or(Value::Null);
    if let Err(rule) = a2a.check(&call.identity, &agent, Some(method.name())) {
        let msg = format!(
            "nodegate: {} may not call {} at agent {} ({rule})",
            crate::policy::who(&call.identity),
            method.name(),
            agent
        );
        call.refuse("denied", Some(&rule), msg.clone());
        return rpc_error(&id, code::FORBIDDEN, &msg);
    }
    let owner = crate::mcp::handler::owner_of(&call.identity);
    if let Some(task) = method.task_id(version, &params) {
        call.rec.task_id = Some(task);
    }
    // The task acted on, and any task a message refers to for context: each the caller's own.
    let references = method.referenced_tasks(&params);
    if references.len() > methods::MAX_REFERENCES {
        let msg = format!("a message may refer to at most {} tasks", methods::MAX_REFERENCES);
        call.refuse("error", None, msg.clone());
        return rpc_error(&id, code::INVALID_REQUEST, &msg);
    }
    for task in method.task_id(version, &params).into_iter().chain(references) {
        if !a2a.may_act(&agent, &task, &owner).await {
            // The same answer as for a task that does not exist: nothing to learn by guessing.
            call.refuse("not_found", None, format!("task {task} not found (not created by this caller)"));
            return rpc_error(&id, code::TASK_NOT_FOUND, "Task not found");
        }
    }
    for url in method.push_urls(version, &params) {
        if let Err(why) = a2a.push_allowed(&url) {
            let msg = format!("nodegate: push notification callback refused: {why}");
            call.refuse("denied", Some("a2a.push_allow"), msg.clone());
            return rpc_error(&id, code::FORBIDDEN, &msg);
        }
    }

    // Upstream: the agent's origin at the path the (rewritten) card named, or where the
    // intercepted client was going.
    let built = target
        .uri(if sub.is_empty() { "/" } else { &sub })
        .and_then(|u| Request::post(u).body(full(bytes)).map_err(|e| e.to_string()));
    let mut up = match built {
        Ok(r) => r,
        Err(e) => {
            call.refuse("error", None, e.clone());
            return rpc_error(&id, code::INTERNAL, &format!("bad upstream URL: {e}"));
        }
    };
    for (name, value) in &parts.headers {
        if !crate::proxy::http::is_hop_or_framing(name) {
            up.headers_mut().append(name.clone(), value.clone());
        }
    }
    crate::identity::strip_credentials(keys, up.headers_mut());
    let ctx = call.ctx.clone();
    let answered = tokio::time::timeout(a2a.cfg.timeout, target.send(&ctx, up)).await;
    let resp = match answered {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            let msg = format!("agent {agent} did not answer: {e}");
            call.refuse("error", None, msg.clone());
            return rpc_error(&id, code::UPSTREAM, &msg);
        }
        Err(_) => {
            let msg = format!("agent {agent} did not answer within a2a.timeout");
            call.refuse("error", None, msg.clone());
            return rpc_error(&id, code::UPSTREAM, &msg);
        }
    };
    call.rec.status = resp.status().as_u16();
    let sse = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("text/event-stream"));
    let (mut rparts, rbody) = resp.into_parts();
    not_copied(&mut rparts.headers, true);
    if sse {
        rparts.headers.remove(header::CONTENT_LENGTH);
        let watcher = StreamWatch {
            call: Some(call),
            reader: SseReader::default(),
            summary: Summary::default(),
            tasks: method.sends().then(|| (a2a.clone(), agent.clone(), owner)),
            recorded: false,
        };
        let cut = super::stream::IdleCut::new(rbody.boxed(), a2a.cfg.stream_idle, &id, &agent);
        let body = Observed::new(cut.boxed(), watcher);
        return Response::from_parts(rparts, body.boxed());
    }
    let body = match tokio::time::timeout(a2a.cfg.timeout, Limited::new(rbody, MAX_ANSWER).collect()).await {
        Ok(Ok(b)) => b.to_bytes(),
        Ok(Err(e)) => {
            let msg = format!("reading agent {agent}'s answer: {e}");
            call.refuse("error", None, msg.clone());
            return rpc_error(&id, code::UPSTREAM, &msg);
        }
        Err(_) => {
            call.refuse("error", None, "the answer did not arrive within a2a.timeout".into());
            return rpc_error(&id, code::UPSTREAM, "the agent's answer did not arrive in time");
        }
    };
    let mut out = body;
    if let Ok(mut answer) = serde_json::from_slice::<Value>(&out) {
        let mut summary = Summary::default();
        summary.observe(&answer);
        if method.sends()
            && summary.error.is_none()
            && let Some(t) = &summary.task_id
            && !a2a.claim(&agent, t, &owner).await
        {
            tracing::warn!(%agent, task = %t, "agent answered with a task another caller owns");
        }
        if method == Method::ListTasks
            && let Some(list) = answer.pointer_mut("/result/tasks").and_then(Value::as_array_mut)
        {
            // The agent sees nodegate as one client: show each caller its own tasks only.
            let ids: Vec<String> =
                list.iter().filter_map(|t| t.get("id").and_then(Value::as_str).map(str::to_string)).collect();
            let mut mine = std::collections::HashSet::new();
            for tid in ids {
                if a2a.may_act(&agent, &tid, &owner).await {
                    mine.insert(tid);
                }
            }
            list.retain(|t| t.get("id").and_then(Value::as_str).is_some_and(|tid| mine.contains(tid)));
            let kept = list.len();
            if let Some(total) = answer.pointer_mut("/result/totalSize") {
                *total = json!(kept);
            }
            out = Bytes::from(serde_json::to_vec(&answer).unwrap_or_default());
            rparts.headers.remove(header::CONTENT_LENGTH);
        }
        call.absorb(summary);
    }
    call.rec.bytes_received = out.len() as u64;
    if call.rec.outcome.is_empty() {
        call.rec.outcome = if call.rec.error.is_some() { "error" } else { "ok" };
    }
    call.finish();
    Response::from_parts(rparts, full(out))
}

impl Call {
    fn absorb(&mut self, s: Summary) {
        if self.rec.task_id.is_none() {
            self.rec.task_id = s.task_id;
        }
        self.rec.context_id = s.context_id;
        self.rec.state = s.state;
        self.rec.messages = s.messages;
        self.rec.artifacts = s.artifacts;
        self.rec.events = s.events;
        self.rec.error = s.error;
    }
}

/// Watches a streamed answer go by: records the task's owner as soon as its id appears, and the
/// call's record when the stream ends (or the client leaves).
struct StreamWatch {
    call: Option<Call>,
    reader: SseReader,
    summary: Summary,
    tasks: Option<(Arc<A2a>, Arc<str>, Arc<str>)>,
    recorded: bool,
}

impl Observer for StreamWatch {
    fn data(&mut self, len: usize) {
        if let Some(c) = self.call.as_mut() {
            c.rec.bytes_received += len as u64;
        }
    }

    fn frame(&mut self, d: &Bytes) {
        self.data(d.len());
        let summary = &mut self.summary;
        self.reader.feed(d, |event| {
            if let Ok(v) = serde_json::from_slice::<Value>(event) {
                summary.observe(&v);
            }
        });
        if !self.recorded
            && let (Some((a2a, agent, owner)), Some(t)) = (&self.tasks, &self.summary.task_id)
        {
            // Known here at once; shared (when Redis is configured) in the background.
            a2a.tasks.record(agent, t, owner);
            let (a2a, agent, owner, t) = (a2a.clone(), agent.clone(), owner.clone(), t.clone());
            tokio::spawn(async move { a2a.claim(&agent, &t, &owner).await });
            self.recorded = true;
        }
    }

    fn error(&mut self, e: &hyper::Error) {
        if let Some(c) = self.call.as_mut() {
            c.rec.error = Some(format!("stream broke: {e}"));
        }
    }
}

impl Drop for StreamWatch {
    fn drop(&mut self) {
        let Some(mut call) = self.call.take() else { return };
        let broke = call.rec.error.take();
        call.absorb(std::mem::take(&mut self.summary));
        if let Some(b) = broke {
            call.rec.error = Some(b);
        }
        call.rec.outcome = if call.rec.error.is_some() { "error" } else { "ok" };
        call.finish();
    }
}
