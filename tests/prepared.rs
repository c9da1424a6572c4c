//! Named prepared statements in transaction mode: whatever backend serves the next transaction
//! has the client's statements, and no client sees another's names.

mod common;

use common::wire::{bind, execute, frame, parse, sync, Msg, RawClient};
use common::*;
use tidepool::config::Config;

async fn proxy(pool_size: usize) -> tidepool::app::Proxy {
    let toml = base_config_toml(tokio::task::block_in_place(pg)).replace(
        "default_pool_size = 10",
        &format!("default_pool_size = {pool_size}"),
    );
    start_proxy(Config::from_toml(&toml).unwrap()).await
}

fn tags(msgs: &[Msg]) -> String {
    msgs.iter().map(|m| m.tag as char).collect()
}

/// Parse + Sync of statement `name`, answered ParseComplete, ReadyForQuery.
fn prepare_named(c: &mut RawClient, name: &str, sql: &str) {
    let mut msg = parse(name, sql);
    msg.extend(sync());
    c.send(&msg);
    assert_eq!(tags(&c.until_ready()), "1Z");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_postgres_prepared_statements_across_many_transactions_and_backends() {
    let proxy = proxy(3).await;
    let addr = proxy.local_addr();
    let mut tasks = Vec::new();
    for c in 0..8 {
        tasks.push(tokio::spawn(async move {
            let client = connect(addr, APP_USER, APP_PASSWORD, APP_DB).await;
            let add = client.prepare("SELECT $1::int + $2::int").await.unwrap();
            let pid = client.prepare("SELECT pg_backend_pid()").await.unwrap();
            let mut pids = std::collections::HashSet::new();
            for i in 0..50 {
                let row = client.query_one(&add, &[&i, &c]).await.unwrap();
                assert_eq!(row.get::<_, i32>(0), i + c);
                pids.insert(client.query_one(&pid, &[]).await.unwrap().get::<_, i32>(0));
            }
            // query() prepares an unnamed-then-named statement each time.
            let n: i64 = client
                .query_one("SELECT count(*) FROM generate_series(1, $1::int)", &[&c])
                .await
                .unwrap()
                .get(0);
            assert_eq!(n, c as i64);
            pids.len()
        }));
    }
    let mut max_backends = 0;
    for t in tasks {
        max_backends = max_backends.max(t.await.unwrap());
    }
    assert!(max_backends > 1, "statements were used on several backends");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_before_bind_unknown_names_and_reuse_after_close() {
    let proxy = proxy(2).await;
    let addr = proxy.local_addr();
    tokio::task::spawn_blocking(move || {
        let (mut a, _) = RawClient::login(addr, APP_USER, APP_PASSWORD, APP_DB);
        let (mut b, _) = RawClient::login(addr, APP_USER, APP_PASSWORD, APP_DB);
        // a prepares in one transaction…
        prepare_named(&mut a, "st", "SELECT $1::int * 2");
        // …b keeps a backend busy in a transaction, so a's next one may land elsewhere.
        b.send(&common::wire::query("BEGIN"));
        b.until_ready();
        // Describe before Bind, on whatever backend a gets now.
        let mut describe = b"S".to_vec();
        describe.extend_from_slice(b"st\0");
        let mut msg = frame(b'D', &describe);
        msg.extend(sync());
        a.send(&msg);
        assert_eq!(tags(&a.until_ready()), "tTZ");
        // Bind with a parameter, Execute.
        let mut bind_body = b"\0st\0".to_vec();
        bind_body.extend_from_slice(&0i16.to_be_bytes());
        bind_body.extend_from_slice(&1i16.to_be_bytes());
        bind_body.extend_from_slice(&2i32.to_be_bytes());
        bind_body.extend_from_slice(b"21");
        bind_body.extend_from_slice(&0i16.to_be_bytes());
        let mut msg = frame(b'B', &bind_body);
        msg.extend(execute());
        msg.extend(sync());
        a.send(&msg);
        let msgs = a.until_ready();
        assert_eq!(tags(&msgs), "2DCZ");
        assert_eq!(msgs[1].first_value().as_deref(), Some("42"));
        // b never sees a's statement name.
        let mut msg = bind("st");
        msg.extend(execute());
        msg.extend(sync());
        b.send(&msg);
        let msgs = b.until_ready();
        assert_eq!(msgs[0].sqlstate().as_deref(), Some("26000"), "{msgs:?}");
        b.send(&common::wire::query("ROLLBACK"));
        b.until_ready();
        // Close, then the name is free again (with another text).
        let mut msg = frame(b'C', b"Sst\0");
        msg.extend(parse("st", "SELECT 'again'"));
        msg.extend(bind("st"));
        msg.extend(execute());
        msg.extend(sync());
        a.send(&msg);
        let msgs = a.until_ready();
        assert_eq!(tags(&msgs), "312DCZ");
        assert_eq!(msgs[3].first_value().as_deref(), Some("again"));
        // Parse of an existing name is 42P05, and the batch is skipped up to Sync.
        let mut msg = parse("st", "SELECT 1");
        msg.extend(bind("st"));
        msg.extend(execute());
        msg.extend(sync());
        a.send(&msg);
        let msgs = a.until_ready();
        assert_eq!(tags(&msgs), "EZ");
        assert_eq!(msgs[0].sqlstate().as_deref(), Some("42P05"));
    })
    .await
    .unwrap();
    proxy.shutdown().await;
}

/// Runs pgbench through `addr`; panics with its output unless it succeeds.
fn pgbench(addr: std::net::SocketAddr, args: &[&str]) -> String {
    let out = pg_tool_cmd("pgbench", addr, APP_USER, APP_PASSWORD, APP_DB)
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "pgbench {args:?}:\n{text}");
    text
}

/// Both shapes share one pgbench database, so they run one after the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_prepared_mode_through_small_pools() {
    for (pool_size, clients) in [(5, "50"), (20, "256")] {
        let proxy = proxy(pool_size).await;
        let addr = proxy.local_addr();
        tokio::task::spawn_blocking(move || {
            if pool_size == 5 {
                pgbench(addr, &["-i", "-q", "-s", "2"]);
            }
            for extra in [&["-S"][..], &[][..]] {
                let mut args = vec!["-M", "prepared", "-c", clients, "-j", "2", "-T", "5"];
                args.extend_from_slice(extra);
                let out = pgbench(addr, &args);
                assert!(
                    out.contains("number of failed transactions: 0 (0.000%)"),
                    "{args:?}:\n{out}"
                );
            }
        })
        .await
        .unwrap();
        proxy.shutdown().await;
    }
}

