//! The `/mcp` endpoint: streamable HTTP for clients of both eras.
//!
//! - 2026-07-28 (stateless): every POST carries its version in `MCP-Protocol-Version` and in
//!   `_meta`; `Mcp-Method` must agree with the body. No session.
//! - 2025-11-25 and older handshake versions: `initialize` opens a session whose id carries
//!   its own signed state (see `session`); every later request presents it. GET opens the
//!   server stream (list_changed; `Last-Event-ID` resumes), DELETE ends the session.
//!
//! Errors are JSON-RPC errors with the HTTP status the transport spec asks for.
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde_json::{Value, json};

use super::{HANDSHAKE_VERSIONS, MODERN_VERSIONS, Mcp, jsonrpc, relay, session::Session};
use crate::{
    identity::Identity,
    proxy::{Conn, Ctx, upstream::Body},
};

pub const SESSION_HEADER: &str = "mcp-session-id";
pub const VERSION_HEADER: &str = "mcp-protocol-version";
const META_VERSION: &str = "io.modelcontextprotocol/protocolVersion";

/// Who is asking, in which era.
pub struct Caller {
    pub identity: Arc<Identity>,
    /// The negotiated (handshake) or per-request (stateless) protocol version.
    pub version: String,
    pub modern: bool,
    /// The client accepts an event-stream answer.
    pub sse: bool,
    pub mode: &'static str,
    /// The W3C `traceparent` header, if the client sent one.
    pub traceparent: Option<String>,
    /// Who owns the calls this caller makes: its session id (handshake era), else its
    /// identity. Only the owner may answer, cancel or resume them.
    pub owner: Arc<str>,
}

/// The trace id of a W3C `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`), if it is one.
pub fn trace_id(traceparent: &str) -> Option<String> {
    let id = traceparent.split('-').nth(1)?;
    (id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) && id.bytes().any(|b| b != b'0'))
        .then(|| id.to_ascii_lowercase())
}

/// A caller's identity as the owner of what it starts without a session: the workload and the
/// principal together, so neither a key nor its absence lets one caller act on another's calls.
pub fn owner_of(id: &Identity) -> Arc<str> {
    Arc::from(format!("{}|{}", id.workload, id.principal.as_deref().unwrap_or("")))
}

pub fn json_response(status: StatusCode, v: &Value) -> Response<Body> {
    let mut r = Response::new(
        Full::new(Bytes::from(serde_json::to_vec(v).unwrap_or_default()))
            .map_err(|never| match never {})
            .boxed(),
    );
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn rpc_error(status: StatusCode, id: &Value, code: i64, msg: &str, data: Option<Value>) -> Response<Body> {
    json_response(status, &jsonrpc::error(id, code, msg, data))
}

fn empty(status: StatusCode) -> Response<Body> {
    let mut r = Response::new(http_body_util::Empty::new().map_err(|never| match never {}).boxed());
    *r.status_mut() = status;
    r
}

fn supported() -> Value {
    json!({"supported": HANDSHAKE_VERSIONS.iter().chain(MODERN_VERSIONS.iter()).collect::<Vec<_>>()})
}

pub async fn handle(ctx: Arc<Ctx>, conn: Arc<Conn>, req: Request<Incoming>) -> Response<Body> {
    let mcp = ctx.mcp.load_full();
    // DNS-rebinding protection: a browser page may only call us from an allowed origin.
    if let Some(origin) = req.headers().get(header::ORIGIN).and_then(|o| o.to_str().ok())
        && !mcp.cfg.allowed_origins.iter().any(|a| a == origin)
    {
        return rpc_error(
            StatusCode::FORBIDDEN,
            &Value::Null,
            jsonrpc::INVALID_REQUEST,
            &format!("origin {origin} is not allowed"),
            None,
        );
    }
    let identity = crate::identity::caller(&ctx.identities.keys(), &conn.identity, req.headers());
    let sse = req
        .headers()
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("text/event-stream"));
    let traceparent = req.headers().get("traceparent").and_then(|v| v.to_str().ok()).map(str::to_string);
    let caller = |version: String, modern: bool| Caller {
        identity: identity.clone(),
        version,
        modern,
        sse,
        mode: conn.mode,
        traceparent: traceparent.clone(),
        owner: owner_of(&identity),
    };
    match *req.method() {
        Method::POST => post(&ctx, &mcp, req, &identity, caller).await,
        Method::GET => {
            if !sse {
                return empty(StatusCode::NOT_ACCEPTABLE);
            }
            match session_of(&mcp, &req, &identity) {
                Ok(Some(_)) => {
                    let last =
                        req.headers().get("last-event-id").and_then(|v| v.to_str().ok()).map(str::to_string);
                    relay::server_stream(&mcp, last, mcp.policy.rule_for(&identity))
                }
                Ok(None) => rpc_error(
                    StatusCode::BAD_REQUEST,
                    &Value::Null,
                    jsonrpc::INVALID_REQUEST,
                    "the server stream needs an Mcp-Session-Id (2026-07-28 clients use subscriptions/listen)",
                    None,
                ),
                Err(r) => r,
            }
        }
        Method::DELETE => match session_of(&mcp, &req, &identity) {
            Ok(Some(_)) => {
                if let (Some(id), Ok(mut ended)) = (req.headers().get(SESSION_HEADER), mcp.calls.ended.lock())
                    && let Ok(id) = id.to_str()
                {
                    // Remembered until the id would have expired anyway.
                    let now = super::session::now();
                    ended.retain(|_, until| *until > now);
                    super::make_room(&mut ended, super::MAX_ENDED, |until| *until);
                    ended.insert(id.to_string(), now + mcp.cfg.session_ttl.as_secs());
                }
                empty(StatusCode::OK)
            }
            Ok(None) => empty(StatusCode::BAD_REQUEST),
            Err(r) => r,
        },
        _ => {
            let mut r = empty(StatusCode::METHOD_NOT_ALLOWED);
            r.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, POST, DELETE"));
            r
        }
    }
}

