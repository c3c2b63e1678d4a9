//! HTTP forwarding, the same for both listeners: serve HTTP/1.1 or h2c from the client, send
//! each request through the shared upstream pool to its target, stream the response back, and
//! account for it (metrics on headers, one audit record when the response body ends).
//!
//! Order of a request: receive -> resolve target -> loop check -> rewrite (hop-by-hop headers,
//! absolute URI) -> upstream -> account -> audit. Protocol handlers (LLM, MCP, A2A) will hook in
//! between target and upstream; this file only forwards.
use std::{
    convert::Infallible,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Instant,
};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};

use super::{Conn, Ctx, upstream::Body};
use crate::telemetry::{
    audit::{Body as AuditBody, Record},
    metrics::{ModeLabels, RequestLabels, status_class},
};

/// Serves one client connection that speaks HTTP/1.x (`h2 == false`) or h2c.
pub async fn serve<IO>(ctx: Arc<Ctx>, io: IO, conn: Arc<Conn>, h2: bool) -> Result<(), hyper::Error>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc_ctx = ctx.clone();
    let svc = hyper::service::service_fn(move |req| {
        let (ctx, conn) = (svc_ctx.clone(), conn.clone());
        admitted(ctx, conn, req, forward)
    });
    serve_with(&ctx, io, h2, svc).await
}

/// Serves one HTTP connection with `svc` under the configured header limits and timeouts; on
/// shutdown the connection finishes the request it is serving and then closes (HTTP/2: GOAWAY).
/// Header blocks over `limits.header_bytes` are answered `431` by hyper and counted here.
pub async fn serve_with<IO, S>(ctx: &Ctx, io: IO, h2: bool, svc: S) -> Result<(), hyper::Error>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::HttpService<Incoming, ResBody = Body> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let cfg = ctx.config.load_full();
    let (limits, header_read) = (&cfg.limits, cfg.timeouts.header_read);
    let io = TokioIo::new(io);
    let mut stop = ctx.stopping.clone();
    let stopping = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    let r = if h2 {
        let mut b = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        b.timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(limits.header_bytes).unwrap_or(u32::MAX));
        let c = b.serve_connection(io, svc);
        tokio::pin!(c);
        tokio::select! {
            r = c.as_mut() => r,
            () = stopping => {
                c.as_mut().graceful_shutdown();
                c.await
            }
        }
    } else {
        let mut b = hyper::server::conn::http1::Builder::new();
        b.timer(TokioTimer::new()).header_read_timeout(header_read).max_header_size(limits.header_bytes);
        if limits.headers != 100 {
            b.max_headers(limits.headers);
        }
        // Accepted as shutdown began (its request may still be on the way): answer that one
        // request, then close, rather than close before reading it.
        let late = *ctx.stopping.borrow();
        if late {
            b.keep_alive(false);
        }
        let c = b.serve_connection(io, svc).with_upgrades();
        tokio::pin!(c);
        if late {
            c.await
        } else {
            tokio::select! {
                r = c.as_mut() => r,
                () = stopping => {
                    c.as_mut().graceful_shutdown();
                    c.await
                }
            }
        }
    };
    if let Err(e) = &r {
        if e.is_parse_too_large() {
            ctx.metrics.limit_hit("limits.header_bytes");
        } else if e.is_timeout() {
            ctx.metrics.limit_hit("timeouts.header_read");
        }
    }
    r
}

/// Answers a connection over a connection limit: each request on it gets `503` with
/// `Retry-After` and `connection: close`, for at most `timeouts.header_read` (5 s at most), and
/// nothing is forwarded. The caller has counted and audited the refusal.
pub async fn serve_refusal<IO>(ctx: &Ctx, io: IO, h2: bool, refused: super::admission::Refused)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let cfg = ctx.config.load_full();
    let bound = cfg.timeouts.header_read.min(std::time::Duration::from_secs(5));
    let svc = hyper::service::service_fn(move |_req: Request<Incoming>| {
        let r = super::admission::shed_response(refused, &cfg.limits, !h2);
        async move { Ok::<_, Infallible>(r) }
    });
    let _ = tokio::time::timeout(bound, serve_with(ctx, io, h2, svc)).await;
}

