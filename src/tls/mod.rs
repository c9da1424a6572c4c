//! TLS on both sides with rustls (ring provider, TLS 1.2 and 1.3): the `[tls]` settings, the
//! acceptor for clients and the connector for PostgreSQL, both built with each configuration
//! snapshot (so a reload re-reads certificates) and never per connection.

pub mod cert;
mod config;
mod stream;
mod verify;

pub use config::{ClientTlsMode, InvalidTlsConfig, ServerTlsMode, TlsConfig};
pub use stream::Stream;

use rustls::pki_types::ServerName;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What the TLS layer learned about a client connection (`ClientConn::tls`, `None` on plain TCP).
#[derive(Debug, Clone, Default)]
pub struct TlsInfo {
    /// `tls-server-end-point` channel-binding data (RFC 5929): the hash of our certificate.
    pub server_end_point: Vec<u8>,
    /// Common name of the client's verified certificate, when it sent one.
    pub peer_common_name: Option<String>,
}

/// ALPN protocol name of PostgreSQL (required by PostgreSQL 17 for direct TLS).
pub const ALPN_POSTGRESQL: &[u8] = b"postgresql";

/// Why the TLS settings could not be turned into a working configuration; names the key.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{key}: cannot read {path}: {source}")]
    Read {
        key: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{key}: {path}: {reason}")]
    Invalid {
        key: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("{key}: {source}")]
    Rustls {
        key: &'static str,
        #[source]
        source: rustls::Error,
    },
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

const VERSIONS: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13, &rustls::version::TLS12];

/// The rustls client of an HTTPS request (Patroni's REST API): servers checked against the CA
/// file `ca` (`(key, path)`, the key naming it in errors), optionally with a client certificate
/// (`(cert, key)` PEM files).
pub fn http_client_config(
    ca: (&'static str, &Path),
    client_cert: Option<(&Path, &Path)>,
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let roots = cert::load_roots(ca.0, ca.1)?;
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)
        .map_err(|source| TlsError::Rustls { key: ca.0, source })?
        .with_root_certificates(roots);
    let config = match client_cert {
        None => builder.with_no_client_auth(),
        Some((cert_path, key_path)) => {
            let certs = cert::load_certs("routing.patroni_cert_file", cert_path)?;
            let key = cert::load_key("routing.patroni_key_file", key_path)?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|source| TlsError::Rustls {
                    key: "routing.patroni_key_file",
                    source,
                })?
        }
    };
    Ok(Arc::new(config))
}

/// The rustls server of an HTTPS listener (the metrics endpoint), with ALPN `http/1.1`.
pub fn http_server_config(
    cert: (&'static str, &Path),
    key: (&'static str, &Path),
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let certs = cert::load_certs(cert.0, cert.1)?;
    let private = cert::load_key(key.0, key.1)?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)
        .map_err(|source| TlsError::Rustls { key: cert.0, source })?
        .with_no_client_auth()
        .with_single_cert(certs, private)
        .map_err(|source| TlsError::Rustls { key: key.0, source })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Accepting TLS from clients: the rustls configuration and what channel binding needs.
pub struct ClientTls {
    pub mode: ClientTlsMode,
    pub acceptor: tokio_rustls::TlsAcceptor,
    /// `tls-server-end-point` data of our certificate, the same for every connection.
    pub server_end_point: Vec<u8>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls").field("mode", &self.mode).finish()
    }
}

impl ClientTls {
    /// Reads the certificate, key and CA files; `None` when client TLS is disabled.
    pub fn build(config: &TlsConfig) -> Result<Option<Arc<ClientTls>>, TlsError> {
        let mode = config.client_tls_mode;
        if mode == ClientTlsMode::Disable {
            return Ok(None);
        }
        let missing = |key| TlsError::Invalid {
            key,
            path: PathBuf::new(),
            reason: "not set".into(),
        };
        let cert_path = config
            .client_tls_cert_file
            .as_deref()
            .ok_or_else(|| missing("tls.client_tls_cert_file"))?;
        let key_path = config
            .client_tls_key_file
            .as_deref()
            .ok_or_else(|| missing("tls.client_tls_key_file"))?;
        let certs = cert::load_certs("tls.client_tls_cert_file", cert_path)?;
        let key = cert::load_key("tls.client_tls_key_file", key_path)?;
        let server_end_point = cert::server_end_point(&certs[0]);

        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(VERSIONS)
            .map_err(|source| TlsError::Rustls {
                key: "tls.client_tls_mode",
                source,
            })?;
        let builder = match (mode.verifies_client(), config.client_tls_ca_file.as_deref()) {
            (true, Some(ca)) => {
                let roots = Arc::new(cert::load_roots("tls.client_tls_ca_file", ca)?);
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(roots, provider())
                    .build()
                    .map_err(|e| invalid_file("tls.client_tls_ca_file", ca, e))?;
                builder.with_client_cert_verifier(verifier)
            }
            (true, None) => return Err(missing("tls.client_tls_ca_file")),
            (false, _) => builder.with_no_client_auth(),
        };
        let mut server = builder
            .with_single_cert(certs, key)
            .map_err(|e| invalid_file("tls.client_tls_key_file", key_path, e))?;
        server.alpn_protocols = vec![ALPN_POSTGRESQL.to_vec()];
        Ok(Some(Arc::new(ClientTls {
            mode,
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(server)),
            server_end_point,
        })))
    }
}

