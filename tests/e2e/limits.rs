//! Limits and timeouts, hit end to end through the explicit listener: each refusal is the
//! documented answer (431, 503 + Retry-After, 504, a broken body), counted in
//! `nodegate_limit_hits_total{limit}`, audited with the limit as the rule, and frees what it
//! held. The upstream is a scripted server in the node namespace that can be slow, silent or
//! stop mid-body, and records what reached it.
use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpListener,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use nodegate_tests::{
    raw::{Answer, connect, read_answer, send_to},
    *,
};

const SCRIPTED_PORT: u16 = 18081;
const PROXY: &str = "127.0.0.1:15080";
const ADMIN: &str = "127.0.0.1:15000";

/// What the scripted upstream saw.
#[derive(Default)]
struct Seen {
    /// Requests that reached it.
    hits: AtomicUsize,
    /// For each `/upload`: how many body bytes arrived before the body ended, and how it ended.
    uploads: Mutex<Vec<(usize, String)>>,
}

/// Reads a request head: (path, content-length).
fn read_head(r: &mut impl BufRead) -> Option<(String, usize)> {
    let mut line = String::new();
    if r.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let path = line.split_whitespace().nth(1)?.to_string();
    let mut len = 0;
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).ok()? == 0 {
            return None;
        }
        let h = h.trim_end();
        if h.is_empty() {
            return Some((path, len));
        }
        if let Some((k, v)) = h.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            len = v.trim().parse().unwrap_or(0);
        }
    }
}

/// Blocks until the peer closes (or 30 s pass): a server that holds its side open.
fn hold(r: &mut impl Read) {
    let mut buf = [0u8; 256];
    while matches!(r.read(&mut buf), Ok(n) if n > 0) {}
}

fn scripted_upstream(ns: &Netns) -> Arc<Seen> {
    let listener = in_netns(ns, || {
        TcpListener::bind((SVC_IP, SCRIPTED_PORT)).unwrap_or_else(|e| panic!("bind scripted upstream: {e:?}"))
    });
    let seen = Arc::new(Seen::default());
    let s = seen.clone();
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let seen = s.clone();
            thread::spawn(move || {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
                let Ok(read_half) = stream.try_clone() else { return };
                let mut r = BufReader::new(read_half);
                let mut w = stream;
                while let Some((path, len)) = read_head(&mut r) {
                    seen.hits.fetch_add(1, Ordering::SeqCst);
                    if path.starts_with("/upload") {
                        let mut got = 0;
                        let mut buf = [0u8; 1024];
                        let how = loop {
                            match r.read(&mut buf) {
                                Ok(0) => break "eof".to_string(),
                                Ok(n) => {
                                    got += n;
                                    if got >= len {
                                        break "complete".to_string();
                                    }
                                }
                                Err(e) => break format!("error: {e}"),
                            }
                        };
                        seen.uploads.lock().unwrap_or_else(|e| e.into_inner()).push((got, how));
                        return;
                    }
                    let mut body = vec![0; len];
                    if r.read_exact(&mut body).is_err() {
                        return;
                    }
                    let answer: &[u8] = match path.as_str() {
                        p if p.starts_with("/never") => return hold(&mut r),
                        p if p.starts_with("/stall") => {
                            let _ = w.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n0123456789");
                            return hold(&mut r);
                        }
                        p if p.starts_with("/slow") => {
                            thread::sleep(Duration::from_millis(1500));
                            b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\nslow-done"
                        }
                        _ => b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
                    };
                    if w.write_all(answer).is_err() {
                        return;
                    }
                }
            });
        }
    });
    seen
}

fn send(ns: &Netns, request: &str) -> Answer {
    let mut s = connect(ns, PROXY);
    s.write_all(request.as_bytes()).unwrap_or_else(|e| panic!("write request: {e:?}"));
    read_answer(&s).unwrap_or_else(|e| panic!("no answer to {request:?}: {e}"))
}

fn get_via_proxy(ns: &Netns, path: &str) -> Answer {
    let host = format!("{SVC_IP}:{SCRIPTED_PORT}");
    send(ns, &format!("GET http://{host}{path} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n"))
}

