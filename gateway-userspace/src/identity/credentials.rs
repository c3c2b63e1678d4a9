//! Credentials a caller presents beside its connection: API keys and JSON Web Tokens (`jwt`);
//! client certificates on terminated TLS name theirs in `tls::peer`. A valid credential adds a *principal* to the identity the
//! kernel gave the connection; it never replaces the workload, so a key cannot carry a caller out
//! of the budgets, allow lists and tool rules its cgroup is under.
//!
//! Keys are held only as SHA-256 digests and compared in constant time. A key configured with a
//! cgroup counts only from that cgroup (or below it): a key copied into another pod proves
//! nothing. This module names callers; it does not decide what they may do (`policy` does).
use std::{collections::HashMap, sync::Arc};

use http::{HeaderMap, HeaderName, header};
use sha2::{Digest as _, Sha256};

use super::Identity;
use crate::config::IdentityMapping;

type Digest = [u8; 32];

struct Entry {
    digest: Digest,
    principal: Arc<str>,
    /// The key counts only from this cgroup path or below it.
    cgroup: Option<String>,
}

/// The configured API keys, by digest, and the verifier of JSON Web Tokens if one is set.
#[derive(Default)]
pub struct Keys {
    by_digest: HashMap<Digest, Entry>,
    pub jwt: Option<Arc<super::jwt::JwtVerifier>>,
}

fn digest(key: &str) -> Digest {
    Sha256::digest(key.trim().as_bytes()).into()
}

/// Equality that takes the same time wherever the inputs differ.
fn ct_eq(a: &Digest, b: &Digest) -> bool {
    a.iter().zip(b.iter()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether `presented` is `expected`, compared as digests in constant time (for one secret such
/// as the admin token).
pub fn secret_matches(presented: &str, expected: &str) -> bool {
    ct_eq(&digest(presented), &digest(expected))
}

impl Keys {
    pub fn new(mappings: &[IdentityMapping]) -> Self {
        let mut by_digest = HashMap::new();
        for m in mappings {
            for k in &m.api_keys {
                let d = digest(k.expose());
                let cgroup = m.cgroup.as_deref().map(super::normalize);
                by_digest.insert(d, Entry { digest: d, principal: Arc::from(m.name.as_str()), cgroup });
            }
        }
        Self { by_digest, jwt: None }
    }

    pub fn with_jwt(mut self, jwt: Option<Arc<super::jwt::JwtVerifier>>) -> Self {
        self.jwt = jwt;
        self
    }

    pub fn is_empty(&self) -> bool {
        self.by_digest.is_empty() && self.jwt.is_none()
    }

    /// Whether `token` is a JSON Web Token for this gateway (valid or not; see
    /// [`super::jwt::JwtVerifier::addressed_to_us`]).
    fn jwt_addressed_to_us(&self, token: &str) -> bool {
        self.jwt.as_ref().is_some_and(|v| super::jwt::looks_like_jwt(token) && v.addressed_to_us(token))
    }

    /// The principal a valid JSON Web Token names and its claims, when tokens are configured.
    fn jwt_principal(&self, token: &str) -> Option<(Arc<str>, serde_json::Value)> {
        let v = self.jwt.as_ref().filter(|_| super::jwt::looks_like_jwt(token))?;
        match v.verify(token) {
            Ok(p) => Some(p),
            Err(e) => {
                tracing::debug!(error = %e, "a bearer token was not a valid JWT for jwt.issuer; no principal");
                None
            }
        }
    }

    /// The principal `key` proves for a caller in cgroup `cgroup_path`, if any.
    pub fn principal(&self, key: &str, cgroup_path: Option<&str>) -> Option<Arc<str>> {
        let d = digest(key);
        let e = self.by_digest.get(&d)?;
        if !ct_eq(&e.digest, &d) {
            return None;
        }
        if let Some(bound) = &e.cgroup
            && !cgroup_path.is_some_and(|p| super::is_under(p, bound))
        {
            tracing::warn!(
                principal = %e.principal,
                cgroup = cgroup_path.unwrap_or("(unknown)"),
                "an API key bound to cgroup {bound} was presented from elsewhere; ignored"
            );
            return None;
        }
        Some(e.principal.clone())
    }

    /// Whether `key` is one of ours (whoever presents it).
    pub fn is_ours(&self, key: &str) -> bool {
        let d = digest(key);
        self.by_digest.get(&d).is_some_and(|e| ct_eq(&e.digest, &d))
    }
}

/// Headers that may carry a nodegate key, and how to read the key from each.
const KEY_HEADERS: [(HeaderName, bool); 3] = [
    (header::AUTHORIZATION, true),
    (header::PROXY_AUTHORIZATION, true),
    (HeaderName::from_static("x-api-key"), false),
];

/// The token of a `Bearer` credential in header `name` (scheme matched case-insensitively).
pub fn bearer<'h>(h: &'h HeaderMap, name: &HeaderName) -> Option<&'h str> {
    let (scheme, rest) = h.get(name)?.to_str().ok()?.trim().split_once(' ')?;
    let token = rest.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

fn key_in<'h>(h: &'h HeaderMap, name: &HeaderName, is_bearer: bool) -> Option<&'h str> {
    if is_bearer {
        return bearer(h, name);
    }
    let v = h.get(name)?.to_str().ok()?.trim();
    (!v.is_empty()).then_some(v)
}

