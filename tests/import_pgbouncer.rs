//! `tidepool import-pgbouncer` on a realistic pgbouncer.ini: the real PgBouncer 1.25 runs on
//! the ini, tidepool on the pool.toml it was turned into, and the same queries work through
//! both: databases on two PostgreSQL servers (one becomes a `[clusters.NAME]`), another
//! server-side name, a forced server login, the `*` database, two listen addresses and the
//! Unix socket; the keys that could not be mapped are listed with their reason.

mod common;

use common::pgbouncer::{free_port, Home, PgBouncer};
use common::process::Tidepool;
use common::wire::RawClient;
use common::*;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;
use tidepool::cluster::{LocalCluster, NodeOptions, PgBinaries};

/// The database that lives only on the second server.
const REPORTS_DB: &str = "reports";
/// The login a `[databases]` entry forces on the second server.
const REPORTER: (&str, &str) = ("reporter", "reporter-secret");

static SECOND: OnceLock<LocalCluster> = OnceLock::new();

/// A second throwaway PostgreSQL: roles `app` and `reporter`, database `reports`.
fn second() -> &'static LocalCluster {
    SECOND.get_or_init(|| {
        let bins = PgBinaries::locate().expect("PostgreSQL binaries");
        let cluster = LocalCluster::start(&bins, NodeOptions::default()).expect("second cluster starts");
        cluster.create_role(APP_USER, APP_PASSWORD).expect("role app");
        cluster
            .create_role(REPORTER.0, REPORTER.1)
            .expect("role reporter");
        cluster
            .create_database(REPORTS_DB, APP_USER)
            .expect("database reports");
        cluster
    })
}

fn ini(home: &Home, port: u16) -> String {
    // Both loopback addresses, and the Unix socket in the home directory.
    let settings = home
        .settings(port)
        .replace("listen_addr = 127.0.0.1\n", "listen_addr = 127.0.0.1, ::1\n")
        .replace(
            "unix_socket_dir =\n",
            &format!("unix_socket_dir = {}\n", home.path().display()),
        );
    format!(
        "; production-like pgbouncer.ini\n\
         [databases]\n\
         {APP_DB} = host=127.0.0.1 port={pg_port} dbname={APP_DB}\n\
         app_alias = host=127.0.0.1 port={pg_port} dbname={APP_DB} pool_size=2\n\
         {REPORTS_DB} = host=127.0.0.1 port={second_port} max_db_connections=4\n\
         reports_ro = host=127.0.0.1 port={second_port} dbname={REPORTS_DB} user={reporter} password={reporter_pw}\n\
         * = host=127.0.0.1 port={second_port}\n\n\
         [users]\n\
         {APP_USER} = pool_size=3 max_user_connections=30\n\n\
         [pgbouncer]\n\
         {settings}\
         unix_socket_mode = 0770\n\
         auth_type = scram-sha-256\n\
         auth_file = {home}/userlist.txt\n\
         admin_users = {APP_USER}\n\
         pool_mode = transaction\n\
         max_client_conn = 100\n\
         default_pool_size = 5\n\
         max_db_connections = 20\n\
         server_reset_query = DISCARD ALL\n\
         server_idle_timeout = 600\n\
         query_wait_timeout = 30\n\
         query_timeout = 60\n\
         transaction_timeout = 300\n\
         server_login_retry = 5\n\
         client_login_timeout = 15.5\n\
         client_tls_sslmode = disable\n\
         server_tls_sslmode = prefer\n\
         ignore_startup_parameters = extra_float_digits\n\
         tcp_keepalive = 1\n\
         tcp_keepidle = 30\n\
         tcp_keepintvl = 10\n\
         tcp_keepcnt = 3\n\
         tcp_user_timeout = 20000\n\
         log_pooler_errors = 1\n",
        pg_port = pg().port,
        second_port = second().primary.port,
        reporter = REPORTER.0,
        reporter_pw = REPORTER.1,
        home = home.path().display(),
    )
}

/// `SELECT sql` as `user` on database `db`, through a pooler.
fn value(addr: SocketAddr, user: (&str, &str), db: &str, sql: &str) -> String {
    let (mut client, _) = RawClient::login(addr, user.0, user.1, db);
    client.value(sql)
}

/// The same through a Unix socket in `dir` (psql, as an application given a socket directory).
fn value_over_socket(dir: &Path, port: u16, db: &str, sql: &str) -> String {
    let out = psql_cmd(SocketAddr::from(([127, 0, 0, 1], port)), APP_USER, db)
        .env("PGHOST", dir)
        .args(["-c", sql])
        .output()
        .expect("run psql");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "psql on {}:{port}: {stderr}", dir.display());
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Runs the import; returns its stderr (the keys not mapped).
fn import(ini_path: &Path, toml_path: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_tidepool"))
        .arg("import-pgbouncer")
        .arg(ini_path)
        .arg("--output")
        .arg(toml_path)
        .output()
        .expect("run tidepool import-pgbouncer");
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{stderr}");
    stderr
}

