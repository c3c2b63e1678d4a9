//! The MCP gateway: one endpoint (`/mcp` on the explicit listener) that federates every
//! configured server for clients of either protocol era, filtered and checked per workload by
//! `policy::McpPolicy`, with every call audited; and governance of MCP traffic intercepted on
//! its way to a known server (`transparent`).
//!
//! Pieces: `jsonrpc` (messages), `session` (signed session ids), `upstream` (nodegate as a
//! client of each server), `catalog` (federated lists and names), `handler` (the HTTP endpoint
//! and eras), `dispatch` (what each method does), `relay` (streamed answers: progress and
//! server-to-client requests), `transparent` (intercepted traffic).
pub mod catalog;
mod dispatch;
pub mod handler;
pub mod jsonrpc;
mod relay;
pub mod session;
pub mod transparent;
pub mod upstream;

use std::{
    collections::{HashMap, VecDeque},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use serde_json::Value;
use tokio::sync::broadcast;

use crate::{config, policy::McpPolicy, proxy::upstream::Upstream, telemetry::metrics::Metrics};
use catalog::{Catalog, Kind};
use upstream::Server;

/// Versions a client may ask for.
pub const HANDSHAKE_VERSIONS: [&str; 4] = ["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"];
pub const MODERN_VERSIONS: [&str; 1] = [upstream::MODERN_VERSION];

/// One hub event: its id, the notification, and the server it is about (None: about the
/// federation as a whole, such as list_changed), so streams show it only to callers whose
/// policy sees that server.
pub type Event = (String, Value, Option<Arc<str>>);

/// Notifications for every connected client (list_changed, resource updates), with ids for
/// resumption.
pub struct Hub {
    tx: broadcast::Sender<Event>,
    recent: Mutex<VecDeque<Event>>,
    boot: u64,
    seq: AtomicU64,
}

/// Events kept for `Last-Event-ID` replay.
const RECENT: usize = 256;

impl Hub {
    fn new() -> Self {
        let (tx, _) = broadcast::channel(256);
        let boot = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        Self { tx, recent: Mutex::new(VecDeque::new()), boot, seq: AtomicU64::new(0) }
    }

    pub fn next_event_id(&self) -> String {
        format!("{}-{}", self.boot, self.seq.fetch_add(1, Ordering::Relaxed))
    }

    pub fn publish(&self, msg: Value) {
        self.publish_from(None, msg);
    }

    /// Publishes a notification about `server`'s resources.
    pub fn publish_from(&self, server: Option<Arc<str>>, msg: Value) {
        let id = self.next_event_id();
        if let Ok(mut r) = self.recent.lock() {
            if r.len() == RECENT {
                r.pop_front();
            }
            r.push_back((id.clone(), msg.clone(), server.clone()));
        }
        let _ = self.tx.send((id, msg, server));
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }

    /// Events after `last` (a `Last-Event-ID` this process issued); none if it is unknown.
    pub fn since(&self, last: &str) -> Vec<Event> {
        let Ok(r) = self.recent.lock() else { return Vec::new() };
        match r.iter().position(|(id, _, _)| id == last) {
            Some(i) => r.iter().skip(i + 1).cloned().collect(),
            None => Vec::new(),
        }
    }
}

/// A request in flight at a server, by (workload, client's request id): a client's
/// `notifications/cancelled` wakes `cancel`, which drops the call (and tells the server).
/// A request relayed to a client: its owner, where the answer goes, when it went out.
type RelayedEntry = (Arc<str>, Relayed, std::time::Instant);
type Inflight = HashMap<(Arc<str>, String), Arc<tokio::sync::Notify>>;

/// A request nodegate sent a client, waiting for the client's answer: a server's request
/// (answered back to that server under its own id), or one of a 2026-07-28 server's
/// `inputRequests` that nodegate asks a handshake-era client (answered to the waiting call).
pub enum Relayed {
    Server { server: Arc<Server>, id: Value },
    Collect(tokio::sync::oneshot::Sender<Value>),
}

pub struct Mcp {
    pub cfg: config::Mcp,
    pub catalog: Arc<Catalog>,
    pub policy: McpPolicy,
    pub keys: session::Keys,
    pub hub: Arc<Hub>,
    pub metrics: Arc<Metrics>,
    /// What calls in progress and ended sessions leave behind; a reload keeps it whole.
    calls: Arc<Calls>,
    stop: tokio::sync::watch::Sender<bool>,
}

/// State that belongs to clients' calls and sessions rather than to a config version. Every
/// entry carries its owner (the session, or the caller's identity where there is no session):
/// only the owner can answer, cancel or resume it, and the keys handed out are random.
#[derive(Default)]
pub struct Calls {
    /// Requests relayed to a client, by the random id they went out under, with their owner
    /// and when (at most [`MAX_RELAYED`], each forgotten after [`RELAYED_TTL`]).
    relayed: Mutex<HashMap<String, RelayedEntry>>,
    /// (owner, client's request id) -> waiter, for cancellation.
    inflight: Mutex<Inflight>,
    /// Calls waiting for a 2026-07-28 client's `input_required` retry, by request state.
    parked: Mutex<HashMap<String, relay::Parked>>,
    /// Sessions ended with DELETE (ids are self-contained, so ending one is remembered here),
    /// with when each would have expired anyway.
    ended: Mutex<HashMap<String, u64>>,
}

/// Requests relayed to clients (sampling, elicitation, roots) remembered at once, and for how
/// long an unanswered one is kept.
pub const MAX_RELAYED: usize = 4096;
pub const RELAYED_TTL: std::time::Duration = std::time::Duration::from_secs(600);
/// Calls parked for a client's `input_required` retry, at once.
pub const MAX_PARKED: usize = 4096;
/// Sessions ended with DELETE remembered at once (until each would have expired anyway).
pub const MAX_ENDED: usize = 65_536;

/// Makes room for one more entry in a table that grows with what clients do: past `max`
/// entries the one `age` ranks lowest (the oldest) goes. Linear, and only when full.
pub(crate) fn make_room<K: Clone + Eq + std::hash::Hash, V, A: Ord>(
    m: &mut HashMap<K, V>,
    max: usize,
    age: impl Fn(&V) -> A,
) {
    while m.len() >= max.max(1) {
        let Some(k) = m.iter().min_by_key(|(_, v)| age(v)).map(|(k, _)| k.clone()) else { break };
        m.remove(&k);
    }
}

/// An unguessable token (128 random bits, hex) for ids nodegate hands to clients.
pub(crate) fn random_token() -> String {
    let mut b = [0u8; 16];
    // SAFETY: getrandom writes at most b.len() bytes into b.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n != b.len() as isize {
        // The kernel's random source is always there on the kernels nodegate runs on; should it
        // ever fail, fall back to the session-key source.
        let _ =
            std::fs::File::open("/dev/urandom").and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b));
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl Mcp {
    /// Builds the gateway from config. Servers whose config did not change are kept from
    /// `previous` (stdio children keep running, sessions stay open).
    pub fn build(
        cfg: &config::Mcp,
        up: &Upstream,
        metrics: &Arc<Metrics>,
        previous: Option<&Mcp>,
    ) -> Arc<Self> {
        let servers: Vec<Arc<Server>> = cfg
            .servers
            .iter()
            .map(|s| {
                let same = previous.and_then(|p| {
                    let i = p.cfg.servers.iter().position(|o| o == s)?;
                    p.catalog.servers.get(i).cloned()
                });
                same.unwrap_or_else(|| Server::build(s, up))
            })
            .collect();
        let keys = match session_key(cfg) {
            Ok(Some(k)) => session::Keys::new(k),
            Ok(None) => previous.map(|p| p.keys.clone()).unwrap_or_else(|| {
                if !cfg.servers.is_empty() {
                    tracing::info!(
                        "mcp.session_key is not set: MCP session ids are valid in this process only"
                    );
                }
                session::Keys::random().unwrap_or_else(|e| {
                    tracing::error!(error = %e, "no random source for MCP session keys; using a fixed one");
                    session::Keys::new(b"nodegate-fallback-session-key-00".to_vec())
                })
            }),
            Err(e) => {
                tracing::error!(error = %e, "cannot read mcp.session_key_file; sessions will not survive a restart");
                session::Keys::random()
                    .unwrap_or_else(|_| session::Keys::new(b"nodegate-fallback-session-key-00".to_vec()))
            }
        };
        let catalog =
            Arc::new(Catalog::new(servers.clone(), cfg.prefix, cfg.separator.clone(), cfg.list_ttl));
        let hub = previous.map(|p| p.hub.clone()).unwrap_or_else(|| Arc::new(Hub::new()));
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        for s in &servers {
            watch_server(s.clone(), Arc::downgrade(&catalog), hub.clone(), stop_rx.clone());
        }
        Arc::new(Self {
            cfg: cfg.clone(),
            catalog,
            policy: McpPolicy::new(&cfg.policies, cfg.default),
            keys,
            hub,
            metrics: metrics.clone(),
            calls: previous.map(|p| p.calls.clone()).unwrap_or_default(),
            stop,
        })
    }

    pub fn enabled(&self) -> bool {
        !self.cfg.servers.is_empty()
    }

    /// The configured server an intercepted connection to `authority` (host:port) is for.
    pub fn server_at(&self, authority: &str) -> Option<Arc<Server>> {
        self.catalog.servers.iter().find(|s| s.authority.as_deref() == Some(authority)).cloned()
    }

    /// The configured server an intercepted connection reached: by its original destination,
    /// or, for TLS nodegate terminated, by the name and port the upstream proved with a
    /// verified certificate.
    pub fn server_for(
        &self,
        dst: std::net::SocketAddr,
        origin: Option<&crate::tls::client::Origin>,
    ) -> Option<Arc<Server>> {
        self.server_at(&dst.to_string()).or_else(|| {
            let o = origin.filter(|o| o.verified)?;
            self.server_at(&format!("{}:{}", o.server_name, o.addr.port()))
        })
    }

    /// Registers a request sent to a client of `owner`; returns the random id it goes out under.
    /// A client that never answers does not grow the table: entries expire after
    /// [`RELAYED_TTL`] and the oldest goes past [`MAX_RELAYED`].
    fn relay_request(&self, owner: &Arc<str>, to: Relayed) -> String {
        let key = format!("ng-{}", random_token());
        if let Ok(mut m) = self.calls.relayed.lock() {
            m.retain(|_, (_, _, at)| at.elapsed() < RELAYED_TTL);
            make_room(&mut m, MAX_RELAYED, |(_, _, at)| *at);
            m.insert(key.clone(), (owner.clone(), to, std::time::Instant::now()));
        }
        key
    }

    /// The relayed request `key`, if `owner` is the one it was sent to (else it stays).
    fn take_relayed(&self, owner: &str, key: &str) -> Option<Relayed> {
        let mut m = self.calls.relayed.lock().ok()?;
        if m.get(key).is_some_and(|(o, _, _)| &**o == owner) {
            m.remove(key).map(|(_, r, _)| r)
        } else {
            None
        }
    }

    /// Publishes each server's health to the metrics (called on scrape and after calls).
    pub fn export_health(&self) {
        for s in &self.catalog.servers {
            let l = crate::telemetry::mcp_metrics::ServerLabels { server: s.name.clone() };
            self.metrics.mcp.server_up.get_or_create(&l).set(i64::from(s.health.is_up()));
            self.metrics.mcp.server_failures.get_or_create(&l).set(s.health.failures());
        }
    }

    /// The admin page's view of the servers.
    pub fn status(&self) -> Value {
        Value::Array(
            self.catalog
                .servers
                .iter()
                .map(|s| {
                    serde_json::json!({
                        "name": &*s.name,
                        "transport": s.transport,
                        "protocol": s.era(),
                        "up": s.health.is_up(),
                        "failures": s.health.failures(),
                        "last_error": s.health.last_error(),
                        "required": s.required,
                        "startup": startup_label(&s.startup()).0,
                    })
                })
                .collect(),
        )
    }
}

