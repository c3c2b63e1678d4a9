//! What each MCP method does at the gateway: answered here (discover, ping, lists merged from
//! every server), or routed to the one server that owns the named tool, prompt or resource,
//! after policy, with an audit record and metrics.
use std::{sync::Arc, time::Instant};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD as B64};
use http::{Response, StatusCode};
use serde_json::{Map, Value, json};

use super::{
    Mcp,
    catalog::{Kind, Resolved},
    handler::{Caller, capabilities, fit_result, json_response, server_info},
    jsonrpc, relay,
};
use crate::{
    proxy::{Ctx, upstream::Body},
    telemetry::{
        audit::{Body as AuditBody, McpCall, Record},
        mcp_metrics::{CallLabels, DurationLabels},
    },
};

pub async fn notification(mcp: &Mcp, caller: &Caller, method: &str, params: &Value) {
    if method == "notifications/cancelled"
        && let Some(rid) = params.get("requestId")
    {
        let key = (caller.owner.clone(), rid.to_string());
        if let Some(cancel) = mcp.calls.inflight.lock().ok().and_then(|m| m.get(&key).cloned()) {
            // The waiting call drops its request; dropping tells the server (relay::Inflight).
            cancel.notify_one();
        }
    }
    // initialized, roots/list_changed and the like need nothing from the gateway.
}

/// A client's answer to a request a server sent it through us: back to that server, with the
/// server's own id.
pub async fn client_response(mcp: &Mcp, caller: &Caller, id: &Value, mut body: Value) {
    let Some(key) = id.as_str() else { return };
    match mcp.take_relayed(&caller.owner, key) {
        Some(super::Relayed::Server { server, id: original }) => {
            if let Some(o) = body.as_object_mut() {
                o.insert("id".into(), original);
            }
            server.respond(body).await;
        }
        Some(super::Relayed::Collect(waiting)) => {
            let _ = waiting.send(body);
        }
        None => tracing::debug!(%id, "client answered a request nodegate does not know"),
    }
}

pub async fn request(
    ctx: &Arc<Ctx>,
    mcp: &Arc<Mcp>,
    caller: Caller,
    id: Value,
    method: String,
    params: Value,
    request_bytes: u64,
) -> Response<Body> {
    let modern = caller.modern;
    let ok = |result: Value| {
        let mut msg = jsonrpc::result(&id, result);
        fit_result(&mut msg, &method, modern);
        json_response(StatusCode::OK, &msg)
    };
    match method.as_str() {
        "server/discover" => ok(json!({
            "supportedVersions": super::MODERN_VERSIONS,
            "capabilities": capabilities(),
            "instructions": "nodegate federates several MCP servers; names may carry their server's name as a prefix.",
            "resultType": "complete",
            "_meta": {"io.modelcontextprotocol/serverInfo": server_info()},
        })),
        "ping" => ok(json!({})),
        "tools/list" => list(mcp, &caller, &id, Kind::Tools, &params).await,
        "prompts/list" => list(mcp, &caller, &id, Kind::Prompts, &params).await,
        "resources/list" => list(mcp, &caller, &id, Kind::Resources, &params).await,
        "resources/templates/list" => list(mcp, &caller, &id, Kind::Templates, &params).await,
        "tools/call"
        | "prompts/get"
        | "resources/read"
        | "resources/subscribe"
        | "resources/unsubscribe"
        | "completion/complete" => invoke(ctx, mcp, caller, id, method, params, request_bytes).await,
        "logging/setLevel" => {
            // Only the servers this caller may see hear its logging level.
            let rule = mcp.policy.rule_for(&caller.identity);
            let all = mcp
                .catalog
                .servers
                .iter()
                .filter(|s| rule.as_ref().is_none_or(|r| r.server_visible(&s.name)))
                .map(|s| s.call(s.next_id(), "logging/setLevel", params.clone(), None));
            futures_util::future::join_all(all).await;
            ok(json!({}))
        }
        "subscriptions/listen" => relay::listen(mcp, &id, &params),
        other => json_response(
            StatusCode::OK,
            &jsonrpc::error(&id, jsonrpc::METHOD_NOT_FOUND, &format!("method not found: {other}"), None),
        ),
    }
}

