//! Pooling behaviour: backend reuse per mode, many clients on a small pool, the wait queue and
//! its timeout, the reserve pool, max_client_conn, and pgbench through the proxy.

mod common;

use common::*;
use std::collections::HashSet;
use std::time::Duration;
use tidepool::config::Config;

fn config_with(extra_pool: &str, pool_mode: &str) -> Config {
    let toml = base_config_toml(tokio::task::block_in_place(pg))
        .replace(
            "pool_mode = \"transaction\"",
            &format!("pool_mode = \"{pool_mode}\""),
        )
        .replace("default_pool_size = 10", extra_pool);
    Config::from_toml(&toml).expect("valid test config")
}

/// The backend pid serving this statement. Uses the unnamed statement (one round trip), since
/// named prepared statements across transactions are the transaction-mode issue's business.
async fn backend_pid(client: &tokio_postgres::Client) -> i32 {
    let rows = client.query_typed("SELECT pg_backend_pid()", &[]).await.unwrap();
    rows[0].get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_mode_shares_few_backends_among_many_clients() {
    let proxy = start_proxy(config_with("default_pool_size = 2", "transaction")).await;
    let addr = proxy.local_addr();
    let mut pids = HashSet::new();
    let mut clients = Vec::new();
    for _ in 0..8 {
        clients.push(connect(addr, APP_USER, APP_PASSWORD, APP_DB).await);
    }
    for _ in 0..5 {
        for c in &clients {
            pids.insert(backend_pid(c).await);
        }
    }
    assert!(
        !pids.is_empty() && pids.len() <= 2,
        "8 clients used {} backends",
        pids.len()
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_mode_keeps_one_backend_per_client_and_reuses_it_after() {
    let proxy = start_proxy(config_with("default_pool_size = 4", "session")).await;
    let addr = proxy.local_addr();
    let a = connect(addr, APP_USER, APP_PASSWORD, APP_DB).await;
    let b = connect(addr, APP_USER, APP_PASSWORD, APP_DB).await;
    let pid_a = backend_pid(&a).await;
    for _ in 0..10 {
        assert_eq!(backend_pid(&a).await, pid_a, "a session keeps its backend");
    }
    assert_ne!(backend_pid(&b).await, pid_a, "two sessions never share a backend");
    drop(a);
    // The released backend (reset with DISCARD ALL) serves the next client.
    let mut reused = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let c = connect(addr, APP_USER, APP_PASSWORD, APP_DB).await;
        if backend_pid(&c).await == pid_a {
            reused = true;
            break;
        }
    }
    assert!(reused, "the first client's backend was never reused");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_clients_on_a_pool_of_ten_all_succeed() {
    let proxy = start_proxy(config_with("default_pool_size = 10", "transaction")).await;
    let addr = proxy.local_addr();
    let mut tasks = Vec::new();
    for i in 0..500 {
        tasks.push(tokio::spawn(async move {
            let c = connect(addr, APP_USER, APP_PASSWORD, APP_DB).await;
            let rows = c
                .query_typed("SELECT $1::int + 1", &[(&i, tokio_postgres::types::Type::INT4)])
                .await
                .unwrap();
            assert_eq!(rows[0].get::<_, i32>(0), i + 1);
            c.batch_execute("BEGIN; SELECT pg_sleep(0.001); COMMIT")
                .await
                .unwrap();
            backend_pid(&c).await
        }));
    }
    let mut pids = HashSet::new();
    for t in tasks {
        pids.insert(t.await.expect("client task"));
    }
    assert!(pids.len() <= 10, "pool of 10 used {} backends", pids.len());
    let (open, _, waiting) = proxy.shared().pools.all()[0].counts();
    assert!(open <= 10 && waiting == 0, "open {open}, waiting {waiting}");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_wait_timeout_ends_a_waiting_client_with_an_error() {
    let config = config_with(
        "default_pool_size = 1\nquery_wait_timeout = \"1s\"",
        "transaction",
    );
    let proxy = start_proxy(config).await;
    let addr = proxy.local_addr();
    let holder = connect(addr, APP_USER, APP_PASSWORD, APP_DB).await;
    let waiter = connect(addr, APP_USER, APP_PASSWORD, APP_DB).await;
    holder.batch_execute("BEGIN").await.unwrap();
    let started = tokio::time::Instant::now();
    let err = waiter
        .simple_query("SELECT 1")
        .await
        .expect_err("no backend is free");
    let db = err.as_db_error().expect("a server error, not a hang");
    assert_eq!(db.code().code(), "08P01");
    assert_eq!(db.message(), "query_wait_timeout");
    assert!(started.elapsed() >= Duration::from_millis(900));
    // The holder is unaffected.
    holder.batch_execute("COMMIT").await.unwrap();
    assert_eq!(backend_pid(&holder).await, backend_pid(&holder).await);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserve_pool_serves_a_client_that_waited_long_enough() {
    let config = config_with(
        "default_pool_size = 1\nreserve_pool_size = 1\nreserve_pool_timeout = \"200ms\"\nquery_wait_timeout = \"10s\"",
        "transaction",
    );
    let proxy = start_proxy(config).await;
    let addr = proxy.local_addr();
    let holder = connect(addr, APP_USER, APP_PASSWORD, APP_DB).await;
    let waiter = connect(addr, APP_USER, APP_PASSWORD, APP_DB).await;
    holder.batch_execute("BEGIN").await.unwrap();
    let holder_pid = backend_pid(&holder).await;
    let started = tokio::time::Instant::now();
    let pid = tokio::time::timeout(Duration::from_secs(5), backend_pid(&waiter))
        .await
        .expect("served from the reserve, not after the holder");
    assert_ne!(pid, holder_pid);
    assert!(started.elapsed() >= Duration::from_millis(150));
    holder.batch_execute("COMMIT").await.unwrap();
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_client_conn_refuses_extra_clients_with_53300() {
    let toml = base_config_toml(tokio::task::block_in_place(pg))
        .replace("[proxy]\n", "[proxy]\nmax_client_conn = 3\n");
    let proxy = start_proxy(Config::from_toml(&toml).unwrap()).await;
    let addr = proxy.local_addr();
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(connect(addr, APP_USER, APP_PASSWORD, APP_DB).await);
    }
    let err = try_connect(addr, APP_USER, APP_PASSWORD, APP_DB)
        .await
        .expect_err("a fourth client is refused");
    let db = err.as_db_error().expect("an ErrorResponse");
    assert_eq!(db.code().code(), "53300");
    assert_eq!(db.message(), "sorry, too many clients already");
    held.pop();
    // The freed place is usable once the proxy has seen the disconnect.
    let mut ok = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if try_connect(addr, APP_USER, APP_PASSWORD, APP_DB).await.is_ok() {
            ok = true;
            break;
        }
    }
    assert!(ok, "a place freed by a disconnect is reused");
    proxy.shutdown().await;
}

fn run_pgbench(addr: std::net::SocketAddr, args: &[&str]) -> String {
    let out = pg_tool_cmd("pgbench", addr, APP_USER, APP_PASSWORD, APP_DB)
        .args(args)
        .output()
        .expect("pgbench runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "pgbench {args:?} failed:\n{text}");
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_fifty_clients_pool_of_ten_no_failed_transactions() {
    let proxy = start_proxy(config_with("default_pool_size = 10", "transaction")).await;
    let addr = proxy.local_addr();
    tokio::task::spawn_blocking(move || {
        run_pgbench(addr, &["-i", "-q", "-s", "1"]);
        for mode in ["extended", "simple"] {
            let out = run_pgbench(addr, &["-c", "50", "-j", "2", "-T", "8", "-M", mode]);
            assert!(
                out.contains("number of failed transactions: 0 (0.000%)"),
                "-M {mode}:\n{out}"
            );
            let processed = out
                .lines()
                .find_map(|l| l.strip_prefix("number of transactions actually processed: "))
                .and_then(|n| n.trim().parse::<u64>().ok())
                .unwrap_or(0);
            assert!(processed > 100, "-M {mode} processed only {processed}:\n{out}");
        }
    })
    .await
    .unwrap();
    proxy.shutdown().await;
}

/// Keeps `n` server connections to `db` open in tidepool's pool: `n` clients each inside a
/// transaction at once, then gone (their backends stay pooled, idle).
async fn leave_idle_connections(addr: std::net::SocketAddr, db: &str, n: usize) {
    let mut clients = Vec::new();
    for _ in 0..n {
        let c = connect(addr, APP_USER, APP_PASSWORD, db).await;
        c.batch_execute("BEGIN; SELECT 1").await.unwrap();
        clients.push(c);
    }
    for c in &clients {
        c.batch_execute("COMMIT").await.unwrap();
    }
}

/// Lets `app` create databases, once per binary (two tests altering the role at the same time
/// get "tuple concurrently updated").
fn allow_createdb() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        pg().psql("postgres", "ALTER ROLE app CREATEDB").unwrap();
    });
}

/// Issue 15, item 3: CREATE DATABASE … TEMPLATE, ALTER DATABASE … RENAME and DROP DATABASE of
/// databases tidepool keeps idle connections to succeed, as they do on a direct connection
/// where those sessions are gone (PostgreSQL answers 55006 while other sessions are connected),
/// in both pool modes (in session mode the issuing client's own backend is on another
/// database's pool; the idle ones are closed all the same).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_ddl_is_not_blocked_by_idle_pooled_connections() {
    // A template only this test uses: other tests of this binary keep sessions on `app`.
    tokio::task::block_in_place(|| {
        allow_createdb();
        pg_cluster().create_database("ddl_src", APP_USER)
    })
    .unwrap();
    let direct = tokio::task::block_in_place(pg).addr();
    for mode in ["transaction", "session"] {
        let toml = base_config_toml(tokio::task::block_in_place(pg))
            .replace("pool_mode = \"transaction\"", &format!("pool_mode = \"{mode}\""))
            .replace("default_pool_size = 10", "default_pool_size = 4")
            + "\n[databases.ddl_src]\n[databases.ddl_copy]\n[databases.ddl_moved]\n";
        let proxy = start_proxy(Config::from_toml(&toml).unwrap()).await;
        let addr = proxy.local_addr();
        for target in [direct, addr] {
            let tag = format!("{mode} {target}");
            leave_idle_connections(target, "ddl_src", 3).await;
            let c = connect(target, APP_USER, APP_PASSWORD, "ddl_src").await;
            c.batch_execute("CREATE DATABASE ddl_copy TEMPLATE ddl_src")
                .await
                .unwrap_or_else(|e| panic!("{tag}: CREATE DATABASE: {e:?}"));
            leave_idle_connections(target, "ddl_copy", 2).await;
            c.batch_execute("ALTER DATABASE ddl_copy RENAME TO ddl_moved")
                .await
                .unwrap_or_else(|e| panic!("{tag}: ALTER DATABASE RENAME: {e}"));
            leave_idle_connections(target, "ddl_moved", 2).await;
            c.batch_execute("DROP DATABASE ddl_moved")
                .await
                .unwrap_or_else(|e| panic!("{tag}: DROP DATABASE: {e}"));
            // A database really in use is refused as PostgreSQL refuses it.
            c.batch_execute("CREATE DATABASE ddl_copy TEMPLATE ddl_src")
                .await
                .unwrap();
            let busy = connect(target, APP_USER, APP_PASSWORD, "ddl_copy").await;
            busy.batch_execute("BEGIN").await.unwrap();
            let err = c.batch_execute("DROP DATABASE ddl_copy").await.unwrap_err();
            assert_eq!(console::sqlstate(&err), "55006", "{tag}: {err}");
            drop(busy);
            leave_idle_connections(target, "ddl_copy", 1).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
            c.batch_execute("DROP DATABASE ddl_copy")
                .await
                .unwrap_or_else(|e| panic!("{tag}: DROP DATABASE after the busy client left: {e}"));
        }
        proxy.shutdown().await;
    }
}

/// Issue 15, item 3: while such a statement runs, the pools of its database open nothing, not
/// even to keep `min_pool_size` (the janitor would otherwise reopen what was just closed), and
/// a client that wants the database meanwhile waits and then gets in. Both pool modes, each
/// compared with a direct connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_ddl_holds_the_databases_pools_until_it_is_answered() {
    tokio::task::block_in_place(|| {
        allow_createdb();
        pg_cluster().create_database("ddl_tpl", APP_USER)
    })
    .unwrap();
    let direct = tokio::task::block_in_place(pg).addr();
    for mode in ["transaction", "session"] {
        let toml = base_config_toml(tokio::task::block_in_place(pg))
            .replace("pool_mode = \"transaction\"", &format!("pool_mode = \"{mode}\""))
            .replace(
                "default_pool_size = 10",
                "default_pool_size = 4\nmin_pool_size = 2",
            )
            + "\n[databases.ddl_tpl]\n";
        let proxy = start_proxy(Config::from_toml(&toml).unwrap()).await;
        let addr = proxy.local_addr();
        for target in [direct, addr] {
            let tag = format!("{mode} {target}");
            let first = connect(target, APP_USER, APP_PASSWORD, "ddl_tpl").await;
            first.batch_execute("SELECT 1").await.unwrap();
            drop(first);
            if target == addr {
                // The janitor keeps min_pool_size connections open to the template.
                let pool = proxy
                    .shared()
                    .pools
                    .all()
                    .into_iter()
                    .find(|p| p.settings().login.database == "ddl_tpl")
                    .expect("the template's pool");
                for _ in 0..100 {
                    if pool.counts().1 >= 2 {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                assert!(pool.counts().1 >= 2, "{tag}: prewarmed: {:?}", pool.counts());
            }
            let c = connect(target, APP_USER, APP_PASSWORD, APP_DB).await;
            for round in 0..3 {
                // A client wanting the template while the copy runs: in after it, as directly.
                let late = tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    let late = connect(target, APP_USER, APP_PASSWORD, "ddl_tpl").await;
                    late.batch_execute("SELECT 1").await.map(|_| ())
                });
                c.batch_execute("CREATE DATABASE ddl_tpl_copy TEMPLATE ddl_tpl")
                    .await
                    .unwrap_or_else(|e| panic!("{tag} round {round}: CREATE DATABASE: {e:?}"));
                late.await
                    .unwrap()
                    .unwrap_or_else(|e| panic!("{tag} round {round}: the late client: {e:?}"));
                c.batch_execute("DROP DATABASE ddl_tpl_copy")
                    .await
                    .unwrap_or_else(|e| panic!("{tag} round {round}: DROP DATABASE: {e:?}"));
                // Give the janitor time to prewarm again.
                tokio::time::sleep(Duration::from_millis(1200)).await;
            }
        }
        proxy.shutdown().await;
    }
}
