//! W3C trace context for one agent action: the span nodegate makes for it (a child of the
//! client's `traceparent`, or the root of a new trace), the spans of its upstream attempts, and
//! the `traceparent` each attempt carries upstream, so an agent's call and the calls it causes
//! further on are one trace. Made per request only when traces are exported
//! ([`Sampler::begin`]); the spans are built from the audit record when it is emitted
//! (telemetry::spans).
use std::time::SystemTime;

use http::HeaderValue;

/// Decides which new traces are kept: the client's sampled flag when it sent a valid
/// `traceparent` (parent-based), else `ratio` of trace ids.
#[derive(Debug, Clone, Copy)]
pub struct Sampler {
    /// Trace ids whose low 63 bits are below this are kept.
    threshold: u64,
}

impl Sampler {
    pub fn new(ratio: f64) -> Self {
        let ratio = ratio.clamp(0.0, 1.0);
        // As OpenTelemetry's TraceIdRatioBased: compare the low 63 bits with ratio * 2^63.
        let threshold = if ratio >= 1.0 { u64::MAX } else { (ratio * (1u64 << 63) as f64) as u64 };
        Self { threshold }
    }

    /// The trace context of a new action, under `traceparent` if it is a valid one.
    pub fn begin(&self, traceparent: Option<&str>) -> Trace {
        let parent = traceparent.and_then(parse);
        let (trace_id, parent_span, sampled) = match parent {
            Some(p) => (p.trace_id, Some(p.span_id), p.sampled),
            None => {
                let id = new_trace_id();
                let low = u64::from_be_bytes(id[8..16].try_into().unwrap_or([0; 8])) & (u64::MAX >> 1);
                (id, None, self.threshold == u64::MAX || low < self.threshold)
            }
        };
        Trace {
            trace_id,
            span_id: new_span_id(),
            parent_span,
            sampled,
            start: SystemTime::now(),
            attempts: Vec::new(),
        }
    }
}

/// A parsed `traceparent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parent {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub sampled: bool,
}

/// `00-<32 hex trace id>-<16 hex span id>-<2 hex flags>` (a later version may add fields after a
/// dash); all-zero ids are invalid.
pub fn parse(v: &str) -> Option<Parent> {
    let v = v.trim();
    let mut parts = v.splitn(5, '-');
    let version = parts.next()?;
    let (trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?);
    let extra = parts.next();
    if version.len() != 2 || version == "ff" || (version == "00" && extra.is_some()) {
        return None;
    }
    let byte = |s: &str| u8::from_str_radix(s, 16).ok().filter(|_| s.bytes().all(|b| b.is_ascii_hexdigit()));
    byte(version)?;
    let mut trace_id = [0u8; 16];
    let mut span_id = [0u8; 8];
    if trace.len() != 32 || span.len() != 16 || flags.len() != 2 {
        return None;
    }
    for (i, b) in trace_id.iter_mut().enumerate() {
        *b = byte(&trace[i * 2..i * 2 + 2])?;
    }
    for (i, b) in span_id.iter_mut().enumerate() {
        *b = byte(&span[i * 2..i * 2 + 2])?;
    }
    let flags = byte(flags)?;
    if trace_id == [0; 16] || span_id == [0; 8] {
        return None;
    }
    Some(Parent { trace_id, span_id, sampled: flags & 1 == 1 })
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn new_trace_id() -> [u8; 16] {
    loop {
        let id = fastrand::u128(..).to_be_bytes();
        if id != [0; 16] {
            return id;
        }
    }
}

fn new_span_id() -> [u8; 8] {
    loop {
        let id = fastrand::u64(..).to_be_bytes();
        if id != [0; 8] {
            return id;
        }
    }
}

/// One upstream attempt of an action: its own span, a child of the action's.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub span_id: [u8; 8],
    pub start: SystemTime,
    pub end: SystemTime,
    /// Where it went (`scheme://host:port`).
    pub target: String,
    pub status: Option<u16>,
    pub error: Option<String>,
}

/// The trace context of one agent action.
#[derive(Debug, Clone)]
pub struct Trace {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    /// The client's span, when it sent a `traceparent`.
    pub parent_span: Option<[u8; 8]>,
    pub sampled: bool,
    pub start: SystemTime,
    pub attempts: Vec<Attempt>,
}

impl Trace {
    pub fn trace_id_hex(&self) -> String {
        hex(&self.trace_id)
    }

    /// Starts an upstream attempt: its span id, and the `traceparent` the upstream request
    /// carries (naming that span, so the upstream's spans are its children).
    pub fn attempt(&self) -> ([u8; 8], HeaderValue) {
        let id = new_span_id();
        (id, self.traceparent_for(id))
    }

    /// The `traceparent` naming this action's own span (for an upstream with no attempt spans).
    pub fn traceparent(&self) -> HeaderValue {
        self.traceparent_for(self.span_id)
    }

    fn traceparent_for(&self, span: [u8; 8]) -> HeaderValue {
        let flags = if self.sampled { "01" } else { "00" };
        let v = format!("00-{}-{}-{flags}", hex(&self.trace_id), hex(&span));
        // Hex and dashes only: always a valid header value.
        HeaderValue::from_str(&v).unwrap_or_else(|_| HeaderValue::from_static(""))
    }

    /// Records an attempt started with [`Trace::attempt`] at `start`.
    pub fn attempted(
        &mut self,
        span_id: [u8; 8],
        start: SystemTime,
        target: String,
        status: Option<u16>,
        error: Option<String>,
    ) {
        self.attempts.push(Attempt { span_id, start, end: SystemTime::now(), target, status, error });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_is_parsed_as_the_w3c_spec_says() {
        let p = parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        assert_eq!(
            p.map(|p| (hex(&p.trace_id), hex(&p.span_id), p.sampled)),
            Some(("4bf92f3577b34da6a3ce929d0e0e4736".into(), "00f067aa0ba902b7".into(), true))
        );
        assert_eq!(
            parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").map(|p| p.sampled),
            Some(false)
        );
        // A later version may carry more fields; version 00 may not; ff is invalid.
        assert!(parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-later").is_some());
        for bad in [
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e47zz-00f067aa0ba902b7-01",
            "00-+bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "",
            "garbage",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_span_continues_the_clients_trace_and_attempts_name_themselves_upstream() {
        let s = Sampler::new(0.0);
        let t = s.begin(Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"));
        assert_eq!(t.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(t.parent_span.map(|p| hex(&p)), Some("00f067aa0ba902b7".into()));
        assert!(t.sampled, "the client's sampled flag decides, whatever the ratio");
        let (id, header) = t.attempt();
        assert_eq!(
            header.to_str().ok(),
            Some(format!("00-4bf92f3577b34da6a3ce929d0e0e4736-{}-01", hex(&id)).as_str())
        );
        assert!(!Sampler::new(0.0).begin(None).sampled);
        assert!(Sampler::new(1.0).begin(None).sampled);
        let kept = (0..4000).filter(|_| Sampler::new(0.25).begin(None).sampled).count();
        assert!((800..1200).contains(&kept), "about a quarter kept: {kept}");
    }
}
