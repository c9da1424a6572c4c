//! The console's SHUTDOWN modes on the real binary, and shutdown meeting PAUSE:
//! `WAIT_FOR_CLIENTS` keeps serving connected clients and exits when the last one leaves (or
//! when a signal asks for more); `WAIT_FOR_SERVERS` lets a transaction finish, then closes its
//! client; a client held by PAUSE is told 57P01 as soon as the shutdown starts, not when
//! `shutdown_timeout` runs out.

mod common;

use common::process::{runtime, Tidepool};
use common::*;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio_postgres::Client;

const ADMIN: (&str, &str) = ("admin", "admin-secret");

/// The harness config with JSON logs, an admin user and a long `shutdown_timeout` (so that
/// nothing here passes merely because the deadline ran out).
fn config_file(dir: &Path) -> PathBuf {
    let text = base_config_toml(pg()).replace(
        "listen = \"127.0.0.1:0\"\n",
        "listen = \"127.0.0.1:0\"\nlog_format = \"json\"\nshutdown_timeout = \"60s\"\nadmin_users = [\"admin\"]\n",
    ) + "\n[[users]]\nname = \"admin\"\npassword = \"admin-secret\"\n";
    let path = dir.join("pool.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn sqlstate(error: &tokio_postgres::Error) -> String {
    error
        .as_db_error()
        .map(|e| e.code().code().to_string())
        .unwrap_or_else(|| format!("not a server error: {error}"))
}

async fn value(client: &Client, sql: &str) -> String {
    first_value(
        &client
            .simple_query(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}")),
    )
}

/// Runs a statement that returns no rows.
async fn exec(client: &Client, sql: &str) {
    client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// Polls `SHOW POOLS` until the app database has `n` clients waiting for a server.
async fn until_waiting(console: &Client, n: usize) {
    for _ in 0..1000 {
        let rows = console.simple_query("SHOW POOLS").await.unwrap();
        let waiting = rows.iter().find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) if r.get("database") == Some(APP_DB) => {
                r.get("cl_waiting").map(str::to_string)
            }
            _ => None,
        });
        if waiting.as_deref() == Some(n.to_string().as_str()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("never {n} clients waiting");
}

#[test]
fn wait_for_clients_serves_connected_clients_and_exits_after_the_last_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut tidepool = Tidepool::start(&config_file(dir.path()));
    let addr = tidepool.addr();
    let rt = runtime();

    let (first, second, console) = rt.block_on(async {
        let first = connect(addr, APP_USER, APP_PASSWORD, APP_DB).await;
        let second = connect(addr, APP_USER, APP_PASSWORD, APP_DB).await;
        let console = connect(addr, ADMIN.0, ADMIN.1, "tidepool").await;
        exec(
            &first,
            "CREATE TABLE IF NOT EXISTS drained_by_wait_for_clients (x int)",
        )
        .await;
        console
            .simple_query("SHUTDOWN WAIT_FOR_CLIENTS")
            .await
            .expect("SHUTDOWN WAIT_FOR_CLIENTS");
        (first, second, console)
    });
    // The listener closes: a new tidepool on the port would get every new connection.
    tidepool.wait_for_line("listener closed");
    assert!(std::net::TcpStream::connect(addr).is_err(), "still accepting");

    rt.block_on(async {
        // Connected clients are served as before, new transactions included.
        exec(&first, "BEGIN").await;
        exec(&first, "INSERT INTO drained_by_wait_for_clients VALUES (1)").await;
        exec(&first, "COMMIT").await;
        assert_eq!(
            value(
                &second,
                "SELECT count(*) FROM drained_by_wait_for_clients WHERE x = 1"
            )
            .await,
            "1"
        );
        // So is the console, which does not keep the process alive by itself.
        let state = console.simple_query("SHOW STATE").await.expect("SHOW STATE");
        assert!(!state.is_empty());
        exec(&second, "DROP TABLE drained_by_wait_for_clients").await;
    });
    drop(first);
    rt.block_on(async {
        assert_eq!(value(&second, "SELECT 1").await, "1");
    });
    assert!(
        tidepool.child.try_wait().unwrap().is_none(),
        "exited while a client was still connected"
    );
    drop(second);

    let status = tidepool.wait_exit();
    assert!(status.success(), "{status}");
    tidepool.wait_for_line("every client has disconnected");
    drop(console);
}

