//! Configuration of the MCP gateway: the servers it federates, how their names are prefixed,
//! who may see and call what, and session settings.
use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use serde::{Deserialize, Serialize};

use super::{
    secret::Secret,
    types::{Decision, Selector},
};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Mcp {
    /// MCP servers federated behind the `/mcp` endpoint (and recognised when intercepted).
    pub servers: Vec<McpServer>,
    /// How federated names are prefixed with their server's name.
    pub prefix: PrefixMode,
    /// Between the server name and the original name (`files_read`). MCP names allow
    /// `A-Z a-z 0-9 _ - .`.
    pub separator: String,
    /// How long a server's tool, prompt and resource lists are cached. A `list_changed`
    /// notification from the server drops its cache at once.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub list_ttl: Duration,
    /// A server that failed is left out of lists, without being asked, for this long (so a
    /// hung server does not make every list wait for its timeout). Calls still try it.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub retry_after: Duration,
    /// Items per page of a federated list; 0 answers every item in one page.
    pub page_size: usize,
    /// Largest JSON-RPC message accepted from a client.
    pub max_body_bytes: usize,
    /// Browser origins allowed to call `/mcp` (DNS-rebinding protection). A request carrying
    /// an `Origin` header not listed here is refused with 403. Requests without one pass.
    pub allowed_origins: Vec<String>,
    /// Key (at least 32 bytes) that signs session ids, so that a restarted gateway or another
    /// replica continues a client's session. Unset: a random key per process.
    pub session_key: Option<Secret>,
    /// File holding the session key (alternative to `session_key`).
    pub session_key_file: Option<PathBuf>,
    /// How long a session id stays valid after `initialize`; then the client starts over.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub session_ttl: Duration,
    /// Per-caller visibility and argument rules. The first rule whose selector matches the
    /// caller decides.
    pub policies: Vec<McpPolicy>,
    /// What a caller no policy matches may see and call: `allow` (everything) or `deny`
    /// (nothing; calls refused naming `mcp.default`).
    pub default: Decision,
    /// Argument keys (any depth, case-insensitive) whose values the audit log replaces with
    /// `[redacted]`.
    pub redact: Vec<String>,
    /// Write call arguments into audit records at all.
    pub audit_arguments: bool,
}

