//! Answers that may stream. A routed request is answered as JSON when the server's response
//! comes first; when the server sends progress or a request of its own first (sampling,
//! elicitation, roots), the answer becomes an event stream that carries those to the client
//! (server requests under a gateway id, mapped back when the client answers) and ends with
//! the response. Also the long-lived streams: the handshake era's GET stream and the
//! stateless era's `subscriptions/listen`, both fed by the notification hub.
use std::{convert::Infallible, sync::Arc, time::Duration};

use bytes::Bytes;
use http::{HeaderValue, Response, header};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};

use super::{Mcp, dispatch::Audited, handler::Caller, jsonrpc, upstream::Server};
use crate::proxy::upstream::Body;

const KEEPALIVE: Duration = Duration::from_secs(15);

fn sse_frame(id: &str, msg: &Value) -> Bytes {
    Bytes::from(format!(
        "event: message\nid: {id}\ndata: {}\n\n",
        serde_json::to_string(msg).unwrap_or_default()
    ))
}

fn sse_response(rx: mpsc::Receiver<Bytes>) -> Response<Body> {
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
    });
    let body = StreamBody::new(stream).map_err(|never| match never {}).boxed();
    let mut r = Response::new(body);
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

/// Removes the in-flight entry when the call ends; cancels it at the server when the client
/// went away first.
struct Inflight {
    mcp: Arc<Mcp>,
    key: (Arc<str>, String),
    server: Arc<Server>,
    upstream_id: u64,
    done: bool,
    /// Woken by the client's `notifications/cancelled`.
    cancel: Arc<tokio::sync::Notify>,
}

impl Drop for Inflight {
    fn drop(&mut self) {
        if let Ok(mut m) = self.mcp.calls.inflight.lock() {
            m.remove(&self.key);
        }
        if !self.done {
            let (server, id) = (self.server.clone(), self.upstream_id);
            tokio::spawn(async move { server.cancel(id, "cancelled by the client").await });
        }
    }
}

/// A server message relayed during a call: requests get a gateway id.
fn translate(mcp: &Mcp, owner: &Arc<str>, server: &Arc<Server>, mut ev: Value) -> Value {
    let is_request = ev.get("method").is_some() && ev.get("id").is_some_and(|i| !i.is_null());
    if is_request && let Some(o) = ev.as_object_mut() {
        let original = o.get("id").cloned().unwrap_or(Value::Null);
        let key = mcp.relay_request(owner, super::Relayed::Server { server: server.clone(), id: original });
        o.insert("id".into(), Value::from(key));
    }
    ev
}

/// Refuses a server request that cannot reach a client (the client takes no stream).
async fn refuse(server: &Server, ev: &Value) {
    if let (Some(id), Some(m)) = (ev.get("id"), ev.get("method").and_then(Value::as_str)) {
        let e = jsonrpc::error(
            id,
            jsonrpc::METHOD_NOT_FOUND,
            &format!("{m}: the client cannot be reached"),
            None,
        );
        server.respond(e).await;
    }
}

/// The final message to the client: the server's response under the client's id, with names
/// put back the way the client knows them; or an error saying what went wrong upstream.
fn finish(
    r: Result<Value, super::upstream::UpstreamError>,
    fit: (&str, bool),
    id: &Value,
    server: &Server,
    exposed: &Option<(String, String)>,
    record: &mut Audited,
) -> Value {
    match r {
        Ok(mut resp) => {
            record.outcome(&resp);
            if let Some(o) = resp.as_object_mut() {
                o.insert("id".into(), id.clone());
            }
            if let Some((original, shown)) = exposed
                && let Some(contents) = resp.pointer_mut("/result/contents").and_then(Value::as_array_mut)
            {
                for c in contents {
                    if c.get("uri").and_then(Value::as_str) == Some(original.as_str()) {
                        c["uri"] = Value::from(shown.clone());
                    }
                }
            }
            super::handler::fit_result(&mut resp, fit.0, fit.1);
            resp
        }
        Err(e) => {
            record.call.outcome = "failed";
            record.call.error = Some(e.to_string());
            jsonrpc::error(
                id,
                jsonrpc::UPSTREAM_ERROR,
                &format!("MCP server {}: {e}", server.name),
                Some(json!({"server": &*server.name})),
            )
        }
    }
}

