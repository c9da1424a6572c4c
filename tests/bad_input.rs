//! Bad input answered the way PostgreSQL answers it: unknown database or user, wrong password,
//! malformed or oversized packets (startup packets of a bad length: closed, no answer), stalled logins, SSL/GSS requests, stuffed bytes, and slow
//! clients that must not hold up anyone else.

mod common;

use common::wire::{frame, query, startup_packet, RawClient};
use common::*;
use std::io::{Read, Write};
use std::time::{Duration, Instant};
use tidepool::config::Config;

async fn proxy_with(extra_proxy: &str, pool_size: usize) -> tidepool::app::Proxy {
    let toml = base_config_toml(tokio::task::block_in_place(pg))
        .replace("[proxy]\n", &format!("[proxy]\n{extra_proxy}\n"))
        .replace(
            "default_pool_size = 10",
            &format!("default_pool_size = {pool_size}"),
        );
    start_proxy(Config::from_toml(&toml).unwrap()).await
}

/// Reads until the server closes; returns the messages received.
fn drain(c: &mut RawClient) -> Vec<common::wire::Msg> {
    let mut out = Vec::new();
    while let Some(m) = c.recv() {
        out.push(m);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_database_is_3d000_after_authentication() {
    let proxy = proxy_with("", 2).await;
    let err = try_connect(proxy.local_addr(), APP_USER, APP_PASSWORD, "nope")
        .await
        .unwrap_err();
    let db = err.as_db_error().expect("ErrorResponse");
    assert_eq!(db.code().code(), "3D000");
    assert_eq!(db.message(), "database \"nope\" does not exist");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_and_unknown_user_are_28p01_with_postgres_text() {
    let proxy = proxy_with("", 2).await;
    let addr = proxy.local_addr();
    for (user, password) in [(APP_USER, "wrong"), ("nobody", "whatever")] {
        let err = try_connect(addr, user, password, APP_DB).await.unwrap_err();
        let db = err.as_db_error().unwrap_or_else(|| panic!("{user}: {err}"));
        assert_eq!(db.code().code(), "28P01");
        assert_eq!(
            db.message(),
            format!("password authentication failed for user \"{user}\"")
        );
    }
    // psql sees the same.
    let out = tokio::task::spawn_blocking(move || {
        psql_cmd_with_password(addr, APP_USER, "wrong", APP_DB)
            .args(["-c", "SELECT 1"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("password authentication failed for user \"app\""));
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_packets_get_08p01_and_close() {
    let proxy = proxy_with("max_message_size = \"64kB\"", 2).await;
    let addr = proxy.local_addr();
    tokio::task::spawn_blocking(move || {
        // A startup packet whose length is below the minimum, or claiming to be huge: closed
        // without an answer, as PostgreSQL does (tests/fidelity_startup.rs compares the two).
        let mut c = RawClient::connect(addr);
        c.send(&[0, 0, 0, 3, 0, 3, 0, 0]);
        let msgs = drain(&mut c);
        assert!(msgs.is_empty(), "{msgs:?}");
        let mut c = RawClient::connect(addr);
        c.send(&[0x7f, 0, 0, 0, 0, 3, 0, 0]);
        assert!(drain(&mut c).is_empty());

        // Protocol 2.0: refused as PostgreSQL refuses it, in protocol 2.0's error format.
        let mut c = RawClient::connect(addr);
        let mut packet = startup_packet(&[("user", APP_USER)]);
        packet[4..8].copy_from_slice(&0x0002_0000u32.to_be_bytes());
        c.send(&packet);
        let mut answer = Vec::new();
        let _ = c.stream.read_to_end(&mut answer);
        assert!(
            answer.starts_with(b"EFATAL:  unsupported frontend protocol 2.0"),
            "{:?}",
            String::from_utf8_lossy(&answer)
        );

        // After login: a frame whose length field is below 4.
        let (mut c, _) = RawClient::login(addr, APP_USER, APP_PASSWORD, APP_DB);
        c.send(&[b'Q', 0, 0, 0, 2]);
        let msgs = drain(&mut c);
        assert_eq!(
            msgs.last().unwrap().sqlstate().as_deref(),
            Some("08P01"),
            "{msgs:?}"
        );

        // After login: a frame over max_message_size.
        let (mut c, _) = RawClient::login(addr, APP_USER, APP_PASSWORD, APP_DB);
        c.send(&frame(b'Q', &vec![b'x'; 100_000]));
        let msgs = drain(&mut c);
        assert_eq!(
            msgs.last().unwrap().sqlstate().as_deref(),
            Some("08P01"),
            "{msgs:?}"
        );

        // The proxy still serves others.
        let (mut c, _) = RawClient::login(addr, APP_USER, APP_PASSWORD, APP_DB);
        c.send(&query("SELECT 1"));
        assert_eq!(c.until_ready()[1].first_value().as_deref(), Some("1"));
    })
    .await
    .unwrap();
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_finishes_startup_is_dropped_after_client_login_timeout() {
    let proxy = proxy_with("client_login_timeout = \"1s\"", 2).await;
    let addr = proxy.local_addr();
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let mut c = RawClient::connect(addr);
        c.send(&[0, 0]); // half a length word, then silence
        let mut buf = [0u8; 64];
        let n = c.stream.read(&mut buf).unwrap_or(0);
        assert_eq!(n, 0, "closed without a reply");
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(900) && waited < Duration::from_secs(10),
            "{waited:?}"
        );
    })
    .await
    .unwrap();
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssl_and_gss_requests_are_declined_and_stuffed_bytes_refused() {
    let proxy = proxy_with("", 2).await;
    let addr = proxy.local_addr();
    tokio::task::spawn_blocking(move || {
        let ssl_request = [0, 0, 0, 8, 4, 210, 22, 47];
        let gss_request = [0, 0, 0, 8, 4, 210, 22, 48];
        let mut c = RawClient::connect(addr);
        c.send(&gss_request);
        assert_eq!(c.recv_byte(), Some(b'N'));
        c.send(&ssl_request);
        assert_eq!(c.recv_byte(), Some(b'N'));
        // Login continues in the clear.
        c.send(&startup_packet(&[("user", APP_USER), ("database", APP_DB)]));
        let m = c.recv().unwrap();
        assert_eq!(m.tag, b'R', "authentication request follows");

        // SSLRequest with a query stuffed behind it in the same write: the connection is closed
        // without interpreting the stuffed bytes.
        let mut c = RawClient::connect(addr);
        let mut stuffed = ssl_request.to_vec();
        stuffed.extend(startup_packet(&[("user", APP_USER), ("database", APP_DB)]));
        c.stream.write_all(&stuffed).unwrap();
        let mut buf = [0u8; 16];
        let n = c.stream.read(&mut buf).unwrap_or(0);
        assert_eq!(n, 0, "got {:?} instead of a close", &buf[..n]);
    })
    .await
    .unwrap();
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn newer_protocol_minor_gets_negotiate_protocol_version() {
    let proxy = proxy_with("", 2).await;
    let addr = proxy.local_addr();
    tokio::task::spawn_blocking(move || {
        let mut c = RawClient::connect(addr);
        let mut packet = startup_packet(&[("user", APP_USER), ("database", APP_DB), ("_pq_.future", "1")]);
        packet[4..8].copy_from_slice(&0x0003_0002u32.to_be_bytes());
        c.send(&packet);
        let m = c.recv().unwrap();
        assert_eq!(m.tag, b'v');
        assert_eq!(&m.body[..4], &0x0003_0000u32.to_be_bytes());
        assert_eq!(&m.body[4..8], &1u32.to_be_bytes());
        assert_eq!(&m.body[8..], b"_pq_.future\0");
        assert_eq!(c.recv().unwrap().tag, b'R');
    })
    .await
    .unwrap();
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_and_slow_clients_never_delay_others() {
    // Pool of one: a client that stalls half-way through a message must not hold the backend.
    let proxy = proxy_with("", 1).await;
    let addr = proxy.local_addr();
    tokio::task::spawn_blocking(move || {
        let (mut stalled, _) = RawClient::login(addr, APP_USER, APP_PASSWORD, APP_DB);
        stalled.send(&query("SELECT 1")[..4]);
        let (mut other, _) = RawClient::login(addr, APP_USER, APP_PASSWORD, APP_DB);
        for i in 0..20 {
            other.send(&query(&format!("SELECT {i}")));
            assert_eq!(other.until_ready()[1].first_value(), Some(i.to_string()));
        }
        // Finishing the message later works.
        stalled.send(&query("SELECT 1")[4..]);
        assert_eq!(stalled.until_ready()[1].first_value().as_deref(), Some("1"));
    })
    .await
    .unwrap();
    proxy.shutdown().await;

    // Pool of two: a client that stops reading a large result holds only its own backend.
    let proxy = proxy_with("", 2).await;
    let addr = proxy.local_addr();
    tokio::task::spawn_blocking(move || {
        let (mut reader_gone, _) = RawClient::login(addr, APP_USER, APP_PASSWORD, APP_DB);
        reader_gone.send(&query("SELECT repeat('x', 1000) FROM generate_series(1, 200000)"));
        std::thread::sleep(Duration::from_millis(300));
        let (mut other, _) = RawClient::login(addr, APP_USER, APP_PASSWORD, APP_DB);
        for i in 0..20 {
            other.send(&query(&format!("SELECT {i}")));
            assert_eq!(other.until_ready()[1].first_value(), Some(i.to_string()));
        }
        drop(reader_gone);
    })
    .await
    .unwrap();
    proxy.shutdown().await;
}
