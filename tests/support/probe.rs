//! ng-probe: the test fixture that plays client and upstream server inside the test network
//! namespaces. Std only, one thread per connection: simple enough to trust as a reference.
//!
//! ng-probe serve ADDR NAME              HTTP/1.1 keep-alive server; answers JSON naming itself and the peer it saw
//! ng-probe get ADDR [PATH] [HOST]       one GET; prints JSON {ok,status,body,local} or {ok:false,error,errno}
//! ng-probe tunnel PROXY TARGET PATH   CONNECT TARGET through PROXY, then GET PATH in the tunnel
//! ng-probe h2serve ADDR NAME           HTTP/2 prior-knowledge (h2c) server (hyper); answers like serve
//! ng-probe upgrade ADDR                HTTP/1.1 Upgrade to the `echo` toy protocol, then one echoed line
//! ng-probe hold ADDR MODE SECS          silent | garbage | early-close, then keeps the socket SECS
//! ng-probe bench ADDR MODE N THREADS    MODE conn (new connection per request) | keepalive; prints JSON stats
use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    time::{Duration, Instant},
};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize| args.get(i).cloned().unwrap_or_default();
    let code = match arg(1).as_str() {
        "serve" => serve(&arg(2), &arg(3)),
        "get" => get(&arg(2), args.get(3).map_or("/", |s| s), args.get(4).map(String::as_str)),
        "tunnel" => tunnel(&arg(2), &arg(3), args.get(4).map_or("/", |s| s)),
        "h2serve" => h2serve(&arg(2), &arg(3)),
        "upgrade" => upgrade(&arg(2)),
        "hold" => hold(&arg(2), &arg(3), arg(4).parse().unwrap_or(5)),
        "bench" => bench(&arg(2), &arg(3), arg(4).parse().unwrap_or(1000), arg(5).parse().unwrap_or(1)),
        _ => {
            eprintln!("usage: ng-probe serve|get|hold|bench ...");
            2
        }
    };
    std::process::exit(code);
}

fn addr(s: &str) -> SocketAddr {
    match s.parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("ng-probe: bad address {s:?}: {e}");
            std::process::exit(2)
        }
    }
}

fn serve(at: &str, name: &str) -> i32 {
    let listener = match TcpListener::bind(addr(at)) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("ng-probe: bind {at}: {e}");
            return 1;
        }
    };
    println!("listening {at}");
    let _ = std::io::stdout().flush();
    for stream in listener.incoming().flatten() {
        let name = name.to_string();
        std::thread::spawn(move || {
            let _ = stream.set_nodelay(true);
            let peer = stream.peer_addr().map(|p| p.to_string()).unwrap_or_default();
            let Ok(read_half) = stream.try_clone() else { return };
            let mut r = BufReader::new(read_half);
            let mut w = stream;
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 {
                    return;
                }
                let mut parts = line.split_whitespace();
                let (Some(_method), Some(path)) = (parts.next(), parts.next()) else { return };
                let path = path.to_string();
                let mut host = String::new();
                let mut len = 0usize;
                let mut upgrade = false;
                loop {
                    let mut h = String::new();
                    if r.read_line(&mut h).unwrap_or(0) == 0 {
                        return;
                    }
                    let h = h.trim_end();
                    if h.is_empty() {
                        break;
                    }
                    if let Some((k, v)) = h.split_once(':') {
                        match k.trim().to_ascii_lowercase().as_str() {
                            "host" => host = v.trim().to_string(),
                            "content-length" => len = v.trim().parse().unwrap_or(0),
                            "upgrade" => upgrade = v.trim().eq_ignore_ascii_case("echo"),
                            _ => {}
                        }
                    }
                }
                let mut body = vec![0; len];
                if r.read_exact(&mut body).is_err() {
                    return;
                }
                if upgrade {
                    // A toy protocol for upgrade tests: after 101, echo every line back.
                    if w.write_all(
                        b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: echo\r\n\r\n",
                    )
                    .is_err()
                    {
                        return;
                    }
                    let mut line = String::new();
                    while r.read_line(&mut line).unwrap_or(0) > 0 {
                        if w.write_all(line.as_bytes()).is_err() {
                            return;
                        }
                        line.clear();
                    }
                    return;
                }
                // `/slow...`: a request still in flight a moment later (restart tests).
                if path.starts_with("/slow") {
                    std::thread::sleep(Duration::from_millis(1500));
                }
                let out =
                    serde_json::json!({"server": name, "peer": peer, "path": path, "host": host}).to_string();
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{out}",
                    out.len()
                );
                if w.write_all(resp.as_bytes()).is_err() {
                    return;
                }
            }
        });
    }
    0
}

