//! Requests multiplexed over one message stream (stdio, legacy SSE): ids -> waiting calls,
//! progress tokens -> the call that asked for progress, server requests -> the call they
//! belong to, everything else -> the unsolicited broadcast.
//!
//! A transport attaches a `Link` (where to write) once its handshake is done and detaches it
//! when the stream ends; calls made while detached fail at once (the server is down). Calls
//! made before the first attach or failure (the server is still starting) wait for it, up to
//! [`STARTUP_WAIT`]: a list asked for right after start-up includes the server, and a server
//! that hangs at start does not cost every list its whole timeout.
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use super::{Health, UpstreamError};
use crate::mcp::jsonrpc::{self, Message};

struct Waiting {
    done: oneshot::Sender<Value>,
    events: Option<mpsc::Sender<Value>>,
    progress: Option<Value>,
}

#[derive(Default)]
struct State {
    link: Option<mpsc::Sender<Value>>,
    down_reason: Option<String>,
    waiting: HashMap<u64, Waiting>,
}

/// Longest a call waits for a server still in its first start before it is told the server is
/// unavailable.
pub const STARTUP_WAIT: Duration = Duration::from_secs(5);

/// Where a server is in its first start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Startup {
    Starting,
    Started,
    Failed(String),
}

pub struct Channel {
    name: Arc<str>,
    state: Mutex<State>,
    unsolicited: broadcast::Sender<Value>,
    health: Arc<Health>,
    /// `Starting` until the first attach or detach; then how that went.
    startup: watch::Sender<Startup>,
}

impl Channel {
    pub fn new(name: Arc<str>, unsolicited: broadcast::Sender<Value>, health: Arc<Health>) -> Arc<Self> {
        let (startup, _) = watch::channel(Startup::Starting);
        Arc::new(Self { name, state: Mutex::new(State::default()), unsolicited, health, startup })
    }

    /// How the server's first start went (or that it is still starting).
    pub fn startup(&self) -> Startup {
        self.startup.borrow().clone()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The transport is ready: messages go to `writer`.
    pub fn attach(&self, writer: mpsc::Sender<Value>) {
        let mut s = self.state();
        s.link = Some(writer);
        s.down_reason = None;
        self.health.ok();
        drop(s);
        self.startup.send_if_modified(|st| {
            let first = *st == Startup::Starting;
            if first {
                *st = Startup::Started;
            }
            first
        });
    }

    /// The stream ended: every waiting call fails, new calls fail until the next attach.
    pub fn detach(&self, reason: String) {
        let waiting = {
            let mut s = self.state();
            s.link = None;
            s.down_reason = Some(reason.clone());
            std::mem::take(&mut s.waiting)
        };
        self.health.failed(&UpstreamError::Unavailable(reason.clone()));
        self.startup.send_if_modified(|st| {
            let first = *st == Startup::Starting;
            if first {
                *st = Startup::Failed(reason.clone());
            }
            first
        });
        for (id, w) in waiting {
            let _ = w.done.send(jsonrpc::error(
                &Value::from(id),
                jsonrpc::UPSTREAM_ERROR,
                &format!("MCP server {} went away: {reason}", self.name),
                None,
            ));
        }
    }

    pub async fn send(&self, msg: Value) -> Result<(), UpstreamError> {
        let mut first_start = self.startup.subscribe();
        let link = loop {
            {
                let s = self.state();
                if let Some(l) = s.link.clone() {
                    break l;
                }
                if *first_start.borrow_and_update() != Startup::Starting {
                    return Err(UpstreamError::Unavailable(
                        s.down_reason.clone().unwrap_or_else(|| "not connected".into()),
                    ));
                }
            }
            // Still starting: wait for its first attach or failure, for a while.
            match tokio::time::timeout(STARTUP_WAIT, first_start.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(UpstreamError::Unavailable("stopped".into())),
                Err(_) => {
                    return Err(UpstreamError::Unavailable(format!("still starting after {STARTUP_WAIT:?}")));
                }
            }
        };
        link.send(msg).await.map_err(|_| UpstreamError::Unavailable("stream closed".into()))
    }

    pub async fn call(
        &self,
        id: u64,
        method: &str,
        params: Value,
        events: Option<mpsc::Sender<Value>>,
    ) -> Result<Value, UpstreamError> {
        let (done, rx) = oneshot::channel();
        let progress = params.pointer("/_meta/progressToken").cloned();
        self.state().waiting.insert(id, Waiting { done, events, progress });
        let guard = Forget { ch: self, id };
        self.send(jsonrpc::request(&Value::from(id), method, &params)).await?;
        let r = rx.await.map_err(|_| UpstreamError::Unavailable("stream closed".into()));
        drop(guard);
        r
    }

    /// Hands the handshake's own request to the stream before a link is attached.
    pub fn await_response(&self, id: u64) -> oneshot::Receiver<Value> {
        let (done, rx) = oneshot::channel();
        self.state().waiting.insert(id, Waiting { done, events: None, progress: None });
        rx
    }

    /// Routes one message read from the stream; returns a reply to write back, if any.
    pub fn dispatch(&self, msg: Value) -> Option<Value> {
        let parsed = match Message::from_value(msg.clone()) {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(server = %self.name, error = %e, "ignoring a malformed message");
                return None;
            }
        };
        match parsed {
            Message::Response { id, body } => {
                let Some(w) = id.as_u64().and_then(|n| self.state().waiting.remove(&n)) else {
                    tracing::debug!(server = %self.name, %id, "response to no waiting request");
                    return None;
                };
                let _ = w.done.send(body);
                None
            }
            Message::Notification { method, params } => {
                let token =
                    (method == "notifications/progress").then(|| params.get("progressToken")).flatten();
                let sink = token.and_then(|t| {
                    self.state()
                        .waiting
                        .values()
                        .find(|w| w.progress.as_ref() == Some(t))
                        .and_then(|w| w.events.clone())
                });
                match sink {
                    Some(s) => {
                        let _ = s.try_send(msg);
                    }
                    None => {
                        let _ = self.unsolicited.send(msg);
                    }
                }
                None
            }
            Message::Request { method, .. } => {
                if method == "ping" {
                    return msg.get("id").map(|id| jsonrpc::result(id, json!({})));
                }
                // A stream does not say which call a server request belongs to: it goes to the
                // only call that can take one; otherwise to the watcher, which answers it.
                let sinks: Vec<_> = self.state().waiting.values().filter_map(|w| w.events.clone()).collect();
                match sinks.as_slice() {
                    [one] if one.try_send(msg.clone()).is_ok() => {}
                    _ => {
                        let _ = self.unsolicited.send(msg);
                    }
                }
                None
            }
        }
    }
}