/// Reads and checks every TLS file the settings name, as building a snapshot would.
pub fn check(config: &TlsConfig) -> Result<(), TlsError> {
    ClientTls::build(config)?;
    BackendTls::build(config)?;
    Ok(())
}

fn invalid_file(key: &'static str, path: &Path, e: impl std::fmt::Display) -> TlsError {
    TlsError::Invalid {
        key,
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

/// Connecting to PostgreSQL with TLS: mode, rustls configuration, server name override.
/// Compared by settings (not by the CA file's contents) so pools see a change of mode.
#[derive(Clone, Default)]
pub struct BackendTls {
    pub mode: ServerTlsMode,
    connector: Option<tokio_rustls::TlsConnector>,
    server_name: Option<String>,
    ca_file: Option<PathBuf>,
}

impl std::fmt::Debug for BackendTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendTls")
            .field("mode", &self.mode)
            .field("server_name", &self.server_name)
            .finish()
    }
}

impl PartialEq for BackendTls {
    fn eq(&self, other: &Self) -> bool {
        self.mode == other.mode && self.server_name == other.server_name && self.ca_file == other.ca_file
    }
}

impl Eq for BackendTls {}

impl BackendTls {
    /// Reads the CA file (verify-ca, verify-full) and prepares the connector.
    pub fn build(config: &TlsConfig) -> Result<BackendTls, TlsError> {
        let mode = config.server_tls_mode;
        if mode == ServerTlsMode::Disable {
            return Ok(BackendTls::default());
        }
        let roots = match (
            mode >= ServerTlsMode::VerifyCa,
            config.server_tls_ca_file.as_deref(),
        ) {
            (true, Some(ca)) => Some(Arc::new(cert::load_roots("tls.server_tls_ca_file", ca)?)),
            (true, None) => {
                return Err(TlsError::Invalid {
                    key: "tls.server_tls_ca_file",
                    path: PathBuf::new(),
                    reason: "not set".into(),
                })
            }
            (false, _) => None,
        };
        let verifier = verify::ServerVerifier::new(mode, roots, provider()).map_err(|e| {
            invalid_file(
                "tls.server_tls_ca_file",
                config.server_tls_ca_file.as_deref().unwrap_or(Path::new("")),
                e,
            )
        })?;
        let client = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(VERSIONS)
            .map_err(|source| TlsError::Rustls {
                key: "tls.server_tls_mode",
                source,
            })?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        Ok(BackendTls {
            mode,
            connector: Some(tokio_rustls::TlsConnector::from(Arc::new(client))),
            server_name: config.server_tls_server_name.clone(),
            ca_file: config.server_tls_ca_file.clone(),
        })
    }

    /// The connector, unless TLS toward PostgreSQL is disabled.
    pub fn connector(&self) -> Option<&tokio_rustls::TlsConnector> {
        self.connector.as_ref()
    }

