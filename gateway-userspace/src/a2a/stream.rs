//! What an A2A answer says: the task it is about, its state, and how many messages and artifacts
//! came back, read from a JSON-RPC result or from each event of an SSE stream (both spec
//! generations' shapes). Stream events are parsed as they pass, without holding the stream.
use serde_json::Value;

/// The longest SSE line kept for parsing; a longer event is passed on but not read.
const MAX_LINE: usize = 1 << 20;

#[derive(Debug, Default, Clone)]
pub struct Summary {
    pub task_id: Option<String>,
    pub context_id: Option<String>,
    pub state: Option<String>,
    pub messages: u64,
    pub artifacts: u64,
    pub events: u64,
    pub error: Option<String>,
}

fn s(v: &Value, at: &str) -> Option<String> {
    v.pointer(at).and_then(Value::as_str).map(str::to_string)
}

impl Summary {
    /// Takes in one JSON-RPC response object (a whole answer, or one stream event).
    pub fn observe(&mut self, rpc: &Value) {
        if let Some(e) = rpc.get("error") {
            self.events += 1;
            self.failed(
                e.get("code").and_then(Value::as_i64).unwrap_or(0),
                e.get("message").and_then(Value::as_str).unwrap_or(""),
            );
            return;
        }
        match rpc.get("result") {
            Some(r) => self.result(r),
            None => self.events += 1,
        }
    }

    /// Takes in an answer read off any wire (results in 1.0 shape).
    pub fn answer(&mut self, a: &super::wire::Answer) {
        match a {
            super::wire::Answer::Result(r) => self.result(r),
            super::wire::Answer::Error(f) => {
                self.events += 1;
                self.failed(f.code, &f.message);
            }
        }
    }

    fn failed(&mut self, code: i64, message: &str) {
        self.error = Some(format!("{code} {message}"));
    }

    /// Takes in one result (either generation's shape).
    pub fn result(&mut self, r: &Value) {
        self.events += 1;
        // 1.0: a oneof wrapper; 0.3: the object itself with a `kind`.
        let (task, ctx, state) = if let Some(t) = r.get("task") {
            (s(t, "/id"), s(t, "/contextId"), s(t, "/status/state"))
        } else if let Some(u) = r.get("statusUpdate") {
            (s(u, "/taskId"), s(u, "/contextId"), s(u, "/status/state"))
        } else if let Some(u) = r.get("artifactUpdate") {
            self.artifacts += 1;
            (s(u, "/taskId"), s(u, "/contextId"), None)
        } else if let Some(m) = r.get("message") {
            self.messages += 1;
            (s(m, "/taskId"), s(m, "/contextId"), None)
        } else {
            match r.get("kind").and_then(Value::as_str) {
                Some("task") => (s(r, "/id"), s(r, "/contextId"), s(r, "/status/state")),
                Some("status-update") => (s(r, "/taskId"), s(r, "/contextId"), s(r, "/status/state")),
                Some("artifact-update") => {
                    self.artifacts += 1;
                    (s(r, "/taskId"), s(r, "/contextId"), None)
                }
                Some("message") => {
                    self.messages += 1;
                    (s(r, "/taskId"), s(r, "/contextId"), None)
                }
                _ => (None, None, None),
            }
        };
        if let Some(t) =
            r.get("task").or((r.get("kind").and_then(Value::as_str) == Some("task")).then_some(r))
        {
            self.artifacts += t.get("artifacts").and_then(Value::as_array).map_or(0, |a| a.len() as u64);
        }
        if self.task_id.is_none() {
            self.task_id = task.filter(|t| !t.is_empty());
        }
        if self.context_id.is_none() {
            self.context_id = ctx.filter(|c| !c.is_empty());
        }
        if state.is_some() {
            self.state = state;
        }
    }
}

/// Splits an SSE byte stream into `data:` payloads as it arrives.
#[derive(Default)]
pub struct SseReader {
    line: Vec<u8>,
    data: Vec<u8>,
    overflow: bool,
}

impl SseReader {
    /// Feeds bytes; calls `event` with each complete event's data.
    pub fn feed(&mut self, bytes: &[u8], mut event: impl FnMut(&[u8])) {
        for &b in bytes {
            if b != b'\n' {
                if self.line.len() < MAX_LINE {
                    self.line.push(b);
                } else {
                    self.overflow = true;
                }
                continue;
            }
            let line = std::mem::take(&mut self.line);
            let line = line.strip_suffix(b"\r").unwrap_or(&line);
            if line.is_empty() {
                if !self.data.is_empty() && !self.overflow {
                    event(&self.data);
                }
                self.data.clear();
                self.overflow = false;
            } else if let Some(d) = line.strip_prefix(b"data:") {
                if !self.data.is_empty() {
                    self.data.push(b'\n');
                }
                let d = d.strip_prefix(b" ").unwrap_or(d);
                if self.data.len() + d.len() <= MAX_LINE {
                    self.data.extend_from_slice(d);
                } else {
                    self.overflow = true;
                }
            }
        }
    }
}