/// The session a request presents: None without the header, Err (404) when it is not ours.
#[allow(clippy::result_large_err)]
fn session_of(mcp: &Mcp, req: &Request<Incoming>, id: &Identity) -> Result<Option<Session>, Response<Body>> {
    let Some(raw) = req.headers().get(SESSION_HEADER).and_then(|v| v.to_str().ok()) else { return Ok(None) };
    if mcp.calls.ended.lock().is_ok_and(|e| e.contains_key(raw)) {
        return Err(rpc_error(
            StatusCode::NOT_FOUND,
            &Value::Null,
            jsonrpc::INVALID_REQUEST,
            "session ended",
            None,
        ));
    }
    mcp.keys.decode(raw, &owner_of(id), mcp.cfg.session_ttl).map(Some).map_err(|e| {
        // 404 tells a client to start a new session (initialize again).
        rpc_error(
            StatusCode::NOT_FOUND,
            &Value::Null,
            jsonrpc::INVALID_REQUEST,
            &format!("session not found: {e}"),
            None,
        )
    })
}

async fn post(
    ctx: &Arc<Ctx>,
    mcp: &Arc<Mcp>,
    req: Request<Incoming>,
    identity: &Identity,
    caller: impl Fn(String, bool) -> Caller,
) -> Response<Body> {
    let ctype = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !ctype.starts_with("application/json") {
        return rpc_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            &Value::Null,
            jsonrpc::INVALID_REQUEST,
            "send JSON-RPC as application/json",
            None,
        );
    }
    let header_version = req.headers().get(VERSION_HEADER).and_then(|v| v.to_str().ok()).map(str::to_string);
    if let Some(v) = &header_version
        && !HANDSHAKE_VERSIONS.contains(&v.as_str())
        && !MODERN_VERSIONS.contains(&v.as_str())
    {
        return rpc_error(
            StatusCode::BAD_REQUEST,
            &Value::Null,
            jsonrpc::UNSUPPORTED_PROTOCOL_VERSION,
            &format!("unsupported MCP-Protocol-Version {v:?}"),
            Some(supported()),
        );
    }
    let header_method = req.headers().get("mcp-method").and_then(|v| v.to_str().ok()).map(str::to_string);
    let session = match session_of(mcp, &req, identity) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let session_raw: Arc<str> =
        Arc::from(req.headers().get(SESSION_HEADER).and_then(|v| v.to_str().ok()).unwrap_or_default());
    let max = mcp.cfg.max_body_bytes;
    let bytes = match Limited::new(req.into_body(), max).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            let too_big = e.downcast_ref::<http_body_util::LengthLimitError>().is_some();
            return if too_big {
                rpc_error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    &Value::Null,
                    jsonrpc::INVALID_REQUEST,
                    &format!("message larger than mcp.max_body_bytes ({max} bytes)"),
                    None,
                )
            } else {
                rpc_error(
                    StatusCode::BAD_REQUEST,
                    &Value::Null,
                    jsonrpc::INVALID_REQUEST,
                    &format!("reading body: {e}"),
                    None,
                )
            };
        }
    };
    let msg = match jsonrpc::Message::parse(&bytes) {
        Ok(m) => m,
        Err(e) => return rpc_error(StatusCode::BAD_REQUEST, &e.id, e.code, &e.message, None),
    };
    let (id, method, params) = match &msg {
        jsonrpc::Message::Request { id, method, params } => (Some(id.clone()), method.as_str(), params),
        jsonrpc::Message::Notification { method, params } => (None, method.as_str(), params),
        jsonrpc::Message::Response { .. } => (None, "", &Value::Null),
    };
    let rid = id.clone().unwrap_or(Value::Null);
    let meta_version =
        params.pointer(&format!("/_meta/{}", META_VERSION.replace('/', "~1"))).and_then(Value::as_str);
    let modern = header_version.as_deref().is_some_and(|v| MODERN_VERSIONS.contains(&v))
        || meta_version.is_some_and(|v| MODERN_VERSIONS.contains(&v));

    let caller = if modern {
        let version = meta_version.or(header_version.as_deref()).unwrap_or_default().to_string();
        if let (Some(h), Some(m)) = (&header_version, meta_version)
            && h != m
        {
            return rpc_error(
                StatusCode::BAD_REQUEST,
                &rid,
                jsonrpc::HEADER_MISMATCH,
                &format!("MCP-Protocol-Version {h} does not match _meta {m}"),
                None,
            );
        }
        if !MODERN_VERSIONS.contains(&version.as_str()) {
            return rpc_error(
                StatusCode::BAD_REQUEST,
                &rid,
                jsonrpc::UNSUPPORTED_PROTOCOL_VERSION,
                &format!("unsupported protocol version {version:?}"),
                Some(supported()),
            );
        }
        if let Some(h) = &header_method
            && !method.is_empty()
            && h != method
        {
            return rpc_error(
                StatusCode::BAD_REQUEST,
                &rid,
                jsonrpc::HEADER_MISMATCH,
                &format!("Mcp-Method {h} does not match the body's {method}"),
                None,
            );
        }
        caller(version, true)
    } else if method == "initialize" {
        let Some(id) = id else {
            return rpc_error(
                StatusCode::BAD_REQUEST,
                &rid,
                jsonrpc::INVALID_REQUEST,
                "initialize is a request",
                None,
            );
        };
        return initialize(mcp, caller(String::new(), false), &id, params);
    } else {
        match session {
            Some(s) => Caller { owner: session_raw.clone(), ..caller(s.v, false) },
            None => {
                return rpc_error(
                    StatusCode::BAD_REQUEST,
                    &rid,
                    jsonrpc::INVALID_REQUEST,
                    "no Mcp-Session-Id: send initialize first (or speak 2026-07-28 with _meta on each request)",
                    Some(supported()),
                );
            }
        }
    };

    match msg {
        jsonrpc::Message::Notification { method, params } => {
            super::dispatch::notification(mcp, &caller, &method, &params).await;
            empty(StatusCode::ACCEPTED)
        }
        jsonrpc::Message::Response { id, body } => {
            super::dispatch::client_response(mcp, &caller, &id, body).await;
            empty(StatusCode::ACCEPTED)
        }
        jsonrpc::Message::Request { id, method, params } => {
            super::dispatch::request(ctx, mcp, caller, id, method, params, bytes.len() as u64).await
        }
    }
}

