//! The node CA: loaded from PEM files (or created by `nodegate ca init`), it mints a leaf
//! certificate per server name a client asks for, on the fly, when nodegate terminates TLS.
//!
//! Leaves share one ECDSA P-256 key made at start (never written anywhere), so minting is one
//! signature; they live `leaf_ttl`, are cached per name up to `leaf_cache` entries, and are
//! minted again a tenth of their lifetime before they expire. The CA key stays in memory only.
use std::{
    collections::HashMap,
    path::Path,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose,
};
use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, pem::PemObject};
use time::OffsetDateTime;

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("cannot read {0}: {1}")]
    Read(String, std::io::Error),
    #[error("{0}: not a PEM certificate")]
    Cert(String),
    #[error(
        "{0}: not a PEM private key nodegate can sign with (ECDSA P-256/P-384, Ed25519 or RSA, PKCS#8): {1}"
    )]
    Key(String, rcgen::Error),
    #[error("{0} is not a CA certificate (basic constraints CA:TRUE are required)")]
    NotCa(String),
    #[error("the key in {key} does not belong to the certificate in {cert}")]
    Mismatch { cert: String, key: String },
    #[error("the CA certificate in {0} has expired")]
    Expired(String),
    #[error("minting a certificate: {0}")]
    Mint(String),
    #[error("{0} exists; pass --force to replace it")]
    Exists(String),
    #[error("cannot write {0}: {1}")]
    Write(String, std::io::Error),
}

pub struct NodeCa {
    issuer: Issuer<'static, KeyPair>,
    ca_der: CertificateDer<'static>,
    /// SHA-256 of the CA certificate, hex (shown by status and the config dump).
    pub fingerprint: String,
    pub not_after: OffsetDateTime,
    leaf_key: KeyPair,
    leaf_signer: Arc<dyn rustls::sign::SigningKey>,
    ttl: Duration,
    cap: usize,
    cache: Mutex<HashMap<String, Leaf>>,
    /// Leaves minted since start (a metric).
    pub minted: prometheus_client::metrics::counter::Counter,
}

struct Leaf {
    key: Arc<CertifiedKey>,
    renew_at: Instant,
    made: Instant,
}

impl std::fmt::Debug for NodeCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeCa").field("fingerprint", &self.fingerprint).finish_non_exhaustive()
    }
}

fn read(path: &Path) -> Result<String, CaError> {
    std::fs::read_to_string(path).map_err(|e| CaError::Read(path.display().to_string(), e))
}

impl NodeCa {
    /// Loads the CA from its files and checks that the key is the certificate's and that the
    /// certificate is a CA still valid.
    pub fn load(
        cert: &Path,
        key: &Path,
        ttl: Duration,
        cap: usize,
        minted: prometheus_client::metrics::counter::Counter,
    ) -> Result<Self, CaError> {
        let (cert_name, key_name) = (cert.display().to_string(), key.display().to_string());
        let cert_pem = read(cert)?;
        let key_pem = read(key)?;
        let ca_der: CertificateDer<'static> = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|_| CaError::Cert(cert_name.clone()))?;
        let (_, x509) =
            x509_parser::parse_x509_certificate(&ca_der).map_err(|_| CaError::Cert(cert_name.clone()))?;
        if !x509.is_ca() {
            return Err(CaError::NotCa(cert_name));
        }
        let not_after = x509.validity().not_after.to_datetime();
        if not_after <= OffsetDateTime::now_utc() {
            return Err(CaError::Expired(cert_name));
        }
        let ca_key = KeyPair::from_pem(&key_pem).map_err(|e| CaError::Key(key_name.clone(), e))?;
        if x509.public_key().subject_public_key.data.as_ref() != rcgen::PublicKeyData::der_bytes(&ca_key) {
            return Err(CaError::Mismatch { cert: cert_name, key: key_name });
        }
        let issuer = Issuer::from_ca_cert_der(&ca_der, ca_key).map_err(|_| CaError::Cert(cert_name))?;
        let fingerprint = fingerprint(&ca_der);
        let leaf_key = KeyPair::generate().map_err(|e| CaError::Mint(e.to_string()))?;
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
        let leaf_signer =
            rustls::crypto::ring::sign::any_supported_type(&der).map_err(|e| CaError::Mint(e.to_string()))?;
        Ok(Self {
            issuer,
            ca_der,
            fingerprint,
            not_after,
            leaf_key,
            leaf_signer,
            ttl,
            cap: cap.max(1),
            cache: Mutex::new(HashMap::new()),
            minted,
        })
    }

