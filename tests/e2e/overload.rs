//! Overload: what must stay responsive when the proxy is saturated. Its own test binary, so
//! the load it makes does not skew the timing of other suites (binaries run one at a time).
use std::{
    io::Write,
    net::TcpStream,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use nodegate_tests::{
    raw::{connect, read_answer, send_to},
    *,
};

const PROXY: &str = "127.0.0.1:15080";
const ADMIN: &str = "127.0.0.1:15000";

/// `/healthz` stays fast while the proxy's workers are busy with the heaviest work a request can
/// cause: budgeted LLM calls with 256 KiB prompts, each tokenised at admission (over a second each in a debug build). The admin server
/// runs on its own thread, and tokenising hands its worker off, so neither waits on the other.
#[test]
fn health_answers_fast_while_the_proxy_is_saturated() {
    require_root();
    let topo = Topology::new();
    let node = &topo.node;
    let _sim = llm_sim(node, "127.0.0.1:18141", "primary", &["--tokens", "4"]);
    let (dir, pin) = Gateway::prepare("health-load");
    let cfg = format!(
        r#"
listeners: {{ explicit: {PROXY}, transparent: null }}
admin: {{ address: {ADMIN} }}
audit: {{ path: "{{AUDIT}}", flush_interval: 50ms }}
llm:
  providers:
    - {{ name: primary, kind: openai, endpoint: "http://127.0.0.1:18141/v1" }}
  models:
    - {{ name: fast, targets: [ {{ provider: primary, model: gpt-4o-mini }} ] }}
  budgets:
    - {{ name: all, selector: {{ workloads: ["*"] }}, tokens_per_day: 1000000000000 }}
"#
    );
    let _gw = Gateway::start(&dir, &pin, &cfg, Some(node), None);
    let words = ["agents", "route", "tokens", "through", "nodegate", "東京", "budget", "call"];
    let prompt: String = (0..35_000).map(|i| words[i % words.len()]).collect::<Vec<_>>().join(" ");
    let body =
        serde_json::json!({"model": "fast", "messages": [{"role": "user", "content": prompt}]}).to_string();
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: nodegate\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let t = Instant::now();
    let mut first = connect(node, PROXY);
    first.write_all(request.as_bytes()).unwrap_or_else(|e| panic!("write: {e:?}"));
    let a = read_answer(&first).unwrap_or_else(|e| panic!("first call: {e:?}"));
    assert_eq!(a.status, 200, "{} {}", a.head, String::from_utf8_lossy(&a.body));
    eprintln!("one call alone: {:?}", t.elapsed());
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let load: Vec<_> = (0..6)
        .map(|_| {
            let (stop, done, request) = (stop.clone(), done.clone(), request.clone());
            let conns: Vec<TcpStream> = (0..40).map(|_| connect(node, PROXY)).collect();
            thread::spawn(move || {
                for mut s in conns {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let answer = s
                        .write_all(request.as_bytes())
                        .map_err(|e| e.to_string())
                        .and_then(|()| read_answer(&s).map_err(|e| e.to_string()));
                    match answer {
                        Ok(a) if a.status == 200 => {
                            done.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok(a) => eprintln!("load call: {} {}", a.head, String::from_utf8_lossy(&a.body)),
                        Err(e) => eprintln!("load call: {e}"),
                    }
                }
            })
        })
        .collect();
    // Let the load build, then probe health for a few seconds.
    thread::sleep(Duration::from_millis(500));
    let mut worst = Duration::ZERO;
    let mut samples = 0;
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(4) {
        let started = Instant::now();
        let a = send_to(node, ADMIN, "GET /healthz HTTP/1.1\r\nhost: admin\r\nconnection: close\r\n\r\n");
        let took = started.elapsed();
        assert_eq!(a.status, 200);
        worst = worst.max(took);
        samples += 1;
        thread::sleep(Duration::from_millis(50));
    }
    let completed_during = done.load(Ordering::SeqCst);
    stop.store(true, Ordering::SeqCst);
    for h in load {
        let _ = h.join();
    }
    assert!(completed_during >= 6, "the load was not real: {completed_during} LLM calls completed");
    eprintln!(
        "healthz worst {worst:?} over {samples} samples; {completed_during} 256 KiB LLM calls meanwhile"
    );
    assert!(worst < Duration::from_millis(50), "healthz took {worst:?} under load");
}
