//! Where clients connect (`listen` addresses, the Unix-domain socket) and the TCP keepalive
//! settings applied to client and server sockets, with PgBouncer's names and meanings.

use super::ConfigDuration;
use serde::{Deserialize, Deserializer};
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

/// `proxy.listen`: one address (`"127.0.0.1:6432"`) or several (`["127.0.0.1:6432",
/// "[::1]:6432"]`); never empty. The first is the one [`crate::app::Proxy::local_addr`] reports
/// and whose port names the Unix socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenAddrs(Vec<SocketAddr>);

impl ListenAddrs {
    /// The first address.
    pub fn first(&self) -> SocketAddr {
        self.0[0]
    }

    pub fn all(&self) -> &[SocketAddr] {
        &self.0
    }

    pub fn contains(&self, addr: &SocketAddr) -> bool {
        self.0.contains(addr)
    }
}

impl From<SocketAddr> for ListenAddrs {
    fn from(addr: SocketAddr) -> Self {
        ListenAddrs(vec![addr])
    }
}

/// Why a `listen` value was refused.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("invalid socket address {0:?} (expected ip:port, IPv6 as \"[::1]:6432\")")]
    Address(String),
    #[error("at least one address is required")]
    Empty,
}

impl FromStr for ListenAddrs {
    type Err = ListenError;

    /// One address, or several separated by commas.
    fn from_str(text: &str) -> Result<Self, ListenError> {
        let addrs = (text.split(',').map(str::trim).filter(|s| !s.is_empty()))
            .map(|s| s.parse().map_err(|_| ListenError::Address(s.to_string())))
            .collect::<Result<Vec<SocketAddr>, _>>()?;
        if addrs.is_empty() {
            return Err(ListenError::Empty);
        }
        Ok(ListenAddrs(addrs))
    }
}

impl fmt::Display for ListenAddrs {
    /// Comma-separated, as `FromStr` reads it back (SHOW CONFIG, `SET listen`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let joined: Vec<String> = self.0.iter().map(SocketAddr::to_string).collect();
        f.write_str(&joined.join(","))
    }
}

impl<'de> Deserialize<'de> for ListenAddrs {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            One(String),
            Many(Vec<String>),
        }
        let text = match Raw::deserialize(deserializer)? {
            Raw::One(one) => one,
            Raw::Many(many) => many.join(","),
        };
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// `proxy.unix_socket_mode`: permission bits of the socket file, written in octal as a string
/// (`"0777"`, PgBouncer's default) or as a TOML integer (`0o770`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketMode(pub u32);

impl Default for SocketMode {
    fn default() -> Self {
        SocketMode(0o777)
    }
}

impl fmt::Display for SocketMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04o}", self.0)
    }
}

impl<'de> Deserialize<'de> for SocketMode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Octal(String),
            Number(u32),
        }
        let mode = match Raw::deserialize(deserializer)? {
            Raw::Number(n) => n,
            Raw::Octal(s) => u32::from_str_radix(s.trim().trim_start_matches("0o"), 8)
                .map_err(|_| serde::de::Error::custom(format!("{s:?} is not an octal mode like \"0777\"")))?,
        };
        if mode > 0o777 {
            return Err(serde::de::Error::custom("mode must be at most 0777"));
        }
        Ok(SocketMode(mode))
    }
}

/// The Unix-domain socket: `proxy.unix_socket_dir` and `proxy.unix_socket_mode`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnixSocket {
    pub dir: PathBuf,
    pub mode: SocketMode,
}

impl UnixSocket {
    /// The socket file for `port`, named as libpq looks for it (`psql -h DIR -p PORT`).
    pub fn path(&self, port: u16) -> PathBuf {
        self.dir.join(format!(".s.PGSQL.{port}"))
    }
}

/// TCP keepalive and user timeout, as PgBouncer's `tcp_keepalive`, `tcp_keepidle`,
/// `tcp_keepintvl`, `tcp_keepcnt` and `tcp_user_timeout`: 0 leaves the operating system's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keepalive {
    pub enabled: bool,
    /// Idle time before the first probe (TCP_KEEPIDLE).
    pub idle: ConfigDuration,
    /// Time between probes (TCP_KEEPINTVL).
    pub interval: ConfigDuration,
    /// Unanswered probes before the connection is dropped (TCP_KEEPCNT).
    pub count: u32,
    /// How long sent data may stay unacknowledged before the connection is dropped
    /// (TCP_USER_TIMEOUT).
    pub user_timeout: ConfigDuration,
}

impl Default for Keepalive {
    /// PgBouncer's defaults: keepalive on, the system's timings.
    fn default() -> Self {
        Keepalive {
            enabled: true,
            idle: ConfigDuration::secs(0),
            interval: ConfigDuration::secs(0),
            count: 0,
            user_timeout: ConfigDuration::secs(0),
        }
    }
}

impl Keepalive {
    /// Sets the options on a connected TCP socket (client or server side). Values of 0 are not
    /// set, so the socket keeps the system's.
    pub fn apply(&self, socket: socket2::SockRef<'_>) -> std::io::Result<()> {
        if !self.enabled {
            // Leave the system default alone only when nothing asked for keepalive.
            socket.set_keepalive(false)?;
        } else {
            let mut params = socket2::TcpKeepalive::new();
            if !self.idle.0.is_zero() {
                params = params.with_time(self.idle.0);
            }
            if !self.interval.0.is_zero() {
                params = params.with_interval(self.interval.0);
            }
            if self.count > 0 {
                params = params.with_retries(self.count);
            }
            socket.set_tcp_keepalive(&params)?;
        }
        if !self.user_timeout.0.is_zero() {
            socket.set_tcp_user_timeout(Some(self.user_timeout.0))?;
        }
        Ok(())
    }
}