/// The first column of the first row of a simple query, or the error's SQLSTATE.
async fn value_or_code(client: &tokio_postgres::Client, sql: &str) -> Result<String, String> {
    match client.simple_query(sql).await {
        Ok(rows) => Ok(first_value(&rows)),
        Err(e) => Err(e
            .code()
            .map(|c| c.code().to_string())
            .unwrap_or_else(|| e.to_string())),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_level_prepare_follows_each_client_on_a_shared_backend() {
    let proxy = proxy(1).await;
    let addr = proxy.local_addr();
    let a = connect(addr, APP_USER, APP_PASSWORD, APP_DB).await;
    let b = connect(addr, APP_USER, APP_PASSWORD, APP_DB).await;
    // Same name, different texts, one backend for both.
    a.batch_execute("PREPARE q (int) AS SELECT 'a:' || $1")
        .await
        .unwrap();
    b.batch_execute("SELECT 1; PREPARE q (int) AS SELECT 'b:' || ($1 * 10); SELECT 2")
        .await
        .unwrap();
    for i in 0..20 {
        assert_eq!(
            value_or_code(&a, &format!("EXECUTE q({i})")).await,
            Ok(format!("a:{i}"))
        );
        assert_eq!(
            value_or_code(&b, &format!("EXECUTE q({i})")).await,
            Ok(format!("b:{}", i * 10))
        );
    }
    // Inside explicit transactions and through the extended protocol too.
    let rows = a.simple_query("BEGIN; EXECUTE q(7); COMMIT").await.unwrap();
    assert_eq!(first_value(&rows), "a:7");
    let row = b.query_one("EXECUTE q(3)", &[]).await.unwrap();
    assert_eq!(row.get::<_, String>(0), "b:30");
    // PostgreSQL's own errors: the name exists for a, does not for a third client.
    assert_eq!(
        value_or_code(&a, "PREPARE q AS SELECT 1").await,
        Err("42P05".to_string())
    );
    let c = connect(addr, APP_USER, APP_PASSWORD, APP_DB).await;
    assert_eq!(value_or_code(&c, "EXECUTE q(1)").await, Err("26000".to_string()));
    assert_eq!(value_or_code(&c, "DEALLOCATE q").await, Err("26000".to_string()));
    // c may use the name for itself, without disturbing a or b.
    c.batch_execute("PREPARE q AS SELECT 'c'").await.unwrap();
    assert_eq!(value_or_code(&c, "EXECUTE q").await, Ok("c".to_string()));
    assert_eq!(value_or_code(&a, "EXECUTE q(1)").await, Ok("a:1".to_string()));
    // DEALLOCATE: gone for a only.
    a.batch_execute("DEALLOCATE q").await.unwrap();
    assert_eq!(value_or_code(&a, "EXECUTE q(1)").await, Err("26000".to_string()));
    assert_eq!(value_or_code(&b, "EXECUTE q(1)").await, Ok("b:10".to_string()));
    // DEALLOCATE ALL and DISCARD ALL clear the client's set, and the name is free again.
    b.batch_execute("PREPARE r AS SELECT 'r'; DEALLOCATE ALL")
        .await
        .unwrap();
    assert_eq!(value_or_code(&b, "EXECUTE q(1)").await, Err("26000".to_string()));
    assert_eq!(value_or_code(&b, "EXECUTE r").await, Err("26000".to_string()));
    c.batch_execute("DISCARD ALL").await.unwrap();
    assert_eq!(value_or_code(&c, "EXECUTE q").await, Err("26000".to_string()));
    a.batch_execute("PREPARE q AS SELECT 'a again'").await.unwrap();
    assert_eq!(value_or_code(&a, "EXECUTE q").await, Ok("a again".to_string()));
    // Nothing pinned anyone.
    assert_eq!(
        proxy
            .shared()
            .stats
            .pinned_clients
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_level_prepare_moves_between_backends() {
    let proxy = proxy(2).await;
    let addr = proxy.local_addr();
    let a = connect(addr, APP_USER, APP_PASSWORD, APP_DB).await;
    let b = connect(addr, APP_USER, APP_PASSWORD, APP_DB).await;
    a.batch_execute("PREPARE pid_and (int) AS SELECT pg_backend_pid() || ':' || $1")
        .await
        .unwrap();
    let mut pids = std::collections::HashSet::new();
    for i in 0..10 {
        // b holds one backend in a transaction half of the time, so a has to move.
        if i % 2 == 0 {
            b.batch_execute("BEGIN").await.unwrap();
        }
        let got = value_or_code(&a, &format!("EXECUTE pid_and({i})")).await.unwrap();
        let (pid, n) = got.split_once(':').unwrap();
        assert_eq!(n, i.to_string());
        pids.insert(pid.to_string());
        if i % 2 == 0 {
            b.batch_execute("COMMIT").await.unwrap();
        }
    }
    assert_eq!(pids.len(), 2, "the statement ran on both backends");
    proxy.shutdown().await;
}

async fn simple_rows(client: &tokio_postgres::Client, sql: &str) -> Vec<tokio_postgres::SimpleQueryRow> {
    let messages = client.simple_query(sql).await.unwrap();
    messages
        .into_iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => Some(row),
            _ => None,
        })
        .collect()
}

fn sqlstate(e: &tokio_postgres::Error) -> String {
    e.code()
        .map(|c| c.code().to_string())
        .unwrap_or_else(|| e.to_string())
}

/// Bind + Describe portal + Execute + Sync of statement `name`, as psycopg 3 and node-postgres
/// send every execution of a prepared statement.
fn execute_described(name: &str) -> Vec<u8> {
    let mut msg = bind(name);
    msg.extend(frame(b'D', b"P\0"));
    msg.extend(execute());
    msg.extend(sync());
    msg
}

/// Fields in a RowDescription.
fn column_count(msg: &Msg) -> i16 {
    assert_eq!(msg.tag, b'T', "{msg:?}");
    i16::from_be_bytes([msg.body[0], msg.body[1]])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_change_under_a_prepared_statement_is_retried_transparently() {
    let proxy = proxy(1).await;
    let addr = proxy.local_addr();
    let pg_addr = std::net::SocketAddr::from(([127, 0, 0, 1], tokio::task::block_in_place(pg).port));
    let admin = connect(pg_addr, APP_USER, APP_PASSWORD, APP_DB).await;
    admin
        .batch_execute(
            "DROP TABLE IF EXISTS sc_t; CREATE TABLE sc_t (id int); INSERT INTO sc_t VALUES (1), (2)",
        )
        .await
        .unwrap();
    let select = "SELECT * FROM sc_t ORDER BY id";
    // tokio-postgres (describes once, at prepare) and a psycopg-style raw client (describes the
    // portal at every execution), each directly and through tidepool.
    let direct = connect(pg_addr, APP_USER, APP_PASSWORD, APP_DB).await;
    let via = connect(addr, APP_USER, APP_PASSWORD, APP_DB).await;
    let direct_stmt = direct.prepare(select).await.unwrap();
    let stmt = via.prepare(select).await.unwrap();
    assert_eq!(via.query(&stmt, &[]).await.unwrap().len(), 2);
    let raw = |addr| {
        let (mut c, _) = RawClient::login(addr, APP_USER, APP_PASSWORD, APP_DB);
        // The same text as tokio-postgres's: one statement on the backend for both clients.
        prepare_named(&mut c, "ps", select);
        c.send(&execute_described("ps"));
        let msgs = c.until_ready();
        assert_eq!(tags(&msgs), "2TDDCZ");
        assert_eq!(column_count(&msgs[1]), 1);
        c
    };
    let (mut raw_direct, mut raw_via) = tokio::task::spawn_blocking(move || (raw(pg_addr), raw(addr)))
        .await
        .unwrap();
    direct
        .batch_execute(&format!("PREPARE sc_sql AS {select}"))
        .await
        .unwrap();
    via.batch_execute(&format!("PREPARE sc_sql AS {select}"))
        .await
        .unwrap();
    assert_eq!(simple_rows(&via, "EXECUTE sc_sql").await.len(), 2);

    admin
        .batch_execute("ALTER TABLE sc_t ADD COLUMN extra text DEFAULT 'x'")
        .await
        .unwrap();
    // PostgreSQL itself refuses to run the stale statements…
    let e = direct.simple_query("EXECUTE sc_sql").await.unwrap_err();
    assert_eq!(sqlstate(&e), "0A000", "{e}");
    let (raw_direct, mut raw_via) = tokio::task::spawn_blocking(move || {
        raw_direct.send(&execute_described("ps"));
        let msgs = raw_direct.until_ready();
        assert_eq!(tags(&msgs), "EZ");
        assert_eq!(msgs[0].sqlstate().as_deref(), Some("0A000"));
        // …tidepool prepares them again and retries: the client sees only the result, with
        // the new column described.
        raw_via.send(&execute_described("ps"));
        let msgs = raw_via.until_ready();
        assert_eq!(tags(&msgs), "2TDDCZ", "{msgs:?}");
        assert_eq!(column_count(&msgs[1]), 2);
        (raw_direct, raw_via)
    })
    .await
    .unwrap();
    let rows = simple_rows(&via, "EXECUTE sc_sql").await;
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].len(), 2, "the new column is there");
    assert_eq!(rows[0].get(1), Some("x"));
    // A client that executes on a description cached before the change gets PostgreSQL's
    // error (rows of the new shape would not match what it expects)…
    let e = direct.query(&direct_stmt, &[]).await.unwrap_err();
    assert_eq!(sqlstate(&e), "0A000", "{e}");
    let e = via.query(&stmt, &[]).await.unwrap_err();
    assert_eq!(sqlstate(&e), "0A000", "{e}");
    // …and preparing again, on the same backend, learns the new columns.
    let again = via.prepare(select).await.unwrap();
    assert_eq!(again.columns().len(), 2);
    let rows = via.query(&again, &[]).await.unwrap();
    assert_eq!(rows[1].get::<_, &str>(1), "x");

    // Inside a transaction block PostgreSQL's error stands, as it would directly.
    admin
        .batch_execute("ALTER TABLE sc_t ADD COLUMN more int")
        .await
        .unwrap();
    tokio::task::spawn_blocking(move || {
        raw_via.send(&common::wire::query("BEGIN"));
        raw_via.until_ready();
        raw_via.send(&execute_described("ps"));
        let msgs = raw_via.until_ready();
        assert_eq!(tags(&msgs), "EZ");
        assert_eq!(msgs[0].sqlstate().as_deref(), Some("0A000"));
        raw_via.send(&common::wire::query("ROLLBACK"));
        raw_via.until_ready();
        // Outside it, the retry works again.
        raw_via.send(&execute_described("ps"));
        let msgs = raw_via.until_ready();
        assert_eq!(tags(&msgs), "2TDDCZ", "{msgs:?}");
        assert_eq!(column_count(&msgs[1]), 3);
        drop(raw_direct);
    })
    .await
    .unwrap();
    proxy.shutdown().await;
}

/// node-postgres' first execution of a named query: Parse(name) + Bind + Describe portal +
/// Execute + Sync in one write (later ones drop the Parse).
fn node_first_execution(name: &str, sql: &str) -> Vec<u8> {
    let mut msg = parse(name, sql);
    msg.extend(execute_described(name));
    msg
}

/// Issue 15, item 6 (node-postgres): after a column's type changes, a client that prepares
/// the query by name for the first time (a new connection, as node-postgres opens one per
/// `Client`) gets its rows directly, its statement being new. Through tidepool the text
/// matched a shared statement prepared before the change on the pool's only backend, and the
/// ParseComplete tidepool answered for it counted as an answer, so the stale-plan error was not
/// retried. Then the clients that prepared before the change run theirs again. Each step's
/// messages are compared with a direct connection's (whose own old statements fail with
/// 0A000, which tidepool retries: see above).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_named_execution_after_a_column_type_change_gets_the_new_rows() {
    let proxy = proxy(1).await;
    let addr = proxy.local_addr();
    let pg_addr = std::net::SocketAddr::from(([127, 0, 0, 1], tokio::task::block_in_place(pg).port));
    let admin = connect(pg_addr, APP_USER, APP_PASSWORD, APP_DB).await;
    admin
        .batch_execute(
            "DROP TABLE IF EXISTS nt_t; CREATE TABLE nt_t (id int, v int); INSERT INTO nt_t VALUES (1, 10)",
        )
        .await
        .unwrap();
    let select = "SELECT * FROM nt_t ORDER BY id";
    let first = |addr| {
        let (mut c, _) = RawClient::login(addr, APP_USER, APP_PASSWORD, APP_DB);
        c.send(&node_first_execution("all-rows", select));
        let msgs = c.until_ready();
        assert_eq!(tags(&msgs), "12TDCZ", "{msgs:?}");
        (c, msgs)
    };
    let (mut old_direct, mut old_via) =
        tokio::task::spawn_blocking(move || (first(pg_addr).0, first(addr).0))
            .await
            .unwrap();
    admin
        .batch_execute("ALTER TABLE nt_t ALTER COLUMN v TYPE text")
        .await
        .unwrap();
    tokio::task::spawn_blocking(move || {
        for round in 0..2 {
            // New clients, first execution: the new column type in RowDescription, as directly.
            let (_, direct) = first(pg_addr);
            let (_, via) = first(addr);
            assert_eq!(via, direct, "round {round}");
            // The old clients again: Bind + Describe + Execute + Sync.
            old_direct.send(&execute_described("all-rows"));
            let direct = old_direct.until_ready();
            assert_eq!(tags(&direct), "EZ");
            assert_eq!(direct[0].sqlstate().as_deref(), Some("0A000"));
            old_via.send(&execute_described("all-rows"));
            let via = old_via.until_ready();
            assert_eq!(tags(&via), "2TDCZ", "round {round}: {via:?}");
        }
    })
    .await
    .unwrap();
    proxy.shutdown().await;
}

