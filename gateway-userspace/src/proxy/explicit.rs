//! The explicit listener: an HTTP proxy agents address directly (HTTP_PROXY / base_url).
//! Absolute-form requests are forwarded like transparent HTTP; CONNECT opens a tunnel that is
//! relayed as TCP. Both share the same pipeline, metrics and audit as the transparent path.
use std::{convert::Infallible, net::SocketAddr, sync::Arc, time::Instant};

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::task::TaskTracker;

use http_body_util::BodyExt as _;

use super::{ActiveGuard, Conn, Ctx, http::error_response, io, splice, upstream::Body};
use gateway_common::TrafficClass;

use crate::{identity::Identity, telemetry::metrics::ConnLabels};

pub async fn run(
    ctx: Arc<Ctx>,
    listener: TcpListener,
    tracker: TaskTracker,
    shutdown: tokio::sync::watch::Receiver<bool>,
) {
    super::accept_loop("explicit", listener, tracker, shutdown, move |stream, peer| {
        handle(ctx.clone(), stream, peer)
    })
    .await
}

async fn handle(ctx: Arc<Ctx>, stream: TcpStream, peer: SocketAddr) {
    let start = Instant::now();
    let local_addr = stream.local_addr().ok();
    let local = local_addr.map(|a| a.to_string()).unwrap_or_default();
    let _active = ActiveGuard::new(&ctx.metrics, "explicit");
    let identity = same_host_identity(&ctx, peer, local_addr).await;
    let conn = Arc::new(Conn {
        mode: "explicit",
        peer,
        identity,
        target: None,
        protocol: "http1",
        class: TrafficClass::Auto,
        origin: None,
    });
    ctx.metrics
        .connections
        .get_or_create(&ConnLabels {
            mode: "explicit",
            identity: conn.identity.workload.clone(),
            protocol: "http1",
        })
        .inc();
    let _permit = match super::admit_connection(&ctx, &conn, local.clone(), start) {
        Ok(p) => p,
        Err(refused) => return super::http::serve_refusal(&ctx, stream, false, refused).await,
    };
    let counters = io::Counters::new();
    let io = io::Counted::new(stream, counters.clone());
    let svc_ctx = ctx.clone();
    let svc_conn = conn.clone();
    let svc = hyper::service::service_fn(move |req| {
        super::http::admitted(svc_ctx.clone(), svc_conn.clone(), req, route)
    });
    let r = super::http::serve_with(&ctx, io, false, svc).await;
    let error = r.err().map(|e| e.to_string());
    // The connection's target is the proxy itself; each request's record names its own target.
    super::audit_connection(&ctx, &conn, local, None, &counters, start, error);
}

/// A caller on this host is named by its cgroup, like an intercepted one; a pod of this node
/// calling from its own network namespace by its pod IP (Kubernetes; as trustworthy as the
/// CNI's source-address checks); anyone else is `unknown` until an API key says more.
async fn same_host_identity(ctx: &Ctx, peer: SocketAddr, local: Option<SocketAddr>) -> Arc<Identity> {
    let id = host_identity(ctx, peer, local).await;
    if id.source == crate::identity::Source::Unknown
        && let Some(pod) = ctx.identities.resolve_pod_ip(peer.ip())
    {
        return pod;
    }
    id
}

/// The kernel names the client socket's cgroup (sock_diag); where it cannot (kernels before
/// 5.8), the /proc scan in `identity::peer` does.
async fn host_identity(ctx: &Ctx, peer: SocketAddr, local: Option<SocketAddr>) -> Arc<Identity> {
    let Some(local) = local else { return Arc::new(Identity::unknown()) };
    // A netlink round trip: off the async workers.
    let asked =
        tokio::task::spawn_blocking(move || crate::identity::sockdiag::cgroup_id_of_peer(peer, local));
    match asked.await {
        // Id 1 is the root cgroup: not a workload.
        Ok(Ok(Some(id))) if id > 1 => return ctx.identities.resolve_async(id).await,
        Ok(Ok(_)) => return Arc::new(Identity::unknown()),
        Ok(Err(e)) => tracing::debug!(error = %e, "sock_diag lookup failed; scanning /proc"),
        Err(e) => tracing::debug!(error = %e, "sock_diag lookup task failed; scanning /proc"),
    }
    let found =
        tokio::task::spawn_blocking(move || crate::identity::peer::cgroup_path_of_local_peer(peer, local))
            .await;
    match found {
        Ok(Some(path)) if path != "/" => ctx.identities.resolve_path(&path),
        _ => Arc::new(Identity::unknown()),
    }
}

