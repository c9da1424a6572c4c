//! The metrics endpoint's HTTP server (hyper, HTTP/1.1): `/metrics`, `/healthz` and `/readyz`,
//! optionally over TLS and behind basic authentication, like the Prometheus exporters' web
//! config. One request per connection, bounded request heads, read and write timeouts.

use super::readiness::{self, Answer};
use crate::app::Shared;
use bytes::Bytes;
use http_body_util::Full;
use hyper::{header, Method, Request, Response, StatusCode};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

/// Largest request head accepted (request line and headers); larger gets 431.
pub const MAX_REQUEST: usize = 8 * 1024;
/// Time a client has to complete TLS and send its request head.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Time allowed to serve one connection once its request arrived.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; more wait in the kernel's accept queue.
const MAX_CONNECTIONS: usize = 32;

/// `[metrics]` TLS and basic auth, built once at start.
#[derive(Default)]
pub struct Web {
    tls: Option<tokio_rustls::TlsAcceptor>,
    /// The `Authorization` header value a request must carry.
    authorization: Option<String>,
}

impl Web {
    /// Reads the certificate files of `[metrics]`.
    pub fn build(config: &crate::config::MetricsConfig) -> Result<Web, crate::tls::TlsError> {
        let tls = match (&config.tls_cert_file, &config.tls_key_file) {
            (Some(cert), Some(key)) => Some(tokio_rustls::TlsAcceptor::from(crate::tls::http_server_config(
                ("metrics.tls_cert_file", cert),
                ("metrics.tls_key_file", key),
            )?)),
            _ => None,
        };
        let authorization = match (&config.basic_auth_user, &config.basic_auth_password) {
            (Some(user), Some(password)) => {
                Some(crate::health::patroni::basic_authorization(user, &password.0))
            }
            _ => None,
        };
        Ok(Web { tls, authorization })
    }
}

/// Whether an `Authorization` header value grants access: compared whole, in constant time.
pub fn authorized(expected: &str, given: Option<&[u8]>) -> bool {
    let Some(given) = given else {
        return false;
    };
    let expected = expected.as_bytes();
    // Length is not secret (it follows from the user name and a password length).
    given.len() == expected.len() && given.iter().zip(expected).fold(0u8, |d, (a, b)| d | (a ^ b)) == 0
}

/// Serves until shutdown.
pub async fn serve(shared: Arc<Shared>, listener: TcpListener, web: Arc<Web>) {
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
                let (shared, web) = (shared.clone(), web.clone());
                tokio::spawn(async move {
                    connection(shared, web, stream).await;
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

/// One connection: TLS if configured, then one request.
async fn connection(shared: Arc<Shared>, web: Arc<Web>, stream: TcpStream) {
    let Some(acceptor) = web.tls.clone() else {
        return http(shared, web, stream).await;
    };
    match tokio::time::timeout(READ_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => http(shared, web, tls).await,
        Ok(Err(e)) => tracing::debug!(error = %e, "metrics TLS handshake failed"),
        Err(_) => tracing::debug!("metrics TLS handshake timed out"),
    }
}

async fn http<S>(shared: Arc<Shared>, web: Arc<Web>, io: S)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |request| {
        let (shared, web) = (shared.clone(), web.clone());
        async move { Ok::<_, std::convert::Infallible>(answer(&shared, &web, request).await) }
    });
    let served = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(READ_TIMEOUT)
        .max_buf_size(MAX_REQUEST)
        .keep_alive(false)
        .serve_connection(hyper_util::rt::TokioIo::new(io), service);
    match tokio::time::timeout(READ_TIMEOUT + WRITE_TIMEOUT, served).await {
        Ok(Err(e)) => tracing::debug!(error = %e, "metrics request failed"),
        Err(_) => tracing::debug!("metrics connection timed out"),
        Ok(Ok(())) => {}
    }
}

/// The response to one request: method, then credentials, then the path.
async fn answer<B>(shared: &Arc<Shared>, web: &Web, request: Request<B>) -> Response<Full<Bytes>> {
    const TEXT: &str = "text/plain; charset=utf-8";
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return respond(
            StatusCode::METHOD_NOT_ALLOWED,
            TEXT,
            "method not allowed\n".into(),
        );
    }
    if let Some(expected) = &web.authorization {
        let given = request.headers().get(header::AUTHORIZATION).map(|v| v.as_bytes());
        if !authorized(expected, given) {
            let mut response = respond(StatusCode::UNAUTHORIZED, TEXT, "unauthorized\n".into());
            (response.headers_mut()).insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Basic realm=\"tidepool\""),
            );
            return response;
        }
    }
    let uri = request.uri();
    let (status, content_type, body) = route(shared, uri.path(), uri.query()).await;
    respond(status, content_type, body)
}

fn respond(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    (response.headers_mut()).insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    response
}

async fn route(shared: &Arc<Shared>, path: &str, query: Option<&str>) -> (StatusCode, &'static str, String) {
    const TEXT: &str = "text/plain; charset=utf-8";
    match path {
        "/metrics" => {
            // Encoding walks every pool and client: off the async workers.
            let shared = shared.clone();
            let body = tokio::task::spawn_blocking(move || super::render(&shared))
                .await
                .unwrap_or_default();
            (StatusCode::OK, "text/plain; version=0.0.4; charset=utf-8", body)
        }
        "/healthz" => (StatusCode::OK, TEXT, "ok\n".into()),
        "/readyz" => match readiness::check(shared, readiness::question(query)).await {
            Answer::Ready(body) => (StatusCode::OK, TEXT, body),
            Answer::NotReady(body) => (StatusCode::SERVICE_UNAVAILABLE, TEXT, body),
            Answer::UnknownCluster(body) => (StatusCode::NOT_FOUND, TEXT, body),
        },
        _ => (StatusCode::NOT_FOUND, TEXT, "not found\n".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_auth_is_compared_whole() {
        let expected = crate::health::patroni::basic_authorization("prom", "s3cret");
        assert!(authorized(&expected, Some(expected.as_bytes())));
        assert!(!authorized(&expected, None));
        let wrong = crate::health::patroni::basic_authorization("prom", "s3creT");
        assert!(!authorized(&expected, Some(wrong.as_bytes())));
        assert!(!authorized(
            &expected,
            Some(&expected.as_bytes()[..expected.len() - 1])
        ));
    }
}
