//! The console's numbers against real traffic: SHOW STATS parse/bind counts and the averages
//! of `stats_period`, SHOW POOLS' cancel and server columns, SHOW MEM in bytes.

mod common;

use common::console::*;
use common::*;
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_postgres::Client;

/// The admin config with one backend per pool (so which backend has which statement is
/// known) and `extra` lines in `[proxy]`.
fn config(extra: &str) -> tidepool::config::Config {
    config_with(extra, "")
}

/// [`config`] with `pool` lines in `[pool]` too.
fn config_with(proxy: &str, pool: &str) -> tidepool::config::Config {
    let toml = admin_config_toml()
        .replace(
            "default_pool_size = 10",
            &format!("default_pool_size = 1\n{pool}"),
        )
        .replace("[proxy]\n", &format!("[proxy]\n{proxy}\n"));
    tidepool::config::Config::from_toml(&toml).expect("valid config")
}

/// A direct connection to PostgreSQL (not through tidepool).
async fn direct() -> Client {
    let addr: SocketAddr = format!("127.0.0.1:{}", pg().port).parse().unwrap();
    connect(addr, APP_USER, APP_PASSWORD, APP_DB).await
}

fn number(table: &Table, column: &str) -> u64 {
    let row = table.rows_where("database", APP_DB)[0];
    table.get(row, column).unwrap().parse().unwrap()
}

/// (client_parse_count, server_parse_count, bind_count) of the app database.
async fn parse_bind(admin: &Client) -> (u64, u64, u64) {
    let t = show(admin, "SHOW STATS_TOTALS").await;
    (
        number(&t, "client_parse_count"),
        number(&t, "server_parse_count"),
        number(&t, "bind_count"),
    )
}

