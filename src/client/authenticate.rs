//! Authenticating a client over its connection: the method its hba rule or user entry asks for,
//! the secret from the directory or auth_query, the exchange (SCRAM-SHA-256, md5, password,
//! cert, trust). What it decides with is in `crate::auth`, which knows no sockets.

use crate::auth::{
    backend_secret, check_cert, choose_method, md5, unlisted_user, ChannelBinding, Connection, Refusal,
    ScramError, ScramServer, ScramVerifier, Secret, SecretSource, ServerNonce, UserAuth, UserDirectory,
};
use crate::backend::{BackendError, BackendSecret, ScramKeys};
use crate::client::conn::{ClientConn, ClientIoError};
use crate::client::params::ClientParams;
use crate::config::{AuthMethod, Config};
use crate::protocol::{backend_msg, frontend_msg, tag, ErrorFields, SqlState};
use std::sync::Arc;

/// Why a client was not let in. `Display` goes to logs: it never holds a secret.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("wrong password or unknown user")]
    Failed,
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error("auth_query lookup failed: {0}")]
    Lookup(#[source] BackendError),
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
            AuthError::Refused(refusal) => Some(refusal.client_error(user)),
            // Details (node, SQLSTATE) go to the log, not to an unauthenticated client.
            AuthError::Lookup(_) => Some(ErrorFields::fatal(
                SqlState::CONNECTION_FAILURE,
                "could not look up the user's password (auth_query failed)",
            )),
            AuthError::Scram(e) if e.is_auth_failure() => Some(failed()),
            AuthError::Scram(e) => Some(ErrorFields::fatal(e.sqlstate(), e.to_string())),
            AuthError::Protocol(message) => {
                Some(ErrorFields::fatal(SqlState::PROTOCOL_VIOLATION, message.clone()))
            }
            AuthError::Io(_) => None,
        }
    }
}

/// What a successful exchange leaves behind for logging in to PostgreSQL as the same user.
#[derive(Default)]
pub enum Proven {
    #[default]
    Nothing,
    /// SCRAM: the ClientKey recovered from the proof.
    ScramKey([u8; 32]),
    /// The `password` method: the cleartext the client sent (checked).
    Password(String),
}

/// Authenticates the client of `params` (sending AuthenticationOk on success) and returns the
/// user, carrying what its pool needs to log in to PostgreSQL.
pub async fn login(
    client: &mut ClientConn,
    config: &Config,
    directory: &UserDirectory,
    params: &ClientParams,
) -> Result<Arc<UserAuth>, AuthError> {
    let name = params.user.as_str();
    let listed = directory.lookup(name);
    let conn = Connection {
        tls: client.tls.is_some(),
        addr: (!client.stream.is_unix()).then(|| client.peer.ip()),
        database: &params.database,
        user: name,
    };
    let configured = listed.as_ref().and_then(|u| u.configured_method());
    let method = choose_method(
        directory.hba.as_ref(),
        directory.allow_cleartext_without_tls,
        configured,
        &conn,
    )?;
    let user = match method {
        AuthMethod::Trust | AuthMethod::Cert => listed,
        _ => match listed {
            Some(user) if user.secret.is_some() => Some(user),
            listed => query_user(config, directory, name, listed, &params.database).await?,
        },
    };
    let proven = authenticate(client, method, name, user.as_deref(), directory).await?;
    let user = user.unwrap_or_else(|| Arc::new(UserAuth::new(unlisted_user(name), None, SecretSource::None)));
    Ok(with_pass_through(user, proven))
}

/// The user from auth_query (keeping the `[[users]]` entry's settings, if listed without a
/// password); `listed` again when there is no auth_query.
async fn query_user(
    config: &Config,
    directory: &UserDirectory,
    name: &str,
    listed: Option<Arc<UserAuth>>,
    database: &str,
) -> Result<Option<Arc<UserAuth>>, AuthError> {
    let Some(query) = &directory.query else {
        return Ok(listed);
    };
    // The lookup needs a database to run in: auth_dbname, else the one the client asked for,
    // if configured (an unknown one fails after authentication with 3D000, as in PostgreSQL).
    let dbname = (config.auth.auth_dbname.clone()).or_else(|| config.server_dbname(database));
    let Some(dbname) = dbname else {
        return Ok(listed);
    };
    // It runs on the cluster of the database asked for (an unknown one: the default cluster).
    let cluster = config
        .cluster_of(database)
        .unwrap_or(crate::config::DEFAULT_CLUSTER);
    let lookup = query.lookup(name, &dbname, cluster);
    let Some(found) = lookup.await.map_err(AuthError::Lookup)? else {
        return Ok(listed);
    };
    Ok(Some(match listed {
        // Listed without a password: its settings, the secret from PostgreSQL.
        Some(listed) => {
            let mut user = (*found).clone();
            user.backend = backend_secret(&listed.config, user.secret.as_ref());
            user.config = listed.config.clone();
            Arc::new(user)
        }
        None => found,
    }))
}

