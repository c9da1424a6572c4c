//! Shutdown and binary upgrade, on the real binary: SIGINT lets transactions in flight finish
//! and exits 0; SIGQUIT also closes clients idle inside a transaction; `shutdown_timeout` and a
//! signal during a fast stop bound the wait (SIGTERM's drain: `tests/signals.rs`); an old and a new tidepool hand a port over (SO_REUSEPORT)
//! without a client seeing a refused connection, even for connections queued in the old
//! listener's backlog.

mod common;

use common::process::{runtime, Tidepool};
use common::wire::{query, RawClient};
use common::*;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A config file for the binary: the harness config, JSON logs, and `extra` proxy keys.
fn config_file(dir: &Path, name: &str, listen: &str, extra: &str) -> PathBuf {
    let text = base_config_toml(pg()).replace(
        "listen = \"127.0.0.1:0\"\n",
        &format!("listen = \"{listen}\"\nlog_format = \"json\"\n{extra}\n"),
    );
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// Reads until the server says something; asserts it is PostgreSQL's FATAL 57P01.
fn expect_admin_shutdown(client: &mut RawClient) {
    let msg = client.recv().expect("a message before the connection closes");
    assert_eq!(msg.tag, b'E', "{msg:?}");
    assert_eq!(msg.severity().as_deref(), Some("FATAL"));
    assert_eq!(msg.sqlstate().as_deref(), Some("57P01"));
    assert_eq!(
        msg.message().as_deref(),
        Some("terminating connection due to administrator command")
    );
    assert!(client.recv().is_none(), "closed after the FATAL");
}

/// Waits until PostgreSQL runs a statement starting with `prefix` (asked directly, as postgres).
fn wait_until_running(prefix: &str) {
    let sql =
        format!("SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE '{prefix}%'");
    for _ in 0..500 {
        if pg().psql("postgres", &sql).unwrap().trim() != "0" {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{prefix} never started");
}

#[test]
fn sigint_lets_transactions_in_flight_finish_then_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let mut tidepool = Tidepool::start(&config_file(
        dir.path(),
        "a.toml",
        "127.0.0.1:0",
        "shutdown_timeout = \"60s\"",
    ));
    let addr = tidepool.addr();
    let rt = runtime();

    let (in_transaction, running) = rt.block_on(async {
        let in_transaction = connect(addr, APP_USER, APP_PASSWORD, APP_DB).await;
        in_transaction.simple_query("BEGIN").await.unwrap();
        in_transaction
            .simple_query("CREATE TEMP TABLE t (x int)")
            .await
            .unwrap();
        let running = connect(addr, APP_USER, APP_PASSWORD, APP_DB).await;
        let sleeping = tokio::spawn(async move {
            let rows = running.simple_query("SELECT pg_sleep(3), 'slept'").await;
            rows.map(|r| {
                r.iter().find_map(|m| match m {
                    tokio_postgres::SimpleQueryMessage::Row(row) => row.get(1).map(str::to_string),
                    _ => None,
                })
            })
        });
        (in_transaction, sleeping)
    });
    let (mut idle, _) = RawClient::login(addr, APP_USER, APP_PASSWORD, APP_DB);
    wait_until_running("SELECT pg_sleep(3)");

    tidepool.signal("INT");
    // The idle client is told at once, as PostgreSQL would tell it.
    expect_admin_shutdown(&mut idle);
    // No new client gets in once the listener is closed.
    tidepool.wait_for_line("listener closed");
    assert!(std::net::TcpStream::connect(addr).is_err(), "still accepting");

    rt.block_on(async {
        // The open transaction goes on and commits.
        in_transaction
            .simple_query("INSERT INTO t VALUES (1)")
            .await
            .unwrap();
        let rows = in_transaction
            .simple_query("SELECT count(*) FROM t")
            .await
            .unwrap();
        assert_eq!(first_value(&rows), "1");
        assert!(
            tidepool.child.try_wait().unwrap().is_none(),
            "exited with a transaction open"
        );
        in_transaction.simple_query("COMMIT").await.unwrap();
        // The statement that was running finished with its result.
        let slept = running.await.unwrap().expect("pg_sleep completed");
        assert_eq!(slept.as_deref(), Some("slept"));
    });

    let status = tidepool.wait_exit();
    assert!(status.success(), "{status}");
    let lines = tidepool.lines();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("client disconnected") && l.contains("shutting down")),
        "{lines:#?}"
    );
}

