//! Asking Patroni who the leader is: `GET /cluster` over http or https (hyper, tokio-rustls),
//! with optional basic authentication or client certificate, and the part of its JSON answer
//! that matters (which member holds the leader key, and where its PostgreSQL listens).
//!
//! One connection per request (`Connection: close`): one GET per `health_check_interval` needs
//! no pooling, and a fresh connection cannot be a stale one.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::header;
use rustls::pki_types::ServerName;
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// The answer of a healthy Patroni is a few hundred bytes per member; anything past this is not
/// Patroni.
const MAX_RESPONSE: usize = 1 << 20;

/// How tidepool reaches Patroni: the TLS client (CA, client certificate) and basic auth; built
/// once per configuration snapshot.
#[derive(Default)]
pub struct PatroniAccess {
    tls: Option<tokio_rustls::TlsConnector>,
    /// `Basic …` for the Authorization header.
    authorization: Option<String>,
}

impl std::fmt::Debug for PatroniAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PatroniAccess")
            .field("tls", &self.tls.is_some())
            .field("basic_auth", &self.authorization.is_some())
            .finish()
    }
}

impl PatroniAccess {
    /// Reads the CA and client certificate files of `[routing]`.
    pub fn build(routing: &crate::router::RoutingConfig) -> Result<PatroniAccess, crate::tls::TlsError> {
        let authorization = match (&routing.patroni_user, &routing.patroni_password) {
            (Some(user), Some(password)) => Some(basic_authorization(user, &password.0)),
            _ => None,
        };
        let Some(ca) = &routing.patroni_ca_file else {
            return Ok(PatroniAccess {
                tls: None,
                authorization,
            });
        };
        let client_cert = match (&routing.patroni_cert_file, &routing.patroni_key_file) {
            (Some(cert), Some(key)) => Some((cert.as_path(), key.as_path())),
            _ => None,
        };
        let config = crate::tls::http_client_config(("routing.patroni_ca_file", ca), client_cert)?;
        Ok(PatroniAccess {
            tls: Some(tokio_rustls::TlsConnector::from(config)),
            authorization,
        })
    }
}

/// `Basic base64(user:password)` (RFC 7617).
pub fn basic_authorization(user: &str, password: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// One Patroni REST endpoint, from `routing.patroni_api` (`http://host:port` or
/// `https://host:port`), with the access settings of the snapshot it came from.
#[derive(Debug, Clone)]
pub struct PatroniUrl {
    /// `host:port` to connect to (and to send as `Host`).
    pub authority: Arc<str>,
    /// The host alone: the name the server certificate must carry.
    pub host: Arc<str>,
    pub https: bool,
    pub access: Arc<PatroniAccess>,
}

impl PartialEq for PatroniUrl {
    fn eq(&self, other: &Self) -> bool {
        self.authority == other.authority && self.https == other.https
    }
}

impl Eq for PatroniUrl {}

impl PatroniUrl {
    /// Accepts `http://host:port` or `https://host:port` with an optional trailing `/`; the
    /// port is required (Patroni's default is 8008, but guessing hides typos). No user info
    /// (see `patroni_user`), no path.
    pub fn parse(url: &str) -> Result<PatroniUrl, &'static str> {
        let (https, rest) = match (url.strip_prefix("https://"), url.strip_prefix("http://")) {
            (Some(rest), _) => (true, rest),
            (None, Some(rest)) => (false, rest),
            (None, None) => return Err("must start with http:// or https://"),
        };
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.is_empty() || authority.contains(['/', '@', '?', '#', ' ']) {
            return Err("must be http(s)://host:port with no path");
        }
        let (host, port) = authority
            .rsplit_once(':')
            .ok_or("needs a port (http://host:port)")?;
        if host.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0) {
            return Err("needs a host and a port between 1 and 65535");
        }
        let host = host.trim_start_matches('[').trim_end_matches(']');
        Ok(PatroniUrl {
            authority: Arc::from(authority),
            host: Arc::from(host),
            https,
            access: Arc::default(),
        })
    }

    /// The same endpoint reached with `access`.
    pub fn with_access(mut self, access: Arc<PatroniAccess>) -> PatroniUrl {
        self.access = access;
        self
    }
}

