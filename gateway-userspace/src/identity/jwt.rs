//! JSON Web Tokens as credentials: a token signed by one of the issuer's keys (JWKS), with the
//! configured `iss`, one of the configured `aud`, and `exp` (and `nbf`, if present) within the
//! leeway, names a principal by one of its claims. Everything else (expired, wrong audience or
//! issuer, a key not in the JWKS, `alg: none`, a symmetric algorithm) names nobody: the caller
//! meets the defaults a caller without a credential meets. Symmetric keys in a JWKS are refused
//! (a JWKS is public: anyone could sign with them).
use std::sync::Arc;

use jsonwebtoken::{
    Algorithm, DecodingKey, Validation,
    jwk::{AlgorithmParameters, EllipticCurve, JwkSet},
};

use crate::config;

#[derive(Debug, thiserror::Error)]
pub enum JwtError {
    #[error("reading the JWKS {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("the JWKS is not valid JSON Web Key Set: {0}")]
    Parse(String),
    #[error("the JWKS holds no usable public key")]
    NoKeys,
    #[error("token: {0}")]
    Token(String),
    #[error("no key in the JWKS for this token (kid {kid:?}, alg {alg:?})")]
    NoKey { kid: Option<String>, alg: Algorithm },
    #[error("the token has no string claim `{0}`")]
    NoPrincipal(String),
}

/// One public key and the algorithms it may verify.
struct Key {
    kid: Option<String>,
    key: DecodingKey,
    algorithms: Vec<Algorithm>,
}

/// The issuer's keys and the checks a token must pass.
pub struct JwtVerifier {
    cfg: config::Jwt,
    keys: arc_swap::ArcSwap<Vec<Key>>,
}

impl JwtVerifier {
    /// Reads `jwks_file` when set; with `jwks_url` the keys arrive by [`JwtVerifier::set_jwks`]
    /// (until then no token is valid).
    pub fn new(cfg: &config::Jwt) -> Result<Self, JwtError> {
        let v = Self { cfg: cfg.clone(), keys: arc_swap::ArcSwap::from_pointee(Vec::new()) };
        if let Some(path) = &cfg.jwks_file {
            let text = std::fs::read_to_string(path)
                .map_err(|source| JwtError::Read { path: path.clone(), source })?;
            v.set_jwks(&text)?;
        }
        Ok(v)
    }

    pub fn config(&self) -> &config::Jwt {
        &self.cfg
    }

    /// Replaces the keys with those of `text` (a JWKS document); returns how many are usable.
    pub fn set_jwks(&self, text: &str) -> Result<usize, JwtError> {
        let set: JwkSet = serde_json::from_str(text).map_err(|e| JwtError::Parse(e.to_string()))?;
        let mut keys = Vec::new();
        for jwk in &set.keys {
            let families: Vec<Algorithm> = match &jwk.algorithm {
                AlgorithmParameters::RSA(_) => vec![
                    Algorithm::RS256,
                    Algorithm::RS384,
                    Algorithm::RS512,
                    Algorithm::PS256,
                    Algorithm::PS384,
                    Algorithm::PS512,
                ],
                AlgorithmParameters::EllipticCurve(p) => match p.curve {
                    EllipticCurve::P256 => vec![Algorithm::ES256],
                    EllipticCurve::P384 => vec![Algorithm::ES384],
                    _ => continue,
                },
                AlgorithmParameters::OctetKeyPair(_) => vec![Algorithm::EdDSA],
                AlgorithmParameters::OctetKey(_) => {
                    tracing::warn!(kid = ?jwk.common.key_id, "jwt: a symmetric key in the JWKS is ignored");
                    continue;
                }
            };
            // A key that names its algorithm verifies that one only.
            let named = jwk.common.key_algorithm.and_then(|a| a.to_string().parse::<Algorithm>().ok());
            let algorithms = match named {
                Some(a) if families.contains(&a) => vec![a],
                Some(_) => continue,
                None => families,
            };
            match DecodingKey::from_jwk(jwk) {
                Ok(key) => keys.push(Key { kid: jwk.common.key_id.clone(), key, algorithms }),
                Err(e) => tracing::warn!(kid = ?jwk.common.key_id, error = %e, "jwt: a JWKS key is unusable"),
            }
        }
        if keys.is_empty() {
            return Err(JwtError::NoKeys);
        }
        let n = keys.len();
        self.keys.store(Arc::new(keys));
        Ok(n)
    }

