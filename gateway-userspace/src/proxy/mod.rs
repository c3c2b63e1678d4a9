//! The node proxy: listeners, protocol sniffing, HTTP forwarding, TCP relay and the shared
//! upstream client. One [`Ctx`] holds what every connection shares: live config, metrics,
//! audit, identity resolution, the interceptor (original destinations) and the upstream pool.
pub mod admission;
pub mod egress;
pub mod explicit;
pub mod http;
pub mod idle;
pub mod io;
pub mod observed;
pub mod rules;
pub mod sniff;
pub mod splice;
pub mod terminate;
pub mod transparent;
pub mod upstream;

use std::{net::SocketAddr, sync::Arc, time::Instant};

use tokio::net::TcpListener;

use crate::{
    config,
    identity::{self, Identity},
    intercept::Interceptor,
    telemetry::{
        audit::{Audit, Body, Record},
        metrics::{Metrics, OutcomeLabels},
    },
};

pub struct Ctx {
    pub config: config::Shared,
    pub metrics: Arc<Metrics>,
    pub audit: Audit,
    pub identities: Arc<identity::Resolver>,
    pub interceptor: Option<Arc<Interceptor>>,
    /// The Kubernetes view (pods, enrollment), when `kubernetes.enabled`.
    pub cluster: Option<Arc<crate::k8s::Cluster>>,
    pub upstream: upstream::Upstream,
    /// The LLM gateway's compiled config, swapped on reload.
    pub llm: arc_swap::ArcSwap<crate::llm::Llm>,
    /// Local inference pools, swapped on reload.
    pub pools: arc_swap::ArcSwap<crate::inference::Pools>,
    /// Pool members found in the cluster, kept across reloads.
    pub pool_members: crate::inference::Found,
    /// The MCP gateway (federated servers, policy, sessions), swapped on reload.
    pub mcp: arc_swap::ArcSwap<crate::mcp::Mcp>,
    /// The A2A gateway (agents, policy, task owners), swapped on reload.
    pub a2a: arc_swap::ArcSwap<crate::a2a::A2a>,
    /// `policy.rules`, swapped on reload, and their rate-limit buckets.
    pub policy: crate::policy::Engine,
    /// Where explicit callers may go (`egress.allow`), swapped on reload.
    pub egress: arc_swap::ArcSwap<egress::Egress>,
    /// TLS termination, upstream trust and passthrough policy, swapped on reload.
    pub tls: arc_swap::ArcSwap<crate::tls::Tls>,
    /// Addresses nodegate listens on; a request for one of them would loop.
    pub own: Vec<SocketAddr>,
    /// Connections and requests open now, against `limits.*`.
    pub admission: Arc<admission::Admission>,
    /// Turns true when nodegate starts shutting down: connections finish what they serve and
    /// close.
    pub stopping: tokio::sync::watch::Receiver<bool>,
    /// Turns true when the shutdown drain deadline (`timeouts.drain`) passes: streams still
    /// open end with a clean error event on their protocol.
    pub deadline: tokio::sync::watch::Receiver<bool>,
}

impl Ctx {
    /// Whether `authority` (host:port) names one of our own listeners.
    pub fn is_own_address(&self, authority: &str) -> bool {
        let Ok(a) = authority.trim().parse::<SocketAddr>() else { return false };
        self.own.iter().any(|o| {
            o.port() == a.port()
                && (o.ip() == a.ip()
                    || (o.ip().is_unspecified() && (a.ip().is_loopback() || a.ip().is_unspecified())))
        })
    }
}

/// Resolves when the shutdown drain deadline passes (`Ctx::deadline`); a stream body polls it
/// to end with its protocol's error event instead of being cut.
pub type Deadline = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + Sync>>;

pub fn deadline(mut passed: tokio::sync::watch::Receiver<bool>) -> Deadline {
    Box::pin(async move {
        let _ = passed.wait_for(|p| *p).await;
    })
}

/// One client connection, as handlers see it.
#[derive(Debug, Clone)]
pub struct Conn {
    /// `transparent` or `explicit`.
    pub mode: &'static str,
    pub peer: SocketAddr,
    pub identity: Arc<Identity>,
    /// Original destination (transparent mode); explicit requests name their own target.
    pub target: Option<SocketAddr>,
    /// Sniffed protocol label: `http1`, `http2`, `tls`, `tcp`.
    pub protocol: &'static str,
    /// Traffic class of the intercept entry that matched (`Auto` in explicit mode).
    pub class: gateway_common::TrafficClass,
    /// TLS nodegate opens to the original destination (terminated or originated connections);
    /// `None`: plain HTTP to `target`.
    pub origin: Option<Arc<crate::tls::client::Origin>>,
}

