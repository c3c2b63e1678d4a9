//! nodegate as an MCP client of the servers it federates. One `Server` per configured server,
//! whatever its transport: streamable HTTP in either era (`http`), the 2024-11-05 HTTP+SSE
//! transport (`sse`) or a supervised child process on stdio (`stdio`). The last two carry
//! messages over one long-lived stream, multiplexed by `channel`.
//!
//! A call returns the server's whole JSON-RPC response (result or error). Messages the server
//! sends while a call runs (progress, sampling/elicitation/roots requests) go to the call's
//! `events` sender; unsolicited ones (list_changed, ...) to `subscribe()`rs.
pub mod channel;
mod http;
mod sse;
mod stdio;

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};

use crate::{config, proxy::upstream::Upstream};

/// The handshake-era version nodegate asks servers for.
pub const HANDSHAKE_VERSION: &str = "2025-11-25";
/// The stateless-era version.
pub const MODERN_VERSION: &str = "2026-07-28";

#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot reach the server: {0}")]
    Unavailable(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("the server answered HTTP {0}: {1}")]
    Status(u16, String),
    #[error("the server answered something that is not MCP: {0}")]
    Protocol(String),
}

/// Health as the admin page and metrics show it.
#[derive(Debug, Default)]
pub struct Health {
    up: AtomicBool,
    failures: AtomicU64,
    last_error: Mutex<Option<String>>,
    failed_at: Mutex<Option<std::time::Instant>>,
}

impl Health {
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().ok().and_then(|g| g.clone())
    }

    fn ok(&self) {
        self.up.store(true, Ordering::Relaxed);
    }

    fn failed(&self, e: &UpstreamError) {
        self.up.store(false, Ordering::Relaxed);
        self.failures.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut g) = self.last_error.lock() {
            *g = Some(e.to_string());
        }
        if let Ok(mut g) = self.failed_at.lock() {
            *g = Some(std::time::Instant::now());
        }
    }

    /// The last error, when the server is down and failed less than `within` ago: lists skip
    /// such a server instead of waiting on it again (a hung server would cost every list its
    /// timeout).
    pub fn recently_failed(&self, within: Duration) -> Option<String> {
        if self.is_up() {
            return None;
        }
        let at = (*self.failed_at.lock().ok()?)?;
        (at.elapsed() < within).then(|| self.last_error().unwrap_or_default())
    }
}

enum Kind {
    Http(Box<http::Http>),
    Channel(Arc<channel::Channel>),
}

pub struct Server {
    pub name: Arc<str>,
    pub required: bool,
    pub transport: config::McpTransport,
    /// host:port of an HTTP server, to recognise intercepted traffic to it.
    pub authority: Option<String>,
    /// The path of its URL (no trailing slash), to recognise requests for its endpoint.
    pub path: Option<String>,
    pub health: Arc<Health>,
    timeout: Duration,
    kind: Kind,
    next_id: AtomicU64,
    unsolicited: broadcast::Sender<Value>,
    stop: tokio::sync::watch::Sender<bool>,
}

/// What nodegate says about itself in `initialize` and `_meta`.
pub fn client_info() -> Value {
    json!({"name": "nodegate", "version": env!("CARGO_PKG_VERSION")})
}

/// Capabilities nodegate declares to servers: it relays sampling, elicitation and roots
/// requests to the client that caused them.
pub fn client_capabilities() -> Value {
    json!({"sampling": {}, "elicitation": {}, "roots": {"listChanged": true}})
}

