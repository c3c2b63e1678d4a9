//! Client certificates on terminated TLS (`tls.client_certs`): the handshake asks the client for
//! a certificate and verifies any it presents against the configured CAs (and only those: the
//! system's roots are not client roots). A verified certificate names a principal, as a valid API
//! key or JWT does: its first URI SAN (a SPIFFE ID such as `spiffe://cluster/ns/a/sa/agent`),
//! else its subject's common name. It adds that principal to the identity the kernel gave the
//! connection and never replaces the workload. A client without a certificate is served and
//! meets the defaults (unless `required`); a certificate that does not verify fails the handshake.
use std::{path::PathBuf, sync::Arc};

use rustls::{
    RootCertStore,
    pki_types::{CertificateDer, pem::PemObject as _},
    server::{WebPkiClientVerifier, danger::ClientCertVerifier},
};

use super::client::ClientError;

/// The verifier for `tls.client_certs`.
pub fn verifier(ca_files: &[PathBuf], required: bool) -> Result<Arc<dyn ClientCertVerifier>, ClientError> {
    let mut roots = RootCertStore::empty();
    for path in ca_files {
        let name = path.display().to_string();
        let pem = std::fs::read(path).map_err(|e| ClientError::Read(name.clone(), e))?;
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem).flatten().collect();
        if certs.is_empty() {
            return Err(ClientError::NoCert(name));
        }
        let (added, _) = roots.add_parsable_certificates(certs);
        if added == 0 {
            return Err(ClientError::NoCert(name));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let b = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
    let b = if required { b } else { b.allow_unauthenticated() };
    b.build().map_err(|e| ClientError::ClientRoots(e.to_string()))
}

/// The principal a verified client certificate names: its first URI SAN, else its subject CN.
pub fn principal(cert: &CertificateDer<'_>) -> Option<Arc<str>> {
    let (_, x) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    if let Ok(Some(san)) = x.subject_alternative_name() {
        for n in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::URI(uri) = n
                && !uri.is_empty()
            {
                return Some(Arc::from(*uri));
            }
        }
    }
    let cn = x.subject().iter_common_name().next()?.as_str().ok()?;
    (!cn.is_empty()).then(|| Arc::from(cn))
}