async fn route(ctx: Arc<Ctx>, conn: Arc<Conn>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    if req.method() == Method::CONNECT {
        return Ok(connect(ctx, conn, req).await);
    }
    // Origin-form `/v1/...`: an agent using nodegate as its base_url.
    if req.uri().authority().is_none()
        && let Some(api) = crate::llm::format::Api::from_path(req.uri().path())
    {
        return Ok(crate::llm::handler::handle(ctx, conn, req, api, crate::llm::route::Via::Explicit).await);
    }
    // Origin-form `/mcp`: the federated MCP endpoint.
    if req.uri().authority().is_none() && req.uri().path() == "/mcp" {
        return Ok(crate::mcp::handler::handle(ctx, conn, req).await);
    }
    // Absolute-form to a registered A2A agent's own address: governed the same, not a way around.
    if let Some(auth) = req.uri().authority() {
        let port = auth.port_u16().unwrap_or(80);
        let agent = ctx.a2a.load().agent_named_by(auth.host(), port).cloned();
        if let Some(agent) = agent {
            let up = crate::a2a::handler::Upstream::Registered(agent.origin.clone());
            return Ok(crate::a2a::handler::governed(ctx, conn, req, agent.name.clone(), up).await);
        }
    }
    // Absolute-form to a configured MCP server's own endpoint: its tools are governed at /mcp.
    if let Some(auth) = req.uri().authority()
        && let Some((rule, why)) =
            governed_elsewhere(&ctx, auth.host(), auth.port_u16().unwrap_or(80), Some(req.uri().path()))
    {
        let target = auth.to_string();
        let start = Instant::now();
        super::audit_refused(&ctx, &conn, target, None, start, rule, &why);
        return Ok(error_response(StatusCode::FORBIDDEN, &why));
    }
    // Origin-form `/a2a/<agent>/...`: a registered A2A agent.
    if req.uri().authority().is_none() && req.uri().path().starts_with(crate::a2a::handler::PREFIX) {
        return Ok(crate::a2a::handler::handle(ctx, conn, req).await);
    }
    super::http::forward(ctx, conn, req).await
}

/// Whether a request to `host:port` (`path`: an absolute-form request's path; None: a CONNECT
/// tunnel, which could carry anything) would reach an endpoint nodegate governs at its own path:
/// a configured MCP server's endpoint, or (tunnels only; plain requests to it are governed in
/// place) a registered A2A agent. The rule to name and why the request is refused.
fn governed_elsewhere(
    ctx: &Ctx,
    host: &str,
    port: u16,
    path: Option<&str>,
) -> Option<(&'static str, String)> {
    let mcp = ctx.mcp.load();
    let authority = format!("{host}:{port}");
    let server = mcp.server_at(&authority).or_else(|| mcp.server_at(&authority.to_ascii_lowercase()));
    if let Some(s) =
        server.filter(|s| path.is_none_or(|p| s.path.as_deref().is_some_and(|sp| same_path(p, sp))))
    {
        return Some((
            "mcp.servers",
            format!(
                "{authority} is MCP server {}: its tools are reached through /mcp, where policy applies",
                s.name
            ),
        ));
    }
    let agent = ctx.a2a.load().agent_named_by(host, port).map(|a| a.name.clone());
    match agent {
        Some(a) if path.is_none() => Some((
            "a2a.agents",
            format!("{authority} is A2A agent {a}: reach it at /a2a/{a}, not through a tunnel"),
        )),
        _ => None,
    }
}

