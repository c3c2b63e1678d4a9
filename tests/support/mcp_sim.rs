//! mcp-sim: a minimal, fast MCP server over streamable HTTP (2026-07-28 stateless, and the
//! 2025-11-25 handshake for clients that ask for it), so a benchmark measures the gateway and not
//! the server. A benchmark workload, never the product; correctness tests use the real servers.
//!
//! mcp-sim ADDR NAME [--tools N]
//! Tools `tool_0..tool_{N-1}` (default 20); a call answers `NAME:TOOL ARGUMENTS`.
use std::{convert::Infallible, net::SocketAddr, sync::Arc};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, service::service_fn};
use serde_json::{Value, json};

struct Sim {
    name: String,
    tools: Value,
}

fn reply(status: u16, v: Option<&Value>, session: bool) -> Response<Full<Bytes>> {
    let body = v.map(|v| Bytes::from(v.to_string())).unwrap_or_default();
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::OK);
    r.headers_mut().insert("content-type", hyper::header::HeaderValue::from_static("application/json"));
    if session {
        r.headers_mut().insert("mcp-session-id", hyper::header::HeaderValue::from_static("sim-session"));
    }
    r
}

async fn handle(
    sim: Arc<Sim>,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.method() != hyper::Method::POST {
        return Ok(reply(405, None, false));
    }
    let Ok(body) = req.into_body().collect().await.map(|b| b.to_bytes()) else {
        return Ok(reply(400, None, false));
    };
    let Ok(msg) = serde_json::from_slice::<Value>(&body) else {
        return Ok(reply(
            400,
            Some(&json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32700, "message": "parse error"}})),
            false,
        ));
    };
    let Some(id) = msg.get("id").cloned() else { return Ok(reply(202, None, false)) };
    let method = msg.get("method").and_then(Value::as_str).unwrap_or_default();
    let ok = |result: Value| reply(200, Some(&json!({"jsonrpc": "2.0", "id": id, "result": result})), false);
    Ok(match method {
        "server/discover" => ok(json!({
            "supportedVersions": ["2026-07-28"], "capabilities": {"tools": {"listChanged": false}},
            "resultType": "complete", "ttlMs": 0, "cacheScope": "private",
        })),
        "initialize" => {
            let r = json!({"protocolVersion": "2025-11-25", "capabilities": {"tools": {}}, "serverInfo": {"name": sim.name}});
            reply(200, Some(&json!({"jsonrpc": "2.0", "id": id, "result": r})), true)
        }
        "tools/list" => {
            ok(json!({"tools": sim.tools, "resultType": "complete", "ttlMs": 0, "cacheScope": "private"}))
        }
        "tools/call" => {
            let p = msg.get("params").cloned().unwrap_or_default();
            let tool = p.get("name").and_then(Value::as_str).unwrap_or_default();
            let text = format!("{}:{tool} {}", sim.name, p.get("arguments").cloned().unwrap_or_default());
            ok(
                json!({"content": [{"type": "text", "text": text}], "isError": false, "resultType": "complete"}),
            )
        }
        "prompts/list" => {
            ok(json!({"prompts": [], "resultType": "complete", "ttlMs": 0, "cacheScope": "private"}))
        }
        "resources/list" => {
            ok(json!({"resources": [], "resultType": "complete", "ttlMs": 0, "cacheScope": "private"}))
        }
        "resources/templates/list" => ok(
            json!({"resourceTemplates": [], "resultType": "complete", "ttlMs": 0, "cacheScope": "private"}),
        ),
        other => reply(
            200,
            Some(
                &json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32601, "message": format!("no method {other}")}}),
            ),
            false,
        ),
    })
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(addr), Some(name)) = (args.get(1).and_then(|a| a.parse::<SocketAddr>().ok()), args.get(2))
    else {
        eprintln!("usage: mcp-sim ADDR NAME [--tools N]");
        std::process::exit(2)
    };
    let n: usize =
        args.iter().position(|a| a == "--tools").and_then(|i| args.get(i + 1)?.parse().ok()).unwrap_or(20);
    let tools: Vec<Value> = (0..n)
        .map(|i| {
            json!({"name": format!("tool_{i}"), "description": format!("simulated tool {i} of {name}"),
                   "inputSchema": {"type": "object", "properties": {"q": {"type": "string"}}}})
        })
        .collect();
    let sim = Arc::new(Sim { name: name.clone(), tools: Value::Array(tools) });
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build();
    let Ok(rt) = rt else { std::process::exit(1) };
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap_or_else(|e| {
            eprintln!("mcp-sim: bind {addr}: {e}");
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