/// Records what the client proved as the user's backend secret when nothing else is known.
fn with_pass_through(user: Arc<UserAuth>, proven: Proven) -> Arc<UserAuth> {
    if user.backend != BackendSecret::None || !user.same_backend_name() {
        return user;
    }
    let backend = match (proven, &user.verifier) {
        (Proven::ScramKey(client_key), Some(verifier)) => BackendSecret::ScramKeys(Arc::new(ScramKeys {
            iterations: verifier.iterations,
            salt: verifier.salt.clone(),
            client_key,
            server_key: verifier.server_key,
        })),
        (Proven::Password(password), _) => BackendSecret::Plain(password),
        _ => return user,
    };
    let mut user = (*user).clone();
    user.backend = backend;
    Arc::new(user)
}

/// Runs the exchange of `method` for `user` (None = unknown: a doomed exchange, so the client
/// cannot tell) and queues AuthenticationOk on success.
pub async fn authenticate(
    client: &mut ClientConn,
    method: AuthMethod,
    user_name: &str,
    user: Option<&UserAuth>,
    directory: &UserDirectory,
) -> Result<Proven, AuthError> {
    let secret = user.and_then(|u| u.secret.as_ref());
    let proven = match (method, secret) {
        (AuthMethod::Trust, _) => Proven::Nothing,
        (AuthMethod::Cert, _) => {
            check_cert(client.tls.as_deref(), user_name)?;
            Proven::Nothing
        }
        (AuthMethod::Reject, _) => return Err(AuthError::Failed),
        // PostgreSQL answers md5 with SCRAM when the password is stored as a SCRAM verifier.
        (AuthMethod::ScramSha256, _) | (AuthMethod::Md5, Some(Secret::Scram(_))) => {
            let Some(verifier) = user.and_then(|u| u.verifier.clone()) else {
                // Unknown user or an md5-only secret: a full exchange nobody can win.
                let mock = directory.doomed_verifier(user_name);
                let _ = scram_exchange(client, mock).await?;
                return Err(AuthError::Failed);
            };
            let server = scram_exchange(client, verifier).await?;
            server.client_key().map_or(Proven::Nothing, Proven::ScramKey)
        }
        (AuthMethod::Md5, secret) => {
            let hash = secret.and_then(|s| s.md5_hash(user_name));
            let mut salt = [0u8; 4];
            rand::fill(&mut salt);
            backend_msg::authentication_md5(&mut client.wbuf, salt);
            client.flush().await?;
            let response = read_password(client).await?;
            match hash {
                Some(hash) if md5::verify_md5_response(&hash, salt, response.as_bytes()) => Proven::Nothing,
                _ => return Err(AuthError::Failed),
            }
        }
        (AuthMethod::Password, secret) => {
            backend_msg::authentication_cleartext(&mut client.wbuf);
            client.flush().await?;
            let password = read_password(client).await?;
            let Some(secret) = secret.cloned() else {
                return Err(AuthError::Failed);
            };
            let user_name = user_name.to_string();
            let checked = password.clone();
            // Checking against a SCRAM verifier means deriving one: not on the async workers.
            let ok =
                tokio::task::spawn_blocking(move || secret.verify_password(&user_name, checked.as_bytes()))
                    .await
                    .unwrap_or(false);
            if !ok {
                return Err(AuthError::Failed);
            }
            Proven::Password(password)
        }
    };
    backend_msg::authentication_ok(&mut client.wbuf);
    Ok(proven)
}

/// Reads a PasswordMessage as a string.
async fn read_password(client: &mut ClientConn) -> Result<String, AuthError> {
    let frame = read_auth_message(client, Step::Password).await?;
    frontend_msg::parse_password(&frame.body)
        .map(str::to_string)
        .ok_or_else(|| AuthError::Protocol("invalid password packet".into()))
}

/// Which answer an authentication step waits for, named as PostgreSQL names it.
#[derive(Debug, Clone, Copy)]
enum Step {
    Password,
    Sasl,
}

/// Reads the client's answer to an authentication request. The tag is checked before the
/// length is even read: anything but a PasswordMessage (say, a second StartupMessage, whose
/// first bytes would read as a huge length) is refused at once, as PostgreSQL refuses it.
async fn read_auth_message(client: &mut ClientConn, step: Step) -> Result<crate::protocol::Frame, AuthError> {
    let first = client.peek_buffered_byte().await?;
    if first != tag::PASSWORD {
        let expected = match step {
            Step::Password => "password",
            Step::Sasl => "SASL",
        };
        return Err(AuthError::Protocol(format!(
            "expected {expected} response, got message type {first}"
        )));
    }
    Ok(client.read_frame().await?)
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

    let frame = read_auth_message(client, Step::Sasl).await?;
    let (mechanism, data) = frontend_msg::parse_sasl_initial(&frame.body)
        .ok_or_else(|| AuthError::Protocol("malformed SASLInitialResponse message".into()))?;
    server.select_mechanism(mechanism)?;
    let data = data.ok_or_else(|| AuthError::Protocol("malformed SASLInitialResponse message".into()))?;
    let server_first = server.client_first(data)?;
    backend_msg::authentication_sasl_continue(&mut client.wbuf, &server_first);
    client.flush().await?;

    let frame = read_auth_message(client, Step::Sasl).await?;
    let server_final = server.client_final(&frame.body)?;
    backend_msg::authentication_sasl_final(&mut client.wbuf, &server_final);
    Ok(server)
}
