//! The `jwt` section: JSON Web Tokens as credentials beside API keys. A valid token (signature
//! from the issuer's JWKS, `iss`, `aud`, `exp`, `nbf`) adds the principal named by one of its
//! claims; a missing, expired or otherwise invalid token adds nothing, so the caller meets the
//! configured defaults as any caller without a credential does.
use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Jwt {
    /// The `iss` a token must carry.
    pub issuer: String,
    /// `aud` values accepted (a token must name at least one).
    pub audiences: Vec<String>,
    /// The issuer's public keys, a JWKS file (read at start and on every reload).
    pub jwks_file: Option<String>,
    /// The issuer's JWKS URL (`https://` or `http://`), fetched at start and every
    /// `jwks_refresh`; a failed fetch keeps the keys last fetched.
    pub jwks_url: Option<String>,
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub jwks_refresh: Duration,
    /// The claim whose (string) value is the principal; `sub` by default.
    pub principal_claim: String,
    /// Clock skew allowed on `exp` and `nbf`.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub leeway: Duration,
}

impl Default for Jwt {
    fn default() -> Self {
        Self {
            issuer: String::new(),
            audiences: Vec::new(),
            jwks_file: None,
            jwks_url: None,
            jwks_refresh: Duration::from_secs(300),
            principal_claim: "sub".into(),
            leeway: Duration::from_secs(30),
        }
    }
}

/// Problems with the section, as (path, message).
pub(super) fn check(j: &Jwt, push: &mut impl FnMut(String, String)) {
    if j.issuer.is_empty() {
        push("jwt.issuer".into(), "must be set".into());
    }
    if j.audiences.is_empty() {
        push("jwt.audiences".into(), "list at least one audience".into());
    }
    match (&j.jwks_file, &j.jwks_url) {
        (None, None) => push("jwt".into(), "set jwks_file or jwks_url".into()),
        (Some(_), Some(_)) => push("jwt".into(), "set only one of jwks_file and jwks_url".into()),
        (None, Some(u)) if !(u.starts_with("https://") || u.starts_with("http://")) => {
            push("jwt.jwks_url".into(), "must be an http(s) URL".into())
        }
        _ => {}
    }
    if j.principal_claim.is_empty() {
        push("jwt.principal_claim".into(), "must not be empty".into());
    }
    if j.jwks_refresh < Duration::from_secs(10) {
        push("jwt.jwks_refresh".into(), "must be at least 10s".into());
    }
}
