//! Signals as PgBouncer 1.23+ defines them, on the real binary: SIGTERM stops accepting and
//! serves connected clients until they leave (or, with `sigterm_timeout`, until that runs out);
//! a second SIGTERM is an immediate (fast) stop; SIGUSR1 pauses and SIGUSR2 resumes; SIGPIPE
//! is ignored. None of them kills tidepool. (SIGINT, SIGQUIT and the handover: `tests/shutdown.rs`.)

mod common;

use common::process::{runtime, Tidepool};
use common::wire::{query, RawClient};
use common::*;
use std::path::{Path, PathBuf};
use std::time::Duration;

const ADMIN: (&str, &str) = ("admin", "admin-secret");

/// The harness config with JSON logs, an admin user and `extra` proxy keys.
fn config_file(dir: &Path, extra: &str) -> PathBuf {
    let text = base_config_toml(pg()).replace(
        "listen = \"127.0.0.1:0\"\n",
        &format!("listen = \"127.0.0.1:0\"\nlog_format = \"json\"\nadmin_users = [\"admin\"]\n{extra}\n"),
    ) + "\n[[users]]\nname = \"admin\"\npassword = \"admin-secret\"\n";
    let path = dir.join("pool.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Reads until the server says something; asserts it is PostgreSQL's FATAL 57P01.
fn expect_admin_shutdown(client: &mut RawClient) {
    let msg = client.recv().expect("a message before the connection closes");
    assert_eq!(msg.tag, b'E', "{msg:?}");
    assert_eq!(msg.severity().as_deref(), Some("FATAL"));
    assert_eq!(msg.sqlstate().as_deref(), Some("57P01"));
}

#[test]
fn sigterm_stops_accepting_and_serves_clients_until_they_leave() {
    let dir = tempfile::tempdir().unwrap();
    // shutdown_timeout is short: only waiting for the clients, not that, keeps it running.
    let mut tidepool = Tidepool::start(&config_file(dir.path(), "shutdown_timeout = \"1s\""));
    let addr = tidepool.addr();
    let rt = runtime();
    let client = rt.block_on(connect(addr, APP_USER, APP_PASSWORD, APP_DB));

    tidepool.signal("TERM");
    tidepool.wait_for_line("listener closed");
    assert!(std::net::TcpStream::connect(addr).is_err(), "still accepting");
    rt.block_on(async {
        // Served as usual, transactions included, well past shutdown_timeout.
        for i in 0..3 {
            client.simple_query("BEGIN").await.unwrap();
            let rows = client.simple_query(&format!("SELECT {i}")).await.unwrap();
            assert_eq!(first_value(&rows), i.to_string());
            client.simple_query("COMMIT").await.unwrap();
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    assert!(
        tidepool.child.try_wait().unwrap().is_none(),
        "exited with a client connected"
    );
    drop(client);
    let status = tidepool.wait_exit();
    assert!(status.success(), "{status}");
    tidepool.wait_for_line("every client has disconnected");
}

#[test]
fn sigterm_timeout_closes_the_remaining_clients_at_their_next_idle_point() {
    let dir = tempfile::tempdir().unwrap();
    let extra = "sigterm_timeout = \"1s\"\nshutdown_timeout = \"60s\"";
    let mut tidepool = Tidepool::start(&config_file(dir.path(), extra));
    let addr = tidepool.addr();
    let (mut idle, _) = RawClient::login(addr, APP_USER, APP_PASSWORD, APP_DB);
    assert_eq!(idle.value("SELECT 1"), "1");

    tidepool.signal("TERM");
    tidepool.wait_for_line("waiting for every client to disconnect");
    // Nothing but the deadline closes it: it sends nothing and shutdown_timeout is a minute.
    expect_admin_shutdown(&mut idle);
    tidepool.wait_for_line("sigterm_timeout over");
    let status = tidepool.wait_exit();
    assert!(status.success(), "{status}");
}

#[test]
fn a_second_sigterm_is_an_immediate_stop() {
    let dir = tempfile::tempdir().unwrap();
    let mut tidepool = Tidepool::start(&config_file(dir.path(), "shutdown_timeout = \"60s\""));
    let addr = tidepool.addr();
    let (mut in_transaction, _) = RawClient::login(addr, APP_USER, APP_PASSWORD, APP_DB);
    in_transaction.send(&query("BEGIN"));
    in_transaction.until_ready();

    tidepool.signal("TERM");
    tidepool.wait_for_line("waiting for every client to disconnect");
    // Still served during the drain.
    assert_eq!(in_transaction.value("SELECT 2"), "2");
    tidepool.signal("TERM");
    // Fast: closed although inside a transaction.
    expect_admin_shutdown(&mut in_transaction);
    let status = tidepool.wait_exit();
    assert!(status.success(), "{status}");
}

/// Polls SHOW STATE until `paused` is `value`.
async fn until_paused(console: &tokio_postgres::Client, value: &str) {
    for _ in 0..1000 {
        let rows = console.simple_query("SHOW STATE").await.unwrap();
        let paused = rows.iter().find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) if r.get("key") == Some("paused") => {
                r.get("value").map(str::to_string)
            }
            _ => None,
        });
        if paused.as_deref() == Some(value) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("SHOW STATE never said paused = {value}");
}

#[test]
fn sigusr1_pauses_and_sigusr2_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let tidepool = Tidepool::start(&config_file(dir.path(), ""));
    let addr = tidepool.addr();
    let rt = runtime();
    let (app, console) = rt.block_on(async {
        let app = connect(addr, APP_USER, APP_PASSWORD, APP_DB).await;
        assert_eq!(first_value(&app.simple_query("SELECT 1").await.unwrap()), "1");
        (app, connect(addr, ADMIN.0, ADMIN.1, "tidepool").await)
    });

    tidepool.signal("USR1");
    rt.block_on(until_paused(&console, "yes"));
    let held = rt.spawn(async move {
        let rows = app.simple_query("SELECT 2").await.unwrap();
        first_value(&rows)
    });
    // Held while paused: the pool shows it waiting.
    rt.block_on(async {
        for _ in 0..1000 {
            let rows = console.simple_query("SHOW POOLS").await.unwrap();
            let waiting = rows.iter().any(|m| {
                matches!(m, tokio_postgres::SimpleQueryMessage::Row(r)
                    if r.get("database") == Some(APP_DB) && r.get("cl_waiting") == Some("1"))
            });
            if waiting {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the query was not held by SIGUSR1's pause");
    });
    assert!(!held.is_finished(), "answered while paused");

    tidepool.signal("USR2");
    rt.block_on(async {
        assert_eq!(held.await.unwrap(), "2");
        until_paused(&console, "no").await;
    });
    tidepool.wait_for_line("SIGUSR1");
    tidepool.wait_for_line("SIGUSR2");

    // SIGPIPE, which PgBouncer ignores, does not kill tidepool either.
    tidepool.signal("PIPE");
    rt.block_on(async {
        assert_eq!(
            first_value(&console.simple_query("SHOW VERSION").await.unwrap())
                .split(' ')
                .next(),
            Some("tidepool")
        );
    });
    let mut tidepool = tidepool;
    assert!(tidepool.child.try_wait().unwrap().is_none(), "SIGPIPE killed it");
}