type Answer = Result<Value, super::upstream::UpstreamError>;
type Call = std::pin::Pin<Box<dyn std::future::Future<Output = Answer> + Send>>;

/// One routed request still running at its server.
pub struct Pending {
    fut: Call,
    events: mpsc::Receiver<Value>,
    server: Arc<Server>,
    inflight: Inflight,
    record: Audited,
    exposed: Option<(String, String)>,
    method: String,
    /// As sent to the server, to retry with `inputResponses`.
    params: Value,
}

/// A call waiting for a 2026-07-28 client to fulfil server requests (`input_required`): the
/// server asked over its stream; the client answers by retrying with `inputResponses` and
/// this `requestState`.
pub struct Parked {
    pending: Pending,
    /// Input request key -> the server's id for that request.
    asked: std::collections::HashMap<String, Value>,
    who: Arc<str>,
    at: std::time::Instant,
}

/// How long a parked call waits for the client's retry before it is cancelled.
const PARK_LIMIT: Duration = Duration::from_secs(120);
pub const PARK_PREFIX: &str = "nodegate-input-";

#[allow(clippy::too_many_arguments)]
pub async fn call(
    mcp: &Arc<Mcp>,
    caller: Caller,
    server: Arc<Server>,
    id: Value,
    method: String,
    params: Value,
    exposed: Option<(String, String)>,
    record: Audited,
) -> Response<Body> {
    let upstream_id = server.next_id();
    let key = (caller.owner.clone(), id.to_string());
    let cancel = Arc::new(tokio::sync::Notify::new());
    if let Ok(mut m) = mcp.calls.inflight.lock() {
        m.insert(key.clone(), cancel.clone());
    }
    let inflight =
        Inflight { mcp: mcp.clone(), key, server: server.clone(), upstream_id, done: false, cancel };
    let (fut, events) = start(&server, upstream_id, &method, params.clone());
    let pending = Pending { fut, events, server, inflight, record, exposed, method, params };
    drive(mcp, &caller, id, pending).await
}

/// The server's answer to one request, and the messages it sends while answering.
fn start(server: &Arc<Server>, id: u64, method: &str, params: Value) -> (Call, mpsc::Receiver<Value>) {
    let (tx, events) = mpsc::channel::<Value>(64);
    let (server, method) = (server.clone(), method.to_string());
    (Box::pin(async move { server.call(id, &method, params, Some(tx)).await }), events)
}

/// Rounds of `input_required` bridged for one call before nodegate gives up (as SDKs do).
const MAX_INPUT_ROUNDS: usize = 10;

/// The `inputRequests` of a 2026-07-28 server's `input_required` answer, if that is what it is.
fn input_requests(r: &Answer) -> Option<serde_json::Map<String, Value>> {
    let result = r.as_ref().ok()?.get("result")?;
    if result.get("resultType").and_then(Value::as_str) != Some("input_required") {
        return None;
    }
    Some(result.get("inputRequests").and_then(Value::as_object).cloned().unwrap_or_default())
}