    /// How many keys are held (0 until a `jwks_url` was first fetched).
    pub fn key_count(&self) -> usize {
        self.keys.load().len()
    }

    /// The principal `token` proves, or why it proves none.
    pub fn principal(&self, token: &str) -> Result<Arc<str>, JwtError> {
        self.verify(token).map(|(p, _)| p)
    }

    /// The principal `token` proves and its claims, or why it proves none.
    pub fn verify(&self, token: &str) -> Result<(Arc<str>, serde_json::Value), JwtError> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| JwtError::Token(e.to_string()))?;
        let keys = self.keys.load();
        let candidates = keys
            .iter()
            .filter(|k| k.algorithms.contains(&header.alg) && (header.kid.is_none() || k.kid == header.kid));
        let mut v = Validation::new(header.alg);
        v.algorithms = vec![header.alg];
        v.set_issuer(&[&self.cfg.issuer]);
        v.set_audience(&self.cfg.audiences);
        v.set_required_spec_claims(&["exp", "iss", "aud"]);
        v.leeway = self.cfg.leeway.as_secs();
        v.validate_nbf = true;
        let mut last = None;
        for k in candidates {
            match jsonwebtoken::decode::<serde_json::Value>(token, &k.key, &v) {
                Ok(data) => {
                    return match data.claims.get(&self.cfg.principal_claim).and_then(|c| c.as_str()) {
                        Some(p) if !p.is_empty() => Ok((Arc::from(p), data.claims)),
                        _ => Err(JwtError::NoPrincipal(self.cfg.principal_claim.clone())),
                    };
                }
                Err(e) => last = Some(JwtError::Token(e.to_string())),
            }
        }
        Err(last.unwrap_or(JwtError::NoKey { kid: header.kid, alg: header.alg }))
    }
}

impl JwtVerifier {
    /// Whether `token` names this gateway (the configured issuer and one of the audiences),
    /// read without checking its signature: such a token is nodegate's credential, valid or not,
    /// and never goes upstream. No cryptography: cheap enough to run on every stripped header.
    pub fn addressed_to_us(&self, token: &str) -> bool {
        use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD as B64};
        let Some(payload) = token.split('.').nth(1) else { return false };
        let Ok(bytes) = B64.decode(payload) else { return false };
        let Ok(claims) = serde_json::from_slice::<serde_json::Value>(&bytes) else { return false };
        let ours =
            |a: &serde_json::Value| a.as_str().is_some_and(|a| self.cfg.audiences.iter().any(|x| x == a));
        let aud = match claims.get("aud") {
            Some(serde_json::Value::Array(list)) => list.iter().any(ours),
            Some(a) => ours(a),
            None => false,
        };
        aud && claims.get("iss").and_then(|i| i.as_str()) == Some(self.cfg.issuer.as_str())
    }
}

/// Whether a bearer credential has the shape of a JWS compact token (three base64url parts).
pub fn looks_like_jwt(token: &str) -> bool {
    let mut n = 0;
    for part in token.split('.') {
        n += 1;
        if part.is_empty() || !part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            return false;
        }
    }
    n == 3
}