/// A DISCARD ALL that PostgreSQL refused (inside a transaction block: 25001) left the backend's
/// statements in place, another client's among them: preparing that one again on the backend
/// must not collide with the copy it still holds (42P05).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_discard_all_does_not_leave_the_backends_statements_unaccounted() {
    let proxy = proxy(1).await;
    let addr = proxy.local_addr();
    tokio::task::spawn_blocking(move || {
        let (mut a, _) = RawClient::login(addr, APP_USER, APP_PASSWORD, APP_DB);
        let (mut b, _) = RawClient::login(addr, APP_USER, APP_PASSWORD, APP_DB);
        // b's statement, on the pool's one backend.
        prepare_named(&mut b, "s1", "SELECT 'kept'");
        // a's DISCARD ALL on that backend, refused.
        a.send(&common::wire::query("BEGIN"));
        a.until_ready();
        a.send(&common::wire::query("DISCARD ALL"));
        let msgs = a.until_ready();
        assert!(
            msgs.iter().any(|m| m.sqlstate().as_deref() == Some("25001")),
            "DISCARD ALL in a transaction block is refused: {msgs:?}"
        );
        a.send(&common::wire::query("ROLLBACK"));
        a.until_ready();
        // b runs its statement on the same backend, which still holds it.
        let mut msg = bind("s1");
        msg.extend(execute());
        msg.extend(sync());
        b.send(&msg);
        let msgs = b.until_ready();
        assert_eq!(tags(&msgs), "2DCZ", "{msgs:?}");
        assert_eq!(msgs[1].first_value().as_deref(), Some("kept"));
    })
    .await
    .unwrap();
    proxy.shutdown().await;
}
