//! A test PKI made with rcgen: CAs and leaf certificates written as PEM files, including the
//! bad ones the TLS suites need (expired, issued for another name).
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose, SanType, string::Ia5String,
};
use time::{Duration, OffsetDateTime};

/// A CA whose certificate is at `cert`.
pub struct TestCa {
    pub cert: PathBuf,
    pub key: PathBuf,
    issuer: Issuer<'static, KeyPair>,
}

/// A leaf certificate and key, PEM files.
pub struct Leaf {
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

impl TestCa {
    /// Writes `<dir>/<name>.crt` and `.key`.
    pub fn new(dir: &Path, name: &str) -> Self {
        let key = KeyPair::generate().unwrap_or_else(|e| panic!("keygen: {e}"));
        let mut p = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        p.distinguished_name = dn;
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
        let now = OffsetDateTime::now_utc();
        p.not_before = now - Duration::days(1);
        p.not_after = now + Duration::days(30);
        let cert = p.self_signed(&key).unwrap_or_else(|e| panic!("self-sign: {e}"));
        let (cert_path, key_path) = (dir.join(format!("{name}.crt")), dir.join(format!("{name}.key")));
        write(&cert_path, &cert.pem());
        write(&key_path, &key.serialize_pem());
        Self { cert: cert_path, key: key_path, issuer: Issuer::new(p, key) }
    }

    /// A server (and client) certificate for `names`, valid now unless `expired`.
    pub fn issue(&self, dir: &Path, file: &str, names: &[&str], expired: bool) -> Leaf {
        let key = KeyPair::generate().unwrap_or_else(|e| panic!("keygen: {e}"));
        let mut p = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .unwrap_or_else(|e| panic!("params: {e}"));
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, names.first().copied().unwrap_or("leaf"));
        p.distinguished_name = dn;
        p.extended_key_usages =
            vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        let now = OffsetDateTime::now_utc();
        (p.not_before, p.not_after) = if expired {
            (now - Duration::days(10), now - Duration::days(1))
        } else {
            (now - Duration::days(1), now + Duration::days(10))
        };
        let cert = p.signed_by(&key, &self.issuer).unwrap_or_else(|e| panic!("sign: {e}"));
        let leaf = Leaf { cert: dir.join(format!("{file}.crt")), key: dir.join(format!("{file}.key")) };
        write(&leaf.cert, &cert.pem());
        write(&leaf.key, &key.serialize_pem());
        leaf
    }

    /// A client certificate whose URI SAN is `uri` (a SPIFFE ID), valid now.
    pub fn issue_client(&self, dir: &Path, file: &str, uri: &str) -> Leaf {
        let key = KeyPair::generate().unwrap_or_else(|e| panic!("keygen: {e}"));
        let mut p = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, file);
        p.distinguished_name = dn;
        let uri = Ia5String::try_from(uri).unwrap_or_else(|e| panic!("{uri}: {e}"));
        p.subject_alt_names = vec![SanType::URI(uri)];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let now = OffsetDateTime::now_utc();
        (p.not_before, p.not_after) = (now - Duration::days(1), now + Duration::days(10));
        let cert = p.signed_by(&key, &self.issuer).unwrap_or_else(|e| panic!("sign: {e}"));
        let leaf = Leaf { cert: dir.join(format!("{file}.crt")), key: dir.join(format!("{file}.key")) };
        write(&leaf.cert, &cert.pem());
        write(&leaf.key, &key.serialize_pem());
        leaf
    }
}
