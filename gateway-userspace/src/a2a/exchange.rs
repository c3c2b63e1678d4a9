//! One governed A2A call, whatever wire it came on: read (bounded), checked (policy, task
//! ownership, push callbacks), sent to the agent on the wire it speaks (unchanged when that is the
//! client's, bridged otherwise), and answered on the client's wire, streams event by event.
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Method as HttpMethod, Request, Response, StatusCode, header, request::Parts};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde_json::{Value, json};

use super::{
    A2a,
    methods::{self, Method, Version, code},
    record::Call,
    stream::{IdleCut, SseReader, Summary},
    translate::Translate,
    wire::{self, Answer, Binding, Failure, Op, Wire},
};
use crate::proxy::{
    observed::{Observed, Observer},
    upstream::Body,
};

/// Largest non-streamed answer read from an agent (kept to learn the task and filter lists).
const MAX_ANSWER: usize = 16 << 20;

/// How the client reached nodegate: JSON-RPC, or the REST binding with the operation's path
/// (below the interface URL) and query.
pub enum Inbound {
    JsonRpc,
    Rest { path: String, query: Option<String> },
}

/// Where the call goes.
pub enum Target {
    /// A registered agent: the interface chosen from its card (explicit mode).
    Registered(Arc<super::Agent>),
    /// Where the client was going, as it was going there (transparent mode, absolute form).
    AsSent(super::handler::Upstream),
}

pub fn full(b: Bytes) -> Body {
    Full::new(b).map_err(|never| match never {}).boxed()
}

pub fn json_response(status: StatusCode, v: &Value) -> Response<Body> {
    json_bytes(status, Bytes::from(serde_json::to_vec(v).unwrap_or_default()))
}

