//! `tidepool health`: a probe for Docker's HEALTHCHECK and other supervisors. It asks the
//! running tidepool's `/readyz` when `[metrics] listen` is set (ready = listening and a primary
//! known), else speaks to its client port (an SSLRequest must be answered `S` or `N`, which
//! only a PostgreSQL-speaking listener does). Exit 0 when healthy.

use crate::config::Config;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What to probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// An HTTP GET that must answer 200.
    Http { addr: SocketAddr, path: String },
    /// A PostgreSQL listener that must answer an SSLRequest.
    Postgres(SocketAddr),
}

#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}: no answer in time")]
    Timeout(String),
    #[error("{target} answered {status}: {body}")]
    Status {
        target: String,
        status: u16,
        body: String,
    },
    #[error("{0}")]
    Protocol(String),
    #[error("bad --url {0:?}: expected http://host:port/path")]
    BadUrl(String),
}

impl Target {
    /// `/readyz` of the metrics listener if there is one served as plain HTTP without basic
    /// auth (this probe speaks neither TLS nor auth), else the first client port. A wildcard
    /// listen address is probed on loopback.
    pub fn from_config(config: &Config) -> Target {
        let plain = config.metrics.tls_cert_file.is_none() && config.metrics.basic_auth_user.is_none();
        match config.metrics.listen {
            Some(addr) if plain => Target::Http {
                addr: loopback_if_wildcard(addr),
                path: "/readyz".into(),
            },
            _ => Target::Postgres(loopback_if_wildcard(config.proxy.listen.first())),
        }
    }

    /// `http://host:port/path` (default path `/readyz`).
    pub fn from_url(url: &str) -> Result<Target, HealthError> {
        let bad = || HealthError::BadUrl(url.to_string());
        let rest = url.strip_prefix("http://").ok_or_else(bad)?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/readyz"),
        };
        let addr = authority
            .to_socket_addrs()
            .map_err(|_| bad())?
            .next()
            .ok_or_else(bad)?;
        Ok(Target::Http {
            addr,
            path: path.to_string(),
        })
    }
}

fn loopback_if_wildcard(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => SocketAddr::new(Ipv4Addr::LOCALHOST.into(), addr.port()),
        IpAddr::V6(ip) if ip.is_unspecified() => SocketAddr::new(Ipv6Addr::LOCALHOST.into(), addr.port()),
        _ => addr,
    }
}

/// Probes `target` within `timeout`; `Ok` carries a one-line description of what answered.
pub async fn check(target: &Target, timeout: Duration) -> Result<String, HealthError> {
    let name = match target {
        Target::Http { addr, path } => format!("http://{addr}{path}"),
        Target::Postgres(addr) => format!("postgres://{addr}"),
    };
    tokio::time::timeout(timeout, probe(target, &name))
        .await
        .map_err(|_| HealthError::Timeout(name.clone()))?
}

async fn probe(target: &Target, name: &str) -> Result<String, HealthError> {
    let addr = match target {
        Target::Http { addr, .. } | Target::Postgres(addr) => *addr,
    };
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|source| HealthError::Connect { addr, source })?;
    let io = |e: std::io::Error| HealthError::Protocol(format!("{name}: {e}"));
    match target {
        Target::Postgres(_) => {
            // SSLRequest: length 8, code 1234/5679.
            stream
                .write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f])
                .await
                .map_err(io)?;
            match stream.read_u8().await.map_err(io)? {
                b'S' | b'N' => Ok(format!("{name} answers the PostgreSQL protocol")),
                other => Err(HealthError::Protocol(format!(
                    "{name} answered {other:#04x} to an SSLRequest, not S or N"
                ))),
            }
        }
        Target::Http { path, .. } => {
            let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
            stream.write_all(request.as_bytes()).await.map_err(io)?;
            let mut response = Vec::new();
            // Bounded: a health answer is small.
            (&mut stream)
                .take(64 * 1024)
                .read_to_end(&mut response)
                .await
                .map_err(io)?;
            let text = String::from_utf8_lossy(&response);
            let status = text
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse::<u16>().ok())
                .ok_or_else(|| HealthError::Protocol(format!("{name}: not an HTTP answer")))?;
            let body = text.split("\r\n\r\n").nth(1).unwrap_or("").trim().to_string();
            if status == 200 {
                Ok(format!("{name}: {body}"))
            } else {
                Err(HealthError::Status {
                    target: name.to_string(),
                    status,
                    body,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_from_config_and_url() {
        let mut config = Config::from_toml(
            "[proxy]\nlisten = \"0.0.0.0:6432\"\n[[nodes]]\nhost = \"db\"\n[databases.d]\n",
        )
        .unwrap();
        assert_eq!(
            Target::from_config(&config),
            Target::Postgres("127.0.0.1:6432".parse().unwrap())
        );
        config.metrics.listen = Some("[::]:9930".parse().unwrap());
        assert_eq!(
            Target::from_config(&config),
            Target::Http {
                addr: "[::1]:9930".parse().unwrap(),
                path: "/readyz".into()
            }
        );
        assert_eq!(
            Target::from_url("http://127.0.0.1:9930/healthz").unwrap(),
            Target::Http {
                addr: "127.0.0.1:9930".parse().unwrap(),
                path: "/healthz".into()
            }
        );
        assert!(Target::from_url("https://x:1/").is_err());
        assert!(Target::from_url("http://no-port/").is_err());
    }
}
