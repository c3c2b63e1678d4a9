//! `nodegate policy test FILE --input REQUEST.json`: the rules of a config file judged against
//! requests described as JSON, offline, by the same engine the gateway runs. Rate limits are not
//! simulated (every request gets a fresh allowance).
use std::path::Path;

use super::{JsonInput, Rules, Verdict, limit::Limiter};

/// One judged request: its position in the input and the verdict.
pub struct Judged {
    pub index: usize,
    pub verdict: Verdict,
}

/// Loads the config (validated as `nodegate check` would) and judges every request of the input:
/// one JSON object, or an array of them.
pub fn test(config: &Path, input: &Path) -> Result<Vec<Judged>, String> {
    let cfg = crate::config::load(Some(config)).map_err(|e| e.to_string())?;
    let text = std::fs::read_to_string(input).map_err(|e| format!("{}: {e}", input.display()))?;
    let doc: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: not JSON: {e}", input.display()))?;
    let docs = match doc {
        serde_json::Value::Array(items) => items,
        one => vec![one],
    };
    let rules = Rules::build(&cfg.policy);
    docs.iter()
        .enumerate()
        .map(|(index, d)| {
            let input =
                JsonInput::parse(d).map_err(|e| format!("{} request {index}: {e}", input.display()))?;
            Ok(Judged { index, verdict: rules.evaluate(&input, &Limiter::default()) })
        })
        .collect()
}

/// The verdict in one line.
pub fn describe(v: &Verdict) -> String {
    let mut out = match (&v.denied, &v.rule) {
        (Some(d), _) => format!("deny: {}", Verdict::message(d)),
        (None, Some(r)) => format!("allow: rule {r}"),
        (None, None) => "allow: no rule matched (the protocol's own lists decide)".to_string(),
    };
    if let (Some(r), Some(why)) = (&v.would_deny, &v.would_deny_reason) {
        out.push_str(&format!("; dry run: rule {r} would deny ({why})"));
    }
    out
}

/// The verdict as JSON.
pub fn to_json(j: &Judged) -> serde_json::Value {
    let v = &j.verdict;
    serde_json::json!({
        "request": j.index,
        "decision": if v.denied.is_some() { "deny" } else { "allow" },
        "rule": v.rule.as_deref(),
        "reason": v.denied.as_ref().map(|d| d.reason.clone()),
        "would_deny": v.would_deny.as_deref(),
        "would_deny_reason": v.would_deny_reason.as_deref(),
    })
}