/// Runs `handler` for a request the admission limits let in; the request's place is held until
/// its response body ends (streams included). Over a limit: `503` with `Retry-After`, counted
/// and audited with the limit as the rule, and nothing sent upstream.
pub async fn admitted<F, Fut>(
    ctx: Arc<Ctx>,
    conn: Arc<Conn>,
    req: Request<Incoming>,
    handler: F,
) -> Result<Response<Body>, Infallible>
where
    F: FnOnce(Arc<Ctx>, Arc<Conn>, Request<Incoming>) -> Fut,
    Fut: std::future::Future<Output = Result<Response<Body>, Infallible>>,
{
    let cfg = ctx.config.load();
    match ctx.admission.admit(super::admission::Kind::Request, &conn.identity.workload, &cfg.limits) {
        Ok(permit) => {
            drop(cfg);
            // Counted from here: a client that goes away before the answer gives it back too.
            let permit = permit.counted_in(ctx.metrics.requests_in_flight.clone());
            // A request in a trace: every line logged while it is handled carries the trace id.
            let traced = req
                .headers()
                .get("traceparent")
                .and_then(|v| v.to_str().ok())
                .and_then(crate::mcp::handler::trace_id);
            let resp = match traced {
                Some(id) => {
                    use tracing::Instrument as _;
                    handler(ctx, conn, req).instrument(tracing::info_span!("request", trace_id = %id)).await?
                }
                None => handler(ctx, conn, req).await?,
            };
            Ok(resp.map(|b| super::observed::Observed::new(b, permit).boxed()))
        }
        Err(refused) => {
            ctx.metrics.limit_hit(refused.0);
            let keys = ctx.identities.keys();
            drop(Pending {
                ctx: ctx.clone(),
                conn: conn.clone(),
                identity: crate::identity::caller(&keys, &conn.identity, req.headers()),
                method: req.method().clone(),
                host: request_host(&req),
                path: req.uri().path_and_query().map_or_else(|| "/".into(), |p| p.as_str().to_string()),
                target: conn
                    .target
                    .map(|t| t.to_string())
                    .unwrap_or_else(|| req.uri().authority().map(|a| a.to_string()).unwrap_or_default()),
                status: StatusCode::SERVICE_UNAVAILABLE.as_u16(),
                start: Instant::now(),
                sent: Arc::new(AtomicU64::new(0)),
                received: 0,
                error: Some(format!("shed: over {}", refused.0)),
                denied_by: Some(std::sync::Arc::from(refused.0)),
                policy: Default::default(),
                trace: None,
                grpc: None,
            });
            Ok(super::admission::shed_response(refused, &cfg.limits, false))
        }
    }
}

/// Headers that describe one hop and must not be forwarded (RFC 9110 7.6.1).
const HOP_BY_HOP: [header::HeaderName; 8] = [
    header::CONNECTION,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    http::HeaderName::from_static("keep-alive"),
];

/// Headers a handler that rebuilds a request or answer does not copy: hop-by-hop ones, the
/// proxy's own authentication, and the framing (`host`, `content-length`) it sets itself.
pub(crate) fn is_hop_or_framing(name: &http::header::HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "host"
            | "content-length"
    )
}