/// A JSON body already serialised.
fn json_bytes(status: StatusCode, body: Bytes) -> Response<Body> {
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// An answer for the client, on its wire.
fn reply(client: Wire, method: Option<Method>, id: &Value, a: &Answer) -> Response<Body> {
    let (status, body) = wire::answer_body(client, method, id, a);
    json_response(status, &body)
}

/// Removes what is not passed on from `h` (hop-by-hop and framing headers), keeping
/// `content-length` when `keep_length` (an answer passed through as it is).
pub fn not_copied(h: &mut http::HeaderMap, keep_length: bool) {
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

/// The call's request as read: the op, the client's wire.
fn read(inbound: &Inbound, parts: &Parts, bytes: &Bytes) -> Result<(Op, Wire), (Wire, Value, Failure)> {
    match inbound {
        Inbound::JsonRpc => wire::read_jsonrpc(bytes)
            .map(|(op, v)| (op, Wire { binding: Binding::JsonRpc, version: v }))
            .map_err(|(id, f)| (Wire::JSONRPC, id, f)),
        Inbound::Rest { path, query } => wire::read_rest(&parts.method, path, query.as_deref(), bytes)
            .map(|op| (op, Wire::REST))
            .map_err(|f| (Wire::REST, Value::Null, f)),
    }
}

pub async fn call(
    a2a: &Arc<A2a>,
    agent: Arc<str>,
    target: Target,
    inbound: Inbound,
    req: Request<Incoming>,
    mut call: Call,
    keys: &crate::identity::Keys,
) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let client_guess = if matches!(inbound, Inbound::Rest { .. }) { Wire::REST } else { Wire::JSONRPC };
    call.rec.binding = if client_guess.binding == Binding::Rest { "rest" } else { "jsonrpc" };
    let bytes = match Limited::new(body, a2a.cfg.max_body_bytes).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            let too_big = e.downcast_ref::<http_body_util::LengthLimitError>().is_some();
            let (code, msg) = if too_big {
                (
                    code::TOO_LARGE,
                    format!("request body larger than a2a.max_body_bytes ({} bytes)", a2a.cfg.max_body_bytes),
                )
            } else {
                (code::INVALID_REQUEST, format!("reading the request: {e}"))
            };
            call.refuse("error", None, msg.clone());
            let (_, body) =
                wire::answer_body(client_guess, None, &Value::Null, &Answer::Error(Failure::new(code, msg)));
            let status = if too_big { StatusCode::PAYLOAD_TOO_LARGE } else { StatusCode::BAD_REQUEST };
            return json_response(status, &body);
        }
    };
    call.rec.bytes_sent = bytes.len() as u64;
    let (op, client) = match read(&inbound, &parts, &bytes) {
        Ok(x) => x,
        Err((client, id, f)) => {
            call.refuse("error", None, f.message.clone());
            return reply(client, None, &id, &Answer::Error(f));
        }
    };
    let method = op.method;
    call.rec.method = method.name();
    call.rec.stream = method.streams();
    call.rec.protocol_version = if client.version == Version::V03 { "0.3" } else { "1.0" };
    let refuse = |call: Call, outcome, rule: Option<&str>, f: Failure| {
        call.refuse(outcome, rule, f.message.clone());
        reply(client, Some(method), &op.id, &Answer::Error(f))
    };

    if let Err(rule) = a2a.check(&call.identity, &agent, Some(method.name())) {
        let who = crate::policy::who(&call.identity);
        let msg = format!("nodegate: {who} may not call {} at agent {agent} ({rule})", method.name());
        return refuse(call, "denied", Some(&rule), Failure::new(code::FORBIDDEN, msg));
    }
    // What the agent's card says (a registered agent's is read now if it has not been).
    let learned = match &target {
        Target::Registered(a) => Some(super::discover::interfaces(&call.ctx, a2a, a).await),
        Target::AsSent(_) => a2a.agent(&agent).and_then(|a| super::discover::peek(a)),
    };
    if method.sends() {
        let skill = methods::skill_of(&op.params);
        let tags = match (&learned, &skill) {
            (Some(l), Some(s)) => l.tags(s),
            _ => &[],
        };
        if let Err((rule, why)) = a2a.check_skill(&call.identity, skill.as_deref(), tags) {
            call.rec.skill = skill;
            let who = crate::policy::who(&call.identity);
            let msg = format!("nodegate: {who} at agent {agent}: {why} ({rule})");
            return refuse(call, "denied", Some(&rule), Failure::new(code::FORBIDDEN, msg));
        }
        call.rec.skill = skill;
    }
    let owner = crate::mcp::handler::owner_of(&call.identity);
    let acted_on = method.task_id(Version::V1, &op.params);
    call.rec.task_id = acted_on.clone();
    let verdict = {
        let mut input = crate::policy::Input::new(crate::config::PolicyProtocol::A2a, &call.identity);
        input.a2a = Some(crate::policy::attrs::A2aAttrs {
            agent: &agent,
            method: method.name(),
            skill: call.rec.skill.as_deref(),
            task: acted_on.as_deref(),
        });
        call.ctx.policy.decide(&call.ctx.metrics, &input)
    };
    call.policy = verdict.mark();
    if let Some(d) = &verdict.denied {
        let c = if d.retry_after.is_some() { code::RATE_LIMITED } else { code::FORBIDDEN };
        let msg = format!("nodegate: {}", crate::policy::Verdict::message(d));
        return refuse(call, "denied", Some(&d.rule), Failure::new(c, msg));
    }
    // The task acted on, and any task a message refers to for context: each the caller's own.
    let references = method.referenced_tasks(&op.params);
    if references.len() > methods::MAX_REFERENCES {
        let msg = format!("a message may refer to at most {} tasks", methods::MAX_REFERENCES);
        return refuse(call, "error", None, Failure::new(code::INVALID_REQUEST, msg));
    }
    for task in acted_on.into_iter().chain(references) {
        if !a2a.may_act(&agent, &task, &owner).await {
            // The same answer as for a task that does not exist: nothing to learn by guessing.
            call.refuse("not_found", None, format!("task {task} not found (not created by this caller)"));
            return reply(
                client,
                Some(method),
                &op.id,
                &Answer::Error(Failure::new(code::TASK_NOT_FOUND, "Task not found")),
            );
        }
    }
    // Callback URLs wherever either generation puts them: an agent of the other generation, or
    // one reached through an unrecognised shape, must not be handed one unchecked.
    let urls = method
        .push_urls(Version::V1, &op.params)
        .into_iter()
        .chain(method.push_urls(Version::V03, &op.params));
    for url in urls {
        if let Err(why) = a2a.push_allowed(&url) {
            let msg = format!("nodegate: push notification callback refused: {why}");
            return refuse(call, "denied", Some("a2a.push_allow"), Failure::new(code::FORBIDDEN, msg));
        }
    }

    // Which wire the agent is called on, and the request for it.
    let (upstream, agent_wire, path) = match target {
        Target::AsSent(up) => {
            let path = parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
            (up, client, path)
        }
        Target::Registered(_) => {
            let Some(list) = learned else {
                return refuse(call, "error", None, Failure::new(code::INTERNAL, "no interfaces known"));
            };
            let Some((w, url)) = super::discover::choose(&list.interfaces, client) else {
                let msg = format!("agent {agent} offers no interface nodegate can call");
                return refuse(call, "error", None, Failure::new(code::UPSTREAM, msg));
            };
            let path = match &inbound {
                Inbound::Rest { path, query } if w == client => {
                    format!("{path}{}", query.as_deref().map(|q| format!("?{q}")).unwrap_or_default())
                }
                _ => String::new(),
            };
            (super::handler::Upstream::Registered(url.to_string()), w, path)
        }
    };
    let bridged = agent_wire != client;
    let (verb, path, body) = if bridged {
        call.rec.bridged_to = Some(agent_wire.describe());
        let mut out = op.clone();
        if out.id.is_null() {
            out.id = json!(1);
        }
        match wire::write(agent_wire, &out) {
            Ok(o) => (o.method, o.path, o.body.unwrap_or_default()),
            Err(u) => return refuse(call, "error", None, u.into()),
        }
    } else {
        (parts.method.clone(), path, bytes)
    };
    let built = upstream.uri(&path).and_then(|u| {
        Request::builder().method(verb.clone()).uri(u).body(full(body)).map_err(|e| e.to_string())
    });
    let mut up = match built {
        Ok(r) => r,
        Err(e) => {
            return refuse(
                call,
                "error",
                None,
                Failure::new(code::INTERNAL, format!("bad upstream URL: {e}")),
            );
        }
    };
    for (name, value) in &parts.headers {
        if !crate::proxy::http::is_hop_or_framing(name) {
            up.headers_mut().append(name.clone(), value.clone());
        }
    }
    crate::identity::strip_credentials(keys, up.headers_mut());
    if bridged {
        let h = up.headers_mut();
        for n in [header::CONTENT_TYPE, header::ACCEPT] {
            h.remove(n);
        }
        h.remove("a2a-version");
        if verb != HttpMethod::GET && verb != HttpMethod::DELETE {
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        let accept = if method.streams() { "text/event-stream" } else { "application/json" };
        h.insert(header::ACCEPT, HeaderValue::from_static(accept));
        if agent_wire.version == Version::V1 {
            h.insert("a2a-version", HeaderValue::from_static("1.0"));
        }
    }
    let ctx = call.ctx.clone();
    let resp = match tokio::time::timeout(a2a.cfg.timeout, upstream.send(&ctx, a2a, up)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            let msg = format!("agent {agent} did not answer: {e}");
            return refuse(call, "error", None, Failure::new(code::UPSTREAM, msg));
        }
        Err(_) => {
            let msg = format!("agent {agent} did not answer within a2a.timeout");
            return refuse(call, "error", None, Failure::new(code::UPSTREAM, msg));
        }
    };
    call.rec.status = resp.status().as_u16();
    let status = resp.status();
    let sse = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("text/event-stream"));
    let (mut rparts, rbody) = resp.into_parts();
    not_copied(&mut rparts.headers, !bridged);
    if sse {
        rparts.headers.remove(header::CONTENT_LENGTH);
        let inner = if bridged {
            Translate::new(crate::proxy::upstream::boxed(rbody), agent_wire, client, method, op.id.clone())
                .boxed()
        } else {
            crate::proxy::upstream::boxed(rbody)
        };
        let quiet = Failure::new(
            code::UPSTREAM,
            format!(
                "agent {agent} sent nothing for {}s; nodegate ended the stream",
                a2a.cfg.stream_idle.as_secs()
            ),
        );
        let farewell = wire::event_bytes(client, method, &op.id, &Answer::Error(quiet));
        let stopping = Failure::new(
            code::UPSTREAM,
            "nodegate is shutting down: the stream was ended at the drain deadline (timeouts.drain); resubscribe",
        );
        let shutdown = wire::event_bytes(client, method, &op.id, &Answer::Error(stopping));
        let cut =
            IdleCut::new(inner, a2a.cfg.stream_idle, farewell).ending_at(ctx.deadline.clone(), shutdown);
        let watcher = StreamWatch {
            call: Some(call),
            reader: SseReader::default(),
            summary: Summary::default(),
            wire: client,
            method,
            tasks: method.sends().then(|| (a2a.clone(), agent.clone(), owner)),
            recorded: false,
        };
        return Response::from_parts(rparts, Observed::new(cut.boxed(), watcher).boxed());
    }
    let raw = match tokio::time::timeout(a2a.cfg.timeout, Limited::new(rbody, MAX_ANSWER).collect()).await {
        Ok(Ok(b)) => b.to_bytes(),
        Ok(Err(e)) => {
            let msg = format!("reading agent {agent}'s answer: {e}");
            return refuse(call, "error", None, Failure::new(code::UPSTREAM, msg));
        }
        Err(_) => {
            let msg = "the agent's answer did not arrive within a2a.timeout".to_string();
            return refuse(call, "error", None, Failure::new(code::UPSTREAM, msg));
        }
    };
    let mut answer = wire::read_answer(agent_wire, method, status, &raw);
    let mut summary = Summary::default();
    summary.answer(&answer);
    if method.sends()
        && summary.error.is_none()
        && let Some(t) = &summary.task_id
        && !a2a.claim(&agent, t, &owner).await
    {
        tracing::warn!(%agent, task = %t, "agent answered with a task another caller owns");
    }
    let mut rewritten = bridged;
    if method == Method::ListTasks
        && let Answer::Result(r) = &mut answer
    {
        own_tasks_only(a2a, &agent, &owner, r).await;
        rewritten = true;
    }
    if let Answer::Error(f) = &answer
        && f.code == code::UPSTREAM
    {
        // Not JSON from the agent: the client gets a clear error on its wire, not the agent's page.
        rewritten = true;
        call.rec.error = Some(f.message.clone());
    }
    call.absorb(summary);
    if !rewritten {
        call.rec.bytes_received = raw.len() as u64;
        call.finish();
        return Response::from_parts(rparts, full(raw));
    }
    let (st, v) = wire::answer_body(client, Some(method), &op.id, &answer);
    let out = Bytes::from(serde_json::to_vec(&v).unwrap_or_default());
    call.rec.bytes_received = out.len() as u64;
    call.finish();
    json_bytes(st, out)
}

