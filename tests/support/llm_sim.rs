//! llm-sim: a provider simulator that speaks the OpenAI and Anthropic wire formats faithfully
//! enough for the official SDKs: chat/completions (plain, streaming with the usage chunk, tool
//! calls), completions, responses, embeddings and Anthropic messages (plain and streaming), with
//! failure modes for failover tests. A test fixture and benchmark workload, never the product.
//!
//! llm-sim ADDR NAME [--tokens N] [--fail-first N] [--fail-status S] [--fail-mid-stream K]
//!                   [--ignore-max-tokens] [--chunk-delay-us D] [--body-bytes B]
//! GET /sim/last returns the last request's headers and body; GET /sim/count the request count.
use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::{Request, Response, body::Frame, service::service_fn};
use serde_json::{Value, json};

type Body = BoxBody<Bytes, std::io::Error>;

#[derive(Clone)]
struct Opts {
    name: String,
    tokens: u64,
    fail_first: u64,
    fail_status: u16,
    fail_mid_stream: Option<u64>,
    /// Stop sending (connection held open) after this many events.
    stall_after: Option<u64>,
    /// After a stream's last event, keep the body open this long before ending it.
    hold_after_done: Duration,
    ignore_max_tokens: bool,
    chunk_delay: Duration,
    body_bytes: usize,
}

struct State {
    opts: Opts,
    count: AtomicU64,
    last: Mutex<Value>,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let Some(addr) = args.get(1).and_then(|a| a.parse::<SocketAddr>().ok()) else {
        eprintln!("usage: llm-sim ADDR NAME [options]");
        std::process::exit(2);
    };
    let mut o = Opts {
        name: args.get(2).cloned().unwrap_or_else(|| "sim".into()),
        tokens: 8,
        fail_first: 0,
        fail_status: 503,
        fail_mid_stream: None,
        stall_after: None,
        hold_after_done: Duration::ZERO,
        ignore_max_tokens: false,
        chunk_delay: Duration::ZERO,
        body_bytes: 0,
    };
    let mut i = 3;
    while i < args.len() {
        let val = || args.get(i + 1).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        match args[i].as_str() {
            "--tokens" => o.tokens = val(),
            "--fail-first" => o.fail_first = val(),
            "--fail-status" => o.fail_status = val() as u16,
            "--fail-mid-stream" => o.fail_mid_stream = Some(val()),
            "--stall-after" => o.stall_after = Some(val()),
            "--hold-after-done-ms" => o.hold_after_done = Duration::from_millis(val()),
            "--chunk-delay-us" => o.chunk_delay = Duration::from_micros(val()),
            "--body-bytes" => o.body_bytes = val() as usize,
            "--ignore-max-tokens" => {
                o.ignore_max_tokens = true;
                i -= 1;
            }
            other => {
                eprintln!("llm-sim: unknown option {other}");
                std::process::exit(2);
            }
        }
        i += 2;
    }
    let state = Arc::new(State { opts: o, count: AtomicU64::new(0), last: Mutex::new(Value::Null) });
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap_or_else(
            |e| {
                eprintln!("llm-sim: runtime: {e}");
                std::process::exit(1)
            },
        );
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap_or_else(|e| {
            eprintln!("llm-sim: bind {addr}: {e}");
            std::process::exit(1)
        });
        println!("llm-sim listening {addr}");
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let _ = stream.set_nodelay(true);
            let state = state.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| handle(state.clone(), req));
                let _ = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
}

fn json_response(status: u16, v: &Value) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(v.to_string())).map_err(|n| match n {}).boxed());
    *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert("content-type", hyper::header::HeaderValue::from_static("application/json"));
    r
}

fn words(v: &Value) -> u64 {
    match v {
        Value::String(s) => s.split_whitespace().count() as u64,
        Value::Array(a) => a.iter().map(words).sum(),
        Value::Object(o) => o
            .iter()
            .filter(|(k, _)| k.as_str() != "role" && k.as_str() != "type")
            .map(|(_, v)| words(v))
            .sum(),
        _ => 0,
    }
}