/// The handshake: agree on a version, answer with the federated capabilities and a session id
/// that carries the session's state.
fn initialize(mcp: &Mcp, caller: Caller, id: &Value, params: &Value) -> Response<Body> {
    let asked = params.get("protocolVersion").and_then(Value::as_str).unwrap_or_default();
    let version =
        if HANDSHAKE_VERSIONS.contains(&asked) { asked } else { super::upstream::HANDSHAKE_VERSION };
    let s = Session {
        v: version.to_string(),
        who: owner_of(&caller.identity).to_string(),
        info: params.get("clientInfo").cloned().unwrap_or(Value::Null),
        caps: params.get("capabilities").cloned().unwrap_or(Value::Null),
        n: fastrand::u64(..),
        t: super::session::now(),
    };
    let result = json!({
        "protocolVersion": version,
        "capabilities": capabilities(),
        "serverInfo": server_info(),
        "instructions": "nodegate federates several MCP servers; names may carry their server's name as a prefix.",
    });
    let mut r = json_response(StatusCode::OK, &jsonrpc::result(id, result));
    if let Ok(v) = HeaderValue::from_str(&mcp.keys.encode(&s)) {
        r.headers_mut().insert(SESSION_HEADER, v);
    }
    r
}

/// Fits a result to the client's era: 2026-07-28 requires `resultType` on every result and
/// caching directives on lists, discover and resource reads; a handshake-era client gets
/// neither (servers of the other era may have added them).
pub fn fit_result(msg: &mut Value, method: &str, modern: bool) {
    let Some(r) = msg.get_mut("result").and_then(Value::as_object_mut) else { return };
    let cacheable = matches!(
        method,
        "tools/list"
            | "prompts/list"
            | "resources/list"
            | "resources/templates/list"
            | "resources/read"
            | "server/discover"
    );
    if modern {
        r.entry("resultType").or_insert_with(|| Value::from("complete"));
        if cacheable {
            r.entry("ttlMs").or_insert_with(|| Value::from(0));
            r.entry("cacheScope").or_insert_with(|| Value::from("private"));
        }
    } else if r.get("resultType").and_then(Value::as_str) == Some("complete") {
        r.remove("resultType");
        r.remove("ttlMs");
        r.remove("cacheScope");
    }
}

pub fn capabilities() -> Value {
    json!({
        "tools": {"listChanged": true},
        "prompts": {"listChanged": true},
        "resources": {"listChanged": true, "subscribe": true},
        "completions": {},
        "logging": {},
    })
}

pub fn server_info() -> Value {
    json!({"name": "nodegate", "version": env!("CARGO_PKG_VERSION")})
}
