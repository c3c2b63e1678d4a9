//! The `a2a` section: Agent2Agent agents served through the explicit listener, and who may hand
//! off to which of them.
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::types::{Decision, EgressRule, Selector};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct A2a {
    /// Agents served at `/a2a/<name>` on the explicit listener (card at
    /// `/a2a/<name>/.well-known/agent-card.json`).
    pub agents: Vec<A2aAgent>,
    /// Which agents and methods each caller may use; the first rule whose selector matches
    /// decides.
    pub allow: Vec<A2aRule>,
    /// What a caller no `allow` rule matches may do: `allow` (everything) or `deny`.
    pub default: Decision,
    /// Largest request body read (a JSON-RPC call), in bytes.
    pub max_body_bytes: usize,
    /// Largest agent card read from an agent, in bytes.
    pub max_card_bytes: usize,
    /// How long nodegate remembers who created a task after it last saw it.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub task_ttl: Duration,
    /// Tasks remembered at most (oldest forgotten first); a forgotten task is "not found" to
    /// everyone but the agent itself.
    pub max_tasks: usize,
    /// Where agents may be asked to deliver push notifications (a callback URL's host and
    /// port): `{ address, ports }` as in `egress.allow`. Empty: no push notification config is
    /// passed on. Loopback, link-local and unspecified addresses are refused whatever this says.
    pub push_allow: Vec<EgressRule>,
    /// Redis (`redis://host:port/db`) holding task owners, shared by every replica that uses it:
    /// a caller follows its task through any of them. Unset: owners are per node, in memory.
    pub redis_url: Option<super::secret::Secret>,
    /// Time for an agent to answer a call (the whole answer; for a stream, its first bytes).
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub timeout: Duration,
    /// A stream whose agent sends nothing for this long is ended with a JSON-RPC error event.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub stream_idle: Duration,
}

impl Default for A2a {
    fn default() -> Self {
        Self {
            agents: Vec::new(),
            allow: Vec::new(),
            default: Decision::Allow,
            max_body_bytes: 4 << 20,
            max_card_bytes: 256 << 10,
            task_ttl: Duration::from_secs(24 * 3600),
            max_tasks: 100_000,
            push_allow: Vec::new(),
            timeout: Duration::from_secs(300),
            redis_url: None,
            stream_idle: Duration::from_secs(300),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct A2aAgent {
    /// Name in `/a2a/<name>` and in policy.
    pub name: String,
    /// The agent's base URL: its card is `<url>/.well-known/agent-card.json`.
    pub url: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct A2aRule {
    pub selector: Selector,
    /// Agent names this caller may reach (`*`, `prefix*`).
    pub agents: Vec<String>,
    /// Methods it may call, by their 1.0 names (`SendMessage`, `GetTask`, ...); a 0.3 name
    /// counts as its 1.0 equivalent. Empty: all.
    #[serde(default)]
    pub methods: Vec<String>,
    /// Skills its messages may ask for: a skill id (`*`, `prefix*`) or `tag:<tag>` (any skill
    /// whose tags on the agent's card include it). A message names its skill in `metadata.skill`
    /// (or `skillId`, `skill_id`) of the request or of the message; when this list is not empty,
    /// a message naming none is refused. Empty: any skill, named or not.
    #[serde(default)]
    pub skills: Vec<String>,
}