/// A streamed answer that ends with a clean error event when the agent sends nothing
/// for `idle`: a client is not left waiting on an agent that went quiet mid-stream.
pub struct IdleCut {
    inner: Option<crate::proxy::upstream::Body>,
    idle: std::time::Duration,
    timer: std::pin::Pin<Box<tokio::time::Sleep>>,
    farewell: Option<bytes::Bytes>,
    /// The shutdown drain deadline, and the event that ends the stream when it passes.
    deadline: Option<(crate::proxy::Deadline, bytes::Bytes)>,
}

impl IdleCut {
    /// `farewell` is the error event sent when the agent goes quiet (on the client's wire).
    pub fn new(
        inner: crate::proxy::upstream::Body,
        idle: std::time::Duration,
        farewell: bytes::Bytes,
    ) -> Self {
        Self {
            inner: Some(inner),
            idle,
            timer: Box::pin(tokio::time::sleep(idle)),
            farewell: Some(farewell),
            deadline: None,
        }
    }

    /// Also ends the stream, with `event`, when nodegate's shutdown drain deadline passes.
    pub fn ending_at(mut self, deadline: tokio::sync::watch::Receiver<bool>, event: bytes::Bytes) -> Self {
        self.deadline = Some((crate::proxy::deadline(deadline), event));
        self
    }
}

impl http_body::Body for IdleCut {
    type Data = bytes::Bytes;
    type Error = crate::proxy::upstream::BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, crate::proxy::upstream::BoxError>>>
    {
        use std::task::Poll;
        let Some(inner) = self.inner.as_mut() else { return Poll::Ready(None) };
        match std::pin::Pin::new(inner).poll_frame(cx) {
            Poll::Ready(r) => {
                let deadline = tokio::time::Instant::now() + self.idle;
                self.timer.as_mut().reset(deadline);
                if r.is_none() {
                    self.inner = None;
                }
                Poll::Ready(r)
            }
            Poll::Pending => {
                if let Some((d, _)) = self.deadline.as_mut()
                    && d.as_mut().poll(cx).is_ready()
                {
                    let event = self.deadline.take().map(|(_, e)| e);
                    self.inner = None;
                    self.farewell = None;
                    return Poll::Ready(event.map(|b| Ok(http_body::Frame::data(b))));
                }
                match self.timer.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        // Drop the agent's stream (closing it) and say why, once.
                        self.inner = None;
                        Poll::Ready(self.farewell.take().map(|b| Ok(http_body::Frame::data(b))))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn events_of_both_generations_and_split_frames() {
        let mut sum = Summary::default();
        let mut r = SseReader::default();
        let stream = concat!(
            "data: {\"result\": {\"task\": {\"id\": \"t1\", \"contextId\": \"c1\", \"status\": {\"state\": \"TASK_STATE_SUBMITTED\"}}}}\n\n",
            "data: {\"result\": {\"artifactUpdate\": {\"taskId\": \"t1\", \"artifact\": {}}}}\r\n\r\n",
            "data: {\"result\": {\"statusUpdate\": {\"taskId\": \"t1\", \"status\": {\"state\": \"TASK_STATE_COMPLETED\"}}}}\n\n"
        );
        for chunk in stream.as_bytes().chunks(7) {
            r.feed(chunk, |d| sum.observe(&serde_json::from_slice(d).unwrap()));
        }
        assert_eq!((sum.task_id.as_deref(), sum.context_id.as_deref()), (Some("t1"), Some("c1")));
        assert_eq!((sum.state.as_deref(), sum.artifacts, sum.events), (Some("TASK_STATE_COMPLETED"), 1, 3));
        let mut old = Summary::default();
        old.observe(
            &json!({"result": {"kind": "status-update", "taskId": "t9", "status": {"state": "completed"}}}),
        );
        assert_eq!((old.task_id.as_deref(), old.state.as_deref()), (Some("t9"), Some("completed")));
        old.observe(&json!({"error": {"code": -32001, "message": "Task not found"}}));
        assert_eq!(old.error.as_deref(), Some("-32001 Task not found"));
    }
}