#[test]
fn a_signal_during_wait_for_clients_closes_the_remaining_clients() {
    let dir = tempfile::tempdir().unwrap();
    let mut tidepool = Tidepool::start(&config_file(dir.path()));
    let addr = tidepool.addr();
    let rt = runtime();

    let (idle, _console) = rt.block_on(async {
        let idle = connect(addr, APP_USER, APP_PASSWORD, APP_DB).await;
        assert_eq!(value(&idle, "SELECT 1").await, "1");
        let console = connect(addr, ADMIN.0, ADMIN.1, "tidepool").await;
        console.simple_query("SHUTDOWN WAIT_FOR_CLIENTS").await.unwrap();
        (idle, console)
    });
    tidepool.wait_for_line("waiting for every client to disconnect");
    tidepool.signal("TERM");
    let status = tidepool.wait_exit();
    assert!(status.success(), "{status}");
    // The idle client was closed by the graceful stop (57P01, or the closed socket after it).
    rt.block_on(async {
        assert!(idle.simple_query("SELECT 1").await.is_err(), "still served");
    });
}

#[test]
fn wait_for_servers_lets_a_transaction_finish_then_closes_its_client() {
    let dir = tempfile::tempdir().unwrap();
    let mut tidepool = Tidepool::start(&config_file(dir.path()));
    let addr = tidepool.addr();
    let rt = runtime();

    rt.block_on(async {
        let client = connect(addr, APP_USER, APP_PASSWORD, APP_DB).await;
        exec(&client, "BEGIN").await;
        exec(&client, "CREATE TEMP TABLE t (x int)").await;
        let console = connect(addr, ADMIN.0, ADMIN.1, "tidepool").await;
        // The console that asked is closed too, after its answer.
        let _ = console.simple_query("SHUTDOWN WAIT_FOR_SERVERS").await;

        // The open transaction goes on and commits.
        exec(&client, "INSERT INTO t VALUES (1)").await;
        assert_eq!(value(&client, "SELECT count(*) FROM t").await, "1");
        exec(&client, "COMMIT").await;
        // Then the client is closed at that idle point.
        let error = client
            .simple_query("SELECT 1")
            .await
            .expect_err("closed after its transaction");
        if error.as_db_error().is_some() {
            assert_eq!(sqlstate(&error), "57P01");
        }
    });
    let status = tidepool.wait_exit();
    assert!(status.success(), "{status}");
}

#[test]
fn a_client_held_by_pause_gets_57p01_when_the_shutdown_starts() {
    let dir = tempfile::tempdir().unwrap();
    let mut tidepool = Tidepool::start(&config_file(dir.path()));
    let addr = tidepool.addr();
    let rt = runtime();

    rt.block_on(async {
        let held = connect(addr, APP_USER, APP_PASSWORD, APP_DB).await;
        // Answered once, so the shutdown owes it no first-request grace.
        assert_eq!(value(&held, "SELECT 1").await, "1");
        let console = connect(addr, ADMIN.0, ADMIN.1, "tidepool").await;
        console.simple_query("PAUSE").await.expect("PAUSE");
        let query = tokio::spawn(async move { held.simple_query("SELECT 2").await });
        until_waiting(&console, 1).await;

        // shutdown_timeout is 60s: only a prompt answer lets the process exit before it.
        let _ = console.simple_query("SHUTDOWN WAIT_FOR_SERVERS").await;
        let error = query.await.unwrap().expect_err("no server while paused");
        assert_eq!(sqlstate(&error), "57P01", "{error:?}");
        let db = error.as_db_error().unwrap();
        assert_eq!(
            db.message(),
            "terminating connection due to administrator command"
        );
        assert!(
            db.detail()
                .unwrap_or_default()
                .contains("tidepool is shutting down"),
            "{db:?}"
        );
    });
    let status = tidepool.wait_exit();
    assert!(status.success(), "{status}");
    // It exited well within shutdown_timeout, not because the deadline ran out.
    assert_eq!(
        tidepool.count("shutdown grace period over"),
        0,
        "{:#?}",
        tidepool.lines()
    );
}
