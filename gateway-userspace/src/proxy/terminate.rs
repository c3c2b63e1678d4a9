//! TLS termination for intercepted connections to `tls: terminate` destinations: complete the
//! client's handshake with a leaf the node CA mints for its SNI (ALPN h2 or http/1.1, as the
//! client offered), then serve the requests inside exactly like plain HTTP (LLM, MCP, HTTP
//! handlers), each sent on over nodegate's own verified TLS to the address the client dialled.
//!
//! With `tls.client_certs`, a verified client certificate adds its principal (`tls::peer`).
//!
//! Refused, with an audit record naming the rule: a ClientHello without a server name
//! (`tls.no_sni`: no certificate can honestly be chosen), a server name that is not a valid DNS
//! name (`tls.upstream`), a handshake that fails or stalls (`tls.handshake`; a client that does
//! not trust the node CA ends here, before anything is read or forwarded).
use std::{sync::Arc, time::Instant};

use tokio::net::TcpStream;

use super::{Conn, Ctx, io};
use crate::telemetry::metrics::TlsLabels;

pub async fn serve(
    ctx: Arc<Ctx>,
    tls: &crate::tls::Tls,
    stream: TcpStream,
    conn: Arc<Conn>,
    sni: Option<String>,
    rule: usize,
    start: Instant,
) {
    let target = conn.target.map(|t| t.to_string()).unwrap_or_default();
    let refuse = |rule: &'static str, why: &str, sni: Option<String>| {
        ctx.metrics.tls.get_or_create(&TlsLabels { mode: "terminate", outcome: "refused" }).inc();
        super::audit_refused(&ctx, &conn, target.clone(), sni, start, rule, why);
    };
    let Some(name) = sni else {
        refuse(
            "tls.no_sni",
            "TLS without a server name to a destination nodegate terminates: no certificate can be chosen",
            None,
        );
        return;
    };
    let (Some(server), Some(dst)) = (tls.server.clone(), conn.target) else {
        refuse("tls.ca", "tls: terminate needs tls.ca (the node CA)", Some(name));
        return;
    };
    let origin = match tls.origin(&ctx.upstream.dialer, rule, dst, &name) {
        Ok(o) => o,
        Err(e) => {
            refuse("tls.upstream", &e.to_string(), Some(name));
            return;
        }
    };
    let conn = Arc::new(Conn { origin: Some(origin), ..(*conn).clone() });
    let counters = io::Counters::new();
    let client = io::Counted::new(stream, counters.clone());
    let acceptor = tokio_rustls::TlsAcceptor::from(server);
    let stream = match tokio::time::timeout(tls.cfg.handshake_timeout, acceptor.accept(client)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            let why = format!("client TLS handshake failed (does the client trust the node CA?): {e}");
            tracing::debug!(peer = %conn.peer, sni = %name, error = %e, "TLS handshake failed");
            refuse("tls.handshake", &why, Some(name));
            return;
        }
        Err(_) => {
            let why =
                format!("client did not complete its TLS handshake within {:?}", tls.cfg.handshake_timeout);
            refuse("tls.handshake", &why, Some(name));
            return;
        }
    };
    ctx.metrics.tls.get_or_create(&TlsLabels { mode: "terminate", outcome: "ok" }).inc();
    // A verified client certificate names a principal beside the kernel's workload.
    let principal =
        stream.get_ref().1.peer_certificates().and_then(|c| c.first()).and_then(crate::tls::peer::principal);
    let conn = match principal {
        Some(p) => {
            let identity =
                Arc::new(crate::identity::Identity { principal: Some(p), ..(*conn.identity).clone() });
            Arc::new(Conn { identity, ..(*conn).clone() })
        }
        None => conn,
    };
    let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2".as_slice());
    let error = super::http::serve(ctx.clone(), stream, conn.clone(), h2).await.err().map(|e| e.to_string());
    super::audit_connection(&ctx, &conn, target, Some(name), &counters, start, error);
}