/// A federated list: every visible server's items, filtered by policy, paged by offset.
async fn list(mcp: &Mcp, caller: &Caller, id: &Value, kind: Kind, params: &Value) -> Response<Body> {
    let rule = mcp.policy.rule_for(&caller.identity);
    let server_ok = |s: &str| rule.as_ref().is_none_or(|r| r.server_visible(s));
    let start = Instant::now();
    let parts = mcp.catalog.list_all(kind, server_ok).await;
    let mut unavailable = Vec::new();
    for p in &parts {
        if let Err(e) = &p.items {
            if p.server.required {
                return json_response(
                    StatusCode::OK,
                    &jsonrpc::error(
                        id,
                        jsonrpc::UPSTREAM_ERROR,
                        &format!("required MCP server {} failed: {e}", p.server.name),
                        Some(json!({"server": &*p.server.name})),
                    ),
                );
            }
            unavailable.push(json!({"server": &*p.server.name, "error": e.to_string()}));
        }
    }
    let keep = |server: &str, item: &Value| match (kind, &rule) {
        (Kind::Tools, Some(r)) => {
            item.get("name").and_then(Value::as_str).is_some_and(|n| r.tool_visible(server, n))
        }
        _ => true,
    };
    let view = rule.as_ref().map_or("", |r| r.name.as_str());
    let merged = mcp.catalog.merged(kind, &parts, view, keep);
    let items = &merged.items;
    mcp.metrics
        .mcp
        .duration
        .get_or_create(&DurationLabels { server: Arc::from("*"), method: kind.method() })
        .observe(start.elapsed().as_secs_f64());

    let offset = match params.get("cursor").and_then(Value::as_str) {
        None => 0,
        Some(c) => {
            match B64.decode(c).ok().and_then(|b| String::from_utf8(b).ok()).and_then(|s| s.parse().ok()) {
                Some(o) => o,
                None => {
                    return json_response(
                        StatusCode::OK,
                        &jsonrpc::error(id, jsonrpc::INVALID_PARAMS, "invalid cursor", None),
                    );
                }
            }
        }
    };
    let size = if mcp.cfg.page_size == 0 { usize::MAX } else { mcp.cfg.page_size };
    if offset == 0 && size >= items.len() && unavailable.is_empty() {
        return whole_list(id, kind, &merged.json, caller.modern);
    }
    let page: Vec<Value> = items.iter().skip(offset).take(size).cloned().collect();
    let mut result = Map::new();
    let end = offset.saturating_add(page.len());
    result.insert(kind.field().into(), Value::Array(page));
    if end < items.len() {
        result.insert("nextCursor".into(), Value::from(B64.encode(end.to_string())));
    }
    if !unavailable.is_empty() {
        result.insert("_meta".into(), json!({"nodegate/unavailable": unavailable}));
    }
    let mut msg = jsonrpc::result(id, Value::Object(result));
    fit_result(&mut msg, kind.method(), caller.modern);
    json_response(StatusCode::OK, &msg)
}

/// A one-page answer written around the cached serialized list: no per-request serialization
/// of what did not change.
fn whole_list(id: &Value, kind: Kind, items_json: &[u8], modern: bool) -> Response<Body> {
    let id = serde_json::to_string(id).unwrap_or_else(|_| "null".into());
    let mut out = Vec::with_capacity(items_json.len() + 128);
    out.extend_from_slice(b"{\"jsonrpc\":\"2.0\",\"id\":");
    out.extend_from_slice(id.as_bytes());
    out.extend_from_slice(b",\"result\":{\"");
    out.extend_from_slice(kind.field().as_bytes());
    out.extend_from_slice(b"\":");
    out.extend_from_slice(items_json);
    if modern {
        out.extend_from_slice(b",\"resultType\":\"complete\",\"ttlMs\":0,\"cacheScope\":\"private\"");
    }
    out.extend_from_slice(b"}}");
    let mut r = Response::new(http_body_util::BodyExt::boxed(http_body_util::BodyExt::map_err(
        http_body_util::Full::new(bytes::Bytes::from(out)),
        |never| match never {},
    )));
    r.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    r
}

