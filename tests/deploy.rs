//! What deployments rely on, on the real binary: systemd's `Type=notify` protocol (READY once
//! listening, RELOADING around a SIGHUP, STOPPING at the stop) and `tidepool health`, the
//! Docker HEALTHCHECK probe (`/readyz` when metrics listen, else the client port); and the
//! files in `deploy/` and the Dockerfile stay true to them.

mod common;

use common::pgbouncer::free_port;
use common::process::Tidepool;
use common::*;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

/// The harness config with JSON logs and `extra` keys after `[proxy]`'s first line.
fn config_file(dir: &Path, name: &str, extra: &str, metrics: Option<u16>) -> PathBuf {
    let mut text = base_config_toml(pg()).replace(
        "listen = \"127.0.0.1:0\"\n",
        &format!("listen = \"127.0.0.1:0\"\nlog_format = \"json\"\n{extra}\n"),
    );
    if let Some(port) = metrics {
        text.push_str(&format!("\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n"));
    }
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// The next notification tidepool sent to the socket.
fn next_notification(socket: &UnixDatagram) -> String {
    let mut buf = [0u8; 4096];
    let n = socket.recv(&mut buf).expect("a notification before the timeout");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn systemd_hears_ready_reloading_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let config = config_file(dir.path(), "pool.toml", "", None);
    let mut tidepool = Tidepool::start_with_env(&config, &[("NOTIFY_SOCKET", socket_path.to_str().unwrap())]);

    let ready = next_notification(&socket);
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready:?}");
    // Ready means listening: a client gets in at once.
    let addr = tidepool.addr();
    let (mut client, _) = common::wire::RawClient::login(addr, APP_USER, APP_PASSWORD, APP_DB);
    assert_eq!(client.value("SELECT 1"), "1");

    tidepool.signal("HUP");
    let reloading = next_notification(&socket);
    assert!(reloading.lines().any(|l| l == "RELOADING=1"), "{reloading:?}");
    assert!(reloading.contains("MONOTONIC_USEC="), "{reloading:?}");
    let ready = next_notification(&socket);
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready:?}");

    drop(client);
    tidepool.signal("INT");
    let stopping = next_notification(&socket);
    assert!(stopping.lines().any(|l| l == "STOPPING=1"), "{stopping:?}");
    assert!(tidepool.wait_exit().success());
}

fn health(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tidepool"))
        .arg("health")
        .args(args)
        .output()
        .expect("run tidepool health")
}

#[test]
fn health_probes_readyz_and_turns_unhealthy_when_draining() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = free_port();
    let config = config_file(dir.path(), "pool.toml", "", Some(metrics));
    let tidepool = Tidepool::start(&config);
    tidepool.addr();
    let config_arg = config.to_str().unwrap();

    // Ready once a primary is known: poll (bounded), as a HEALTHCHECK's retries would.
    let mut out = health(&["--config", config_arg]);
    for _ in 0..500 {
        if out.status.success() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
        out = health(&["--config", config_arg]);
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("/readyz"), "{stdout}");
    let url = format!("http://127.0.0.1:{metrics}/healthz");
    assert!(health(&["--url", &url]).status.success());

    // Draining (SIGTERM, with a client that keeps it draining): alive, no longer ready.
    let (_client, _) = common::wire::RawClient::login(tidepool.addr(), APP_USER, APP_PASSWORD, APP_DB);
    tidepool.signal("TERM");
    tidepool.wait_for_line("listener closed");
    let out = health(&["--config", config_arg]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("503"), "{out:?}");
    assert!(health(&["--url", &url]).status.success(), "/healthz stays 200");
}

#[test]
fn health_without_metrics_speaks_to_the_client_port() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let fixed = format!("listen = \"127.0.0.1:{port}\"");
    let text = std::fs::read_to_string(config_file(dir.path(), "a.toml", "", None))
        .unwrap()
        .replace("listen = \"127.0.0.1:0\"", &fixed);
    let config = dir.path().join("pool.toml");
    std::fs::write(&config, text).unwrap();
    let config_arg = config.to_str().unwrap();

    // Nothing listens yet.
    let out = health(&["--config", config_arg]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let tidepool = Tidepool::start(&config);
    tidepool.addr();
    let out = health(&["--config", config_arg]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("answers the PostgreSQL protocol"), "{stdout}");
    // A bad invocation is a usage error, not "unhealthy".
    assert_eq!(health(&[]).status.code(), Some(2));
}

fn repo_file(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

/// The `pool.toml: |` block of a manifest's Secret, unindented.
fn embedded_pool_toml(manifest: &str) -> String {
    let start = manifest.find("pool.toml: |\n").expect("a pool.toml key") + "pool.toml: |\n".len();
    manifest[start..]
        .lines()
        .take_while(|l| l.is_empty() || l.starts_with("    "))
        .map(|l| l.strip_prefix("    ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn deploy_files_probe_readyz_and_healthz_and_carry_valid_configs() {
    for name in [
        "deploy/kubernetes/standalone.yaml",
        "deploy/kubernetes/sidecar.yaml",
    ] {
        let manifest = repo_file(name);
        assert!(
            manifest.contains("httpGet: { path: /readyz, port: metrics }"),
            "{name}"
        );
        assert!(
            manifest.contains("httpGet: { path: /healthz, port: metrics }"),
            "{name}"
        );
        assert!(!manifest.contains("tcpSocket"), "{name}");
        let config = tidepool::config::Config::from_toml(&embedded_pool_toml(&manifest))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let metrics = config.metrics.listen.expect("the probes need [metrics] listen");
        assert!(
            metrics.ip().is_unspecified(),
            "{name}: the kubelet probes the pod IP"
        );
        // The drain ends before the kubelet's SIGKILL.
        let grace = manifest
            .lines()
            .find_map(|l| l.trim().strip_prefix("terminationGracePeriodSeconds: "))
            .and_then(|v| v.parse::<u64>().ok())
            .expect("terminationGracePeriodSeconds");
        let stop = config.proxy.sigterm_timeout.0 + config.proxy.shutdown_timeout.0;
        assert!(
            !config.proxy.sigterm_timeout.0.is_zero(),
            "{name}: SIGTERM needs a deadline"
        );
        assert!(stop.as_secs() < grace, "{name}: {stop:?} >= {grace}s");
    }

    let unit = repo_file("deploy/tidepool.service");
    assert!(unit.lines().any(|l| l == "Type=notify"));
    let nofile: usize = unit
        .lines()
        .find_map(|l| l.strip_prefix("LimitNOFILE="))
        .and_then(|v| v.parse().ok())
        .expect("LimitNOFILE");
    let defaults = tidepool::config::ProxyConfig::default();
    assert!(
        nofile > 2 * defaults.max_client_conn,
        "room for each client and a server each"
    );

    let dockerfile = repo_file("Dockerfile");
    assert!(dockerfile.contains("HEALTHCHECK"));
    assert!(dockerfile.contains(r#"/usr/local/bin/tidepool", "health""#));
}
