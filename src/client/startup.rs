//! The startup phase: TLS (SSLRequest or PostgreSQL 17's direct TLS), GSSENCRequest refusal,
//! CancelRequest hand-off, protocol version negotiation, and the StartupMessage's parameters.

use crate::client::cancel::ClientKey;
use crate::client::conn::{ClientConn, ClientIoError};
use crate::client::params::ClientParams;
use crate::protocol::startup::StartupError;
use crate::protocol::{backend_msg, ErrorFields, SqlState, StartupPacket};
use crate::tls::{ClientTls, ClientTlsMode, ALPN_POSTGRESQL};

/// First byte of a TLS handshake record; a startup packet never starts with it (its length
/// would be over 369 MB).
const TLS_HANDSHAKE: u8 = 0x16;

/// The newest protocol minor version tidepool speaks.
const SUPPORTED_MINOR: u16 = 0;

/// What a new connection turned out to be.
#[derive(Debug)]
pub enum Opening {
    Login(ClientParams),
    Cancel(ClientKey),
}

/// Why the startup phase ended without a login.
#[derive(Debug, thiserror::Error)]
pub enum StartupFailure {
    #[error(transparent)]
    Io(#[from] ClientIoError),
    /// Already answered with this error; close.
    #[error("{}", .0.message)]
    Refused(ErrorFields),
    #[error("client sent data after SSLRequest before the answer (possible injection attempt)")]
    BufferStuffing,
    #[error("direct TLS connection without ALPN protocol \"postgresql\"")]
    DirectTlsWithoutAlpn,
    /// PostgreSQL only logs this one and closes without a word (COMMERROR): so do we.
    #[error("{0}")]
    Dropped(StartupError),
}

/// Reads startup packets until a StartupMessage or CancelRequest; `tls` is `None` when client
/// TLS is disabled.
pub async fn negotiate(client: &mut ClientConn, tls: Option<&ClientTls>) -> Result<Opening, StartupFailure> {
    let mut ssl_asked = false;
    let mut gss_asked = false;
    if let Some(tls) = tls {
        if client.peek_byte().await? == Some(TLS_HANDSHAKE) {
            // Direct TLS (`sslnegotiation=direct`): only with ALPN, as PostgreSQL 17 insists,
            // so that a TLS connection meant for another protocol is not taken for ours.
            client.start_tls(tls).await?;
            if client.alpn_protocol() != Some(ALPN_POSTGRESQL) {
                return Err(StartupFailure::DirectTlsWithoutAlpn);
            }
            (ssl_asked, gss_asked) = (true, true);
        }
    }
    loop {
        let packet = match client.read_startup().await {
            Ok(p) => p,
            Err(ClientIoError::Startup(e)) if only_logged(&e) => return Err(StartupFailure::Dropped(e)),
            Err(ClientIoError::Startup(e @ StartupError::UnsupportedProtocol { major, .. })) if major < 3 => {
                return Err(refuse_old_style(client, startup_error(e)).await)
            }
            Err(ClientIoError::Startup(e)) => return Err(refuse(client, startup_error(e)).await),
            Err(e) => return Err(e.into()),
        };
        match packet {
            StartupPacket::SslRequest | StartupPacket::GssEncRequest => {
                let repeated = if matches!(packet, StartupPacket::SslRequest) {
                    std::mem::replace(&mut ssl_asked, true)
                } else {
                    std::mem::replace(&mut gss_asked, true)
                };
                if repeated {
                    // PostgreSQL takes a second request's code for a protocol version it lacks.
                    let (major, minor) = packet.request_version();
                    let error = StartupError::UnsupportedProtocol { major, minor };
                    return Err(refuse(client, startup_error(error)).await);
                }
                // Anything sent before our one-byte answer cannot be trusted to belong to the
                // client (CVE-2021-23214): refuse rather than interpret it.
                if client.has_pending_input() {
                    return Err(StartupFailure::BufferStuffing);
                }
                let tls = tls.filter(|_| matches!(packet, StartupPacket::SslRequest));
                client
                    .wbuf
                    .extend_from_slice(if tls.is_some() { b"S" } else { b"N" });
                client.flush().await?;
                if let Some(tls) = tls {
                    client.start_tls(tls).await?;
                    // Encryption is settled: any further request is a protocol violation.
                    gss_asked = true;
                }
            }
            StartupPacket::Cancel { pid, secret } => {
                return Ok(Opening::Cancel(ClientKey { pid, secret }));
            }
            StartupPacket::Startup {
                minor,
                params,
                protocol_options,
            } => {
                if minor > SUPPORTED_MINOR || !protocol_options.is_empty() {
                    backend_msg::negotiate_protocol_version(
                        &mut client.wbuf,
                        SUPPORTED_MINOR,
                        &protocol_options,
                    );
                }
                let params = match ClientParams::from_startup(params) {
                    Ok(p) => p,
                    Err(e) => return Err(refuse(client, e).await),
                };
                if let Some(error) = tls.and_then(|tls| tls_refusal(client, tls.mode, &params)) {
                    return Err(refuse(client, error).await);
                }
                return Ok(Opening::Login(params));
            }
        }
    }
}

/// What `client_tls_mode` says about this login, in PostgreSQL's words for the same refusals.
fn tls_refusal(client: &ClientConn, mode: ClientTlsMode, params: &ClientParams) -> Option<ErrorFields> {
    let Some(info) = &client.tls else {
        return mode.requires_tls().then(|| {
            let message = format!(
                "no pg_hba.conf entry for host \"{}\", user \"{}\", database \"{}\", no encryption",
                client.peer.ip(),
                params.user,
                params.database
            );
            ErrorFields::fatal(SqlState::INVALID_AUTHORIZATION, message).with_hint(format!(
                "client_tls_mode is \"{}\": connect with SSL.",
                mode.as_str()
            ))
        });
    };
    let name_matches = info.peer_common_name.as_deref() == Some(params.user.as_str());
    (mode == ClientTlsMode::VerifyFull && !name_matches).then(|| {
        let message = format!(
            "certificate validation (clientcert=verify-full) failed for user \"{}\": CN mismatch",
            params.user
        );
        ErrorFields::fatal(SqlState::INVALID_AUTHORIZATION, message)
    })
}

/// Startup errors PostgreSQL reports to its log only (COMMERROR), closing the connection
/// without an answer: a client that sends garbage (or a Terminate) before any startup packet
/// must see a plain close, as drivers expect.
fn only_logged(e: &StartupError) -> bool {
    matches!(e, StartupError::BadLength)
}

fn protocol_violation(message: &str) -> ErrorFields {
    ErrorFields::fatal(SqlState::PROTOCOL_VIOLATION, message)
}

fn startup_error(e: StartupError) -> ErrorFields {
    match e {
        StartupError::UnsupportedProtocol { .. } => {
            ErrorFields::fatal(SqlState::FEATURE_NOT_SUPPORTED, e.to_string())
        }
        StartupError::NoUser => ErrorFields::fatal(SqlState::INVALID_AUTHORIZATION, e.to_string()),
        other => protocol_violation(&other.to_string()),
    }
}

async fn refuse(client: &mut ClientConn, error: ErrorFields) -> StartupFailure {
    client.send_fatal(error.clone()).await;
    StartupFailure::Refused(error)
}

/// A refusal in protocol 2.0's error format (tag, text, NUL; no length word), which PostgreSQL
/// uses for a client asking for protocol 2 and which is what such a client (and libpq) reads.
async fn refuse_old_style(client: &mut ClientConn, error: ErrorFields) -> StartupFailure {
    client.wbuf.extend_from_slice(b"EFATAL:  ");
    client.wbuf.extend_from_slice(error.message.as_bytes());
    client.wbuf.extend_from_slice(b"\n\0");
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), client.flush()).await;
    StartupFailure::Refused(error)
}
