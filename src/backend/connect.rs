//! Opening a backend connection: TCP, StartupMessage, authentication, then the server's
//! ParameterStatus and BackendKeyData up to the first ReadyForQuery.

use super::conn::{BackendConn, BackendKey, BackendState};
use super::scram::{KeyClient, ScramKeys};
use super::BackendError;
use crate::protocol::error::BackendError as ServerError;
use crate::protocol::{backend_msg, frontend_msg, startup, tag, TransactionStatus};
use bytes::{Buf, BytesMut};
use md5::{Digest, Md5};
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256, SCRAM_SHA_256};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;

/// What tidepool can prove to PostgreSQL about a user.
#[derive(Clone, PartialEq, Eq)]
pub enum BackendSecret {
    None,
    Plain(String),
    /// `md5` + hex(md5(password + user)): enough for md5 authentication, not for SCRAM.
    Md5Hash(String),
    /// The ClientKey a client proved to tidepool, with the verifier it was checked against:
    /// enough for SCRAM when the server holds the same verifier (see `scram.rs`).
    ScramKeys(Arc<ScramKeys>),
}

impl std::fmt::Debug for BackendSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BackendSecret::None => "None",
            BackendSecret::Plain(_) => "Plain(<hidden>)",
            BackendSecret::Md5Hash(_) => "Md5Hash(<hidden>)",
            BackendSecret::ScramKeys(_) => "ScramKeys(<hidden>)",
        })
    }
}

/// Who tidepool logs in as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendLogin {
    pub user: String,
    pub database: String,
    pub secret: BackendSecret,
    /// TLS toward the server (`server_tls_mode`).
    pub tls: crate::tls::BackendTls,
    /// `tcp_keepalive` and friends, set on each new socket.
    pub keepalive: crate::config::Keepalive,
}

impl BackendLogin {
    /// Same server session (user, database, secret, TLS): socket options aside, which apply
    /// to new connections without making existing ones wrong.
    pub fn same_session(&self, other: &BackendLogin) -> bool {
        self.user == other.user
            && self.database == other.database
            && self.secret == other.secret
            && self.tls == other.tls
    }
}

/// Connects to `addr` and logs in, sending `params` (beyond user and database) in the startup
/// packet. The whole exchange is bounded by `timeout`.
pub async fn connect(
    addr: &Arc<str>,
    login: &BackendLogin,
    params: &[(String, String)],
    startup_signature: u64,
    id: u64,
    timeout: Duration,
) -> Result<BackendConn, BackendError> {
    match tokio::time::timeout(timeout, connect_inner(addr, login, params, startup_signature, id)).await {
        Ok(result) => result,
        Err(_) => Err(BackendError::ConnectTimeout {
            addr: addr.to_string(),
        }),
    }
}