/// The names a routed method refers to, and how to put the server's own name back.
fn target_of(method: &str, params: &Value) -> Option<(Kind, &'static str, String)> {
    match method {
        "tools/call" => Some((Kind::Tools, "name", params.get("name")?.as_str()?.to_string())),
        "prompts/get" => Some((Kind::Prompts, "name", params.get("name")?.as_str()?.to_string())),
        "resources/read" | "resources/subscribe" | "resources/unsubscribe" => {
            Some((Kind::Resources, "uri", params.get("uri")?.as_str()?.to_string()))
        }
        "completion/complete" => {
            let r = params.get("ref")?;
            match r.get("type")?.as_str()? {
                "ref/prompt" => Some((Kind::Prompts, "name", r.get("name")?.as_str()?.to_string())),
                _ => Some((Kind::Resources, "uri", r.get("uri")?.as_str()?.to_string())),
            }
        }
        _ => None,
    }
}

/// Resolves against the cached lists; on a miss the lists may be stale (a server changed
/// without telling), so they are fetched again once.
async fn resolve(
    mcp: &Mcp,
    kind: Kind,
    name: &str,
    visible: impl Fn(&str) -> bool + Copy,
) -> Option<Resolved> {
    if let Some(r) = resolve_cached(mcp, kind, name, visible).await {
        return Some(r);
    }
    let kinds: &[Kind] = if kind == Kind::Resources { &[Kind::Resources, Kind::Templates] } else { &[kind] };
    for s in &mcp.catalog.servers {
        mcp.catalog.invalidate(&s.name, kinds);
    }
    resolve_cached(mcp, kind, name, visible).await
}

async fn resolve_cached(
    mcp: &Mcp,
    kind: Kind,
    name: &str,
    visible: impl Fn(&str) -> bool + Copy,
) -> Option<Resolved> {
    match kind {
        Kind::Resources => match mcp.catalog.resolve(Kind::Resources, name, visible).await {
            Some(r) => Some(r),
            None => mcp.catalog.resolve(Kind::Templates, name, visible).await,
        },
        k => mcp.catalog.resolve(k, name, visible).await,
    }
}

