//! Agent cards fetched through the gateway are rewritten so every interface a client may use
//! points back through it: `http://<gateway>/a2a/<name><path at the agent>`. Only JSON-RPC
//! interfaces at the agent's own origin are kept: nodegate governs those; an interface it
//! cannot govern (another origin, REST, gRPC) is left out rather than offered as a way around.
use serde_json::Value;

/// `scheme://host:port` of a URL, and its path.
pub fn split(url: &str) -> Option<(String, String)> {
    let uri: http::Uri = url.parse().ok()?;
    let scheme = uri.scheme_str()?;
    let auth = uri.authority()?;
    let port = auth.port_u16().unwrap_or(if scheme == "https" { 443 } else { 80 });
    let path = uri.path().trim_end_matches('/').to_string();
    Some((format!("{scheme}://{}:{port}", auth.host()), path))
}

/// Rewrites `card` (1.0 `supportedInterfaces`, 0.3 `url`/`additionalInterfaces`) for clients of
/// `gateway` (`http://host:port/a2a/<name>`) when the agent's origin is `origin`. Returns how
/// many interfaces were left out.
pub fn rewrite(card: &mut Value, origin: &str, gateway: &str) -> usize {
    let mut dropped = 0;
    let through = |url: &str| -> Option<String> {
        let (o, path) = split(url)?;
        (o == origin).then(|| format!("{gateway}{path}"))
    };
    let jsonrpc = |i: &Value, key: &str| {
        i.get(key).and_then(Value::as_str).is_none_or(|b| b.eq_ignore_ascii_case("JSONRPC"))
    };
    if let Some(list) = card.get_mut("supportedInterfaces").and_then(Value::as_array_mut) {
        let before = list.len();
        list.retain_mut(|i| {
            let url = i.get("url").and_then(Value::as_str).and_then(through);
            match url {
                Some(u) if jsonrpc(i, "protocolBinding") => {
                    i["url"] = Value::String(u);
                    true
                }
                _ => false,
            }
        });
        dropped += before - list.len();
    }
    // 0.3: one preferred URL (JSON-RPC unless `preferredTransport` says otherwise) and more.
    if let Some(url) = card.get("url").and_then(Value::as_str).map(str::to_string) {
        match through(&url) {
            Some(u) if jsonrpc(card, "preferredTransport") => card["url"] = Value::String(u),
            _ => {
                card["url"] = Value::String(gateway.to_string());
                dropped += 1;
            }
        }
    }
    if let Some(list) = card.get_mut("additionalInterfaces").and_then(Value::as_array_mut) {
        let before = list.len();
        list.retain_mut(|i| match i.get("url").and_then(Value::as_str).and_then(through) {
            Some(u) if jsonrpc(i, "transport") => {
                i["url"] = Value::String(u);
                true
            }
            _ => false,
        });
        dropped += before - list.len();
    }
    dropped
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn interfaces_point_back_through_the_gateway() {
        let mut card = json!({"name": "echo", "supportedInterfaces": [
            {"url": "http://10.0.0.5:9999/rpc", "protocolBinding": "JSONRPC", "protocolVersion": "1.0"},
            {"url": "http://10.0.0.5:9999/rest", "protocolBinding": "HTTP+JSON", "protocolVersion": "1.0"},
            {"url": "http://evil.example:80/rpc", "protocolBinding": "JSONRPC", "protocolVersion": "1.0"}
        ]});
        let gw = "http://127.0.0.1:15080/a2a/echo";
        assert_eq!(rewrite(&mut card, "http://10.0.0.5:9999", gw), 2);
        assert_eq!(card["supportedInterfaces"][0]["url"], "http://127.0.0.1:15080/a2a/echo/rpc");
        assert_eq!(card["supportedInterfaces"].as_array().map(Vec::len), Some(1));
        let mut old = json!({"name": "old", "url": "http://10.0.0.5:9999/", "preferredTransport": "JSONRPC"});
        assert_eq!(rewrite(&mut old, "http://10.0.0.5:9999", gw), 0);
        assert_eq!(old["url"], gw);
    }
}
