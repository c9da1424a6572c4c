//! TLS on both sides: psql with sslmode/sslrootcert/sslcert/channel_binding against tidepool,
//! PostgreSQL 17's direct TLS (a rustls client with ALPN), buffer stuffing after SSLRequest,
//! and tidepool connecting to a PostgreSQL that only accepts `hostssl`. Certificates come from a
//! CA generated per test binary with rcgen.

mod common;

use common::{base_config_toml, pg, pg_tool_cmd, wire, APP_DB, APP_PASSWORD, APP_USER};
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tidepool::cluster::{LocalCluster, NodeOptions, PgBinaries};
use tidepool::config::Config;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Certificates in a temp dir: a CA, a server certificate for 127.0.0.1 / localhost, and client
/// certificates with CN `app` and CN `intruder`.
struct Pki {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    server_der: Vec<u8>,
}

impl Pki {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

fn write_private(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    // libpq refuses client keys readable by others.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "tidepool test CA");
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        std::fs::write(dir.join("ca.crt"), ca_cert.pem()).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);

        let leaf = |sans: Vec<String>, cn: &str, name: &str| {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(sans).unwrap();
            params.distinguished_name.push(DnType::CommonName, cn);
            let cert = params.signed_by(&key, &issuer).unwrap();
            std::fs::write(dir.join(format!("{name}.crt")), cert.pem()).unwrap();
            write_private(&dir.join(format!("{name}.key")), &key.serialize_pem());
            cert.der().to_vec()
        };
        let server_der = leaf(
            vec!["127.0.0.1".into(), "localhost".into()],
            "localhost",
            "server",
        );
        leaf(Vec::new(), APP_USER, "client-app");
        leaf(Vec::new(), "intruder", "client-intruder");
        Pki {
            _dir: tmp,
            dir,
            server_der,
        }
    })
}

/// The base config (backend: the shared test PostgreSQL) with a `[tls]` section.
fn config_with_tls(tls: &str) -> Config {
    let text = format!("{}\n[tls]\n{tls}\n", base_config_toml(pg()));
    Config::from_toml(&text).unwrap_or_else(|e| panic!("config: {e}"))
}

fn client_tls(mode: &str) -> String {
    let p = pki();
    format!(
        "client_tls_mode = \"{mode}\"\nclient_tls_cert_file = {:?}\nclient_tls_key_file = {:?}\n\
         client_tls_ca_file = {:?}\n",
        p.path("server.crt"),
        p.path("server.key"),
        p.path("ca.crt")
    )
}

/// psql at `addr` as `app` with libpq TLS settings; returns its output.
fn psql(addr: SocketAddr, env: &[(&str, &str)], sql: &str) -> Output {
    let mut command = pg_tool_cmd("psql", addr, APP_USER, APP_PASSWORD, APP_DB);
    command.args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql]);
    // No stray ~/.postgresql certificates: only what the test names.
    let none = pki().path("none");
    command.env("PGSSLCERT", &none).env("PGSSLKEY", &none);
    command.env("PGSSLROOTCERT", pki().path("ca.crt"));
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().expect("psql runs")
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn assert_ok(out: &Output) -> String {
    assert!(out.status.success(), "psql failed: {}", text(out));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn assert_fails_with(out: &Output, needle: &str) {
    let all = text(out);
    assert!(!out.status.success(), "psql should have failed: {all}");
    assert!(all.contains(needle), "expected {needle:?} in: {all}");
}

fn blocking<T>(work: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(work)
}

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

// ---- TLS toward PostgreSQL ----

const TLS_ONLY_USER: &str = "tlsonly";
const TLS_ONLY_PASSWORD: &str = "tlsonly-secret";

/// A PostgreSQL with ssl=on whose pg_hba.conf accepts `tlsonly` over `hostssl` only.
fn tls_cluster() -> &'static LocalCluster {
    static CLUSTER: OnceLock<LocalCluster> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        let bins = PgBinaries::locate().unwrap();
        let cluster = LocalCluster::start(&bins, NodeOptions::default()).unwrap();
        cluster.create_role(TLS_ONLY_USER, TLS_ONLY_PASSWORD).unwrap();
        let node = &cluster.primary;
        let p = pki();
        node.install_private_file("server.crt", &std::fs::read(p.path("server.crt")).unwrap())
            .unwrap();
        node.install_private_file("server.key", &std::fs::read(p.path("server.key")).unwrap())
            .unwrap();
        node.psql(
            "postgres",
            "ALTER SYSTEM SET ssl_cert_file = 'server.crt';\n\
             ALTER SYSTEM SET ssl_key_file = 'server.key';\n\
             ALTER SYSTEM SET ssl = on;",
        )
        .unwrap();
        node.set_hba_rules(&["hostssl all all 127.0.0.1/32 scram-sha-256".to_string()])
            .unwrap();
        assert_eq!(node.psql("postgres", "SHOW ssl").unwrap(), "on");
        cluster
    })
}