fn errno_of(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(0)
}

/// Reads one HTTP/1.1 response with Content-Length; returns (status, body).
fn read_response(r: &mut impl BufRead) -> std::io::Result<(u16, String)> {
    let mut status_line = String::new();
    if r.read_line(&mut status_line)? == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "connection closed before a response",
        ));
    }
    let status = status_line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let mut len = 0usize;
    loop {
        let mut h = String::new();
        r.read_line(&mut h)?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':')
            && k.trim().eq_ignore_ascii_case("content-length")
        {
            len = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body)?;
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

fn get(at: &str, path: &str, host: Option<&str>) -> i32 {
    let a = addr(at);
    let result = (|| {
        let s = TcpStream::connect_timeout(&a, Duration::from_secs(5))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        let local = s.local_addr()?;
        // What the application believes it is connected to (getpeername).
        let peer = s.peer_addr()?;
        let mut w = s.try_clone()?;
        write!(w, "GET {path} HTTP/1.1\r\nhost: {}\r\nconnection: close\r\n\r\n", host.unwrap_or(at))?;
        let (status, body) = read_response(&mut BufReader::new(s))?;
        Ok::<_, std::io::Error>((local, peer, status, body))
    })();
    match result {
        Ok((local, peer, status, body)) => {
            let body: serde_json::Value =
                serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body));
            println!(
                "{}",
                serde_json::json!({"ok": true, "status": status, "body": body, "local": local.to_string(), "peer": peer.to_string()})
            );
        }
        Err(e) => {
            println!("{}", serde_json::json!({"ok": false, "error": e.to_string(), "errno": errno_of(&e)}))
        }
    }
    0
}

fn tunnel(proxy: &str, target: &str, path: &str) -> i32 {
    let result = (|| {
        let s = TcpStream::connect_timeout(&addr(proxy), Duration::from_secs(5))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut w = s.try_clone()?;
        let mut r = BufReader::new(s);
        write!(w, "CONNECT {target} HTTP/1.1\r\nhost: {target}\r\n\r\n")?;
        let (status, body) = read_response(&mut r)?;
        if status != 200 {
            return Ok((status, body, 0));
        }
        write!(w, "GET {path} HTTP/1.1\r\nhost: {target}\r\nconnection: close\r\n\r\n")?;
        let (inner, body) = read_response(&mut r)?;
        Ok::<_, std::io::Error>((status, body, inner))
    })();
    match result {
        Ok((status, body, inner)) => {
            let body: serde_json::Value =
                serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body));
            println!(
                "{}",
                serde_json::json!({"ok": true, "status": status, "inner_status": inner, "body": body})
            );
        }
        Err(e) => {
            println!("{}", serde_json::json!({"ok": false, "error": e.to_string(), "errno": errno_of(&e)}))
        }
    }
    0
}

fn upgrade(at: &str) -> i32 {
    let result = (|| {
        let s = TcpStream::connect_timeout(&addr(at), Duration::from_secs(5))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut w = s.try_clone()?;
        let mut r = BufReader::new(s);
        write!(w, "GET /ws HTTP/1.1\r\nhost: {at}\r\nconnection: upgrade\r\nupgrade: echo\r\n\r\n")?;
        let mut status = String::new();
        r.read_line(&mut status)?;
        loop {
            let mut h = String::new();
            if r.read_line(&mut h)? == 0 || h.trim().is_empty() {
                break;
            }
        }
        writeln!(w, "hello through the upgrade")?;
        let mut echoed = String::new();
        r.read_line(&mut echoed)?;
        Ok::<_, std::io::Error>((status.trim().to_string(), echoed.trim().to_string()))
    })();
    match result {
        Ok((status, echoed)) => {
            println!("{}", serde_json::json!({"ok": true, "status": status, "echoed": echoed}))
        }
        Err(e) => println!("{}", serde_json::json!({"ok": false, "error": e.to_string()})),
    }
    0
}

