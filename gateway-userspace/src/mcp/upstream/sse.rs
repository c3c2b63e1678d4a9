//! The 2024-11-05 HTTP+SSE transport: a GET opens an event stream whose first `endpoint`
//! event names the URL to POST messages to; every answer arrives on the stream. Reconnected
//! (with backoff) whenever the stream ends.
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Uri, header};
use http_body_util::{BodyExt, Full};
use serde_json::Value;
use tokio::sync::{mpsc, watch};

use super::channel::{Channel, handshake};
use crate::{config, llm::sse::Splitter, proxy::upstream::Upstream};

pub fn supervise(cfg: config::McpServer, up: Upstream, ch: Arc<Channel>, stop: watch::Receiver<bool>) {
    let name = cfg.name.clone();
    let chan = ch.clone();
    super::channel::supervise(name, "SSE stream", ch, stop, move || {
        let (cfg, up, ch) = (cfg.clone(), up.clone(), chan.clone());
        async move { run_once(&cfg, &up, &ch).await }
    });
}

fn with_headers(mut b: http::request::Builder, cfg: &config::McpServer) -> http::request::Builder {
    for (k, v) in &cfg.headers {
        b = b.header(k.as_str(), v.expose());
    }
    b
}

async fn run_once(cfg: &config::McpServer, up: &Upstream, ch: &Arc<Channel>) -> String {
    let Some(url) = cfg.url.as_deref().and_then(|u| u.parse::<Uri>().ok()) else {
        return "no url".into();
    };
    let req = with_headers(Request::get(url.clone()).header(header::ACCEPT, "text/event-stream"), cfg)
        .body(http_body_util::Empty::new().map_err(|never| match never {}).boxed());
    let req = match req {
        Ok(r) => r,
        Err(e) => return format!("bad request: {e}"),
    };
    let resp = match tokio::time::timeout(cfg.timeout, up.llm.request(req)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return format!("GET {url}: {e}"),
        Err(_) => return format!("GET {url}: no answer within {:?}", cfg.timeout),
    };
    if !resp.status().is_success() {
        return format!("GET {url}: HTTP {}", resp.status());
    }
    let mut body = resp.into_body();
    let mut split = Splitter::default();
    let (tx, mut rx) = mpsc::channel::<Value>(256);
    let (endpoint_tx, endpoint_rx) = tokio::sync::oneshot::channel::<Uri>();
    let reply = tx.clone();
    let reader = async {
        let mut endpoint_tx = Some(endpoint_tx);
        loop {
            let frame = match body.frame().await {
                Some(Ok(f)) => f,
                Some(Err(e)) => return format!("stream: {e}"),
                None => return "stream closed".to_string(),
            };
            let Some(data) = frame.data_ref() else { continue };
            for ev in split.push(data) {
                match ev.name.as_deref() {
                    Some("endpoint") => {
                        let Some(t) = endpoint_tx.take() else { continue };
                        match resolve(&url, ev.data.trim()) {
                            Some(u) => {
                                let _ = t.send(u);
                            }
                            None => return format!("bad endpoint event {:?}", ev.data),
                        }
                    }
                    None | Some("message") => match serde_json::from_str::<Value>(&ev.data) {
                        Ok(v) => {
                            if let Some(answer) = ch.dispatch(v) {
                                let _ = reply.send(answer).await;
                            }
                        }
                        Err(e) => tracing::debug!(server = %cfg.name, error = %e, "event data is not JSON"),
                    },
                    Some(_) => {}
                }
            }
        }
    };
    let writer = async {
        let endpoint = match tokio::time::timeout(cfg.timeout, endpoint_rx).await {
            Ok(Ok(u)) => u,
            _ => return "no endpoint event".to_string(),
        };
        while let Some(m) = rx.recv().await {
            let body = Full::new(Bytes::from(serde_json::to_vec(&m).unwrap_or_default()))
                .map_err(|never| match never {})
                .boxed();
            let req = with_headers(
                Request::post(endpoint.clone()).header(header::CONTENT_TYPE, "application/json"),
                cfg,
            )
            .body(body);
            let Ok(req) = req else { return "bad POST".to_string() };
            match up.llm.request(req).await {
                Ok(r) if r.status().is_success() => {
                    // The answer is an `Accepted`; what matters comes on the stream. Bounded.
                    let _ = http_body_util::Limited::new(r.into_body(), 64 << 10).collect().await;
                }
                Ok(r) => return format!("POST {endpoint}: HTTP {}", r.status()),
                Err(e) => return format!("POST {endpoint}: {e}"),
            }
        }
        "writer closed".to_string()
    };
    let ready = async {
        match handshake(ch, &tx, cfg.timeout).await {
            Ok(_) => {
                ch.attach(tx.clone());
                tracing::info!(server = %cfg.name, "MCP SSE server ready");
                std::future::pending::<String>().await
            }
            Err(e) => format!("initialize: {e}"),
        }
    };
    tokio::select! {
        r = reader => r,
        r = writer => r,
        r = ready => r,
    }
}

/// The endpoint event's URL, relative to the SSE URL.
fn resolve(base: &Uri, endpoint: &str) -> Option<Uri> {
    if endpoint.starts_with("http://") || endpoint.starts_with("https://") {
        return endpoint.parse().ok();
    }
    let path = if endpoint.starts_with('/') {
        endpoint.to_string()
    } else {
        let dir = base.path().rsplit_once('/').map_or("", |(d, _)| d);
        format!("{dir}/{endpoint}")
    };
    Uri::builder()
        .scheme(base.scheme_str().unwrap_or("http"))
        .authority(base.authority()?.as_str())
        .path_and_query(path)
        .build()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_urls_resolve_against_the_stream_url() {
        let base: Uri = "http://127.0.0.1:3001/sse".parse().unwrap();
        assert_eq!(
            resolve(&base, "/message?sessionId=1").unwrap().to_string(),
            "http://127.0.0.1:3001/message?sessionId=1"
        );
        assert_eq!(resolve(&base, "messages?x=1").unwrap().to_string(), "http://127.0.0.1:3001/messages?x=1");
    }
}