/// For a handshake-era client: asks it each of the server's input requests as a server request
/// on `tx`, waits for the answers, and retries the call at the server with them. Err: the final
/// message for the client instead.
async fn bridge_input(
    mcp: &Mcp,
    owner: &Arc<str>,
    p: &mut Pending,
    answer: &Value,
    asks: serde_json::Map<String, Value>,
    tx: &mpsc::Sender<Bytes>,
    id: &Value,
) -> Result<(), Value> {
    let fail = |msg: &str| jsonrpc::error(id, jsonrpc::INTERNAL_ERROR, msg, None);
    let mut waiting = Vec::new();
    for (key, ask) in asks {
        let (done, rx) = tokio::sync::oneshot::channel();
        let gid = mcp.relay_request(owner, super::Relayed::Collect(done));
        let method = ask.get("method").and_then(Value::as_str).unwrap_or_default();
        let msg =
            jsonrpc::request(&Value::from(gid), method, &ask.get("params").cloned().unwrap_or(Value::Null));
        tx.send(sse_frame(&mcp.hub.next_event_id(), &msg)).await.map_err(|_| fail("client went away"))?;
        waiting.push((key, rx));
    }
    let mut responses = serde_json::Map::new();
    for (key, rx) in waiting {
        let got = tokio::time::timeout(PARK_LIMIT, rx)
            .await
            .map_err(|_| fail("the client did not answer the server's request in time"))?
            .map_err(|_| fail("client went away"))?;
        match got.get("result") {
            Some(r) => responses.insert(key, r.clone()),
            None => {
                return Err(fail(&format!(
                    "the client refused the server's request: {}",
                    got.get("error").unwrap_or(&Value::Null)
                )));
            }
        };
    }
    let mut params = p.params.clone();
    if let Some(o) = params.as_object_mut() {
        o.insert("inputResponses".into(), Value::Object(responses));
        if let Some(state) = answer.pointer("/result/requestState") {
            o.insert("requestState".into(), state.clone());
        }
    }
    let upstream_id = p.server.next_id();
    (p.fut, p.events) = start(&p.server, upstream_id, &p.method, params.clone());
    p.params = params;
    p.inflight.upstream_id = upstream_id;
    Ok(())
}

fn is_server_request(ev: &Value) -> bool {
    ev.get("method").is_some() && ev.get("id").is_some_and(|i| !i.is_null())
}

/// Parks `p` and builds the `input_required` result that asks the client for `ev`.
fn park(mcp: &Mcp, who: Arc<str>, id: &Value, p: Pending, ev: Value) -> Value {
    let key = "r0".to_string();
    let request =
        json!({"method": ev.get("method"), "params": ev.get("params").cloned().unwrap_or(json!({}))});
    let mut asked = std::collections::HashMap::new();
    asked.insert(key.clone(), ev.get("id").cloned().unwrap_or(Value::Null));
    let token = format!("{PARK_PREFIX}{}", super::random_token());
    if let Ok(mut parked) = mcp.calls.parked.lock() {
        // Calls whose client never came back are dropped (which cancels them at the server).
        parked.retain(|_, v| v.at.elapsed() < PARK_LIMIT);
        super::make_room(&mut parked, super::MAX_PARKED, |v| v.at);
        parked.insert(token.clone(), Parked { pending: p, asked, who, at: std::time::Instant::now() });
    }
    jsonrpc::result(
        id,
        json!({"resultType": "input_required", "inputRequests": {key: request}, "requestState": token}),
    )
}

/// A 2026-07-28 client's retry of a parked call: hand its answers to the server, then carry on
/// waiting for the call's result. None: `state` names no call of this caller's.
pub async fn resume(
    mcp: &Arc<Mcp>,
    caller: &Caller,
    id: Value,
    state: &str,
    params: &Value,
) -> Option<Response<Body>> {
    // The owner is checked before anything is removed: another caller's guess (or theft) of a
    // token neither resumes nor cancels the call.
    let parked = {
        let mut m = mcp.calls.parked.lock().ok()?;
        if m.get(state).is_none_or(|p| p.who != caller.owner) {
            return None;
        }
        m.remove(state)?
    };
    let responses = params.get("inputResponses").and_then(Value::as_object).cloned().unwrap_or_default();
    for (key, original) in &parked.asked {
        let msg = match responses.get(key) {
            Some(r) => jsonrpc::result(original, r.clone()),
            None => jsonrpc::error(original, jsonrpc::INVALID_REQUEST, "the client gave no answer", None),
        };
        parked.pending.server.respond(msg).await;
    }
    Some(drive(mcp, caller, id, parked.pending).await)
}

