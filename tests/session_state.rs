//! Transaction mode keeps each client's settings its own: what a client SETs follows it to
//! whatever backend serves it next, RESET returns to its startup values, and no client ever
//! sees another's settings.

mod common;

use common::wire::{query, startup_packet, Msg, RawClient};
use common::*;
use tidepool::config::Config;

async fn proxy_pool_of_one() -> tidepool::app::Proxy {
    let toml = base_config_toml(tokio::task::block_in_place(pg))
        .replace("default_pool_size = 10", "default_pool_size = 1");
    start_proxy(Config::from_toml(&toml).unwrap()).await
}

fn values(c: &mut RawClient, sql: &str) -> Vec<String> {
    c.send(&query(sql));
    let msgs = c.until_ready();
    if let Some(e) = msgs.iter().find(|m| m.tag == b'E') {
        panic!("{sql}: {:?}", e.message());
    }
    msgs.iter()
        .filter(|m| m.tag == b'D')
        .flat_map(|m| {
            let mut out = Vec::new();
            let n = i16::from_be_bytes([m.body[0], m.body[1]]) as usize;
            let mut pos = 2;
            for _ in 0..n {
                let len = i32::from_be_bytes(m.body[pos..pos + 4].try_into().unwrap());
                pos += 4;
                out.push(String::from_utf8_lossy(&m.body[pos..pos + len.max(0) as usize]).into_owned());
                pos += len.max(0) as usize;
            }
            out
        })
        .collect()
}

fn run(c: &mut RawClient, sql: &str) -> Vec<Msg> {
    c.send(&query(sql));
    c.until_ready()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_one_backend_thousands_of_transactions_no_leak() {
    let proxy = proxy_pool_of_one().await;
    let addr = proxy.local_addr();
    tokio::task::spawn_blocking(move || {
        let (mut a, _) = RawClient::login(addr, APP_USER, APP_PASSWORD, APP_DB);
        let (mut b, _) = RawClient::login(addr, APP_USER, APP_PASSWORD, APP_DB);
        run(
            &mut a,
            "CREATE SCHEMA IF NOT EXISTS leak_a; CREATE SCHEMA IF NOT EXISTS leak_b",
        );
        run(&mut a, "SET search_path = leak_a, public");
        run(&mut a, "SET TimeZone = 'Asia/Tokyo'");
        run(&mut a, "SET default_transaction_read_only = on");
        run(&mut b, "SET search_path TO leak_b");
        run(&mut b, "SET TIME ZONE 'America/Lima'");
        let probe = "SELECT current_setting('search_path'), current_setting('TimeZone'), \
                     current_setting('default_transaction_read_only')";
        for i in 0..1500 {
            let got = values(&mut a, probe);
            assert_eq!(got, ["leak_a, public", "Asia/Tokyo", "on"], "client a, round {i}");
            let got = values(&mut b, probe);
            assert_eq!(got, ["leak_b", "America/Lima", "off"], "client b, round {i}");
            if i % 100 == 0 {
                // Writes work for b (not read-only) and fail for a, as their settings say.
                let msgs = run(&mut a, "CREATE TEMP TABLE IF NOT EXISTS t_ro (x int)");
                assert_eq!(msgs[0].sqlstate().as_deref(), Some("25006"), "a is read-only");
            }
        }
        // Explicit transactions with SET inside, committed and rolled back.
        run(&mut b, "BEGIN; SET search_path = public; COMMIT");
        assert_eq!(values(&mut b, "SHOW search_path"), ["public"]);
        run(&mut b, "BEGIN; SET search_path = leak_a; ROLLBACK");
        assert_eq!(values(&mut b, "SHOW search_path"), ["public"]);
        assert_eq!(values(&mut a, "SHOW search_path"), ["leak_a, public"]);
    })
    .await
    .unwrap();
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_returns_to_the_client_startup_values_in_transaction_mode() {
    let proxy = proxy_pool_of_one().await;
    let addr = proxy.local_addr();
    tokio::task::spawn_blocking(move || {
        let mut c = RawClient::connect(addr);
        c.send(&startup_packet(&[
            ("user", APP_USER),
            ("database", APP_DB),
            ("options", "-c statement_timeout=4321"),
            ("application_name", "startup-name"),
        ]));
        let (mut c, _) = common::wire::finish_login(&mut c, APP_USER, APP_PASSWORD);
        let (mut other, _) = RawClient::login(addr, APP_USER, APP_PASSWORD, APP_DB);
        run(&mut c, "SET statement_timeout = 100");
        assert_eq!(values(&mut other, "SHOW statement_timeout"), ["0"]);
        assert_eq!(values(&mut c, "SHOW statement_timeout"), ["100ms"]);
        run(&mut c, "RESET statement_timeout");
        assert_eq!(values(&mut other, "SHOW statement_timeout"), ["0"]);
        assert_eq!(values(&mut c, "SHOW statement_timeout"), ["4321ms"]);
        run(&mut c, "SET application_name = 'x'; SET work_mem = '7MB'");
        run(&mut c, "RESET ALL");
        assert_eq!(values(&mut other, "SHOW application_name"), [""]);
        assert_eq!(values(&mut c, "SHOW application_name"), ["startup-name"]);
        assert_eq!(values(&mut c, "SHOW work_mem"), ["4MB"]);
        assert_eq!(values(&mut c, "SHOW statement_timeout"), ["4321ms"]);
    })
    .await
    .unwrap();
    proxy.shutdown().await;
}
