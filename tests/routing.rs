//! Read/write splitting over a real primary + 2 streaming standbys: reads on standbys, writes
//! (and everything that might write) on the primary, and writes following a promotion.

mod common;

use common::*;
use std::time::{Duration, Instant};
use tidepool::cluster::{LocalCluster, NodeOptions, PgBinaries, StopMode};
use tidepool::config::Config;

fn start_cluster() -> LocalCluster {
    let bins = PgBinaries::locate().unwrap();
    let mut cluster = LocalCluster::start(&bins, NodeOptions::default()).unwrap();
    cluster.create_role(APP_USER, APP_PASSWORD).unwrap();
    cluster.create_database(APP_DB, APP_USER).unwrap();
    cluster.add_standby().unwrap();
    cluster.add_standby().unwrap();
    cluster
}

fn config(cluster: &LocalCluster) -> Config {
    config_with(cluster, "")
}

fn config_with(cluster: &LocalCluster, routing_extra: &str) -> Config {
    config_full(cluster, "", routing_extra)
}

fn config_full(cluster: &LocalCluster, proxy_extra: &str, routing_extra: &str) -> Config {
    let mut toml = format!(
        "[proxy]\nlisten = \"127.0.0.1:0\"\n{proxy_extra}\n\n[pool]\ndefault_pool_size = 4\n\n\
         [health]\nhealth_check_interval = \"100ms\"\nhealth_check_timeout = \"1s\"\nfall = 2\nrise = 1\n\n\
         [routing]\nfailover_timeout = \"30s\"\n{routing_extra}\n\n[databases.{APP_DB}]\n\n\
         [[users]]\nname = \"{APP_USER}\"\npassword = \"{APP_PASSWORD}\"\n"
    );
    for node in cluster.nodes() {
        toml.push_str(&format!(
            "\n[[nodes]]\nhost = \"127.0.0.1\"\nport = {}\n",
            node.port
        ));
    }
    Config::from_toml(&toml).unwrap()
}

async fn one(client: &tokio_postgres::Client, sql: &str) -> String {
    let rows = client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    first_value(&rows)
}