    /// The leaf for `name`, from the cache or minted now.
    pub fn leaf(&self, name: &str) -> Result<Arc<CertifiedKey>, CaError> {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        let now = Instant::now();
        {
            let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(l) = cache.get(&name)
                && l.renew_at > now
            {
                return Ok(l.key.clone());
            }
        }
        let key = Arc::new(self.mint(&name)?);
        self.minted.inc();
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= self.cap && !cache.contains_key(&name) {
            // Drop what is due for renewal, else the oldest.
            cache.retain(|_, l| l.renew_at > now);
            if cache.len() >= self.cap
                && let Some(oldest) = cache.iter().min_by_key(|(_, l)| l.made).map(|(k, _)| k.clone())
            {
                cache.remove(&oldest);
            }
        }
        let renew_at = now + self.ttl - self.ttl / 10;
        cache.insert(name, Leaf { key: key.clone(), renew_at, made: now });
        Ok(key)
    }

    pub fn cached(&self) -> usize {
        self.cache.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    fn mint(&self, name: &str) -> Result<CertifiedKey, CaError> {
        let mut params =
            CertificateParams::new(vec![name.to_string()]).map_err(|e| CaError::Mint(e.to_string()))?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        params.distinguished_name = dn;
        let now = OffsetDateTime::now_utc();
        // An hour of slack for clients whose clocks run behind; never past the CA's own end.
        params.not_before = now - time::Duration::hours(1);
        params.not_after = (now + self.ttl).min(self.not_after);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let cert =
            params.signed_by(&self.leaf_key, &self.issuer).map_err(|e| CaError::Mint(e.to_string()))?;
        Ok(CertifiedKey::new(vec![cert.der().clone(), self.ca_der.clone()], self.leaf_signer.clone()))
    }
}

impl rustls::server::ResolvesServerCert for NodeCa {
    fn resolve(&self, hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let name = hello.server_name()?;
        match self.leaf(name) {
            Ok(k) => Some(k),
            Err(e) => {
                tracing::warn!(sni = name, error = %e, "cannot mint a leaf certificate");
                None
            }
        }
    }
}

/// Creates a CA: `cert` (PEM, world-readable) and `key` (PEM, mode 0600). Refuses to replace
/// existing files unless `force`.
pub fn init(cert: &Path, key: &Path, common_name: &str, days: u32, force: bool) -> Result<String, CaError> {
    for p in [cert, key] {
        if p.exists() && !force {
            return Err(CaError::Exists(p.display().to_string()));
        }
    }
    let ca_key = KeyPair::generate().map_err(|e| CaError::Mint(e.to_string()))?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn.push(DnType::OrganizationName, "nodegate");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages =
        vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(i64::from(days));
    let made = params.self_signed(&ca_key).map_err(|e| CaError::Mint(e.to_string()))?;
    write_private(key, ca_key.serialize_pem().as_bytes())?;
    std::fs::write(cert, made.pem()).map_err(|e| CaError::Write(cert.display().to_string(), e))?;
    Ok(fingerprint(made.der()))
}

/// SHA-256 of a DER certificate, lowercase hex with colons (as `openssl x509 -fingerprint -sha256`
/// prints it, modulo case).
pub fn fingerprint(der: &[u8]) -> String {
    use sha2::Digest as _;
    let d = sha2::Sha256::digest(der);
    d.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), CaError> {
    use std::{io::Write as _, os::unix::fs::OpenOptionsExt as _};
    let w = |e| CaError::Write(path.display().to_string(), e);
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map_err(w)?;
    f.write_all(bytes).map_err(w)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ca(dir: &Path, cap: usize) -> NodeCa {
        let (c, k) = (dir.join("ca.crt"), dir.join("ca.key"));
        init(&c, &k, "test CA", 30, false).unwrap();
        NodeCa::load(&c, &k, Duration::from_secs(3600), cap, Default::default()).unwrap()
    }

    #[test]
    fn leaves_are_cached_per_name_and_bounded() {
        let dir = std::env::temp_dir().join(format!("ngca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = ca(&dir, 2);
        let a = ca.leaf("API.Example.com.").unwrap();
        let again = ca.leaf("api.example.com").unwrap();
        assert!(Arc::ptr_eq(&a, &again), "one leaf per name, whatever its case");
        ca.leaf("b.example.com").unwrap();
        ca.leaf("c.example.com").unwrap();
        assert_eq!(ca.cached(), 2);
        assert_eq!(ca.minted.get(), 3);
        let (_, leaf) = x509_parser::parse_x509_certificate(&a.cert[0]).unwrap();
        let san = leaf.subject_alternative_name().unwrap().unwrap();
        assert!(format!("{:?}", san.value).contains("api.example.com"));
        assert!(
            init(&dir.join("ca.crt"), &dir.join("ca.key"), "x", 1, false).is_err(),
            "no silent overwrite"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_key_that_is_not_the_certificates_is_refused() {
        let dir = std::env::temp_dir().join(format!("ngca2-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (c, k) = (dir.join("a.crt"), dir.join("a.key"));
        init(&c, &k, "a", 30, false).unwrap();
        let (c2, k2) = (dir.join("b.crt"), dir.join("b.key"));
        init(&c2, &k2, "b", 30, false).unwrap();
        let e = NodeCa::load(&c, &k2, Duration::from_secs(60), 4, Default::default()).unwrap_err();
        assert!(matches!(e, CaError::Mismatch { .. }), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
