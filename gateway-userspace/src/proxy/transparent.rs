//! The transparent listener: connections redirected by the eBPF programs (or by iptables, the
//! fallback) arrive here. For each: find the original destination and the client's cgroup,
//! name the workload, sniff the protocol, then forward HTTP or relay bytes, and audit it.
use std::{net::SocketAddr, sync::Arc, time::Instant};

use gateway_common::TrafficClass;

use crate::config::TlsMode;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::task::TaskTracker;

use super::{
    ActiveGuard, Conn, Ctx, io,
    sniff::{self, Protocol},
    splice,
};
use crate::{
    identity::Identity,
    intercept::origdst,
    telemetry::metrics::{ConnLabels, OutcomeLabels, TlsLabels},
};

/// Accepts until `shutdown` fires; connections run on `tracker`.
pub async fn run(
    ctx: Arc<Ctx>,
    listener: TcpListener,
    tracker: TaskTracker,
    shutdown: tokio::sync::watch::Receiver<bool>,
) {
    super::accept_loop("transparent", listener, tracker, shutdown, move |stream, peer| {
        handle(ctx.clone(), stream, peer)
    })
    .await
}

struct Origin {
    dst: SocketAddr,
    cgroup_id: u64,
    class: TrafficClass,
    via: &'static str,
}

fn origin(ctx: &Ctx, stream: &TcpStream, peer: SocketAddr) -> Option<Origin> {
    if let Some(rec) = ctx.interceptor.as_ref().and_then(|i| i.take_orig_dst(peer)) {
        return Some(Origin {
            dst: origdst::socket_addr(&rec),
            cgroup_id: rec.cgroup_id,
            class: TrafficClass::from_u32(rec.class),
            via: "ebpf",
        });
    }
    let local = stream.local_addr().ok()?;
    origdst::so_original_dst(stream, local).map(|dst| Origin {
        dst,
        cgroup_id: 0,
        class: TrafficClass::Auto,
        via: "iptables",
    })
}

async fn handle(ctx: Arc<Ctx>, stream: TcpStream, peer: SocketAddr) {
    let start = Instant::now();
    let _active = ActiveGuard::new(&ctx.metrics, "transparent");
    let Some(o) = origin(&ctx, &stream, peer) else {
        tracing::warn!(%peer, "connection on the transparent listener without an original destination (not redirected?); closing");
        ctx.metrics
            .connection_errors
            .get_or_create(&OutcomeLabels { outcome: "no_original_destination" })
            .inc();
        return;
    };
    if ctx.is_own_address(&o.dst.to_string()) {
        tracing::warn!(%peer, dst = %o.dst, "original destination is nodegate itself; closing to avoid a loop");
        ctx.metrics.connection_errors.get_or_create(&OutcomeLabels { outcome: "loop" }).inc();
        return;
    }
    let identity = if o.cgroup_id != 0 {
        ctx.identities.resolve_async(o.cgroup_id).await
    } else {
        Arc::new(Identity::unknown())
    };
    let timeouts = ctx.config.load().timeouts.clone();
    let proto = if o.class == TrafficClass::Tcp {
        Protocol::Tcp
    } else {
        match sniff::sniff(&stream, timeouts.sniff).await {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "sniff failed");
                ctx.metrics.connection_errors.get_or_create(&OutcomeLabels { outcome: "client_io" }).inc();
                return;
            }
        }
    };
    // The destination rule the connection matched says what to do with TLS.
    let tls = ctx.tls.load_full();
    // Looked up only when it can matter: TLS, or plain HTTP where some destination originates.
    let is_tls = matches!(proto, Protocol::Tls { .. });
    let dest = if is_tls || (tls.originates && matches!(proto, Protocol::Http1 | Protocol::Http2)) {
        let rule = ctx.interceptor.as_ref().and_then(|i| i.rule_for(o.dst));
        tls.destination(rule, o.dst)
    } else {
        None
    };
    let terminate = dest.filter(|(_, d)| d.mode == TlsMode::Terminate && is_tls);
    let originate = dest.filter(|(_, d)| d.mode == TlsMode::Originate && !is_tls);
    let origin = match originate {
        Some((i, d)) => match originated(&ctx, &tls, i, d, o.dst) {
            Ok(origin) => Some(origin),
            Err(e) => {
                tracing::warn!(%peer, dst = %o.dst, error = %e, "cannot originate TLS for this destination; closing");
                return;
            }
        },
        None => None,
    };
    let conn = Arc::new(Conn {
        mode: "transparent",
        peer,
        identity,
        target: Some(o.dst),
        protocol: if terminate.is_some() { "https" } else { proto.label() },
        class: o.class,
        origin,
    });
    ctx.metrics
        .connections
        .get_or_create(&ConnLabels {
            mode: "transparent",
            identity: conn.identity.workload.clone(),
            protocol: conn.protocol,
        })
        .inc();
    tracing::debug!(%peer, dst = %o.dst, via = o.via, identity = %conn.identity.workload, protocol = conn.protocol, "accepted");
    let _permit = match super::admit_connection(&ctx, &conn, o.dst.to_string(), start) {
        Ok(p) => p,
        // Plain HTTP learns why; anything else (TLS included) is closed.
        Err(refused) => {
            if terminate.is_none() && matches!(proto, Protocol::Http1 | Protocol::Http2) {
                super::http::serve_refusal(&ctx, stream, proto == Protocol::Http2, refused).await;
            }
            return;
        }
    };

    if let (Some((i, _)), Protocol::Tls { sni }) = (terminate, &proto) {
        super::terminate::serve(ctx.clone(), &tls, stream, conn, sni.clone(), i, start).await;
        return;
    }
    // A destination the operator classed for governing is never relayed opaquely: what does
    // not read as HTTP (TLS it was not told to terminate, a half-sent request, bytes that are
    // no protocol at all) is refused and audited.
    if governed(o.class) && matches!(proto, Protocol::Tls { .. } | Protocol::Tcp) {
        refuse_ungoverned(&ctx, &conn, stream, &proto, start).await;
        return;
    }
    // TLS relayed unread: the passthrough policy decides by SNI.
    if let Protocol::Tls { sni } = &proto {
        let v = tls.passthrough.check(&conn.identity, sni.as_deref());
        if !v.allow {
            drop(stream);
            ctx.metrics.tls.get_or_create(&TlsLabels { mode: "passthrough", outcome: "denied" }).inc();
            let target = o.dst.to_string();
            let why =
                format!("TLS to {} refused by {}", sni.as_deref().unwrap_or("(no server name)"), v.rule);
            super::audit_refused_rule(&ctx, &conn, target, sni.clone(), start, v.rule, &why);
            return;
        }
        ctx.metrics.tls.get_or_create(&TlsLabels { mode: "passthrough", outcome: "allowed" }).inc();
    }
    let counters = io::Counters::new();
    let client = io::Counted::new(stream, counters.clone());
    let sni = match &proto {
        Protocol::Tls { sni } => sni.clone(),
        _ => None,
    };
    let error = match proto {
        Protocol::Closed => None,
        Protocol::Http1 | Protocol::Http2 => {
            super::http::serve(ctx.clone(), client, conn.clone(), proto == Protocol::Http2)
                .await
                .err()
                .map(|e| e.to_string())
        }
        Protocol::Tls { .. } | Protocol::Tcp => {
            let c = counters.clone();
            splice::relay(client, &ctx.upstream.dialer, o.dst, timeouts.idle, move || c.idle())
                .await
                .err()
                .map(|e| e.to_string())
        }
    };
    super::audit_connection(&ctx, &conn, o.dst.to_string(), sni, &counters, start, error);
}