/// Waits for the server's answer or its first message; streams when the client can take it.
async fn drive(mcp: &Arc<Mcp>, caller: &Caller, id: Value, mut p: Pending) -> Response<Body> {
    let modern = caller.modern;
    let cancel = p.inflight.cancel.clone();
    let first = loop {
        tokio::select! {
            biased;
            r = &mut p.fut => break Err(r),
            _ = cancel.notified() => {
                p.record.call.outcome = "cancelled";
                let msg = jsonrpc::error(&id, jsonrpc::REQUEST_CANCELLED, "cancelled by the client", None);
                let Pending { record, .. } = p;
                return record.reply(&id, msg);
            }
            ev = p.events.recv() => match ev {
                // A 2026-07-28 client takes server requests as input_required results.
                Some(ev) if modern && is_server_request(&ev) => {
                    let msg = park(mcp, caller.owner.clone(), &id, p, ev);
                    return super::handler::json_response(http::StatusCode::OK, &msg);
                }
                Some(ev) if caller.sse => break Ok(ev),
                Some(ev) => refuse(&p.server, &ev).await,
                None => {
                    let r = (&mut p.fut).await;
                    break Err(r);
                }
            },
        }
    };
    // A 2026-07-28 server needs input and the client speaks the handshake era: ask the
    // client over an event stream (below). Without one it cannot be asked.
    let (first, mut needs_input) = match first {
        Err(r) if !modern && caller.sse && input_requests(&r).is_some() => (None, Some(r)),
        Err(r) => {
            p.inflight.done = true;
            let msg = finish(r, (&p.method, modern), &id, &p.server, &p.exposed, &mut p.record);
            let Pending { record, .. } = p;
            return record.reply(&id, msg);
        }
        Ok(ev) => (Some(ev), None),
    };

    // The server is talking first: stream.
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let mcp = mcp.clone();
    let who = caller.owner.clone();
    tokio::spawn(async move {
        let mut p = p;
        let mut sent = 0u64;
        if let Some(first) = first {
            let frame = sse_frame(&mcp.hub.next_event_id(), &translate(&mcp, &who, &p.server, first));
            sent += frame.len() as u64;
            if tx.send(frame).await.is_err() {
                return; // Inflight's drop cancels the call at the server.
            }
        }
        let mut rounds = 0;
        loop {
            if let Some(r) = needs_input.take() {
                rounds += 1;
                let asks = input_requests(&r).unwrap_or_default();
                let answer = r.as_ref().ok().cloned().unwrap_or(Value::Null);
                let bridged = if rounds > MAX_INPUT_ROUNDS {
                    Err(jsonrpc::error(
                        &id,
                        jsonrpc::INTERNAL_ERROR,
                        "the server kept asking for input",
                        None,
                    ))
                } else {
                    bridge_input(&mcp, &who, &mut p, &answer, asks, &tx, &id).await
                };
                if let Err(msg) = bridged {
                    p.inflight.done = true;
                    p.record.call.outcome = "error";
                    p.record.call.error =
                        msg.pointer("/error/message").and_then(Value::as_str).map(str::to_string);
                    let _ = tx.send(sse_frame(&mcp.hub.next_event_id(), &msg)).await;
                    return;
                }
            }
            tokio::select! {
                biased;
                _ = cancel.notified() => {
                    p.record.call.outcome = "cancelled";
                    return;
                }
                // The client went away: stop waiting (Inflight's drop cancels at the server).
                _ = tx.closed() => {
                    p.record.call.error = Some("client went away".into());
                    return;
                }
                r = &mut p.fut => {
                    if !modern && input_requests(&r).is_some() {
                        needs_input = Some(r);
                        continue;
                    }
                    p.inflight.done = true;
                    let msg = finish(r, (&p.method, modern), &id, &p.server, &p.exposed, &mut p.record);
                    let frame = sse_frame(&mcp.hub.next_event_id(), &msg);
                    p.record.call.bytes_received = sent + frame.len() as u64;
                    let _ = tx.send(frame).await;
                    return;
                }
                ev = p.events.recv() => {
                    let Some(ev) = ev else { continue };
                    if modern && is_server_request(&ev) {
                        let msg = park(&mcp, who.clone(), &id, p, ev);
                        let _ = tx.send(sse_frame(&mcp.hub.next_event_id(), &msg)).await;
                        return;
                    }
                    let frame = sse_frame(&mcp.hub.next_event_id(), &translate(&mcp, &who, &p.server, ev));
                    sent += frame.len() as u64;
                    if tx.send(frame).await.is_err() {
                        p.record.call.error = Some("client went away".into());
                        return;
                    }
                }
            }
        }
    });
    sse_response(rx)
}