/// Routes one request to the server that owns what it names, after policy.
async fn invoke(
    ctx: &Arc<Ctx>,
    mcp: &Arc<Mcp>,
    caller: Caller,
    id: Value,
    method: String,
    mut params: Value,
    request_bytes: u64,
) -> Response<Body> {
    // A 2026-07-28 client retrying a call nodegate parked for its input.
    if let Some(state) = params.get("requestState").and_then(Value::as_str)
        && state.starts_with(relay::PARK_PREFIX)
    {
        return match relay::resume(mcp, &caller, id.clone(), state, &params).await {
            Some(r) => r,
            None => json_response(
                StatusCode::OK,
                &jsonrpc::error(
                    &id,
                    jsonrpc::INVALID_PARAMS,
                    "requestState names no waiting call (expired?)",
                    None,
                ),
            ),
        };
    }
    let start = Instant::now();
    let audited = matches!(method.as_str(), "tools/call" | "prompts/get" | "resources/read");
    // The trace the call belongs to: `_meta.traceparent` (MCP's carrier), else the header.
    let traceparent =
        params.pointer("/_meta/traceparent").and_then(Value::as_str).or(caller.traceparent.as_deref());
    let trace_id = traceparent.and_then(super::handler::trace_id);
    // When traces are exported (and the call is one that is audited): its span.
    let trace = if audited { ctx.audit.trace(traceparent) } else { None };
    let mut record = Audited {
        ctx: ctx.clone(),
        mcp: mcp.clone(),
        caller_identity: caller.identity.clone(),
        mode: caller.mode,
        audited,
        rule: None,
        policy: Default::default(),
        trace_id,
        call: McpCall {
            method: method.clone(),
            protocol_version: caller.version.clone(),
            outcome: "failed",
            bytes_sent: request_bytes,
            trace,
            ..Default::default()
        },
        start,
    };
    let Some((kind, field, name)) = target_of(&method, &params) else {
        record.call.outcome = "error";
        record.call.error = Some("missing name".into());
        return record.reply(
            &id,
            jsonrpc::error(&id, jsonrpc::INVALID_PARAMS, &format!("{method}: missing name or uri"), None),
        );
    };
    record.call.requested = Some(name.clone());
    if method == "tools/call" && mcp.cfg.audit_arguments {
        record.call.arguments = params.get("arguments").map(|a| redact(a, &mcp.cfg.redact));
    }
    let rule = mcp.policy.rule_for(&caller.identity);
    let Some(found) = resolve(mcp, kind, &name, |_| true).await else {
        record.call.outcome = "error";
        record.call.error = Some("unknown".into());
        let what = match kind {
            Kind::Tools => "tool",
            Kind::Prompts => "prompt",
            _ => "resource",
        };
        return record.reply(
            &id,
            jsonrpc::error(&id, jsonrpc::INVALID_PARAMS, &format!("unknown {what}: {name}"), None),
        );
    };
    record.call.server = Some(found.server.name.clone());
    record.call.name = Some(found.original.clone());

    let no_arguments = Value::Object(Map::new());
    let arguments = params.get("arguments").unwrap_or(&no_arguments);
    if let Some(msg) =
        record.check_rules(&id, &caller.identity, &found.server.name, &found.original, arguments)
    {
        return record.reply(&id, msg);
    }

    // Policy: the server must be visible; tools also by name and arguments.
    if let Some(r) = &rule {
        let denied = if kind == Kind::Tools && method == "tools/call" {
            let args = params.get("arguments").cloned().unwrap_or(Value::Object(Map::new()));
            r.check_call(&caller.identity, &found.server.name, &found.original, &args).err()
        } else if !r.server_visible(&found.server.name)
            || (kind == Kind::Tools && !r.tool_visible(&found.server.name, &found.original))
        {
            Some(crate::policy::CallDenied {
                rule: r.name.clone(),
                reason: format!(
                    "server {} is not allowed for workload {}",
                    found.server.name, caller.identity.workload
                ),
            })
        } else {
            None
        };
        if let Some(d) = denied {
            let msg = record.deny(&id, &d);
            return record.reply(&id, msg);
        }
    }

    // The server's own name, and none of the client era's envelope.
    if let Some(o) = params.as_object_mut() {
        if method == "completion/complete" {
            if let Some(r) = o.get_mut("ref").and_then(Value::as_object_mut) {
                r.insert(field.into(), Value::from(found.original.clone()));
            }
        } else {
            o.insert(field.into(), Value::from(found.original.clone()));
        }
        if let Some(Value::Object(meta)) = o.get_mut("_meta") {
            meta.retain(|k, _| !k.starts_with("io.modelcontextprotocol/"));
            if meta.is_empty() {
                o.remove("_meta");
            }
        }
    }
    let exposed = (name != found.original).then_some((found.original.clone(), name.clone()));
    relay::call(mcp, caller, found.server, id, method, params, exposed, record).await
}

/// Writes the audit record and metrics when a routed request ends, however it ends.
pub struct Audited {
    pub ctx: Arc<Ctx>,
    pub mcp: Arc<Mcp>,
    pub caller_identity: Arc<crate::identity::Identity>,
    pub mode: &'static str,
    pub audited: bool,
    pub rule: Option<String>,
    pub trace_id: Option<String>,
    pub call: McpCall,
    pub start: Instant,
    /// What `policy.rules` decided (the allowing rule, a dry run's finding).
    pub policy: crate::policy::Mark,
}

impl Audited {
    /// Answers with `msg` as JSON, recording its outcome.
    pub fn reply(mut self, _id: &Value, msg: Value) -> Response<Body> {
        let bytes = serde_json::to_vec(&msg).unwrap_or_default();
        self.call.bytes_received = bytes.len() as u64;
        let mut r = Response::new(http_body_util::BodyExt::boxed(http_body_util::BodyExt::map_err(
            http_body_util::Full::new(bytes::Bytes::from(bytes)),
            |never| match never {},
        )));
        r.headers_mut()
            .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
        r
    }

