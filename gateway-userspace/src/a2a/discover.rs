//! What a registered agent speaks, read from its card: fetched through nodegate's own client
//! (bounded in size and time), kept for a minute, and read again when it has aged. An agent
//! whose card cannot be read is called on JSON-RPC 1.0 at its configured URL, and asked again
//! soon.
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Empty, Limited};
use serde_json::Value;

use super::{A2a, Agent, card, wire::Wire};
use crate::proxy::Ctx;

/// How long a card read is trusted.
const FRESH: Duration = Duration::from_secs(60);
/// How soon an agent whose card could not be read is asked again.
const RETRY: Duration = Duration::from_secs(5);
/// The most a card fetch may take, whatever `a2a.timeout` says.
const CARD_TIMEOUT: Duration = Duration::from_secs(10);

/// What an agent's card said: its interfaces (the wire and URL of each) and its skills' tags.
#[derive(Debug, Default)]
pub struct Learned {
    pub interfaces: Vec<(Wire, String)>,
    pub skills: HashMap<String, Vec<String>>,
}

impl Learned {
    /// The tags the card gives `skill` (none when unknown).
    pub fn tags(&self, skill: &str) -> &[String] {
        self.skills.get(skill).map_or(&[], Vec::as_slice)
    }
}

pub type Interfaces = Arc<Learned>;

/// Skill ids and their tags on a card (`skills[].id`, `skills[].tags`).
pub fn skills(card: &Value) -> HashMap<String, Vec<String>> {
    card.get("skills")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|s| {
            let id = s.get("id").and_then(Value::as_str)?;
            let tags = s.get("tags").and_then(Value::as_array).into_iter().flatten();
            Some((id.to_string(), tags.filter_map(Value::as_str).map(str::to_string).collect()))
        })
        .collect()
}

/// The interfaces an agent offers, when they were read and for how long that holds.
#[derive(Default)]
pub struct Known(Mutex<Option<(Instant, Duration, Interfaces)>>);

/// Fetches `agent`'s card: the HTTP status and the card (a JSON object) or why not.
pub async fn fetch(ctx: &Ctx, a2a: &A2a, agent: &Agent) -> Result<(StatusCode, Value), String> {
    let limit = a2a.cfg.max_card_bytes;
    let get = |path: &'static str| async move {
        let url = format!("{}{}{path}", agent.origin, agent.path);
        let up = Request::get(&url)
            .header(header::ACCEPT, "application/json")
            .body(Empty::<Bytes>::new().map_err(|never| match never {}).boxed())
            .map_err(|e| e.to_string())?;
        let resp = a2a.client(ctx).request(up).await.map_err(|e| super::handler::chain(&e))?;
        let status = resp.status();
        let body = Limited::new(resp.into_body(), limit)
            .collect()
            .await
            .map_err(|e| format!("reading the card: {e}"))?
            .to_bytes();
        Ok::<_, String>((status, body))
    };
    let fetched = tokio::time::timeout(a2a.cfg.timeout.min(CARD_TIMEOUT), async {
        let (status, body) = get("/.well-known/agent-card.json").await?;
        if status == StatusCode::NOT_FOUND {
            // 0.2-era agents published it under its older name.
            return get("/.well-known/agent.json").await;
        }
        Ok((status, body))
    })
    .await
    .unwrap_or_else(|_| Err("the agent did not answer in time".into()))?;
    let (status, body) = fetched;
    if !status.is_success() {
        return Err(format!("the agent answered {status} for its card"));
    }
    match serde_json::from_slice(&body) {
        Ok(v @ Value::Object(_)) => Ok((status, v)),
        _ => Err("the agent's card is not a JSON object".into()),
    }
}

/// Remembers what `card` says `agent` speaks.
pub fn learn(agent: &Agent, card: &Value) -> Interfaces {
    let found = card::interfaces(card, &agent.origin);
    let (list, ttl) = if found.is_empty() {
        tracing::warn!(agent = %agent.name, "the agent's card offers no interface nodegate can call at its own origin; using its configured URL");
        (fallback(agent), RETRY)
    } else {
        (found, FRESH)
    };
    let list = Arc::new(Learned { interfaces: list, skills: skills(card) });
    if let Ok(mut k) = agent.known.0.lock() {
        *k = Some((Instant::now(), ttl, list.clone()));
    }
    list
}

fn fallback(agent: &Agent) -> Vec<(Wire, String)> {
    vec![(Wire::JSONRPC, format!("{}{}", agent.origin, agent.path))]
}

/// What `agent`'s card said, if it has been read (without reading it).
pub fn peek(agent: &Agent) -> Option<Interfaces> {
    agent.known.0.lock().ok()?.as_ref().map(|(_, _, l)| l.clone())
}

/// The interfaces `agent` offers: remembered, or read from its card now.
pub async fn interfaces(ctx: &Ctx, a2a: &A2a, agent: &Agent) -> Interfaces {
    if let Ok(k) = agent.known.0.lock()
        && let Some((at, ttl, list)) = k.as_ref()
        && at.elapsed() < *ttl
    {
        return list.clone();
    }
    match fetch(ctx, a2a, agent).await {
        Ok((_, card)) => learn(agent, &card),
        Err(e) => {
            tracing::warn!(agent = %agent.name, error = %e, "reading the agent's card; calling it on JSON-RPC 1.0 at its configured URL");
            let list = Arc::new(Learned { interfaces: fallback(agent), skills: HashMap::new() });
            if let Ok(mut k) = agent.known.0.lock() {
                *k = Some((Instant::now(), RETRY, list.clone()));
            }
            list
        }
    }
}

/// The interface to call for a client on `client`: the same wire when the agent has it (the
/// call passes unchanged), else the closest one nodegate can bridge to.
pub fn choose(list: &[(Wire, String)], client: Wire) -> Option<(Wire, &str)> {
    let order = [
        client,
        Wire { binding: client.binding, version: super::methods::Version::V1 },
        Wire::JSONRPC,
        Wire::REST,
        Wire::JSONRPC_03,
    ];
    order.iter().find_map(|w| list.iter().find(|(x, _)| x == w).map(|(x, u)| (*x, u.as_str())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_wire_first_then_the_closest() {
        let rest_only = vec![(Wire::REST, "http://a/rest".to_string())];
        assert_eq!(choose(&rest_only, Wire::JSONRPC_03), Some((Wire::REST, "http://a/rest")));
        let both = vec![(Wire::JSONRPC_03, "http://a/old".to_string()), (Wire::JSONRPC, "http://a/".into())];
        assert_eq!(choose(&both, Wire::JSONRPC_03).map(|c| c.0), Some(Wire::JSONRPC_03));
        assert_eq!(choose(&both, Wire::REST).map(|c| c.0), Some(Wire::JSONRPC));
        assert_eq!(choose(&[], Wire::REST), None);
    }
}