/// Fetches `jwks_url` now and every `jwks_refresh` into `verifier`, while `verifier` is live; a
/// failed fetch keeps the keys it had (and says so).
pub async fn refresh(
    verifier: std::sync::Weak<JwtVerifier>,
    url: String,
    client: hyper_util::client::legacy::Client<
        hyper_rustls::HttpsConnector<crate::proxy::upstream::Dialer>,
        crate::proxy::upstream::Body,
    >,
) {
    use http_body_util::BodyExt as _;
    // Until a first fetch succeeds (no token can be checked, /readyz waits) retries come sooner:
    // 1 s, doubling up to `jwks_refresh`.
    let mut retry = std::time::Duration::from_secs(1);
    loop {
        let Some(v) = verifier.upgrade() else { return };
        let every = v.cfg.jwks_refresh;
        let req = http::Request::get(&url)
            .header(http::header::ACCEPT, "application/json")
            .body(crate::proxy::upstream::boxed(http_body_util::Empty::new()));
        let fetched = match req {
            Ok(req) => {
                match tokio::time::timeout(std::time::Duration::from_secs(10), client.request(req)).await {
                    Ok(Ok(resp)) if resp.status().is_success() => {
                        match http_body_util::Limited::new(resp.into_body(), 1 << 20).collect().await {
                            Ok(b) => String::from_utf8(b.to_bytes().to_vec()).map_err(|e| e.to_string()),
                            Err(e) => Err(format!("reading the body: {e}")),
                        }
                    }
                    Ok(Ok(resp)) => Err(format!("answered {}", resp.status())),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err("no answer within 10 s".into()),
                }
            }
            Err(e) => Err(e.to_string()),
        };
        match fetched.and_then(|t| v.set_jwks(&t).map_err(|e| e.to_string())) {
            Ok(n) => tracing::debug!(%url, keys = n, "jwt: JWKS fetched"),
            Err(e) => {
                tracing::warn!(%url, error = %e, "jwt: fetching the JWKS failed; keeping the keys fetched before")
            }
        }
        let wait = if v.key_count() == 0 { retry.min(every) } else { every };
        retry = (retry * 2).min(every);
        drop(v);
        tokio::time::sleep(wait).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_compact_jws_shapes_are_tried() {
        assert!(looks_like_jwt("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln"));
        for not in ["sk-key-123", "a.b", "a.b.c.d", "a..c", "a.b.c=", ""] {
            assert!(!looks_like_jwt(not), "{not}");
        }
    }

    #[test]
    fn tokens_for_this_gateway_are_told_by_issuer_and_audience() {
        let cfg = config::Jwt {
            issuer: "https://issuer".into(),
            audiences: vec!["nodegate".into()],
            ..config::Jwt::default()
        };
        let v = JwtVerifier { cfg, keys: arc_swap::ArcSwap::from_pointee(Vec::new()) };
        use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD as B64};
        let token = |claims: &str| format!("eyJhbGciOiJSUzI1NiJ9.{}.c2ln", B64.encode(claims));
        assert!(v.addressed_to_us(&token(r#"{"iss":"https://issuer","aud":"nodegate"}"#)));
        assert!(v.addressed_to_us(&token(r#"{"iss":"https://issuer","aud":["x","nodegate"]}"#)));
        assert!(!v.addressed_to_us(&token(r#"{"iss":"https://issuer","aud":"other"}"#)));
        assert!(!v.addressed_to_us(&token(r#"{"iss":"https://elsewhere","aud":"nodegate"}"#)));
        assert!(!v.addressed_to_us("not.a.token"));
    }

    #[test]
    fn symmetric_keys_are_refused_and_alg_none_names_nobody() {
        let cfg = config::Jwt {
            issuer: "https://issuer".into(),
            audiences: vec!["nodegate".into()],
            ..config::Jwt::default()
        };
        let v = JwtVerifier { cfg, keys: arc_swap::ArcSwap::from_pointee(Vec::new()) };
        let oct = r#"{"keys":[{"kty":"oct","k":"c2VjcmV0","alg":"HS256","kid":"s"}]}"#;
        assert!(matches!(v.set_jwks(oct), Err(JwtError::NoKeys)));
        // {"alg":"none"}.{"sub":"x","iss":"https://issuer","aud":"nodegate","exp":9999999999}.
        let none = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4IiwiaXNzIjoiaHR0cHM6Ly9pc3N1ZXIiLCJhdWQiOiJub2RlZ2F0ZSIsImV4cCI6OTk5OTk5OTk5OX0.";
        assert!(v.principal(none).is_err());
    }
}
