//! Shared integration-test harness: one PostgreSQL per test binary, a proxy per test, clients.
//!
//! PostgreSQL starts lazily on the first call to [`pg`] and stays up for the whole test binary.
//! It lives in a `static`, which is never dropped; the cluster's reaper child (see
//! `tidepool::cluster`) stops it and deletes its directory when the test process exits,
//! however it exits.
//!
//! Users on that server: `postgres` (superuser, trust), `app` / `app-secret` (scram-sha-256)
//! and `md5user` / `md5-secret` (stored and checked as md5); database `app` owned by `app`.
#![allow(dead_code)] // every test binary uses its own subset of these helpers

pub mod console;
pub mod pgbouncer;
pub mod process;
pub mod tls;
pub mod wire;

use std::net::SocketAddr;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;
use tidepool::cluster::{ClusterError, LocalCluster, LocalNode, NodeOptions, PgBinaries};
use tidepool::config::Config;

/// Owner of the test database; authenticates with scram-sha-256.
pub const APP_USER: &str = "app";
pub const APP_PASSWORD: &str = "app-secret";
/// A login whose password PostgreSQL stores and checks as md5.
pub const MD5_USER: &str = "md5user";
pub const MD5_PASSWORD: &str = "md5-secret";
/// Logins whose pg_hba.conf rule is `password`, `trust` and `gss` (roles not created here).
pub const PASSWORD_BACKEND_USER: &str = "pw_backend";
pub const TRUST_BACKEND_USER: &str = "trust_backend";
pub const GSS_BACKEND_USER: &str = "gss_backend";
/// The database tests use.
pub const APP_DB: &str = "app";

/// Passwords of the logins above, for helpers that only get a user name.
const KNOWN_USERS: &[(&str, &str)] = &[(APP_USER, APP_PASSWORD), (MD5_USER, MD5_PASSWORD)];

static CLUSTER: OnceLock<LocalCluster> = OnceLock::new();

/// The test binary's PostgreSQL cluster, started on first use (blocks for a few seconds).
pub fn pg_cluster() -> &'static LocalCluster {
    CLUSTER.get_or_init(|| {
        start_cluster().unwrap_or_else(|error| panic!("cannot start the test PostgreSQL: {error}"))
    })
}

/// The test binary's PostgreSQL primary.
pub fn pg() -> &'static LocalNode {
    &pg_cluster().primary
}

fn start_cluster() -> Result<LocalCluster, ClusterError> {
    let bins = PgBinaries::locate()?;
    let opts = NodeOptions {
        // First match wins: md5user must be matched before the scram catch-all. The other
        // per-user rules give tests/auth.rs a backend for each method (it creates those roles).
        hba_rules: vec![
            format!("host all {MD5_USER} 127.0.0.1/32 md5"),
            format!("host all {PASSWORD_BACKEND_USER} 127.0.0.1/32 password"),
            format!("host all {TRUST_BACKEND_USER} 127.0.0.1/32 trust"),
            format!("host all {GSS_BACKEND_USER} 127.0.0.1/32 gss"),
            "host all all 127.0.0.1/32 scram-sha-256".to_string(),
        ],
        extra_conf: Vec::new(),
    };
    let cluster = LocalCluster::start(&bins, opts)?;
    cluster.create_role(APP_USER, APP_PASSWORD)?;
    // SET lasts only for this psql session, so later roles get scram again.
    cluster.primary.psql(
        "postgres",
        &format!(
            "SET password_encryption = 'md5';\n\
             CREATE ROLE {MD5_USER} LOGIN PASSWORD '{MD5_PASSWORD}';\n\
             RESET password_encryption;"
        ),
    )?;
    cluster.create_database(APP_DB, APP_USER)?;
    Ok(cluster)
}

/// The TOML behind [`base_config`], for tests that add or change keys before parsing.
pub fn base_config_toml(node: &LocalNode) -> String {
    format!(
        r#"[proxy]
listen = "127.0.0.1:0"
pool_mode = "transaction"

[pool]
default_pool_size = 10

[[nodes]]
host = "127.0.0.1"
port = {port}

[databases.{APP_DB}]

[[users]]
name = "{APP_USER}"
password = "{APP_PASSWORD}"
"#,
        port = node.port
    )
}

/// A validated config: listen on 127.0.0.1:0, one node, database `app`, user `app`.
pub fn base_config(node: &LocalNode) -> Config {
    Config::from_toml(&base_config_toml(node)).expect("the base test config is valid")
}

// ---- tidepool::app: the proxy under test (kept to the one call the tests need) ----

/// Starts a proxy in this process; `proxy.local_addr()` is where clients connect.
pub async fn start_proxy(config: Config) -> tidepool::app::Proxy {
    tidepool::app::Proxy::start(config)
        .await
        .expect("the proxy starts")
}

// ---- clients ----

/// Connects with tokio-postgres (no TLS) and drives the connection on a spawned task.
pub async fn try_connect(
    addr: SocketAddr,
    user: &str,
    password: &str,
    db: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::Config::new()
        .host(addr.ip().to_string())
        .port(addr.port())
        .user(user)
        .password(password)
        .dbname(db)
        .ssl_mode(tokio_postgres::config::SslMode::Disable)
        .connect_timeout(Duration::from_secs(10))
        .connect(tokio_postgres::NoTls)
        .await?;
    // Tests that cut connections make this fail on purpose; the client reports it anyway.
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// Like [`try_connect`], panicking with the reason when the login fails.
pub async fn connect(addr: SocketAddr, user: &str, password: &str, db: &str) -> tokio_postgres::Client {
    try_connect(addr, user, password, db)
        .await
        .unwrap_or_else(|error| panic!("cannot connect to {addr} as {user}/{db}: {error}"))
}

/// A PostgreSQL client tool (`psql`, `pgbench`, …) aimed at `addr` through libpq environment
/// variables, so any arguments can follow.
pub fn pg_tool_cmd(tool: &str, addr: SocketAddr, user: &str, password: &str, db: &str) -> Command {
    let mut command = Command::new(pg_cluster().binaries().tool(tool));
    command
        .env("PGHOST", addr.ip().to_string())
        .env("PGPORT", addr.port().to_string())
        .env("PGUSER", user)
        .env("PGPASSWORD", password)
        .env("PGDATABASE", db)
        .env("PGSSLMODE", "disable")
        .env("PGCONNECT_TIMEOUT", "10")
        .env_remove("PGSERVICE")
        .env_remove("PGOPTIONS");
    command
}

/// `psql -X -q -A -t -v ON_ERROR_STOP=1` at `addr` as one of the harness users; add
/// `-c "SQL"` and run it.
pub fn psql_cmd(addr: SocketAddr, user: &str, db: &str) -> Command {
    let password = KNOWN_USERS
        .iter()
        .find(|(name, _)| *name == user)
        .map(|(_, password)| *password)
        .unwrap_or_else(|| panic!("psql_cmd: unknown harness user {user:?}; use psql_cmd_with_password"));
    psql_cmd_with_password(addr, user, password, db)
}

/// [`psql_cmd`] for any login.
pub fn psql_cmd_with_password(addr: SocketAddr, user: &str, password: &str, db: &str) -> Command {
    let mut command = pg_tool_cmd("psql", addr, user, password, db);
    command.args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"]);
    command
}

/// The first column of the first row of a simple-query result.
pub fn first_value(messages: &[tokio_postgres::SimpleQueryMessage]) -> String {
    messages
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
            _ => None,
        })
        .expect("a row")
}
