//! Downstream sessions of the handshake era (`Mcp-Session-Id`). The id carries the session's
//! state itself, signed with HMAC-SHA256: the negotiated version, the client's info and
//! capabilities and the identity it belongs to. Any gateway holding the key (this one after a
//! restart, or another replica) continues the session without shared storage.
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD as B64};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::Sha256;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    /// Protocol version agreed at initialize.
    pub v: String,
    /// The workload the session was opened by; another workload cannot use it.
    pub who: String,
    /// Client info and capabilities from initialize, replayed to servers that need them.
    #[serde(default)]
    pub info: Value,
    #[serde(default)]
    pub caps: Value,
    /// Random part, so that two sessions opened in the same instant differ.
    pub n: u64,
    /// When it was opened (Unix seconds); it is valid for `mcp.session_ttl` from then.
    #[serde(default)]
    pub t: u64,
}

/// Now, in Unix seconds.
pub fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SessionError {
    #[error("malformed session id")]
    Malformed,
    #[error("session id signature does not verify (unknown or forged session)")]
    BadSignature,
    #[error("session belongs to another workload")]
    WrongOwner,
    #[error("session expired")]
    Expired,
}

#[derive(Clone)]
pub struct Keys {
    key: Vec<u8>,
}

impl Keys {
    pub fn new(key: Vec<u8>) -> Self {
        Self { key }
    }

    /// 32 bytes from the kernel's CSPRNG.
    pub fn random() -> std::io::Result<Self> {
        let mut key = vec![0u8; 32];
        std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut key)?;
        Ok(Self { key })
    }

    fn mac(&self, data: &[u8]) -> Hmac<Sha256> {
        // HMAC takes keys of any length; this cannot fail.
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC accepts every key length"));
        m.update(data);
        m
    }

    pub fn encode(&self, s: &Session) -> String {
        let body = B64.encode(serde_json::to_vec(s).unwrap_or_default());
        let tag = B64.encode(self.mac(body.as_bytes()).finalize().into_bytes());
        format!("{body}.{tag}")
    }

    /// The session `id` carries, if it verifies, belongs to `who` and is younger than `ttl`.
    pub fn decode(&self, id: &str, who: &str, ttl: std::time::Duration) -> Result<Session, SessionError> {
        let (body, tag) = id.split_once('.').ok_or(SessionError::Malformed)?;
        let tag = B64.decode(tag).map_err(|_| SessionError::Malformed)?;
        self.mac(body.as_bytes()).verify_slice(&tag).map_err(|_| SessionError::BadSignature)?;
        let raw = B64.decode(body).map_err(|_| SessionError::Malformed)?;
        let s: Session = serde_json::from_slice(&raw).map_err(|_| SessionError::Malformed)?;
        if s.who != who {
            return Err(SessionError::WrongOwner);
        }
        if now().saturating_sub(s.t) > ttl.as_secs() {
            return Err(SessionError::Expired);
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session() -> Session {
        Session {
            v: "2025-11-25".into(),
            who: "agent".into(),
            info: Value::Null,
            caps: Value::Null,
            n: 7,
            t: now(),
        }
    }

    #[test]
    fn a_session_id_round_trips_under_the_same_key_only() {
        let k = Keys::new(b"0123456789abcdef0123456789abcdef".to_vec());
        let id = k.encode(&session());
        let day = std::time::Duration::from_secs(86400);
        assert_eq!(k.decode(&id, "agent", day).unwrap(), session());
        let other = Keys::new(b"another key of thirty-two bytes!".to_vec());
        assert_eq!(other.decode(&id, "agent", day).unwrap_err(), SessionError::BadSignature);
        assert_eq!(k.decode(&id, "intruder", day).unwrap_err(), SessionError::WrongOwner);
        let (body, tag) = id.split_once('.').unwrap();
        let forged = format!("{}A.{tag}", body);
        assert!(k.decode(&forged, "agent", day).is_err());
        assert_eq!(k.decode("nodot", "agent", day).unwrap_err(), SessionError::Malformed);
        let old = k.encode(&Session { t: now() - 7200, ..session() });
        assert_eq!(
            k.decode(&old, "agent", std::time::Duration::from_secs(3600)).unwrap_err(),
            SessionError::Expired
        );
    }
}
