//! MCP traffic intercepted on its way to a server: a destination classed `mcp`, or the address
//! of a configured server. The client keeps talking to its server (sessions, eras and streams
//! are theirs); nodegate reads each JSON-RPC message on the way, so the same policy applies as
//! at `/mcp`: `tools/list` answers are filtered, a `tools/call` that policy refuses is answered
//! by nodegate with a JSON-RPC error and never reaches the server, and every call is audited
//! under the workload the kernel named.
use std::{net::SocketAddr, sync::Arc, time::Instant};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde_json::{Value, json};

use super::{dispatch::Audited, handler::json_response, jsonrpc};
use crate::{
    proxy::{Conn, Ctx, upstream::Body},
    telemetry::audit::{Body as AuditBody, McpCall, Record},
};

/// Largest answer to a `tools/list` or `tools/call` read whole to filter or classify it.
const MAX_INSPECT: usize = 16 * 1024 * 1024;

fn full(b: Bytes) -> Body {
    Full::new(b).map_err(|never| match never {}).boxed()
}

/// Handles one intercepted POST to an MCP server at `dst`.
pub async fn handle(
    ctx: Arc<Ctx>,
    conn: Arc<Conn>,
    req: Request<Incoming>,
    dst: SocketAddr,
) -> Response<Body> {
    let mcp = ctx.mcp.load_full();
    let server: Arc<str> = mcp
        .server_for(dst, conn.origin.as_deref())
        .map_or_else(|| Arc::from(dst.to_string()), |s| s.name.clone());
    let start = Instant::now();
    let (mut parts, body) = req.into_parts();
    let bytes = match Limited::new(body, mcp.cfg.max_body_bytes).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return json_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                &jsonrpc::error(&Value::Null, jsonrpc::INVALID_REQUEST, &format!("request body: {e}"), None),
            );
        }
    };
    let identity = crate::identity::caller(&ctx.identities.keys(), &conn.identity, &parts.headers);
    // What cannot be read cannot be governed: refused, never passed on (a batch, an id the
    // server might read differently from us, garbage).
    let msg = match jsonrpc::Message::parse(&bytes) {
        Ok(m) => m,
        Err(invalid) => {
            let mut rec = Record::new(
                "mcp",
                &identity,
                conn.mode,
                dst.to_string(),
                conn.protocol,
                AuditBody::Mcp(Box::new(McpCall {
                    method: "(unreadable)".into(),
                    server: Some(server.clone()),
                    outcome: "denied",
                    error: Some(invalid.message.clone()),
                    bytes_sent: bytes.len() as u64,
                    duration_ms: start.elapsed().as_secs_f64() * 1e3,
                    ..Default::default()
                })),
            );
            rec.decision = "deny";
            rec.rule = Some(Arc::from("mcp.unreadable"));
            ctx.audit.emit(rec);
            return json_response(
                StatusCode::BAD_REQUEST,
                &jsonrpc::error(&invalid.id, invalid.code, &invalid.message, None),
            );
        }
    };
    let (id, method, params) = match &msg {
        jsonrpc::Message::Request { id, method, params } => (id.clone(), method.clone(), params.clone()),
        // Notifications and responses (answers to the server's own requests): passed on.
        _ => (Value::Null, String::new(), Value::Null),
    };
    let rule = mcp.policy.rule_for(&identity);
    let governed = matches!(method.as_str(), "tools/call" | "prompts/get" | "resources/read");
    let traceparent = params
        .pointer("/_meta/traceparent")
        .and_then(Value::as_str)
        .or_else(|| parts.headers.get("traceparent").and_then(|v| v.to_str().ok()));
    let mut record = governed.then(|| Audited {
        ctx: ctx.clone(),
        mcp: mcp.clone(),
        caller_identity: identity.clone(),
        mode: conn.mode,
        audited: true,
        rule: None,
        policy: Default::default(),
        trace_id: traceparent.and_then(super::handler::trace_id),
        call: McpCall {
            method: method.clone(),
            server: Some(server.clone()),
            name: params
                .get("name")
                .or_else(|| params.get("uri"))
                .and_then(Value::as_str)
                .map(str::to_string),
            requested: None,
            arguments: (method == "tools/call" && mcp.cfg.audit_arguments)
                .then(|| params.get("arguments").map(|a| super::dispatch::redact(a, &mcp.cfg.redact)))
                .flatten(),
            protocol_version: parts
                .headers
                .get(super::handler::VERSION_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string(),
            outcome: "failed",
            bytes_sent: bytes.len() as u64,
            trace: ctx.audit.trace(traceparent),
            ..Default::default()
        },
        start,
    });

    if let Some(rec) = record.as_mut() {
        let name = rec.call.name.clone().unwrap_or_default();
        let no_arguments = json!({});
        let arguments = params.get("arguments").unwrap_or(&no_arguments);
        if let Some(msg) = rec.check_rules(&id, &identity, &server, &name, arguments) {
            return json_response(StatusCode::OK, &msg);
        }
    }
    if let (Some(r), Some(rec)) = (&rule, record.as_mut()) {
        let name = rec.call.name.clone().unwrap_or_default();
        let denied = if method == "tools/call" {
            let args = params.get("arguments").cloned().unwrap_or_else(|| json!({}));
            r.check_call(&identity, &server, &name, &args).err()
        } else if !r.server_visible(&server) {
            Some(crate::policy::CallDenied {
                rule: r.name.clone(),
                reason: format!("server {server} is not allowed"),
            })
        } else {
            None
        };
        if let Some(d) = denied {
            let msg = rec.deny(&id, &d);
            return json_response(StatusCode::OK, &msg);
        }
    }

    // On to the server the client addressed.
    crate::proxy::http::strip_hop_by_hop(&mut parts.headers);
    crate::identity::strip_credentials(&ctx.identities.keys(), &mut parts.headers);
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
    let uri = match &conn.origin {
        Some(o) => o.uri(&path),
        None => format!("http://{dst}{path}").parse::<Uri>(),
    };
    parts.uri = match uri {
        Ok(u) => u,
        Err(e) => {
            return json_response(
                StatusCode::BAD_REQUEST,
                &jsonrpc::error(&id, jsonrpc::INVALID_REQUEST, &e.to_string(), None),
            );
        }
    };
    parts.version = http::Version::HTTP_11;
    parts.headers.remove(header::CONTENT_LENGTH);
    let up = Request::from_parts(parts, full(bytes));
    let sent = match &conn.origin {
        Some(o) => o.request(up).await,
        None => ctx.upstream.http1.request(up).await,
    };
    let resp = match sent {
        Ok(r) => r,
        Err(e) => {
            if let Some(rec) = record.as_mut() {
                rec.call.error = Some(format!("upstream {dst}: {e}"));
            }
            return json_response(
                StatusCode::BAD_GATEWAY,
                &jsonrpc::error(
                    &id,
                    jsonrpc::UPSTREAM_ERROR,
                    &format!("MCP server {server} at {dst}: {e}"),
                    None,
                ),
            );
        }
    };
    let (mut rparts, rbody) = resp.into_parts();
    crate::proxy::http::strip_hop_by_hop(&mut rparts.headers);
    let inspect = method == "tools/list" && rule.is_some() || record.is_some();
    if !inspect || !rparts.status.is_success() {
        if let Some(rec) = record.as_mut() {
            rec.call.outcome = if rparts.status.is_success() { "ok" } else { "error" };
        }
        return Response::from_parts(rparts, crate::proxy::upstream::boxed(rbody));
    }
    let sse = rparts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    if sse && record.is_some() {
        // A streamed tool answer (progress first) is passed on as it comes.
        if let Some(rec) = record.as_mut() {
            rec.call.outcome = "ok";
        }
        if let Some(rec) = record.take() {
            let body = crate::proxy::observed::Observed::new(crate::proxy::upstream::boxed(rbody), rec);
            return Response::from_parts(rparts, body.boxed());
        }
    }
    let data = match Limited::new(rbody, MAX_INSPECT).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return json_response(
                StatusCode::BAD_GATEWAY,
                &jsonrpc::error(
                    &id,
                    jsonrpc::UPSTREAM_ERROR,
                    &format!("reading the server's answer: {e}"),
                    None,
                ),
            );
        }
    };
    let filter = |mut v: Value| -> Value {
        if method == "tools/list"
            && let Some(r) = &rule
            && let Some(tools) = v.pointer_mut("/result/tools").and_then(Value::as_array_mut)
        {
            tools.retain(|t| {
                t.get("name").and_then(Value::as_str).is_some_and(|n| r.tool_visible(&server, n))
            });
        }
        v
    };
    let out = if sse {
        let text = String::from_utf8_lossy(&data);
        let mut out = String::with_capacity(text.len());
        for ev in text.split_inclusive("\n\n") {
            let mut rebuilt = String::new();
            for line in ev.lines() {
                match line
                    .strip_prefix("data:")
                    .map(str::trim_start)
                    .and_then(|d| serde_json::from_str::<Value>(d).ok())
                {
                    Some(v) => {
                        rebuilt.push_str("data: ");
                        rebuilt.push_str(&serde_json::to_string(&filter(v)).unwrap_or_default());
                    }
                    None => rebuilt.push_str(line),
                }
                rebuilt.push('\n');
            }
            if ev.ends_with("\n\n") {
                rebuilt.push('\n');
            }
            out.push_str(&rebuilt);
        }
        Bytes::from(out)
    } else {
        match serde_json::from_slice::<Value>(&data) {
            Ok(v) => {
                if let Some(rec) = record.as_mut() {
                    rec.outcome(&v);
                }
                Bytes::from(serde_json::to_vec(&filter(v)).unwrap_or_default())
            }
            Err(_) => data,
        }
    };
    if let Some(rec) = record.as_mut() {
        rec.call.bytes_received = out.len() as u64;
        if rec.call.outcome == "failed" {
            rec.call.outcome = "ok";
        }
    }
    rparts.headers.remove(header::CONTENT_LENGTH);
    rparts.headers.insert(header::CONTENT_LENGTH, HeaderValue::from(out.len()));
    Response::from_parts(rparts, full(out))
}

/// A streamed answer counts its bytes into the call's record, written when the stream ends or
/// the client goes away.
impl crate::proxy::observed::Observer for Audited {
    fn data(&mut self, len: usize) {
        self.call.bytes_received += len as u64;
    }

    fn error(&mut self, e: &crate::proxy::upstream::BoxError) {
        self.call.outcome = "failed";
        self.call.error = Some(format!("server stream: {e}"));
    }
}
