//! Issue 15, items 5 and 7: prepared statement names through tidepool behave as on a direct
//! connection. SQL `DEALLOCATE name | ALL | PREPARE name` reaches a client's protocol-level
//! statements (psycopg 3 evicts with `DEALLOCATE _pg3_0`), and no client can Bind, Describe,
//! EXECUTE, EXPLAIN EXECUTE, DEALLOCATE or PREPARE over tidepool's `tp<N>` statements prepared for
//! another client on a shared backend: it gets exactly what PostgreSQL answers for a name it does
//! not have. Each scenario runs on a direct connection and through tidepool, and the transcripts
//! must be equal.

mod common;

use common::wire::{bind, execute, frame, parse, query, sync, Msg, RawClient};
use common::*;
use std::net::SocketAddr;
use tidepool::config::Config;

async fn proxy(mode: &str) -> tidepool::app::Proxy {
    // One server connection: every client shares the same backend.
    let toml = base_config_toml(tokio::task::block_in_place(pg))
        .replace("pool_mode = \"transaction\"", &format!("pool_mode = \"{mode}\""))
        .replace("default_pool_size = 10", "default_pool_size = 1");
    start_proxy(Config::from_toml(&toml).unwrap()).await
}

/// A message as the transcript shows it: tag, then what distinguishes it.
fn line(m: &Msg) -> Option<String> {
    let text = |b: &[u8]| String::from_utf8_lossy(b.strip_suffix(&[0]).unwrap_or(b)).into_owned();
    Some(match m.tag {
        b'E' => format!("E {} {}", m.sqlstate()?, m.message()?),
        b'C' => format!("C {}", text(&m.body)),
        b'Z' => format!("Z {}", m.body[0] as char),
        b'D' => format!("D {}", m.first_value().unwrap_or_default()),
        // Asynchronous or per-server details.
        b'S' | b'N' | b'K' => return None,
        other => (other as char).to_string(),
    })
}

/// Sends `bytes` and reads up to the `readies`-th ReadyForQuery.
fn run(c: &mut RawClient, bytes: &[u8], readies: usize) -> Vec<String> {
    c.send(bytes);
    let mut out = Vec::new();
    for _ in 0..readies {
        out.extend(c.until_ready().iter().filter_map(line));
    }
    out
}

fn login(addr: SocketAddr) -> RawClient {
    RawClient::login(addr, APP_USER, APP_PASSWORD, APP_DB).0
}

fn describe_statement(name: &str) -> Vec<u8> {
    let mut body = vec![b'S'];
    body.extend_from_slice(name.as_bytes());
    body.push(0);
    frame(b'D', &body)
}

fn cat(parts: &[Vec<u8>]) -> Vec<u8> {
    parts.concat()
}

