//! The admin console against real PostgreSQL: every command, permissions, PgBouncer 1.25
//! column lists (`tests/pgbouncer_compat.rs` checks them against the real PgBouncer), PAUSE/RESUME holding a transaction, KILL_CLIENT closing a client.

mod common;

use common::console::*;
use common::*;
use std::time::Duration;
use tokio_postgres::SimpleQueryMessage;

// PgBouncer 1.25's column lists.
const POOLS: &[&str] = &[
    "database",
    "user",
    "cl_active",
    "cl_waiting",
    "cl_active_cancel_req",
    "cl_waiting_cancel_req",
    "sv_active",
    "sv_active_cancel",
    "sv_being_canceled",
    "sv_idle",
    "sv_used",
    "sv_tested",
    "sv_login",
    "maxwait",
    "maxwait_us",
    "pool_mode",
    "load_balance_hosts",
];
const SOCKETS: &[&str] = &[
    "type",
    "user",
    "database",
    "replication",
    "state",
    "addr",
    "port",
    "local_addr",
    "local_port",
    "connect_time",
    "request_time",
    "wait",
    "wait_us",
    "close_needed",
    "ptr",
    "link",
    "remote_pid",
    "tls",
    "application_name",
    "prepared_statements",
    "id",
];
/// SHOW STATS' first half.
const STATS_TOTALS: &[&str] = &[
    "total_server_assignment_count",
    "total_xact_count",
    "total_query_count",
    "total_received",
    "total_sent",
    "total_xact_time",
    "total_query_time",
    "total_wait_time",
    "total_client_parse_count",
    "total_server_parse_count",
    "total_bind_count",
];
/// SHOW STATS_TOTALS (after `database`): the same without the prefix, bytes named as such.
const SPLIT_TOTALS: &[&str] = &[
    "server_assignment_count",
    "xact_count",
    "query_count",
    "bytes_received",
    "bytes_sent",
    "xact_time",
    "query_time",
    "wait_time",
    "client_parse_count",
    "server_parse_count",
    "bind_count",
];
/// SHOW STATS_AVERAGES: as STATS_TOTALS, but the prepared-statement columns keep `avg_`.
const SPLIT_AVERAGES: &[&str] = &[
    "server_assignment_count",
    "xact_count",
    "query_count",
    "bytes_received",
    "bytes_sent",
    "xact_time",
    "query_time",
    "wait_time",
    "avg_client_parse_count",
    "avg_server_parse_count",
    "avg_bind_count",
];
/// SHOW STATS' second half.
const STATS_AVERAGES: &[&str] = &[
    "avg_server_assignment_count",
    "avg_xact_count",
    "avg_query_count",
    "avg_recv",
    "avg_sent",
    "avg_xact_time",
    "avg_query_time",
    "avg_wait_time",
    "avg_client_parse_count",
    "avg_server_parse_count",
    "avg_bind_count",
];
const DATABASES: &[&str] = &[
    "name",
    "host",
    "port",
    "database",
    "force_user",
    "pool_size",
    "min_pool_size",
    "reserve_pool_size",
    "server_lifetime",
    "pool_mode",
    "load_balance_hosts",
    "max_connections",
    "current_connections",
    "max_client_connections",
    "current_client_connections",
    "paused",
    "disabled",
];

