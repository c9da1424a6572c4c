//! A real consumer of the admin console: Debian 12's `prometheus-pgbouncer-exporter` (1.7,
//! written for PgBouncer 1.7) scrapes tidepool's SHOW STATS, POOLS, DATABASES and LISTS, and its
//! stats, pools and databases series come out with values. It reads two columns PgBouncer 1.25
//! no longer has (`total_requests`, `reserve_pool`): against PgBouncer 1.25 itself, or tidepool
//! without `proxy.show_legacy_columns`, it cannot start; that is checked too.

mod common;

use common::console::{admin_config_toml, app_client, ADMIN};
use common::pgbouncer::{free_port, Home, PgBouncer};
use common::process::runtime;
use common::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tidepool::config::Config;

const EXPORTER: &str = "/usr/bin/prometheus-pgbouncer-exporter";

/// Starts the exporter against the console at `console` as `user`; returns it and its port.
fn start_exporter(console: SocketAddr, (user, password): (&str, &str)) -> (Child, u16) {
    assert!(
        std::path::Path::new(EXPORTER).exists(),
        "{EXPORTER} missing: apt-get install prometheus-pgbouncer-exporter (scripts/setup.sh does)"
    );
    let port = free_port();
    let child = Command::new(EXPORTER)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--pgbouncer-host", &console.ip().to_string()])
        .args(["--pgbouncer-port", &console.port().to_string()])
        .args(["--pgbouncer-user", user])
        // libpq (psycopg2) reads the password from the environment.
        .env("PGPASSWORD", password)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the exporter");
    (child, port)
}

/// GET /metrics once the exporter answers (bounded); panics with its stderr if it exits.
fn scrape(exporter: &mut Child, port: u16) -> String {
    for _ in 0..1500 {
        if let Some(status) = exporter.try_wait().unwrap() {
            panic!("the exporter exited ({status}): {}", stderr_of(exporter));
        }
        if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) {
            stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            stream
                .write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
                .unwrap();
            let mut response = String::new();
            stream.read_to_string(&mut response).unwrap();
            assert!(response.starts_with("HTTP/1.0 200"), "{response}");
            return response;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("the exporter never listened on {port}");
}

fn stderr_of(child: &mut Child) -> String {
    let mut text = String::new();
    if let Some(mut err) = child.stderr.take() {
        let _ = err.read_to_string(&mut text);
    }
    text
}

/// The value of the series `name{labels}` in a Prometheus text page.
fn series(page: &str, name_and_labels: &str) -> f64 {
    page.lines()
        .find_map(|line| line.strip_prefix(name_and_labels)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no series {name_and_labels} in:\n{page}"))
}

/// Waits (bounded) for the exporter to exit on its own; returns its stderr.
fn failed_start(mut exporter: Child) -> String {
    for _ in 0..1500 {
        if let Some(status) = exporter.try_wait().unwrap() {
            assert!(!status.success(), "the exporter exited 0");
            return stderr_of(&mut exporter);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = exporter.kill();
    panic!("the exporter kept running: {}", stderr_of(&mut exporter));
}

#[test]
fn the_debian_exporter_gets_stats_pools_and_databases_series_with_values() {
    let rt = runtime();
    let toml = admin_config_toml().replace(
        "pool_mode = \"transaction\"\n",
        "pool_mode = \"transaction\"\nshow_legacy_columns = true\n",
    );
    let proxy = rt.block_on(start_proxy(Config::from_toml(&toml).unwrap()));
    let addr = proxy.local_addr();
    // Traffic, and one client that stays connected for the pools series.
    let app = rt.block_on(async {
        let app = app_client(addr, "exported").await;
        for _ in 0..5 {
            app.simple_query("SELECT 1").await.unwrap();
        }
        app
    });

    let (mut exporter, port) = start_exporter(addr, ADMIN);
    let page = scrape(&mut exporter, port);
    let _ = exporter.kill();
    let _ = exporter.wait();

    let db = format!("{{database=\"{APP_DB}\"}}");
    assert!(
        series(&page, &format!("pgbouncer_requests_total{db}")) >= 5.0,
        "{page}"
    );
    assert!(series(&page, &format!("pgbouncer_received_bytes_total{db}")) > 0.0);
    assert!(series(&page, &format!("pgbouncer_sent_bytes_total{db}")) > 0.0);
    assert!(series(&page, &format!("pgbouncer_query_microseconds_total{db}")) > 0.0);
    let pool = format!("{{database=\"{APP_DB}\",user=\"{APP_USER}\"}}");
    assert_eq!(series(&page, &format!("pgbouncer_active_clients{pool}")), 1.0);
    assert_eq!(series(&page, &format!("pgbouncer_waiting_clients{pool}")), 0.0);
    // The harness sets default_pool_size = 10; no reserve pool.
    assert_eq!(series(&page, &format!("pgbouncer_pool_size{db}")), 10.0);
    assert_eq!(series(&page, &format!("pgbouncer_reserve_pool{db}")), 0.0);
    assert!(series(&page, "pgbouncer_used_clients ") >= 1.0);
    assert_eq!(series(&page, "pgbouncer_databases "), 1.0);
    drop(app);
}

#[test]
fn without_legacy_columns_it_fails_as_it_does_against_pgbouncer_1_25() {
    let rt = runtime();
    let proxy = rt.block_on(start_proxy(common::console::admin_config()));
    let stderr = failed_start(start_exporter(proxy.local_addr(), ADMIN).0);
    assert!(stderr.contains("KeyError: 'total_requests'"), "{stderr}");

    // The same exporter against the real PgBouncer 1.25.
    let home = Home::new();
    let port = free_port();
    home.write("userlist.txt", &format!("\"{APP_USER}\" \"{APP_PASSWORD}\"\n"));
    let ini = format!(
        "[databases]\n{APP_DB} = host=127.0.0.1 port={pg_port}\n\n[pgbouncer]\n{settings}\
         auth_type = scram-sha-256\nauth_file = {home}/userlist.txt\nadmin_users = {APP_USER}\n",
        pg_port = pg().port,
        settings = home.settings(port),
        home = home.path().display(),
    );
    let ini = home.write("pgbouncer.ini", &ini);
    let bouncer = PgBouncer::start(&home, &ini, port);
    let stderr = failed_start(start_exporter(bouncer.addr, (APP_USER, APP_PASSWORD)).0);
    assert!(stderr.contains("KeyError: 'total_requests'"), "{stderr}");
}
