//! Checking PostgreSQL's certificate as `server_tls_mode` says: not at all (prefer, require),
//! the chain only (verify-ca), or chain and name (verify-full). Handshake signatures are always
//! verified, so the peer at least holds the key of the certificate it sent.

use super::ServerTlsMode;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, Error, RootCertStore, SignatureScheme};
use std::sync::Arc;

#[derive(Debug)]
pub(super) struct ServerVerifier {
    mode: ServerTlsMode,
    /// The webpki verifier when a CA was given.
    webpki: Option<Arc<WebPkiServerVerifier>>,
    provider: Arc<CryptoProvider>,
}

impl ServerVerifier {
    pub(super) fn new(
        mode: ServerTlsMode,
        roots: Option<Arc<RootCertStore>>,
        provider: Arc<CryptoProvider>,
    ) -> Result<ServerVerifier, rustls::client::VerifierBuilderError> {
        let webpki = match roots {
            Some(roots) => {
                Some(WebPkiServerVerifier::builder_with_provider(roots, provider.clone()).build()?)
            }
            None => None,
        };
        Ok(ServerVerifier {
            mode,
            webpki,
            provider,
        })
    }
}

impl ServerCertVerifier for ServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let Some(webpki) = self
            .webpki
            .as_ref()
            .filter(|_| self.mode >= ServerTlsMode::VerifyCa)
        else {
            return Ok(ServerCertVerified::assertion());
        };
        match webpki.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            // webpki checks the name only once the chain is valid: a name error means the chain
            // passed, which is all verify-ca asks.
            Err(Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if self.mode == ServerTlsMode::VerifyCa => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