/// Polls until the counts are `base` plus `delta` (a session adds its counts a moment after
/// the client has its answer), then checks they stay exact.
async fn expect_counts(admin: &Client, base: (u64, u64, u64), delta: (u64, u64, u64)) {
    let want = (base.0 + delta.0, base.1 + delta.1, base.2 + delta.2);
    for _ in 0..1000 {
        if parse_bind(admin).await == want {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(
        parse_bind(admin).await,
        want,
        "(client parses, server parses, binds)"
    );
}

#[tokio::test]
async fn show_stats_counts_parse_and_bind_messages() {
    let proxy = start_proxy(config("")).await;
    let addr = proxy.local_addr();
    let admin = console(addr, ADMIN).await;
    let a = app_client(addr, "a").await;
    let b = app_client(addr, "b").await;
    let base = parse_bind(&admin).await;

    // A's Parse reaches the backend (PostgreSQL has not seen the text yet).
    let stmt_a = a.prepare("SELECT $1::int + 100").await.unwrap();
    expect_counts(&admin, base, (1, 1, 0)).await;
    let row = a.query_one(&stmt_a, &[&1i32]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 101);
    expect_counts(&admin, base, (1, 1, 1)).await;

    // B prepares the same text: answered by tidepool, no Parse for the server; its Bind runs
    // on the one backend, which has the statement already.
    let stmt_b = b.prepare("SELECT $1::int + 100").await.unwrap();
    expect_counts(&admin, base, (2, 1, 1)).await;
    assert_eq!(
        b.query_one(&stmt_b, &[&2i32]).await.unwrap().get::<_, i32>(0),
        102
    );
    expect_counts(&admin, base, (2, 1, 2)).await;

    // A new backend lacks it: tidepool sends a Parse before A's Bind.
    admin.simple_query("RECONNECT app").await.unwrap();
    assert_eq!(
        a.query_one(&stmt_a, &[&3i32]).await.unwrap().get::<_, i32>(0),
        103
    );
    expect_counts(&admin, base, (2, 2, 3)).await;
    proxy.shutdown_within(std::time::Duration::from_secs(5)).await;
}

#[tokio::test]
async fn show_stats_averages_cover_the_last_stats_period() {
    let proxy = start_proxy(config("stats_period = \"1s\"")).await;
    let addr = proxy.local_addr();
    let admin = console(addr, ADMIN).await;
    let app = app_client(addr, "busy").await;
    let config = show(&admin, "SHOW CONFIG").await;
    let row = config.rows_where("key", "stats_period")[0];
    assert_eq!(config.get(row, "value"), Some("1000ms"));
    assert_eq!(config.get(row, "default"), Some("60000ms"));
    assert_eq!(config.get(row, "changeable"), Some("yes"));

    let statement = app.prepare("SELECT $1::int").await.unwrap();
    for i in 0..20i32 {
        app.query_one(&statement, &[&i]).await.unwrap();
    }
    // Within a period or two the traffic shows as rates per second and a mean query time.
    let averages = until(&admin, "SHOW STATS_AVERAGES", |t| {
        number(t, "query_count") > 0 && number(t, "avg_bind_count") > 0
    })
    .await;
    assert!(number(&averages, "xact_count") > 0);
    assert!(number(&averages, "query_time") > 0);
    // Idle afterwards: a later period averages nothing.
    until(&admin, "SHOW STATS_AVERAGES", |t| number(t, "query_count") == 0).await;
    // Totals are untouched by the periods.
    let totals = show(&admin, "SHOW STATS_TOTALS").await;
    assert!(number(&totals, "bind_count") >= 20);

    // Reloadable: SET applies from the next period.
    admin.simple_query("SET stats_period = '2s'").await.unwrap();
    let config = show(&admin, "SHOW CONFIG").await;
    let row = config.rows_where("key", "stats_period")[0];
    assert_eq!(config.get(row, "value"), Some("2000ms"));
    proxy.shutdown_within(std::time::Duration::from_secs(5)).await;
}

#[tokio::test]
async fn show_pools_counts_servers_due_for_a_check_and_being_checked() {
    // Every idle backend needs server_check_query before serving again; the check waits on an
    // advisory lock the test holds, so "being checked" lasts as long as the test wants.
    let check = "server_check_delay = \"0s\"\n\
                 server_check_query = \"SELECT pg_advisory_lock(4242); SELECT pg_advisory_unlock(4242)\"";
    let proxy = start_proxy(config_with("", check)).await;
    let addr = proxy.local_addr();
    let admin = console(addr, ADMIN).await;
    let app = app_client(addr, "checked").await;
    app.simple_query("SELECT 1").await.unwrap();
    let t = until(&admin, "SHOW POOLS", |t| {
        number(t, "sv_used") == 1 && number(t, "cl_active") == 1
    })
    .await;
    assert_eq!(
        number(&t, "sv_idle"),
        0,
        "an idle backend due for a check is sv_used"
    );
    assert_eq!(number(&t, "sv_tested"), 0);

    let holder = direct().await;
    holder
        .simple_query("SELECT pg_advisory_lock(4242)")
        .await
        .unwrap();
    let query = tokio::spawn(async move { app.simple_query("SELECT 2").await.map(|r| first_value(&r)) });
    let t = until(&admin, "SHOW POOLS", |t| number(t, "sv_tested") == 1).await;
    assert_eq!(number(&t, "sv_used"), 0);
    assert_eq!(
        number(&t, "sv_active"),
        0,
        "a backend being checked is not active yet"
    );
    assert_eq!(number(&t, "cl_waiting"), 1, "its client waits meanwhile");
    let servers = show(&admin, "SHOW SERVERS").await;
    assert_eq!(servers.rows_where("state", "tested").len(), 1);

    holder
        .simple_query("SELECT pg_advisory_unlock(4242)")
        .await
        .unwrap();
    assert_eq!(query.await.unwrap().unwrap(), "2");
    until(&admin, "SHOW POOLS", |t| number(t, "sv_tested") == 0).await;
    proxy.shutdown_within(std::time::Duration::from_secs(5)).await;
}

/// A TCP forwarder to `target` that holds every cancel request until `release` is set, then
/// passes it on; everything else passes at once.
async fn cancel_holding_forwarder(target: SocketAddr) -> (SocketAddr, tokio::sync::watch::Sender<bool>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (release, released) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let mut released = released.clone();
            tokio::spawn(async move {
                // Every opening packet (startup, SSLRequest, CancelRequest) has 8 bytes or more.
                let mut head = [0u8; 8];
                inbound.read_exact(&mut head).await?;
                if head == [0, 0, 0, 16, 0x04, 0xd2, 0x16, 0x2e] {
                    let _ = released.wait_for(|go| *go).await;
                }
                let mut outbound = tokio::net::TcpStream::connect(target).await?;
                outbound.write_all(&head).await?;
                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await?;
                Ok::<(), std::io::Error>(())
            });
        }
    });
    (addr, release)
}

