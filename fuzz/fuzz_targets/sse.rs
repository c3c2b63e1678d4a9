//! Server-sent events from untrusted upstreams, split at arbitrary points: the LLM splitter and
//! the A2A reader must not panic and must see the same events however the bytes are cut.
#![no_main]
use libfuzzer_sys::fuzz_target;
use nodegate::{a2a::stream::SseReader, llm::sse::Splitter};

fuzz_target!(|data: &[u8]| {
    let Some((&cut, body)) = data.split_first() else { return };
    let at = if body.is_empty() { 0 } else { cut as usize % body.len() };
    let whole = {
        let mut r = SseReader::default();
        let mut out = Vec::new();
        r.feed(body, |e| out.push(e.to_vec()));
        out
    };
    let mut r = SseReader::default();
    let mut split = Vec::new();
    r.feed(&body[..at], |e| split.push(e.to_vec()));
    r.feed(&body[at..], |e| split.push(e.to_vec()));
    assert_eq!(whole, split, "events depend on where the stream was cut");

    let mut s = Splitter::default();
    let mut a: Vec<_> = s.push(body).into_iter().map(|e| e.data).collect();
    a.extend(s.finish().map(|e| e.data));
    let mut s = Splitter::default();
    let mut b: Vec<_> = s.push(&body[..at]).into_iter().map(|e| e.data).collect();
    b.extend(s.push(&body[at..]).into_iter().map(|e| e.data));
    b.extend(s.finish().map(|e| e.data));
    assert_eq!(a, b, "LLM events depend on where the stream was cut");
});