/// A server's first start as the admin pages say it: (`starting`|`started`|`failed`, why).
pub fn startup_label(s: &upstream::channel::Startup) -> (&'static str, Option<&str>) {
    match s {
        upstream::channel::Startup::Starting => ("starting", None),
        upstream::channel::Startup::Started => ("started", None),
        upstream::channel::Startup::Failed(why) => ("failed", Some(why)),
    }
}

impl Drop for Mcp {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

fn session_key(cfg: &config::Mcp) -> std::io::Result<Option<Vec<u8>>> {
    if let Some(k) = &cfg.session_key {
        return Ok(Some(k.expose().as_bytes().to_vec()));
    }
    match &cfg.session_key_file {
        Some(p) => Ok(Some(std::fs::read(p)?.trim_ascii().to_vec())),
        None => Ok(None),
    }
}

/// Follows one server's unsolicited messages: list_changed drops its cached lists and is
/// passed on to every client; resource updates are passed on as they are; requests outside a
/// call are answered here.
fn watch_server(
    server: Arc<Server>,
    catalog: std::sync::Weak<Catalog>,
    hub: Arc<Hub>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut rx = server.subscribe();
    tokio::spawn(async move {
        loop {
            let msg = tokio::select! {
                m = rx.recv() => m,
                _ = stop.changed() => return,
            };
            let msg = match msg {
                Ok(m) => m,
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return,
            };
            let Some(method) = msg.get("method").and_then(Value::as_str) else { continue };
            // A request outside any call (a ping, or roots/list on the server's stream) has no
            // client to go to: nodegate answers it itself.
            if let Some(id) = msg.get("id").filter(|i| !i.is_null()) {
                let answer = match method {
                    "ping" => jsonrpc::result(id, serde_json::json!({})),
                    "roots/list" => jsonrpc::result(id, serde_json::json!({"roots": []})),
                    other => jsonrpc::error(
                        id,
                        jsonrpc::METHOD_NOT_FOUND,
                        &format!("{other}: no client to relay it to outside a call"),
                        None,
                    ),
                };
                server.respond(answer).await;
                continue;
            }
            let kinds = Kind::from_notification(method);
            if !kinds.is_empty() {
                let Some(c) = catalog.upgrade() else { return };
                c.invalidate(&server.name, kinds);
                tracing::debug!(server = %server.name, method, "list changed");
                hub.publish(jsonrpc::notification(method, &Value::Null));
            } else if method == "notifications/resources/updated" {
                hub.publish_from(Some(server.name.clone()), msg);
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_clients_grow_keep_their_bound_and_lose_the_oldest() {
        let mut m: HashMap<String, u64> = HashMap::new();
        for i in 0..10u64 {
            make_room(&mut m, 4, |at| *at);
            m.insert(format!("k{i}"), i);
        }
        assert_eq!(m.len(), 4);
        let mut kept: Vec<_> = m.values().copied().collect();
        kept.sort_unstable();
        assert_eq!(kept, [6, 7, 8, 9], "the newest stay");
    }
}
