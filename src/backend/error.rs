//! Why talking to a PostgreSQL backend failed, and whether the client may be retried elsewhere.

use crate::protocol::FrameError;

/// A failure on a backend connection. `Display` is safe to show to clients (no secrets).
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("could not connect to server {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("timed out connecting to server {addr}")]
    ConnectTimeout { addr: String },
    #[error("server {addr} closed the connection unexpectedly")]
    Closed { addr: String },
    #[error("I/O error on server connection {addr}: {source}")]
    Io {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("server {addr} sent an invalid message: {source}")]
    Protocol {
        addr: String,
        #[source]
        source: FrameError,
    },
    #[error("server {addr} sent an unexpected message {tag:?} during {phase}")]
    Unexpected {
        addr: String,
        tag: char,
        phase: &'static str,
    },
    /// PostgreSQL refused the login or a statement tidepool ran; `code`/`message` are its own.
    #[error("server {addr}: {message} (SQLSTATE {code})")]
    Server {
        addr: String,
        code: String,
        message: String,
        fatal: bool,
    },
    #[error("server {addr} requested authentication method {method}, which tidepool does not support")]
    UnsupportedAuth { addr: String, method: String },
    #[error("server {addr} requested a password but none is configured for user {user:?}")]
    NoPassword { addr: String, user: String },
    #[error("SCRAM pass-through for user {user:?} to server {addr} failed: {source}")]
    PassThrough {
        addr: String,
        user: String,
        #[source]
        source: super::scram::PassThroughError,
    },
    #[error("server {addr} does not support SSL, but server_tls_mode is \"{mode}\"")]
    TlsRefused { addr: String, mode: &'static str },
    #[error("TLS handshake with server {addr} failed: {source}")]
    Tls {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("SCRAM authentication with server {addr} failed: {source}")]
    Scram {
        addr: String,
        #[source]
        source: std::io::Error,
    },
}

impl BackendError {
    /// For a failure while opening a connection: true when the server was unreachable, dropped
    /// the login, or said it is starting, stopping or recovering from a crash (SQLSTATE 57P01,
    /// 57P02, 57P03), so the same login may work a moment later. A refused login (password,
    /// unknown database, too many connections) is not transient.
    pub fn is_transient(&self) -> bool {
        match self {
            BackendError::Connect { .. }
            | BackendError::ConnectTimeout { .. }
            | BackendError::Closed { .. }
            | BackendError::Io { .. } => true,
            BackendError::Server { code, .. } => matches!(code.as_str(), "57P01" | "57P02" | "57P03"),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::BackendError;

    fn server(code: &str) -> BackendError {
        BackendError::Server {
            addr: "127.0.0.1:5432".into(),
            code: code.into(),
            message: "m".into(),
            fatal: true,
        }
    }

    #[test]
    fn starting_stopping_and_unreachable_servers_are_transient_refused_logins_are_not() {
        for code in ["57P01", "57P02", "57P03"] {
            assert!(server(code).is_transient(), "{code}");
        }
        for code in ["28P01", "3D000", "53300", "42501"] {
            assert!(!server(code).is_transient(), "{code}");
        }
        let closed = BackendError::Closed { addr: "a".into() };
        assert!(closed.is_transient());
        let no_password = BackendError::NoPassword {
            addr: "a".into(),
            user: "u".into(),
        };
        assert!(!no_password.is_transient());
    }
}