pub(crate) fn strip_hop_by_hop(h: &mut HeaderMap) {
    // Headers named in Connection are hop-by-hop too.
    let named: Vec<http::HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| http::HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    // `te: trailers` is the one TE an HTTP/2 request may carry, and gRPC servers expect it
    // (it tells them the path keeps trailers): it goes on; any other TE does not.
    let trailers_only = h
        .get(header::TE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("trailers"));
    for n in named.iter().chain(HOP_BY_HOP.iter()) {
        h.remove(n);
    }
    h.remove("proxy-connection");
    if trailers_only {
        h.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

/// A plain-text error response (the LLM/MCP/A2A handlers answer in their own formats).
pub fn error_response(status: StatusCode, msg: &str) -> Response<Body> {
    let mut r = Response::new(
        Full::new(Bytes::from(format!("nodegate: {msg}\n"))).map_err(|never| match never {}).boxed(),
    );
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}

/// What is known about a request when its audit record is written.
struct Pending {
    ctx: Arc<Ctx>,
    conn: Arc<Conn>,
    /// The connection's identity plus the principal of a key the request presented.
    identity: Arc<crate::identity::Identity>,
    method: http::Method,
    host: Option<String>,
    path: String,
    target: String,
    status: u16,
    start: Instant,
    sent: Arc<AtomicU64>,
    received: u64,
    error: Option<String>,
    /// The rule that refused the request, if one did.
    denied_by: Option<Arc<str>>,
    /// What `policy.rules` decided (the allowing rule, a dry run's finding).
    policy: crate::policy::Mark,
    /// The request's span, when traces are exported.
    trace: Option<Box<crate::telemetry::trace::Trace>>,
    /// A gRPC call's service, method and ending status.
    grpc: Option<crate::telemetry::audit::GrpcCall>,
}

impl Drop for Pending {
    fn drop(&mut self) {
        let c = &self.conn;
        let status = if self.status == 0 { "error" } else { status_class(self.status) };
        self.ctx
            .metrics
            .requests
            .get_or_create(&RequestLabels {
                identity: self.identity.label(),
                method: crate::telemetry::metrics::method_label(&self.method),
                status,
            })
            .inc();
        if let Some(g) = &self.grpc {
            let code = crate::telemetry::metrics::grpc_code(g.status);
            let labels = crate::telemetry::metrics::GrpcLabels { identity: self.identity.label(), code };
            self.ctx.metrics.grpc_calls.get_or_create(&labels).inc();
        }
        let body = AuditBody::Http {
            method: self.method.to_string(),
            host: self.host.take(),
            path: std::mem::take(&mut self.path),
            status: self.status,
            grpc: self.grpc.take(),
            bytes_sent: self.sent.load(Ordering::Relaxed),
            bytes_received: self.received,
            duration_ms: self.start.elapsed().as_secs_f64() * 1e3,
            error: self.error.take(),
        };
        let mut rec =
            Record::new("http", &self.identity, c.mode, std::mem::take(&mut self.target), c.protocol, body);
        if let Some(rule) = self.denied_by.take() {
            rec.decision = "deny";
            rec.rule = Some(rule);
        }
        self.policy.apply(&mut rec);
        rec.trace = self.trace.take();
        self.ctx.audit.emit(rec);
    }
}

/// A forwarded response counts its body into the request's record, which is written when the
/// body ends or the client goes away.
impl super::observed::Observer for Pending {
    fn data(&mut self, len: usize) {
        self.received += len as u64;
    }

    fn error(&mut self, e: &crate::proxy::upstream::BoxError) {
        self.error = Some(format!("upstream body: {e}"));
    }

    fn trailers(&mut self, t: &HeaderMap) {
        if let Some(g) = self.grpc.as_mut() {
            g.ended(t);
        }
    }
}

/// Forwards one request. Never fails: errors become responses (and audit records).
pub async fn forward(
    ctx: Arc<Ctx>,
    conn: Arc<Conn>,
    mut req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    if let Some((api, via)) = llm_call(&ctx, &conn, &req) {
        return Ok(crate::llm::handler::handle(ctx, conn, req, api, via).await);
    }
    if let Some(dst) = mcp_call(&ctx, &conn, &req) {
        return Ok(crate::mcp::transparent::handle(ctx, conn, req, dst).await);
    }
    if let Some(dst) = a2a_call(&ctx, &conn) {
        return Ok(crate::a2a::handler::transparent(ctx, conn, req, dst).await);
    }
    let start = Instant::now();
    let keys = ctx.identities.keys();
    let identity = crate::identity::caller(&keys, &conn.identity, req.headers());
    let h2 = req.version() == http::Version::HTTP_2;
    let host = request_host(&req);
    let path = req.uri().path_and_query().map(|p| p.as_str().to_string()).unwrap_or_else(|| "/".into());
    let mut pending = Pending {
        ctx: ctx.clone(),
        conn: conn.clone(),
        identity,
        method: req.method().clone(),
        host: host.clone(),
        path: path.clone(),
        target: String::new(),
        status: 0,
        start,
        sent: Arc::new(AtomicU64::new(0)),
        received: 0,
        error: None,
        denied_by: None,
        policy: Default::default(),
        trace: ctx.audit.trace_of(req.headers()),
        grpc: crate::telemetry::audit::GrpcCall::of(
            req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()),
            req.uri().path(),
        ),
    };

    // Where the request goes: the original destination (transparent) or the absolute URI.
    let authority = match conn.target {
        Some(dst) => dst.to_string(),
        None => match req.uri().authority() {
            Some(a) if req.uri().scheme_str().is_none_or(|s| s == "http") => {
                let port = a.port_u16().unwrap_or(80);
                if !ctx.egress.load().allows(a.host(), port) {
                    pending.target = format!("{}:{port}", a.host());
                    pending.denied_by = Some(Arc::from("egress.allow"));
                    return Ok(refuse(
                        pending,
                        StatusCode::FORBIDDEN,
                        "destination not in egress.allow for explicit callers",
                    ));
                }
                format!("{}:{port}", a.host())
            }
            Some(_) => {
                return Ok(refuse(
                    pending,
                    StatusCode::BAD_REQUEST,
                    "only http:// URLs can be proxied this way; use CONNECT for https",
                ));
            }
            None => {
                return Ok(refuse(
                    pending,
                    StatusCode::BAD_REQUEST,
                    "this is a proxy: send absolute-form requests (http://host/path) or CONNECT",
                ));
            }
        },
    };
    pending.target = authority.clone();
    if ctx.is_own_address(&authority) {
        return Ok(refuse(pending, StatusCode::LOOP_DETECTED, "request addressed to nodegate itself"));
    }
    let verdict = super::rules::decide(
        &ctx,
        &super::rules::Asked {
            identity: &pending.identity,
            method: req.method(),
            path: &path,
            headers: req.headers(),
            host: host.as_deref(),
            authority: &authority,
            address: conn.target,
            grpc: pending.grpc.as_ref().map(|g| (g.service.as_str(), g.method.as_str())),
        },
    );
    pending.policy = verdict.mark();
    if let Some(d) = &verdict.denied {
        pending.denied_by = Some(d.rule.clone());
        pending.error = Some(crate::policy::Verdict::message(d));
        let grpc = pending.grpc.is_some();
        let resp = super::rules::refusal(d, grpc);
        pending.status = resp.status().as_u16();
        if let Some(g) = pending.grpc.as_mut() {
            g.ended(resp.headers());
        }
        return Ok(resp);
    }
    let uri = match &conn.origin {
        Some(o) => o.uri(&path),
        None => format!("http://{authority}{path}").parse(),
    };
    let uri: Uri = match uri {
        Ok(u) => u,
        Err(e) => return Ok(refuse(pending, StatusCode::BAD_REQUEST, &format!("bad request target: {e}"))),
    };

    // HTTP/1.1 Upgrade (WebSocket and the like): keep the handshake headers, and once the
    // upstream switches protocols relay the bytes both ways.
    let upgrade = if h2 { None } else { req.headers().get(header::UPGRADE).cloned() };
    let client_upgrade = upgrade.is_some().then(|| hyper::upgrade::on(&mut req));

    let (mut parts, body) = req.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    crate::identity::strip_credentials(&keys, &mut parts.headers);
    // Traced: the upstream's spans become children of nodegate's span for this request.
    if let Some(t) = &pending.trace {
        parts.headers.insert("traceparent", t.traceparent());
    }
    if let Some(u) = &upgrade {
        parts.headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        parts.headers.insert(header::UPGRADE, u.clone());
    }
    if !parts.headers.contains_key(header::HOST)
        && let Some(v) = host.as_deref().and_then(|h| HeaderValue::from_str(h).ok())
    {
        parts.headers.insert(header::HOST, v);
    }
    parts.uri = uri;
    parts.version = if h2 { http::Version::HTTP_2 } else { http::Version::HTTP_11 };
    let sent = pending.sent.clone();
    let body = body
        .map_frame(move |f| {
            if let Some(d) = f.data_ref() {
                sent.fetch_add(d.len() as u64, Ordering::Relaxed);
            }
            f
        })
        .map_err(Into::into)
        .boxed();
    let timeouts = ctx.config.load().timeouts.clone();
    let body = super::idle::Idle::new(body, timeouts.body_idle, ctx.metrics.clone()).boxed();
    let up = Request::from_parts(parts, body);
    let sent_upstream = async {
        match &conn.origin {
            Some(o) => o.request(up).await,
            None if h2 => ctx.upstream.http2.request(up).await,
            None => ctx.upstream.http1.request(up).await,
        }
    };
    let Ok(result) = tokio::time::timeout(timeouts.response, sent_upstream).await else {
        ctx.metrics.limit_hit("timeouts.response");
        pending.denied_by = None;
        let msg = format!(
            "upstream {authority} sent no response within {:?} (timeouts.response)",
            timeouts.response
        );
        return Ok(refuse(pending, StatusCode::GATEWAY_TIMEOUT, &msg));
    };
    ctx.metrics
        .request_duration
        .get_or_create(&ModeLabels { mode: conn.mode })
        .observe(start.elapsed().as_secs_f64());
    match result {
        Ok(mut resp) if resp.status() == StatusCode::SWITCHING_PROTOCOLS && client_upgrade.is_some() => {
            let upstream_upgrade = hyper::upgrade::on(&mut resp);
            let (parts, _) = resp.into_parts();
            pending.status = parts.status.as_u16();
            if let Some(client_upgrade) = client_upgrade {
                tokio::spawn(relay_upgraded(client_upgrade, upstream_upgrade, pending, timeouts.idle));
            }
            Ok(Response::from_parts(
                parts,
                http_body_util::Empty::new().map_err(|never| match never {}).boxed(),
            ))
        }
        Ok(resp) => {
            let (mut parts, body) = resp.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            pending.status = parts.status.as_u16();
            // A trailers-only gRPC answer carries grpc-status in its headers.
            if let Some(g) = pending.grpc.as_mut() {
                g.ended(&parts.headers);
            }
            let body =
                super::idle::Idle::new(super::upstream::boxed(body), timeouts.body_idle, ctx.metrics.clone());
            let tracked = super::observed::Observed::new(body.boxed(), pending);
            Ok(Response::from_parts(parts, tracked.boxed()))
        }
        Err(e) => {
            let msg = match std::error::Error::source(&e) {
                Some(src) => format!("upstream {authority}: {e}: {src}"),
                None => format!("upstream {authority}: {e}"),
            };
            tracing::debug!(identity = %conn.identity.workload, %msg, "upstream request failed");
            if matches!(
                std::error::Error::source(&e).and_then(|s| s.downcast_ref::<super::upstream::ConnectError>()),
                Some(super::upstream::ConnectError::Loop(_))
            ) {
                return Ok(refuse(
                    pending,
                    StatusCode::LOOP_DETECTED,
                    "request addressed to nodegate itself",
                ));
            }
            Ok(refuse(pending, StatusCode::BAD_GATEWAY, &msg))
        }
    }
}

/// Relays an upgraded connection until either side closes or nothing moves either way for
/// `idle` (`timeouts.idle`); the request's audit record is written when it ends (its duration
/// is the session's). Bytes show in the connection record.
async fn relay_upgraded(
    client: hyper::upgrade::OnUpgrade,
    upstream: hyper::upgrade::OnUpgrade,
    mut pending: Pending,
    idle: std::time::Duration,
) {
    match (client.await, upstream.await) {
        (Ok(c), Ok(u)) => {
            let counters = super::io::Counters::new();
            let mut c = super::io::Counted::new(TokioIo::new(c), counters.clone());
            let mut u = TokioIo::new(u);
            match super::splice::relay_streams(&mut c, &mut u, idle, || counters.idle()).await {
                Ok(()) => {}
                Err(e @ super::splice::SpliceError::Idle(_)) => {
                    pending.ctx.metrics.limit_hit("timeouts.idle");
                    pending.error = Some(format!("upgraded connection: {e} (timeouts.idle)"));
                }
                Err(e) => pending.error = Some(format!("upgraded connection: {e}")),
            }
        }
        (Err(e), _) | (_, Err(e)) => pending.error = Some(format!("upgrade: {e}")),
    }
}

/// The authority a request names: its Host header, else the URI's (HTTP/2 `:authority`).
fn request_host(req: &Request<Incoming>) -> Option<String> {
    req.headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri().authority().map(|a| a.to_string()))
}

