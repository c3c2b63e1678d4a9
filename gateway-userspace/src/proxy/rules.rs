//! `policy.rules` on forwarded HTTP and gRPC requests (explicit and intercepted alike), and the
//! refusals they answer with: plain HTTP gets `403` (`429` with `Retry-After` for a rate limit),
//! a gRPC call gets a trailers-only answer with `grpc-status` 7 (PERMISSION_DENIED) or 8
//! (RESOURCE_EXHAUSTED), which every gRPC client reports as the call's status.
use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt, Empty};

use super::{Ctx, upstream::Body};
use crate::{
    config::PolicyProtocol,
    identity::Identity,
    policy::{Verdict, attrs},
};

/// What the gate needs to know of a request.
pub struct Asked<'a> {
    pub identity: &'a Identity,
    pub method: &'a http::Method,
    pub path: &'a str,
    pub headers: &'a http::HeaderMap,
    /// The Host header (intercepted requests go to `address` whatever it says).
    pub host: Option<&'a str>,
    /// Where it goes, `host:port`.
    pub authority: &'a str,
    /// The intercepted connection's original destination.
    pub address: Option<SocketAddr>,
    pub grpc: Option<(&'a str, &'a str)>,
}

/// Decides for a request with the live rules.
pub fn decide(ctx: &Ctx, a: &Asked<'_>) -> Verdict {
    let protocol = if a.grpc.is_some() { PolicyProtocol::Grpc } else { PolicyProtocol::Http };
    let port = a.authority.rsplit_once(':').and_then(|(_, p)| p.parse().ok()).unwrap_or(0);
    // Explicit requests go where their URI's authority says: that is the destination rules see,
    // not a Host header the caller may set to anything. Intercepted ones go to the kernel's
    // original destination (`address`); their Host is only what the client claims.
    let named = if a.address.is_some() { a.host } else { Some(a.authority) };
    let host = named.map(|h| h.rsplit_once(':').map_or(h, |(name, _)| name).trim_matches(['[', ']']));
    let mut input = attrs::Input::new(protocol, a.identity);
    input.destination = attrs::Destination { host, port, address: a.address };
    input.request = Some(attrs::RequestAttrs { method: a.method.as_str(), path: a.path, headers: a.headers });
    input.grpc = a.grpc;
    ctx.policy.decide(&ctx.metrics, &input)
}

/// The answer to a request a rule refused.
pub fn refusal(d: &crate::policy::Denial, grpc: bool) -> Response<Body> {
    let msg = Verdict::message(d);
    if grpc {
        let code = if d.retry_after.is_some() { "8" } else { "7" };
        let mut r = Response::new(Empty::<Bytes>::new().map_err(|never| match never {}).boxed());
        let h = r.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        h.insert("grpc-status", HeaderValue::from_static(code));
        h.insert("grpc-message", grpc_message(&msg));
        return r;
    }
    let status = if d.retry_after.is_some() { StatusCode::TOO_MANY_REQUESTS } else { StatusCode::FORBIDDEN };
    let mut r = super::http::error_response(status, &msg);
    if let Some(after) = d.retry_after {
        r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(after.as_secs().max(1)));
    }
    r
}

/// `grpc-message` is percent-encoded UTF-8 (gRPC over HTTP/2: anything outside printable ASCII,
/// and `%` itself).
fn grpc_message(msg: &str) -> HeaderValue {
    let mut out = String::with_capacity(msg.len());
    for b in msg.bytes() {
        if (0x20..0x7f).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    HeaderValue::from_str(&out).unwrap_or_else(|_| HeaderValue::from_static("denied by nodegate policy"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_messages_are_percent_encoded() {
        assert_eq!(grpc_message("a 100% ü"), "a 100%25 %C3%BC");
    }
}
