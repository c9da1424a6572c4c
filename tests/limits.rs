//! Backend connection caps across pools against real PostgreSQL: `max_db_connections` and
//! `max_user_connections` make clients wait for a place (PgBouncer's semantics), idle
//! connections of other pools make room, the console reports the caps, and a reload changes
//! them.

mod common;

use common::console::{show, until, ADMIN};
use common::{base_config_toml, connect, pg, APP_DB, APP_PASSWORD, APP_USER, MD5_PASSWORD, MD5_USER};
use std::time::Duration;
use tidepool::config::Config;

/// The tests count the server's backends of one user: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn caps_toml(pool: &str) -> String {
    base_config_toml(pg())
        .replace("pool_mode = \"transaction\"\n", "pool_mode = \"transaction\"\nadmin_users = [\"admin\"]\n")
        .replace("[pool]\n", &format!("[pool]\n{pool}\n"))
        + &format!(
            "\n[[users]]\nname = \"admin\"\npassword = \"admin-secret\"\n\n[[users]]\nname = \"{MD5_USER}\"\npassword = \"{MD5_PASSWORD}\"\n"
        )
}

/// Backends of `database` PostgreSQL has for `user` right now.
fn server_backends(user: &str) -> usize {
    let sql =
        format!("SELECT count(*) FROM pg_stat_activity WHERE datname = '{APP_DB}' AND usename = '{user}'");
    pg().psql("postgres", &sql).unwrap().trim().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_db_connections_makes_clients_wait_and_other_pools_make_room() {
    let _serial = SERIAL.lock().await;
    let config = Config::from_toml(&caps_toml("max_db_connections = 2")).expect("valid");
    let proxy = common::start_proxy(config).await;
    let addr = proxy.local_addr();
    let console = connect(addr, ADMIN.0, "admin-secret", "tidepool").await;

    // Logins take a backend for a moment too: all three log in first.
    let a = connect(addr, APP_USER, APP_PASSWORD, APP_DB).await;
    let b = connect(addr, APP_USER, APP_PASSWORD, APP_DB).await;
    let c = connect(addr, APP_USER, APP_PASSWORD, APP_DB).await;
    // Two clients inside transactions hold the database's two places.
    a.batch_execute("BEGIN; SELECT 1").await.unwrap();
    b.batch_execute("BEGIN; SELECT 1").await.unwrap();
    let databases = show(&console, "SHOW DATABASES").await;
    let row = databases.rows_where("name", APP_DB);
    assert_eq!(databases.get(row[0], "max_connections"), Some("2"));
    assert_eq!(databases.get(row[0], "current_connections"), Some("2"));

    // A third waits, although its pool (size 10) has room.
    let third = tokio::spawn(async move { c.simple_query("SELECT 3").await.map(|_| c) });
    until(&console, "SHOW POOLS", |t| {
        t.rows_where("database", APP_DB)
            .iter()
            .any(|r| t.get(r, "cl_waiting") == Some("1"))
    })
    .await;
    assert!(!third.is_finished());
    assert_eq!(server_backends(APP_USER), 2);
    // A place freed goes to it.
    a.batch_execute("COMMIT").await.unwrap();
    let c = third.await.unwrap().expect("the waiting client got a backend");
    b.batch_execute("COMMIT").await.unwrap();
    assert!(server_backends(APP_USER) <= 2);

    // Another user's pool of the same database: the app pool's idle connections hold both
    // places, so one of them is closed to make room.
    let other = connect(addr, MD5_USER, MD5_PASSWORD, APP_DB).await;
    let who = other.simple_query("SELECT current_user").await.unwrap();
    assert_eq!(common::first_value(&who), MD5_USER);
    assert!(server_backends(APP_USER) + server_backends(MD5_USER) <= 2);
    drop((a, b, c, other));
    proxy.shutdown_within(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_user_connections_times_out_like_a_full_pool_and_reloads() {
    let _serial = SERIAL.lock().await;
    let toml = caps_toml("max_user_connections = 1\nquery_wait_timeout = \"1s\"");
    let proxy = common::start_proxy(Config::from_toml(&toml).expect("valid")).await;
    let addr = proxy.local_addr();
    let console = connect(addr, ADMIN.0, "admin-secret", "tidepool").await;
    let users = show(&console, "SHOW USERS").await;
    let row = users.rows_where("name", APP_USER);
    assert_eq!(users.get(row[0], "max_user_connections"), Some("1"));

    let a = connect(addr, APP_USER, APP_PASSWORD, APP_DB).await;
    let b = connect(addr, APP_USER, APP_PASSWORD, APP_DB).await;
    a.batch_execute("BEGIN; SELECT 1").await.unwrap();
    let error = b
        .simple_query("SELECT 2")
        .await
        .expect_err("no place within query_wait_timeout");
    let message = error.as_db_error().map(|e| e.message().to_string());
    assert_eq!(message.as_deref(), Some("query_wait_timeout"), "{error:?}");
    assert_eq!(server_backends(APP_USER), 1);

    // Reloaded to 2: the next request gets its own backend while `a` still holds one.
    let raised =
        Config::from_toml(&toml.replace("max_user_connections = 1", "max_user_connections = 2")).unwrap();
    tidepool::reload::apply(proxy.shared(), raised)
        .await
        .expect("reload");
    let b = connect(addr, APP_USER, APP_PASSWORD, APP_DB).await;
    b.simple_query("SELECT 2").await.expect("room after the reload");
    let users = show(&console, "SHOW USERS").await;
    let row = users.rows_where("name", APP_USER);
    assert_eq!(users.get(row[0], "max_user_connections"), Some("2"));
    a.batch_execute("COMMIT").await.unwrap();
    proxy.shutdown_within(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_server_login_is_answered_from_cache_for_server_login_retry() {
    let _serial = SERIAL.lock().await;
    pg().psql("postgres", "DROP DATABASE IF EXISTS login_retry_db")
        .unwrap();
    let toml =
        caps_toml("server_login_retry = \"1h\"") + "\n[databases.later]\ndbname = \"login_retry_db\"\n";
    let proxy = common::start_proxy(Config::from_toml(&toml).expect("valid")).await;
    let addr = proxy.local_addr();
    let refused = |result: Result<tokio_postgres::Client, tokio_postgres::Error>| {
        let Err(error) = result else {
            panic!("the login was accepted");
        };
        let db = error.as_db_error().expect("a server error").clone();
        (db.code().code().to_string(), db.message().to_string())
    };
    let first = common::try_connect(addr, APP_USER, APP_PASSWORD, "later").await;
    let (code, message) = refused(first);
    assert_eq!(code, "3D000");
    assert!(!message.contains("server_login_retry"), "{message}");

    // The database exists now, but the refusal is still being served from cache.
    pg().psql("postgres", "CREATE DATABASE login_retry_db OWNER app")
        .unwrap();
    let second = common::try_connect(addr, APP_USER, APP_PASSWORD, "later").await;
    let (code, message) = refused(second);
    assert_eq!(code, "3D000");
    assert!(message.contains("server_login_retry"), "{message}");

    // server_login_retry = 0 (reloaded) turns the cache off: the login goes through.
    let off = Config::from_toml(&toml.replace("server_login_retry = \"1h\"", "server_login_retry = \"0s\""))
        .unwrap();
    tidepool::reload::apply(proxy.shared(), off)
        .await
        .expect("reload");
    let third = connect(addr, APP_USER, APP_PASSWORD, "later").await;
    let db = third.simple_query("SELECT current_database()").await.unwrap();
    assert_eq!(common::first_value(&db), "login_retry_db");
    drop(third);
    proxy.shutdown_within(Duration::from_secs(5)).await;
}
