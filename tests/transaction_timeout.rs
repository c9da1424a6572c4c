//! `transaction_timeout` and `query_timeout` against real PostgreSQL: a client inside one
//! transaction too long, busy or idle, in transaction or session mode, is closed with FATAL
//! 25P04 and its work is rolled back; a request running too long is cancelled (57014) and the
//! client carries on; what finishes in time is left alone.

mod common;

use common::*;
use std::time::Duration;
use tidepool::config::Config;

fn config(mode: &str) -> Config {
    let toml = base_config_toml(pg()).replace(
        "pool_mode = \"transaction\"",
        &format!("pool_mode = \"{mode}\"\ntransaction_timeout = \"1s\""),
    );
    Config::from_toml(&toml).expect("valid")
}

/// The code and message of the error that ended `result`.
fn server_error<T>(result: Result<T, tokio_postgres::Error>) -> (String, String) {
    let Err(error) = result else {
        panic!("the statement was not interrupted");
    };
    let db = error
        .as_db_error()
        .unwrap_or_else(|| panic!("not a server error: {error:?}"));
    (db.code().code().to_string(), db.message().to_string())
}

async fn table(name: &str) {
    let sql =
        format!("DROP TABLE IF EXISTS {name}; CREATE TABLE {name} (v int); ALTER TABLE {name} OWNER TO app;");
    tokio::task::spawn_blocking(move || pg().psql(APP_DB, &sql).unwrap())
        .await
        .unwrap();
}

fn rows(name: &str) -> String {
    pg().psql(APP_DB, &format!("SELECT count(*) FROM {name}"))
        .unwrap()
        .trim()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_transaction_is_closed_with_25p04_and_rolled_back() {
    for mode in ["transaction", "session"] {
        let name = format!("tx_timeout_{mode}");
        table(&name).await;
        let proxy = start_proxy(config(mode)).await;
        let addr = proxy.local_addr();

        // Short transactions are not affected.
        let quick = connect(addr, APP_USER, APP_PASSWORD, APP_DB).await;
        for _ in 0..3 {
            (quick.batch_execute(&format!("BEGIN; INSERT INTO {name} VALUES (1); COMMIT")))
                .await
                .unwrap();
        }

        // Busy: a statement that would outlast the timeout by far is cut off.
        let busy = connect(addr, APP_USER, APP_PASSWORD, APP_DB).await;
        busy.batch_execute(&format!("BEGIN; INSERT INTO {name} VALUES (2)"))
            .await
            .unwrap();
        let (code, message) = server_error(busy.simple_query("SELECT pg_sleep(60)").await);
        assert_eq!(code, "25P04", "{mode}: {message}");
        assert_eq!(message, "terminating connection due to transaction timeout");
        assert!(
            busy.is_closed() || busy.simple_query("SELECT 1").await.is_err(),
            "{mode}: closed"
        );

        // Idle in the transaction: closed too; the next statement finds the connection gone.
        let idle = connect(addr, APP_USER, APP_PASSWORD, APP_DB).await;
        idle.batch_execute(&format!("BEGIN; INSERT INTO {name} VALUES (3)"))
            .await
            .unwrap();
        // Nothing is sent: tidepool closes it on its own once the transaction is too old.
        for _ in 0..300 {
            if idle.is_closed() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            idle.is_closed(),
            "{mode}: an idle transaction past the timeout is closed"
        );

        // Only the committed rows are there: both cut transactions were rolled back.
        assert_eq!(tokio::task::block_in_place(|| rows(&name)), "3", "{mode}");
        drop(quick);
        proxy.shutdown_within(Duration::from_secs(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_request_is_cancelled_with_57014_and_the_client_carries_on() {
    for mode in ["transaction", "session"] {
        let toml = base_config_toml(pg()).replace(
            "pool_mode = \"transaction\"",
            &format!("pool_mode = \"{mode}\"\nquery_timeout = \"1s\""),
        );
        let proxy = start_proxy(Config::from_toml(&toml).expect("valid")).await;
        let addr = proxy.local_addr();
        let client = connect(addr, APP_USER, APP_PASSWORD, APP_DB).await;
        client
            .simple_query("SELECT 1")
            .await
            .expect("a quick request runs");
        let (code, message) = server_error(client.simple_query("SELECT pg_sleep(60)").await);
        assert_eq!(code, "57014", "{mode}: {message}");
        // Inside a transaction too, and the connection stays usable afterwards.
        client.batch_execute("BEGIN").await.unwrap();
        let (code, _) = server_error(client.simple_query("SELECT pg_sleep(60)").await);
        assert_eq!(code, "57014", "{mode}");
        client.batch_execute("ROLLBACK").await.unwrap();
        let rows = client.simple_query("SELECT 42").await.expect("still connected");
        assert_eq!(first_value(&rows), "42");
        drop(client);
        proxy.shutdown_within(Duration::from_secs(5)).await;
    }
}