#[tokio::test]
async fn show_pools_counts_cancel_requests_in_flight() {
    let pg_addr: SocketAddr = format!("127.0.0.1:{}", pg().port).parse().unwrap();
    let (forwarder, release) = cancel_holding_forwarder(pg_addr).await;
    let toml = admin_config_toml().replace(
        &format!("port = {}", pg().port),
        &format!("port = {}", forwarder.port()),
    );
    let proxy = start_proxy(tidepool::config::Config::from_toml(&toml).unwrap()).await;
    let addr = proxy.local_addr();
    let admin = console(addr, ADMIN).await;
    let app = app_client(addr, "canceled").await;
    let token = app.cancel_token();
    let query = tokio::spawn(async move { app.simple_query("SELECT pg_sleep(60)").await });
    let watcher = direct().await;
    for _ in 0..1000 {
        let running = watcher
            .simple_query("SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(60)'")
            .await
            .unwrap();
        if first_value(&running) == "1" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }

    // The cancel reaches tidepool, which forwards it; the forwarder holds it.
    let cancel = tokio::spawn(async move { token.cancel_query(tokio_postgres::NoTls).await });
    let t = until(&admin, "SHOW POOLS", |t| number(t, "cl_active_cancel_req") == 1).await;
    assert_eq!(number(&t, "sv_active_cancel"), 1);
    assert_eq!(number(&t, "cl_waiting_cancel_req"), 0);
    assert_eq!(number(&t, "sv_being_canceled"), 0);

    release.send_replace(true);
    let error = query.await.unwrap().expect_err("canceled");
    assert_eq!(sqlstate(&error), "57014");
    cancel.await.unwrap().expect("the cancel request was sent");
    until(&admin, "SHOW POOLS", |t| number(t, "cl_active_cancel_req") == 0).await;
    proxy.shutdown_within(std::time::Duration::from_secs(5)).await;
}

#[tokio::test]
async fn show_mem_reports_bytes() {
    let proxy = start_proxy(config("")).await;
    let addr = proxy.local_addr();
    let admin = console(addr, ADMIN).await;
    let app = app_client(addr, "mem").await;
    app.prepare("SELECT $1::int * 2").await.unwrap();
    let mem = until(&admin, "SHOW MEM", |t| {
        t.rows_where("name", "prepared_statements")
            .first()
            .is_some_and(|r| t.get(r, "used") != Some("0"))
    })
    .await;
    assert_eq!(mem.columns, ["name", "size", "used", "free", "memtotal"]);
    for row in &mem.rows {
        let n = |c: &str| -> u64 { mem.get(row, c).unwrap().parse().unwrap() };
        assert!(n("size") > 0, "{row:?}");
        assert_eq!(n("memtotal"), n("size") * (n("used") + n("free")), "{row:?}");
    }
    let row = mem.rows_where("name", "servers")[0];
    let server_size: u64 = mem.get(row, "size").unwrap().parse().unwrap();
    assert!(
        server_size > 8192,
        "a backend's read buffer is part of its size: {server_size}"
    );
    let row = mem.rows_where("name", "clients")[0];
    assert_ne!(mem.get(row, "used"), Some("0"));

    // SHOW LISTS: nobody is logging in now (the two clients are logged in).
    let lists = show(&admin, "SHOW LISTS").await;
    let row = lists.rows_where("list", "login_clients")[0];
    assert_eq!(lists.get(row, "items"), Some("0"));
    proxy.shutdown_within(std::time::Duration::from_secs(5)).await;
}
