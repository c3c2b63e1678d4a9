//! Protocol detection from a connection's first bytes, without consuming them (MSG_PEEK): TLS
//! (with the SNI of its ClientHello), HTTP/2 prior knowledge (h2c), HTTP/1.x, or opaque TCP.
//! A client that sends nothing within the sniff timeout is treated as opaque TCP, because
//! server-speaks-first protocols (SMTP, MySQL) look exactly like that.
use std::time::Duration;

use tokio::net::TcpStream;

use crate::tls::hello as tls;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Protocol {
    Http1,
    Http2,
    Tls {
        sni: Option<String>,
    },
    Tcp,
    /// The client closed before sending anything.
    Closed,
}

impl Protocol {
    pub fn label(&self) -> &'static str {
        match self {
            Self::Http1 => "http1",
            Self::Http2 => "http2",
            Self::Tls { .. } => "tls",
            Self::Tcp => "tcp",
            Self::Closed => "closed",
        }
    }
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const METHODS: [&[u8]; 9] =
    [b"GET ", b"POST ", b"PUT ", b"DELETE ", b"HEAD ", b"OPTIONS ", b"PATCH ", b"CONNECT ", b"TRACE "];
/// Largest prefix we look at (a ClientHello with many extensions fits).
const PEEK_MAX: usize = 16 * 1024;

/// Decides from what has arrived so far; `None` means "need more bytes".
pub fn classify(buf: &[u8]) -> Option<Protocol> {
    if buf.is_empty() {
        return None;
    }
    if buf[0] == 0x16 {
        if buf.len() < 3 {
            return None;
        }
        if buf[1] == 0x03 {
            return match tls::client_hello_sni(buf) {
                Ok(sni) => Some(Protocol::Tls { sni }),
                Err(tls::Incomplete) if buf.len() < PEEK_MAX => None,
                Err(tls::Incomplete) => Some(Protocol::Tls { sni: None }),
            };
        }
        return Some(Protocol::Tcp);
    }
    let n = buf.len().min(H2_PREFACE.len());
    if buf[..n] == H2_PREFACE[..n] {
        return if n == H2_PREFACE.len() { Some(Protocol::Http2) } else { None };
    }
    let mut maybe_more = false;
    for m in METHODS {
        let k = buf.len().min(m.len());
        if buf[..k] == m[..k] {
            if k == m.len() {
                return Some(Protocol::Http1);
            }
            maybe_more = true;
        }
    }
    if maybe_more { None } else { Some(Protocol::Tcp) }
}

/// Peeks until the protocol is known or `timeout` passes.
pub async fn sniff(stream: &TcpStream, timeout: Duration) -> std::io::Result<Protocol> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut buf = vec![0u8; PEEK_MAX];
    let mut wait = Duration::from_micros(200);
    loop {
        let n = match tokio::time::timeout_at(deadline, stream.peek(&mut buf)).await {
            Ok(r) => r?,
            Err(_) => return Ok(Protocol::Tcp),
        };
        if n == 0 {
            return Ok(Protocol::Closed);
        }
        if let Some(p) = classify(&buf[..n]) {
            return Ok(p);
        }
        // Part of a first message arrived; peek does not wait for more, so back off briefly.
        if tokio::time::Instant::now() + wait >= deadline {
            return Ok(Protocol::Tcp);
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_first_bytes() {
        assert_eq!(classify(b"GET / HTTP/1.1\r\n"), Some(Protocol::Http1));
        assert_eq!(classify(b"POS"), None, "a prefix of a method needs more bytes");
        assert_eq!(classify(b"POST /v1 HTTP/1.1"), Some(Protocol::Http1));
        assert_eq!(classify(H2_PREFACE), Some(Protocol::Http2));
        assert_eq!(classify(&H2_PREFACE[..10]), None);
        assert_eq!(classify(b"\x00\x01garbage"), Some(Protocol::Tcp));
        assert_eq!(classify(b"SSH-2.0-OpenSSH"), Some(Protocol::Tcp));
        assert_eq!(classify(b"\x16\x03"), None);
    }
}
