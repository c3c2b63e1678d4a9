//! Streamable HTTP servers, either era. `auto` probes `server/discover` (2026-07-28: every
//! request is independent and carries `_meta`) and falls back to the `initialize` handshake
//! (2025-11-25: one session, `Mcp-Session-Id` on every request, server messages on a GET
//! stream). A session the server has forgotten (404) is re-established once, transparently.
use std::sync::Mutex;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full};
use serde_json::{Map, Value, json};
use tokio::sync::{broadcast, mpsc};

use super::{HANDSHAKE_VERSION, MODERN_VERSION, UpstreamError, client_capabilities, client_info};
use crate::{
    config::{self, McpProtocol},
    llm::sse::Splitter,
    mcp::jsonrpc,
    proxy::upstream::{Body, Upstream},
};

/// Largest JSON answer read from a server (a tool result, a list page); larger fails the call.
pub const MAX_ANSWER: usize = 16 << 20;

const SESSION: &str = "mcp-session-id";
const VERSION: &str = "mcp-protocol-version";

#[derive(Debug, Clone, PartialEq)]
enum Era {
    Modern,
    Handshake { session: Option<String> },
}

pub struct Http {
    name: String,
    url: Uri,
    headers: Vec<(HeaderName, HeaderValue)>,
    protocol: McpProtocol,
    client: Upstream,
    era: Mutex<Option<Era>>,
    establishing: tokio::sync::Mutex<()>,
    /// Ends the GET stream of the current session when it is replaced.
    stream_stop: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
}

/// A message an HTTP POST answered with: the response, and what came before it on an SSE
/// answer.
enum Answer {
    Response(Value),
    Accepted,
}

impl Http {
    pub fn new(cfg: &config::McpServer, client: Upstream) -> Self {
        let headers = cfg
            .headers
            .iter()
            .filter_map(|(k, v)| {
                Some((HeaderName::try_from(k.as_str()).ok()?, HeaderValue::try_from(v.expose()).ok()?))
            })
            .collect();
        Self {
            name: cfg.name.clone(),
            url: cfg.url.as_deref().and_then(|u| u.parse().ok()).unwrap_or_default(),
            headers,
            protocol: cfg.protocol,
            client,
            era: Mutex::new(None),
            establishing: tokio::sync::Mutex::new(()),
            stream_stop: Mutex::new(None),
        }
    }

