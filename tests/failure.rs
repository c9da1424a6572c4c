//! A backend dying under a client: only that client hears of it; in transaction mode it goes on
//! with a new transaction, and the dead connection leaves the pool.

mod common;

use common::wire::{query, RawClient};
use common::*;
use std::time::Duration;
use tidepool::config::Config;

async fn proxy(pool_size: usize, mode: &str) -> tidepool::app::Proxy {
    let toml = base_config_toml(tokio::task::block_in_place(pg))
        .replace(
            "default_pool_size = 10",
            &format!("default_pool_size = {pool_size}"),
        )
        .replace("pool_mode = \"transaction\"", &format!("pool_mode = \"{mode}\""));
    start_proxy(Config::from_toml(&toml).unwrap()).await
}

fn terminate(pid: &str) {
    pg().psql("postgres", &format!("SELECT pg_terminate_backend({pid})"))
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_killed_mid_transaction_errors_only_that_client_which_then_continues() {
    let proxy = proxy(2, "transaction").await;
    let addr = proxy.local_addr();
    tokio::task::spawn_blocking(move || {
        let (mut victim, _) = RawClient::login(addr, APP_USER, APP_PASSWORD, APP_DB);
        let (mut bystander, _) = RawClient::login(addr, APP_USER, APP_PASSWORD, APP_DB);
        victim.send(&query("BEGIN"));
        victim.until_ready();
        let pid = victim.value("SELECT pg_backend_pid()");
        bystander.send(&query("BEGIN"));
        bystander.until_ready();
        let bystander_pid = bystander.value("SELECT pg_backend_pid()");
        assert_ne!(pid, bystander_pid);

        terminate(&pid);
        std::thread::sleep(Duration::from_millis(200));

        // The victim's next statement learns that its transaction is gone.
        victim.send(&query("SELECT 1"));
        let msgs = victim.until_ready();
        let error = msgs
            .iter()
            .find(|m| m.tag == b'E')
            .expect("an error for the lost transaction");
        assert_eq!(
            error.severity().as_deref(),
            Some("ERROR"),
            "not FATAL: the client stays"
        );
        assert_eq!(error.sqlstate().as_deref(), Some("57P01"));
        assert_eq!(msgs.last().unwrap().body, b"I");
        // And carries on with a new transaction on a healthy backend.
        let new_pid = victim.value("SELECT pg_backend_pid()");
        assert_ne!(new_pid, pid);
        victim.send(&query("BEGIN; SELECT 1; COMMIT"));
        assert!(victim.until_ready().iter().all(|m| m.tag != b'E'));

        // The bystander's transaction never noticed.
        assert_eq!(bystander.value("SELECT pg_backend_pid()"), bystander_pid);
        bystander.send(&query("COMMIT"));
        assert!(bystander.until_ready().iter().all(|m| m.tag != b'E'));
    })
    .await
    .unwrap();
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_killed_during_a_running_query_answers_that_query_with_an_error() {
    let proxy = proxy(1, "transaction").await;
    let addr = proxy.local_addr();
    tokio::task::spawn_blocking(move || {
        let (mut c, _) = RawClient::login(addr, APP_USER, APP_PASSWORD, APP_DB);
        let pid = c.value("SELECT pg_backend_pid()");
        c.send(&query("SELECT pg_sleep(30)"));
        std::thread::sleep(Duration::from_millis(300));
        terminate(&pid);
        let msgs = c.until_ready();
        let error = msgs.iter().find(|m| m.tag == b'E').expect("error");
        assert_eq!(error.severity().as_deref(), Some("ERROR"));
        assert_eq!(msgs.last().unwrap().tag, b'Z');
        assert_eq!(c.value("SELECT 42"), "42");
    })
    .await
    .unwrap();
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_mode_client_gets_a_clear_fatal_when_its_backend_dies() {
    let proxy = proxy(2, "session").await;
    let addr = proxy.local_addr();
    tokio::task::spawn_blocking(move || {
        let (mut c, _) = RawClient::login(addr, APP_USER, APP_PASSWORD, APP_DB);
        let pid = c.value("SELECT pg_backend_pid()");
        c.send(&query("SELECT pg_sleep(30)"));
        std::thread::sleep(Duration::from_millis(300));
        terminate(&pid);
        let mut last = None;
        while let Some(m) = c.recv() {
            last = Some(m);
        }
        assert_eq!(last.and_then(|m| m.severity()).as_deref(), Some("FATAL"));
        // A new session works.
        let (mut c, _) = RawClient::login(addr, APP_USER, APP_PASSWORD, APP_DB);
        assert_eq!(c.value("SELECT 7"), "7");
    })
    .await
    .unwrap();
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_request_stops_the_running_query_only() {
    let proxy = proxy(2, "transaction").await;
    let addr = proxy.local_addr();
    let client = connect(addr, APP_USER, APP_PASSWORD, APP_DB).await;
    let other = connect(addr, APP_USER, APP_PASSWORD, APP_DB).await;
    let token = client.cancel_token();
    let sleeper = tokio::spawn(async move { client.simple_query("SELECT pg_sleep(20)").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let other_query = tokio::spawn(async move { other.simple_query("SELECT pg_sleep(1), 'other'").await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    token.cancel_query(tokio_postgres::NoTls).await.unwrap();
    let err = tokio::time::timeout(Duration::from_secs(10), sleeper)
        .await
        .expect("the cancelled query returns promptly")
        .unwrap()
        .unwrap_err();
    assert_eq!(err.as_db_error().unwrap().code().code(), "57014");
    assert!(
        other_query.await.unwrap().is_ok(),
        "the other client's query was not cancelled"
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_of_a_client_waiting_for_the_pool_takes_it_out_of_the_queue() {
    let proxy = proxy(1, "transaction").await;
    let addr = proxy.local_addr();
    let holder = connect(addr, APP_USER, APP_PASSWORD, APP_DB).await;
    let waiter = connect(addr, APP_USER, APP_PASSWORD, APP_DB).await;
    holder.batch_execute("BEGIN").await.unwrap();
    let token = waiter.cancel_token();
    let waiter = std::sync::Arc::new(waiter);
    let queued = {
        let waiter = waiter.clone();
        tokio::spawn(async move { waiter.simple_query("SELECT 'never ran'").await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!queued.is_finished(), "the waiter is queued behind the holder");
    token.cancel_query(tokio_postgres::NoTls).await.unwrap();
    let err = tokio::time::timeout(Duration::from_secs(5), queued)
        .await
        .expect("the queued request is answered at once")
        .unwrap()
        .unwrap_err();
    assert_eq!(err.as_db_error().unwrap().code().code(), "57014");
    // The holder never noticed; after it commits, the waiter works normally.
    holder.batch_execute("COMMIT").await.unwrap();
    waiter.simple_query("SELECT 1").await.unwrap();
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_cancel_never_hits_the_next_query() {
    let proxy = proxy(1, "transaction").await;
    let addr = proxy.local_addr();
    let a = connect(addr, APP_USER, APP_PASSWORD, APP_DB).await;
    let b = connect(addr, APP_USER, APP_PASSWORD, APP_DB).await;
    // a's query is over; its cancel arrives while b runs a query on the same (only) backend.
    a.simple_query("SELECT 1").await.unwrap();
    let token = a.cancel_token();
    let b_query = tokio::spawn(async move { b.simple_query("SELECT pg_sleep(0.5), 'b done'").await });
    tokio::time::sleep(Duration::from_millis(150)).await;
    token.cancel_query(tokio_postgres::NoTls).await.unwrap();
    assert!(
        b_query.await.unwrap().is_ok(),
        "b's query was not cancelled by a's late cancel"
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_mid_query_has_it_cancelled_and_its_backend_reused() {
    let proxy = proxy(1, "transaction").await;
    let addr = proxy.local_addr();
    let pid = tokio::task::spawn_blocking(move || {
        let (mut c, _) = RawClient::login(addr, APP_USER, APP_PASSWORD, APP_DB);
        let pid = c.value("SELECT pg_backend_pid()");
        c.send(&query("BEGIN; SELECT pg_sleep(60)"));
        std::thread::sleep(Duration::from_millis(300));
        drop(c);
        pid
    })
    .await
    .unwrap();
    let started = std::time::Instant::now();
    let other = connect(addr, APP_USER, APP_PASSWORD, APP_DB).await;
    let rows = other.simple_query("SELECT pg_backend_pid()").await.unwrap();
    let got = first_value(&rows);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the abandoned query was cancelled, not waited for"
    );
    assert_eq!(got, pid, "the same backend, cancelled, rolled back and reused");
    // now() is the transaction's start: equal to the statement's only in a fresh transaction.
    let fresh = other
        .simple_query("SELECT now() = statement_timestamp()")
        .await
        .unwrap();
    let fresh = first_value(&fresh);
    assert_eq!(fresh, "t", "the abandoned transaction was rolled back");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_terminated_while_idle_in_the_pool_is_never_handed_out() {
    let proxy = proxy(1, "transaction").await;
    let addr = proxy.local_addr();
    let c = connect(addr, APP_USER, APP_PASSWORD, APP_DB).await;
    let pid = first_value(&c.simple_query("SELECT pg_backend_pid()").await.unwrap());
    // The only backend now sits idle in the pool; the server sends it FATAL 57P01 and hangs up.
    tokio::task::block_in_place(|| terminate(&pid));
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The next transaction gets a fresh backend instead of that error.
    let rows = c
        .simple_query("SELECT pg_backend_pid()")
        .await
        .expect("no error from a backend that died while idle");
    assert_ne!(first_value(&rows), pid);
    proxy.shutdown().await;
}

/// Two instances behind one address: a cancel that lands on the wrong one is forwarded to the
/// instance whose id its key carries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_landing_on_a_peer_is_forwarded() {
    let base = base_config_toml(tokio::task::block_in_place(pg));
    let a = start_proxy(Config::from_toml(&format!("{base}\n[peers]\ninstance_id = 1\n")).unwrap()).await;
    let a_addr = a.local_addr();
    let b_toml = format!("{base}\n[peers]\ninstance_id = 2\ninstances = {{ 1 = \"{a_addr}\" }}\n");
    let b = start_proxy(Config::from_toml(&b_toml).unwrap()).await;
    let b_addr = b.local_addr();
    tokio::task::spawn_blocking(move || {
        let (mut client, welcome) = RawClient::login(a_addr, APP_USER, APP_PASSWORD, APP_DB);
        let key = welcome.iter().find(|m| m.tag == b'K').expect("BackendKeyData");
        assert_eq!(key.body[4], 1, "the secret carries instance 1");
        client.send(&query("SELECT pg_sleep(20)"));
        std::thread::sleep(Duration::from_millis(300));
        let mut cancel = 16u32.to_be_bytes().to_vec();
        cancel.extend_from_slice(&80_877_102u32.to_be_bytes());
        cancel.extend_from_slice(&key.body[..8]);
        let mut to_b = std::net::TcpStream::connect(b_addr).unwrap();
        std::io::Write::write_all(&mut to_b, &cancel).unwrap();
        drop(to_b);
        let msgs = client.until_ready();
        let error = msgs
            .iter()
            .find(|m| m.tag == b'E')
            .expect("the query was cancelled");
        assert_eq!(error.sqlstate().as_deref(), Some("57014"));
    })
    .await
    .unwrap();
    b.shutdown().await;
    a.shutdown().await;
}
