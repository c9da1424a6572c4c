//! TLS toward PostgreSQL: SSLRequest, the server's one-byte answer, then the handshake, as
//! `server_tls_mode` asks.

use super::BackendError;
use crate::tls::{BackendTls, ServerTlsMode, Stream};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Turns a fresh TCP connection into the stream the login runs over.
pub(super) async fn negotiate(
    mut tcp: TcpStream,
    addr: &Arc<str>,
    tls: &BackendTls,
) -> Result<Stream, BackendError> {
    let Some(connector) = tls.connector() else {
        return Ok(Stream::Plain(tcp));
    };
    let io = |source| BackendError::Io {
        addr: addr.to_string(),
        source,
    };
    tcp.write_all(&crate::protocol::startup::ssl_request())
        .await
        .map_err(io)?;
    // Exactly one byte: anything after it must come through TLS, so it stays in the socket for
    // rustls (bytes injected before the handshake then fail it; CVE-2021-23222).
    let mut answer = [0u8; 1];
    tcp.read_exact(&mut answer).await.map_err(io)?;
    match answer[0] {
        b'S' => {}
        b'N' if tls.mode == ServerTlsMode::Prefer => return Ok(Stream::Plain(tcp)),
        b'N' => {
            return Err(BackendError::TlsRefused {
                addr: addr.to_string(),
                mode: tls.mode.as_str(),
            })
        }
        other => {
            return Err(BackendError::Unexpected {
                addr: addr.to_string(),
                tag: other as char,
                phase: "SSL negotiation",
            })
        }
    }
    let name =
        match tls.server_name(addr) {
            Some(name) => name,
            // Without verify-full the name is only sent as SNI: any placeholder will do.
            None if tls.mode != ServerTlsMode::VerifyFull => {
                rustls::pki_types::ServerName::try_from("postgresql").expect("valid DNS name")
            }
            None => return Err(BackendError::Tls {
                addr: addr.to_string(),
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "host is not a valid DNS name or IP address to verify (set tls.server_tls_server_name)",
                ),
            }),
        };
    let stream = connector
        .connect(name, tcp)
        .await
        .map_err(|source| BackendError::Tls {
            addr: addr.to_string(),
            source,
        })?;
    Ok(Stream::Tls(Box::new(stream.into())))
}