    pub fn era(&self) -> Option<&'static str> {
        match &*self.era.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(Era::Modern) => Some(MODERN_VERSION),
            Some(Era::Handshake { .. }) => Some(HANDSHAKE_VERSION),
            None => None,
        }
    }

    fn current(&self) -> Option<Era> {
        self.era.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set(&self, e: Option<Era>) {
        *self.era.lock().unwrap_or_else(|p| p.into_inner()) = e;
    }

    pub async fn call(
        &self,
        id: u64,
        method: &str,
        params: Value,
        events: Option<mpsc::Sender<Value>>,
        unsolicited: &broadcast::Sender<Value>,
    ) -> Result<Value, UpstreamError> {
        for attempt in 0..2 {
            let era = self.establish(unsolicited, attempt > 0).await?;
            let msg = jsonrpc::request(&Value::from(id), method, &shape(&era, &params));
            match self.post(&era, method, &params, msg, events.as_ref(), Some(unsolicited)).await {
                Ok(Answer::Response(r)) => return Ok(r),
                Ok(Answer::Accepted) => {
                    return Err(UpstreamError::Protocol(
                        "a request was answered 202 with no response".into(),
                    ));
                }
                // The server forgot the session (restart, expiry): start a new one, once.
                Err(UpstreamError::Status(404, _))
                    if attempt == 0 && matches!(era, Era::Handshake { .. }) =>
                {
                    tracing::info!(server = %self.name, "MCP session expired at the server; starting a new one");
                    self.set(None);
                }
                Err(e) => {
                    if matches!(e, UpstreamError::Unavailable(_)) {
                        // Connection refused: rediscover the era when it comes back.
                        self.set(None);
                    }
                    return Err(e);
                }
            }
        }
        Err(UpstreamError::Protocol("session could not be re-established".into()))
    }

    /// Sends a notification or a response (no answer expected but 202).
    pub async fn post_only(&self, msg: Value) -> Result<(), UpstreamError> {
        let Some(era) = self.current() else {
            return Err(UpstreamError::Unavailable("no session with the server".into()));
        };
        let method = msg.get("method").and_then(Value::as_str).unwrap_or_default().to_string();
        self.post(&era, &method, &Value::Null, msg, None, None).await.map(|_| ())
    }

    async fn establish(
        &self,
        unsolicited: &broadcast::Sender<Value>,
        force: bool,
    ) -> Result<Era, UpstreamError> {
        if !force && let Some(e) = self.current() {
            return Ok(e);
        }
        let _one = self.establishing.lock().await;
        if !force && let Some(e) = self.current() {
            return Ok(e);
        }
        if self.protocol != McpProtocol::Handshake {
            let probe =
                jsonrpc::request(&Value::from(0), "server/discover", &shape(&Era::Modern, &Value::Null));
            match self
                .post(&Era::Modern, "server/discover", &Value::Null, probe, None, Some(unsolicited))
                .await
            {
                Ok(Answer::Response(r))
                    if r.pointer("/result/supportedVersions")
                        .and_then(Value::as_array)
                        .is_some_and(|v| v.iter().any(|x| x == MODERN_VERSION)) =>
                {
                    // Open the change stream before anyone can use the era (no change is missed).
                    self.open_stream(&Era::Modern, unsolicited.clone()).await;
                    self.set(Some(Era::Modern));
                    tracing::info!(server = %self.name, version = MODERN_VERSION, "MCP server speaks the stateless era");
                    return Ok(Era::Modern);
                }
                Err(e @ (UpstreamError::Unavailable(_) | UpstreamError::Timeout(_))) => return Err(e),
                _ if self.protocol == McpProtocol::Stateless => {
                    return Err(UpstreamError::Protocol(format!(
                        "server/discover did not offer {MODERN_VERSION}"
                    )));
                }
                _ => {}
            }
        }
        let init = jsonrpc::request(
            &Value::from(0),
            "initialize",
            &json!({
                "protocolVersion": HANDSHAKE_VERSION,
                "capabilities": client_capabilities(),
                "clientInfo": client_info(),
            }),
        );
        let (resp, session) = self.initialize(init).await?;
        if let Some(e) = resp.get("error") {
            return Err(UpstreamError::Protocol(format!("initialize refused: {e}")));
        }
        let era = Era::Handshake { session };
        let done = jsonrpc::notification("notifications/initialized", &Value::Null);
        self.post(&era, "notifications/initialized", &Value::Null, done, None, None).await?;
        self.open_stream(&era, unsolicited.clone()).await;
        self.set(Some(era.clone()));
        tracing::info!(server = %self.name, version = HANDSHAKE_VERSION, "MCP session established");
        Ok(era)
    }

    /// initialize is the one POST whose answer carries the session id in a header.
    async fn initialize(&self, msg: Value) -> Result<(Value, Option<String>), UpstreamError> {
        let req = self.request(&Era::Handshake { session: None }, "initialize", &Value::Null, &msg)?;
        let resp = self.send(req).await?;
        let session = resp.headers().get(SESSION).and_then(|v| v.to_str().ok()).map(str::to_string);
        match self.read_answer(resp, None, None).await? {
            Answer::Response(r) => Ok((r, session)),
            Answer::Accepted => Err(UpstreamError::Protocol("initialize answered 202".into())),
        }
    }

    fn request(
        &self,
        era: &Era,
        method: &str,
        params: &Value,
        msg: &Value,
    ) -> Result<Request<Body>, UpstreamError> {
        let mut b = Request::post(self.url.clone())
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::ACCEPT, "application/json, text/event-stream");
        match era {
            Era::Modern => {
                b = b.header(VERSION, MODERN_VERSION).header("mcp-method", method);
                let name = match method {
                    "tools/call" | "prompts/get" => params.get("name"),
                    "resources/read" => params.get("uri"),
                    _ => None,
                };
                if let Some(n) = name.and_then(Value::as_str).and_then(|n| HeaderValue::try_from(n).ok()) {
                    b = b.header("mcp-name", n);
                }
            }
            Era::Handshake { session } => {
                if method != "initialize" {
                    b = b.header(VERSION, HANDSHAKE_VERSION);
                }
                if let Some(s) = session {
                    b = b.header(SESSION, s.as_str());
                }
            }
        }
        for (k, v) in &self.headers {
            b = b.header(k, v);
        }
        let body = Full::new(Bytes::from(serde_json::to_vec(msg).unwrap_or_default()))
            .map_err(|never| match never {})
            .boxed();
        b.body(body).map_err(|e| UpstreamError::Protocol(format!("request: {e}")))
    }

    async fn send(&self, req: Request<Body>) -> Result<http::Response<hyper::body::Incoming>, UpstreamError> {
        self.client.llm.request(req).await.map_err(|e| {
            let msg = match std::error::Error::source(&e) {
                Some(s) => format!("{e}: {s}"),
                None => e.to_string(),
            };
            UpstreamError::Unavailable(msg)
        })
    }

    async fn post(
        &self,
        era: &Era,
        method: &str,
        params: &Value,
        msg: Value,
        events: Option<&mpsc::Sender<Value>>,
        unsolicited: Option<&broadcast::Sender<Value>>,
    ) -> Result<Answer, UpstreamError> {
        let req = self.request(era, method, params, &msg)?;
        let resp = self.send(req).await?;
        self.read_answer(resp, events, unsolicited).await
    }

    async fn read_answer(
        &self,
        resp: http::Response<hyper::body::Incoming>,
        events: Option<&mpsc::Sender<Value>>,
        unsolicited: Option<&broadcast::Sender<Value>>,
    ) -> Result<Answer, UpstreamError> {
        let status = resp.status();
        let sse = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        if status == StatusCode::ACCEPTED {
            return Ok(Answer::Accepted);
        }
        let mut body = resp.into_body();
        if sse && status.is_success() {
            let mut split = Splitter::default();
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| UpstreamError::Unavailable(format!("stream: {e}")))?;
                let Some(data) = frame.data_ref() else { continue };
                for ev in split.push(data) {
                    if ev.data.is_empty() {
                        continue;
                    }
                    let Ok(v) = serde_json::from_str::<Value>(&ev.data) else {
                        return Err(UpstreamError::Protocol(format!("event is not JSON: {:.100}", ev.data)));
                    };
                    let is_response = v.get("method").is_none() && v.get("id").is_some();
                    if is_response {
                        return Ok(Answer::Response(v));
                    }
                    // Progress and server requests belong to this call; other messages too, when
                    // the call can take them (logging for this request), else to everyone.
                    match (events, unsolicited) {
                        (Some(s), _) => {
                            let _ = s.send(v).await;
                        }
                        (None, Some(u)) => {
                            let _ = u.send(v);
                        }
                        (None, None) => {}
                    }
                }
            }
            return Err(UpstreamError::Protocol("event stream ended without a response".into()));
        }
        let bytes = http_body_util::Limited::new(body, MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| UpstreamError::Unavailable(format!("body (read up to {MAX_ANSWER} bytes): {e}")))?
            .to_bytes();
        match serde_json::from_slice::<Value>(&bytes) {
            // A JSON-RPC error with an HTTP error status is still an answer (e.g. -32022).
            Ok(v) if v.get("error").is_some() && v.get("id").is_some_and(|i| !i.is_null()) => {
                Ok(Answer::Response(v))
            }
            Ok(v) if status.is_success() && (v.get("result").is_some() || v.get("error").is_some()) => {
                Ok(Answer::Response(v))
            }
            _ if !status.is_success() => Err(UpstreamError::Status(
                status.as_u16(),
                String::from_utf8_lossy(&bytes).chars().take(200).collect(),
            )),
            _ => Err(UpstreamError::Protocol(format!("{:.100}", String::from_utf8_lossy(&bytes)))),
        }
    }

    /// Where the server's unsolicited messages (list_changed, ...) come from: the handshake
    /// era's GET stream, or a 2026-07-28 `subscriptions/listen` request.
    /// Returns when the stream is open (GET answered; listen acknowledged), so that no change
    /// announced after the era is established can be missed; or after 2 s, or at once when
    /// the server offers no stream.
    async fn open_stream(&self, era: &Era, unsolicited: broadcast::Sender<Value>) {
        let req = match era {
            Era::Handshake { session: Some(session) } => {
                let mut b = Request::get(self.url.clone())
                    .header(header::ACCEPT, "text/event-stream")
                    .header(SESSION, session.as_str())
                    .header(VERSION, HANDSHAKE_VERSION);
                for (k, v) in &self.headers {
                    b = b.header(k, v);
                }
                b.body(http_body_util::Empty::new().map_err(|never| match never {}).boxed()).ok()
            }
            Era::Handshake { session: None } => None,
            Era::Modern => {
                let params = json!({"notifications": {
                    "toolsListChanged": true, "promptsListChanged": true, "resourcesListChanged": true,
                }});
                let msg = jsonrpc::request(
                    &Value::from("nodegate-listen"),
                    "subscriptions/listen",
                    &shape(era, &params),
                );
                self.request(era, "subscriptions/listen", &params, &msg).ok()
            }
        };
        let Some(req) = req else { return };
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        if let Some(old) = self.stream_stop.lock().unwrap_or_else(|p| p.into_inner()).replace(stop) {
            let _ = old.send(());
        }
        let client = self.client.clone();
        let name = self.name.clone();
        let (ready_tx, ready) = tokio::sync::oneshot::channel::<()>();
        let listen = *era == Era::Modern;
        tokio::spawn(async move {
            let mut ready_tx = Some(ready_tx);
            let run = async {
                let resp = client.llm.request(req).await.ok()?;
                if !resp.status().is_success() {
                    return None;
                }
                if !listen && let Some(r) = ready_tx.take() {
                    let _ = r.send(());
                }
                let mut body = resp.into_body();
                let mut split = Splitter::default();
                while let Some(Ok(frame)) = body.frame().await {
                    let Some(data) = frame.data_ref() else { continue };
                    for ev in split.push(data) {
                        let Ok(v) = serde_json::from_str::<Value>(&ev.data) else { continue };
                        match v.get("method").and_then(Value::as_str) {
                            Some("notifications/subscriptions/acknowledged") => {
                                if let Some(r) = ready_tx.take() {
                                    let _ = r.send(());
                                }
                            }
                            Some(_) => {
                                let _ = unsolicited.send(v);
                            }
                            None => {}
                        }
                    }
                }
                Some(())
            };
            tokio::select! {
                _ = run => tracing::debug!(server = %name, "MCP server stream ended"),
                _ = &mut stopped => {}
            }
        });
        // Err: the task ended first (no stream offered); elapsed: carry on without waiting.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), ready).await;
    }
}

