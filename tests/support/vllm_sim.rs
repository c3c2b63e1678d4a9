//! vllm-sim: a vLLM-like model server for inference-routing tests and benchmarks. A fixture and a
//! workload target, never the product.
//!
//! It answers the OpenAI chat/completions API (plain and streaming, with usage) and exports
//! vLLM's metric names, behind a queueing model: at most `--max-batch` sequences run at once;
//! each scheduler step takes `decode_base + decode_per_seq * batch`, plus prefill time for
//! newly admitted sequences proportional to their prompt tokens not found in the prefix cache
//! (an LRU of 16-token blocks, chained hashes); KV-cache capacity is finite and admission waits
//! for room. `--speed` scales every time (2.0 is a server twice as slow). Prompt tokens are
//! whitespace-separated words.
//!
//! vllm-sim ADDR [--max-batch 8] [--kv-blocks 2048] [--cache-blocks 4096] [--prefill-us 100]
//!               [--decode-base-us 4000] [--decode-per-seq-us 400] [--speed 1.0] [--tokens 16]
//! GET /metrics, GET /sim/stats, POST /sim/reset (clears the prefix cache and the counters).
use std::{
    collections::{HashMap, VecDeque},
    convert::Infallible,
    hash::{DefaultHasher, Hash, Hasher},
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::{Request, Response, body::Frame, service::service_fn};
use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc};

type Body = BoxBody<Bytes, std::io::Error>;
const BLOCK: usize = 16;

#[derive(Clone, Copy)]
struct Params {
    max_batch: usize,
    kv_blocks: usize,
    cache_blocks: usize,
    prefill_us: f64,
    decode_base_us: f64,
    decode_per_seq_us: f64,
    speed: f64,
    tokens: u64,
}

enum Event {
    Token,
    Done { prompt: u64, completion: u64, cached: u64 },
}

struct Seq {
    blocks: Vec<u64>,
    prompt: u64,
    max_out: u64,
    out: u64,
    cached: u64,
    kv: usize,
    tx: mpsc::UnboundedSender<Event>,
}

#[derive(Default)]
struct Sched {
    waiting: VecDeque<Seq>,
    running: Vec<Seq>,
    kv_used: usize,
    /// Prefix cache: block hash -> last use (a logical clock), LRU-evicted past capacity.
    cache: HashMap<u64, u64>,
    clock: u64,
    served: u64,
    prompt_tokens: u64,
    cached_tokens: u64,
}

struct Sim {
    p: Params,
    s: Mutex<Sched>,
    wake: Notify,
}

fn blocks_of(words: &[&str]) -> Vec<u64> {
    let mut prev = 0u64;
    words
        .chunks_exact(BLOCK)
        .map(|c| {
            let mut h = DefaultHasher::new();
            prev.hash(&mut h);
            c.hash(&mut h);
            prev = h.finish();
            prev
        })
        .collect()
}