    /// `policy.rules` for a call to `name` at `server`: the JSON-RPC error to answer with when a
    /// rule refuses it (recorded like any policy refusal).
    pub fn check_rules(
        &mut self,
        id: &Value,
        identity: &crate::identity::Identity,
        server: &str,
        name: &str,
        arguments: &Value,
    ) -> Option<Value> {
        let mut input = crate::policy::Input::new(crate::config::PolicyProtocol::Mcp, identity);
        let method = &self.call.method;
        input.mcp = Some(crate::policy::attrs::McpAttrs { method, server, tool: name, arguments });
        let v = self.ctx.policy.decide(&self.ctx.metrics, &input);
        self.policy = v.mark();
        let d = v.denied?;
        let reason = match d.retry_after {
            Some(t) => format!("{} (retry in {} s)", d.reason, t.as_secs().max(1)),
            None => d.reason,
        };
        Some(self.deny(id, &crate::policy::CallDenied { rule: d.rule.to_string(), reason }))
    }

    /// Records a policy refusal; returns the JSON-RPC error that names the rule.
    pub fn deny(&mut self, id: &Value, d: &crate::policy::CallDenied) -> Value {
        self.call.outcome = "denied";
        self.call.error = Some(d.reason.clone());
        self.rule = Some(d.rule.clone());
        let msg = format!("denied by nodegate policy {}: {}", d.rule, d.reason);
        jsonrpc::error(id, jsonrpc::POLICY_DENIED, &msg, Some(json!({"rule": d.rule, "reason": d.reason})))
    }

    /// Classifies the server's answer into the record.
    pub fn outcome(&mut self, resp: &Value) {
        if let Some(e) = resp.get("error") {
            self.call.outcome = "error";
            self.call.error = Some(e.get("message").and_then(Value::as_str).unwrap_or("error").to_string());
        } else {
            self.call.outcome = "ok";
            self.call.tool_error = resp.pointer("/result/isError").and_then(Value::as_bool).unwrap_or(false);
        }
    }
}

impl Drop for Audited {
    fn drop(&mut self) {
        let elapsed = self.start.elapsed();
        self.call.duration_ms = elapsed.as_secs_f64() * 1e3;
        let server: Arc<str> = self.call.server.clone().unwrap_or_else(|| Arc::from("-"));
        let m = &self.mcp.metrics.mcp;
        let method: &'static str = match self.call.method.as_str() {
            "tools/call" => "tools/call",
            "prompts/get" => "prompts/get",
            "resources/read" => "resources/read",
            "completion/complete" => "completion/complete",
            "resources/subscribe" => "resources/subscribe",
            _ => "resources/unsubscribe",
        };
        m.calls
            .get_or_create(&CallLabels {
                server: server.clone(),
                tool: Arc::from(self.call.name.as_deref().unwrap_or("-")),
                identity: self.caller_identity.label(),
                method,
                outcome: self.call.outcome,
            })
            .inc();
        m.duration.get_or_create(&DurationLabels { server, method }).observe(elapsed.as_secs_f64());
        if !self.audited {
            return;
        }
        let target = self.call.server.as_deref().map_or_else(|| "mcp".to_string(), |s| format!("mcp:{s}"));
        let mut rec = Record::new(
            "mcp",
            &self.caller_identity,
            self.mode,
            target,
            "mcp",
            AuditBody::Mcp(Box::new(std::mem::take(&mut self.call))),
        );
        if let AuditBody::Mcp(c) = &rec.body
            && c.outcome == "denied"
        {
            rec.decision = "deny";
        }
        rec.rule = self.rule.take().map(Arc::from);
        self.policy.apply(&mut rec);
        rec.trace_id = self.trace_id.take();
        self.ctx.audit.emit(rec);
    }
}

/// A copy of `v` with the values of sensitive keys (any depth) replaced.
pub fn redact(v: &Value, keys: &[String]) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| {
                    if keys.iter().any(|r| r.eq_ignore_ascii_case(k)) {
                        (k.clone(), Value::from("[redacted]"))
                    } else {
                        (k.clone(), redact(v, keys))
                    }
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(|x| redact(x, keys)).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_reaches_nested_keys_case_insensitively() {
        let v = json!({"path": "/a", "auth": {"Token": "s3cret", "user": "u"}, "list": [{"password": "p"}]});
        let r = redact(&v, &["token".into(), "password".into()]);
        assert_eq!(
            r,
            json!({"path": "/a", "auth": {"Token": "[redacted]", "user": "u"}, "list": [{"password": "[redacted]"}]})
        );
    }
}