/// Params as the era wants them: 2026-07-28 carries the protocol version, client info and
/// capabilities in `_meta` on every request; the handshake era must not see those keys.
fn shape(era: &Era, params: &Value) -> Value {
    let mut p = match params {
        Value::Object(m) => m.clone(),
        _ => Map::new(),
    };
    let mut meta = match p.remove("_meta") {
        Some(Value::Object(m)) => m,
        _ => Map::new(),
    };
    meta.retain(|k, _| !k.starts_with("io.modelcontextprotocol/"));
    if *era == Era::Modern {
        meta.insert("io.modelcontextprotocol/protocolVersion".into(), MODERN_VERSION.into());
        meta.insert("io.modelcontextprotocol/clientInfo".into(), client_info());
        meta.insert("io.modelcontextprotocol/clientCapabilities".into(), client_capabilities());
    }
    if !meta.is_empty() {
        p.insert("_meta".into(), Value::Object(meta));
    }
    if p.is_empty() && *era != Era::Modern { Value::Null } else { Value::Object(p) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_era_gets_its_own_meta() {
        let p = json!({"name": "x", "_meta": {"progressToken": 5, "io.modelcontextprotocol/protocolVersion": "2026-07-28"}});
        let legacy = shape(&Era::Handshake { session: None }, &p);
        assert_eq!(legacy, json!({"name": "x", "_meta": {"progressToken": 5}}));
        let modern = shape(&Era::Modern, &json!({"name": "x"}));
        assert_eq!(modern["_meta"]["io.modelcontextprotocol/protocolVersion"], MODERN_VERSION);
        assert_eq!(shape(&Era::Handshake { session: None }, &Value::Null), Value::Null);
    }
}