/// An intercepted request is an LLM call when its path is an LLM API and its destination is
/// classed `llm` or is a configured provider.
fn llm_call(
    ctx: &Ctx,
    conn: &Conn,
    req: &Request<Incoming>,
) -> Option<(crate::llm::format::Api, crate::llm::route::Via)> {
    let dst = conn.target?;
    let api = crate::llm::format::Api::from_path(req.uri().path())?;
    let via = crate::llm::route::Via::Transparent { dst, origin: conn.origin.clone() };
    let llm = ctx.llm.load();
    let is_provider = llm.addressed_provider(&via).is_some();
    (conn.class == gateway_common::TrafficClass::Llm || is_provider).then_some((api, via))
}

/// An intercepted POST is MCP when its destination is classed `mcp` or is a configured MCP
/// server's address. Other methods (the GET stream, DELETE) pass through as plain HTTP.
fn mcp_call(ctx: &Ctx, conn: &Conn, req: &Request<Incoming>) -> Option<std::net::SocketAddr> {
    let dst = conn.target?;
    if req.method() != http::Method::POST {
        return None;
    }
    (conn.class == gateway_common::TrafficClass::Mcp
        || ctx.mcp.load().server_for(dst, conn.origin.as_deref()).is_some())
    .then_some(dst)
}

/// An intercepted request is A2A when its destination is classed `a2a` or is a registered
/// agent's address: every request to it is governed (nothing passes as plain HTTP).
fn a2a_call(ctx: &Ctx, conn: &Conn) -> Option<std::net::SocketAddr> {
    let dst = conn.target?;
    (conn.class == gateway_common::TrafficClass::A2a || ctx.a2a.load().agent_at(dst).is_some()).then_some(dst)
}

fn refuse(mut pending: Pending, status: StatusCode, msg: &str) -> Response<Body> {
    pending.status = status.as_u16();
    pending.error = Some(msg.to_string());
    error_response(status, msg)
}
