//! HTTP on hyper + rustls: Patroni's REST API over https (CA file, basic auth, client
//! certificate) against a small HTTPS server of this test speaking Patroni's `/cluster` JSON,
//! and the metrics endpoint over TLS with basic auth. Certificates are made with rcgen.

mod common;

use common::*;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tidepool::config::Config;
use tidepool::health::patroni::{self, PatroniAccess, PatroniError, PatroniUrl};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A CA with a server certificate for 127.0.0.1, a client certificate, and an unrelated CA.
struct Pki {
    _dir: tempfile::TempDir,
    dir: PathBuf,
}

impl Pki {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

fn ca(dir: &Path, name: &str) -> Issuer<'static, KeyPair> {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let cert = params.self_signed(&key).unwrap();
    std::fs::write(dir.join(format!("{name}.crt")), cert.pem()).unwrap();
    Issuer::new(params, key)
}

fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let issuer = ca(&dir, "ca");
        ca(&dir, "other-ca");
        for (name, sans) in [("server", vec!["127.0.0.1".to_string()]), ("client", Vec::new())] {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(sans).unwrap();
            params.distinguished_name.push(DnType::CommonName, name);
            let cert = params.signed_by(&key, &issuer).unwrap();
            std::fs::write(dir.join(format!("{name}.crt")), cert.pem()).unwrap();
            std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
        }
        Pki { _dir: tmp, dir }
    })
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certs(path: &Path) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_file_iter(path)
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn roots(path: &Path) -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs(path) {
        roots.add(cert).unwrap();
    }
    roots
}

/// The test's HTTPS server: `server.crt`, and client certificates signed by the CA required
/// when `client_cert` is set.
fn server_tls(client_cert: bool) -> tokio_rustls::TlsAcceptor {
    let p = pki();
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = if client_cert {
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots(&p.path("ca.crt"))),
            provider(),
        )
        .build()
        .unwrap();
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let key = PrivateKeyDer::from_pem_file(p.path("server.key")).unwrap();
    let config = builder
        .with_single_cert(certs(&p.path("server.crt")), key)
        .unwrap();
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

/// Patroni's `/cluster` answer: a replica and the leader.
const CLUSTER: &str = r#"{"members": [
    {"name": "pg1", "role": "replica", "state": "streaming", "api_url": "https://127.0.0.1:8008/patroni",
     "host": "127.0.0.1", "port": 5433, "timeline": 3, "lag": 0},
    {"name": "pg0", "role": "leader", "state": "running", "api_url": "https://127.0.0.1:8009/patroni",
     "host": "127.0.0.1", "port": 5432, "timeline": 3}], "scope": "tidepool-test"}"#;

