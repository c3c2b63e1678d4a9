//! `nodegate audit`: questions asked of the audit files without jq. Reads the current file and
//! its rotated predecessors (`audit.log.N` ... `audit.log.1`, `audit.log`, oldest first), one line
//! at a time (memory stays bounded whatever the files hold), keeps the records that match the
//! filters, and prints them (all, or the last N) or a per-workload summary: requests, LLM calls,
//! tokens, cost, tool calls, denials. A line that is not a record (the last one of a file cut by a
//! crash) is skipped and counted.
use std::{
    collections::{BTreeMap, VecDeque},
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    time::SystemTime,
};

use serde_json::Value;

/// What to read and which records to keep.
#[derive(Debug, Default, Clone)]
pub struct Query {
    pub workload: Option<String>,
    pub principal: Option<String>,
    /// `llm`, `mcp`, `a2a`, `http`, `connection`.
    pub kind: Option<String>,
    /// `allow` or `deny`.
    pub decision: Option<String>,
    pub since: Option<SystemTime>,
    pub until: Option<SystemTime>,
}

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("{0}: not a duration (10m, 2h) or an RFC 3339 time (2026-12-03T16:00:00Z)")]
    Time(String),
    #[error("no audit file at {0} (audit.path; `-` is stdout, which leaves no file)")]
    Missing(PathBuf),
    #[error("reading {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
}

/// `10m` (that long ago) or an RFC 3339 time.
pub fn parse_time(s: &str, now: SystemTime) -> Result<SystemTime, QueryError> {
    if let Ok(d) = humantime::parse_duration(s) {
        return Ok(now.checked_sub(d).unwrap_or(SystemTime::UNIX_EPOCH));
    }
    humantime::parse_rfc3339_weak(s).map_err(|_| QueryError::Time(s.to_string()))
}

/// The files of one audit path, oldest first (rotated ones that exist, then the current one).
pub fn files(path: &Path) -> Result<Vec<PathBuf>, QueryError> {
    let mut rotated: Vec<(u32, PathBuf)> = Vec::new();
    if let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) {
        let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
        if let Ok(rd) = std::fs::read_dir(dir) {
            for e in rd.flatten() {
                let f = e.file_name();
                let Some(f) = f.to_str() else { continue };
                if let Some(n) =
                    f.strip_prefix(name).and_then(|r| r.strip_prefix('.')).and_then(|n| n.parse().ok())
                {
                    rotated.push((n, e.path()));
                }
            }
        }
    }
    // audit.log.3 is older than audit.log.1.
    rotated.sort_by_key(|r| std::cmp::Reverse(r.0));
    let mut out: Vec<PathBuf> = rotated.into_iter().map(|(_, p)| p).collect();
    if path.exists() {
        out.push(path.to_path_buf());
    }
    if out.is_empty() {
        return Err(QueryError::Missing(path.to_path_buf()));
    }
    Ok(out)
}

impl Query {
    pub fn matches(&self, r: &Value) -> bool {
        let field = |k: &str| r.get(k).and_then(Value::as_str);
        let eq = |want: &Option<String>, k: &str| want.as_deref().is_none_or(|w| field(k) == Some(w));
        if !(eq(&self.workload, "identity")
            && eq(&self.principal, "principal")
            && eq(&self.kind, "kind")
            && eq(&self.decision, "decision"))
        {
            return false;
        }
        if self.since.is_none() && self.until.is_none() {
            return true;
        }
        let Some(t) = field("time").and_then(|t| humantime::parse_rfc3339_weak(t).ok()) else { return false };
        self.since.is_none_or(|s| t >= s) && self.until.is_none_or(|u| t <= u)
    }

    /// Calls `each` with every matching record, oldest first; returns how many lines were not
    /// records.
    pub fn scan(&self, path: &Path, mut each: impl FnMut(&str, Value)) -> Result<u64, QueryError> {
        let mut bad = 0;
        for file in files(path)? {
            let f = std::fs::File::open(&file)
                .map_err(|source| QueryError::Read { path: file.clone(), source })?;
            let mut r = BufReader::with_capacity(64 * 1024, f);
            let mut line = String::new();
            loop {
                line.clear();
                match r.read_line(&mut line) {
                    Ok(0) => break,
                    Ok(_) => {}
                    // Not UTF-8 (a torn write): not a record.
                    Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                        bad += 1;
                        continue;
                    }
                    Err(source) => return Err(QueryError::Read { path: file.clone(), source }),
                }
                let text = line.trim_end();
                if text.is_empty() {
                    continue;
                }
                match serde_json::from_str::<Value>(text) {
                    Ok(v) if v.is_object() => {
                        if self.matches(&v) {
                            each(text, v);
                        }
                    }
                    _ => bad += 1,
                }
            }
        }
        Ok(bad)
    }
}