/// A series of the admin's /metrics, summed over label sets containing `with`.
fn metric(ns: &Netns, name: &str, with: &str) -> f64 {
    let a = send_to(ns, ADMIN, "GET /metrics HTTP/1.1\r\nhost: admin\r\nconnection: close\r\n\r\n");
    String::from_utf8_lossy(&a.body)
        .lines()
        .filter(|l| l.starts_with(name) && l.contains(with))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn gateway(node: &Netns, tag: &str, extra: &str) -> Gateway {
    let (dir, pin) = Gateway::prepare(tag);
    let cfg = format!(
        r#"
listeners: {{ explicit: {PROXY}, transparent: null }}
admin: {{ address: {ADMIN} }}
audit: {{ path: "{{AUDIT}}", flush_interval: 50ms }}
{extra}
"#
    );
    Gateway::start(&dir, &pin, &cfg, Some(node), None)
}

#[test]
fn each_limit_answers_as_documented_and_frees_what_it_held() {
    require_root();
    let topo = Topology::new();
    let node = &topo.node;
    let seen = scripted_upstream(node);
    let gw = gateway(
        node,
        "limits",
        r#"
limits: { requests: 8, requests_per_workload: 2, header_bytes: 16384 }
timeouts: { response: 2500ms, body_idle: 700ms, header_read: 1s }
"#,
    );
    let host = format!("{SVC_IP}:{SCRIPTED_PORT}");

    // Headers over limits.header_bytes: 431, nothing forwarded.
    let before = seen.hits.load(Ordering::SeqCst);
    let big = "x".repeat(20_000);
    let a = send(node, &format!("GET http://{host}/big HTTP/1.1\r\nhost: {host}\r\nx-big: {big}\r\n\r\n"));
    assert_eq!(a.status, 431, "{}", a.head);
    assert_eq!(seen.hits.load(Ordering::SeqCst), before, "a refused request must not reach the upstream");
    wait_until(Duration::from_secs(5), "the 431 counted", || {
        metric(node, "nodegate_limit_hits_total", "limit=\"limits.header_bytes\"") >= 1.0
    });

    // A client that never finishes its headers is cut at timeouts.header_read.
    let mut slow = connect(node, PROXY);
    slow.write_all(format!("GET http://{host}/ HTTP/1.1\r\nhost: {host}\r\nx-slow: ").as_bytes())
        .unwrap_or_else(|e| panic!("write: {e:?}"));
    let t = Instant::now();
    let mut rest = Vec::new();
    let _ = slow.read_to_end(&mut rest);
    assert!(t.elapsed() < Duration::from_secs(5), "a slowloris client held its connection {:?}", t.elapsed());

    // Two slow requests fill the workload's share; a third is shed at once with 503 and
    // Retry-After, and is not forwarded; once they finish, there is room again.
    let before = seen.hits.load(Ordering::SeqCst);
    let slow_ones: Vec<_> = (0..2)
        .map(|i| {
            let mut s = connect(node, PROXY);
            let req =
                format!("GET http://{host}/slow{i} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n");
            s.write_all(req.as_bytes()).unwrap_or_else(|e| panic!("write: {e:?}"));
            thread::spawn(move || read_answer(&s).map(|a| (a.status, a.body)))
        })
        .collect();
    wait_until(Duration::from_secs(5), "both slow requests upstream", || {
        seen.hits.load(Ordering::SeqCst) == before + 2
    });
    let t = Instant::now();
    let shed = get_via_proxy(node, "/third");
    assert_eq!(shed.status, 503, "{}", shed.head);
    assert!(t.elapsed() < Duration::from_millis(1000), "shedding must not queue: {:?}", t.elapsed());
    assert!(shed.head.to_ascii_lowercase().contains("retry-after: 1"), "{}", shed.head);
    assert!(String::from_utf8_lossy(&shed.body).contains("limits.requests_per_workload"));
    assert_eq!(seen.hits.load(Ordering::SeqCst), before + 2, "a shed request must not be forwarded");
    for h in slow_ones {
        let (status, body) = h
            .join()
            .unwrap_or_else(|e| panic!("thread: {e:?}"))
            .unwrap_or_else(|e| panic!("the slow requests complete: {e:?}"));
        assert_eq!((status, body.as_slice()), (200, b"slow-done".as_slice()));
    }
    assert_eq!(get_via_proxy(node, "/after").status, 200, "places are given back when responses end");
    let rec = gw.wait_audit("shed record", |r| r["kind"] == "http" && r["path"] == "/third");
    assert_eq!(rec["decision"], "deny", "{rec}");
    assert_eq!(rec["rule"], "limits.requests_per_workload", "{rec}");
    assert_eq!(rec["status"], 503, "{rec}");

    // An upstream that never answers: 504 at timeouts.response, with the setting named.
    let t = Instant::now();
    let a = get_via_proxy(node, "/never");
    assert_eq!(a.status, 504, "{}", a.head);
    assert!(t.elapsed() < Duration::from_secs(5), "took {:?}", t.elapsed());
    assert!(String::from_utf8_lossy(&a.body).contains("timeouts.response"));

    // An upstream that stops mid-body: the client's body breaks (not a clean, short end).
    let mut s = connect(node, PROXY);
    s.write_all(
        format!("GET http://{host}/stall HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n").as_bytes(),
    )
    .unwrap_or_else(|e| panic!("write: {e:?}"));
    let t = Instant::now();
    let got = read_answer(&s);
    assert!(got.is_err(), "a stalled body must end in an error, not a complete answer");
    assert!(t.elapsed() < Duration::from_secs(5), "took {:?}", t.elapsed());
    let rec = gw.wait_audit("stalled body record", |r| r["kind"] == "http" && r["path"] == "/stall");
    assert!(rec["error"].as_str().unwrap_or("").contains("timeouts.body_idle"), "{rec}");

    // A client that stops mid-upload: the upstream sees the body end short, and the request's
    // place is freed.
    let mut s = connect(node, PROXY);
    let head = format!("POST http://{host}/upload HTTP/1.1\r\nhost: {host}\r\ncontent-length: 1000\r\n\r\n");
    s.write_all(head.as_bytes()).unwrap_or_else(|e| panic!("write: {e:?}"));
    s.write_all(&[b'u'; 10]).unwrap_or_else(|e| panic!("write: {e:?}"));
    wait_until(Duration::from_secs(5), "the upload ends upstream", || {
        !seen.uploads.lock().unwrap_or_else(|e| e.into_inner()).is_empty()
    });
    let (bytes, how) = seen.uploads.lock().unwrap_or_else(|e| e.into_inner())[0].clone();
    assert!(bytes < 1000 && how != "complete", "upload ended {how} after {bytes} bytes");
    drop(s);
    wait_until(Duration::from_secs(5), "nothing in flight", || {
        metric(node, "nodegate_requests_in_flight", "") == 0.0
    });
    for limit in ["limits.requests_per_workload", "timeouts.response", "timeouts.body_idle"] {
        assert!(
            metric(node, "nodegate_limit_hits_total", &format!("limit=\"{limit}\"")) >= 1.0,
            "{limit} not counted"
        );
    }
}

#[test]
fn shutdown_finishes_requests_in_flight_and_closes_idle_connections() {
    require_root();
    let topo = Topology::new();
    let node = &topo.node;
    let seen = scripted_upstream(node);
    let mut gw = gateway(node, "drain", "timeouts: { drain: 20s }");
    let host = format!("{SVC_IP}:{SCRIPTED_PORT}");
    // An idle keep-alive connection (one answered request, then nothing).
    let mut keep = connect(node, PROXY);
    keep.write_all(format!("GET http://{host}/first HTTP/1.1\r\nhost: {host}\r\n\r\n").as_bytes())
        .unwrap_or_else(|e| panic!("write: {e:?}"));
    assert_eq!(read_answer(&keep).unwrap_or_else(|e| panic!("first answer: {e:?}")).status, 200);
    // A request in flight when SIGTERM arrives.
    let mut s = connect(node, PROXY);
    s.write_all(
        format!("GET http://{host}/slow HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n").as_bytes(),
    )
    .unwrap_or_else(|e| panic!("write: {e:?}"));
    let before = seen.hits.load(Ordering::SeqCst);
    wait_until(Duration::from_secs(5), "the slow request upstream", || {
        seen.hits.load(Ordering::SeqCst) >= before
    });
    let in_flight = thread::spawn(move || read_answer(&s).map(|a| (a.status, a.body)));
    thread::sleep(Duration::from_millis(200));
    let t = Instant::now();
    gw.stop();
    let (status, body) = in_flight
        .join()
        .unwrap_or_else(|e| panic!("thread: {e:?}"))
        .unwrap_or_else(|e| panic!("the request in flight completes: {e:?}"));
    assert_eq!((status, body.as_slice()), (200, b"slow-done".as_slice()));
    // The idle connection was closed at shutdown, not held until the 20 s drain deadline.
    assert!(
        t.elapsed() < Duration::from_secs(8),
        "shutdown took {:?}: idle connections held it",
        t.elapsed()
    );
    let mut rest = Vec::new();
    assert!(matches!(keep.read_to_end(&mut rest), Ok(0)), "the idle connection must be closed cleanly");
}

/// SIGTERM while an LLM stream is open, and the stream outlives `timeouts.drain`: it ends with
/// a clean error event the SDKs raise (not a connection cut mid-stream), then nodegate exits.
#[test]
fn a_stream_open_at_the_drain_deadline_ends_with_a_clean_error() {
    require_root();
    let topo = Topology::new();
    let node = &topo.node;
    // 40 tokens, 100 ms apart: four seconds of stream.
    let _sim = llm_sim(node, "127.0.0.1:18151", "slow", &["--tokens", "40", "--chunk-delay-us", "100000"]);
    let mut gw = gateway(
        node,
        "drain-stream",
        r#"
timeouts: { drain: 1s }
llm:
  providers:
    - { name: slow, kind: openai, endpoint: "http://127.0.0.1:18151/v1" }
  models:
    - { name: slow, targets: [ { provider: slow, model: gpt-4o-mini } ] }
"#,
    );
    let body = r#"{"model":"slow","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    let mut s = connect(node, PROXY);
    let req = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: nodegate\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap_or_else(|e| panic!("write: {e:?}"));
    let reader = thread::spawn(move || {
        let mut all = Vec::new();
        let _ = s.read_to_end(&mut all);
        String::from_utf8_lossy(&all).into_owned()
    });
    thread::sleep(Duration::from_millis(800));
    let t = Instant::now();
    gw.stop();
    let text = reader.join().unwrap_or_else(|e| panic!("reader: {e:?}"));
    assert!(t.elapsed() < Duration::from_secs(4), "shutdown took {:?}", t.elapsed());
    assert!(text.contains("data: {\"choices\""), "the stream had started: {text}");
    assert!(text.contains("gateway_shutting_down"), "no clean error event at the deadline: {text}");
    // (The error event is followed by `[DONE]`, as every error event nodegate ends an OpenAI
    // stream with; the upstream's own last token never came.)
    assert!(!text.contains("w39 "), "the stream cannot have finished in time: {text}");
    // Chunked framing ended properly: the last chunk is the zero-length one.
    assert!(
        text.trim_end().ends_with("0"),
        "the response was cut, not ended: {:?}",
        &text[text.len().saturating_sub(80)..]
    );
}

/// An upgrade without a gap: with `listeners.reuse_port` a new nodegate binds beside the old one;
/// the old one, told to stop, finishes its request in flight while every new connection is
/// answered (queued ones move to the new listener with `net.ipv4.tcp_migrate_req`).
#[test]
fn a_new_nodegate_takes_over_the_listeners_while_the_old_one_drains() {
    require_root();
    let topo = Topology::new();
    let node = &topo.node;
    // net.ipv4.tcp_migrate_req is per network namespace: set it from a thread inside this one.
    in_netns(node, || std::fs::write("/proc/sys/net/ipv4/tcp_migrate_req", "1"))
        .unwrap_or_else(|e| panic!("net.ipv4.tcp_migrate_req (Linux 5.14+): {e}"));
    let seen = scripted_upstream(node);
    let cfg = format!(
        r#"
listeners: {{ explicit: {PROXY}, transparent: null, reuse_port: true }}
admin: {{ address: {ADMIN} }}
audit: {{ path: "{{AUDIT}}", flush_interval: 50ms }}
timeouts: {{ drain: 20s }}
"#
    );
    let (dir, pin) = Gateway::prepare("handover-old");
    let mut old = Gateway::start(&dir, &pin, &cfg, Some(node), None);
    let host = format!("{SVC_IP}:{SCRIPTED_PORT}");
    // A request in flight on the old process.
    let mut s = connect(node, PROXY);
    let before = seen.hits.load(Ordering::SeqCst);
    s.write_all(
        format!("GET http://{host}/slow HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n").as_bytes(),
    )
    .unwrap_or_else(|e| panic!("write: {e:?}"));
    wait_until(Duration::from_secs(5), "the slow request upstream", || {
        seen.hits.load(Ordering::SeqCst) > before
    });
    let in_flight = thread::spawn(move || read_answer(&s).map(|a| (a.status, a.body)));
    // The new process binds the same listeners while the old one still serves.
    let (dir2, pin2) = Gateway::prepare("handover-new");
    let _new = Gateway::start(&dir2, &pin2, &cfg, Some(node), None);
    // New connections all along, while the old one is told to stop.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (ns_name, stop2, host2) = (node.name.clone(), stop.clone(), host.clone());
    let load = thread::spawn(move || {
        let ns = Netns { name: ns_name };
        let mut results = Vec::new();
        while !stop2.load(Ordering::SeqCst) {
            let req =
                format!("GET http://{host2}/during HTTP/1.1\r\nhost: {host2}\r\nconnection: close\r\n\r\n");
            let got = in_netns(&ns, || std::net::TcpStream::connect(PROXY))
                .map_err(|e| e.to_string())
                .and_then(|mut c| {
                    c.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| e.to_string())?;
                    c.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
                    read_answer(&c).map(|a| a.status).map_err(|e| e.to_string())
                });
            results.push(got);
            thread::sleep(Duration::from_millis(20));
        }
        // Not ours to delete: the topology owns the namespace.
        std::mem::forget(ns);
        results
    });
    thread::sleep(Duration::from_millis(300));
    old.stop();
    thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::SeqCst);
    let results = load.join().unwrap_or_else(|e| panic!("load: {e:?}"));
    let (status, body) = in_flight
        .join()
        .unwrap_or_else(|e| panic!("thread: {e:?}"))
        .unwrap_or_else(|e| panic!("the request in flight on the old process was dropped: {e}"));
    assert_eq!((status, body.as_slice()), (200, b"slow-done".as_slice()));
    let failed: Vec<_> = results.iter().filter(|r| !matches!(r, Ok(200))).collect();
    assert!(results.len() >= 10, "too few requests during the handover: {}", results.len());
    assert!(
        failed.is_empty(),
        "{} of {} requests failed during the handover: {failed:?}",
        failed.len(),
        results.len()
    );
    assert_eq!(get_via_proxy(node, "/after").status, 200, "the new process serves alone");
}

