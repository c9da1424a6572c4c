//! A deliberately tiny HTTP/1.1 server for the metrics endpoint: one request per connection,
//! a bounded request head, a read timeout, `Connection: close`. Serves `/metrics`, `/healthz`
//! and `/readyz`; nothing else.

use crate::app::Shared;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

/// Largest request head accepted (request line and headers).
pub const MAX_REQUEST: usize = 8 * 1024;
/// Time a client has to send its request head.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Time allowed to write a response.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait for a client to close after the response.
const LINGER: Duration = Duration::from_secs(1);
/// Connections served at once; more wait in the kernel's accept queue.
const MAX_CONNECTIONS: usize = 32;

/// A request line we understood.
#[derive(Debug, PartialEq, Eq)]
pub struct Request<'a> {
    /// `GET` or `HEAD`.
    pub head_only: bool,
    /// The path, without any query string.
    pub path: &'a str,
}

/// Why a request was refused, with its HTTP status.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("the request head is not complete yet")]
    Incomplete,
    #[error("request head too large")]
    TooLarge,
    #[error("malformed request")]
    Malformed,
    #[error("method not allowed")]
    Method,
}

impl RequestError {
    fn status(&self) -> &'static str {
        match self {
            RequestError::Incomplete | RequestError::Malformed => "400 Bad Request",
            RequestError::TooLarge => "431 Request Header Fields Too Large",
            RequestError::Method => "405 Method Not Allowed",
        }
    }
}

/// Parses a request head from the bytes received so far.
pub fn parse_request(buf: &[u8]) -> Result<Request<'_>, RequestError> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Err(if buf.len() >= MAX_REQUEST {
            RequestError::TooLarge
        } else {
            RequestError::Incomplete
        });
    };
    if end + 4 > MAX_REQUEST {
        return Err(RequestError::TooLarge);
    }
    let line_end = buf.windows(2).position(|w| w == b"\r\n").unwrap_or(end);
    let line = std::str::from_utf8(&buf[..line_end]).map_err(|_| RequestError::Malformed)?;
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(RequestError::Malformed);
    };
    if !version.starts_with("HTTP/1.") || !target.starts_with('/') {
        return Err(RequestError::Malformed);
    }
    let head_only = match method {
        "GET" => false,
        "HEAD" => true,
        _ => return Err(RequestError::Method),
    };
    let path = target.split('?').next().unwrap_or(target);
    Ok(Request { head_only, path })
}

/// Serves until shutdown.
pub async fn serve(shared: Arc<Shared>, listener: TcpListener) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shared.shutdown.wait() => return,
        };
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        match accepted {
            Ok((stream, _)) => {
                let shared = shared.clone();
                tokio::spawn(async move {
                    let _ = answer(&shared, stream).await;
                    drop(permit);
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "metrics accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn answer(shared: &Arc<Shared>, mut stream: TcpStream) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let parsed = tokio::time::timeout(READ_TIMEOUT, async {
        loop {
            match parse_request(&buf) {
                Err(RequestError::Incomplete) => {}
                other => return other.map(|r| (r.head_only, r.path.to_string())),
            }
            let mut chunk = [0u8; 1024];
            let n = stream
                .read(&mut chunk)
                .await
                .map_err(|_| RequestError::Malformed)?;
            if n == 0 {
                return Err(RequestError::Incomplete);
            }
            buf.extend_from_slice(&chunk[..n]);
            // Past the limit the parser refuses; keep no more than that.
            buf.truncate(MAX_REQUEST);
        }
    })
    .await;
    let (status, content_type, body, head_only) = match parsed {
        Err(_) => return Ok(()),
        Ok(Err(RequestError::Incomplete)) => return Ok(()),
        Ok(Err(e)) => (e.status(), "text/plain", format!("{e}\n"), false),
        Ok(Ok((head_only, path))) => {
            let (status, content_type, body) = route(shared, &path).await;
            (status, content_type, body, head_only)
        }
    };
    let mut response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !head_only {
        response.extend_from_slice(body.as_bytes());
    }
    tokio::time::timeout(WRITE_TIMEOUT, stream.write_all(&response))
        .await
        .map_err(|_| std::io::ErrorKind::TimedOut)??;
    let _ = stream.shutdown().await;
    // Closing with unread input makes the kernel send a reset, which can destroy the response
    // before the client reads it: read what is left (bounded) until the client closes.
    let _ = tokio::time::timeout(LINGER, async {
        let mut sink = [0u8; 4096];
        let mut left = 64 * 1024;
        while left > 0 {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left -= n.min(left),
            }
        }
    })
    .await;
    Ok(())
}

async fn route(shared: &Arc<Shared>, path: &str) -> (&'static str, &'static str, String) {
    const TEXT: &str = "text/plain; charset=utf-8";
    match path {
        "/metrics" => {
            // Encoding walks every pool and client: off the async workers.
            let shared = shared.clone();
            let body = tokio::task::spawn_blocking(move || super::render(&shared))
                .await
                .unwrap_or_default();
            ("200 OK", "text/plain; version=0.0.4; charset=utf-8", body)
        }
        "/healthz" => ("200 OK", TEXT, "ok\n".into()),
        "/readyz" => match not_ready(shared).await {
            None => ("200 OK", TEXT, "ready\n".into()),
            Some(why) => ("503 Service Unavailable", TEXT, format!("{why}\n")),
        },
        _ => ("404 Not Found", TEXT, "not found\n".into()),
    }
}

/// Why the proxy should not get traffic now, if it should not.
async fn not_ready(shared: &Shared) -> Option<&'static str> {
    if shared.shutdown.is_triggered() {
        return Some("shutting down");
    }
    // Ready when every cluster has a primary.
    let snapshot = shared.snapshot();
    for (cluster, view) in snapshot.views() {
        if let Some(health) = shared.health_of(cluster) {
            if health.view().primary().is_none() {
                return Some("no primary known");
            }
            continue;
        }
        // One node and no health checker: it is the primary if it accepts connections.
        let Some(node) = view.config.nodes.first().map(|n| n.address()) else {
            continue;
        };
        match tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(node.as_str())).await {
            Ok(Ok(_)) => {}
            _ => return Some("the node does not accept connections"),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_heads() {
        let ok = parse_request(b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(
            ok,
            Ok(Request {
                head_only: false,
                path: "/metrics"
            })
        );
        assert_eq!(
            parse_request(b"HEAD /healthz HTTP/1.0\r\n\r\n").map(|r| r.head_only),
            Ok(true)
        );
        assert_eq!(
            parse_request(b"GET /metrics HTTP/1.1\r\n"),
            Err(RequestError::Incomplete)
        );
        assert_eq!(
            parse_request(b"POST / HTTP/1.1\r\n\r\n"),
            Err(RequestError::Method)
        );
        assert_eq!(
            parse_request(b"GET /  HTTP/1.1\r\n\r\n"),
            Err(RequestError::Malformed)
        );
        assert_eq!(
            parse_request(b"GET metrics HTTP/1.1\r\n\r\n"),
            Err(RequestError::Malformed)
        );
        assert_eq!(
            parse_request(&vec![b'a'; MAX_REQUEST]),
            Err(RequestError::TooLarge)
        );
    }
}
