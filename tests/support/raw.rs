//! Raw HTTP/1.1 over sockets made in a test's network namespace: for tests that must control
//! every byte (partial headers, stalled bodies, held connections) and time each exchange.
use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
    time::Duration,
};

use crate::{Netns, in_netns};

pub struct Answer {
    pub status: u16,
    /// Status line and headers, as received.
    pub head: String,
    pub body: Vec<u8>,
}

/// A connection to `to` made inside `ns` (15 s read timeout).
pub fn connect(ns: &Netns, to: &str) -> TcpStream {
    let to = to.to_string();
    let s = in_netns(ns, move || TcpStream::connect(&to).unwrap_or_else(|e| panic!("connect: {e:?}")));
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap_or_else(|e| panic!("timeout: {e:?}"));
    s
}

/// Reads one response (Content-Length framed, or to EOF).
pub fn read_answer(s: &TcpStream) -> std::io::Result<Answer> {
    let mut r = BufReader::new(s.try_clone()?);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("closed after {head:?}"),
            ));
        }
        if line.trim_end().is_empty() {
            break;
        }
        head.push_str(&line);
    }
    let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let len = head
        .lines()
        .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("content-length")))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok());
    let mut body = Vec::new();
    match len {
        Some(n) => {
            body.resize(n, 0);
            r.read_exact(&mut body)?;
        }
        None => {
            r.read_to_end(&mut body)?;
        }
    }
    Ok(Answer { status, head, body })
}

/// One request on a new connection to `to`; panics without an answer.
pub fn send_to(ns: &Netns, to: &str, request: &str) -> Answer {
    let mut s = connect(ns, to);
    s.write_all(request.as_bytes()).unwrap_or_else(|e| panic!("write request: {e:?}"));
    read_answer(&s).unwrap_or_else(|e| panic!("no answer from {to}: {e}"))
}
