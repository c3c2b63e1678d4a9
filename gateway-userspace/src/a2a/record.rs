//! One A2A call being handled: who made it, and what its audit record and metrics will say.
use std::{sync::Arc, time::Instant};

use http::Request;

use super::stream::Summary;
use crate::{
    identity::Identity,
    proxy::{Conn, Ctx},
    telemetry::{
        audit::{A2aCall, Body as AuditBody, Record},
        metrics::A2aLabels,
    },
};

pub struct Call {
    pub ctx: Arc<Ctx>,
    conn: Arc<Conn>,
    pub identity: Arc<Identity>,
    agent: Arc<str>,
    trace_id: Option<String>,
    start: Instant,
    pub rec: A2aCall,
    decision: &'static str,
    rule: Option<Arc<str>>,
    /// What `policy.rules` decided (the allowing rule, a dry run's finding).
    pub policy: crate::policy::Mark,
}

impl Call {
    pub fn new<B>(
        ctx: &Arc<Ctx>,
        conn: &Arc<Conn>,
        keys: &crate::identity::Keys,
        req: &Request<B>,
        agent: Arc<str>,
    ) -> Self {
        let identity = crate::identity::caller(keys, &conn.identity, req.headers());
        let traceparent = req.headers().get("traceparent").and_then(|v| v.to_str().ok());
        let trace_id = traceparent.and_then(crate::mcp::handler::trace_id);
        // When traces are exported: this call's span (the agent's own spans, under the
        // `traceparent` passed on to it, are in the same trace).
        let trace = ctx.audit.trace(traceparent);
        Self {
            ctx: ctx.clone(),
            conn: conn.clone(),
            identity,
            agent: agent.clone(),
            trace_id,
            start: Instant::now(),
            rec: A2aCall { agent, protocol_version: "1.0", binding: "jsonrpc", trace, ..Default::default() },
            decision: "allow",
            rule: None,
            policy: Default::default(),
        }
    }

    pub fn finish(mut self) {
        self.rec.duration_ms = self.start.elapsed().as_secs_f64() * 1000.0;
        if self.rec.outcome.is_empty() {
            self.rec.outcome = if self.rec.error.is_some() { "error" } else { "ok" };
        }
        let labels =
            A2aLabels { agent: self.agent.clone(), method: self.rec.method, outcome: self.rec.outcome };
        self.ctx.metrics.a2a_calls.get_or_create(&labels).inc();
        let target = format!("a2a/{}", self.agent);
        let mut r = Record::new(
            "a2a",
            &self.identity,
            self.conn.mode,
            target,
            "a2a",
            AuditBody::A2a(Box::new(std::mem::take(&mut self.rec))),
        );
        r.decision = self.decision;
        r.rule = self.rule.take();
        self.policy.apply(&mut r);
        r.trace_id = self.trace_id.take();
        self.ctx.audit.emit(r);
    }

    /// Ends the call refused or failed: `rule` names the policy that refused it, if one did.
    pub fn refuse(mut self, outcome: &'static str, rule: Option<&str>, error: String) {
        self.rec.outcome = outcome;
        self.rec.error = Some(error);
        if let Some(r) = rule {
            self.decision = "deny";
            self.rule = Some(r.into());
        }
        self.finish();
    }

    /// Takes in what the answer said.
    pub fn absorb(&mut self, s: Summary) {
        if self.rec.task_id.is_none() {
            self.rec.task_id = s.task_id;
        }
        self.rec.context_id = s.context_id;
        self.rec.state = s.state;
        self.rec.messages = s.messages;
        self.rec.artifacts = s.artifacts;
        self.rec.events = s.events;
        if s.error.is_some() {
            self.rec.error = s.error;
        }
    }
}
