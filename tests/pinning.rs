//! Pinning in transaction mode: a client holding session state that cannot move keeps its
//! backend until it lets go, and only until then.

mod common;

use common::*;
use std::time::Duration;
use tidepool::config::Config;

async fn proxy_pool_of_one() -> tidepool::app::Proxy {
    let toml = base_config_toml(tokio::task::block_in_place(pg))
        .replace("default_pool_size = 10", "default_pool_size = 1");
    start_proxy(Config::from_toml(&toml).unwrap()).await
}

/// While `holder` is pinned, another client's query cannot get the only backend; once `holder`
/// lets go, it does.
async fn assert_pins_until(setup: &str, pinned_work: &str, release: &str) {
    let proxy = proxy_pool_of_one().await;
    let addr = proxy.local_addr();
    let holder = connect(addr, APP_USER, APP_PASSWORD, APP_DB).await;
    let other = connect(addr, APP_USER, APP_PASSWORD, APP_DB).await;
    holder
        .batch_execute(setup)
        .await
        .unwrap_or_else(|e| panic!("{setup}: {e}"));
    let waiting = tokio::spawn(async move { other.simple_query("SELECT 'other got through'").await });
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        !waiting.is_finished(),
        "{setup}: the other client got the pinned backend"
    );
    // The pinned client keeps working on its backend.
    holder
        .batch_execute(pinned_work)
        .await
        .unwrap_or_else(|e| panic!("{pinned_work}: {e}"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!waiting.is_finished(), "{setup}: released too early");
    holder
        .batch_execute(release)
        .await
        .unwrap_or_else(|e| panic!("{release}: {e}"));
    let result = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .unwrap_or_else(|_| panic!("{release}: the client was never unpinned"));
    assert!(result.unwrap().is_ok());
    assert_eq!(
        proxy
            .shared()
            .stats
            .pinned_clients
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_advisory_lock_pins_until_unlocked() {
    assert_pins_until(
        "SELECT pg_advisory_lock(42)",
        "SELECT 1",
        "SELECT pg_advisory_unlock(42)",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temporary_table_pins_until_dropped() {
    assert_pins_until(
        "CREATE TEMP TABLE pin_me (x int)",
        "INSERT INTO pin_me VALUES (1)",
        "DROP TABLE pin_me",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_hold_cursor_pins_until_closed() {
    assert_pins_until(
        "BEGIN; DECLARE c CURSOR WITH HOLD FOR SELECT generate_series(1, 10); COMMIT",
        "FETCH 2 FROM c",
        "CLOSE c",
    )
    .await;
}

/// A LISTEN alone is served by the pool's listener (tests/listen_notify.rs); inside a
/// transaction block it runs on the backend, which then keeps the client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_inside_a_transaction_block_pins_until_unlisten() {
    assert_pins_until(
        "BEGIN; LISTEN pin_channel; COMMIT",
        "SELECT 1",
        "UNLISTEN pin_channel",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_scoped_advisory_lock_does_not_pin() {
    let proxy = proxy_pool_of_one().await;
    let addr = proxy.local_addr();
    let a = connect(addr, APP_USER, APP_PASSWORD, APP_DB).await;
    let b = connect(addr, APP_USER, APP_PASSWORD, APP_DB).await;
    a.batch_execute("BEGIN; SELECT pg_advisory_xact_lock(7); COMMIT")
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), b.simple_query("SELECT 1"))
        .await
        .expect("not pinned")
        .unwrap();
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pinned_client_that_leaves_takes_its_state_with_it() {
    let proxy = proxy_pool_of_one().await;
    let addr = proxy.local_addr();
    let a = connect(addr, APP_USER, APP_PASSWORD, APP_DB).await;
    a.batch_execute("SELECT pg_advisory_lock(99); CREATE TEMP TABLE leftover (x int)")
        .await
        .unwrap();
    drop(a);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let b = connect(addr, APP_USER, APP_PASSWORD, APP_DB).await;
    let rows = b
        .simple_query("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()")
        .await
        .unwrap();
    let count = first_value(&rows);
    assert_eq!(count, "0", "the lock went with its client");
    assert!(
        b.simple_query("SELECT * FROM leftover").await.is_err(),
        "the temp table went too"
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_level_prepare_does_not_pin() {
    let proxy = proxy_pool_of_one().await;
    let addr = proxy.local_addr();
    let a = connect(addr, APP_USER, APP_PASSWORD, APP_DB).await;
    let b = connect(addr, APP_USER, APP_PASSWORD, APP_DB).await;
    a.batch_execute("PREPARE by_id (int) AS SELECT $1 + 1")
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), b.simple_query("SELECT 1"))
        .await
        .expect("not pinned")
        .unwrap();
    let rows = a.simple_query("EXECUTE by_id(41)").await.unwrap();
    assert_eq!(first_value(&rows), "42");
    proxy.shutdown().await;
}

/// A PREPARE whose text tidepool cannot isolate (the same name twice in one query string)
/// cannot move: it pins, until deallocated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ambiguous_sql_prepare_pins_until_deallocated() {
    assert_pins_until(
        "PREPARE amb AS SELECT 1; DEALLOCATE amb; PREPARE amb AS SELECT 2",
        "EXECUTE amb",
        "DEALLOCATE amb",
    )
    .await;
}
