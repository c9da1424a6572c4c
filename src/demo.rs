//! `tidepool demo`: a throwaway PostgreSQL cluster with the proxy in front, ready for psql.

use crate::app::{AppError, Proxy};
use crate::cluster::{ClusterError, LocalCluster, NodeOptions, PgBinaries};
use crate::config::{Config, ConfigError};
use rand::distr::{Alphanumeric, Distribution};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

/// Login the demo creates, in PostgreSQL and in the proxy config.
const DEMO_USER: &str = "app";
/// Database the demo creates, owned by [`DEMO_USER`].
const DEMO_DB: &str = "app";

/// What `tidepool demo` sets up.
#[derive(Debug, Clone, Default)]
pub struct DemoOptions {
    /// Where the proxy accepts clients. Default: 127.0.0.1 on a port the OS picks.
    pub listen: Option<SocketAddr>,
    /// Streaming standbys to start behind the primary; each is listed as an extra `[[nodes]]`
    /// entry, and reads are spread over them. Default 2.
    pub standbys: usize,
}

/// Why the demo could not run.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// Locating the binaries or starting PostgreSQL failed (the message says how to install it).
    #[error("cannot set up the demo PostgreSQL cluster: {0}")]
    Cluster(#[from] ClusterError),
    /// The generated configuration was refused (a bug in this module).
    #[error("the generated demo configuration is invalid: {0}")]
    Config(#[from] ConfigError),
    /// The proxy did not start (e.g. the listen address is taken).
    #[error("cannot start the proxy: {0}")]
    Proxy(#[from] AppError),
    /// Installing the Ctrl-C handler failed.
    #[error("cannot wait for Ctrl-C: {0}")]
    Signal(#[source] std::io::Error),
    /// A blocking setup or teardown task panicked.
    #[error("a demo setup task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Starts PostgreSQL and the proxy, prints how to connect, waits for Ctrl-C, then stops the
/// proxy and exactly the cluster it started.
pub async fn run(opts: DemoOptions) -> Result<(), DemoError> {
    let password = random_password();
    let setup_password = password.clone();
    let standbys = opts.standbys;
    // initdb, pg_ctl and friends block for seconds: keep them off the async workers.
    let cluster = tokio::task::spawn_blocking(move || start_cluster(standbys, &setup_password)).await??;
    let result = serve(&cluster, opts.listen, &password).await;
    tokio::task::spawn_blocking(move || drop(cluster)).await?;
    result
}

/// Primary (+ standbys), role and database; a failure part-way drops what was started.
fn start_cluster(standbys: usize, password: &str) -> Result<LocalCluster, ClusterError> {
    let bins = PgBinaries::locate()?;
    let mut cluster = LocalCluster::start(&bins, NodeOptions::default())?;
    cluster.create_role(DEMO_USER, password)?;
    cluster.create_database(DEMO_DB, DEMO_USER)?;
    for _ in 0..standbys {
        cluster.add_standby()?;
    }
    Ok(cluster)
}

async fn serve(cluster: &LocalCluster, listen: Option<SocketAddr>, password: &str) -> Result<(), DemoError> {
    let ports: Vec<u16> = cluster.nodes().map(|node| node.port).collect();
    let config = demo_config(listen, &ports, password)?;
    let proxy = Proxy::start(config).await?;
    print_banner(cluster, proxy.local_addr(), password);
    let waited = crate::shutdown::stop_signal().await;
    println!("\nStopping the proxy and the demo PostgreSQL cluster…");
    proxy.shutdown().await;
    waited.map_err(DemoError::Signal)
}

/// The proxy config: transaction pooling, database `app`, user `app`, the nodes on 127.0.0.1
/// (primary first). Goes through `Config::from_toml` so the demo is validated like a file.
pub fn demo_config(
    listen: Option<SocketAddr>,
    node_ports: &[u16],
    password: &str,
) -> Result<Config, ConfigError> {
    let listen = listen.unwrap_or(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)));
    let mut text = format!(
        "[proxy]\nlisten = \"{listen}\"\npool_mode = \"transaction\"\n\n\
         [pool]\ndefault_pool_size = 10\n\n"
    );
    for port in node_ports {
        text.push_str(&format!("[[nodes]]\nhost = \"127.0.0.1\"\nport = {port}\n\n"));
    }
    // The password is alphanumeric (see `random_password`), so it needs no TOML escaping.
    text.push_str(&format!(
        "[databases.{DEMO_DB}]\n\n[[users]]\nname = \"{DEMO_USER}\"\npassword = \"{password}\"\n"
    ));
    Config::from_toml(&text)
}

/// A fresh password per run: the demo listens on a shared machine's loopback.
fn random_password() -> String {
    Alphanumeric
        .sample_iter(rand::rng())
        .take(16)
        .map(char::from)
        .collect()
}

/// Where clients should connect: a wildcard listen address is reachable on loopback.
fn client_addr(local: SocketAddr) -> SocketAddr {
    match local {
        SocketAddr::V4(v4) if v4.ip().is_unspecified() => (Ipv4Addr::LOCALHOST, v4.port()).into(),
        SocketAddr::V6(v6) if v6.ip().is_unspecified() => (Ipv6Addr::LOCALHOST, v6.port()).into(),
        other => other,
    }
}

fn print_banner(cluster: &LocalCluster, proxy_addr: SocketAddr, password: &str) {
    let addr = client_addr(proxy_addr);
    println!("tidepool demo is running.");
    println!(
        "  PostgreSQL primary   127.0.0.1:{} (data in {})",
        cluster.primary.port,
        cluster.root_dir().display()
    );
    for standby in &cluster.standbys {
        println!("  PostgreSQL standby   127.0.0.1:{}", standby.port);
    }
    println!("  tidepool proxy       {addr} (transaction pooling)");
    println!();
    println!("Connect through the proxy as user {DEMO_USER:?} to database {DEMO_DB:?}:");
    println!();
    println!("  psql \"postgresql://{DEMO_USER}:{password}@{addr}/{DEMO_DB}\"");
    println!();
    println!("Each transaction borrows a pooled server connection and returns it at COMMIT.");
    if !cluster.standbys.is_empty() {
        println!("Reads go round-robin to the standbys, anything that might write to the primary;");
        println!("see where a statement ran with:");
        println!();
        println!("  SELECT inet_server_port(), pg_is_in_recovery();");
        println!("  CREATE TABLE t (x int); INSERT INTO t VALUES (1) RETURNING inet_server_port();");
        println!();
    }
    println!("Press Ctrl-C to stop; the PostgreSQL cluster is deleted on exit.");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_lists_primary_first_and_the_demo_user() {
        let config = demo_config(None, &[5433, 5434], "abc123").expect("valid demo config");
        assert_eq!(config.proxy.listen, "127.0.0.1:0".parse().unwrap());
        let ports: Vec<u16> = config.nodes.iter().map(|n| n.port).collect();
        assert_eq!(ports, [5433, 5434]);
        assert!(config.databases.contains_key(DEMO_DB));
        let user = config.user(DEMO_USER).expect("demo user configured");
        assert_eq!(user.password.as_deref(), Some("abc123"));
    }

    #[test]
    fn passwords_are_fresh_and_toml_safe() {
        let a = random_password();
        assert_eq!(a.len(), 16);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, random_password());
    }

    #[test]
    fn wildcard_listen_prints_loopback() {
        let any: SocketAddr = "0.0.0.0:6432".parse().unwrap();
        assert_eq!(client_addr(any), "127.0.0.1:6432".parse().unwrap());
        let any6: SocketAddr = "[::]:6432".parse().unwrap();
        assert_eq!(client_addr(any6), "[::1]:6432".parse().unwrap());
    }
}