/// Per-workload totals.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Totals {
    pub requests: u64,
    pub llm_calls: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost_usd: f64,
    pub tool_calls: u64,
    pub a2a_calls: u64,
    pub denials: u64,
    pub errors: u64,
}

/// What [`Totals`] counts of one record, however the record is held (a parsed line here, the
/// record itself in the dashboard's `telemetry::live`).
pub struct Counted<'a> {
    pub kind: &'a str,
    pub deny: bool,
    pub error: bool,
    /// An LLM call's input and output tokens and cost.
    pub llm: Option<(u64, u64, f64)>,
    /// An MCP `tools/call`.
    pub tool_call: bool,
}

impl Totals {
    pub fn count(&mut self, c: &Counted<'_>) {
        if c.kind != "connection" {
            self.requests += 1;
        }
        if let Some((input, output, cost)) = c.llm {
            self.llm_calls += 1;
            self.input_tokens += input;
            self.output_tokens += output;
            self.cost_usd += cost;
        }
        self.tool_calls += u64::from(c.tool_call);
        self.a2a_calls += u64::from(c.kind == "a2a");
        self.denials += u64::from(c.deny);
        self.errors += u64::from(c.error);
    }

    /// Counts a record read from a file.
    pub fn add(&mut self, r: &Value) {
        let n = |k: &str| r.get(k).and_then(Value::as_u64).unwrap_or(0);
        let kind = r.get("kind").and_then(Value::as_str).unwrap_or("");
        self.count(&Counted {
            kind,
            deny: r.get("decision").and_then(Value::as_str) == Some("deny"),
            error: r.get("error").is_some_and(|e| !e.is_null()),
            llm: (kind == "llm").then(|| {
                (
                    n("input_tokens"),
                    n("output_tokens"),
                    r.get("cost_usd").and_then(Value::as_f64).unwrap_or(0.0),
                )
            }),
            tool_call: kind == "mcp" && r.get("method").and_then(Value::as_str) == Some("tools/call"),
        });
    }
}

/// How `nodegate audit` prints.
#[derive(Debug, Clone, Copy)]
pub enum Output {
    /// One readable line per record.
    Lines,
    /// The records as they are in the file.
    Json,
    /// A table per workload (or JSON with `json`).
    Summary { json: bool },
}

/// Runs a query over `path`, printing to `out`; `tail` keeps only the last N records.
pub fn run(
    path: &Path,
    q: &Query,
    tail: Option<usize>,
    output: Output,
    out: &mut impl Write,
) -> Result<u64, QueryError> {
    let write_err = |source| QueryError::Read { path: PathBuf::from("(stdout)"), source };
    if let Output::Summary { json } = output {
        let mut by: BTreeMap<String, Totals> = BTreeMap::new();
        let bad = q.scan(path, |_, v| {
            let who = v.get("identity").and_then(Value::as_str).unwrap_or("unknown");
            let who = match v.get("principal").and_then(Value::as_str) {
                Some(p) => format!("{who} ({p})"),
                None => who.to_string(),
            };
            by.entry(who).or_default().add(&v);
        })?;
        if json {
            let v = serde_json::to_string_pretty(&by).unwrap_or_default();
            writeln!(out, "{v}").map_err(write_err)?;
        } else {
            writeln!(
                out,
                "{:<40} {:>9} {:>7} {:>11} {:>11} {:>10} {:>6} {:>6} {:>7} {:>6}",
                "workload",
                "requests",
                "llm",
                "tokens in",
                "tokens out",
                "cost $",
                "tools",
                "a2a",
                "denied",
                "errors"
            )
            .map_err(write_err)?;
            for (who, t) in &by {
                writeln!(
                    out,
                    "{:<40} {:>9} {:>7} {:>11} {:>11} {:>10.4} {:>6} {:>6} {:>7} {:>6}",
                    who,
                    t.requests,
                    t.llm_calls,
                    t.input_tokens,
                    t.output_tokens,
                    t.cost_usd,
                    t.tool_calls,
                    t.a2a_calls,
                    t.denials,
                    t.errors
                )
                .map_err(write_err)?;
            }
        }
        return Ok(bad);
    }
    let mut last: VecDeque<String> = VecDeque::new();
    let mut failed = None;
    let bad = q.scan(path, |text, v| {
        let line = match output {
            Output::Json => text.to_string(),
            _ => readable(&v),
        };
        match tail {
            Some(n) => {
                if last.len() == n {
                    last.pop_front();
                }
                if n > 0 {
                    last.push_back(line);
                }
            }
            None => {
                if failed.is_none()
                    && let Err(e) = writeln!(out, "{line}")
                {
                    failed = Some(e);
                }
            }
        }
    })?;
    if let Some(e) = failed {
        return Err(write_err(e));
    }
    for line in last {
        writeln!(out, "{line}").map_err(write_err)?;
    }
    Ok(bad)
}