/// Why asking Patroni failed.
#[derive(Debug, thiserror::Error)]
pub enum PatroniError {
    #[error("cannot reach Patroni at {at}: {source}")]
    Io {
        at: Arc<str>,
        #[source]
        source: std::io::Error,
    },
    #[error("Patroni at {at} did not answer within {after:?}")]
    Timeout { at: Arc<str>, after: Duration },
    #[error("Patroni at {at} answered HTTP {status}")]
    Status { at: Arc<str>, status: u16 },
    #[error("Patroni at {at} sent an unreadable answer: {reason}")]
    Malformed { at: Arc<str>, reason: String },
}

/// `GET /cluster` on `url` within `timeout`: the `host:port` of the leader's PostgreSQL, or
/// `None` when no member holds the leader key (a failover is under way).
pub async fn leader(url: &PatroniUrl, timeout: Duration) -> Result<Option<String>, PatroniError> {
    let at = url.authority.clone();
    let (status, body) = tokio::time::timeout(timeout, get(url, "/cluster"))
        .await
        .map_err(|_| PatroniError::Timeout {
            at: at.clone(),
            after: timeout,
        })?
        .map_err(|source| PatroniError::Io {
            at: at.clone(),
            source,
        })?;
    if status != 200 {
        return Err(PatroniError::Status { at, status });
    }
    cluster_leader(&body).map_err(|reason| PatroniError::Malformed { at, reason })
}

/// Connects (TLS for https), sends the request and reads the whole answer, at most
/// `MAX_RESPONSE` bytes of body.
async fn get(url: &PatroniUrl, path: &str) -> std::io::Result<(u16, Bytes)> {
    let tcp = TcpStream::connect(&*url.authority).await?;
    if !url.https {
        return exchange(tcp, url, path).await;
    }
    let connector = (url.access.tls.as_ref())
        .ok_or_else(|| std::io::Error::other("https needs routing.patroni_ca_file"))?;
    let name = ServerName::try_from(url.host.to_string())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let tls = connector.connect(name, tcp).await?;
    exchange(tls, url, path).await
}

/// One HTTP/1.1 request on `io`. The connection task is aborted with this future (a timeout
/// drops it), so a server that stops answering holds nothing.
async fn exchange<S>(io: S, url: &PatroniUrl, path: &str) -> std::io::Result<(u16, Bytes)>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io))
        .await
        .map_err(std::io::Error::other)?;
    let _connection = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(connection));
    let mut request = hyper::Request::get(path)
        .header(header::HOST, &*url.authority)
        .header(header::ACCEPT, "application/json")
        .header(header::USER_AGENT, "tidepool")
        .header(header::CONNECTION, "close");
    if let Some(authorization) = &url.access.authorization {
        request = request.header(header::AUTHORIZATION, authorization);
    }
    let request = request
        .body(Empty::<Bytes>::new())
        .map_err(std::io::Error::other)?;
    let response = sender
        .send_request(request)
        .await
        .map_err(std::io::Error::other)?;
    let status = response.status().as_u16();
    let body = Limited::new(response.into_body(), MAX_RESPONSE)
        .collect()
        .await
        .map_err(|e| std::io::Error::other(format!("reading the body: {e}")))?
        .to_bytes();
    Ok((status, body))
}

/// The fields of `/cluster` we read; everything else is ignored.
#[derive(Deserialize)]
struct Cluster {
    members: Vec<Member>,
}

#[derive(Deserialize)]
struct Member {
    role: String,
    host: Option<String>,
    port: Option<u16>,
}

/// The leader's `host:port` from a `/cluster` body. Patroni 3 says `leader`, older versions
/// `master`; a standby cluster's `standby_leader` is not writable and does not count.
pub fn cluster_leader(body: &[u8]) -> Result<Option<String>, String> {
    let cluster: Cluster = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let mut leaders = cluster
        .members
        .into_iter()
        .filter(|m| m.role == "leader" || m.role == "master");
    let Some(leader) = leaders.next() else {
        return Ok(None);
    };
    if leaders.next().is_some() {
        return Err("more than one leader".into());
    }
    match (leader.host, leader.port) {
        (Some(host), Some(port)) if host.contains(':') => Ok(Some(format!("[{host}]:{port}"))),
        (Some(host), Some(port)) => Ok(Some(format!("{host}:{port}"))),
        _ => Err("the leader has no host or port".into()),
    }
}