#[test]
fn sigquit_also_closes_clients_idle_inside_a_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let mut tidepool = Tidepool::start(&config_file(
        dir.path(),
        "a.toml",
        "127.0.0.1:0",
        "shutdown_timeout = \"60s\"",
    ));
    let addr = tidepool.addr();
    let rt = runtime();

    let (mut in_transaction, _) = RawClient::login(addr, APP_USER, APP_PASSWORD, APP_DB);
    in_transaction.send(&query("BEGIN"));
    let answer = in_transaction.until_ready();
    assert_eq!(answer.last().map(|m| m.body.clone()), Some(b"T".to_vec()));
    let client = rt.block_on(connect(addr, APP_USER, APP_PASSWORD, APP_DB));
    let running = rt.spawn(async move { client.simple_query("SELECT pg_sleep(3)").await.map(|_| ()) });
    wait_until_running("SELECT pg_sleep(3)");

    tidepool.signal("QUIT");
    // Idle inside its transaction: closed now (SIGINT would wait for its COMMIT).
    expect_admin_shutdown(&mut in_transaction);
    // A running request still finishes.
    rt.block_on(async { running.await.unwrap().expect("the running query finished") });
    let status = tidepool.wait_exit();
    assert!(status.success(), "{status}");
}

#[test]
fn shutdown_timeout_and_a_signal_during_a_fast_stop_bound_the_wait() {
    let dir = tempfile::tempdir().unwrap();
    let (mut in_transaction, mut tidepool);

    // shutdown_timeout: a client that never commits does not keep the process alive.
    tidepool = Tidepool::start(&config_file(
        dir.path(),
        "a.toml",
        "127.0.0.1:0",
        "shutdown_timeout = \"1s\"",
    ));
    (in_transaction, _) = RawClient::login(tidepool.addr(), APP_USER, APP_PASSWORD, APP_DB);
    in_transaction.send(&query("BEGIN"));
    in_transaction.until_ready();
    tidepool.signal("INT");
    let status = tidepool.wait_exit();
    assert!(status.success(), "{status}");
    assert!(in_transaction.recv().is_none(), "the connection is closed");

    // SIGINT again is PgBouncer's immediate stop (tidepool's fast one, which still waits for a
    // running statement); a signal during it exits at once, with a failure status.
    tidepool = Tidepool::start(&config_file(
        dir.path(),
        "b.toml",
        "127.0.0.1:0",
        "shutdown_timeout = \"600s\"",
    ));
    let (mut running, _) = RawClient::login(tidepool.addr(), APP_USER, APP_PASSWORD, APP_DB);
    running.send(&query("SELECT pg_sleep(20)"));
    wait_until_running("SELECT pg_sleep(20)");
    tidepool.signal("INT");
    tidepool.wait_for_line("stopping");
    tidepool.signal("INT");
    tidepool.wait_for_line("\"stage\":\"Fast\"");
    assert!(
        tidepool.child.try_wait().unwrap().is_none(),
        "fast waits for the statement"
    );
    tidepool.signal("TERM");
    let status = tidepool.wait_exit();
    assert_eq!(status.code(), Some(1), "{status}");
    tidepool.wait_for_line("second stop signal");
}

/// What the connecting loops saw.
#[derive(Default)]
struct LoopStats {
    ok: AtomicUsize,
    errors: Mutex<Vec<String>>,
}

/// Connects, runs SELECT 1, disconnects, until `stop`.
async fn connect_loop(addr: SocketAddr, stats: Arc<LoopStats>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        let result = async {
            let client = try_connect(addr, APP_USER, APP_PASSWORD, APP_DB).await?;
            let rows = client.simple_query("SELECT 1").await?;
            Ok::<_, tokio_postgres::Error>(first_value(&rows))
        }
        .await;
        match result {
            Ok(one) if one == "1" => {
                stats.ok.fetch_add(1, Ordering::Relaxed);
            }
            Ok(other) => stats
                .errors
                .lock()
                .unwrap()
                .push(format!("SELECT 1 gave {other}")),
            Err(e) => stats.errors.lock().unwrap().push(e.to_string()),
        }
    }
}