/// psycopg-style eviction: SQL DEALLOCATE of protocol statements, simple and extended.
fn deallocate_scenario(addr: SocketAddr, other: Option<SocketAddr>) -> Vec<String> {
    let mut c = login(addr);
    let mut t = Vec::new();
    t.extend(run(&mut c, &cat(&[parse("_pg3_0", "SELECT 40 + 2"), sync()]), 1));
    t.extend(run(
        &mut c,
        &cat(&[parse("_pg3_1", "SELECT 43"), parse("_pg3_2", "SELECT 44"), sync()]),
        1,
    ));
    if let Some(other) = other {
        // Another client's DISCARD ALL on the shared backend: the statements are gone there,
        // still the client's (this exercises the path where tidepool must prepare nothing).
        let mut o = login(other);
        run(&mut o, &query("DISCARD ALL"), 1);
    }
    t.extend(run(&mut c, &query("DEALLOCATE _pg3_0"), 1));
    t.extend(run(&mut c, &cat(&[bind("_pg3_0"), execute(), sync()]), 1));
    // Extended protocol, as psycopg sends it (send_query_params).
    t.extend(run(
        &mut c,
        &cat(&[
            parse("", "DEALLOCATE PREPARE _pg3_1"),
            bind(""),
            execute(),
            sync(),
        ]),
        1,
    ));
    t.extend(run(&mut c, &cat(&[bind("_pg3_1"), execute(), sync()]), 1));
    t.extend(run(&mut c, &cat(&[bind("_pg3_2"), execute(), sync()]), 1));
    t.extend(run(&mut c, &query("DEALLOCATE ALL"), 1));
    t.extend(run(&mut c, &cat(&[bind("_pg3_2"), execute(), sync()]), 1));
    // Names can be prepared again and work.
    t.extend(run(
        &mut c,
        &cat(&[parse("_pg3_0", "SELECT 7"), bind("_pg3_0"), execute(), sync()]),
        1,
    ));
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_deallocate_reaches_protocol_statements_in_both_modes() {
    let direct = tokio::task::block_in_place(pg).addr();
    for mode in ["transaction", "session"] {
        let proxy = proxy(mode).await;
        let addr = proxy.local_addr();
        let session = mode == "session";
        let (expected, got, again) = tokio::task::spawn_blocking(move || {
            let expected = deallocate_scenario(direct, None);
            let got = deallocate_scenario(addr, None);
            // Session mode has one backend per client: the DISCARD ALL client would wait.
            let again = (!session).then(|| deallocate_scenario(addr, Some(addr)));
            (expected, got, again)
        })
        .await
        .unwrap();
        assert!(
            expected.contains(&"E 26000 prepared statement \"_pg3_0\" does not exist".to_string()),
            "{expected:#?}"
        );
        assert_eq!(got, expected, "{mode}");
        if let Some(again) = again {
            assert_eq!(again, expected, "{mode}, statements missing on the backend");
        }
        proxy.shutdown().await;
    }
}

/// What a client that guesses `name` (another client's statement) can do with it.
fn guessing_scenario(addr: SocketAddr, name: &str) -> Vec<String> {
    let mut c = login(addr);
    let mut t = Vec::new();
    t.extend(run(&mut c, &cat(&[bind(name), execute(), sync()]), 1));
    t.extend(run(&mut c, &cat(&[describe_statement(name), sync()]), 1));
    t.extend(run(&mut c, &query(&format!("EXECUTE {name}")), 1));
    t.extend(run(&mut c, &query(&format!("EXPLAIN EXECUTE {name}")), 1));
    t.extend(run(
        &mut c,
        &query(&format!("SELECT 1; DEALLOCATE \"{name}\"")),
        1,
    ));
    t.extend(run(
        &mut c,
        &query(&format!("BEGIN; CREATE TABLE stolen AS EXECUTE {name}")),
        1,
    ));
    t.extend(run(&mut c, &query("ROLLBACK"), 1));
    t.extend(run(
        &mut c,
        &cat(&[parse("", &format!("EXECUTE {name}")), bind(""), execute(), sync()]),
        1,
    ));
    t.extend(run(
        &mut c,
        &cat(&[
            parse("", &format!("DEALLOCATE {name}")),
            bind(""),
            execute(),
            sync(),
        ]),
        1,
    ));
    // Its own statement under that name is its own.
    t.extend(run(
        &mut c,
        &query(&format!("PREPARE {name} AS SELECT 'mine'")),
        1,
    ));
    t.extend(run(&mut c, &query(&format!("EXECUTE {name}")), 1));
    t.extend(run(&mut c, &query(&format!("DEALLOCATE {name}")), 1));
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_client_reaches_another_clients_statement_by_its_name() {
    let direct = tokio::task::block_in_place(pg).addr();
    let proxy = proxy("transaction").await;
    let addr = proxy.local_addr();
    tokio::task::spawn_blocking(move || {
        // The victim prepares a statement; tidepool keeps it on the (only) backend.
        let mut victim = login(addr);
        let secret = cat(&[
            parse("mine", "SELECT 'secret of the victim'"),
            bind("mine"),
            execute(),
            sync(),
        ]);
        assert!(run(&mut victim, &secret, 1).contains(&"D secret of the victim".to_string()));

        // What a client sees in pg_prepared_statements (documented in the README): tidepool's
        // names for statements on the backend, not its own names.
        let mut attacker = login(addr);
        attacker.send(&query(
            "SELECT name FROM pg_prepared_statements WHERE statement = 'SELECT ''secret of the victim'''",
        ));
        let names: Vec<String> = attacker
            .until_ready()
            .iter()
            .filter_map(Msg::first_value)
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
        let name = names[0].clone();
        assert!(name.starts_with("tp"), "{name}");

        let expected = guessing_scenario(direct, &name);
        assert!(
            expected.contains(&format!("E 26000 prepared statement \"{name}\" does not exist")),
            "{expected:#?}"
        );
        assert!(!expected.iter().any(|l| l.contains("secret")));
        assert_eq!(guessing_scenario(addr, &name), expected);

        // The victim's statement is intact.
        let again = cat(&[bind("mine"), execute(), sync()]);
        assert!(run(&mut victim, &again, 1).contains(&"D secret of the victim".to_string()));
    })
    .await
    .unwrap();
    proxy.shutdown().await;
}