async fn handle(
    state: Arc<State>,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_string();
    if path == "/sim/last" {
        return Ok(json_response(200, &state.last.lock().map(|v| v.clone()).unwrap_or(Value::Null)));
    }
    if path == "/sim/count" {
        return Ok(json_response(
            200,
            &json!({"count": state.count.load(Ordering::Relaxed), "name": state.opts.name}),
        ));
    }
    let headers: serde_json::Map<String, Value> = req
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), Value::String(v.to_str().unwrap_or("").to_string())))
        .collect();
    let bytes = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let n = state.count.fetch_add(1, Ordering::Relaxed);
    if let Ok(mut l) = state.last.lock() {
        *l = json!({"path": path, "headers": headers, "body": body});
    }
    let o = &state.opts;
    let anthropic = path == "/v1/messages";
    if n < o.fail_first {
        let err = if anthropic {
            json!({"type": "error", "error": {"type": "overloaded_error", "message": format!("{} is failing on purpose", o.name)}})
        } else {
            json!({"error": {"message": format!("{} is failing on purpose", o.name), "type": "server_error", "code": null}})
        };
        return Ok(json_response(o.fail_status, &err));
    }
    let model = body.get("model").and_then(Value::as_str).unwrap_or("sim-model").to_string();
    let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let max = ["max_completion_tokens", "max_tokens", "max_output_tokens"]
        .iter()
        .find_map(|k| body.get(*k).and_then(Value::as_u64));
    let out_tokens = match max {
        Some(m) if !o.ignore_max_tokens => o.tokens.min(m),
        _ => o.tokens,
    };
    let prompt_tokens = ["messages", "prompt", "input", "system", "instructions"]
        .iter()
        .filter_map(|k| body.get(*k))
        .map(words)
        .sum::<u64>();
    let pieces: Vec<String> = (0..out_tokens).map(|i| format!("w{i} ")).collect();
    let text: String = pieces.concat();
    let id = format!("{}-{n}", o.name);
    let wants_tool = body.get("tools").and_then(Value::as_array).is_some_and(|t| !t.is_empty());
    Ok(match path.as_str() {
        "/v1/chat/completions" if !stream => {
            let message = if wants_tool {
                json!({"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]})
            } else {
                json!({"role": "assistant", "content": text})
            };
            json_response(
                200,
                &json!({
                    "id": id, "object": "chat.completion", "created": 1, "model": model, "system_fingerprint": o.name,
                    "choices": [{"index": 0, "message": message, "finish_reason": if wants_tool { "tool_calls" } else { "stop" }, "logprobs": null}],
                    "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": out_tokens, "total_tokens": prompt_tokens + out_tokens,
                              "prompt_tokens_details": {"cached_tokens": 0}, "completion_tokens_details": {"reasoning_tokens": 0}}
                }),
            )
        }
        "/v1/chat/completions" => {
            let include_usage = body
                .get("stream_options")
                .and_then(|s| s.get("include_usage"))
                .and_then(Value::as_bool)
                .unwrap_or(false);
            let mut events = Vec::new();
            let chunk = |delta: Value, finish: Value| json!({"id": id, "object": "chat.completion.chunk", "created": 1, "model": model, "system_fingerprint": o.name, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
            events.push(chunk(json!({"role": "assistant", "content": ""}), Value::Null).to_string());
            if wants_tool {
                events.push(chunk(json!({"tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": ""}}]}), Value::Null).to_string());
                events.push(chunk(json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\":\"Paris\"}"}}]}), Value::Null).to_string());
            } else {
                for p in &pieces {
                    events.push(chunk(json!({"content": p}), Value::Null).to_string());
                }
            }
            events.push(chunk(json!({}), json!(if wants_tool { "tool_calls" } else { "stop" })).to_string());
            if include_usage {
                events.push(json!({"id": id, "object": "chat.completion.chunk", "created": 1, "model": model, "choices": [],
                    "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": out_tokens, "total_tokens": prompt_tokens + out_tokens}}).to_string());
            }
            events.push("[DONE]".into());
            sse(events.into_iter().map(|e| format!("data: {e}\n\n")).collect(), o)
        }
        "/v1/completions" if !stream => json_response(
            200,
            &json!({
                "id": id, "object": "text_completion", "created": 1, "model": model,
                "choices": [{"index": 0, "text": text, "finish_reason": "stop", "logprobs": null}],
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": out_tokens, "total_tokens": prompt_tokens + out_tokens}
            }),
        ),
        "/v1/completions" => {
            let include_usage = body
                .get("stream_options")
                .and_then(|s| s.get("include_usage"))
                .and_then(Value::as_bool)
                .unwrap_or(false);
            let mut events: Vec<String> = pieces.iter().map(|p| json!({"id": id, "object": "text_completion", "created": 1, "model": model, "choices": [{"index": 0, "text": p, "finish_reason": null}]}).to_string()).collect();
            if include_usage {
                events.push(json!({"id": id, "object": "text_completion", "created": 1, "model": model, "choices": [], "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": out_tokens, "total_tokens": prompt_tokens + out_tokens}}).to_string());
            }
            events.push("[DONE]".into());
            sse(events.into_iter().map(|e| format!("data: {e}\n\n")).collect(), o)
        }
        "/v1/embeddings" => json_response(
            200,
            &json!({
                "object": "list", "model": model,
                "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2, 0.3]}],
                "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}
            }),
        ),
        "/v1/responses" => {
            let usage = json!({"input_tokens": prompt_tokens, "output_tokens": out_tokens, "total_tokens": prompt_tokens + out_tokens,
                               "input_tokens_details": {"cached_tokens": 0}, "output_tokens_details": {"reasoning_tokens": 0}});
            let response = |status: &str, usage: Value| {
                json!({
                    "id": id, "object": "response", "created_at": 1, "status": status, "model": model,
                    "output": [{"type": "message", "id": "msg_1", "status": "completed", "role": "assistant",
                                "content": [{"type": "output_text", "text": text, "annotations": []}]}],
                    "usage": usage, "parallel_tool_calls": true, "tool_choice": "auto", "tools": []
                })
            };
            if !stream {
                json_response(200, &response("completed", usage))
            } else {
                let mut events = vec![format!(
                    "event: response.created\ndata: {}\n\n",
                    json!({"type": "response.created", "sequence_number": 0, "response": response("in_progress", Value::Null)})
                )];
                for (i, p) in pieces.iter().enumerate() {
                    events.push(format!("event: response.output_text.delta\ndata: {}\n\n", json!({"type": "response.output_text.delta", "sequence_number": i + 1, "item_id": "msg_1", "output_index": 0, "content_index": 0, "delta": p, "logprobs": []})));
                }
                events.push(format!("event: response.completed\ndata: {}\n\n", json!({"type": "response.completed", "sequence_number": pieces.len() + 1, "response": response("completed", usage)})));
                sse(events, o)
            }
        }
        "/v1/messages" if !stream => json_response(
            200,
            &json!({
                "id": id, "type": "message", "role": "assistant", "model": model,
                "content": [{"type": "text", "text": text}], "stop_reason": "end_turn", "stop_sequence": null,
                "usage": {"input_tokens": prompt_tokens, "output_tokens": out_tokens, "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0}
            }),
        ),
        "/v1/messages" => {
            let ev = |name: &str, v: Value| format!("event: {name}\ndata: {v}\n\n");
            let mut events = vec![ev(
                "message_start",
                json!({"type": "message_start", "message": {"id": id, "type": "message", "role": "assistant", "model": model, "content": [], "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": prompt_tokens, "output_tokens": 1, "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0}}}),
            )];
            events.push(ev("content_block_start", json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})));
            for p in &pieces {
                events.push(ev("content_block_delta", json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": p}})));
            }
            events.push(ev("content_block_stop", json!({"type": "content_block_stop", "index": 0})));
            events.push(ev("message_delta", json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null}, "usage": {"output_tokens": out_tokens}})));
            events.push(ev("message_stop", json!({"type": "message_stop"})));
            sse(events, o)
        }
        _ => json_response(
            404,
            &json!({"error": {"message": format!("no route {path}"), "type": "invalid_request_error"}}),
        ),
    })
}