/// Who is calling: the connection's identity (what the kernel said) plus the principal of the
/// first nodegate key the request presents, if it is valid from the caller's cgroup.
pub fn caller(keys: &Keys, conn: &Arc<Identity>, headers: &HeaderMap) -> Arc<Identity> {
    if keys.is_empty() {
        return conn.clone();
    }
    for (name, bearer) in &KEY_HEADERS {
        let Some(key) = key_in(headers, name, *bearer) else { continue };
        if let Some(principal) = keys.principal(key, conn.cgroup_path.as_deref()) {
            return Arc::new(Identity { principal: Some(principal), ..(**conn).clone() });
        }
        if let Some((principal, claims)) = keys.jwt_principal(key) {
            let claims = Some(Arc::new(claims));
            return Arc::new(Identity { principal: Some(principal), claims, ..(**conn).clone() });
        }
    }
    conn.clone()
}

/// Removes every header that carries a nodegate key or a JSON Web Token addressed to this
/// gateway (valid or not), so no credential of ours goes upstream. Other credentials (an agent's
/// own token for a service) are left alone.
pub fn strip_credentials(keys: &Keys, headers: &mut HeaderMap) {
    if keys.is_empty() {
        return;
    }
    for (name, bearer) in &KEY_HEADERS {
        if key_in(headers, name, *bearer).is_some_and(|k| keys.is_ours(k) || keys.jwt_addressed_to_us(k)) {
            headers.remove(name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn keys() -> Keys {
        Keys::new(&[
            IdentityMapping {
                name: "anywhere".into(),
                cgroup: None,
                api_keys: vec!["key-anywhere-1".into()],
            },
            IdentityMapping {
                name: "bound".into(),
                cgroup: Some("/pods/a".into()),
                api_keys: vec!["key-bound-0001".into()],
            },
        ])
    }

    fn conn(cg: Option<&str>) -> Arc<Identity> {
        Arc::new(Identity { cgroup_path: cg.map(Arc::from), ..Identity::named("/pods/x") })
    }

    #[test]
    fn a_key_adds_a_principal_and_keeps_the_workload() {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer key-anywhere-1"));
        let id = caller(&keys(), &conn(Some("/pods/x")), &h);
        assert_eq!(id.principal.as_deref(), Some("anywhere"));
        assert_eq!(&*id.workload, "/pods/x", "the kernel's workload stays");
    }

    #[test]
    fn a_bound_key_counts_only_from_its_cgroup() {
        let mut h = HeaderMap::new();
        h.insert("x-api-key", HeaderValue::from_static("key-bound-0001"));
        assert_eq!(caller(&keys(), &conn(Some("/pods/a/c1")), &h).principal.as_deref(), Some("bound"));
        assert_eq!(caller(&keys(), &conn(Some("/pods/b")), &h).principal, None);
        assert_eq!(caller(&keys(), &conn(None), &h).principal, None);
    }

    #[test]
    fn unknown_keys_add_nothing_and_only_our_keys_are_stripped() {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer someone-elses-token"));
        h.insert(header::PROXY_AUTHORIZATION, HeaderValue::from_static("bearer key-anywhere-1"));
        assert_eq!(caller(&keys(), &conn(None), &h).principal.as_deref(), Some("anywhere"));
        strip_credentials(&keys(), &mut h);
        assert!(h.get(header::PROXY_AUTHORIZATION).is_none());
        assert_eq!(h.get(header::AUTHORIZATION).unwrap(), "Bearer someone-elses-token");
    }
}
