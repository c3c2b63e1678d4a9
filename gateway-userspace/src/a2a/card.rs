//! Agent cards: which interfaces an agent offers (what nodegate may call it on), and the card
//! clients of the explicit listener see, offering nodegate's own interfaces for the agent and
//! none of the agent's URLs (no way around the gateway is advertised).
use serde_json::{Value, json};

use super::wire::Wire;

/// `scheme://host:port` of a URL, and its path.
pub fn split(url: &str) -> Option<(String, String)> {
    let uri: http::Uri = url.parse().ok()?;
    let scheme = uri.scheme_str()?;
    let auth = uri.authority()?;
    let port = auth.port_u16().unwrap_or(if scheme == "https" { 443 } else { 80 });
    let path = uri.path().trim_end_matches('/').to_string();
    Some((format!("{scheme}://{}:{port}", auth.host()), path))
}

/// The interfaces an agent's card offers that nodegate can reach and speak: at the agent's own
/// origin (an interface elsewhere is not followed: a card must not send nodegate to another
/// host), JSON-RPC of either generation or 1.0's HTTP+JSON. Both card shapes are read: 1.0
/// `supportedInterfaces`, and 0.3's `url`/`preferredTransport`/`additionalInterfaces` with its
/// `protocolVersion`.
pub fn interfaces(card: &Value, origin: &str) -> Vec<(Wire, String)> {
    let mut out = Vec::new();
    let mut take = |url: Option<&str>, binding: Option<&str>, version: Option<&str>| {
        let Some(url) = url else { return };
        let Some(wire) = Wire::from_card(binding, version) else { return };
        if split(url).is_some_and(|(o, _)| o == origin) && !out.iter().any(|(w, _)| *w == wire) {
            out.push((wire, url.trim_end_matches('/').to_string()));
        }
    };
    let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    for i in card.get("supportedInterfaces").and_then(Value::as_array).into_iter().flatten() {
        take(s(i, "url").as_deref(), s(i, "protocolBinding").as_deref(), s(i, "protocolVersion").as_deref());
    }
    if card.get("supportedInterfaces").is_none() {
        let version = s(card, "protocolVersion").unwrap_or_else(|| "0.3.0".into());
        take(s(card, "url").as_deref(), s(card, "preferredTransport").as_deref(), Some(&version));
        for i in card.get("additionalInterfaces").and_then(Value::as_array).into_iter().flatten() {
            take(s(i, "url").as_deref(), s(i, "transport").as_deref(), Some(&version));
        }
    }
    out
}

/// Rewrites `card` for clients of `gateway` (`http://host:port/a2a/<name>`): it offers every
/// interface nodegate serves for the agent (JSON-RPC 1.0 and 0.3 at `gateway`, HTTP+JSON 1.0 at
/// `gateway/rest`), bridged to whichever the agent speaks, and none of the agent's own URLs.
/// The 0.3 fields are kept beside 1.0's so a client of either generation finds its way.
pub fn advertise(card: &mut Value, gateway: &str) {
    let Some(c) = card.as_object_mut() else { return };
    c.insert(
        "supportedInterfaces".into(),
        json!([
            {"url": gateway, "protocolBinding": "JSONRPC", "protocolVersion": "1.0"},
            {"url": format!("{gateway}{REST}"), "protocolBinding": "HTTP+JSON", "protocolVersion": "1.0"},
            {"url": gateway, "protocolBinding": "JSONRPC", "protocolVersion": "0.3"},
        ]),
    );
    c.insert("url".into(), gateway.into());
    c.insert("preferredTransport".into(), "JSONRPC".into());
    c.insert("protocolVersion".into(), "0.3.0".into());
    c.insert("additionalInterfaces".into(), json!([{"url": gateway, "transport": "JSONRPC"}]));
}

/// Where the HTTP+JSON binding is served below an agent's gateway URL.
pub const REST: &str = "/rest";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interfaces_at_the_agents_origin_only() {
        let card = json!({"name": "echo", "supportedInterfaces": [
            {"url": "http://10.0.0.5:9999/rpc/", "protocolBinding": "JSONRPC", "protocolVersion": "1.0"},
            {"url": "http://10.0.0.5:9999/rest", "protocolBinding": "HTTP+JSON", "protocolVersion": "1.0"},
            {"url": "http://10.0.0.5:9999/grpc", "protocolBinding": "GRPC", "protocolVersion": "1.0"},
            {"url": "http://evil.example:80/rpc", "protocolBinding": "JSONRPC", "protocolVersion": "0.3"}
        ]});
        let got = interfaces(&card, "http://10.0.0.5:9999");
        assert_eq!(
            got,
            vec![
                (Wire::JSONRPC, "http://10.0.0.5:9999/rpc".to_string()),
                (Wire::REST, "http://10.0.0.5:9999/rest".into())
            ]
        );
        let old = json!({"name": "old", "url": "http://10.0.0.5:9999/", "protocolVersion": "0.3.0"});
        assert_eq!(
            interfaces(&old, "http://10.0.0.5:9999"),
            vec![(Wire::JSONRPC_03, "http://10.0.0.5:9999".into())]
        );
    }

    #[test]
    fn the_card_offers_nodegate_only() {
        let mut card = json!({"name": "echo", "url": "http://10.0.0.5:9999/", "additionalInterfaces": [
            {"url": "http://10.0.0.5:9999/x", "transport": "GRPC"}], "skills": []});
        let gw = "http://127.0.0.1:15080/a2a/echo";
        advertise(&mut card, gw);
        assert!(!card.to_string().contains("10.0.0.5"), "{card}");
        assert_eq!(card["supportedInterfaces"][1]["url"], "http://127.0.0.1:15080/a2a/echo/rest");
        assert_eq!(card["url"], gw);
    }
}
