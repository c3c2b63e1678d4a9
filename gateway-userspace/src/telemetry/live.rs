//! What the dashboard shows, kept by the audit writer (off the request path): per workload,
//! requests, LLM calls, tokens, cost, tool calls, A2A calls, denials and errors since start, and
//! the last audit records of agent actions (connection records are left out of both). Bounded: at most [`MAX_WORKLOADS`] workloads (the rest are summed as
//! `(other)`) and [`RECENT`] records.
use std::{
    collections::{BTreeMap, VecDeque},
    sync::{Arc, Mutex},
};

use super::audit::{Body, Record};
use crate::audit_query::{Counted, Totals};

pub const MAX_WORKLOADS: usize = 1000;
pub const RECENT: usize = 25;

#[derive(Default)]
pub struct Live {
    totals: Mutex<BTreeMap<Arc<str>, Totals>>,
    recent: Mutex<VecDeque<String>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Live {
    /// Counts one record (written as `line`).
    pub fn note(&self, r: &Record, line: &[u8]) {
        // Connections are not agent actions: only their requests are counted and listed.
        if r.kind == "connection" {
            return;
        }
        let (error, llm, tool_call) = match &r.body {
            Body::Llm(c) => (c.error.is_some(), Some((c.input_tokens, c.output_tokens, c.cost_usd)), false),
            Body::Mcp(c) => (c.error.is_some(), None, c.method == "tools/call"),
            Body::A2a(c) => (c.error.is_some(), None, false),
            Body::Http { error, .. } | Body::Connection { error, .. } => (error.is_some(), None, false),
        };
        {
            let mut totals = lock(&self.totals);
            let key = r.principal.clone().unwrap_or_else(|| r.identity.clone());
            let key = if totals.contains_key(&key) || totals.len() < MAX_WORKLOADS {
                key
            } else {
                Arc::from("(other)")
            };
            let counted = Counted { kind: r.kind, deny: r.decision == "deny", error, llm, tool_call };
            totals.entry(key).or_default().count(&counted);
        }
        let mut recent = lock(&self.recent);
        if recent.len() == RECENT {
            recent.pop_front();
        }
        recent.push_back(String::from_utf8_lossy(line).trim_end().to_string());
    }

    /// Totals by workload (or principal) and the last records, newest last.
    pub fn snapshot(&self) -> serde_json::Value {
        let totals = lock(&self.totals).clone();
        let recent: Vec<serde_json::Value> =
            lock(&self.recent).iter().filter_map(|l| serde_json::from_str(l).ok()).collect();
        serde_json::json!({"workloads": totals, "recent": recent})
    }
}