/// Fuzz entry point: an arbitrary `/cluster` body through the parser never panics.
pub fn fuzz_response(data: &[u8]) {
    let _ = cluster_leader(data);
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLUSTER: &str = r#"{"members": [{"name": "m0", "role": "replica", "state": "running",
        "api_url": "http://127.0.0.1:8008/patroni", "host": "127.0.0.1", "port": 5433, "timeline": 2},
        {"name": "m1", "role": "leader", "state": "running", "host": "10.0.0.2", "port": 5432,
        "timeline": 2}], "scope": "tp"}"#;

    #[test]
    fn urls() {
        let url = PatroniUrl::parse("http://127.0.0.1:8008/").unwrap();
        assert_eq!(
            (&*url.authority, &*url.host, url.https),
            ("127.0.0.1:8008", "127.0.0.1", false)
        );
        let url = PatroniUrl::parse("https://db1:8008").unwrap();
        assert_eq!(
            (&*url.authority, &*url.host, url.https),
            ("db1:8008", "db1", true)
        );
        assert_eq!(&*PatroniUrl::parse("https://[::1]:8008").unwrap().host, "::1");
        for bad in [
            "ftp://db1:8008",
            "db1:8008",
            "http://db1",
            "http://db1:0",
            "http://db1:8008/cluster",
            "http://u@db1:8008",
            "http://:8008",
        ] {
            assert!(PatroniUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cluster_bodies() {
        assert_eq!(
            cluster_leader(CLUSTER.as_bytes()).unwrap().as_deref(),
            Some("10.0.0.2:5432")
        );
        assert_eq!(
            cluster_leader(br#"{"members": []}"#).unwrap(),
            None,
            "no leader during a failover"
        );
        assert_eq!(
            basic_authorization("patroni", "secret"),
            "Basic cGF0cm9uaTpzZWNyZXQ="
        );
    }

    #[test]
    fn config_names_the_bad_entry() {
        let toml = |urls: &str| {
            format!(
                "[[nodes]]\nhost = \"a\"\n[[nodes]]\nhost = \"b\"\n[databases.app]\n\
                 [routing]\npatroni_api = [{urls}]\ntransaction_routing = \"first_statement\"\n\
                 session_routing = \"per_transaction\"\n"
            )
        };
        assert!(crate::config::Config::from_toml(&toml("\"http://a:8008\"")).is_ok());
        let error = crate::config::Config::from_toml(&toml("\"http://a:8008\", \"ftp://b:8008\""))
            .unwrap_err()
            .to_string();
        assert!(error.contains("routing.patroni_api[1]"), "{error}");
        // https needs a CA file.
        let error = crate::config::Config::from_toml(&toml("\"https://a:8008\""))
            .unwrap_err()
            .to_string();
        assert!(error.contains("routing.patroni_ca_file"), "{error}");
        let error =
            crate::config::Config::from_toml(&toml("\"http://a:8008\"").replace("first_statement", "first"))
                .unwrap_err()
                .to_string();
        assert!(error.contains("transaction_routing"), "{error}");
    }

    #[test]
    fn leaders() {
        let two = r#"{"members": [{"role": "leader", "host": "a", "port": 1},
                     {"role": "master", "host": "b", "port": 2}]}"#;
        assert!(cluster_leader(two.as_bytes()).is_err());
        let v6 = r#"{"members": [{"role": "leader", "host": "::1", "port": 5432}]}"#;
        assert_eq!(
            cluster_leader(v6.as_bytes()).unwrap().as_deref(),
            Some("[::1]:5432")
        );
        let standby = r#"{"members": [{"role": "standby_leader", "host": "a", "port": 1}]}"#;
        assert_eq!(cluster_leader(standby.as_bytes()).unwrap(), None);
        assert!(cluster_leader(b"not json").is_err());
    }
}