/// Binds a listener with a large backlog (benchmarks and bursts of agents overflow the default),
/// SO_REUSEADDR (a restarted proxy rebinds at once) and, with `listeners.reuse_port`,
/// SO_REUSEPORT (a new proxy binds beside the old one while it drains).
pub fn bind(addr: SocketAddr, reuse_port: bool) -> std::io::Result<TcpListener> {
    TcpListener::from_std(bind_std(addr, reuse_port)?)
}

/// [`bind`] without registering with a runtime: for a listener served on another one.
pub fn bind_std(addr: SocketAddr, reuse_port: bool) -> std::io::Result<std::net::TcpListener> {
    let sock = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    sock.set_reuse_address(true)?;
    if reuse_port {
        sock.set_reuse_port(true)?;
    }
    sock.set_nonblocking(true)?;
    sock.set_tcp_nodelay(true)?;
    sock.bind(&addr.into())?;
    sock.listen(4096)?;
    Ok(sock.into())
}

/// Accepts on `listener` until `shutdown` fires, running `handle` for each connection on
/// `tracker` (so shutdown can drain them). Accept errors (EMFILE and friends) back off instead of
/// spinning.
pub async fn accept_loop<F, Fut>(
    name: &'static str,
    listener: TcpListener,
    tracker: tokio_util::task::TaskTracker,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
    handle: F,
) where
    F: Fn(tokio::net::TcpStream, SocketAddr) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                tracker.spawn(handle(stream, peer));
            }
            Err(e) => {
                tracing::warn!(listener = name, error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

/// Decrements the active-connection gauge when the connection ends, however it ends.
pub struct ActiveGuard(prometheus_client::metrics::gauge::Gauge);

impl ActiveGuard {
    pub fn new(metrics: &Metrics, mode: &'static str) -> Self {
        let g =
            metrics.active_connections.get_or_create(&crate::telemetry::metrics::ModeLabels { mode }).clone();
        g.inc();
        Self(g)
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Takes a connection's place under `limits.connections*`, or counts and audits the refusal
/// (rule: the limit) and says which limit refused.
pub fn admit_connection(
    ctx: &Ctx,
    conn: &Conn,
    target: String,
    start: Instant,
) -> Result<admission::Permit, admission::Refused> {
    let limits = &ctx.config.load().limits;
    ctx.admission.admit(admission::Kind::Connection, &conn.identity.workload, limits).inspect_err(|refused| {
        ctx.metrics.limit_hit(refused.0);
        let why = format!("shed: over {}", refused.0);
        audit_refused(ctx, conn, target, None, start, refused.0, &why);
    })
}

/// Writes the audit record of a connection nodegate refused before relaying anything: decision
/// `deny`, the rule that refused it, and why (`error`).
pub fn audit_refused(
    ctx: &Ctx,
    conn: &Conn,
    target: String,
    sni: Option<String>,
    start: Instant,
    rule: &'static str,
    why: &str,
) {
    audit_refused_rule(ctx, conn, target, sni, start, rule.to_string(), why)
}

/// [`audit_refused`] for a rule named at run time (`tls.passthrough.rules[2]`).
pub fn audit_refused_rule(
    ctx: &Ctx,
    conn: &Conn,
    target: String,
    sni: Option<String>,
    start: Instant,
    rule: String,
    why: &str,
) {
    let body = Body::Connection {
        peer: conn.peer.to_string(),
        sni,
        bytes_sent: 0,
        bytes_received: 0,
        duration_ms: start.elapsed().as_secs_f64() * 1e3,
        error: Some(why.to_string()),
    };
    let mut rec = Record::new("connection", &conn.identity, conn.mode, target, conn.protocol, body);
    rec.decision = "deny";
    rec.rule = Some(Arc::from(rule.as_str()));
    ctx.audit.emit(rec);
}

/// Writes a connection's audit record and byte metrics when it ends (both listeners).
pub fn audit_connection(
    ctx: &Ctx,
    conn: &Conn,
    target: String,
    sni: Option<String>,
    counters: &io::Counters,
    start: Instant,
    error: Option<String>,
) {
    let (read, written) = counters.totals();
    ctx.metrics.add_bytes(&conn.identity.workload, read, written);
    if let Some(e) = &error {
        tracing::debug!(peer = %conn.peer, %target, error = %e, "connection ended with an error");
        ctx.metrics.connection_errors.get_or_create(&OutcomeLabels { outcome: "relay" }).inc();
    }
    let body = Body::Connection {
        peer: conn.peer.to_string(),
        sni,
        bytes_sent: read,
        bytes_received: written,
        duration_ms: start.elapsed().as_secs_f64() * 1e3,
        error,
    };
    ctx.audit.emit(Record::new("connection", &conn.identity, conn.mode, target, conn.protocol, body));
}