impl Sim {
    fn lock(&self) -> std::sync::MutexGuard<'_, Sched> {
        self.s.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The scheduler: admit, run one step, emit a token to every running sequence.
    async fn run(self: Arc<Self>) {
        loop {
            let (step, idle) = {
                let mut s = self.lock();
                let mut prefill_tokens = 0u64;
                while s.running.len() < self.p.max_batch {
                    let Some(front) = s.waiting.front() else { break };
                    let need = (front.prompt as usize + front.max_out as usize).div_ceil(BLOCK);
                    if s.kv_used + need > self.p.kv_blocks && !s.running.is_empty() {
                        break;
                    }
                    let Some(mut seq) = s.waiting.pop_front() else { break };
                    s.clock += 1;
                    let clock = s.clock;
                    let mut hit = 0;
                    for b in &seq.blocks {
                        match s.cache.get_mut(b) {
                            Some(t) => {
                                *t = clock;
                                hit += 1;
                            }
                            None => break,
                        }
                    }
                    seq.cached = (hit * BLOCK) as u64;
                    seq.kv = need;
                    s.kv_used += need;
                    prefill_tokens += seq.prompt.saturating_sub(seq.cached);
                    s.running.push(seq);
                }
                let n = s.running.len();
                let us = self.p.decode_base_us
                    + self.p.decode_per_seq_us * n as f64
                    + self.p.prefill_us * prefill_tokens as f64;
                (Duration::from_secs_f64(us * self.p.speed / 1e6), n == 0)
            };
            if idle {
                self.wake.notified().await;
                continue;
            }
            tokio::time::sleep(step).await;
            let mut s = self.lock();
            let mut i = 0;
            while i < s.running.len() {
                let seq = &mut s.running[i];
                seq.out += 1;
                let _ = seq.tx.send(Event::Token);
                if seq.out >= seq.max_out {
                    let seq = s.running.swap_remove(i);
                    let _ = seq.tx.send(Event::Done {
                        prompt: seq.prompt,
                        completion: seq.out,
                        cached: seq.cached,
                    });
                    s.kv_used -= seq.kv;
                    s.served += 1;
                    s.prompt_tokens += seq.prompt;
                    s.cached_tokens += seq.cached;
                    s.clock += 1;
                    let clock = s.clock;
                    for b in seq.blocks {
                        s.cache.insert(b, clock);
                    }
                    if s.cache.len() > self.p.cache_blocks {
                        let mut ages: Vec<(u64, u64)> = s.cache.iter().map(|(k, v)| (*v, *k)).collect();
                        ages.sort_unstable();
                        let excess = s.cache.len() - self.p.cache_blocks;
                        for (_, k) in ages.into_iter().take(excess) {
                            s.cache.remove(&k);
                        }
                    }
                } else {
                    i += 1;
                }
            }
        }
    }

    fn metrics(&self) -> String {
        let s = self.lock();
        let m = "model_name=\"sim\"";
        format!(
            "# TYPE vllm:num_requests_waiting gauge\nvllm:num_requests_waiting{{{m}}} {}\n# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running{{{m}}} {}\n# TYPE vllm:kv_cache_usage_perc gauge\nvllm:kv_cache_usage_perc{{{m}}} {}\n# TYPE vllm:prefix_cache_hits counter\nvllm:prefix_cache_hits_total{{{m}}} {}\nvllm:prompt_tokens_total{{{m}}} {}\n",
            s.waiting.len(),
            s.running.len(),
            s.kv_used as f64 / self.p.kv_blocks as f64,
            s.cached_tokens,
            s.prompt_tokens
        )
    }
}

fn json_response(v: &Value) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(v.to_string())).map_err(|n| match n {}).boxed());
    r.headers_mut().insert("content-type", hyper::header::HeaderValue::from_static("application/json"));
    r
}

