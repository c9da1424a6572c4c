//! TLS toward clients: psql with sslmode/sslrootcert/sslcert/channel_binding against tidepool,
//! PostgreSQL 17's direct TLS (a rustls client with ALPN), buffer stuffing after SSLRequest,
//! SCRAM-SHA-256-PLUS, idle timeouts over TLS and certificates renewed by a reload. TLS toward
//! PostgreSQL is in `tls_backend.rs`. Certificates come from a CA generated per test binary with
//! rcgen (`common/tls.rs`).

mod common;

use common::tls::{
    assert_fails_with, assert_ok, blocking, client_tls, config_with_tls, pki, psql, text, write_private,
};
use common::{base_config_toml, pg, pg_tool_cmd, wire, APP_DB, APP_PASSWORD, APP_USER};
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tidepool::config::Config;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_verify_full_and_channel_binding_over_tls() {
    let proxy = common::start_proxy(config_with_tls(&client_tls("require"))).await;
    let addr = proxy.local_addr();
    blocking(|| {
        let out = psql(addr, &[("PGSSLMODE", "verify-full")], "SELECT 41 + 1");
        assert_eq!(assert_ok(&out), "42");
        // \conninfo shows the TLS session psql negotiated with tidepool.
        let out = psql(addr, &[("PGSSLMODE", "verify-full")], "\\conninfo");
        assert!(
            assert_ok(&out).contains("SSL connection (protocol: TLSv1.3"),
            "{}",
            text(&out)
        );

        // SCRAM-SHA-256-PLUS with tls-server-end-point: libpq refuses to log in without it.
        let out = psql(
            addr,
            &[("PGSSLMODE", "verify-full"), ("PGCHANNELBINDING", "require")],
            "SELECT 1",
        );
        assert_eq!(assert_ok(&out), "1");

        // A name the certificate does not carry fails verification in libpq.
        let mut command = pg_tool_cmd("psql", addr, APP_USER, APP_PASSWORD, APP_DB);
        command
            .env("PGHOST", "127.0.0.2")
            .env("PGHOSTADDR", "127.0.0.1")
            .env("PGSSLMODE", "verify-full")
            .env("PGSSLROOTCERT", pki().path("ca.crt"))
            .args(["-X", "-c", "SELECT 1"]);
        let out = command.output().unwrap();
        assert_fails_with(&out, "does not match host name");
    });
    proxy.shutdown_within(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_modes_refuse_cleanly() {
    // TLS off: libpq asking for it is told `N` and gives up.
    let plain = common::start_proxy(common::base_config(pg())).await;
    let addr = plain.local_addr();
    blocking(|| {
        let out = psql(addr, &[("PGSSLMODE", "require")], "SELECT 1");
        assert_fails_with(&out, "server does not support SSL");
        // Channel binding without TLS: SCRAM-SHA-256-PLUS is not offered, libpq refuses.
        let out = psql(
            addr,
            &[("PGSSLMODE", "disable"), ("PGCHANNELBINDING", "require")],
            "SELECT 1",
        );
        assert_fails_with(&out, "channel binding");
        // The same without the requirement works (the default, prefer, falls back to SCRAM).
        let out = psql(addr, &[("PGSSLMODE", "prefer")], "SELECT 1");
        assert_eq!(assert_ok(&out), "1");
    });
    plain.shutdown_within(Duration::from_secs(5)).await;

    // TLS required: a plain client gets PostgreSQL's hostssl refusal, 28000.
    let strict = common::start_proxy(config_with_tls(&client_tls("require"))).await;
    let addr = strict.local_addr();
    blocking(|| {
        let out = psql(addr, &[("PGSSLMODE", "disable")], "SELECT 1");
        assert_fails_with(&out, "no encryption");
        let mut raw = wire::RawClient::connect(addr);
        raw.send(&wire::startup_packet(&[("user", APP_USER), ("database", APP_DB)]));
        let error = raw.recv().expect("an error");
        assert_eq!(error.tag, b'E');
        assert_eq!(error.sqlstate().as_deref(), Some("28000"));
        assert!(raw.recv().is_none(), "connection closed after the FATAL");
        // prefer takes TLS when offered.
        let out = psql(addr, &[("PGSSLMODE", "prefer")], "SELECT 1");
        assert_eq!(assert_ok(&out), "1");
    });
    strict.shutdown_within(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_with_verify_full() {
    let proxy = common::start_proxy(config_with_tls(&client_tls("verify-full"))).await;
    let addr = proxy.local_addr();
    let p = pki();
    let (app_crt, app_key) = (p.path("client-app.crt"), p.path("client-app.key"));
    let (bad_crt, bad_key) = (p.path("client-intruder.crt"), p.path("client-intruder.key"));
    blocking(|| {
        let with_cert = |crt: &Path, key: &Path| {
            psql(
                addr,
                &[
                    ("PGSSLMODE", "verify-full"),
                    ("PGSSLCERT", crt.to_str().unwrap()),
                    ("PGSSLKEY", key.to_str().unwrap()),
                ],
                "SELECT current_user",
            )
        };
        assert_eq!(assert_ok(&with_cert(&app_crt, &app_key)), APP_USER);
        // Signed by the CA but issued to someone else.
        assert_fails_with(&with_cert(&bad_crt, &bad_key), "CN mismatch");
        // No certificate at all: the handshake itself fails.
        let out = psql(addr, &[("PGSSLMODE", "verify-full")], "SELECT 1");
        assert!(!out.status.success(), "{}", text(&out));
    });
    proxy.shutdown_within(Duration::from_secs(5)).await;
}

#[test]
fn unreadable_tls_files_are_a_config_error_naming_the_key() {
    let mut config = common::base_config(pg());
    config.tls.client_tls_mode = tidepool::tls::ClientTlsMode::Require;
    config.tls.client_tls_cert_file = Some(pki().path("missing.crt"));
    config.tls.client_tls_key_file = Some(pki().path("server.key"));
    let e = tidepool::tls::check(&config.tls).unwrap_err().to_string();
    assert!(e.starts_with("tls.client_tls_cert_file: cannot read "), "{e}");
    assert!(e.contains("missing.crt"), "{e}");
    let e = Config::from_toml(&format!(
        "{}\n[tls]\nclient_tls_mode = \"verify-ca\"\nclient_tls_cert_file = \"a\"\nclient_tls_key_file = \"b\"\n",
        base_config_toml(pg())
    ))
    .unwrap_err()
    .to_string();
    assert!(e.starts_with("tls.client_tls_ca_file: required"), "{e}");
}

// ---- raw clients ----

const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_stuffed_after_sslrequest_close_the_connection() {
    let proxy = common::start_proxy(config_with_tls(&client_tls("prefer"))).await;
    let addr = proxy.local_addr();
    blocking(|| {
        // Honest client first: one SSLRequest alone is answered `S`.
        let mut honest = wire::RawClient::connect(addr);
        honest.send(&SSL_REQUEST);
        assert_eq!(honest.recv_byte(), Some(b'S'));

        // SSLRequest and a StartupMessage in one write: nothing may be answered, not even `S`,
        // and the stuffed startup packet must not be processed.
        let mut stuffed = SSL_REQUEST.to_vec();
        stuffed.extend_from_slice(&wire::startup_packet(&[("user", APP_USER), ("database", APP_DB)]));
        let mut raw = std::net::TcpStream::connect(addr).unwrap();
        raw.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        raw.write_all(&stuffed).unwrap();
        let mut got = Vec::new();
        match raw.read_to_end(&mut got) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!("expected the connection closed, got {e}"),
        }
        assert!(got.is_empty(), "answered {got:?} to a stuffed SSLRequest");

        // GSSENCRequest is always declined.
        let mut gss = wire::RawClient::connect(addr);
        gss.send(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30]);
        assert_eq!(gss.recv_byte(), Some(b'N'));
    });
    proxy.shutdown_within(Duration::from_secs(5)).await;
}

/// A rustls client trusting the test CA, with the given ALPN protocols.
fn tls_connector(alpn: &[&[u8]]) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(
            std::fs::read(pki().path("ca.crt"))
                .map(|pem| {
                    use rustls::pki_types::pem::PemObject;
                    rustls::pki_types::CertificateDer::from_pem_slice(&pem)
                        .unwrap()
                        .to_vec()
                })
                .unwrap(),
        ))
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

async fn read_msg<S: AsyncRead + Unpin>(s: &mut S) -> Option<wire::Msg> {
    let mut header = [0u8; 5];
    s.read_exact(&mut header).await.ok()?;
    let len = u32::from_be_bytes(header[1..5].try_into().unwrap()) as usize;
    let mut body = vec![0u8; len - 4];
    s.read_exact(&mut body).await.ok()?;
    Some(wire::Msg { tag: header[0], body })
}

/// SCRAM over any stream, with the given channel binding; returns the message that ended it
/// (AuthenticationOk's follow-up ReadyForQuery, or an ErrorResponse).
/// `plus`: select SCRAM-SHA-256-PLUS; `offered`: whether the server must offer it.
async fn scram_login<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    binding: ChannelBinding,
    plus: bool,
    offered: bool,
) -> wire::Msg {
    s.write_all(&wire::startup_packet(&[("user", APP_USER), ("database", APP_DB)]))
        .await
        .unwrap();
    let mut scram = None;
    let mut binding = Some(binding);
    loop {
        let m = read_msg(s).await.expect("a message");
        if m.tag != b'R' {
            if m.tag == b'Z' || m.tag == b'E' {
                return m;
            }
            continue;
        }
        match i32::from_be_bytes(m.body[..4].try_into().unwrap()) {
            0 => {}
            10 => {
                let mechanisms = String::from_utf8_lossy(&m.body[4..]).to_string();
                assert_eq!(
                    mechanisms.contains("SCRAM-SHA-256-PLUS"),
                    offered,
                    "{mechanisms:?}"
                );
                let client = ScramSha256::new(APP_PASSWORD.as_bytes(), binding.take().unwrap());
                let mechanism: &[u8] = if plus {
                    b"SCRAM-SHA-256-PLUS\0"
                } else {
                    b"SCRAM-SHA-256\0"
                };
                let mut body = mechanism.to_vec();
                body.extend_from_slice(&(client.message().len() as i32).to_be_bytes());
                body.extend_from_slice(client.message());
                s.write_all(&wire::frame(b'p', &body)).await.unwrap();
                scram = Some(client);
            }
            11 => {
                let client = scram.as_mut().unwrap();
                client.update(&m.body[4..]).unwrap();
                s.write_all(&wire::frame(b'p', client.message())).await.unwrap();
            }
            12 => scram.as_mut().unwrap().finish(&m.body[4..]).unwrap(),
            other => panic!("unexpected authentication request {other}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_tls_with_alpn_and_scram_plus() {
    let proxy = common::start_proxy(config_with_tls(&client_tls("require"))).await;
    let addr = proxy.local_addr();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let end_point = Sha256::digest(&pki().server_der).to_vec();

    // PostgreSQL 17 style: TLS from the first byte, ALPN "postgresql", startup inside TLS,
    // SCRAM-SHA-256-PLUS bound to the server certificate.
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut tls = tls_connector(&[b"postgresql"])
        .connect(name.clone(), tcp)
        .await
        .unwrap();
    let ready = scram_login(
        &mut tls,
        ChannelBinding::tls_server_end_point(end_point.clone()),
        true,
        true,
    )
    .await;
    assert_eq!(ready.tag, b'Z', "{:?}", ready.message());
    tls.write_all(&wire::query("SELECT 6 * 7")).await.unwrap();
    let mut value = None;
    while let Some(m) = read_msg(&mut tls).await {
        value = value.or_else(|| m.first_value());
        if m.tag == b'Z' {
            break;
        }
    }
    assert_eq!(value.as_deref(), Some("42"));

    // A cbind that is not our certificate's hash (a man in the middle's) is refused.
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut tls = tls_connector(&[b"postgresql"])
        .connect(name.clone(), tcp)
        .await
        .unwrap();
    let error = scram_login(
        &mut tls,
        ChannelBinding::tls_server_end_point(vec![7; 32]),
        true,
        true,
    )
    .await;
    assert_eq!(error.tag, b'E');
    assert_eq!(error.sqlstate().as_deref(), Some("08P01"));
    assert_eq!(
        error.message().as_deref(),
        Some("SCRAM channel binding check failed")
    );

    // Direct TLS without ALPN: closed right after the handshake, before any startup.
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut tls = tls_connector(&[]).connect(name.clone(), tcp).await.unwrap();
    let _ = tls
        .write_all(&wire::startup_packet(&[("user", APP_USER), ("database", APP_DB)]))
        .await;
    assert!(
        read_msg(&mut tls).await.is_none(),
        "direct TLS without ALPN must be closed"
    );

    // Plain TCP: SCRAM-SHA-256-PLUS is not offered, and selecting it anyway is refused.
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(&SSL_REQUEST).await.unwrap();
    let mut answer = [0u8; 1];
    tcp.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"S");
    let mut tls = tls_connector(&[]).connect(name, tcp).await.unwrap();
    // Through SSLRequest, ALPN is optional; plain SCRAM still works (offered with -PLUS).
    tls.write_all(&wire::startup_packet(&[("user", APP_USER), ("database", APP_DB)]))
        .await
        .unwrap();
    let offer = read_msg(&mut tls).await.unwrap();
    assert!(String::from_utf8_lossy(&offer.body).contains("SCRAM-SHA-256-PLUS"));
    proxy.shutdown_within(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_plus_over_plain_tcp_is_refused() {
    let proxy = common::start_proxy(common::base_config(pg())).await;
    let mut tcp = tokio::net::TcpStream::connect(proxy.local_addr()).await.unwrap();
    let error = scram_login(
        &mut tcp,
        ChannelBinding::tls_server_end_point(vec![7; 32]),
        false,
        false,
    )
    .await;
    // We claim -PLUS was not offered (it was not) but send `p=`: a negotiation error.
    assert_eq!(error.tag, b'E');
    assert_eq!(
        error.sqlstate().as_deref(),
        Some("08P01"),
        "{:?}",
        error.message()
    );
    proxy.shutdown_within(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_tls_clients_get_their_fatal_before_close_notify() {
    let mut config = config_with_tls(&client_tls("require"));
    config.proxy.client_idle_timeout = tidepool::config::ConfigDuration(Duration::from_millis(300));
    let proxy = common::start_proxy(config).await;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tcp = tokio::net::TcpStream::connect(proxy.local_addr()).await.unwrap();
    let tls = tls_connector(&[b"postgresql"]).connect(name, tcp).await.unwrap();
    // `y` (client could bind but thinks we cannot) while -PLUS was offered: a downgrade.
    let mut downgraded = tls;
    let error = scram_login(&mut downgraded, ChannelBinding::unrequested(), false, true).await;
    assert_eq!(
        error.sqlstate().as_deref(),
        Some("08P01"),
        "{:?}",
        error.message()
    );

    let tcp = tokio::net::TcpStream::connect(proxy.local_addr()).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = tls_connector(&[b"postgresql"]).connect(name, tcp).await.unwrap();
    let ready = scram_login(&mut tls, ChannelBinding::unsupported(), false, true).await;
    assert_eq!(ready.tag, b'Z');
    // Two requests a moment apart: the wait between them reads through rustls.
    for _ in 0..2 {
        tls.write_all(&wire::query("SELECT 1")).await.unwrap();
        while let Some(m) = read_msg(&mut tls).await {
            if m.tag == b'Z' {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let fatal = read_msg(&mut tls).await.expect("the idle timeout's FATAL");
    assert_eq!(
        fatal.sqlstate().as_deref(),
        Some("57P05"),
        "{:?}",
        fatal.message()
    );
    // Then a clean TLS close (close_notify), not an error.
    let mut rest = Vec::new();
    assert_eq!(tls.read_to_end(&mut rest).await.unwrap(), 0);
    proxy.shutdown_within(Duration::from_secs(5)).await;
}

/// Certificates are part of the config snapshot: a reload that names a renewed certificate (here
/// from another CA) serves it to the next client, without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_serves_the_renewed_certificate() {
    let proxy = common::start_proxy(config_with_tls(&client_tls("require"))).await;
    let addr = proxy.local_addr();
    let old_ca = pki().path("ca.crt");
    blocking(|| {
        assert_eq!(
            assert_ok(&psql(addr, &[("PGSSLMODE", "verify-full")], "SELECT 1")),
            "1"
        )
    });

    // A second CA and a server certificate signed by it.
    let renewed = tempfile::tempdir().unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "tidepool renewed CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let new_ca = renewed.path().join("ca.crt");
    std::fs::write(&new_ca, ca_cert.pem()).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, "localhost");
    let cert = params.signed_by(&key, &issuer).unwrap();
    let (cert_file, key_file) = (
        renewed.path().join("server.crt"),
        renewed.path().join("server.key"),
    );
    std::fs::write(&cert_file, cert.pem()).unwrap();
    write_private(&key_file, &key.serialize_pem());

    let mut config = proxy.shared().snapshot().config.clone();
    config.tls = config_with_tls(&format!(
        "client_tls_mode = \"require\"\nclient_tls_cert_file = {cert_file:?}\nclient_tls_key_file = {key_file:?}\n"
    ))
    .tls;
    tidepool::reload::apply(proxy.shared(), config)
        .await
        .expect("reload applies");

    blocking(|| {
        let new_ca = new_ca.to_str().unwrap();
        let out = psql(
            addr,
            &[("PGSSLMODE", "verify-full"), ("PGSSLROOTCERT", new_ca)],
            "SELECT 2",
        );
        assert_eq!(assert_ok(&out), "2");
        let old_ca = old_ca.to_str().unwrap();
        let out = psql(
            addr,
            &[("PGSSLMODE", "verify-full"), ("PGSSLROOTCERT", old_ca)],
            "SELECT 3",
        );
        assert_fails_with(&out, "certificate verify failed");
    });
    proxy.shutdown_within(Duration::from_secs(5)).await;
}
