//! Pool upkeep and timeouts: prewarming, idle eviction, the check query on stale connections,
//! client_idle_timeout and idle_transaction_timeout.

mod common;

use common::wire::{query, Msg, RawClient};
use common::*;
use std::time::{Duration, Instant};
use tidepool::config::Config;

fn config(pool_extra: &str, proxy_extra: &str) -> Config {
    let toml = base_config_toml(tokio::task::block_in_place(pg))
        .replace(
            "default_pool_size = 10",
            &format!("default_pool_size = 4\n{pool_extra}"),
        )
        .replace("[proxy]\n", &format!("[proxy]\n{proxy_extra}\n"));
    Config::from_toml(&toml).unwrap()
}

/// Server connections of user `app` (the proxy's) as PostgreSQL sees them.
fn app_backends() -> usize {
    pg().psql(
        "postgres",
        "SELECT count(*) FROM pg_stat_activity WHERE usename = 'app' AND backend_type = 'client backend'",
    )
    .unwrap()
    .parse()
    .unwrap()
}

async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !tokio::task::block_in_place(&mut condition) {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_pool_size_prewarms_and_idle_timeout_evicts_down_to_it() {
    let proxy = start_proxy(config("min_pool_size = 2\nserver_idle_timeout = \"1s\"", "")).await;
    let addr = proxy.local_addr();
    // The pool exists once a client used it; then it is kept at min_pool_size.
    let clients: Vec<_> =
        futures_util::future::join_all((0..4).map(|_| connect(addr, APP_USER, APP_PASSWORD, APP_DB))).await;
    futures_util::future::join_all(clients.iter().map(|c| c.simple_query("SELECT pg_sleep(0.3)"))).await;
    let pool = proxy.shared().pools.all()[0].clone();
    assert!(pool.counts().0 >= 2);
    // Idle longer than server_idle_timeout: evicted, but not below min_pool_size.
    wait_until("idle connections are evicted down to 2", || pool.counts().0 == 2).await;
    drop(clients);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(pool.counts().0, 2, "min_pool_size is kept");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pooled_connection_that_died_while_idle_is_replaced_by_the_check_query() {
    let proxy = start_proxy(config("server_check_delay = \"0s\"", "")).await;
    let addr = proxy.local_addr();
    let client = connect(addr, APP_USER, APP_PASSWORD, APP_DB).await;
    let rows = client.simple_query("SELECT pg_backend_pid()").await.unwrap();
    let pid = first_value(&rows);
    tokio::task::block_in_place(|| {
        pg().psql("postgres", &format!("SELECT pg_terminate_backend({pid})"))
            .unwrap()
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The next transaction gets a healthy connection, without an error.
    let rows = client
        .simple_query("SELECT pg_backend_pid()")
        .await
        .expect("no error reaches the client");
    let new_pid = first_value(&rows);
    assert_ne!(pid, new_pid);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_client_and_idle_in_transaction_timeouts() {
    let proxy = start_proxy(config(
        "",
        "client_idle_timeout = \"1s\"\nidle_transaction_timeout = \"1s\"",
    ))
    .await;
    let addr = proxy.local_addr();
    let before = tokio::task::block_in_place(app_backends);
    tokio::task::spawn_blocking(move || {
        // Idle outside a transaction.
        let (mut c, _) = RawClient::login(addr, APP_USER, APP_PASSWORD, APP_DB);
        let started = Instant::now();
        let last = std::iter::from_fn(|| c.recv())
            .last()
            .expect("a FATAL before the close");
        assert_eq!(last.sqlstate().as_deref(), Some("57P05"));
        assert!(started.elapsed() >= Duration::from_millis(900));

        // Idle inside a transaction: closed with 25P03, and the transaction is rolled back.
        let (mut c, _) = RawClient::login(addr, APP_USER, APP_PASSWORD, APP_DB);
        c.send(&query("BEGIN; CREATE TEMP TABLE gone (x int)"));
        let msgs = c.until_ready();
        assert_eq!(msgs.last().map(|m: &Msg| m.body.clone()), Some(b"T".to_vec()));
        let last = std::iter::from_fn(|| c.recv())
            .last()
            .expect("a FATAL before the close");
        assert_eq!(last.sqlstate().as_deref(), Some("25P03"));
        assert_eq!(
            last.message().as_deref(),
            Some("terminating connection due to idle-in-transaction timeout")
        );
    })
    .await
    .unwrap();
    // The backend went back to the pool, rolled back (not closed, not stuck in a transaction).
    let in_tx: usize = tokio::task::block_in_place(|| {
        pg().psql("postgres", "SELECT count(*) FROM pg_stat_activity WHERE usename = 'app' AND state LIKE 'idle in transaction%'")
            .unwrap()
            .parse()
            .unwrap()
    });
    assert_eq!(in_tx, 0);
    assert!(tokio::task::block_in_place(app_backends) >= before);
    proxy.shutdown().await;
}
