//! TLS toward upstreams: the roots nodegate verifies them with (the system's, else the bundled
//! Mozilla set, plus `tls.upstream.ca_files`), per-destination client settings (verification,
//! client certificates for mutual TLS), and pooled HTTPS clients *pinned* to an address.
//!
//! A terminated connection's requests go to the destination the client dialled, not to wherever
//! DNS says the name is: the pinned connector ignores the URI's host for the TCP connect and
//! uses it only as SNI and for verification (and `:authority`/Host). Clients are cached per
//! (address, server name, destination) so connections are reused across client connections.
use std::{
    collections::HashMap,
    future::Future,
    net::SocketAddr,
    path::PathBuf,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};

use http::Uri;
use hyper_util::{
    client::legacy::Client,
    rt::{TokioExecutor, TokioIo, TokioTimer},
};
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime, pem::PemObject};
use tokio::net::TcpStream;

use crate::{
    config::{CaFiles, DestinationUpstreamTls},
    proxy::upstream::{Body, ConnectError, Dialer},
};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot read {0}: {1}")]
    Read(String, std::io::Error),
    #[error("{0}: no PEM certificate in it")]
    NoCert(String),
    #[error("{0}: not a PEM private key")]
    Key(String),
    #[error("client certificate {0}: {1}")]
    ClientCert(String, rustls::Error),
    #[error("{0:?} is not a valid TLS server name")]
    Name(String),
    #[error("tls.client_certs: {0}")]
    ClientRoots(String),
}

/// The trust roots for upstream verification.
pub fn roots(extra: &[PathBuf]) -> Result<Arc<RootCertStore>, ClientError> {
    let mut store = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    let (added, _) = store.add_parsable_certificates(native.certs);
    if added == 0 {
        tracing::info!("no system CA roots found; verifying upstreams with the bundled Mozilla roots");
        store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    for path in extra {
        let name = path.display().to_string();
        let pem = std::fs::read(path).map_err(|e| ClientError::Read(name.clone(), e))?;
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem).flatten().collect();
        if certs.is_empty() {
            return Err(ClientError::NoCert(name));
        }
        store.add_parsable_certificates(certs);
    }
    Ok(Arc::new(store))
}

/// A client config for one destination's settings. ALPN is set by the connector.
pub fn config(
    roots: &Arc<RootCertStore>,
    d: &DestinationUpstreamTls,
) -> Result<Arc<ClientConfig>, ClientError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::ClientCert(String::new(), e))?;
    let builder = if d.verify {
        builder.with_root_certificates(roots.clone())
    } else {
        builder.dangerous().with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
    };
    let cfg = match &d.client_cert {
        None => builder.with_no_client_auth(),
        Some(files) => {
            let (chain, key) = load_pair(files)?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| ClientError::ClientCert(files.cert.display().to_string(), e))?
        }
    };
    Ok(Arc::new(cfg))
}

/// A certificate chain and its key from PEM files.
pub fn load_pair(
    files: &CaFiles,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), ClientError> {
    let (cname, kname) = (files.cert.display().to_string(), files.key.display().to_string());
    let pem = std::fs::read(&files.cert).map_err(|e| ClientError::Read(cname.clone(), e))?;
    let chain: Vec<_> = CertificateDer::pem_slice_iter(&pem).flatten().collect();
    if chain.is_empty() {
        return Err(ClientError::NoCert(cname));
    }
    let kpem = std::fs::read(&files.key).map_err(|e| ClientError::Read(kname.clone(), e))?;
    let key = PrivateKeyDer::from_pem_slice(&kpem).map_err(|_| ClientError::Key(kname))?;
    Ok((chain, key))
}

/// Accepts any certificate (a destination with `upstream_tls.verify: false`), still checking
/// the handshake's signatures so the session is at least bound to the key presented.
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Connects to one fixed address whatever the URI names.
#[derive(Clone)]
struct PinnedDialer {
    dialer: Dialer,
    addr: SocketAddr,
}

impl tower_service::Service<Uri> for PinnedDialer {
    type Response = TokioIo<TcpStream>;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Uri) -> Self::Future {
        let (d, addr) = (self.dialer.clone(), self.addr);
        Box::pin(async move { d.connect(addr).await.map(TokioIo::new) })
    }
}

type Pinned = Client<hyper_rustls::HttpsConnector<PinnedDialer>, Body>;

/// Where a terminated (or originated) connection's requests go: TLS to `addr`, SNI and
/// verification against `server_name`.
pub struct Origin {
    pub addr: SocketAddr,
    pub server_name: Arc<str>,
    /// The upstream's certificate is verified for `server_name` (a provider key may be injected).
    pub verified: bool,
    client: Pinned,
}

impl std::fmt::Debug for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Origin")
            .field("addr", &self.addr)
            .field("server_name", &self.server_name)
            .field("verified", &self.verified)
            .finish_non_exhaustive()
    }
}

impl Origin {
    /// `https://name[:port]` (no default port), the authority requests carry upstream.
    pub fn base(&self) -> String {
        match self.addr.port() {
            443 => format!("https://{}", self.server_name),
            p => format!("https://{}:{p}", self.server_name),
        }
    }

    pub fn uri(&self, path_and_query: &str) -> Result<Uri, http::uri::InvalidUri> {
        format!("{}{path_and_query}", self.base()).parse()
    }

    /// Sends `req` (its URI from [`Origin::uri`]) over the pinned pool.
    pub fn request(&self, mut req: http::Request<Body>) -> hyper_util::client::legacy::ResponseFuture {
        // The pool speaks whatever ALPN chose; hyper needs HTTP/1.1 requests for that.
        *req.version_mut() = http::Version::HTTP_11;
        self.client.request(req)
    }
}

/// A pinned client's key: address, server name, destination rule.
type OriginKey = (SocketAddr, Arc<str>, usize);

/// Pinned clients by (address, name, destination rule), bounded.
pub struct Origins {
    cache: Mutex<HashMap<OriginKey, Arc<Origin>>>,
    cap: usize,
}

impl Origins {
    pub fn new(cap: usize) -> Self {
        Self { cache: Mutex::new(HashMap::new()), cap: cap.max(1) }
    }

    pub fn get(
        &self,
        dialer: &Dialer,
        cfg: &Arc<ClientConfig>,
        verified: bool,
        addr: SocketAddr,
        name: &str,
        rule: usize,
    ) -> Result<Arc<Origin>, ClientError> {
        let name: Arc<str> = Arc::from(name.trim_end_matches('.').to_ascii_lowercase());
        ServerName::try_from(name.to_string()).map_err(|_| ClientError::Name(name.to_string()))?;
        let key = (addr, name.clone(), rule);
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(o) = cache.get(&key) {
            return Ok(o.clone());
        }
        if cache.len() >= self.cap {
            // Dropping a client drops only its idle connections; requests in flight hold theirs.
            cache.clear();
        }
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config((**cfg).clone())
            .https_only()
            .enable_http1()
            .enable_http2()
            .wrap_connector(PinnedDialer { dialer: dialer.clone(), addr });
        let client = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(64)
            .build(https);
        let o = Arc::new(Origin { addr, server_name: name, verified, client });
        cache.insert(key, o.clone());
        Ok(o)
    }
}
