//! Federation: the tools, prompts, resources and resource templates of every server, fetched
//! page by page, cached per server for `list_ttl` (dropped at once on the server's
//! `list_changed`), merged under prefixed names, and mapped back when a client names one.
//!
//! Naming: a tool or prompt `read` of server `files` is exposed as `files_read` (`always`),
//! only when another server also has a `read` (`conditional`), or never (`never`: the first
//! server in config order wins a clash). Resource URIs follow the same rule with `+` as the
//! joiner, which keeps them URIs: `files+file:///a` (a scheme may contain `+`).
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde_json::{Value, json};

use super::upstream::{Server, UpstreamError};
use crate::config::PrefixMode;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Tools,
    Prompts,
    Resources,
    Templates,
}

impl Kind {
    pub fn method(self) -> &'static str {
        match self {
            Self::Tools => "tools/list",
            Self::Prompts => "prompts/list",
            Self::Resources => "resources/list",
            Self::Templates => "resources/templates/list",
        }
    }

    /// The array in the list result.
    pub fn field(self) -> &'static str {
        match self {
            Self::Tools => "tools",
            Self::Prompts => "prompts",
            Self::Resources => "resources",
            Self::Templates => "resourceTemplates",
        }
    }

    /// The item field that names it.
    fn key(self) -> &'static str {
        match self {
            Self::Tools | Self::Prompts => "name",
            Self::Resources => "uri",
            Self::Templates => "uriTemplate",
        }
    }

    /// Which list a `notifications/*/list_changed` drops.
    pub fn from_notification(method: &str) -> &'static [Kind] {
        match method {
            "notifications/tools/list_changed" => &[Kind::Tools],
            "notifications/prompts/list_changed" => &[Kind::Prompts],
            "notifications/resources/list_changed" => &[Kind::Resources, Kind::Templates],
            _ => &[],
        }
    }
}

/// Most pages read from one server for one list (a server that pages forever is cut off).
const MAX_PAGES: usize = 100;

struct Cached {
    items: Arc<Vec<Value>>,
    at: Instant,
}

/// Exposed name -> (server, the server's own name).
pub type Origins = HashMap<String, (Arc<Server>, String)>;

/// MCP's limit on tool and prompt names.
const MAX_NAME: usize = 128;

/// A prefixed name past MCP's 128 characters keeps its start and ends in a hash of the whole,
/// so it stays unique and valid; the catalog maps it back like any other.
fn fit_name(name: String) -> String {
    if name.len() <= MAX_NAME {
        return name;
    }
    let hash =
        name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    let mut keep = MAX_NAME - 17;
    while !name.is_char_boundary(keep) {
        keep -= 1;
    }
    format!("{}_{hash:016x}", &name[..keep])
}

/// A merged list as one policy view shows it, kept until one of the lists it was made from
/// is replaced.
pub struct Merged {
    pub items: Vec<Value>,
    /// Where each shown name comes from.
    pub origins: Origins,
    /// `items` serialized: a cached tools/list answer is a copy of these bytes.
    pub json: bytes::Bytes,
    /// The lists merged (held so their addresses, the cache key, stay unique).
    _from: Vec<Arc<Vec<Value>>>,
}

type MergedCache = HashMap<(Kind, String), (Vec<usize>, Arc<Merged>)>;

pub struct Catalog {
    pub servers: Vec<Arc<Server>>,
    prefix: PrefixMode,
    separator: String,
    ttl: Duration,
    /// A server that failed is left out of lists, without being asked, for this long.
    retry_after: Duration,
    cache: Mutex<HashMap<(usize, Kind), Cached>>,
    merged: Mutex<MergedCache>,
}

/// One server's share of a merged list: its items, or why it is missing.
pub struct Part {
    pub server: Arc<Server>,
    pub items: Result<Arc<Vec<Value>>, UpstreamError>,
}

/// A federated name resolved back to its server and the server's own name.
pub struct Resolved {
    pub server: Arc<Server>,
    pub original: String,
}

impl Catalog {
    pub fn new(servers: Vec<Arc<Server>>, prefix: PrefixMode, separator: String, ttl: Duration) -> Self {
        Self {
            servers,
            prefix,
            separator,
            ttl,
            retry_after: Duration::from_secs(5),
            cache: Mutex::new(HashMap::new()),
            merged: Mutex::new(HashMap::new()),
        }
    }

