//! Where A2A requests come in. `/a2a/<name>` on the explicit listener: the agent's card (offering
//! nodegate's interfaces for it), JSON-RPC of either generation at `/a2a/<name>`, the 1.0
//! HTTP+JSON binding below `/a2a/<name>/rest`; each call bridged to whatever the agent speaks.
//! Intercepted requests to an agent (and absolute-form ones naming a registered agent's address)
//! are governed in place: the card passes unchanged, calls go where they were going.
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Method as HttpMethod, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Incoming;
use serde_json::json;

use super::{
    A2a, Agent,
    card::REST,
    exchange::{self, Inbound, Target, full, json_response, not_copied},
    record::Call,
};
use crate::proxy::{Conn, Ctx, upstream::Body};

pub const PREFIX: &str = "/a2a/";
const CARD_PATHS: [&str; 2] = ["/.well-known/agent-card.json", "/.well-known/agent.json"];
/// The first path segments of the REST binding's operations (what follows is below them).
const REST_OPS: [&str; 4] = ["message:send", "message:stream", "tasks", "extendedAgentCard"];

/// Where a call goes: an agent interface's URL (explicit mode), or the destination an
/// intercepted connection was going to (transparent mode; through TLS when it was terminated).
pub enum Upstream {
    Registered(String),
    Intercepted { dst: std::net::SocketAddr, origin: Option<Arc<crate::tls::client::Origin>> },
}

impl Upstream {
    pub fn uri(&self, path: &str) -> Result<http::Uri, String> {
        let r = match self {
            Self::Registered(base) => format!("{base}{path}").parse::<http::Uri>(),
            Self::Intercepted { origin: Some(o), .. } => o.uri(path),
            Self::Intercepted { dst, origin: None } => format!("http://{dst}{path}").parse::<http::Uri>(),
        };
        r.map_err(|e| e.to_string())
    }

    pub async fn send(&self, ctx: &Ctx, a2a: &A2a, req: Request<Body>) -> Result<Response<Incoming>, String> {
        let r = match self {
            Self::Intercepted { origin: Some(o), .. } => o.request(req).await,
            Self::Intercepted { origin: None, .. } => ctx.upstream.http1.request(req).await,
            Self::Registered(_) => a2a.client(ctx).request(req).await,
        };
        r.map_err(|e| chain(&e))
    }
}

/// An error and its causes, `: `-joined (a TLS failure sits a few sources below the client's).
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let s = c.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cur = c.source();
    }
    out
}

/// Splits a request path at the REST binding's operation: the path below the interface URL
/// (tenant included), when the path names one.
fn rest_op(path: &str) -> Option<&str> {
    let mut at = 0;
    for seg in path.split('/') {
        if at > 0 && REST_OPS.contains(&seg) {
            return Some(&path[at - 1..]);
        }
        at += seg.len() + 1;
    }
    None
}

fn refused(call: Call, status: StatusCode, msg: String) -> Response<Body> {
    call.refuse("error", None, msg.clone());
    json_response(status, &json!({"error": msg}))
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
    let target = Target::Registered(agent.clone());
    let query = req.uri().query().map(str::to_string);
    if *req.method() == HttpMethod::GET && CARD_PATHS.contains(&sub.as_str()) {
        return card(&a2a, &agent, req, call).await;
    }
    if sub == "/" && *req.method() == HttpMethod::POST {
        return exchange::call(&a2a, agent.name.clone(), target, Inbound::JsonRpc, req, call, &keys).await;
    }
    if let Some(below) = sub.strip_prefix(REST).filter(|b| b.is_empty() || b.starts_with('/')) {
        let inbound = Inbound::Rest { path: below.to_string(), query };
        return exchange::call(&a2a, agent.name.clone(), target, inbound, req, call, &keys).await;
    }
    let msg = format!(
        "nodegate serves agent {name}'s card at {PREFIX}{name}/.well-known/agent-card.json, JSON-RPC at {PREFIX}{name} and HTTP+JSON below {PREFIX}{name}{REST}; nothing else here"
    );
    refused(call, StatusCode::NOT_FOUND, msg)
}