fn hold(at: &str, mode: &str, secs: u64) -> i32 {
    let Ok(mut s) = TcpStream::connect_timeout(&addr(at), Duration::from_secs(5)) else {
        println!("connect failed");
        return 1;
    };
    match mode {
        "garbage" => {
            let _ = s.write_all(b"\x00\x01\x02 this is not a protocol \xff\xfe\r\n\r\n");
        }
        "early-close" => {
            let _ = s.write_all(b"GET /half HTTP/1.1\r\nhost: x\r\n");
            return 0;
        }
        _ => {}
    }
    println!("holding");
    let _ = std::io::stdout().flush();
    std::thread::sleep(Duration::from_secs(secs));
    0
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn bench(at: &str, mode: &str, n: usize, threads: usize) -> i32 {
    let a = addr(at);
    let per = n.div_ceil(threads.max(1));
    let start = Instant::now();
    let handles: Vec<_> = (0..threads.max(1))
        .map(|_| {
            let mode = mode.to_string();
            std::thread::spawn(move || -> Result<(Vec<f64>, Vec<f64>), String> {
                let mut connect_us = Vec::with_capacity(per);
                let mut request_us = Vec::with_capacity(per);
                let req = format!("GET /bench HTTP/1.1\r\nhost: {a}\r\n\r\n");
                let mut keep: Option<(TcpStream, BufReader<TcpStream>)> = None;
                for _ in 0..per {
                    let t0 = Instant::now();
                    if mode == "conn" || keep.is_none() {
                        let s = TcpStream::connect(a).map_err(|e| format!("connect: {e}"))?;
                        connect_us.push(t0.elapsed().as_secs_f64() * 1e6);
                        s.set_nodelay(true).map_err(|e| e.to_string())?;
                        // SO_LINGER 0: close with RST, no TIME_WAIT pile-up in a connect loop.
                        socket_linger0(&s);
                        let r = BufReader::new(s.try_clone().map_err(|e| e.to_string())?);
                        keep = Some((s, r));
                    }
                    let Some((w, r)) = keep.as_mut() else { unreachable!() };
                    let t1 = Instant::now();
                    w.write_all(req.as_bytes()).map_err(|e| format!("write: {e}"))?;
                    let (status, _) = read_response(r).map_err(|e| format!("read: {e}"))?;
                    if status != 200 {
                        return Err(format!("status {status}"));
                    }
                    request_us.push(t1.elapsed().as_secs_f64() * 1e6);
                    if mode == "conn" {
                        keep = None;
                    }
                }
                Ok((connect_us, request_us))
            })
        })
        .collect();
    let mut connect_us = Vec::new();
    let mut request_us = Vec::new();
    for h in handles {
        match h.join() {
            Ok(Ok((c, r))) => {
                connect_us.extend(c);
                request_us.extend(r);
            }
            Ok(Err(e)) => {
                println!("{}", serde_json::json!({"ok": false, "error": e}));
                return 1;
            }
            Err(_) => return 1,
        }
    }
    let secs = start.elapsed().as_secs_f64();
    connect_us.sort_by(f64::total_cmp);
    request_us.sort_by(f64::total_cmp);
    println!(
        "{}",
        serde_json::json!({
            "ok": true, "mode": mode, "requests": request_us.len(), "connections": connect_us.len(), "seconds": secs,
            "per_second": request_us.len() as f64 / secs,
            "connect_p50_us": percentile(&connect_us, 0.5), "connect_p99_us": percentile(&connect_us, 0.99),
            "request_p50_us": percentile(&request_us, 0.5), "request_p99_us": percentile(&request_us, 0.99),
        })
    );
    0
}

fn socket_linger0(s: &TcpStream) {
    use std::os::fd::AsRawFd;
    let l = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: valid fd and a correctly sized linger struct.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&l as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as u32,
        );
    }
}

fn h2serve(at: &str, name: &str) -> i32 {
    use hyper::{Request, Response, body::Incoming, service::service_fn};
    let a = addr(at);
    let name = name.to_string();
    let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ng-probe: runtime: {e}");
            return 1;
        }
    };
    rt.block_on(async move {
        let listener = match tokio::net::TcpListener::bind(a).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("ng-probe: bind {a}: {e}");
                return 1;
            }
        };
        loop {
            let Ok((stream, peer)) = listener.accept().await else { continue };
            let name = name.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let out = serde_json::json!({
                        "server": name, "peer": peer.to_string(), "path": req.uri().path(),
                        "version": format!("{:?}", req.version()),
                        "host": req.headers().get("host").and_then(|h| h.to_str().ok()).unwrap_or_default(),
                        "authority": req.uri().authority().map(|a| a.to_string()).unwrap_or_default(),
                    });
                    async move {
                        Ok::<_, std::convert::Infallible>(Response::new(http_body_util::Full::new(
                            bytes::Bytes::from(out.to_string()),
                        )))
                    }
                });
                let _ = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    })
}