/// A list answer, cut to the caller's own tasks: the agent sees nodegate as one client.
async fn own_tasks_only(a2a: &A2a, agent: &Arc<str>, owner: &Arc<str>, r: &mut Value) {
    let Some(list) = r.get_mut("tasks").and_then(Value::as_array_mut) else { return };
    let ids: Vec<String> =
        list.iter().filter_map(|t| t.get("id").and_then(Value::as_str).map(str::to_string)).collect();
    let mut mine = std::collections::HashSet::new();
    for tid in ids {
        if a2a.may_act(agent, &tid, owner).await {
            mine.insert(tid);
        }
    }
    list.retain(|t| t.get("id").and_then(Value::as_str).is_some_and(|tid| mine.contains(tid)));
    let kept = list.len();
    if let Some(total) = r.get_mut("totalSize") {
        *total = json!(kept);
    }
}

/// Watches a streamed answer go by (on the client's wire): records the task's owner as soon as
/// its id appears, and the call's record when the stream ends (or the client leaves).
struct StreamWatch {
    call: Option<Call>,
    reader: SseReader,
    summary: Summary,
    wire: Wire,
    method: Method,
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
        let (summary, wire, method) = (&mut self.summary, self.wire, self.method);
        self.reader.feed(d, |event| summary.answer(&wire::read_event(wire, method, event)));
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

    fn error(&mut self, e: &crate::proxy::upstream::BoxError) {
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