/// Connections over `limits.connections`: answered 503 with `connection: close`, audited, and
/// a closed connection makes room. (Its own gateway: idle connections must outlive the short
/// `header_read` the other limits test uses.)
#[test]
fn connections_over_the_limit_are_answered_and_closed() {
    require_root();
    let topo = Topology::new();
    let node = &topo.node;
    let _seen = scripted_upstream(node);
    let gw = gateway(node, "limits-conns", "limits: { connections: 6, connections_per_workload: 6 }");
    // Six keep-alive connections, each proven admitted by one answered request, fill the limit;
    // the seventh is answered 503 and closed; closing them makes room.
    let host = format!("{SVC_IP}:{SCRIPTED_PORT}");
    let idle: Vec<_> = (0..6)
        .map(|i| {
            let mut c = connect(node, PROXY);
            c.write_all(format!("GET http://{host}/held{i} HTTP/1.1\r\nhost: {host}\r\n\r\n").as_bytes())
                .unwrap_or_else(|e| panic!("write: {e:?}"));
            let a = read_answer(&c).unwrap_or_else(|e| panic!("held connection {i}: {e:?}"));
            assert_eq!(a.status, 200, "{}", a.head);
            c
        })
        .collect();
    let over = get_via_proxy(node, "/seventh");
    assert_eq!(over.status, 503, "{}", over.head);
    assert!(String::from_utf8_lossy(&over.body).contains("limits.connections"), "{:?}", over.body);
    assert!(over.head.to_ascii_lowercase().contains("connection: close"), "{}", over.head);
    drop(idle);
    wait_until(Duration::from_secs(5), "a place for a new connection", || {
        get_via_proxy(node, "/room").status == 200
    });
    gw.wait_audit("refused connection record", |r| {
        r["kind"] == "connection" && r["rule"] == "limits.connections" && r["decision"] == "deny"
    });
    assert!(metric(node, "nodegate_limit_hits_total", "limit=\"limits.connections\"") >= 1.0);
}

