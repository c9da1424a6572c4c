//! PEM files and the two facts tidepool reads from certificates: the `tls-server-end-point`
//! hash (channel binding) and the subject's common name (client certificates).

use super::TlsError;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256, Sha384, Sha512};
use std::path::Path;

fn read(key: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        key,
        path: path.to_path_buf(),
        source,
    })
}

fn bad(key: &'static str, path: &Path, reason: impl Into<String>) -> TlsError {
    TlsError::Invalid {
        key,
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Every certificate in a PEM file; an empty file is an error.
pub(crate) fn load_certs(key: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(key, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(key, path, format!("not a PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(bad(key, path, "no certificate found"));
    }
    Ok(certs)
}

/// The first private key in a PEM file.
pub(crate) fn load_key(key: &'static str, path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(key, path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| bad(key, path, format!("no usable private key: {e}")))
}

/// A root store from a PEM CA file; every certificate in it must be usable as a trust anchor.
pub(crate) fn load_roots(key: &'static str, path: &Path) -> Result<rustls::RootCertStore, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in load_certs(key, path)? {
        roots
            .add(cert)
            .map_err(|e| bad(key, path, format!("unusable CA certificate: {e}")))?;
    }
    Ok(roots)
}

/// RFC 5929 §4.1 `tls-server-end-point`: the certificate hashed with its signature's hash
/// function, where MD5 and SHA-1 (and anything without a hash of its own) become SHA-256.
pub fn server_end_point(cert_der: &[u8]) -> Vec<u8> {
    use x509_parser::oid_registry as oids;
    let algorithm = x509_parser::parse_x509_certificate(cert_der)
        .ok()
        .map(|(_, cert)| cert.signature_algorithm.algorithm.clone());
    let stronger = |o: &x509_parser::der_parser::oid::Oid,
                    candidates: &[&x509_parser::der_parser::oid::Oid]| {
        candidates.contains(&o)
    };
    match algorithm {
        Some(o)
            if stronger(
                &o,
                &[&oids::OID_PKCS1_SHA384WITHRSA, &oids::OID_SIG_ECDSA_WITH_SHA384],
            ) =>
        {
            Sha384::digest(cert_der).to_vec()
        }
        Some(o)
            if stronger(
                &o,
                &[&oids::OID_PKCS1_SHA512WITHRSA, &oids::OID_SIG_ECDSA_WITH_SHA512],
            ) =>
        {
            Sha512::digest(cert_der).to_vec()
        }
        _ => Sha256::digest(cert_der).to_vec(),
    }
}

/// The first common name (CN) of a certificate's subject, if it has a readable one.
pub fn common_name(cert_der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).ok()?;
    let cn = cert.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_string)
}
