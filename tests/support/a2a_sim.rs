//! a2a-sim: a minimal, fast A2A 1.0 agent over JSON-RPC, so a benchmark measures the gateway
//! and not the agent. A benchmark workload, never the product; correctness tests use the
//! official SDK's server (tests/python/a2a_agent.py).
//!
//! a2a-sim ADDR [--events N]
//! Card at /.well-known/agent-card.json; `SendMessage` answers a completed task with one
//! artifact; `SendStreamingMessage` streams N status updates (default 100) then completes.
use std::{convert::Infallible, net::SocketAddr, sync::Arc, sync::atomic::AtomicU64};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::{Request, Response, body::Frame, service::service_fn};
use serde_json::{Value, json};

type Body = BoxBody<Bytes, Infallible>;

struct Sim {
    addr: SocketAddr,
    events: usize,
    next: AtomicU64,
}

fn reply(status: u16, ctype: &'static str, body: Body) -> Response<Body> {
    let mut r = Response::new(body);
    *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::OK);
    r.headers_mut().insert("content-type", hyper::header::HeaderValue::from_static(ctype));
    r
}

fn json_body(v: &Value) -> Body {
    Full::new(Bytes::from(v.to_string())).boxed()
}

async fn handle(sim: Arc<Sim>, req: Request<hyper::body::Incoming>) -> Result<Response<Body>, Infallible> {
    if req.method() == hyper::Method::GET {
        let card = json!({"name": "sim", "description": "benchmark agent", "version": "1.0.0",
            "supportedInterfaces": [{"url": format!("http://{}", sim.addr), "protocolBinding": "JSONRPC", "protocolVersion": "1.0"}],
            "capabilities": {"streaming": true}, "defaultInputModes": ["text/plain"], "defaultOutputModes": ["text/plain"],
            "skills": [{"id": "echo", "name": "echo", "description": "echo", "tags": []}]});
        return Ok(reply(200, "application/json", json_body(&card)));
    }
    let Ok(body) = req.into_body().collect().await.map(|b| b.to_bytes()) else {
        return Ok(reply(400, "application/json", json_body(&json!({}))));
    };
    let msg: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let id = msg.get("id").cloned().unwrap_or(Value::Null);
    let n = sim.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let task = format!("task-{n}");
    match msg.get("method").and_then(Value::as_str) {
        Some("SendMessage") => {
            let r = json!({"jsonrpc": "2.0", "id": id, "result": {"task": {"id": task, "contextId": "ctx",
                "status": {"state": "TASK_STATE_COMPLETED"},
                "artifacts": [{"artifactId": "a", "parts": [{"text": "ok"}]}]}}});
            Ok(reply(200, "application/json", json_body(&r)))
        }
        Some("SendStreamingMessage") => {
            let events = sim.events;
            let frames = (0..=events).map(move |i| {
                let state = if i == events { "TASK_STATE_COMPLETED" } else { "TASK_STATE_WORKING" };
                let ev = json!({"jsonrpc": "2.0", "id": id, "result": {"statusUpdate": {"taskId": task, "contextId": "ctx",
                    "status": {"state": state}}}});
                Ok::<_, Infallible>(Frame::data(Bytes::from(format!("data: {ev}\n\n"))))
            });
            let stream = futures_util::stream::iter(frames);
            Ok(reply(200, "text/event-stream", StreamBody::new(stream).boxed()))
        }
        _ => {
            let r =
                json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32601, "message": "Method not found"}});
            Ok(reply(200, "application/json", json_body(&r)))
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let Some(addr) = args.get(1).and_then(|a| a.parse::<SocketAddr>().ok()) else {
        eprintln!("usage: a2a-sim ADDR [--events N]");
        std::process::exit(2)
    };
    let events: usize =
        args.iter().position(|a| a == "--events").and_then(|i| args.get(i + 1)?.parse().ok()).unwrap_or(100);
    let sim = Arc::new(Sim { addr, events, next: AtomicU64::new(0) });
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build();
    let Ok(rt) = rt else { std::process::exit(1) };
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap_or_else(|e| {
            eprintln!("a2a-sim: bind {addr}: {e}");
            std::process::exit(1)
        });
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let _ = stream.set_nodelay(true);
            let sim = sim.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| handle(sim.clone(), req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
}
