//! ng-tlsload: the TLS benchmark client. Blocking rustls over std sockets, one thread per
//! concurrent connection, so what it measures is the server side.
//!
//! ng-tlsload conns ADDR SNI CA SECS THREADS    new TLS connection + one GET (Connection: close)
//!                                              per iteration; `{n}` in SNI is replaced by a
//!                                              counter (a fresh name, so a fresh leaf, each time)
//! ng-tlsload keepalive ADDR SNI CA N            one connection, N sequential GETs
//!
//! Prints one JSON object: per_second, p50_us, p99_us (per connection or per request), errors.
use std::{
    io::{Read, Write},
    net::TcpStream,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use rustls_pki_types::{CertificateDer, ServerName, pem::PemObject};

fn config(ca: &str) -> Arc<ClientConfig> {
    let pem = std::fs::read(ca).unwrap_or_else(|e| panic!("read {ca}: {e}"));
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(&pem).flatten() {
        let _ = roots.add(c);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap_or_else(|e| panic!("{e}"))
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    // Every connection a full handshake: no resumption, as a fleet of fresh agents would do.
    cfg.resumption = rustls::client::Resumption::disabled();
    Arc::new(cfg)
}

fn connect(
    cfg: &Arc<ClientConfig>,
    addr: &str,
    sni: &str,
) -> std::io::Result<StreamOwned<ClientConnection, TcpStream>> {
    let name = ServerName::try_from(sni.to_string()).map_err(std::io::Error::other)?;
    let conn = ClientConnection::new(cfg.clone(), name).map_err(std::io::Error::other)?;
    let tcp = TcpStream::connect(addr)?;
    tcp.set_nodelay(true)?;
    let _ = socket2_linger0(&tcp);
    let mut s = StreamOwned::new(conn, tcp);
    while s.conn.is_handshaking() {
        s.conn.complete_io(&mut s.sock)?;
    }
    Ok(s)
}

/// SO_LINGER 0: closed benchmark sockets skip TIME_WAIT.
fn socket2_linger0(tcp: &TcpStream) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let l = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: a valid socket fd and a correctly sized linger struct.
    let r = unsafe {
        libc::setsockopt(
            tcp.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&l as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as u32,
        )
    };
    if r == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
}

/// One GET; reads the head and a content-length body.
fn request<S: Read + Write>(s: &mut S, host: &str, close: bool) -> std::io::Result<()> {
    let conn = if close { "close" } else { "keep-alive" };
    write!(s, "GET / HTTP/1.1\r\nhost: {host}\r\nconnection: {conn}\r\n\r\n")?;
    s.flush()?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::Error::other("closed before the response"));
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            if !head.starts_with("http/1.1 200") {
                return Err(std::io::Error::other(head.lines().next().unwrap_or("").to_string()));
            }
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            while buf.len() < end + 4 + len {
                let n = s.read(&mut chunk)?;
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            return Ok(());
        }
    }
}

fn pct(v: &mut [u64], p: f64) -> u64 {
    v.sort_unstable();
    v.get(((v.len() as f64 * p) as usize).min(v.len().saturating_sub(1))).copied().unwrap_or(0)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize| args.get(i).cloned().unwrap_or_default();
    let (mode, addr, sni, ca) = (arg(1), arg(2), arg(3), arg(4));
    let cfg = config(&ca);
    let errors = Arc::new(AtomicU64::new(0));
    let first_error = Arc::new(std::sync::Mutex::new(None::<String>));
    let (mut lat, elapsed) = match mode.as_str() {
        "conns" => {
            let secs: u64 = arg(5).parse().unwrap_or(3);
            let threads: usize = arg(6).parse().unwrap_or(4);
            let counter = Arc::new(AtomicU64::new(0));
            let deadline = Instant::now() + Duration::from_secs(secs);
            let start = Instant::now();
            let handles: Vec<_> = (0..threads)
                .map(|_| {
                    let (cfg, addr, sni, counter, errors, first) = (
                        cfg.clone(),
                        addr.clone(),
                        sni.clone(),
                        counter.clone(),
                        errors.clone(),
                        first_error.clone(),
                    );
                    std::thread::spawn(move || {
                        let mut lat = Vec::new();
                        while Instant::now() < deadline {
                            let n = counter.fetch_add(1, Ordering::Relaxed);
                            let name = sni.replace("{n}", &n.to_string());
                            let t = Instant::now();
                            let r =
                                connect(&cfg, &addr, &name).and_then(|mut s| request(&mut s, &name, true));
                            match r {
                                Ok(()) => lat.push(t.elapsed().as_micros() as u64),
                                Err(e) => {
                                    errors.fetch_add(1, Ordering::Relaxed);
                                    first
                                        .lock()
                                        .unwrap_or_else(|p| p.into_inner())
                                        .get_or_insert(e.to_string());
                                }
                            }
                        }
                        lat
                    })
                })
                .collect();
            let lat: Vec<u64> = handles.into_iter().flat_map(|h| h.join().unwrap_or_default()).collect();
            (lat, start.elapsed())
        }
        "keepalive" => {
            let n: usize = arg(5).parse().unwrap_or(2000);
            let start = Instant::now();
            let mut lat = Vec::with_capacity(n);
            match connect(&cfg, &addr, &sni) {
                Ok(mut s) => {
                    for _ in 0..n {
                        let t = Instant::now();
                        match request(&mut s, &sni, false) {
                            Ok(()) => lat.push(t.elapsed().as_micros() as u64),
                            Err(e) => {
                                errors.fetch_add(1, Ordering::Relaxed);
                                first_error
                                    .lock()
                                    .unwrap_or_else(|p| p.into_inner())
                                    .get_or_insert(e.to_string());
                                break;
                            }
                        }
                    }
                }
                Err(e) => {
                    errors.fetch_add(1, Ordering::Relaxed);
                    *first_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
                }
            }
            (lat, start.elapsed())
        }
        _ => {
            eprintln!("usage: ng-tlsload conns|keepalive ...");
            std::process::exit(2);
        }
    };
    let done = lat.len();
    let out = serde_json::json!({
        "ok": done > 0,
        "done": done,
        "per_second": done as f64 / elapsed.as_secs_f64(),
        "p50_us": pct(&mut lat, 0.5),
        "p99_us": pct(&mut lat, 0.99),
        "errors": errors.load(Ordering::Relaxed),
        "first_error": *first_error.lock().unwrap_or_else(|p| p.into_inner()),
    });
    println!("{out}");
}
