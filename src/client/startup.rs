//! The startup phase: SSLRequest/GSSENCRequest answers, CancelRequest hand-off, protocol version
//! negotiation, and the StartupMessage's parameters.

use super::cancel::ClientKey;
use super::conn::{ClientConn, ClientIoError};
use super::params::ClientParams;
use crate::protocol::startup::StartupError;
use crate::protocol::{backend_msg, ErrorFields, SqlState, StartupPacket};

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
}

/// Reads startup packets until a StartupMessage or CancelRequest.
pub async fn negotiate(client: &mut ClientConn) -> Result<Opening, StartupFailure> {
    let mut ssl_asked = false;
    let mut gss_asked = false;
    loop {
        let packet = match client.read_startup().await {
            Ok(p) => p,
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
                    return Err(refuse(client, protocol_violation("duplicate encryption request")).await);
                }
                // Anything sent before our one-byte answer cannot be trusted to belong to the
                // client (CVE-2021-23214): refuse rather than interpret it.
                if client.has_pending_input() {
                    return Err(StartupFailure::BufferStuffing);
                }
                client.wbuf.extend_from_slice(b"N");
                client.flush().await?;
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
                return match ClientParams::from_startup(params) {
                    Ok(p) => Ok(Opening::Login(p)),
                    Err(e) => Err(refuse(client, e).await),
                };
            }
        }
    }
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