impl Default for Mcp {
    fn default() -> Self {
        Self {
            servers: Vec::new(),
            prefix: PrefixMode::Conditional,
            separator: "_".into(),
            list_ttl: Duration::from_secs(300),
            retry_after: Duration::from_secs(5),
            page_size: 0,
            max_body_bytes: 4 * 1024 * 1024,
            allowed_origins: Vec::new(),
            session_key: None,
            session_key_file: None,
            session_ttl: Duration::from_secs(24 * 3600),
            policies: Vec::new(),
            default: Decision::Allow,
            redact: ["password", "token", "secret", "api_key", "apikey", "authorization"]
                .map(String::from)
                .to_vec(),
            audit_arguments: true,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PrefixMode {
    /// Prefix only names that more than one server uses.
    #[default]
    Conditional,
    /// Prefix every name.
    Always,
    /// Never prefix; on a clash the first server (in config order) wins and the clash is logged.
    Never,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum McpTransport {
    /// Streamable HTTP, either protocol era (`url`).
    #[default]
    StreamableHttp,
    /// The 2024-11-05 HTTP+SSE transport (`url` is the SSE endpoint).
    Sse,
    /// A process nodegate launches and supervises, speaking JSON-RPC lines on stdin/stdout.
    Stdio,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum McpProtocol {
    /// Probe `server/discover`; fall back to the `initialize` handshake.
    #[default]
    #[serde(rename = "auto")]
    Auto,
    /// The handshake era: `initialize` and `Mcp-Session-Id`.
    #[serde(rename = "2025-11-25")]
    Handshake,
    /// The stateless era: `_meta` on every request.
    #[serde(rename = "2026-07-28")]
    Stateless,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct McpServer {
    /// Prefix of its names; MCP name characters only.
    pub name: String,
    #[serde(default)]
    pub transport: McpTransport,
    /// Endpoint of an HTTP server (`http://host:port/mcp`, or the `/sse` URL).
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub protocol: McpProtocol,
    /// Program to launch (stdio).
    #[serde(default)]
    pub command: Option<String>,
    #[serde(default)]
    pub args: Vec<String>,
    /// The stdio server's whole environment beyond `PATH`, `HOME`, `LANG` and `TZ`:
    /// nodegate's own environment (and so its keys) is never inherited.
    #[serde(default)]
    pub env: BTreeMap<String, Secret>,
    /// Unprivileged user (name or uid) the stdio server runs as. Unset: nodegate's own user
    /// (`nodegate check` warns when that is root).
    #[serde(default)]
    pub user: Option<String>,
    /// Headers sent on every request to the server (credentials the agents never see).
    #[serde(default)]
    pub headers: BTreeMap<String, Secret>,
    /// Fail closed: when this server cannot answer, federated lists fail instead of leaving
    /// it out.
    #[serde(default)]
    pub required: bool,
    /// Longest a request to the server may take.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub timeout: Duration,
}

fn default_timeout() -> Duration {
    Duration::from_secs(30)
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct McpPolicy {
    /// Which workloads the rule is for.
    pub selector: Selector,
    /// Servers this workload sees (patterns: exact, `*`, `prefix*`). Empty: all.
    pub servers: Vec<String>,
    /// Tools it sees and may call, as `server/tool` patterns (`github/*`). Empty: all tools
    /// of the visible servers.
    pub tools: Vec<String>,
    /// Tools hidden and refused even when `tools` matches.
    pub deny_tools: Vec<String>,
    /// Conditions on call arguments.
    pub constraints: Vec<McpConstraint>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct McpConstraint {
    /// `server/tool` pattern the condition applies to.
    pub tool: String,
    /// CEL expression that must be true for the call to go ahead. Variables: `arguments`
    /// (the call's arguments), `tool`, `server`, `identity`.
    pub when: String,
}

/// Checks what types cannot: names, transports, patterns and CEL conditions.
pub(super) fn check(mcp: &Mcp, push: &mut impl FnMut(String, String)) {
    let valid_name = |s: &str| {
        !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
    };
    if !mcp.separator.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
        || mcp.separator.is_empty()
    {
        push("mcp.separator".into(), format!("{:?}: use one or more of A-Z a-z 0-9 _ - .", mcp.separator));
    }
    let mut seen = std::collections::HashSet::new();
    for (i, s) in mcp.servers.iter().enumerate() {
        let at = format!("mcp.servers[{i}]");
        if !valid_name(&s.name) {
            push(format!("{at}.name"), format!("{:?}: 1-64 of A-Z a-z 0-9 _ - .", s.name));
        }
        if !seen.insert(s.name.as_str()) {
            push(format!("{at}.name"), format!("duplicate server {:?}", s.name));
        }
        match s.transport {
            McpTransport::StreamableHttp | McpTransport::Sse => match &s.url {
                Some(u) if u.starts_with("http://") || u.starts_with("https://") => {
                    if u.parse::<http::Uri>().is_err() {
                        push(format!("{at}.url"), format!("{u:?} is not a URL"));
                    }
                }
                Some(u) => push(format!("{at}.url"), format!("{u:?} must start with http:// or https://")),
                None => push(format!("{at}.url"), "an HTTP server needs a url".into()),
            },
            McpTransport::Stdio => {
                if s.command.as_deref().is_none_or(|c| c.trim().is_empty()) {
                    push(format!("{at}.command"), "a stdio server needs a command".into());
                }
                if let Some(u) = &s.user
                    && lookup_user(u).is_none()
                {
                    push(format!("{at}.user"), format!("no user {u:?} on this host"));
                }
            }
        }
        if s.timeout.is_zero() {
            push(format!("{at}.timeout"), "must be greater than zero".into());
        }
        for (k, v) in &s.headers {
            if http::HeaderName::try_from(k.as_str()).is_err()
                || http::HeaderValue::try_from(v.expose()).is_err()
            {
                push(format!("{at}.headers.{k}"), "not a valid HTTP header name and value".into());
            }
        }
    }
    if mcp.session_ttl.is_zero() {
        push("mcp.session_ttl".into(), "must be greater than zero".into());
    }
    if mcp.max_body_bytes == 0 {
        push("mcp.max_body_bytes".into(), "must be greater than zero".into());
    }
    if mcp.session_key.is_some() && mcp.session_key_file.is_some() {
        push("mcp.session_key".into(), "set session_key or session_key_file, not both".into());
    }
    if let Some(k) = &mcp.session_key
        && k.expose().len() < 32
    {
        push("mcp.session_key".into(), "must be at least 32 bytes".into());
    }
    for (i, p) in mcp.policies.iter().enumerate() {
        for (c, con) in p.constraints.iter().enumerate() {
            if let Err(e) = crate::policy::compile(&con.when) {
                push(format!("mcp.policies[{i}].constraints[{c}].when"), e);
            }
            if con.tool.is_empty() {
                push(format!("mcp.policies[{i}].constraints[{c}].tool"), "must not be empty".into());
            }
        }
    }
}

/// A local user's uid, primary gid and home directory, by name or numeric uid.
pub fn lookup_user(user: &str) -> Option<(u32, u32, PathBuf)> {
    use std::ffi::{CStr, CString};
    let mut pwd: libc::passwd = unsafe_zeroed_passwd();
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut out: *mut libc::passwd = std::ptr::null_mut();
    let rc = match user.parse::<u32>() {
        // SAFETY: pwd, buf and out are valid for the call; buf's length is passed.
        Ok(uid) => unsafe { libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut out) },
        Err(_) => {
            let name = CString::new(user).ok()?;
            // SAFETY: as above; name is NUL-terminated.
            unsafe { libc::getpwnam_r(name.as_ptr(), &mut pwd, buf.as_mut_ptr(), buf.len(), &mut out) }
        }
    };
    if rc != 0 || out.is_null() {
        return None;
    }
    let home = if pwd.pw_dir.is_null() {
        PathBuf::from("/")
    } else {
        // SAFETY: getpw*_r succeeded, so pw_dir points into buf as a NUL-terminated string.
        PathBuf::from(unsafe { CStr::from_ptr(pwd.pw_dir) }.to_string_lossy().into_owned())
    };
    Some((pwd.pw_uid, pwd.pw_gid, home))
}

fn unsafe_zeroed_passwd() -> libc::passwd {
    // SAFETY: passwd is a plain C struct of integers and pointers; all-zero is a valid value
    // (null pointers), and getpw*_r fills it before it is read.
    unsafe { std::mem::zeroed() }
}