/// Whether two request paths name the same resource as a lenient server would read them:
/// percent-decoded, case-folded, empty and `.` segments dropped, `..` applied (so `//MCP/./`
/// is no way around `/mcp`).
fn same_path(a: &str, b: &str) -> bool {
    fn norm(p: &str) -> Vec<String> {
        let decoded = percent_encoding::percent_decode_str(p).decode_utf8_lossy().to_lowercase();
        let mut out: Vec<String> = Vec::new();
        for seg in decoded.split('/') {
            match seg {
                "" | "." => {}
                ".." => {
                    out.pop();
                }
                s => out.push(s.to_string()),
            }
        }
        out
    }
    norm(a) == norm(b)
}

/// CONNECT host:port: connect upstream first, answer 200 (or 502), then relay the tunnel.
async fn connect(ctx: Arc<Ctx>, conn: Arc<Conn>, req: Request<Incoming>) -> Response<Body> {
    let start = Instant::now();
    let Some((authority, port)) = req.uri().authority().and_then(|a| Some((a.clone(), a.port_u16()?))) else {
        return error_response(StatusCode::BAD_REQUEST, "CONNECT needs host:port");
    };
    if ctx.is_own_address(authority.as_str()) {
        return error_response(StatusCode::LOOP_DETECTED, "CONNECT to nodegate itself");
    }
    let tunnel = Conn {
        mode: "explicit",
        peer: conn.peer,
        identity: conn.identity.clone(),
        target: None,
        protocol: "connect",
        class: TrafficClass::Auto,
        origin: None,
    };
    // A tunnel to a governed endpoint would carry its calls past its policy unseen.
    if let Some((rule, why)) = governed_elsewhere(&ctx, authority.host(), port, None) {
        super::audit_refused(&ctx, &tunnel, authority.to_string(), None, start, rule, &why);
        return error_response(StatusCode::FORBIDDEN, &why);
    }
    if !ctx.egress.load().allows(authority.host(), port) {
        let why = "destination not in egress.allow";
        super::audit_refused(&ctx, &tunnel, authority.to_string(), None, start, "egress.allow", why);
        return error_response(StatusCode::FORBIDDEN, "destination not in egress.allow for explicit callers");
    }
    let counters = io::Counters::new();
    let mut up = match ctx.upstream.dialer.connect_host(authority.host(), port).await {
        Ok(up) => up,
        Err(e) => {
            let msg = e.to_string();
            let status = if matches!(e, super::upstream::ConnectError::Loop(_)) {
                StatusCode::LOOP_DETECTED
            } else {
                StatusCode::BAD_GATEWAY
            };
            super::audit_connection(
                &ctx,
                &tunnel,
                authority.to_string(),
                None,
                &counters,
                start,
                Some(msg.clone()),
            );
            return error_response(status, &msg);
        }
    };
    tokio::spawn(async move {
        let error = match hyper::upgrade::on(req).await {
            Ok(upgraded) => {
                let mut client = io::Counted::new(TokioIo::new(upgraded), counters.clone());
                let idle = ctx.config.load().timeouts.idle;
                let c = counters.clone();
                splice::relay_streams(&mut client, &mut up, idle, move || c.idle())
                    .await
                    .err()
                    .map(|e| e.to_string())
            }
            Err(e) => Some(format!("upgrade: {e}")),
        };
        super::audit_connection(&ctx, &tunnel, authority.to_string(), None, &counters, start, error);
    });
    Response::new(http_body_util::Empty::new().map_err(|never| match never {}).boxed())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endpoint_path_is_compared_as_a_lenient_server_reads_it() {
        for p in ["/mcp", "/mcp/", "//MCP", "/x/../mcp", "/%6dcp", "/./mcp"] {
            assert!(same_path(p, "/mcp"), "{p}");
        }
        assert!(!same_path("/anything", "/mcp"));
        assert!(!same_path("/mcp/tools", "/mcp"));
    }
}