impl Server {
    pub fn build(cfg: &config::McpServer, upstream: &Upstream) -> Arc<Self> {
        let (unsolicited, _) = broadcast::channel(64);
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let health = Arc::new(Health::default());
        let name: Arc<str> = Arc::from(cfg.name.as_str());
        let authority = cfg.url.as_deref().and_then(|u| u.parse::<::http::Uri>().ok()).and_then(|u| {
            let port = u.port_u16().unwrap_or(if u.scheme_str() == Some("https") { 443 } else { 80 });
            Some(format!("{}:{port}", u.host()?))
        });
        let path = cfg
            .url
            .as_deref()
            .and_then(|u| u.parse::<::http::Uri>().ok())
            .map(|u| u.path().trim_end_matches('/').to_string());
        let kind = match cfg.transport {
            config::McpTransport::StreamableHttp => {
                Kind::Http(Box::new(http::Http::new(cfg, upstream.clone())))
            }
            config::McpTransport::Stdio => {
                let ch = channel::Channel::new(name.clone(), unsolicited.clone(), health.clone());
                stdio::supervise(cfg.clone(), ch.clone(), stop_rx);
                Kind::Channel(ch)
            }
            config::McpTransport::Sse => {
                let ch = channel::Channel::new(name.clone(), unsolicited.clone(), health.clone());
                sse::supervise(cfg.clone(), upstream.clone(), ch.clone(), stop_rx);
                Kind::Channel(ch)
            }
        };
        Arc::new(Self {
            name,
            required: cfg.required,
            transport: cfg.transport,
            authority,
            path,
            health,
            timeout: cfg.timeout,
            kind,
            next_id: AtomicU64::new(1),
            unsolicited,
            stop,
        })
    }

    /// Sends a request and waits for its response (the whole JSON-RPC message).
    /// `id` comes from [`Server::next_id`], so the caller can cancel the request.
    pub async fn call(
        &self,
        id: u64,
        method: &str,
        params: Value,
        events: Option<mpsc::Sender<Value>>,
    ) -> Result<Value, UpstreamError> {
        let fut = async {
            match &self.kind {
                Kind::Http(h) => h.call(id, method, params, events, &self.unsolicited).await,
                Kind::Channel(c) => c.call(id, method, params, events).await,
            }
        };
        let r = match tokio::time::timeout(self.timeout, fut).await {
            Ok(r) => r,
            Err(_) => {
                self.cancel(id, "timed out at the gateway").await;
                Err(UpstreamError::Timeout(self.timeout))
            }
        };
        match &r {
            Ok(_) => self.health.ok(),
            Err(e) => self.health.failed(e),
        }
        r
    }

    /// Tells the server to stop working on request `id` (one nodegate sent).
    pub async fn cancel(&self, id: u64, reason: &str) {
        self.notify("notifications/cancelled", json!({"requestId": id, "reason": reason})).await;
    }

    /// A fresh id for a request to this server.
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Sends a notification; failures are logged, not returned (nothing waits on them).
    pub async fn notify(&self, method: &str, params: Value) {
        let msg = super::jsonrpc::notification(method, &params);
        self.send_raw(msg).await;
    }

    /// Sends a response to a request the server made (sampling, elicitation, roots).
    pub async fn respond(&self, msg: Value) {
        self.send_raw(msg).await;
    }

    async fn send_raw(&self, msg: Value) {
        let r = match &self.kind {
            Kind::Http(h) => h.post_only(msg).await,
            Kind::Channel(c) => c.send(msg).await,
        };
        if let Err(e) = r {
            tracing::debug!(server = %self.name, error = %e, "message to MCP server not delivered");
        }
    }

    /// Messages the server sends outside any call (list_changed, resource updates, logs).
    pub fn subscribe(&self) -> broadcast::Receiver<Value> {
        self.unsolicited.subscribe()
    }

    /// How the server's first start went: a stdio child or SSE stream nodegate keeps is
    /// `Starting` until its handshake is done or has failed; a Streamable HTTP server has
    /// nothing to start.
    pub fn startup(&self) -> channel::Startup {
        match &self.kind {
            Kind::Http(_) => channel::Startup::Started,
            Kind::Channel(c) => c.startup(),
        }
    }

    /// The era the server speaks, once known.
    pub fn era(&self) -> Option<&'static str> {
        match &self.kind {
            Kind::Http(h) => h.era(),
            Kind::Channel(_) => Some(HANDSHAKE_VERSION),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Stops stdio children and SSE streams when a reload replaces this server.
        let _ = self.stop.send(true);
    }
}