    /// The name to check the certificate against for a node `host:port` (or `[v6]:port`).
    pub fn server_name(&self, addr: &str) -> Option<ServerName<'static>> {
        let host = match &self.server_name {
            Some(name) => name.as_str(),
            None => host_of(addr),
        };
        ServerName::try_from(host.to_string()).ok()
    }
}

/// The host part of `host:port` or `[v6]:port`.
fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
    host.trim_start_matches('[').trim_end_matches(']')
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::Digest;

    #[test]
    fn host_of_strips_port_and_brackets() {
        assert_eq!(host_of("127.0.0.1:5432"), "127.0.0.1");
        assert_eq!(host_of("[::1]:5432"), "::1");
        assert_eq!(host_of("db.example.com:6000"), "db.example.com");
    }

    #[test]
    fn missing_files_name_the_key_and_the_file() {
        let config = TlsConfig {
            client_tls_mode: ClientTlsMode::Require,
            client_tls_cert_file: Some("/nonexistent/server.crt".into()),
            client_tls_key_file: Some("/nonexistent/server.key".into()),
            ..TlsConfig::default()
        };
        let e = ClientTls::build(&config).unwrap_err().to_string();
        assert!(
            e.starts_with("tls.client_tls_cert_file: cannot read /nonexistent/server.crt"),
            "{e}"
        );
        let config = TlsConfig {
            server_tls_mode: ServerTlsMode::VerifyFull,
            server_tls_ca_file: Some("/nonexistent/ca.crt".into()),
            ..TlsConfig::default()
        };
        let e = BackendTls::build(&config).unwrap_err().to_string();
        assert!(
            e.starts_with("tls.server_tls_ca_file: cannot read /nonexistent/ca.crt"),
            "{e}"
        );
    }

    #[test]
    fn end_point_hash_follows_the_signature_hash_and_cn_is_read() {
        let cert = |alg: &'static rcgen::SignatureAlgorithm| {
            let key = rcgen::KeyPair::generate_for(alg).unwrap();
            let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
            params.distinguished_name.push(rcgen::DnType::CommonName, "alice");
            params.self_signed(&key).unwrap().der().to_vec()
        };
        let p256 = cert(&rcgen::PKCS_ECDSA_P256_SHA256);
        assert_eq!(
            cert::server_end_point(&p256),
            sha2::Sha256::digest(&p256).to_vec()
        );
        let p384 = cert(&rcgen::PKCS_ECDSA_P384_SHA384);
        assert_eq!(
            cert::server_end_point(&p384),
            sha2::Sha384::digest(&p384).to_vec()
        );
        assert_eq!(cert::common_name(&p256).as_deref(), Some("alice"));
        assert_eq!(cert::common_name(b"garbage"), None);
    }

    #[test]
    fn validation_names_the_missing_key() {
        let mut config = TlsConfig {
            client_tls_mode: ClientTlsMode::VerifyFull,
            client_tls_cert_file: Some("a".into()),
            client_tls_key_file: Some("b".into()),
            ..TlsConfig::default()
        };
        assert_eq!(config.validate().unwrap_err().key, "client_tls_ca_file");
        config.client_tls_mode = ClientTlsMode::Disable;
        config.server_tls_mode = ServerTlsMode::VerifyCa;
        assert_eq!(config.validate().unwrap_err().key, "server_tls_ca_file");
        config.server_tls_mode = ServerTlsMode::Require;
        config.server_tls_server_name = Some("not a name".into());
        assert_eq!(config.validate().unwrap_err().key, "server_tls_server_name");
        config.server_tls_server_name = Some("10.0.0.1".into());
        assert!(config.validate().is_ok());
    }

    #[test]
    fn garbage_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("junk.pem");
        std::fs::write(&path, "not a certificate\n").unwrap();
        let config = TlsConfig {
            client_tls_mode: ClientTlsMode::Prefer,
            client_tls_cert_file: Some(path.clone()),
            client_tls_key_file: Some(path.clone()),
            ..TlsConfig::default()
        };
        let e = ClientTls::build(&config).unwrap_err().to_string();
        assert!(e.starts_with("tls.client_tls_cert_file: "), "{e}");
        assert!(e.contains("no certificate found"), "{e}");
    }
}