    pub fn with_retry_after(mut self, d: Duration) -> Self {
        self.retry_after = d;
        self
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<(usize, Kind), Cached>> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn invalidate(&self, server: &str, kinds: &[Kind]) {
        let Some(i) = self.servers.iter().position(|s| &*s.name == server) else { return };
        let mut c = self.cache();
        for k in kinds {
            c.remove(&(i, *k));
        }
    }

    /// One server's full list (cached). A server without the capability answers
    /// method-not-found: that is an empty list, not a failure.
    pub async fn list_one(&self, i: usize, kind: Kind) -> Result<Arc<Vec<Value>>, UpstreamError> {
        if let Some(c) = self.cache().get(&(i, kind))
            && c.at.elapsed() < self.ttl
        {
            return Ok(c.items.clone());
        }
        let server = &self.servers[i];
        if let Some(e) = server.health.recently_failed(self.retry_after) {
            return Err(UpstreamError::Unavailable(format!("{e} (next try within {:?})", self.retry_after)));
        }
        let mut items = Vec::new();
        let mut cursor: Option<Value> = None;
        for _ in 0..MAX_PAGES {
            let params = match &cursor {
                Some(c) => json!({ "cursor": c }),
                None => Value::Null,
            };
            let resp = server.call(server.next_id(), kind.method(), params, None).await?;
            if let Some(e) = resp.get("error") {
                if e.get("code").and_then(Value::as_i64) == Some(super::jsonrpc::METHOD_NOT_FOUND) {
                    break;
                }
                return Err(UpstreamError::Protocol(format!("{} failed: {e}", kind.method())));
            }
            let result = resp.get("result").cloned().unwrap_or(Value::Null);
            match result.get(kind.field()) {
                Some(Value::Array(a)) => items.extend(a.iter().cloned()),
                _ => {
                    return Err(UpstreamError::Protocol(format!(
                        "{} result has no {} array",
                        kind.method(),
                        kind.field()
                    )));
                }
            }
            cursor = result.get("nextCursor").filter(|c| !c.is_null()).cloned();
            if cursor.is_none() {
                break;
            }
        }
        let items = Arc::new(items);
        self.cache().insert((i, kind), Cached { items: items.clone(), at: Instant::now() });
        Ok(items)
    }

    /// Every server's list, fetched concurrently, in config order.
    pub async fn list_all(&self, kind: Kind, visible: impl Fn(&str) -> bool) -> Vec<Part> {
        let idx: Vec<usize> = (0..self.servers.len()).filter(|&i| visible(&self.servers[i].name)).collect();
        let parts = futures_util::future::join_all(idx.iter().map(|&i| self.list_one(i, kind))).await;
        idx.into_iter().zip(parts).map(|(i, items)| Part { server: self.servers[i].clone(), items }).collect()
    }

    fn joiner(&self, kind: Kind) -> &str {
        match kind {
            Kind::Tools | Kind::Prompts => &self.separator,
            Kind::Resources | Kind::Templates => "+",
        }
    }

    /// Names that appear at more than one server (for `conditional`), from cached lists.
    fn clashes(&self, kind: Kind, parts: &[Part]) -> std::collections::HashSet<String> {
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for p in parts {
            if let Ok(items) = &p.items {
                for it in items.iter() {
                    if let Some(n) = it.get(kind.key()).and_then(Value::as_str) {
                        *seen.entry(n).or_default() += 1;
                    }
                }
            }
        }
        seen.into_iter().filter(|(_, n)| *n > 1).map(|(k, _)| k.to_string()).collect()
    }

    /// The merged list with exposed names, and where each exposed name comes from.
    /// `keep(server, item)` filters (policy).
    pub fn merge(
        &self,
        kind: Kind,
        parts: &[Part],
        keep: impl Fn(&str, &Value) -> bool,
    ) -> (Vec<Value>, Origins) {
        let clashes = if self.prefix == PrefixMode::Conditional {
            self.clashes(kind, parts)
        } else {
            Default::default()
        };
        let mut origins = Origins::new();
        let mut out = Vec::new();
        for p in parts {
            let Ok(items) = &p.items else { continue };
            for it in items.iter() {
                let Some(name) = it.get(kind.key()).and_then(Value::as_str) else { continue };
                if !keep(&p.server.name, it) {
                    continue;
                }
                let prefixed = match self.prefix {
                    PrefixMode::Always => true,
                    PrefixMode::Never => false,
                    PrefixMode::Conditional => clashes.contains(name),
                };
                let mut exposed = if prefixed {
                    format!("{}{}{name}", p.server.name, self.joiner(kind))
                } else {
                    name.to_string()
                };
                if matches!(kind, Kind::Tools | Kind::Prompts) {
                    exposed = fit_name(exposed);
                }
                if origins.contains_key(&exposed) {
                    tracing::debug!(server = %p.server.name, name, "name already taken by an earlier server; left out");
                    continue;
                }
                let mut it = it.clone();
                if exposed != name
                    && let Some(o) = it.as_object_mut()
                {
                    o.insert(kind.key().into(), Value::from(exposed.clone()));
                }
                origins.insert(exposed, (p.server.clone(), name.to_string()));
                out.push(it);
            }
        }
        (out, origins)
    }

    /// [`Self::merge`], cached per policy `view` (the rule's name) until a list changes.
    pub fn merged(
        &self,
        kind: Kind,
        parts: &[Part],
        view: &str,
        keep: impl Fn(&str, &Value) -> bool,
    ) -> Arc<Merged> {
        let key: Vec<usize> =
            parts.iter().map(|p| p.items.as_ref().map_or(0, |a| Arc::as_ptr(a) as usize)).collect();
        let lock = || self.merged.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((k, m)) = lock().get(&(kind, view.to_string()))
            && *k == key
        {
            return m.clone();
        }
        let (items, origins) = self.merge(kind, parts, keep);
        let json = bytes::Bytes::from(serde_json::to_vec(&items).unwrap_or_else(|_| b"[]".to_vec()));
        let from = parts.iter().filter_map(|p| p.items.as_ref().ok().cloned()).collect();
        let m = Arc::new(Merged { items, origins, json, _from: from });
        lock().insert((kind, view.to_string()), (key, m.clone()));
        m
    }

    /// Maps an exposed name back, with the same merge (and naming) that made the lists
    /// clients are shown. Templates match a resource URI by their literal prefix.
    pub async fn resolve(
        &self,
        kind: Kind,
        exposed: &str,
        visible: impl Fn(&str) -> bool,
    ) -> Option<Resolved> {
        let parts = self.list_all(kind, &visible).await;
        if kind != Kind::Templates {
            let m = self.merged(kind, &parts, "\0every name", |_, _| true);
            return m
                .origins
                .get(exposed)
                .map(|(server, original)| Resolved { server: server.clone(), original: original.clone() });
        }
        let has = |p: &Part, uri: &str| match &p.items {
            Ok(items) => items.iter().any(|it| item_matches(kind, it, uri)),
            Err(_) => false,
        };
        // `server+uri` (the longest server name that fits), else the first server whose template fits.
        let prefixed = parts
            .iter()
            .filter_map(|p| {
                let rest =
                    exposed.strip_prefix(format!("{}{}", p.server.name, self.joiner(kind)).as_str())?;
                has(p, rest).then(|| (p.server.name.len(), p, rest))
            })
            .max_by_key(|(len, _, _)| *len)
            .map(|(_, p, rest)| Resolved { server: p.server.clone(), original: rest.to_string() });
        prefixed.or_else(|| {
            parts
                .iter()
                .find(|p| has(p, exposed))
                .map(|p| Resolved { server: p.server.clone(), original: exposed.to_string() })
        })
    }
}

/// Whether `item` is the one `name` refers to; resources also match their templates.
fn item_matches(kind: Kind, item: &Value, name: &str) -> bool {
    match kind {
        Kind::Tools | Kind::Prompts | Kind::Resources => {
            item.get(kind.key()).and_then(Value::as_str) == Some(name)
        }
        Kind::Templates => item
            .get("uriTemplate")
            .and_then(Value::as_str)
            .and_then(|t| t.split_once('{').map(|(lit, _)| lit))
            .is_some_and(|lit| !lit.is_empty() && name.starts_with(lit)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        config,
        proxy::upstream::{Dialer, Upstream},
    };

    fn part(name: &str, items: Value) -> Part {
        let cfg = config::McpServer {
            name: name.into(),
            transport: config::McpTransport::StreamableHttp,
            url: Some("http://127.0.0.1:1/mcp".into()),
            protocol: config::McpProtocol::Auto,
            command: None,
            args: vec![],
            env: Default::default(),
            user: None,
            headers: Default::default(),
            required: false,
            timeout: Duration::from_secs(1),
        };
        let up =
            Upstream::new(Dialer { mark: None, timeout: Duration::from_secs(1), own: Default::default() });
        let items = match items {
            Value::Array(a) => a,
            _ => vec![],
        };
        Part { server: Server::build(&cfg, &up), items: Ok(Arc::new(items)) }
    }

    fn names(v: &[Value], key: &str) -> Vec<String> {
        v.iter().filter_map(|i| i.get(key).and_then(Value::as_str).map(str::to_string)).collect()
    }

    fn parts() -> Vec<Part> {
        vec![
            part("files", json!([{"name": "read"}, {"name": "echo"}])),
            part("git", json!([{"name": "echo"}, {"name": "log"}])),
        ]
    }

    #[tokio::test]
    async fn conditional_prefixes_only_shared_names() {
        let c = Catalog::new(vec![], PrefixMode::Conditional, "_".into(), Duration::from_secs(60));
        let merged = c.merge(Kind::Tools, &parts(), |_, _| true).0;
        assert_eq!(names(&merged, "name"), ["read", "files_echo", "git_echo", "log"]);
    }

    #[tokio::test]
    async fn always_and_never() {
        let c = Catalog::new(vec![], PrefixMode::Always, "__".into(), Duration::from_secs(60));
        assert_eq!(
            names(&c.merge(Kind::Tools, &parts(), |_, _| true).0, "name"),
            ["files__read", "files__echo", "git__echo", "git__log"]
        );
        let c = Catalog::new(vec![], PrefixMode::Never, "_".into(), Duration::from_secs(60));
        // A clash: the first server in config order keeps the name, the other is left out.
        assert_eq!(names(&c.merge(Kind::Tools, &parts(), |_, _| true).0, "name"), ["read", "echo", "log"]);
    }

    #[tokio::test]
    async fn resource_uris_take_the_server_as_a_scheme_prefix_and_policy_filters() {
        let c = Catalog::new(vec![], PrefixMode::Always, "_".into(), Duration::from_secs(60));
        let p = vec![part("docs", json!([{"uri": "file:///a", "name": "a"}]))];
        assert_eq!(names(&c.merge(Kind::Resources, &p, |_, _| true).0, "uri"), ["docs+file:///a"]);
        let c = Catalog::new(vec![], PrefixMode::Conditional, "_".into(), Duration::from_secs(60));
        let kept = c.merge(Kind::Tools, &parts(), |server, item| server == "git" || item["name"] == "read").0;
        assert_eq!(
            names(&kept, "name"),
            ["read", "git_echo", "log"],
            "a hidden twin still counts as a clash"
        );
    }

    #[tokio::test]
    async fn names_past_128_characters_are_shortened_uniquely_and_map_back() {
        let long = "t".repeat(125);
        let p = vec![part("files", json!([{"name": long.clone()}, {"name": format!("{long}x")}]))];
        let c = Catalog::new(vec![], PrefixMode::Always, "_".into(), Duration::from_secs(60));
        let (items, origins) = c.merge(Kind::Tools, &p, |_, _| true);
        let shown = names(&items, "name");
        assert!(shown.iter().all(|n| n.len() <= 128), "{shown:?}");
        assert_ne!(shown[0], shown[1]);
        assert_eq!(origins[&shown[1]].1, format!("{long}x"));
    }

    #[test]
    fn templates_match_by_their_literal_prefix() {
        let t = json!({"uriTemplate": "demo://items/{id}"});
        assert!(item_matches(Kind::Templates, &t, "demo://items/42"));
        assert!(!item_matches(Kind::Templates, &t, "demo://other/42"));
    }
}
