//! TLS toward PostgreSQL: tidepool connecting to a PostgreSQL that only accepts `hostssl`
//! under each `server_tls_mode`, a wrong CA, bulk data over TLS on both sides, health checks
//! over TLS, and a server without SSL. TLS toward clients is in `tls.rs`.

mod common;

use common::pg_tool_cmd;
use common::tls::{assert_fails_with, assert_ok, blocking, client_tls, config_with_tls, pki, psql, text};
use std::io::Write;
use std::net::SocketAddr;
use std::process::Output;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tidepool::cluster::{LocalCluster, NodeOptions, PgBinaries};
use tidepool::config::Config;

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