#[tokio::test]
async fn show_commands_use_pgbouncer_columns_and_report_traffic() {
    let proxy = start_proxy(admin_config()).await;
    let addr = proxy.local_addr();
    let app = app_client(addr, "watched").await;
    for _ in 0..3 {
        app.simple_query("SELECT 1").await.expect("select");
    }
    let statement = app.prepare("SELECT $1::int + 1").await.expect("prepare");
    app.query(&statement, &[&1i32]).await.expect("execute");
    let admin = console(addr, ADMIN).await;

    let pools = show(&admin, "SHOW POOLS").await;
    assert_eq!(pools.columns, POOLS);
    let row = &pools.rows_where("database", APP_DB)[0];
    assert_eq!(pools.get(row, "user"), Some(APP_USER));
    assert_eq!(pools.get(row, "cl_active"), Some("1"));
    assert_eq!(pools.get(row, "pool_mode"), Some("transaction"));

    // The client sees its last answer a moment before its session marks it idle.
    let clients = until(&admin, "show clients;", |t| {
        t.rows_where("application_name", "watched")
            .iter()
            .all(|r| t.get(r, "state") == Some("idle"))
    })
    .await;
    assert_eq!(clients.columns, SOCKETS);
    let watched = clients.rows_where("application_name", "watched");
    assert_eq!(watched.len(), 1);
    assert_eq!(clients.get(watched[0], "state"), Some("idle"));
    assert_eq!(clients.get(watched[0], "database"), Some(APP_DB));

    let servers = show(&admin, "Show Servers").await;
    assert_eq!(servers.columns, SOCKETS);
    assert!(!servers.rows_where("database", APP_DB).is_empty());

    let stats = show(&admin, "SHOW STATS").await;
    let mut expected = vec!["database"];
    expected.extend(STATS_TOTALS);
    expected.extend(STATS_AVERAGES);
    assert_eq!(stats.columns, expected);
    let row = &stats.rows_where("database", APP_DB)[0];
    let xacts: u64 = stats.get(row, "total_xact_count").unwrap().parse().unwrap();
    assert!(xacts >= 4, "4 transactions ran, SHOW STATS says {xacts}");
    let totals = show(&admin, "SHOW STATS_TOTALS").await;
    assert_eq!(totals.columns[1..], *SPLIT_TOTALS);
    let row = &totals.rows_where("database", APP_DB)[0];
    assert_eq!(
        totals.get(row, "xact_count"),
        stats.get(stats.rows_where("database", APP_DB)[0], "total_xact_count")
    );
    let averages = show(&admin, "SHOW STATS_AVERAGES").await;
    assert_eq!(averages.columns[1..], *SPLIT_AVERAGES);
    let sums = show(&admin, "SHOW TOTALS").await;
    assert_eq!(sums.columns, ["name", "value"]);
    let xact_total: u64 = sums
        .get(sums.rows_where("name", "total_xact_count")[0], "value")
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        xact_total >= xacts,
        "TOTALS sums every database: {xact_total} < {xacts}"
    );

    let databases = show(&admin, "SHOW DATABASES").await;
    assert_eq!(databases.columns, DATABASES);
    let row = &databases.rows_where("name", APP_DB)[0];
    assert_eq!(databases.get(row, "paused"), Some("0"));
    assert_eq!(databases.get(row, "port"), Some(pg().port.to_string().as_str()));

    let users = show(&admin, "SHOW USERS").await;
    assert_eq!(users.rows_where("name", "admin").len(), 1);
    let lists = show(&admin, "SHOW LISTS").await;
    assert_eq!(lists.columns, ["list", "items"]);
    assert_eq!(
        lists.get(lists.rows_where("list", "pools")[0], "items"),
        Some("1")
    );
    let version = show(&admin, "SHOW VERSION").await;
    assert!(version.rows[0][0].as_deref().unwrap().starts_with("tidepool "));
    let state = show(&admin, "SHOW STATE").await;
    assert_eq!(
        state.get(state.rows_where("key", "active")[0], "value"),
        Some("yes")
    );
    let mem = show(&admin, "SHOW MEM").await;
    assert!(!mem.rows.is_empty());
    // HELP is a NOTICE with no result set, as in PgBouncer (raw, on a thread of its own).
    let notice = tokio::task::spawn_blocking(move || {
        let (mut raw, _) = common::wire::RawClient::login(addr, ADMIN.0, ADMIN.1, "tidepool");
        raw.send(&common::wire::query("SHOW HELP"));
        let answer = raw.until_ready();
        assert!(answer.iter().all(|m| m.tag != b'T'), "{answer:?}");
        answer.into_iter().find(|m| m.tag == b'N').expect("a NOTICE")
    })
    .await
    .unwrap();
    assert_eq!(notice.message().as_deref(), Some("Console usage"));
    assert!(
        notice.field(b'D').unwrap().contains("\tKILL_CLIENT id"),
        "{notice:?}"
    );

    // Secrets never appear in SHOW CONFIG.
    let config = show(&admin, "SHOW CONFIG").await;
    assert_eq!(config.columns, ["key", "value", "default", "changeable"]);
    assert_eq!(
        config.get(config.rows_where("key", "default_pool_size")[0], "value"),
        Some("10")
    );
    assert_eq!(
        config.get(config.rows_where("key", "listen")[0], "changeable"),
        Some("no")
    );
    // The runtime the proxy was started with, which a reload cannot change.
    let runtime = config.rows_where("key", "runtime")[0];
    assert_eq!(config.get(runtime, "value"), Some("work_stealing"));
    assert_eq!(config.get(runtime, "changeable"), Some("no"));
    assert_eq!(
        config.get(config.rows_where("key", "workers")[0], "value"),
        Some("0")
    );
    for row in &config.rows {
        for value in row.iter().flatten() {
            assert!(!value.contains("secret"), "SHOW CONFIG shows a secret: {row:?}");
        }
    }

    let nodes = show(&admin, "SHOW NODES").await;
    assert_eq!(nodes.rows.len(), 1);
    assert_eq!(nodes.get(&nodes.rows[0], "role"), Some("primary"));
    let routes = show(&admin, "SHOW ROUTES").await;
    assert_eq!(routes.columns, ["reason", "count"]);
    assert_eq!(routes.rows.len(), 8);
    let prepared = show(&admin, "SHOW PREPARED").await;
    assert!(
        prepared
            .rows
            .iter()
            .any(|r| r[3].as_deref() == Some("SELECT $1::int + 1")),
        "{:?}",
        prepared.rows
    );

    // Several statements in one Query: each answered in turn.
    let messages = admin
        .simple_query("SHOW VERSION; SHOW STATE;")
        .await
        .expect("two SHOWs");
    let descriptions = messages
        .iter()
        .filter(|m| matches!(m, SimpleQueryMessage::RowDescription(_)))
        .count();
    assert_eq!(descriptions, 2);
    proxy.shutdown_within(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn permissions_protocol_and_bad_commands() {
    let proxy = start_proxy(admin_config()).await;
    let addr = proxy.local_addr();

    // A user in neither list cannot open the console.
    let refused = try_connect(addr, APP_USER, APP_PASSWORD, "pgbouncer")
        .await
        .expect_err("app may not use the console");
    assert_eq!(sqlstate(&refused), "42501");

    // Stats users SHOW, and nothing else.
    let stats = console(addr, STATS).await;
    show(&stats, "SHOW POOLS").await;
    let denied = stats
        .simple_query("PAUSE")
        .await
        .expect_err("stats may not pause");
    assert_eq!(sqlstate(&denied), "42501");
    let denied = stats
        .simple_query("SHOW STATE; RESUME")
        .await
        .expect_err("nor resume");
    assert_eq!(sqlstate(&denied), "42501");

    let admin = console(addr, ADMIN).await;
    for bad in [
        "FROBNICATE",
        "SHOW NOTHING",
        "DISABLE",
        "KILL_CLIENT abc",
        "PAUSE nosuchdb",
    ] {
        let error = admin.simple_query(bad).await.expect_err(bad);
        assert!(error.as_db_error().is_some(), "{bad}: {error}");
    }
    assert_eq!(
        sqlstate(&admin.simple_query("PAUSE nosuchdb").await.unwrap_err()),
        "3D000"
    );
    // The extended protocol is refused, and the console keeps working.
    let error = admin
        .query("SHOW POOLS", &[])
        .await
        .expect_err("extended protocol");
    assert_eq!(sqlstate(&error), "0A000");
    show(&admin, "SHOW VERSION").await;
    // An empty query is answered as PostgreSQL would.
    admin.simple_query(";").await.expect("empty query");

    // psql, through the `pgbouncer` alias.
    // (On a blocking thread: the proxy runs on this test's runtime.)
    let output = tokio::task::spawn_blocking(move || {
        psql_cmd_with_password(addr, ADMIN.0, ADMIN.1, "pgbouncer")
            .args(["-c", "show databases"])
            .output()
            .expect("psql runs")
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("app|127.0.0.1|"));
    proxy.shutdown_within(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn pause_waits_for_transactions_and_holds_new_ones_until_resume() {
    let proxy = start_proxy(admin_config()).await;
    let addr = proxy.local_addr();
    let busy = app_client(addr, "busy").await;
    let later = app_client(addr, "later").await;
    let admin = console(addr, ADMIN).await;
    let watcher = console(addr, ADMIN).await;

    busy.simple_query("BEGIN; SELECT 1").await.expect("begin");
    let pause = tokio::spawn(async move { admin.simple_query("PAUSE app").await.map(|_| admin) });
    until(&watcher, "SHOW DATABASES", |t| {
        t.get(t.rows_where("name", APP_DB)[0], "paused") == Some("1")
    })
    .await;
    tokio::task::yield_now().await;
    assert!(
        !pause.is_finished(),
        "PAUSE returned while a transaction was in flight"
    );
    busy.simple_query("COMMIT").await.expect("commit");
    let admin = pause
        .await
        .unwrap()
        .expect("PAUSE completes once the transaction ended");

    // A new transaction waits...
    let held = tokio::spawn(async move { later.simple_query("SELECT 42").await });
    until(&watcher, "SHOW POOLS", |t| {
        t.get(t.rows_where("database", APP_DB)[0], "cl_waiting") == Some("1")
    })
    .await;
    assert!(!held.is_finished(), "a transaction ran while paused");
    // ...until RESUME.
    admin.simple_query("RESUME app").await.expect("resume");
    let answer = held.await.unwrap().expect("the held query runs after RESUME");
    assert_eq!(first_value(&answer), "42");
    proxy.shutdown_within(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn kill_client_closes_only_that_client() {
    let proxy = start_proxy(admin_config()).await;
    let addr = proxy.local_addr();
    let victim = app_client(addr, "victim").await;
    let bystander = app_client(addr, "bystander").await;
    let admin = console(addr, ADMIN).await;

    let clients = show(&admin, "SHOW CLIENTS").await;
    let id = clients
        .get(clients.rows_where("application_name", "victim")[0], "id")
        .unwrap()
        .to_string();
    admin
        .simple_query(&format!("KILL_CLIENT {id}"))
        .await
        .expect("kill_client");
    until(&admin, "SHOW CLIENTS", |t| {
        t.rows_where("application_name", "victim").is_empty()
    })
    .await;
    assert!(
        victim.simple_query("SELECT 1").await.is_err(),
        "the killed client still works"
    );
    assert_eq!(
        first_value(&bystander.simple_query("SELECT 7").await.unwrap()),
        "7"
    );

    let error = admin
        .simple_query("KILL_CLIENT 999999")
        .await
        .expect_err("unknown id");
    assert_eq!(sqlstate(&error), "42704");
    proxy.shutdown_within(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn disable_reconnect_kill_suspend_reload_and_set() {
    let proxy = start_proxy(admin_config()).await;
    let addr = proxy.local_addr();
    let admin = console(addr, ADMIN).await;
    let app = app_client(addr, "first").await;
    app.simple_query("SELECT 1").await.unwrap();

    // DISABLE refuses new clients; ENABLE lets them in again.
    admin.simple_query("DISABLE app").await.expect("disable");
    let refused = try_connect(addr, APP_USER, APP_PASSWORD, APP_DB)
        .await
        .expect_err("disabled");
    let message = refused
        .as_db_error()
        .map(|e| e.message().to_string())
        .unwrap_or_default();
    assert!(message.contains("disabled"), "{refused:?}");
    admin.simple_query("ENABLE app").await.expect("enable");
    connect(addr, APP_USER, APP_PASSWORD, APP_DB).await;

    // RECONNECT marks every backend; WAIT_CLOSE returns once none is left.
    assert!(!show(&admin, "SHOW SERVERS").await.rows.is_empty());
    admin.simple_query("RECONNECT app").await.expect("reconnect");
    admin.simple_query("WAIT_CLOSE app").await.expect("wait_close");
    let servers = show(&admin, "SHOW SERVERS").await;
    assert!(servers.rows_where("close_needed", "1").is_empty());
    // New backends are opened as needed.
    assert_eq!(first_value(&app.simple_query("SELECT 3").await.unwrap()), "3");

    // KILL drops the database's clients and holds new ones until RESUME.
    admin.simple_query("KILL app").await.expect("kill");
    until(&admin, "SHOW CLIENTS", |t| {
        t.rows_where("database", APP_DB).is_empty()
    })
    .await;
    assert!(app.simple_query("SELECT 1").await.is_err());
    admin.simple_query("RESUME").await.expect("resume");
    let fresh = connect(addr, APP_USER, APP_PASSWORD, APP_DB).await;
    let answer = fresh
        .simple_query("SELECT 4")
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(first_value(&answer), "4");

    // SUSPEND / RESUME show in SHOW STATE.
    admin.simple_query("SUSPEND").await.expect("suspend");
    let state = show(&admin, "SHOW STATE").await;
    assert_eq!(
        state.get(state.rows_where("key", "suspended")[0], "value"),
        Some("yes")
    );
    admin.simple_query("RESUME").await.expect("resume");
    let state = show(&admin, "SHOW STATE").await;
    assert_eq!(
        state.get(state.rows_where("key", "suspended")[0], "value"),
        Some("no")
    );

    // SET: bad values and keys are refused by name; a good one reaches the reload path, which
    // either applies it (SHOW CONFIG shows it) or says why not (F0000) — never silence.
    let error = admin
        .simple_query("SET default_pool_size = 'many'")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&error), "22023");
    let error = admin
        .simple_query("SET listen = '127.0.0.1:1'")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&error), "55P02");
    assert!(
        error.as_db_error().unwrap().message().contains("listen"),
        "{error:?}"
    );
    let error = admin.simple_query("SET no_such_key = 1").await.unwrap_err();
    assert_eq!(sqlstate(&error), "42704");
    match admin.simple_query("SET default_pool_size = 7").await {
        Ok(_) => {
            let config = show(&admin, "SHOW CONFIG").await;
            assert_eq!(
                config.get(config.rows_where("key", "default_pool_size")[0], "value"),
                Some("7")
            );
        }
        Err(e) => assert_eq!(sqlstate(&e), "F0000"),
    }
    match admin.simple_query("RELOAD").await {
        Ok(_) => {}
        Err(e) => assert_eq!(sqlstate(&e), "F0000"),
    }
    proxy.shutdown_within(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn shutdown_from_the_console_stops_the_proxy() {
    let proxy = start_proxy(admin_config()).await;
    let admin = console(proxy.local_addr(), ADMIN).await;
    let error = admin
        .simple_query("SHUTDOWN WAIT_FOR_SERVERS now")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&error), "42601");
    admin.simple_query("SHUTDOWN").await.expect("shutdown");
    assert!(proxy.shared().shutdown.is_triggered());
    proxy.shutdown_within(Duration::from_secs(5)).await;
}

/// SHOW PEERS lists `[peers]`; SHOW PEER_POOLS counts a cancel request while it is being
/// forwarded to its peer (here a listener that holds the connection open, as a slow peer would).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_and_the_cancels_forwarded_to_them() {
    let peer = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let peer_addr = peer.local_addr().unwrap();
    let toml = format!(
        "{}\n[peers]\ninstance_id = 1\ninstances = {{ 2 = \"{peer_addr}\" }}\n",
        admin_config_toml()
    );
    let proxy = start_proxy(tidepool::config::Config::from_toml(&toml).unwrap()).await;
    let addr = proxy.local_addr();
    let admin = console(addr, ADMIN).await;
    let peers = show(&admin, "SHOW PEERS").await;
    assert_eq!(peers.rows.len(), 1);
    assert_eq!(peers.get(&peers.rows[0], "peer_id"), Some("2"));
    assert_eq!(
        peers.get(&peers.rows[0], "port"),
        Some(peer_addr.port().to_string().as_str())
    );
    let in_flight = |n: &'static str| {
        move |t: &Table| {
            t.rows_where("peer_id", "2")
                .first()
                .and_then(|r| t.get(r, "cl_active_cancel_req"))
                == Some(n)
        }
    };
    until(&admin, "SHOW PEER_POOLS", in_flight("0")).await;

    // A cancel whose key says instance 2 (the secret's top byte) lands here.
    let mut cancel = 16u32.to_be_bytes().to_vec();
    cancel.extend_from_slice(&80_877_102u32.to_be_bytes());
    cancel.extend_from_slice(&42i32.to_be_bytes());
    cancel.extend_from_slice(&[2, 0x12, 0x34, 0x56]);
    let mut to_us = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut to_us, &cancel)
        .await
        .unwrap();
    let held = tokio::task::spawn_blocking(move || {
        let (mut stream, _) = peer.accept().unwrap();
        let mut got = [0u8; 16];
        std::io::Read::read_exact(&mut stream, &mut got).unwrap();
        (stream, got)
    })
    .await
    .unwrap();
    assert_eq!(held.1[12..], [2, 0x12, 0x34, 0x56], "forwarded with its secret");
    let counted = until(&admin, "SHOW PEER_POOLS", in_flight("1")).await;
    let row = counted.rows_where("peer_id", "2")[0];
    assert_eq!(counted.get(row, "sv_active_cancel"), Some("1"));
    // The peer closes: nothing in flight any more.
    drop(held);
    until(&admin, "SHOW PEER_POOLS", in_flight("0")).await;
}
