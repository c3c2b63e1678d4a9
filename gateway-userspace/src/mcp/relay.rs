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
}

impl Drop for Inflight {
    fn drop(&mut self) {
        if let Ok(mut m) = self.mcp.inflight.lock() {
            m.remove(&self.key);
        }
        if !self.done {
            let (server, id) = (self.server.clone(), self.upstream_id);
            tokio::spawn(async move { server.cancel(id, "the client went away").await });
        }
    }
}

/// A server message relayed during a call: requests get a gateway id.
fn translate(mcp: &Mcp, server: &Arc<Server>, mut ev: Value) -> Value {
    let is_request = ev.get("method").is_some() && ev.get("id").is_some_and(|i| !i.is_null());
    if is_request && let Some(o) = ev.as_object_mut() {
        let original = o.get("id").cloned().unwrap_or(Value::Null);
        let key = mcp.relay_request(server.clone(), original);
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

#[allow(clippy::too_many_arguments)]
pub async fn call(
    mcp: &Arc<Mcp>,
    caller: Caller,
    server: Arc<Server>,
    id: Value,
    method: String,
    params: Value,
    exposed: Option<(String, String)>,
    mut record: Audited,
) -> Response<Body> {
    let upstream_id = server.next_id();
    let key = (caller.identity.workload.clone(), id.to_string());
    if let Ok(mut m) = mcp.inflight.lock() {
        m.insert(key.clone(), (server.clone(), upstream_id));
    }
    let mut inflight = Inflight { mcp: mcp.clone(), key, server: server.clone(), upstream_id, done: false };
    let (ev_tx, mut ev_rx) = mpsc::channel::<Value>(64);
    let s = server.clone();
    let m = method.clone();
    let mut fut = Box::pin(async move { s.call(upstream_id, &m, params, Some(ev_tx)).await });
    let modern = caller.modern;

    let first = loop {
        tokio::select! {
            biased;
            r = &mut fut => break Err(r),
            ev = ev_rx.recv() => match ev {
                Some(ev) if caller.sse => break Ok(ev),
                Some(ev) => refuse(&server, &ev).await,
                None => {
                    let r = (&mut fut).await;
                    break Err(r);
                }
            },
        }
    };
    let first = match first {
        Err(r) => {
            inflight.done = true;
            let msg = finish(r, (&method, modern), &id, &server, &exposed, &mut record);
            return record.reply(&id, msg);
        }
        Ok(ev) => ev,
    };

    // The server is talking first: stream.
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let mcp = mcp.clone();
    tokio::spawn(async move {
        // Own the guards whole (not field by field): their drops decide cancel and audit.
        let (mut inflight, mut record) = (inflight, record);
        let mut sent = 0u64;
        let frame = sse_frame(&mcp.hub.next_event_id(), &translate(&mcp, &server, first));
        sent += frame.len() as u64;
        if tx.send(frame).await.is_err() {
            return; // Inflight's drop cancels the call at the server.
        }
        loop {
            tokio::select! {
                biased;
                r = &mut fut => {
                    inflight.done = true;
                    let msg = finish(r, (&method, modern), &id, &server, &exposed, &mut record);
                    let frame = sse_frame(&mcp.hub.next_event_id(), &msg);
                    record.call.bytes_received = sent + frame.len() as u64;
                    let _ = tx.send(frame).await;
                    return;
                }
                ev = ev_rx.recv() => {
                    let Some(ev) = ev else { continue };
                    let frame = sse_frame(&mcp.hub.next_event_id(), &translate(&mcp, &server, ev));
                    sent += frame.len() as u64;
                    if tx.send(frame).await.is_err() {
                        record.call.error = Some("client went away".into());
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
    shape: impl Fn(&Value) -> Option<Value> + Send + 'static,
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
                Ok((eid, msg)) => {
                    if let Some(m) = shape(&msg)
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

/// The handshake era's GET stream; `last` replays what a reconnecting client missed.
pub fn server_stream(mcp: &Mcp, last: Option<String>) -> Response<Body> {
    let replay = last.map(|l| mcp.hub.since(&l)).unwrap_or_default();
    let first = replay.iter().map(|(eid, m)| sse_frame(eid, m)).collect();
    follow(mcp, first, |m| Some(m.clone()))
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
    follow(mcp, first, move |m| {
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