/// An intercepted request to an A2A agent (a destination classed `a2a`, or a registered agent's
/// address): governed in place.
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
/// explicit listener naming a registered agent's address): the same policy, ownership and audit
/// as at `/a2a/<name>`, on whichever binding it uses; it goes where it was going, unchanged.
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
    let path = req.uri().path().to_string();
    if *req.method() == HttpMethod::GET && CARD_PATHS.contains(&path.as_str()) {
        return passthrough_card(&a2a, agent, up, req, call).await;
    }
    let inbound = match rest_op(&path) {
        Some(below) => {
            Inbound::Rest { path: below.to_string(), query: req.uri().query().map(str::to_string) }
        }
        None if *req.method() == HttpMethod::POST => Inbound::JsonRpc,
        None => {
            let msg = "nodegate governs this A2A agent's JSON-RPC and HTTP+JSON interfaces; other requests are not passed on";
            return refused(call, StatusCode::METHOD_NOT_ALLOWED, msg.into());
        }
    };
    exchange::call(&a2a, agent, Target::AsSent(up), inbound, req, call, &keys).await
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
        Err(e) => return refused(call, StatusCode::BAD_GATEWAY, e),
    };
    not_copied(&mut parts.headers, false);
    crate::identity::strip_credentials(&call.ctx.identities.keys(), &mut parts.headers);
    let request = Request::from_parts(parts, Empty::<Bytes>::new().map_err(|never| match never {}).boxed());
    let ctx = call.ctx.clone();
    let got = tokio::time::timeout(a2a.cfg.timeout, async {
        let resp = up.send(&ctx, a2a, request).await?;
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
        Err(e) => refused(call, StatusCode::BAD_GATEWAY, format!("agent {agent}: {e}")),
    }
}

/// The agent's card, offering nodegate's interfaces for it (and learning what the agent speaks).
async fn card(a2a: &A2a, agent: &Agent, req: Request<Incoming>, mut call: Call) -> Response<Body> {
    call.rec.method = "GetAgentCard";
    if let Err(rule) = a2a.check(&call.identity, &agent.name, None) {
        let msg =
            format!("{} may not reach agent {} ({rule})", crate::policy::who(&call.identity), agent.name);
        call.refuse("denied", Some(&rule), msg.clone());
        return json_response(StatusCode::FORBIDDEN, &json!({"error": msg}));
    }
    let host =
        req.headers().get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("localhost").to_string();
    let (status, mut card) = match super::discover::fetch(&call.ctx, a2a, agent).await {
        Ok(x) => x,
        Err(e) => return refused(call, StatusCode::BAD_GATEWAY, format!("agent {}: {e}", agent.name)),
    };
    call.rec.status = status.as_u16();
    let learned = super::discover::learn(agent, &card);
    super::card::advertise(&mut card, &format!("http://{host}{PREFIX}{}", agent.name));
    // Each caller sees the skills it may ask for.
    if let Some(list) = card.get_mut("skills").and_then(serde_json::Value::as_array_mut) {
        list.retain(|s| {
            let id = s.get("id").and_then(serde_json::Value::as_str).unwrap_or("");
            a2a.may_see_skill(&call.identity, id, learned.tags(id))
        });
    }
    let out = Bytes::from(serde_json::to_vec(&card).unwrap_or_default());
    call.rec.bytes_sent = out.len() as u64;
    call.rec.outcome = "ok";
    call.finish();
    let mut r = Response::new(full(out));
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rest_operations_are_found_below_any_base() {
        assert_eq!(rest_op("/message:send"), Some("/message:send"));
        assert_eq!(rest_op("/api/v1/tasks/t1:cancel"), Some("/tasks/t1:cancel"));
        assert_eq!(rest_op("/"), None);
        assert_eq!(rest_op("/rpc"), None);
    }
}
