//! `tidepool import-pgbouncer` on a realistic pgbouncer.ini: the real PgBouncer 1.25 runs on
//! the ini, tidepool on the pool.toml it was turned into, and the same queries work through
//! both (databases with another server-side name included); the keys that could not be
//! mapped are listed with their reason.

mod common;

use common::pgbouncer::{free_port, Home, PgBouncer};
use common::process::Tidepool;
use common::wire::RawClient;
use common::*;
use std::net::SocketAddr;
use std::process::Command;

fn ini(home: &Home, port: u16) -> String {
    format!(
        "; production-like pgbouncer.ini\n\
         [databases]\n\
         {APP_DB} = host=127.0.0.1 port={pg_port} dbname={APP_DB}\n\
         app_alias = host=127.0.0.1 port={pg_port} dbname={APP_DB} pool_size=2\n\n\
         [users]\n\
         {APP_USER} = pool_size=3\n\n\
         [pgbouncer]\n\
         {settings}\
         auth_type = scram-sha-256\n\
         auth_file = {home}/userlist.txt\n\
         admin_users = {APP_USER}\n\
         pool_mode = transaction\n\
         max_client_conn = 100\n\
         default_pool_size = 5\n\
         server_reset_query = DISCARD ALL\n\
         server_idle_timeout = 600\n\
         query_wait_timeout = 30\n\
         client_login_timeout = 15.5\n\
         client_tls_sslmode = disable\n\
         server_tls_sslmode = prefer\n\
         ignore_startup_parameters = extra_float_digits\n\
         tcp_keepalive = 1\n\
         log_pooler_errors = 1\n",
        pg_port = pg().port,
        settings = home.settings(port),
        home = home.path().display(),
    )
}

/// The database a login to `db` really lands on, asked through a pooler.
fn current_database(addr: SocketAddr, db: &str) -> String {
    let (mut client, _) = RawClient::login(addr, APP_USER, APP_PASSWORD, db);
    client.value("SELECT current_database()")
}

#[test]
fn an_imported_pgbouncer_ini_serves_the_same_databases_through_both_poolers() {
    let home = Home::new();
    let port = free_port();
    home.write("userlist.txt", &format!("\"{APP_USER}\" \"{APP_PASSWORD}\"\n"));
    let ini_path = home.write("pgbouncer.ini", &ini(&home, port));
    let toml_path = home.path().join("pool.toml");

    let out = Command::new(env!("CARGO_BIN_EXE_tidepool"))
        .arg("import-pgbouncer")
        .arg(&ini_path)
        .arg("--output")
        .arg(&toml_path)
        .output()
        .expect("run tidepool import-pgbouncer");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    for key in [
        "pgbouncer.logfile",
        "pgbouncer.pidfile",
        "pgbouncer.unix_socket_dir",
        "pgbouncer.tcp_keepalive",
        "pgbouncer.ignore_startup_parameters",
        "pgbouncer.log_pooler_errors",
    ] {
        assert!(
            stderr.contains(&format!("not mapped: {key} (line ")),
            "{key}: {stderr}"
        );
    }
    // What maps is not listed.
    for key in [
        "pgbouncer.auth_file",
        "pgbouncer.default_pool_size",
        "databases.app_alias",
    ] {
        assert!(
            !stderr.contains(&format!("not mapped: {key} ")),
            "{key}: {stderr}"
        );
    }
    let toml = std::fs::read_to_string(&toml_path).unwrap();
    let config = tidepool::config::Config::from_toml(&toml).expect("the written file loads");
    assert_eq!(config.pool.default_pool_size, 5);
    assert_eq!(config.proxy.client_login_timeout.0.as_millis(), 15_500);
    assert_eq!(config.user(APP_USER).and_then(|u| u.pool_size), Some(3));
    assert_eq!(config.databases["app_alias"].pool_size, Some(2));

    // Both poolers on it. Same port in both files: tidepool gets a free one (and JSON logs,
    // to find it), PgBouncer keeps the ini's.
    let listen = format!("listen = \"127.0.0.1:{port}\"");
    assert!(toml.contains(&listen), "{toml}");
    let toml = toml.replace(&listen, "listen = \"127.0.0.1:0\"\nlog_format = \"json\"");
    let run_path = home.write("run.toml", &toml);
    let bouncer = PgBouncer::start(&home, &ini_path, port);
    let tidepool = Tidepool::start(&run_path);
    for addr in [bouncer.addr, tidepool.addr()] {
        assert_eq!(current_database(addr, APP_DB), APP_DB, "through {addr}");
        assert_eq!(current_database(addr, "app_alias"), APP_DB, "through {addr}");
        // The console user carried over too.
        let (mut console, _) = RawClient::login(addr, APP_USER, APP_PASSWORD, "pgbouncer");
        assert_eq!(console.value("SHOW LISTS"), "databases", "through {addr}");
    }
}