/// Streams `events`, one frame each, with the configured delay; breaks the connection after
/// `fail_mid_stream` events, or goes quiet (holding it open) after `stall_after`.
fn sse(events: Vec<String>, o: &Opts) -> Response<Body> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(16);
    let delay = o.chunk_delay;
    let fail_at = o.fail_mid_stream;
    let stall_at = o.stall_after;
    let hold = o.hold_after_done;
    let pad = o.body_bytes;
    tokio::spawn(async move {
        for (i, e) in events.into_iter().enumerate() {
            if fail_at == Some(i as u64) {
                let _ = tx.send(Err(std::io::Error::other("simulated mid-stream failure"))).await;
                return;
            }
            if stall_at == Some(i as u64) {
                // `tx` lives on: the stream is open and silent.
                tokio::time::sleep(Duration::from_secs(600)).await;
                return;
            }
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            let e = if pad > 0 && i == 0 { format!(": {}\n{e}", "x".repeat(pad)) } else { e };
            if tx.send(Ok(Frame::data(Bytes::from(e)))).await.is_err() {
                return;
            }
        }
        // `tx` lives on: the body stays open after the last event.
        tokio::time::sleep(hold).await;
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) });
    let mut r = Response::new(BoxBody::new(StreamBody::new(stream)));
    r.headers_mut().insert("content-type", hyper::header::HeaderValue::from_static("text/event-stream"));
    r.headers_mut().insert("cache-control", hyper::header::HeaderValue::from_static("no-cache"));
    r
}