async fn handle(sim: Arc<Sim>, req: Request<hyper::body::Incoming>) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_string();
    match path.as_str() {
        "/metrics" => {
            return Ok(Response::new(Full::new(Bytes::from(sim.metrics())).map_err(|n| match n {}).boxed()));
        }
        "/health" => return Ok(json_response(&json!({"status": "ok"}))),
        "/sim/stats" => {
            let s = sim.lock();
            return Ok(json_response(
                &json!({"served": s.served, "prompt_tokens": s.prompt_tokens, "cached_tokens": s.cached_tokens, "waiting": s.waiting.len(), "running": s.running.len()}),
            ));
        }
        "/sim/reset" => {
            let mut s = sim.lock();
            s.cache.clear();
            s.served = 0;
            s.prompt_tokens = 0;
            s.cached_tokens = 0;
            return Ok(json_response(&json!({"reset": true})));
        }
        _ => {}
    }
    let bytes = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let mut text = String::new();
    for m in body.get("messages").and_then(Value::as_array).into_iter().flatten() {
        if let Some(c) = m.get("content").and_then(Value::as_str) {
            text.push_str(c);
            text.push(' ');
        }
    }
    let words: Vec<&str> = text.split_whitespace().collect();
    let max_out = body.get("max_tokens").and_then(Value::as_u64).unwrap_or(sim.p.tokens).max(1);
    let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let include_usage = body
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let model = body.get("model").and_then(Value::as_str).unwrap_or("sim").to_string();
    let (tx, mut rx) = mpsc::unbounded_channel();
    sim.lock().waiting.push_back(Seq {
        blocks: blocks_of(&words),
        prompt: words.len() as u64,
        max_out,
        out: 0,
        cached: 0,
        kv: 0,
        tx,
    });
    sim.wake.notify_one();
    if !stream {
        let mut n = 0;
        let mut usage = (0, 0, 0);
        while let Some(ev) = rx.recv().await {
            match ev {
                Event::Token => n += 1,
                Event::Done { prompt, completion, cached } => {
                    usage = (prompt, completion, cached);
                    break;
                }
            }
        }
        let content: String = (0..n).map(|i| format!("t{i} ")).collect();
        return Ok(json_response(&json!({
            "id": "vllm-sim", "object": "chat.completion", "created": 1, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "length"}],
            "usage": {"prompt_tokens": usage.0, "completion_tokens": usage.1, "total_tokens": usage.0 + usage.1, "prompt_tokens_details": {"cached_tokens": usage.2}}
        })));
    }
    let (ftx, frx) = mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(64);
    tokio::spawn(async move {
        let mut i = 0;
        let chunk = |delta: Value, finish: Value| {
            format!(
                "data: {}\n\n",
                json!({"id": "vllm-sim", "object": "chat.completion.chunk", "created": 1, "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
            )
        };
        while let Some(ev) = rx.recv().await {
            let frame = match ev {
                Event::Token => {
                    i += 1;
                    chunk(json!({"content": format!("t{i} ")}), Value::Null)
                }
                Event::Done { prompt, completion, cached } => {
                    let mut out = chunk(json!({}), json!("length"));
                    if include_usage {
                        out.push_str(&format!("data: {}\n\n", json!({"id": "vllm-sim", "object": "chat.completion.chunk", "created": 1, "model": "sim", "choices": [],
                            "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion, "prompt_tokens_details": {"cached_tokens": cached}}})));
                    }
                    out.push_str("data: [DONE]\n\n");
                    let _ = ftx.send(Ok(Frame::data(Bytes::from(out)))).await;
                    return;
                }
            };
            if ftx.send(Ok(Frame::data(Bytes::from(frame)))).await.is_err() {
                return;
            }
        }
    });
    let stream = futures_util::stream::unfold(frx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) });
    let mut r = Response::new(BoxBody::new(StreamBody::new(stream)));
    r.headers_mut().insert("content-type", hyper::header::HeaderValue::from_static("text/event-stream"));
    Ok(r)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let Some(addr) = args.get(1).and_then(|a| a.parse::<SocketAddr>().ok()) else {
        eprintln!("usage: vllm-sim ADDR [options]");
        std::process::exit(2);
    };
    let mut p = Params {
        max_batch: 8,
        kv_blocks: 2048,
        cache_blocks: 4096,
        prefill_us: 100.0,
        decode_base_us: 4000.0,
        decode_per_seq_us: 400.0,
        speed: 1.0,
        tokens: 16,
    };
    let mut i = 2;
    while i + 1 < args.len() {
        let v: f64 = args[i + 1].parse().unwrap_or(0.0);
        match args[i].as_str() {
            "--max-batch" => p.max_batch = v as usize,
            "--kv-blocks" => p.kv_blocks = v as usize,
            "--cache-blocks" => p.cache_blocks = v as usize,
            "--prefill-us" => p.prefill_us = v,
            "--decode-base-us" => p.decode_base_us = v,
            "--decode-per-seq-us" => p.decode_per_seq_us = v,
            "--speed" => p.speed = v,
            "--tokens" => p.tokens = v as u64,
            other => {
                eprintln!("vllm-sim: unknown option {other}");
                std::process::exit(2);
            }
        }
        i += 2;
    }
    let sim = Arc::new(Sim { p, s: Mutex::new(Sched::default()), wake: Notify::new() });
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap_or_else(
            |e| {
                eprintln!("vllm-sim: {e}");
                std::process::exit(1)
            },
        );
    rt.block_on(async move {
        tokio::spawn(sim.clone().run());
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap_or_else(|e| {
            eprintln!("vllm-sim: bind {addr}: {e}");
            std::process::exit(1)
        });
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let _ = stream.set_nodelay(true);
            let sim = sim.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| handle(sim.clone(), req));
                let _ = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
}
