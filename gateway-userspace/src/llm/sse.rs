//! Incremental server-sent-events framing: bytes in as they arrive, whole events out with their
//! raw bytes (so events can be passed on untouched or dropped) and their `data` field.
use bytes::{Bytes, BytesMut};

#[derive(Debug, Default)]
pub struct Splitter {
    buf: BytesMut,
}

#[derive(Debug, PartialEq, Eq)]
pub struct Event {
    /// The event exactly as received, including its terminating blank line.
    pub raw: Bytes,
    /// `event:` field, if any.
    pub name: Option<String>,
    /// `data:` lines joined by newlines.
    pub data: String,
}

/// Largest event buffered while waiting for its end; past it the bytes pass through unparsed.
const MAX_EVENT: usize = 4 * 1024 * 1024;

impl Splitter {
    /// Feeds bytes; returns the events they completed. Bytes of an event that grows past
    /// `MAX_EVENT` are returned as one unparsed event so nothing is held back forever.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<Event> {
        self.buf.extend_from_slice(chunk);
        let mut out = Vec::new();
        while let Some(end) = find_end(&self.buf) {
            let raw = self.buf.split_to(end).freeze();
            out.push(parse(raw));
        }
        if self.buf.len() > MAX_EVENT {
            let raw = self.buf.split().freeze();
            out.push(Event { raw, name: None, data: String::new() });
        }
        out
    }

    /// What is left when the stream ends (an unterminated last event).
    pub fn finish(&mut self) -> Option<Event> {
        (!self.buf.is_empty()).then(|| parse(self.buf.split().freeze()))
    }
}

/// Index just past the first blank line (`\n\n`, `\r\n\r\n` or `\r\r`).
fn find_end(b: &[u8]) -> Option<usize> {
    let mut i = 0;
    while i + 1 < b.len() {
        if b[i] == b'\n' && b[i + 1] == b'\n' {
            return Some(i + 2);
        }
        if b[i] == b'\r' && b[i + 1] == b'\n' && b.get(i + 2) == Some(&b'\r') && b.get(i + 3) == Some(&b'\n')
        {
            return Some(i + 4);
        }
        i += 1;
    }
    None
}

fn parse(raw: Bytes) -> Event {
    let text = String::from_utf8_lossy(&raw);
    let mut name = None;
    let mut data = String::new();
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("data:") {
            if !data.is_empty() {
                data.push('\n');
            }
            data.push_str(v.strip_prefix(' ').unwrap_or(v));
        } else if let Some(v) = line.strip_prefix("event:") {
            name = Some(v.trim().to_string());
        }
    }
    Event { raw, name, data }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_events_across_arbitrary_chunk_boundaries() {
        let stream = b"event: message_start\ndata: {\"a\":1}\n\ndata: {\"b\":2}\r\n\r\ndata: [DONE]\n\n";
        for cut in 1..stream.len() {
            let mut s = Splitter::default();
            let mut events = s.push(&stream[..cut]);
            events.extend(s.push(&stream[cut..]));
            assert_eq!(events.len(), 3, "cut at {cut}");
            assert_eq!(events[0].name.as_deref(), Some("message_start"));
            assert_eq!(events[0].data, "{\"a\":1}");
            assert_eq!(events[1].data, "{\"b\":2}");
            assert_eq!(events[2].data, "[DONE]");
            let joined: Vec<u8> = events.iter().flat_map(|e| e.raw.to_vec()).collect();
            assert_eq!(joined, stream.to_vec(), "raw bytes must be preserved exactly");
        }
    }
}