/// Removes a call's entry when it finishes or is abandoned.
struct Forget<'a> {
    ch: &'a Channel,
    id: u64,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.ch.state().waiting.remove(&self.id);
    }
}

/// The initialize handshake, shared by stdio and SSE: request, wait, then `initialized`.
pub async fn handshake(
    ch: &Channel,
    write: &mpsc::Sender<Value>,
    timeout: std::time::Duration,
) -> Result<Value, UpstreamError> {
    const INIT_ID: u64 = 0;
    let rx = ch.await_response(INIT_ID);
    let params = json!({
        "protocolVersion": super::HANDSHAKE_VERSION,
        "capabilities": super::client_capabilities(),
        "clientInfo": super::client_info(),
    });
    write
        .send(jsonrpc::request(&Value::from(INIT_ID), "initialize", &params))
        .await
        .map_err(|_| UpstreamError::Unavailable("stream closed during initialize".into()))?;
    let resp = tokio::time::timeout(timeout, rx)
        .await
        .map_err(|_| UpstreamError::Timeout(timeout))?
        .map_err(|_| UpstreamError::Unavailable("stream closed during initialize".into()))?;
    if let Some(e) = resp.get("error") {
        return Err(UpstreamError::Protocol(format!("initialize refused: {e}")));
    }
    write
        .send(jsonrpc::notification("notifications/initialized", &Value::Null))
        .await
        .map_err(|_| UpstreamError::Unavailable("stream closed after initialize".into()))?;
    Ok(resp)
}

/// Runs a stream transport forever: `run` connects (or launches), handshakes, attaches and
/// returns why the stream ended; then every waiting call fails, and after a backoff (250 ms
/// doubling to 30 s, reset after 30 s of health) it runs again, until `stop`.
pub fn supervise<F, Fut>(
    name: String,
    what: &'static str,
    ch: Arc<Channel>,
    mut stop: watch::Receiver<bool>,
    mut run: F,
) where
    F: FnMut() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = String> + Send,
{
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(250);
        loop {
            let started = std::time::Instant::now();
            let reason = tokio::select! {
                r = run() => r,
                _ = stop.changed() => return,
            };
            ch.detach(reason.clone());
            tracing::warn!(server = %name, %reason, retry_in = ?backoff, "MCP {what} stopped");
            if started.elapsed() > Duration::from_secs(30) {
                backoff = Duration::from_millis(250);
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = stop.changed() => return,
            }
            backoff = (backoff * 2).min(Duration::from_secs(30));
        }
    });
}