/// A provider that never answers: the call fails over to the next target at
/// `llm.response_timeout`, or, with none left, fails naming the setting; never a stall.
#[test]
fn an_llm_provider_that_never_answers_fails_over_at_the_response_timeout() {
    require_root();
    let topo = Topology::new();
    let node = &topo.node;
    let _seen = scripted_upstream(node);
    let _sim = llm_sim(node, "127.0.0.1:18161", "backup", &["--tokens", "3"]);
    let gw = gateway(
        node,
        "llm-timeout",
        &format!(
            r#"
llm:
  response_timeout: 1s
  providers:
    - {{ name: silent, kind: openai, endpoint: "http://{SVC_IP}:{SCRIPTED_PORT}/never/v1" }}
    - {{ name: backup, kind: openai, endpoint: "http://127.0.0.1:18161/v1" }}
  models:
    - {{ name: both, targets: [ {{ provider: silent, model: m }}, {{ provider: backup, model: m }} ] }}
    - {{ name: alone, targets: [ {{ provider: silent, model: m }} ] }}
"#
        ),
    );
    let chat = |model: &str| {
        let body = format!(r#"{{"model":"{model}","messages":[{{"role":"user","content":"hi"}}]}}"#);
        send(
            node,
            &format!(
                "POST /v1/chat/completions HTTP/1.1\r\nhost: nodegate\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            ),
        )
    };
    let t = Instant::now();
    let a = chat("both");
    assert_eq!(a.status, 200, "the backup must answer: {} {}", a.head, String::from_utf8_lossy(&a.body));
    assert!(t.elapsed() < Duration::from_secs(5), "took {:?}", t.elapsed());
    let t = Instant::now();
    let a = chat("alone");
    assert!(a.status >= 500, "{}", a.head);
    assert!(
        String::from_utf8_lossy(&a.body).contains("llm.response_timeout"),
        "{}",
        String::from_utf8_lossy(&a.body)
    );
    assert!(t.elapsed() < Duration::from_secs(5), "took {:?}", t.elapsed());
    gw.wait_audit("failover record", |r| r["kind"] == "llm" && r["failovers"] == 1 && r["status"] == 200);
    assert!(metric(node, "nodegate_limit_hits_total", "limit=\"llm.response_timeout\"") >= 2.0);
}

/// A provider that goes quiet once its answer has started: after `llm.stream_idle` a stream ends
/// with an error event naming the setting (never a clean end passing for a complete answer, never
/// a wait without end), a JSON answer breaks off; both are recorded and counted.
#[test]
fn an_llm_provider_that_goes_quiet_mid_answer_is_ended_at_the_stream_idle() {
    require_root();
    let topo = Topology::new();
    let node = &topo.node;
    let _seen = scripted_upstream(node);
    let _sim = llm_sim(node, "127.0.0.1:18171", "quiet", &["--tokens", "20", "--stall-after", "3"]);
    let gw = gateway(
        node,
        "llm-idle",
        &format!(
            r#"
llm:
  stream_idle: 1s
  providers:
    - {{ name: quiet, kind: openai, endpoint: "http://127.0.0.1:18171/v1" }}
    - {{ name: stalls, kind: openai, endpoint: "http://{SVC_IP}:{SCRIPTED_PORT}/stall/v1" }}
  models:
    - {{ name: quiet, targets: [ {{ provider: quiet, model: m }} ] }}
    - {{ name: stalls, targets: [ {{ provider: stalls, model: m }} ] }}
"#
        ),
    );
    let post = |body: &str| {
        let mut s = connect(node, PROXY);
        let req = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: nodegate\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).unwrap_or_else(|e| panic!("write: {e:?}"));
        let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
        let mut all = Vec::new();
        let _ = s.read_to_end(&mut all);
        String::from_utf8_lossy(&all).into_owned()
    };
    let t = Instant::now();
    let text = post(r#"{"model":"quiet","stream":true,"messages":[{"role":"user","content":"hi"}]}"#);
    assert!(t.elapsed() < Duration::from_secs(5), "took {:?}", t.elapsed());
    assert!(text.contains("data: {\"choices\""), "the stream had started: {text}");
    assert!(
        text.contains("upstream_timeout") && text.contains("llm.stream_idle"),
        "no error event naming the setting: {text}"
    );
    assert!(text.trim_end().ends_with('0'), "the response was cut, not ended: {text}");
    let rec =
        gw.wait_audit("the quiet stream's record", |r| r["kind"] == "llm" && r["requested_model"] == "quiet");
    assert!(rec["error"].as_str().unwrap_or_default().contains("llm.stream_idle"), "{rec}");

    // A JSON answer that stops after 10 of its 1000 bytes: broken off, not a short clean answer.
    let t = Instant::now();
    let text = post(r#"{"model":"stalls","messages":[{"role":"user","content":"hi"}]}"#);
    assert!(t.elapsed() < Duration::from_secs(5), "took {:?}", t.elapsed());
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.ends_with("0123456789"), "only what the provider sent, then the break: {text}");
    let rec = gw.wait_audit("the stalled answer's record", |r| {
        r["kind"] == "llm" && r["requested_model"] == "stalls"
    });
    assert!(rec["error"].as_str().unwrap_or_default().contains("llm.stream_idle"), "{rec}");
    assert!(metric(node, "nodegate_limit_hits_total", "limit=\"llm.stream_idle\"") >= 2.0);
}