/// Serves `GET /cluster` over TLS until dropped: 401 without the expected `Authorization`
/// (when one is expected), 404 for other paths. Returns the port.
async fn fake_patroni(
    tls: tokio_rustls::TlsAcceptor,
    authorization: Option<String>,
) -> (u16, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (tls, authorization) = (tls.clone(), authorization.clone());
            tokio::spawn(async move {
                let Ok(mut stream) = tls.accept(tcp).await else {
                    return;
                };
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && head.len() < 16 << 10 {
                    if stream.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head).to_string();
                let allowed = authorization.as_ref().is_none_or(|expected| {
                    (head.lines()).any(|l| {
                        l.to_ascii_lowercase().starts_with("authorization:") && l[14..].trim() == expected
                    })
                });
                let (status, body) = match (head.starts_with("GET /cluster HTTP/1.1\r\n"), allowed) {
                    (_, false) => ("401 Unauthorized", "no auth\n"),
                    (true, true) => ("200 OK", CLUSTER),
                    (false, true) => ("404 Not Found", "not found\n"),
                };
                let response = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    (port, task)
}

/// The endpoint `https://127.0.0.1:port` reached with the `[routing]` keys in `keys`.
fn endpoint(port: u16, keys: &str) -> PatroniUrl {
    let text = format!(
        "{}\n[routing]\npatroni_api = [\"https://127.0.0.1:{port}\"]\n{keys}\n",
        base_config_toml(pg())
    );
    let config = Config::from_toml(&text).unwrap_or_else(|e| panic!("config: {e}\n{text}"));
    let access = PatroniAccess::build(&config.routing).expect("certificates load");
    PatroniUrl::parse(&format!("https://127.0.0.1:{port}"))
        .unwrap()
        .with_access(Arc::new(access))
}

fn path_key(key: &str, name: &str) -> String {
    format!("{key} = {:?}\n", pki().path(name))
}

const TIMEOUT: Duration = Duration::from_secs(5);

#[tokio::test]
async fn patroni_over_https_with_a_ca_and_basic_auth() {
    let expected = patroni::basic_authorization("patroni", "rest-secret");
    let (port, server) = fake_patroni(server_tls(false), Some(expected)).await;
    let ca = path_key("patroni_ca_file", "ca.crt");

    let good = endpoint(
        port,
        &format!("{ca}patroni_user = \"patroni\"\npatroni_password = \"rest-secret\"\n"),
    );
    assert_eq!(
        patroni::leader(&good, TIMEOUT).await.expect("leader").as_deref(),
        Some("127.0.0.1:5432")
    );

    let wrong = endpoint(
        port,
        &format!("{ca}patroni_user = \"patroni\"\npatroni_password = \"nope\"\n"),
    );
    let error = patroni::leader(&wrong, TIMEOUT).await.unwrap_err();
    assert!(
        matches!(error, PatroniError::Status { status: 401, .. }),
        "{error}"
    );
    let anonymous = endpoint(port, &ca);
    let error = patroni::leader(&anonymous, TIMEOUT).await.unwrap_err();
    assert!(
        matches!(error, PatroniError::Status { status: 401, .. }),
        "{error}"
    );

    // A server certificate the configured CA did not sign is refused before any request.
    let untrusted = endpoint(
        port,
        &format!(
            "{}patroni_user = \"patroni\"\npatroni_password = \"rest-secret\"\n",
            path_key("patroni_ca_file", "other-ca.crt")
        ),
    );
    let error = patroni::leader(&untrusted, TIMEOUT).await.unwrap_err();
    assert!(matches!(error, PatroniError::Io { .. }), "{error}");
    assert!(
        error.to_string().contains("certificate") || format!("{error:?}").contains("Certificate"),
        "{error:?}"
    );
    server.abort();
}

#[tokio::test]
async fn patroni_over_https_with_a_client_certificate() {
    let (port, server) = fake_patroni(server_tls(true), None).await;
    let ca = path_key("patroni_ca_file", "ca.crt");
    let with_cert = endpoint(
        port,
        &format!(
            "{ca}{}{}",
            path_key("patroni_cert_file", "client.crt"),
            path_key("patroni_key_file", "client.key")
        ),
    );
    assert_eq!(
        patroni::leader(&with_cert, TIMEOUT)
            .await
            .expect("leader")
            .as_deref(),
        Some("127.0.0.1:5432")
    );
    // Without one the server ends the handshake.
    let without = endpoint(port, &ca);
    let error = patroni::leader(&without, TIMEOUT).await.unwrap_err();
    assert!(matches!(error, PatroniError::Io { .. }), "{error}");
    server.abort();
}

/// One request over TLS to the metrics endpoint; returns the whole response as text.
async fn metrics_request(addr: std::net::SocketAddr, authorization: Option<&str>) -> String {
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots(&pki().path("ca.crt")))
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = connector
        .connect(name, tcp)
        .await
        .expect("TLS with the metrics endpoint");
    let auth = authorization.map_or(String::new(), |a| format!("Authorization: {a}\r\n"));
    let request = format!("GET /metrics HTTP/1.1\r\nHost: test\r\n{auth}Connection: close\r\n\r\n");
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    let _ = tls.read_to_end(&mut response).await;
    String::from_utf8_lossy(&response).into_owned()
}

#[tokio::test]
async fn metrics_over_tls_with_basic_auth() {
    let p = pki();
    let text = format!(
        "{}\n[metrics]\nlisten = \"127.0.0.1:0\"\ntls_cert_file = {:?}\ntls_key_file = {:?}\n\
         basic_auth_user = \"prometheus\"\nbasic_auth_password = \"scrape-secret\"\n",
        base_config_toml(pg()),
        p.path("server.crt"),
        p.path("server.key")
    );
    let proxy = start_proxy(Config::from_toml(&text).expect("valid")).await;
    let addr = proxy.metrics_addr().expect("metrics listen");

    let right = patroni::basic_authorization("prometheus", "scrape-secret");
    let response = metrics_request(addr, Some(&right)).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(
        response.contains("tidepool_errors_total") || response.contains("tidepool_"),
        "{response}"
    );

    let wrong = patroni::basic_authorization("prometheus", "guess");
    for attempt in [Some(wrong.as_str()), None] {
        let response = metrics_request(addr, attempt).await;
        assert!(response.starts_with("HTTP/1.1 401"), "{response}");
        assert!(
            response.to_ascii_lowercase().contains("www-authenticate: basic"),
            "{response}"
        );
        assert!(!response.contains("tidepool_"), "no metrics without the password");
    }

    // Plain HTTP to the TLS port gets no HTTP answer.
    let mut plain = tokio::net::TcpStream::connect(addr).await.unwrap();
    plain
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(TIMEOUT, plain.read_to_end(&mut answer)).await;
    assert!(!String::from_utf8_lossy(&answer).contains("HTTP/1.1 200"));
    proxy.shutdown_within(Duration::from_secs(5)).await;
}