fn backend_tls_config(tls: &str) -> Config {
    let node = &tls_cluster().primary;
    let text = format!(
        r#"[proxy]
listen = "127.0.0.1:0"

[pool]
server_connect_timeout = "5s"

[[nodes]]
host = "127.0.0.1"
port = {port}

[databases.postgres]

[[users]]
name = "{TLS_ONLY_USER}"
password = "{TLS_ONLY_PASSWORD}"

[tls]
{tls}
"#,
        port = node.port
    );
    Config::from_toml(&text).unwrap_or_else(|e| panic!("config: {e}"))
}

fn backend_psql(addr: SocketAddr, sql: &str) -> Output {
    let mut command = pg_tool_cmd("psql", addr, TLS_ONLY_USER, TLS_ONLY_PASSWORD, "postgres");
    command.args(["-X", "-q", "-A", "-t", "-c", sql]);
    command.output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_tls_modes_against_a_hostssl_only_server() {
    blocking(tls_cluster);
    let ca = pki().path("ca.crt");
    let ssl_in_use = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()";
    for (tls, works) in [
        (
            format!("server_tls_mode = \"verify-full\"\nserver_tls_ca_file = {ca:?}"),
            true,
        ),
        ("server_tls_mode = \"require\"".to_string(), true),
        ("server_tls_mode = \"prefer\"".to_string(), true),
        // The certificate does not name this host: verify-full fails, verify-ca passes.
        (
            format!(
                "server_tls_mode = \"verify-full\"\nserver_tls_ca_file = {ca:?}\n\
                 server_tls_server_name = \"db.example.com\""
            ),
            false,
        ),
        (
            format!(
                "server_tls_mode = \"verify-ca\"\nserver_tls_ca_file = {ca:?}\n\
                 server_tls_server_name = \"db.example.com\""
            ),
            true,
        ),
        // Plain TCP meets the hostssl-only rules.
        ("server_tls_mode = \"disable\"".to_string(), false),
    ] {
        let proxy = common::start_proxy(backend_tls_config(&tls)).await;
        let addr = proxy.local_addr();
        let out = blocking(|| backend_psql(addr, ssl_in_use));
        if works {
            assert_eq!(assert_ok(&out), "t", "with {tls}");
        } else {
            assert!(!out.status.success(), "with {tls}: {}", text(&out));
            let expected = if tls.contains("disable") {
                "no encryption"
            } else {
                "certificate"
            };
            assert!(text(&out).contains(expected), "with {tls}: {}", text(&out));
        }
        proxy.shutdown_within(Duration::from_secs(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_tls_with_a_wrong_ca_is_refused() {
    blocking(tls_cluster);
    // A CA that did not sign the server's certificate: its own self-signed one.
    let other_ca = pki().path("client-intruder.crt");
    let proxy = common::start_proxy(backend_tls_config(&format!(
        "server_tls_mode = \"verify-ca\"\nserver_tls_ca_file = {other_ca:?}"
    )))
    .await;
    let out = blocking(|| backend_psql(proxy.local_addr(), "SELECT 1"));
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("TLS handshake with server"), "{}", text(&out));
    proxy.shutdown_within(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_data_both_ways_over_tls_on_both_sides() {
    blocking(tls_cluster);
    let ca = pki().path("ca.crt");
    let config = backend_tls_config(&format!(
        "server_tls_mode = \"verify-full\"\nserver_tls_ca_file = {ca:?}\n{}",
        client_tls("require")
    ));
    let proxy = common::start_proxy(config).await;
    let addr = proxy.local_addr();
    // Megabytes each way, so both TLS streams fill their sockets and rustls buffers.
    let rows = 50_000;
    let mut script = String::from("CREATE TEMP TABLE t (a int, b text);\nCOPY t FROM STDIN;\n");
    for i in 0..rows {
        script.push_str(&format!("{i}\t{}\n", "y".repeat(100)));
    }
    script.push_str("\\.\nSELECT count(*) || ' ' || sum(length(b)) FROM t;\n");
    script.push_str("COPY (SELECT g, repeat('z', 100) FROM generate_series(1, 50000) g) TO STDOUT;\n");
    let out = blocking(|| {
        let mut command = pg_tool_cmd("psql", addr, TLS_ONLY_USER, TLS_ONLY_PASSWORD, "postgres");
        command
            .env("PGSSLMODE", "verify-full")
            .env("PGSSLROOTCERT", &ca)
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-f", "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = command.spawn().unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let feeder = std::thread::spawn(move || stdin.write_all(script.as_bytes()));
        let out = child.wait_with_output().unwrap();
        feeder.join().unwrap().unwrap();
        out
    });
    let stdout = assert_ok(&out);
    let mut lines = stdout.lines();
    assert_eq!(lines.next(), Some(format!("{rows} {}", rows * 100).as_str()));
    let copied: Vec<&str> = lines.collect();
    assert_eq!(copied.len(), 50_000);
    assert_eq!(copied[49_999], format!("50000\t{}", "z".repeat(100)));
    proxy.shutdown_within(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_connect_with_backend_tls() {
    use tidepool::backend::{BackendLogin, BackendSecret};
    use tidepool::health::{Health, HealthConfig, HealthState};
    let node = &blocking(tls_cluster).primary;
    let ca = pki().path("ca.crt");
    let check = |tls: &str| {
        let config = backend_tls_config(tls);
        let backend_tls = tidepool::tls::BackendTls::build(&config.tls).unwrap();
        let login = BackendLogin {
            user: TLS_ONLY_USER.into(),
            database: "postgres".into(),
            secret: BackendSecret::Plain(TLS_ONLY_PASSWORD.into()),
            tls: backend_tls,
            keepalive: Default::default(),
        };
        let health_config = HealthConfig {
            health_check_interval: tidepool::config::ConfigDuration(Duration::from_millis(100)),
            ..HealthConfig::default()
        };
        // Two entries for one server: checking only runs with two or more nodes to compare.
        let addr: Arc<str> = Arc::from(node.addr().to_string());
        Health::spawn(
            vec![addr.clone(), addr],
            login,
            health_config,
            std::future::pending(),
        )
    };
    // Polls until every node satisfies `ok` (checks run every 100 ms).
    async fn wait_all(health: &Health, ok: impl Fn(HealthState) -> bool) -> bool {
        for _ in 0..100 {
            if health.view().nodes.iter().all(|n| ok(n.health)) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }
    let health = check(&format!(
        "server_tls_mode = \"verify-full\"\nserver_tls_ca_file = {ca:?}"
    ));
    assert!(
        wait_all(&health, |s| s == HealthState::Up).await,
        "{:#?}",
        health.view()
    );
    // Without TLS the hostssl-only server refuses the checker.
    let health = check("server_tls_mode = \"disable\"");
    assert!(
        wait_all(&health, |s| s == HealthState::Down).await,
        "{:#?}",
        health.view()
    );
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_without_ssl_prefer_falls_back_and_require_fails() {
    // The shared test PostgreSQL runs with ssl = off and answers SSLRequest with `N`.
    let proxy = common::start_proxy(config_with_tls("server_tls_mode = \"prefer\"")).await;
    let addr = proxy.local_addr();
    let out = blocking(|| {
        psql(
            addr,
            &[],
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
        )
    });
    assert_eq!(assert_ok(&out), "f");
    proxy.shutdown_within(Duration::from_secs(5)).await;

    let proxy = common::start_proxy(config_with_tls("server_tls_mode = \"require\"")).await;
    let addr = proxy.local_addr();
    let out = blocking(|| psql(addr, &[], "SELECT 1"));
    assert_fails_with(&out, "does not support SSL, but server_tls_mode is \"require\"");
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
