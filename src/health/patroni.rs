//! Asking Patroni who the leader is: a minimal HTTP/1.1 `GET /cluster` over a plain TCP stream and
//! the part of its JSON answer that matters (which member holds the leader key, and where its
//! PostgreSQL listens).
//!
//! Why not an HTTP client crate: one GET on loopback or a private network, answered by Patroni's
//! small built-in server, needs none of pooling, TLS or redirects.

use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The answer of a healthy Patroni is a few hundred bytes per member; anything past this is not
/// Patroni.
const MAX_RESPONSE: usize = 1 << 20;

/// One Patroni REST endpoint, from `routing.patroni_api` (`http://host:port`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatroniUrl {
    /// `host:port` to connect to (and to send as `Host`).
    pub authority: Arc<str>,
}

impl PatroniUrl {
    /// Accepts `http://host:port` with an optional trailing `/`; the port is required (Patroni's
    /// default is 8008, but guessing hides typos). No TLS, no user info, no path.
    pub fn parse(url: &str) -> Result<PatroniUrl, &'static str> {
        let rest = url
            .strip_prefix("http://")
            .ok_or("must start with http:// (https is not supported)")?;
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.is_empty() || authority.contains(['/', '@', '?', '#', ' ']) {
            return Err("must be http://host:port with no path");
        }
        let (host, port) = authority
            .rsplit_once(':')
            .ok_or("needs a port (http://host:port)")?;
        if host.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0) {
            return Err("needs a host and a port between 1 and 65535");
        }
        Ok(PatroniUrl {
            authority: Arc::from(authority),
        })
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
    let response = tokio::time::timeout(timeout, get(&url.authority, "/cluster"))
        .await
        .map_err(|_| PatroniError::Timeout {
            at: at.clone(),
            after: timeout,
        })?
        .map_err(|source| PatroniError::Io {
            at: at.clone(),
            source,
        })?;
    let malformed = |reason: String| PatroniError::Malformed {
        at: at.clone(),
        reason,
    };
    let (status, body) = parse_response(&response).map_err(|r| malformed(r.to_string()))?;
    if status != 200 {
        return Err(PatroniError::Status { at, status });
    }
    cluster_leader(body).map_err(malformed)
}

/// Sends the request and reads until the server closes (we ask it to), at most `MAX_RESPONSE`.
async fn get(authority: &str, path: &str) -> std::io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(authority).await?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nAccept: application/json\r\n\
         User-Agent: tidepool\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    (&mut stream)
        .take(MAX_RESPONSE as u64 + 1)
        .read_to_end(&mut response)
        .await?;
    if response.len() > MAX_RESPONSE {
        return Err(std::io::Error::other("response larger than 1 MiB"));
    }
    Ok(response)
}

/// Splits an HTTP/1.x response into its status code and body (de-chunked if need be).
pub fn parse_response(bytes: &[u8]) -> Result<(u16, Vec<u8>), &'static str> {
    let end = find(bytes, b"\r\n\r\n").ok_or("no end of headers")?;
    let head = std::str::from_utf8(&bytes[..end]).map_err(|_| "headers are not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut words = status_line.split(' ');
    if !words.next().is_some_and(|v| v.starts_with("HTTP/1.")) {
        return Err("not an HTTP/1.x response");
    }
    let status = words
        .next()
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or("no status code")?;
    let mut chunked = false;
    let mut length = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Err("malformed header line");
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.eq_ignore_ascii_case("chunked");
        } else if name.eq_ignore_ascii_case("content-length") {
            length = Some(value.parse::<usize>().map_err(|_| "bad Content-Length")?);
        }
    }
    let body = &bytes[end + 4..];
    let body = match (chunked, length) {
        (true, _) => dechunk(body)?,
        (false, Some(n)) => body.get(..n).ok_or("body shorter than Content-Length")?.to_vec(),
        (false, None) => body.to_vec(),
    };
    Ok((status, body))
}

fn dechunk(mut body: &[u8]) -> Result<Vec<u8>, &'static str> {
    let mut out = Vec::new();
    loop {
        let line_end = find(body, b"\r\n").ok_or("unterminated chunk size")?;
        let size = std::str::from_utf8(&body[..line_end]).map_err(|_| "bad chunk size")?;
        let size = size.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size, 16).map_err(|_| "bad chunk size")?;
        body = &body[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        let chunk = body.get(..size).ok_or("truncated chunk")?;
        out.extend_from_slice(chunk);
        body = body.get(size + 2..).ok_or("truncated chunk")?;
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
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
pub fn cluster_leader(body: Vec<u8>) -> Result<Option<String>, String> {
    let cluster: Cluster = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
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

/// Fuzz entry point: an arbitrary HTTP response through the parsers never panics.
pub fn fuzz_response(data: &[u8]) {
    if let Ok((_, body)) = parse_response(data) {
        let _ = cluster_leader(body);
    }
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
        assert_eq!(&*url.authority, "127.0.0.1:8008");
        assert_eq!(
            &*PatroniUrl::parse("http://db1:8008").unwrap().authority,
            "db1:8008"
        );
        for bad in [
            "https://db1:8008",
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
    fn responses_plain_sized_and_chunked() {
        let plain = format!("HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n{CLUSTER}");
        let (status, body) = parse_response(plain.as_bytes()).unwrap();
        assert_eq!(status, 200);
        assert_eq!(cluster_leader(body).unwrap().as_deref(), Some("10.0.0.2:5432"));

        let sized = "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 2\r\n\r\n{}trailing";
        assert_eq!(parse_response(sized.as_bytes()).unwrap(), (503, b"{}".to_vec()));

        let chunked = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
                       4\r\n{\"me\r\na;x=1\r\nmbers\": []\r\n1\r\n}\r\n0\r\n\r\n";
        let (_, body) = parse_response(chunked.as_bytes()).unwrap();
        assert_eq!(body, br#"{"members": []}"#);
        assert_eq!(cluster_leader(body).unwrap(), None, "no leader during a failover");

        for bad in [
            "HTTP/1.1 200 OK\r\n",
            "SSH-2.0\r\n\r\n",
            "HTTP/1.1 OK\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n{}",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        ] {
            assert!(parse_response(bad.as_bytes()).is_err(), "{bad:?}");
        }
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
        let error = crate::config::Config::from_toml(&toml("\"http://a:8008\", \"https://b:8008\""))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("routing.patroni_api[1]") && error.contains("https"),
            "{error}"
        );
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
        assert!(cluster_leader(two.into()).is_err());
        let v6 = r#"{"members": [{"role": "leader", "host": "::1", "port": 5432}]}"#;
        assert_eq!(cluster_leader(v6.into()).unwrap().as_deref(), Some("[::1]:5432"));
        let standby = r#"{"members": [{"role": "standby_leader", "host": "a", "port": 1}]}"#;
        assert_eq!(cluster_leader(standby.into()).unwrap(), None);
        assert!(cluster_leader(b"not json".to_vec()).is_err());
    }
}