/// `time kind decision workload target what`, the parts of a record a person reads first.
pub fn readable(v: &Value) -> String {
    let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("");
    let who = match v.get("principal").and_then(Value::as_str) {
        Some(p) => format!("{} ({p})", s("identity")),
        None => s("identity").to_string(),
    };
    let what = match s("kind") {
        "llm" => format!(
            "{} {} -> {} tokens {}/{} {}",
            s("path"),
            s("requested_model"),
            s("provider"),
            v.get("input_tokens").and_then(Value::as_u64).unwrap_or(0),
            v.get("output_tokens").and_then(Value::as_u64).unwrap_or(0),
            v.get("status").and_then(Value::as_u64).unwrap_or(0)
        ),
        "mcp" => format!("{} {} {}", s("method"), s("name"), s("outcome")),
        "a2a" => format!("{} {} {}", s("agent"), s("method"), s("outcome")),
        "http" => {
            format!("{} {} {}", s("method"), s("path"), v.get("status").and_then(Value::as_u64).unwrap_or(0))
        }
        _ => format!("{} bytes", v.get("bytes_sent").and_then(Value::as_u64).unwrap_or(0)),
    };
    let mut line =
        format!("{} {:<10} {:<5} {} {} {}", s("time"), s("kind"), s("decision"), who, s("target"), what);
    if let Some(rule) = v.get("rule").and_then(Value::as_str) {
        line.push_str(&format!(" rule={rule}"));
    }
    if let Some(e) = v.get("error").and_then(Value::as_str) {
        line.push_str(&format!(" error={e:?}"));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, lines: &[&str]) {
        std::fs::write(dir.join(name), lines.join("\n") + "\n").unwrap_or_else(|e| panic!("{e}"));
    }

    #[test]
    fn rotated_files_are_read_oldest_first_and_filters_apply() {
        let dir = std::env::temp_dir().join(format!("ng-audit-q-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        write(
            &dir,
            "a.log.2",
            &[
                r#"{"time":"2026-12-03T10:00:00Z","kind":"llm","identity":"w1","decision":"allow","input_tokens":10,"output_tokens":5,"cost_usd":0.5}"#,
            ],
        );
        write(
            &dir,
            "a.log.1",
            &[
                r#"{"time":"2026-12-03T11:00:00Z","kind":"mcp","identity":"w1","decision":"deny","method":"tools/call"}"#,
            ],
        );
        // The current file ends with a line a crash cut short.
        write(
            &dir,
            "a.log",
            &[
                r#"{"time":"2026-12-03T12:00:00Z","kind":"llm","identity":"w2","decision":"allow","input_tokens":1,"output_tokens":2}"#,
                r#"{"time":"2026-12-03T12:00:01Z","kind":"ll"#,
            ],
        );
        let path = dir.join("a.log");
        let names: Vec<String> = files(&path)
            .unwrap_or_default()
            .iter()
            .map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default())
            .collect();
        assert_eq!(names, ["a.log.2", "a.log.1", "a.log"]);
        let mut out = Vec::new();
        let bad = run(&path, &Query::default(), None, Output::Json, &mut out).unwrap_or(99);
        assert_eq!(bad, 1, "the cut line is counted, not printed");
        assert_eq!(String::from_utf8_lossy(&out).lines().count(), 3);
        let q = Query { workload: Some("w1".into()), ..Query::default() };
        let mut out = Vec::new();
        run(&path, &q, None, Output::Summary { json: true }, &mut out).unwrap_or(99);
        let v: Value = serde_json::from_slice(&out).unwrap_or(Value::Null);
        assert_eq!(v["w1"]["llm_calls"], 1);
        assert_eq!(v["w1"]["tool_calls"], 1);
        assert_eq!(v["w1"]["denials"], 1);
        assert_eq!(v["w1"]["input_tokens"], 10);
        assert!(v.get("w2").is_none(), "filtered out: {v}");
        let since = parse_time("2026-12-03T11:30:00Z", SystemTime::now()).ok();
        let q = Query { since, ..Query::default() };
        let mut out = Vec::new();
        run(&path, &q, Some(5), Output::Lines, &mut out).unwrap_or(99);
        let text = String::from_utf8_lossy(&out);
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(text.contains("w2"), "{text}");
        assert!(parse_time("yesterday-ish", SystemTime::now()).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
