//! Listeners: several `listen` addresses (IPv4 and IPv6), the Unix-domain socket reached by psql
//! and a driver (hba `local` rules, the admin console, stale files, handover and removal), and
//! TCP keepalive options read back from the sockets on both sides.

mod common;

use common::console::{admin_config_toml, show, ADMIN};
use common::*;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;
use tidepool::config::Config;

/// Whether this machine can bind IPv6 loopback (some containers have no `::1`).
fn has_ipv6_loopback() -> bool {
    std::net::TcpListener::bind("[::1]:0").is_ok()
}

/// A tokio-postgres client over the Unix socket in `dir` for `port`.
async fn connect_unix(
    dir: &Path,
    port: u16,
    user: &str,
    password: &str,
    db: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::Config::new()
        .host_path(dir)
        .port(port)
        .user(user)
        .password(password)
        .dbname(db)
        .connect_timeout(Duration::from_secs(10))
        .connect(tokio_postgres::NoTls)
        .await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

async fn one(client: &tokio_postgres::Client) -> String {
    first_value(&client.simple_query("SELECT 40 + 2").await.expect("query runs"))
}

fn with_proxy_keys(toml: &str, keys: &str) -> Config {
    let text = toml.replacen("[proxy]\n", &format!("[proxy]\n{keys}\n"), 1);
    Config::from_toml(&text).unwrap_or_else(|e| panic!("config: {e}\n{text}"))
}

#[tokio::test]
async fn every_listen_address_serves_clients() {
    let ipv6 = has_ipv6_loopback();
    if !ipv6 {
        eprintln!("no IPv6 loopback on this machine: testing IPv4 addresses only");
    }
    let list = if ipv6 {
        r#"["127.0.0.1:0", "127.0.0.1:0", "[::1]:0"]"#
    } else {
        r#"["127.0.0.1:0", "127.0.0.1:0"]"#
    };
    let toml = base_config_toml(pg()).replace("listen = \"127.0.0.1:0\"", &format!("listen = {list}"));
    let proxy = start_proxy(Config::from_toml(&toml).expect("valid")).await;
    let addrs = proxy.listen_addrs().to_vec();
    assert_eq!(addrs.len(), if ipv6 { 3 } else { 2 });
    assert_eq!(addrs[0], proxy.local_addr());
    assert_ne!(addrs[0].port(), addrs[1].port(), "port 0 gives each its own port");
    for addr in &addrs {
        let client = connect(*addr, APP_USER, APP_PASSWORD, APP_DB).await;
        assert_eq!(one(&client).await, "42", "through {addr}");
    }
    if ipv6 {
        assert!(addrs[2].is_ipv6());
    }
    proxy.shutdown_within(Duration::from_secs(5)).await;
    // After shutdown no address accepts any more.
    for addr in &addrs {
        assert!(
            std::net::TcpStream::connect(addr).is_err(),
            "{addr} still accepts"
        );
    }
}

#[tokio::test]
async fn unix_socket_serves_psql_a_driver_and_the_console() {
    let dir = tempfile::tempdir().unwrap();
    let keys = format!(
        "unix_socket_dir = \"{}\"\nunix_socket_mode = \"0770\"",
        dir.path().display()
    );
    let proxy = start_proxy(with_proxy_keys(&admin_config_toml(), &keys)).await;
    let port = proxy.local_addr().port();
    let path = dir.path().join(format!(".s.PGSQL.{port}"));
    assert_eq!(proxy.unix_socket_path(), Some(path.as_path()));
    let mode = std::fs::metadata(&path)
        .expect("socket file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o770);

    // A driver.
    let client = connect_unix(dir.path(), port, APP_USER, APP_PASSWORD, APP_DB)
        .await
        .expect("driver over the Unix socket");
    assert_eq!(one(&client).await, "42");

    // psql, as an application would run it: -h DIR -p PORT.
    let mut psql = pg_tool_cmd("psql", proxy.local_addr(), APP_USER, APP_PASSWORD, APP_DB);
    psql.env_remove("PGHOST")
        .env_remove("PGSSLMODE")
        .args(["-X", "-A", "-t", "-h"])
        .arg(dir.path())
        .args(["-p", &port.to_string(), "-c", "SELECT 'over ' || 'unix'"]);
    // Off the runtime's thread: the proxy runs on it.
    let output = tokio::task::spawn_blocking(move || psql.output())
        .await
        .unwrap()
        .expect("psql runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "over unix");

    // The admin console, and what it shows of a Unix client.
    let console = connect_unix(dir.path(), port, ADMIN.0, ADMIN.1, "tidepool")
        .await
        .expect("console over the Unix socket");
    let clients = show(&console, "SHOW CLIENTS").await;
    assert!(!clients.rows_where("database", APP_DB).is_empty());
    drop(console);

    // SSLRequest on a Unix socket is answered N, as PostgreSQL does.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut raw = tokio::net::UnixStream::connect(&path).await.unwrap();
    raw.write_all(&[0, 0, 0, 8, 4, 210, 22, 47]).await.unwrap();
    let mut answer = [0u8; 1];
    raw.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"N");
    drop(raw);

    proxy.shutdown_within(Duration::from_secs(5)).await;
    assert!(!path.exists(), "the socket file is removed at shutdown");
    assert!(!dir.path().join(format!(".s.PGSQL.{port}.lock")).exists());
}

#[tokio::test]
async fn hba_local_rules_apply_to_the_unix_socket_only() {
    let dir = tempfile::tempdir().unwrap();
    let keys = format!("unix_socket_dir = \"{}\"", dir.path().display());
    // Unix clients: trust; TCP clients: a password, and a user nobody may use over TCP.
    let toml = base_config_toml(pg())
        + "\n[[hba]]\ntype = \"local\"\ndatabase = \"all\"\nuser = \"all\"\nmethod = \"trust\"\n\
           \n[[hba]]\ntype = \"host\"\ndatabase = \"all\"\nuser = \"all\"\naddress = \"127.0.0.1/32\"\nmethod = \"scram-sha-256\"\n";
    let proxy = start_proxy(with_proxy_keys(&toml, &keys)).await;
    let port = proxy.local_addr().port();
    let local = connect_unix(dir.path(), port, APP_USER, "wrong password", APP_DB)
        .await
        .expect("local trust ignores the password");
    assert_eq!(one(&local).await, "42");
    let error = try_connect(proxy.local_addr(), APP_USER, "wrong password", APP_DB)
        .await
        .expect_err("TCP still needs the password");
    assert_eq!(console::sqlstate(&error), "28P01");
    proxy.shutdown_within(Duration::from_secs(5)).await;

    // Without a local rule, a Unix client is refused the way PostgreSQL words it.
    let dir = tempfile::tempdir().unwrap();
    let keys = format!("unix_socket_dir = \"{}\"", dir.path().display());
    let toml = base_config_toml(pg())
        + "\n[[hba]]\ntype = \"host\"\ndatabase = \"all\"\nuser = \"all\"\naddress = \"all\"\nmethod = \"trust\"\n";
    let proxy = start_proxy(with_proxy_keys(&toml, &keys)).await;
    let port = proxy.local_addr().port();
    let error = connect_unix(dir.path(), port, APP_USER, APP_PASSWORD, APP_DB)
        .await
        .expect_err("no local rule");
    let db = error.as_db_error().expect("an ErrorResponse");
    assert_eq!(db.code().code(), "28000");
    assert!(db.message().contains("host \"[local]\""), "{}", db.message());
    proxy.shutdown_within(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn unix_socket_stale_file_replaced_and_handed_over_on_upgrade() {
    let dir = tempfile::tempdir().unwrap();
    let keys = format!("unix_socket_dir = \"{}\"", dir.path().display());
    // Reserve a port, and leave a stale socket file for it, as a crashed process would.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let path = dir.path().join(format!(".s.PGSQL.{port}"));
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    let toml = base_config_toml(pg()).replace("127.0.0.1:0", &format!("127.0.0.1:{port}"));
    let old = start_proxy(with_proxy_keys(&toml, &keys)).await;
    let client = connect_unix(dir.path(), port, APP_USER, APP_PASSWORD, APP_DB)
        .await
        .expect("the stale file was replaced");
    assert_eq!(one(&client).await, "42");
    drop(client);

    // Upgrade: a second process with the same config takes the path over (TCP: SO_REUSEPORT).
    let new = start_proxy(with_proxy_keys(&toml, &keys)).await;
    let before_old = old.shared().clients.connections();
    let client = connect_unix(dir.path(), port, APP_USER, APP_PASSWORD, APP_DB)
        .await
        .expect("connects after the handover");
    assert_eq!(one(&client).await, "42");
    assert!(
        new.shared().clients.connections() >= 1,
        "the new process serves it"
    );
    assert!(old.shared().clients.connections() <= before_old);
    drop(client);

    // The old process stops: it leaves the new one's socket in place.
    old.shutdown_within(Duration::from_secs(5)).await;
    assert!(path.exists());
    let client = connect_unix(dir.path(), port, APP_USER, APP_PASSWORD, APP_DB)
        .await
        .expect("still served by the new process");
    assert_eq!(one(&client).await, "42");
    drop(client);
    new.shutdown_within(Duration::from_secs(5)).await;
    assert!(!path.exists());
}

#[tokio::test]
async fn unix_socket_of_another_server_is_not_taken() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let path = dir.path().join(format!(".s.PGSQL.{port}"));
    // A live socket with a PostgreSQL-style lock file (PID, data directory).
    let _other = std::os::unix::net::UnixListener::bind(&path).unwrap();
    std::fs::write(
        dir.path().join(format!(".s.PGSQL.{port}.lock")),
        "1\n/var/lib/postgresql/15/main\n",
    )
    .unwrap();
    let toml = base_config_toml(pg()).replace("127.0.0.1:0", &format!("127.0.0.1:{port}"));
    let keys = format!("unix_socket_dir = \"{}\"", dir.path().display());
    let error = tidepool::app::Proxy::start(with_proxy_keys(&toml, &keys))
        .await
        .err()
        .expect("refused");
    assert!(error.to_string().contains("another server listens"), "{error}");
}

/// Keepalive options of one socket, read with getsockopt.
#[derive(Debug, PartialEq, Eq)]
struct Options {
    keepalive: bool,
    idle: Duration,
    interval: Duration,
    count: u32,
    user_timeout: Option<Duration>,
}

/// The TCP sockets of this process (the proxy runs in it) as (local, peer, options).
fn own_tcp_sockets() -> Vec<(SocketAddr, SocketAddr, Options)> {
    use std::os::fd::BorrowedFd;
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        let Ok(fd) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let is_socket =
            std::fs::read_link(entry.path()).is_ok_and(|l| l.to_string_lossy().starts_with("socket:"));
        if !is_socket {
            continue;
        }
        // SAFETY: the descriptor was listed as open just now and is only read with getsockopt
        // while the connections it belongs to are held by this test.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        let socket = socket2::SockRef::from(&fd);
        let (Ok(local), Ok(peer)) = (socket.local_addr(), socket.peer_addr()) else {
            continue;
        };
        let (Some(local), Some(peer)) = (local.as_socket(), peer.as_socket()) else {
            continue;
        };
        let options = Options {
            keepalive: socket.keepalive().unwrap(),
            idle: socket.tcp_keepalive_time().unwrap(),
            interval: socket.tcp_keepalive_interval().unwrap(),
            count: socket.tcp_keepalive_retries().unwrap(),
            user_timeout: socket.tcp_user_timeout().unwrap(),
        };
        found.push((local, peer, options));
    }
    found
}

#[tokio::test]
async fn keepalive_options_are_set_on_client_and_server_sockets() {
    let keys = "tcp_keepalive = true\ntcp_keepidle = \"7s\"\ntcp_keepintvl = \"3s\"\ntcp_keepcnt = 4\ntcp_user_timeout = \"9s\"";
    let proxy = start_proxy(with_proxy_keys(&base_config_toml(pg()), keys)).await;
    let client = connect(proxy.local_addr(), APP_USER, APP_PASSWORD, APP_DB).await;
    // A transaction in flight holds one server connection.
    client.batch_execute("BEGIN").await.unwrap();
    assert_eq!(one(&client).await, "42");
    let wanted = Options {
        keepalive: true,
        idle: Duration::from_secs(7),
        interval: Duration::from_secs(3),
        count: 4,
        user_timeout: Some(Duration::from_secs(9)),
    };
    let sockets = own_tcp_sockets();
    let accepted: Vec<_> = sockets
        .iter()
        .filter(|(local, _, _)| *local == proxy.local_addr())
        .collect();
    let to_server: Vec<_> = sockets
        .iter()
        .filter(|(_, peer, _)| *peer == pg().addr())
        .collect();
    assert!(!accepted.is_empty(), "{sockets:?}");
    for (local, peer, options) in &accepted {
        assert_eq!(*options, wanted, "{local} -> {peer}");
    }
    // Other tests of this binary have server connections too (with the defaults): one of
    // them is this proxy's.
    assert!(to_server.iter().any(|(_, _, o)| *o == wanted), "{to_server:?}");
    // The test's own client socket is not tidepool's: it has no keepalive, which shows the
    // values above were not inherited from a system default.
    let own = sockets
        .iter()
        .find(|(_, peer, _)| *peer == proxy.local_addr())
        .expect("client");
    assert!(!own.2.keepalive || own.2.idle != wanted.idle);
    client.batch_execute("COMMIT").await.unwrap();
    drop(client);
    proxy.shutdown_within(Duration::from_secs(5)).await;

    // Off: client sockets have no keepalive.
    let proxy = start_proxy(with_proxy_keys(&base_config_toml(pg()), "tcp_keepalive = false")).await;
    let client = connect(proxy.local_addr(), APP_USER, APP_PASSWORD, APP_DB).await;
    assert_eq!(one(&client).await, "42");
    let sockets = own_tcp_sockets();
    let accepted: Vec<_> = sockets
        .iter()
        .filter(|(local, _, _)| *local == proxy.local_addr())
        .collect();
    assert!(!accepted.is_empty());
    assert!(accepted.iter().all(|(_, _, o)| !o.keepalive), "{accepted:?}");
    drop(client);
    proxy.shutdown_within(Duration::from_secs(5)).await;
}
