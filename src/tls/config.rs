//! `[tls]`: TLS toward clients and toward PostgreSQL (PgBouncer's key names and modes).

use serde::Deserialize;
use std::path::PathBuf;

/// How clients may or must use TLS (PgBouncer's `client_tls_sslmode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum ClientTlsMode {
    /// Plain TCP only; SSLRequest is answered `N`.
    #[default]
    Disable,
    /// TLS if the client asks for it; client certificates are not requested.
    Allow,
    /// Same as `allow` (the client decides).
    Prefer,
    /// TLS required; a client without it is refused with 28000.
    Require,
    /// TLS required with a client certificate signed by `client_tls_ca_file`.
    VerifyCa,
    /// `verify-ca`, and the certificate's CN must equal the user name (PostgreSQL's
    /// `clientcert=verify-full`).
    VerifyFull,
}

impl ClientTlsMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ClientTlsMode::Disable => "disable",
            ClientTlsMode::Allow => "allow",
            ClientTlsMode::Prefer => "prefer",
            ClientTlsMode::Require => "require",
            ClientTlsMode::VerifyCa => "verify-ca",
            ClientTlsMode::VerifyFull => "verify-full",
        }
    }

    /// A client that did not use TLS is refused.
    pub fn requires_tls(self) -> bool {
        self >= ClientTlsMode::Require
    }

    /// Clients must present a certificate signed by the CA.
    pub fn verifies_client(self) -> bool {
        self >= ClientTlsMode::VerifyCa
    }
}

/// How tidepool uses TLS toward PostgreSQL (libpq's `sslmode`, without `allow`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum ServerTlsMode {
    /// Plain TCP.
    Disable,
    /// TLS if the server accepts it, else plain TCP; the certificate is not checked. The
    /// default, as libpq's and PgBouncer's.
    #[default]
    Prefer,
    /// TLS or fail; the certificate is not checked.
    Require,
    /// TLS with a certificate chain leading to `server_tls_ca_file`.
    VerifyCa,
    /// `verify-ca`, and the certificate must name the host (or `server_tls_server_name`).
    VerifyFull,
}

impl ServerTlsMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ServerTlsMode::Disable => "disable",
            ServerTlsMode::Prefer => "prefer",
            ServerTlsMode::Require => "require",
            ServerTlsMode::VerifyCa => "verify-ca",
            ServerTlsMode::VerifyFull => "verify-full",
        }
    }
}

/// `[tls]`. Certificates and keys are read when a configuration snapshot is built (start and
/// reload), never per connection; a reload therefore picks up renewed files.
#[derive(Debug, Clone, Deserialize, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    pub client_tls_mode: ClientTlsMode,
    /// PEM certificate chain presented to clients (leaf first).
    pub client_tls_cert_file: Option<PathBuf>,
    /// PEM private key of that certificate (PKCS#8, PKCS#1 or SEC1).
    pub client_tls_key_file: Option<PathBuf>,
    /// PEM CA certificates that client certificates must chain to (verify-ca, verify-full).
    pub client_tls_ca_file: Option<PathBuf>,
    pub server_tls_mode: ServerTlsMode,
    /// PEM CA certificates that PostgreSQL's certificate must chain to (verify-ca, verify-full).
    pub server_tls_ca_file: Option<PathBuf>,
    /// Name checked against PostgreSQL's certificate with verify-full (default: the node's host).
    pub server_tls_server_name: Option<String>,
}

/// A `[tls]` setting that makes no sense; `key` is relative to `tls.`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidTlsConfig {
    pub key: &'static str,
    pub reason: String,
}

impl TlsConfig {
    /// Checks what can be checked without reading files (the files are read by `tls::build`).
    pub fn validate(&self) -> Result<(), InvalidTlsConfig> {
        let invalid = |key, reason: String| Err(InvalidTlsConfig { key, reason });
        let mode = self.client_tls_mode;
        if mode != ClientTlsMode::Disable {
            if self.client_tls_cert_file.is_none() {
                return invalid(
                    "client_tls_cert_file",
                    format!("required with client_tls_mode = \"{}\"", mode.as_str()),
                );
            }
            if self.client_tls_key_file.is_none() {
                return invalid(
                    "client_tls_key_file",
                    format!("required with client_tls_mode = \"{}\"", mode.as_str()),
                );
            }
        }
        if mode.verifies_client() && self.client_tls_ca_file.is_none() {
            return invalid(
                "client_tls_ca_file",
                format!("required with client_tls_mode = \"{}\"", mode.as_str()),
            );
        }
        let server = self.server_tls_mode;
        if server >= ServerTlsMode::VerifyCa && self.server_tls_ca_file.is_none() {
            return invalid(
                "server_tls_ca_file",
                format!("required with server_tls_mode = \"{}\"", server.as_str()),
            );
        }
        if let Some(name) = &self.server_tls_server_name {
            if rustls::pki_types::ServerName::try_from(name.as_str()).is_err() {
                return invalid(
                    "server_tls_server_name",
                    format!("{name:?} is not a valid DNS name or IP address"),
                );
            }
        }
        Ok(())
    }
}
