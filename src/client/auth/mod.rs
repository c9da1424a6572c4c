//! Client authentication: which users exist and how they prove it (the `UserDirectory`, built
//! once per configuration snapshot), and the message exchange with one client.

mod crypto;
pub mod md5;
pub mod scram;
mod secret;

pub use scram::{fuzz_scram_exchange, ChannelBinding, ScramError, ScramServer, ScramVerifier, ServerNonce};
pub use secret::{Secret, SecretError};

use super::conn::{ClientConn, ClientIoError};
use crate::config::{AuthMethod, Config, UserConfig};
use crate::protocol::{backend_msg, frontend_msg, tag, ErrorFields, SqlState};
use std::collections::HashMap;
use std::sync::Arc;

/// A user as authentication needs it, with expensive derivations done in advance.
pub struct UserAuth {
    pub config: UserConfig,
    pub method: AuthMethod,
    pub secret: Option<Secret>,
    /// For SCRAM: the stored verifier, or one derived once from a plaintext password.
    pub verifier: Option<ScramVerifier>,
}

/// All users of one configuration snapshot.
pub struct UserDirectory {
    users: HashMap<String, Arc<UserAuth>>,
    /// Seeds the doomed SCRAM exchange run for unknown users, so that a client cannot tell
    /// unknown users from wrong passwords (as PostgreSQL does); the salt is stable per name.
    mock_seed: [u8; 32],
}

impl UserDirectory {
    /// Builds the directory, deriving SCRAM verifiers for plaintext passwords. Slow (4096 hash
    /// rounds per such user): call it on a blocking thread.
    pub fn build(config: &Config) -> UserDirectory {
        let mut users = HashMap::new();
        for user in &config.users {
            // Validation already refused unparsable secrets.
            let secret = user.password.as_deref().and_then(|p| Secret::parse(p).ok());
            let method = user.method();
            let verifier = match (method, &secret) {
                (AuthMethod::ScramSha256, Some(s)) => s.scram_verifier(),
                _ => None,
            };
            users.insert(
                user.name.clone(),
                Arc::new(UserAuth {
                    config: user.clone(),
                    method,
                    secret,
                    verifier,
                }),
            );
        }
        let mut mock_seed = [0u8; 32];
        rand::fill(&mut mock_seed);
        UserDirectory { users, mock_seed }
    }

    pub fn lookup(&self, name: &str) -> Option<Arc<UserAuth>> {
        self.users.get(name).cloned()
    }
}

/// Why a client was not let in.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("wrong password or unknown user")]
    Failed,
    #[error("authentication protocol violation: {0}")]
    Protocol(String),
    #[error("{0}")]
    Scram(#[from] ScramError),
    #[error(transparent)]
    Io(#[from] ClientIoError),
}

impl AuthError {
    /// The FATAL error the client is sent, with PostgreSQL's text; `None` if it is gone.
    pub fn client_error(&self, user: &str) -> Option<ErrorFields> {
        let failed = || {
            ErrorFields::fatal(
                SqlState::INVALID_PASSWORD,
                format!("password authentication failed for user \"{user}\""),
            )
        };
        match self {
            AuthError::Failed => Some(failed()),
            AuthError::Scram(e) if e.is_auth_failure() => Some(failed()),
            AuthError::Scram(e) => Some(ErrorFields::fatal(e.sqlstate(), e.to_string())),
            AuthError::Protocol(message) => {
                Some(ErrorFields::fatal(SqlState::PROTOCOL_VIOLATION, message.clone()))
            }
            AuthError::Io(_) => None,
        }
    }
}

/// Runs the exchange for `user` (None = unknown) and sends AuthenticationOk on success.
pub async fn authenticate(
    client: &mut ClientConn,
    user_name: &str,
    user: Option<&UserAuth>,
    directory: &UserDirectory,
) -> Result<(), AuthError> {
    let Some(user) = user else {
        // Unknown user: a full exchange against a verifier nobody knows.
        let mock = ScramVerifier::mock(user_name, &directory.mock_seed);
        let _ = scram_exchange(client, mock).await?;
        return Err(AuthError::Failed);
    };
    match (user.method, &user.secret) {
        (AuthMethod::Trust, _) => {}
        (AuthMethod::ScramSha256, _) => {
            let verifier = user.verifier.clone().ok_or(AuthError::Failed)?;
            scram_exchange(client, verifier).await?;
        }
        (AuthMethod::Md5, Some(secret)) => {
            let hash = secret.md5_hash(user_name).ok_or(AuthError::Failed)?;
            let mut salt = [0u8; 4];
            rand::fill(&mut salt);
            backend_msg::authentication_md5(&mut client.wbuf, salt);
            client.flush().await?;
            let response = read_password(client).await?;
            if !md5::verify_md5_response(&hash, salt, response.as_bytes()) {
                return Err(AuthError::Failed);
            }
        }
        (AuthMethod::Password, Some(secret)) => {
            backend_msg::authentication_cleartext(&mut client.wbuf);
            client.flush().await?;
            let password = read_password(client).await?;
            let secret = secret.clone();
            let user_name = user_name.to_string();
            // Checking against a SCRAM verifier means deriving one: not on the async workers.
            let ok =
                tokio::task::spawn_blocking(move || secret.verify_password(&user_name, password.as_bytes()))
                    .await
                    .unwrap_or(false);
            if !ok {
                return Err(AuthError::Failed);
            }
        }
        (_, None) => return Err(AuthError::Failed),
    }
    backend_msg::authentication_ok(&mut client.wbuf);
    Ok(())
}

/// Reads a PasswordMessage as a string.
async fn read_password(client: &mut ClientConn) -> Result<String, AuthError> {
    let frame = read_auth_message(client).await?;
    frontend_msg::parse_password(&frame.body)
        .map(str::to_string)
        .ok_or_else(|| AuthError::Protocol("invalid password packet".into()))
}

async fn read_auth_message(client: &mut ClientConn) -> Result<crate::protocol::Frame, AuthError> {
    let frame = client.read_frame().await?;
    if frame.tag != tag::PASSWORD {
        return Err(AuthError::Protocol(format!(
            "expected password response, got message type {}",
            frame.tag
        )));
    }
    Ok(frame)
}

/// SASL with SCRAM-SHA-256 against `verifier`; returns the verified exchange.
async fn scram_exchange(client: &mut ClientConn, verifier: ScramVerifier) -> Result<ScramServer, AuthError> {
    // Over TLS, SCRAM-SHA-256-PLUS is offered too, bound to our certificate.
    let binding = match &client.tls {
        Some(tls) => ChannelBinding::TlsServerEndPoint(tls.server_end_point.clone()),
        None => ChannelBinding::None,
    };
    let mut server = ScramServer::new(verifier, ServerNonce::random(), binding);
    backend_msg::authentication_sasl(&mut client.wbuf, server.mechanisms());
    client.flush().await?;

    let frame = read_auth_message(client).await?;
    let (mechanism, data) = frontend_msg::parse_sasl_initial(&frame.body)
        .ok_or_else(|| AuthError::Protocol("malformed SASLInitialResponse message".into()))?;
    server.select_mechanism(mechanism)?;
    let data = data.ok_or_else(|| AuthError::Protocol("malformed SASLInitialResponse message".into()))?;
    let server_first = server.client_first(data)?;
    backend_msg::authentication_sasl_continue(&mut client.wbuf, &server_first);
    client.flush().await?;

    let frame = read_auth_message(client).await?;
    let server_final = server.client_final(&frame.body)?;
    backend_msg::authentication_sasl_final(&mut client.wbuf, &server_final);
    Ok(server)
}