/// Waits until the proxy's health view knows a primary and both standbys.
async fn wait_for_topology(proxy: &tidepool::app::Proxy) {
    let health = proxy
        .shared()
        .health()
        .expect("health checking runs with 3 nodes");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let view = health.view();
        if view.primary().is_some() && view.nodes.iter().filter(|n| n.is_usable_standby()).count() == 2 {
            return;
        }
        assert!(Instant::now() < deadline, "topology never settled: {view:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_on_standbys_writes_and_writers_in_disguise_on_the_primary() {
    let cluster = tokio::task::spawn_blocking(start_cluster).await.unwrap();
    let proxy = start_proxy(config(&cluster)).await;
    wait_for_topology(&proxy).await;
    let c = connect(proxy.local_addr(), APP_USER, APP_PASSWORD, APP_DB).await;
    c.batch_execute("CREATE TABLE IF NOT EXISTS items (id serial primary key, v int)")
        .await
        .unwrap();
    let standby_ports: Vec<u16> = cluster.standbys.iter().map(|n| n.port).collect();

    // Plain reads: standbys, round-robin over both.
    let mut ports = std::collections::HashSet::new();
    for _ in 0..10 {
        let got = one(
            &c,
            "SELECT pg_is_in_recovery()::text || ' ' || inet_server_port()",
        )
        .await;
        let (recovery, port) = got.split_once(' ').unwrap();
        assert_eq!(recovery, "true");
        ports.insert(port.parse::<u16>().unwrap());
    }
    assert_eq!(
        ports,
        standby_ports.iter().copied().collect(),
        "reads spread over both standbys"
    );

    // Everything that might write goes to the primary.
    for sql in [
        "INSERT INTO items (v) VALUES (1) RETURNING pg_is_in_recovery()",
        "WITH w AS (INSERT INTO items (v) VALUES (2) RETURNING id) SELECT pg_is_in_recovery() FROM w",
        "SELECT pg_is_in_recovery() FROM items FOR UPDATE",
        "SELECT pg_is_in_recovery() FROM items FOR NO KEY UPDATE",
        "SELECT nextval('items_id_seq') > 0 AND NOT pg_is_in_recovery()",
        "/* tidepool: primary */ SELECT pg_is_in_recovery()",
        "SELECT pg_is_in_recovery() FROM (SELECT pg_advisory_xact_lock(1)) x",
    ] {
        let got = one(&c, sql).await;
        assert!(
            got == "f" || got == "t" && sql.contains("nextval"),
            "{sql} ran on a standby: {got}"
        );
    }
    // Explicit transactions stay on the primary; read-only ones go to a standby.
    c.batch_execute("BEGIN").await.unwrap();
    assert_eq!(one(&c, "SELECT pg_is_in_recovery()").await, "f");
    c.batch_execute("COMMIT").await.unwrap();
    c.batch_execute("BEGIN READ ONLY").await.unwrap();
    assert_eq!(one(&c, "SELECT pg_is_in_recovery()").await, "t");
    c.batch_execute("COMMIT").await.unwrap();
    // Extended protocol (tokio-postgres prepares): same rules.
    let row = c.query_one("SELECT pg_is_in_recovery()", &[]).await.unwrap();
    assert!(row.get::<_, bool>(0));
    let row = c
        .query_one(
            "INSERT INTO items (v) VALUES ($1) RETURNING pg_is_in_recovery()",
            &[&3i32],
        )
        .await
        .unwrap();
    assert!(!row.get::<_, bool>(0));
    // SET tidepool.route and the startup option force a role for the whole connection.
    c.batch_execute("SET tidepool.route = 'primary'").await.unwrap();
    assert_eq!(one(&c, "SELECT pg_is_in_recovery()").await, "f");
    c.batch_execute("SET tidepool.route = 'auto'").await.unwrap();
    assert_eq!(one(&c, "SELECT pg_is_in_recovery()").await, "t");
    let addr = proxy.local_addr();
    let (forced, connection) = tokio_postgres::Config::new()
        .host("127.0.0.1")
        .port(addr.port())
        .user(APP_USER)
        .password(APP_PASSWORD)
        .dbname(APP_DB)
        .options("-c tidepool.route=primary")
        .connect(tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    assert_eq!(one(&forced, "SELECT pg_is_in_recovery()").await, "f");

    // A standby whose replay is paused falls behind and leaves the read rotation; it comes back
    // once it catches up.
    let paused = &cluster.standbys[0];
    tokio::task::block_in_place(|| paused.psql("postgres", "SELECT pg_wal_replay_pause()").unwrap());
    c.batch_execute("INSERT INTO items (v) SELECT g FROM generate_series(1, 200000) g")
        .await
        .unwrap();
    let health = proxy.shared().health().unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while health.view().nodes[1].lag_bytes.unwrap_or(0) < 20 << 20 {
        assert!(
            Instant::now() < deadline,
            "lag never grew: {:?}",
            health.view().nodes[1]
        );
        c.batch_execute("INSERT INTO items (v) SELECT g FROM generate_series(1, 100000) g")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for _ in 0..6 {
        let port = one(&c, "SELECT inet_server_port()").await;
        assert_ne!(port, paused.port.to_string(), "a lagging standby got a read");
    }
    tokio::task::block_in_place(|| paused.psql("postgres", "SELECT pg_wal_replay_resume()").unwrap());
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut back = false;
    while Instant::now() < deadline && !back {
        back = one(&c, "SELECT inet_server_port()").await == paused.port.to_string();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(back, "the standby returned to the rotation after catching up");
    proxy.shutdown().await;
    drop(cluster);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_follow_a_promotion_and_never_reach_a_standby() {
    let cluster = tokio::task::spawn_blocking(start_cluster).await.unwrap();
    let proxy = start_proxy(config(&cluster)).await;
    wait_for_topology(&proxy).await;
    let addr = proxy.local_addr();
    let c = connect(addr, APP_USER, APP_PASSWORD, APP_DB).await;
    c.batch_execute("CREATE TABLE log (id serial primary key, on_standby bool)")
        .await
        .unwrap();

    // A writer that keeps inserting; each insert reports whether it ran in recovery.
    let writer = tokio::spawn(async move {
        let mut ok = 0u32;
        let mut errors = 0u32;
        let mut messages = std::collections::BTreeSet::new();
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(12) {
            match c
                .simple_query("INSERT INTO log (on_standby) VALUES (pg_is_in_recovery())")
                .await
            {
                Ok(_) => ok += 1,
                Err(e) => {
                    errors += 1;
                    messages.insert(e.to_string());
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        (ok, errors, messages)
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    let new_primary_port = cluster.standbys[0].port;
    tokio::task::block_in_place(|| {
        cluster.primary.stop(StopMode::Immediate).unwrap();
        std::thread::sleep(Duration::from_millis(500));
        cluster.standbys[0].promote().unwrap();
    });
    let (ok, errors, messages) = writer.await.unwrap();
    assert!(
        ok > 50,
        "writes resumed after the promotion ({ok} ok, {errors} errors: {messages:?})"
    );
    assert!(
        errors <= 3,
        "only in-flight writes may fail ({errors} errors: {messages:?})"
    );

    let c = connect(addr, APP_USER, APP_PASSWORD, APP_DB).await;
    assert_eq!(
        one(&c, "SELECT inet_server_port() FROM (SELECT 1) x FOR UPDATE").await,
        new_primary_port.to_string()
    );
    assert_eq!(
        one(&c, "SELECT count(*) FROM log WHERE on_standby").await,
        "0",
        "no write ever ran in recovery"
    );
    proxy.shutdown().await;
    drop(cluster);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_your_writes_while_every_standby_is_paused() {
    let cluster = tokio::task::spawn_blocking(start_cluster).await.unwrap();
    let proxy = start_proxy(config_with(
        &cluster,
        "read_your_writes = true\nmax_lag = \"0\"\nmax_lag_bytes = \"0\"",
    ))
    .await;
    wait_for_topology(&proxy).await;
    let addr = proxy.local_addr();
    let writer = connect(addr, APP_USER, APP_PASSWORD, APP_DB).await;
    let reader = connect(addr, APP_USER, APP_PASSWORD, APP_DB).await;
    writer.batch_execute("CREATE TABLE ryw (id int)").await.unwrap();
    // Let the standbys replay the table, then stop their replay.
    tokio::time::sleep(Duration::from_millis(500)).await;
    tokio::task::block_in_place(|| {
        for standby in &cluster.standbys {
            standby.psql("postgres", "SELECT pg_wal_replay_pause()").unwrap();
        }
    });
    for i in 0..20 {
        writer
            .batch_execute(&format!("INSERT INTO ryw VALUES ({i})"))
            .await
            .unwrap();
        // The writer always sees its own row (its reads wait for, or skip, stale standbys)…
        let seen = one(&writer, &format!("SELECT count(*) FROM ryw WHERE id = {i}")).await;
        assert_eq!(seen, "1", "write {i} not visible to its writer");
        // …while a client that wrote nothing keeps reading from the (paused) standbys.
        assert_eq!(one(&reader, "SELECT pg_is_in_recovery()").await, "t");
    }
    tokio::task::block_in_place(|| {
        for standby in &cluster.standbys {
            standby.psql("postgres", "SELECT pg_wal_replay_resume()").unwrap();
        }
    });
    proxy.shutdown().await;
    drop(cluster);
}

/// The SQLSTATE of a failed statement, panicking when it succeeded.
async fn sqlstate(client: &tokio_postgres::Client, sql: &str) -> (String, String) {
    let error = client
        .simple_query(sql)
        .await
        .err()
        .unwrap_or_else(|| panic!("{sql} succeeded"));
    let db = error.as_db_error().unwrap_or_else(|| panic!("{sql}: {error}"));
    (db.code().code().to_string(), db.message().to_string())
}

/// Polls a standby until `sql` returns "t" (for up to 20 s).
fn wait_on(node: &tidepool::cluster::LocalNode, sql: &str) {
    for _ in 0..200 {
        if node.psql(APP_DB, sql).is_ok_and(|out| out == "t") {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{} never answered t to {sql}", node.name);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_statement_lsn_commands_per_transaction_sessions_and_demotion() {
    let cluster = tokio::task::spawn_blocking(start_cluster).await.unwrap();
    let proxy = start_proxy(config_with(
        &cluster,
        "transaction_routing = \"first_statement\"\nread_your_writes = true",
    ))
    .await;
    wait_for_topology(&proxy).await;
    let addr = proxy.local_addr();
    let c = connect(addr, APP_USER, APP_PASSWORD, APP_DB).await;
    c.batch_execute("CREATE TABLE t (id int); CREATE SEQUENCE s")
        .await
        .unwrap();
    tokio::task::block_in_place(|| {
        for standby in &cluster.standbys {
            wait_on(standby, "SELECT to_regclass('t') IS NOT NULL");
        }
    });

    // transaction_routing = "first_statement": a transaction opened by a read runs on a standby,
    // read-only, so a write in it fails like on a standby; one opened by a write stays on the
    // primary.
    // (A client that wrote nothing: the writer's reads may go to the primary, read_your_writes.)
    let r = connect(addr, APP_USER, APP_PASSWORD, APP_DB).await;
    r.batch_execute("BEGIN").await.unwrap();
    assert_eq!(one(&r, "SELECT pg_is_in_recovery()").await, "t");
    let (code, message) = sqlstate(&r, "INSERT INTO t VALUES (1)").await;
    assert_eq!(code, "25006", "{message}");
    assert!(message.contains("read-only transaction"), "{message}");
    r.batch_execute("ROLLBACK").await.unwrap();
    c.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        .await
        .unwrap();
    assert_eq!(
        one(&c, "INSERT INTO t VALUES (2) RETURNING pg_is_in_recovery()").await,
        "f"
    );
    assert_eq!(
        one(
            &c,
            "SELECT pg_is_in_recovery()::text || current_setting('transaction_isolation')"
        )
        .await,
        "falserepeatable read",
        "the rest of the transaction follows its first statement, BEGIN options kept"
    );
    c.batch_execute("COMMIT").await.unwrap();
    c.batch_execute("BEGIN").await.unwrap();
    assert_eq!(
        one(&c, "/* tidepool: primary */ SELECT pg_is_in_recovery()").await,
        "f"
    );
    one(&c, "INSERT INTO t VALUES (3) RETURNING 1").await;
    c.batch_execute("COMMIT").await.unwrap();

    // SHOW tidepool.lsn / SET tidepool.min_lsn, answered by tidepool.
    let fresh = connect(addr, APP_USER, APP_PASSWORD, APP_DB).await;
    let rows = fresh.simple_query("SHOW tidepool.lsn").await.unwrap();
    let tokio_postgres::SimpleQueryMessage::Row(row) = &rows[1] else {
        panic!("{rows:?}")
    };
    assert_eq!(row.columns()[0].name(), "tidepool.lsn");
    assert_eq!(row.get(0), Some("0/0"), "no write yet");
    let (code, message) = sqlstate(&fresh, "SET tidepool.min_lsn = 'yesterday'").await;
    assert_eq!(code, "22023");
    assert!(
        message.contains("\"tidepool.min_lsn\": \"yesterday\""),
        "{message}"
    );
    let written = one(&c, "SHOW tidepool.lsn").await;
    assert_ne!(written, "0/0", "the writer has a position");
    // Another connection carries the writer's position while no standby has replayed it.
    tokio::task::block_in_place(|| {
        for standby in &cluster.standbys {
            standby.psql("postgres", "SELECT pg_wal_replay_pause()").unwrap();
        }
    });
    c.batch_execute("INSERT INTO t VALUES (4)").await.unwrap();
    let written = one(&c, "SHOW tidepool.lsn").await;
    assert_eq!(one(&fresh, "SELECT pg_is_in_recovery()").await, "t");
    fresh
        .batch_execute(&format!("SET tidepool.min_lsn = '{written}'"))
        .await
        .unwrap();
    assert_eq!(one(&fresh, "SHOW tidepool.lsn").await, written);
    assert_eq!(
        one(&fresh, "SELECT count(*) FROM t WHERE id = 4").await,
        "1",
        "reads wait for (or skip) standbys behind the carried position"
    );
    tokio::task::block_in_place(|| {
        for standby in &cluster.standbys {
            standby.psql("postgres", "SELECT pg_wal_replay_resume()").unwrap();
        }
    });

    // session_routing = "per_transaction": a session-mode client's reads go to standbys, with
    // its settings; its writes share one primary backend for the whole session (currval works).
    let sessions = start_proxy(config_full(
        &cluster,
        "pool_mode = \"session\"",
        "session_routing = \"per_transaction\"",
    ))
    .await;
    wait_for_topology(&sessions).await;
    let s = connect(sessions.local_addr(), APP_USER, APP_PASSWORD, APP_DB).await;
    s.batch_execute("SET application_name = 'per-tx'").await.unwrap();
    assert_eq!(
        one(
            &s,
            "SELECT pg_is_in_recovery()::text || ' ' || current_setting('application_name')"
        )
        .await,
        "true per-tx"
    );
    let first = one(&s, "SELECT nextval('s')").await;
    let mut ports = std::collections::HashSet::new();
    for _ in 0..4 {
        ports.insert(one(&s, "SELECT inet_server_port()").await);
    }
    let standby_ports: std::collections::HashSet<String> =
        cluster.standbys.iter().map(|n| n.port.to_string()).collect();
    assert_eq!(ports, standby_ports, "reads spread over the standbys");
    assert_eq!(
        one(&s, "SELECT currval('s')").await,
        first,
        "same primary backend"
    );
    drop(s);
    sessions.shutdown().await;

    // A node that stops being the primary (here: fenced after a standby is promoted beside it):
    // a client inside a transaction there gets an error, not silence, and the pool's
    // connections to it are closed.
    let d = connect(addr, APP_USER, APP_PASSWORD, APP_DB).await;
    d.batch_execute("BEGIN").await.unwrap();
    one(&d, "INSERT INTO t VALUES (5) RETURNING 1").await;
    let new_primary = &cluster.standbys[0];
    tokio::task::block_in_place(|| new_primary.promote().unwrap());
    let health = proxy.shared().health().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !(health.view().primary() == Some(1) && health.view().nodes[0].fenced) {
        assert!(Instant::now() < deadline, "never fenced: {:?}", health.view());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (code, message) = sqlstate(&d, "INSERT INTO t VALUES (6)").await;
    assert_eq!(code, "25006", "{message}");
    assert!(message.contains("no longer the primary"), "{message}");
    assert_eq!(
        one(&d, "INSERT INTO t VALUES (7) RETURNING inet_server_port()").await,
        new_primary.port.to_string(),
        "the next transaction runs on the new primary"
    );
    let old_primary = cluster.primary.addr().to_string();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let open: usize = (proxy.shared().pools.all().iter())
            .filter(|p| *p.key.node == *old_primary)
            .map(|p| p.counts().0)
            .sum();
        if open == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{open} connections to the fenced node stay open"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    proxy.shutdown().await;
    drop(cluster);
}