#[test]
fn an_imported_pgbouncer_ini_serves_the_same_databases_through_both_poolers() {
    let home = Home::new();
    let port = free_port();
    home.write("userlist.txt", &format!("\"{APP_USER}\" \"{APP_PASSWORD}\"\n"));
    let ini_path = home.write("pgbouncer.ini", &ini(&home, port));
    let toml_path = home.path().join("pool.toml");

    let stderr = import(&ini_path, &toml_path);
    for key in [
        "pgbouncer.logfile",
        "pgbouncer.pidfile",
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
        "pgbouncer.listen_addr",
        "pgbouncer.unix_socket_dir",
        "pgbouncer.unix_socket_mode",
        "pgbouncer.max_db_connections",
        "pgbouncer.query_timeout",
        "pgbouncer.transaction_timeout",
        "pgbouncer.server_login_retry",
        "pgbouncer.tcp_keepalive",
        "pgbouncer.tcp_user_timeout",
        "databases.app_alias",
        "databases.reports",
        "databases.reports_ro",
        "databases.*",
        "users.app",
    ] {
        assert!(
            !stderr.contains(&format!("not mapped: {key} ")),
            "{key}: {stderr}"
        );
    }
    let toml = std::fs::read_to_string(&toml_path).unwrap();
    let config = tidepool::config::Config::from_toml(&toml).expect("the written file loads");
    assert_eq!(config.pool.default_pool_size, 5);
    assert_eq!(config.pool.max_db_connections, 20);
    assert_eq!(config.proxy.client_login_timeout.0.as_millis(), 15_500);
    assert_eq!(config.proxy.query_timeout.0.as_secs(), 60);
    assert_eq!(config.proxy.transaction_timeout.0.as_secs(), 300);
    assert_eq!(config.pool.server_login_retry.0.as_secs(), 5);
    assert_eq!(config.proxy.tcp_user_timeout.0.as_millis(), 20_000);
    assert_eq!(config.proxy.tcp_keepcnt, 3);
    let app = config.user(APP_USER).unwrap();
    assert_eq!((app.pool_size, app.max_user_connections), (Some(3), Some(30)));
    assert_eq!(config.databases["app_alias"].pool_size, Some(2));
    assert_eq!(config.databases[REPORTS_DB].max_db_connections, Some(4));
    assert_eq!(config.cluster_of(APP_DB), Some("default"));
    assert_eq!(config.cluster_of(REPORTS_DB), Some(REPORTS_DB));
    assert_eq!(config.cluster_of("reports_ro"), Some(REPORTS_DB));
    assert_eq!(config.cluster_of("postgres"), Some(REPORTS_DB), "through *");
    assert_eq!(
        config.proxy.listen.to_string(),
        format!("127.0.0.1:{port},[::1]:{port}")
    );
    assert_eq!(config.proxy.unix_socket_dir.as_deref(), Some(home.path()));

    // Both poolers on it. Same port in both files: tidepool gets another free one (and JSON
    // logs), on both addresses; PgBouncer keeps the ini's.
    let tport = free_port();
    let mut table: toml::Table = toml.parse().unwrap();
    let proxy = table["proxy"].as_table_mut().unwrap();
    let listen = [format!("127.0.0.1:{tport}"), format!("[::1]:{tport}")];
    proxy.insert("listen".into(), toml::Value::from(listen.to_vec()));
    proxy.insert("log_format".into(), "json".into());
    let run_path = home.write("run.toml", &toml::to_string(&table).unwrap());
    let bouncer = PgBouncer::start(&home, &ini_path, port);
    let tidepool = Tidepool::start(&run_path);
    assert_eq!(tidepool.addr().port(), tport);
    let app = (APP_USER, APP_PASSWORD);
    let (first_port, second_port) = (pg().port.to_string(), second().primary.port.to_string());
    let server_port = "SELECT current_setting('port')";
    for pooler_port in [bouncer.addr.port(), tport] {
        for ip in [[127, 0, 0, 1].into(), std::net::Ipv6Addr::LOCALHOST.into()] {
            let addr = SocketAddr::new(ip, pooler_port);
            assert_eq!(
                value(addr, app, APP_DB, "SELECT current_database()"),
                APP_DB,
                "{addr}"
            );
            assert_eq!(value(addr, app, "app_alias", server_port), first_port, "{addr}");
            // The database on the other server, as the client and as the forced login.
            assert_eq!(value(addr, app, REPORTS_DB, server_port), second_port, "{addr}");
            assert_eq!(
                value(
                    addr,
                    app,
                    "reports_ro",
                    "SELECT current_user || '@' || current_database()"
                ),
                format!("{}@{REPORTS_DB}", REPORTER.0),
                "{addr}"
            );
            // Any other name goes to the `*` server as asked.
            assert_eq!(
                value(
                    addr,
                    app,
                    "postgres",
                    "SELECT current_database() || ':' || current_setting('port')"
                ),
                format!("postgres:{second_port}"),
                "{addr}"
            );
        }
        let addr = SocketAddr::from(([127, 0, 0, 1], pooler_port));
        // The console user carried over too.
        let (mut console, _) = RawClient::login(addr, APP_USER, APP_PASSWORD, "pgbouncer");
        assert_eq!(console.value("SHOW LISTS"), "databases", "through {addr}");
        // The Unix socket, in the directory the ini names, for the first port.
        let over_socket = value_over_socket(home.path(), pooler_port, REPORTS_DB, server_port);
        assert_eq!(over_socket, second_port, "socket of {pooler_port}");
    }
}