/// Feeds hub notifications to one long-lived stream, with keep-alive comments.
fn follow(
    mcp: &Mcp,
    first: Vec<Bytes>,
    shape: impl Fn(&Value, Option<&str>) -> Option<Value> + Send + 'static,
) -> Response<Body> {
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let mut sub = mcp.hub.subscribe();
    tokio::spawn(async move {
        for f in first {
            if tx.send(f).await.is_err() {
                return;
            }
        }
        loop {
            let next = tokio::select! {
                m = sub.recv() => m,
                _ = tokio::time::sleep(KEEPALIVE) => {
                    if tx.send(Bytes::from_static(b": keep-alive\n\n")).await.is_err() {
                        return;
                    }
                    continue;
                }
            };
            match next {
                Ok((eid, msg, server)) => {
                    if let Some(m) = shape(&msg, server.as_deref())
                        && tx.send(sse_frame(&eid, &m)).await.is_err()
                    {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    });
    sse_response(rx)
}

/// The handshake era's GET stream; `last` replays what a reconnecting client missed. A
/// notification about one server's resources reaches only callers whose `rule` sees that server.
pub fn server_stream(
    mcp: &Mcp,
    last: Option<String>,
    rule: Option<Arc<crate::policy::McpRule>>,
) -> Response<Body> {
    let visible = move |server: Option<&str>| match (server, &rule) {
        (Some(s), Some(r)) => r.server_visible(s),
        _ => true,
    };
    let replay = last.map(|l| mcp.hub.since(&l)).unwrap_or_default();
    let first = replay
        .iter()
        .filter(|(_, _, s)| visible(s.as_deref()))
        .map(|(eid, m, _)| sse_frame(eid, m))
        .collect();
    follow(mcp, first, move |m, server| visible(server).then(|| m.clone()))
}

/// `subscriptions/listen` (2026-07-28): acknowledge the list_changed kinds asked for, then
/// deliver them, each tagged with the subscription id.
pub fn listen(mcp: &Mcp, id: &Value, params: &Value) -> Response<Body> {
    let asked = params.get("notifications").cloned().unwrap_or(Value::Null);
    let want = |k: &str| asked.get(k).and_then(Value::as_bool).unwrap_or(false);
    let mut honored = serde_json::Map::new();
    for k in ["toolsListChanged", "promptsListChanged", "resourcesListChanged"] {
        if want(k) {
            honored.insert(k.into(), Value::Bool(true));
        }
    }
    let meta = json!({"io.modelcontextprotocol/subscriptionId": id});
    let ack = jsonrpc::notification(
        "notifications/subscriptions/acknowledged",
        &json!({"notifications": honored, "_meta": meta}),
    );
    let first = vec![sse_frame(&mcp.hub.next_event_id(), &ack)];
    let (tools, prompts, resources) =
        (want("toolsListChanged"), want("promptsListChanged"), want("resourcesListChanged"));
    follow(mcp, first, move |m, _| {
        let method = m.get("method").and_then(Value::as_str)?;
        let ok = match method {
            "notifications/tools/list_changed" => tools,
            "notifications/prompts/list_changed" => prompts,
            "notifications/resources/list_changed" => resources,
            _ => false,
        };
        ok.then(|| jsonrpc::notification(method, &json!({"_meta": meta})))
    })
}