async fn connect_inner(
    addr: &Arc<str>,
    login: &BackendLogin,
    params: &[(String, String)],
    startup_signature: u64,
    id: u64,
) -> Result<BackendConn, BackendError> {
    let stream = TcpStream::connect(&**addr)
        .await
        .map_err(|source| BackendError::Connect {
            addr: addr.to_string(),
            source,
        })?;
    // Small request/response messages: latency matters more than packet count.
    let _ = stream.set_nodelay(true);
    if let Err(e) = login.keepalive.apply(socket2::SockRef::from(&stream)) {
        tracing::warn!(%addr, error = %e, "cannot set TCP keepalive options");
    }
    let stream = super::tls::negotiate(stream, addr, &login.tls).await?;
    let mut conn = BackendConn::new(stream, addr.clone(), id, startup_signature);

    let mut all: Vec<(&str, &str)> = vec![
        ("user", login.user.as_str()),
        ("database", login.database.as_str()),
    ];
    all.extend(params.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let mut out = BytesMut::with_capacity(256);
    startup::encode_startup(&all, &mut out);
    conn.write_all(&out).await?;

    authenticate(&mut conn, login).await?;

    loop {
        let frame = conn.read_frame().await?;
        match frame.tag {
            tag::BACKEND_KEY_DATA => {
                if let Some((pid, secret)) = backend_msg::parse_backend_key_data(&frame.body) {
                    conn.key = BackendKey { pid, secret };
                }
            }
            tag::PARAMETER_STATUS => conn.record_parameter(&frame.body),
            tag::READY_FOR_QUERY => {
                conn.set_state(BackendState::Ready(TransactionStatus::Idle));
                return Ok(conn);
            }
            tag::ERROR_RESPONSE => return Err(server_error(&conn, &frame)),
            tag::NOTICE_RESPONSE | tag::NEGOTIATE_PROTOCOL_VERSION => {}
            other => return Err(unexpected(&conn, other, "startup")),
        }
    }
}

fn server_error(conn: &BackendConn, frame: &crate::protocol::Frame) -> BackendError {
    let e = ServerError::parse(frame);
    BackendError::Server {
        addr: conn.addr.to_string(),
        fatal: e.is_fatal(),
        code: e.code,
        message: e.message,
    }
}

fn unexpected(conn: &BackendConn, tag: u8, phase: &'static str) -> BackendError {
    BackendError::Unexpected {
        addr: conn.addr.to_string(),
        tag: tag as char,
        phase,
    }
}

/// A SCRAM exchange in progress: with the password, or with a client's keys (pass-through).
enum Sasl {
    Password(ScramSha256),
    Keys(KeyClient),
}

/// Answers the server's authentication requests until AuthenticationOk.
async fn authenticate(conn: &mut BackendConn, login: &BackendLogin) -> Result<(), BackendError> {
    let mut scram: Option<Sasl> = None;
    let mut out = BytesMut::with_capacity(256);
    loop {
        let frame = conn.read_frame().await?;
        if frame.tag == tag::ERROR_RESPONSE {
            return Err(server_error(conn, &frame));
        }
        if frame.tag != tag::AUTHENTICATION || frame.body.len() < 4 {
            return Err(unexpected(conn, frame.tag, "authentication"));
        }
        let mut body = frame.body.clone();
        let code = body.get_i32();
        out.clear();
        match code {
            0 => return Ok(()),
            3 => {
                let Some(password) = plain_password(login) else {
                    return Err(no_password(conn, login));
                };
                let mut data = password.as_bytes().to_vec();
                data.push(0);
                frontend_msg::password(&mut out, &data);
            }
            5 => {
                if body.len() != 4 {
                    return Err(unexpected(conn, frame.tag, "md5 authentication"));
                }
                let salt = [body[0], body[1], body[2], body[3]];
                let hash = match &login.secret {
                    BackendSecret::Plain(p) => md5_hex(&[p.as_bytes(), login.user.as_bytes()]),
                    BackendSecret::Md5Hash(h) => h.trim_start_matches("md5").to_string(),
                    BackendSecret::None | BackendSecret::ScramKeys(_) => {
                        return Err(no_password(conn, login))
                    }
                };
                let response = format!("md5{}", md5_hex(&[hash.as_bytes(), &salt]));
                let mut data = response.into_bytes();
                data.push(0);
                frontend_msg::password(&mut out, &data);
            }
            10 => {
                let offered = body.split(|&b| b == 0).any(|m| m == SCRAM_SHA_256.as_bytes());
                if !offered {
                    let list = String::from_utf8_lossy(&body).replace('\0', " ");
                    let method = format!("SASL ({})", list.trim());
                    tracing::error!(node = %conn.addr, %method, "backend demands an unsupported authentication method");
                    return Err(BackendError::UnsupportedAuth {
                        addr: conn.addr.to_string(),
                        method,
                    });
                }
                // Channel binding needs TLS toward the server (a later step); not offered here.
                let client = match &login.secret {
                    BackendSecret::Plain(password) => {
                        let client = ScramSha256::new(password.as_bytes(), ChannelBinding::unsupported());
                        frontend_msg::sasl_initial_response(&mut out, SCRAM_SHA_256, client.message());
                        Sasl::Password(client)
                    }
                    BackendSecret::ScramKeys(keys) => {
                        let client = KeyClient::new((**keys).clone());
                        frontend_msg::sasl_initial_response(&mut out, SCRAM_SHA_256, &client.client_first());
                        Sasl::Keys(client)
                    }
                    _ => return Err(no_password(conn, login)),
                };
                scram = Some(client);
            }
            11 | 12 => {
                let Some(client) = scram.as_mut() else {
                    return Err(unexpected(conn, frame.tag, "SASL authentication"));
                };
                let reply = sasl_step(client, code, &body).map_err(|source| match source {
                    SaslFailure::Library(source) => BackendError::Scram {
                        addr: conn.addr.to_string(),
                        source,
                    },
                    SaslFailure::PassThrough(source) => BackendError::PassThrough {
                        addr: conn.addr.to_string(),
                        user: login.user.clone(),
                        source,
                    },
                })?;
                match reply {
                    Some(reply) => frontend_msg::sasl_response(&mut out, &reply),
                    None => continue,
                }
            }
            other => {
                let method = match other {
                    2 => "Kerberos V5".to_string(),
                    7 | 8 => "GSSAPI".to_string(),
                    9 => "SSPI".to_string(),
                    n => format!("unknown ({n})"),
                };
                tracing::error!(node = %conn.addr, %method, "backend demands an unsupported authentication method");
                return Err(BackendError::UnsupportedAuth {
                    addr: conn.addr.to_string(),
                    method,
                });
            }
        }
        conn.write_all(&out).await?;
    }
}

enum SaslFailure {
    Library(std::io::Error),
    PassThrough(super::scram::PassThroughError),
}

/// AuthenticationSASLContinue (11) gives the reply to send; AuthenticationSASLFinal (12) none.
fn sasl_step(client: &mut Sasl, code: i32, body: &[u8]) -> Result<Option<Vec<u8>>, SaslFailure> {
    match (client, code) {
        (Sasl::Password(c), 11) => {
            c.update(body).map_err(SaslFailure::Library)?;
            Ok(Some(c.message().to_vec()))
        }
        (Sasl::Password(c), _) => c.finish(body).map(|_| None).map_err(SaslFailure::Library),
        (Sasl::Keys(c), 11) => c.server_first(body).map(Some).map_err(SaslFailure::PassThrough),
        (Sasl::Keys(c), _) => c
            .server_final(body)
            .map(|_| None)
            .map_err(SaslFailure::PassThrough),
    }
}

fn plain_password(login: &BackendLogin) -> Option<&str> {
    match &login.secret {
        BackendSecret::Plain(p) => Some(p),
        _ => None,
    }
}

fn no_password(conn: &BackendConn, login: &BackendLogin) -> BackendError {
    BackendError::NoPassword {
        addr: conn.addr.to_string(),
        user: login.user.clone(),
    }
}

/// Lower-case hex of the MD5 of the concatenated parts.
fn md5_hex(parts: &[&[u8]]) -> String {
    let mut hasher = Md5::new();
    for p in parts {
        hasher.update(p);
    }
    hasher.finalize().iter().map(|b| format!("{b:02x}")).collect()
}