/// Waits (bounded) until the loops have succeeded `more` more times.
fn wait_for_progress(stats: &LoopStats, more: usize) {
    let target = stats.ok.load(Ordering::Relaxed) + more;
    for _ in 0..3000 {
        if stats.ok.load(Ordering::Relaxed) >= target {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("the loops stalled; errors: {:?}", stats.errors.lock().unwrap());
}

/// The upgrade procedure: start the new binary on the same port, then SIGTERM the old one.
/// Clients connect continuously throughout. To make losing the old listener's backlog likely
/// to show, the old process is stopped (SIGSTOP) while connections pile up in its backlog and
/// gets SIGTERM before it can accept them: each must still be served. (Whether the old process
/// sees the SIGTERM before it accepts them is up to its scheduler; the in-process test below
/// makes that case certain.)
#[test]
fn reuseport_handover_loses_no_connection_attempt() {
    let dir = tempfile::tempdir().unwrap();
    let extra = "shutdown_timeout = \"60s\"\nlog_connections = true";
    let mut old = Tidepool::start(&config_file(dir.path(), "old.toml", "127.0.0.1:0", extra));
    let addr = old.addr();
    let rt = runtime();
    let stats = Arc::new(LoopStats::default());
    let stop = Arc::new(AtomicBool::new(false));
    let loops: Vec<_> = (0..4)
        .map(|_| rt.spawn(connect_loop(addr, stats.clone(), stop.clone())))
        .collect();
    wait_for_progress(&stats, 20);

    let mut new = Tidepool::start(&config_file(dir.path(), "new.toml", &addr.to_string(), extra));
    assert_eq!(new.addr(), addr);
    // Both serve now.
    for _ in 0..1500 {
        if new.count("client connected") >= 5 {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        new.count("client connected") >= 5,
        "the new process serves nobody"
    );

    // Connections complete their handshake in the kernel, in whichever listener's backlog the
    // kernel picks, while the old process cannot accept.
    old.signal("STOP");
    let queued: Vec<_> = rt.block_on(async {
        let mut streams = Vec::new();
        for _ in 0..400 {
            streams.push(tokio::net::TcpStream::connect(addr).await.expect("handshake"));
        }
        streams
    });
    old.signal("TERM");
    old.signal("CONT");

    // Every queued connection gets a full login and an answer.
    rt.block_on(async {
        let mut answers = Vec::new();
        for stream in queued {
            answers.push(tokio::spawn(async move {
                let (client, connection) = tokio_postgres::Config::new()
                    .user(APP_USER)
                    .password(APP_PASSWORD)
                    .dbname(APP_DB)
                    .connect_raw(stream, tokio_postgres::NoTls)
                    .await?;
                tokio::spawn(async move {
                    let _ = connection.await;
                });
                let rows = client.simple_query("SELECT 1").await?;
                Ok::<_, tokio_postgres::Error>(first_value(&rows))
            }));
        }
        for answer in answers {
            let one = answer.await.unwrap().expect("a queued connection was served");
            assert_eq!(one, "1");
        }
    });

    let status = old.wait_exit();
    assert!(status.success(), "{status}");
    old.wait_for_line("listener closed");

    // The new process alone serves on.
    wait_for_progress(&stats, 20);
    stop.store(true, Ordering::Relaxed);
    rt.block_on(async {
        for l in loops {
            l.await.unwrap();
        }
    });
    let errors = stats.errors.lock().unwrap();
    assert!(
        errors.is_empty(),
        "clients saw errors during the handover: {errors:?}"
    );
    new.signal("TERM");
    assert!(new.wait_exit().success());
}

/// The backlog case made certain: on a single-threaded runtime the proxy cannot accept while
/// the test does not yield, so connections queue in the kernel's backlog, then the shutdown
/// starts before the accept loop runs again. Dropping the listener at that point would reset
/// them; each must instead be logged in and answered.
#[tokio::test(flavor = "current_thread")]
async fn connections_in_the_backlog_at_shutdown_are_served() {
    // Blocking here is fine: nothing else runs on this runtime yet.
    let proxy = start_proxy(base_config(pg())).await;
    let addr = proxy.local_addr();
    let queued: Vec<_> = (0..10)
        .map(|_| std::net::TcpStream::connect(addr).expect("the kernel completes the handshake"))
        .collect();
    proxy.shared().shutdown.trigger();

    let mut answers = Vec::new();
    for stream in queued {
        stream.set_nonblocking(true).unwrap();
        let stream = tokio::net::TcpStream::from_std(stream).unwrap();
        answers.push(tokio::spawn(async move {
            let (client, connection) = tokio_postgres::Config::new()
                .user(APP_USER)
                .password(APP_PASSWORD)
                .dbname(APP_DB)
                .connect_raw(stream, tokio_postgres::NoTls)
                .await?;
            tokio::spawn(async move {
                let _ = connection.await;
            });
            let rows = client.simple_query("SELECT 1").await?;
            Ok::<_, tokio_postgres::Error>(first_value(&rows))
        }));
    }
    for answer in answers {
        let one = answer.await.unwrap().expect("a queued connection was served");
        assert_eq!(one, "1");
    }
    // And nothing new gets in.
    proxy.shutdown().await;
    assert!(std::net::TcpStream::connect(addr).is_err());
}
