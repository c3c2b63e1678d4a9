//! The one upstream client: TCP connects that carry the proxy mark (so the eBPF programs never
//! redirect the proxy's own traffic back to itself) and pooled hyper clients for HTTP/1.1 and
//! HTTP/2 (h2c), shared by every handler.
use std::{
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use hyper::Uri;
use hyper_util::{
    client::legacy::Client,
    rt::{TokioExecutor, TokioIo, TokioTimer},
};
use tokio::net::{TcpSocket, TcpStream};

/// Every body nodegate sends: errors are boxed so its own (an idle body, a limit) can end a
/// stream as an error, as the peer's would.
pub type Body = BoxBody<Bytes, BoxError>;
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot resolve {0}: {1}")]
    Resolve(String, std::io::Error),
    #[error("{0} resolved to no address")]
    NoAddress(String),
    #[error("connect to {0} timed out after {1:?}")]
    Timeout(SocketAddr, Duration),
    #[error("connect to {0}: {1}")]
    Io(SocketAddr, std::io::Error),
    #[error("cannot set SO_MARK on the upstream socket (needs CAP_NET_ADMIN): {0}")]
    Mark(std::io::Error),
    #[error("request URI has no authority")]
    NoAuthority,
    #[error("{0} is nodegate's own listener: refused")]
    Loop(SocketAddr),
}

/// How the proxy opens upstream TCP connections.
#[derive(Clone, Debug)]
pub struct Dialer {
    /// SO_MARK for our own sockets; `None` when interception is off (no privileges needed).
    pub mark: Option<u32>,
    pub timeout: Duration,
    /// nodegate's own listeners, never connected to (whatever name led there).
    pub own: Arc<super::egress::OwnAddrs>,
}

impl Dialer {
    pub async fn connect(&self, addr: SocketAddr) -> Result<TcpStream, ConnectError> {
        if self.own.is_own(addr) {
            return Err(ConnectError::Loop(addr));
        }
        let sock = if addr.is_ipv4() { TcpSocket::new_v4() } else { TcpSocket::new_v6() }
            .map_err(|e| ConnectError::Io(addr, e))?;
        if let Some(mark) = self.mark {
            socket2::SockRef::from(&sock).set_mark(mark).map_err(ConnectError::Mark)?;
        }
        sock.set_nodelay(true).map_err(|e| ConnectError::Io(addr, e))?;
        match tokio::time::timeout(self.timeout, sock.connect(addr)).await {
            Ok(Ok(s)) => Ok(s),
            Ok(Err(e)) => Err(ConnectError::Io(addr, e)),
            Err(_) => Err(ConnectError::Timeout(addr, self.timeout)),
        }
    }

    /// Resolves `host:port` (an IP literal needs no lookup) and connects to the first address
    /// that answers.
    pub async fn connect_host(&self, host: &str, port: u16) -> Result<TcpStream, ConnectError> {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = host.parse::<std::net::IpAddr>() {
            return self.connect(SocketAddr::new(ip, port)).await;
        }
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| ConnectError::Resolve(host.to_string(), e))?
            .collect();
        let mut last = ConnectError::NoAddress(host.to_string());
        for a in addrs {
            match self.connect(a).await {
                Ok(s) => return Ok(s),
                Err(e) => last = e,
            }
        }
        Err(last)
    }
}

impl tower_service::Service<Uri> for Dialer {
    type Response = TokioIo<TcpStream>;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let d = self.clone();
        Box::pin(async move {
            let host = uri.host().ok_or(ConnectError::NoAuthority)?.to_string();
            let port = uri.port_u16().unwrap_or(80);
            d.connect_host(&host, port).await.map(TokioIo::new)
        })
    }
}

/// Pooled HTTP clients over [`Dialer`].
#[derive(Clone)]
pub struct Upstream {
    pub dialer: Dialer,
    pub http1: Client<Dialer, Body>,
    pub http2: Client<Dialer, Body>,
    /// For providers: `http://` or `https://` (the system's roots), HTTP/2 when the server offers it.
    pub llm: Client<hyper_rustls::HttpsConnector<Dialer>, Body>,
}

impl Upstream {
    pub fn new(dialer: Dialer) -> Self {
        let http1 = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(256)
            .build(dialer.clone());
        let http2 = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .http2_only(true)
            .http2_keep_alive_interval(Some(Duration::from_secs(30)))
            .build(dialer.clone());
        let roots = match hyper_rustls::HttpsConnectorBuilder::new().with_native_roots() {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "cannot load the system CA roots; using the bundled Mozilla roots for https providers");
                hyper_rustls::HttpsConnectorBuilder::new().with_webpki_roots()
            }
        };
        let tls = roots.https_or_http().enable_http1().enable_http2().wrap_connector(dialer.clone());
        let llm = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(256)
            .build(tls);
        Self { dialer, http1, http2, llm }
    }
}

/// A peer's body as one nodegate sends on.
pub fn boxed<B>(b: B) -> Body
where
    B: hyper::body::Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    use http_body_util::BodyExt as _;
    b.map_err(Into::into).boxed()
}