/// The upstream of a destination with `tls: originate`: its `upstream_tls.port` (443) on the
/// original address, named by `upstream_tls.server_name` or the destination's host name.
fn originated(
    ctx: &Ctx,
    tls: &crate::tls::Tls,
    rule: usize,
    d: &crate::tls::DestTls,
    dst: SocketAddr,
) -> Result<Arc<crate::tls::client::Origin>, crate::tls::TlsError> {
    let name =
        d.settings.server_name.clone().or_else(|| d.host.clone()).unwrap_or_else(|| dst.ip().to_string());
    let addr = SocketAddr::new(dst.ip(), d.settings.port.unwrap_or(443));
    tls.origin(&ctx.upstream.dialer, rule, addr, &name)
}

/// Classes whose traffic nodegate must read to enforce policy.
fn governed(class: TrafficClass) -> bool {
    matches!(class, TrafficClass::Http | TrafficClass::Llm | TrafficClass::Mcp | TrafficClass::A2a)
}

/// Refuses a connection to a governed destination that did not speak plain HTTP: a plain-text
/// 400 (so an HTTP client that stalled mid-request learns why), then close; one audit record.
async fn refuse_ungoverned(ctx: &Ctx, conn: &Conn, mut stream: TcpStream, proto: &Protocol, start: Instant) {
    use tokio::io::AsyncWriteExt as _;
    let why = match proto {
        Protocol::Tls { .. } => {
            "TLS to a destination classed for governing that is not set to `tls: terminate`"
        }
        _ => "no complete HTTP request within the sniff timeout, or not HTTP",
    };
    if !matches!(proto, Protocol::Tls { .. }) {
        let body = format!("nodegate: refused: {why}\n");
        let reply = format!(
            "HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ =
            tokio::time::timeout(std::time::Duration::from_secs(1), stream.write_all(reply.as_bytes())).await;
    }
    let _ = stream.shutdown().await;
    ctx.metrics.connection_errors.get_or_create(&OutcomeLabels { outcome: "ungoverned_refused" }).inc();
    let sni = match proto {
        Protocol::Tls { sni } => sni.clone(),
        _ => None,
    };
    let target = conn.target.map(|t| t.to_string()).unwrap_or_default();
    super::audit_refused(ctx, conn, target, sni, start, "intercept.class", why);
}
