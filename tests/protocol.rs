//! Relaying the protocol faithfully: pipelined extended protocol, multi-statement queries,
//! errors inside a pipeline, FunctionCall, notices and parameter changes.

mod common;

use common::wire::{bind, execute, frame, parse, query, sync, Msg, RawClient};
use common::*;
use tidepool::config::Config;

/// A proxy in transaction mode with a pool of one backend, so consecutive transactions share it.
async fn proxy_pool_of_one() -> tidepool::app::Proxy {
    let toml = base_config_toml(tokio::task::block_in_place(pg))
        .replace("default_pool_size = 10", "default_pool_size = 1");
    start_proxy(Config::from_toml(&toml).unwrap()).await
}

fn tags(msgs: &[Msg]) -> String {
    msgs.iter().map(|m| m.tag as char).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_extended_protocol_many_executes_one_sync() {
    let proxy = proxy_pool_of_one().await;
    let addr = proxy.local_addr();
    tokio::task::spawn_blocking(move || {
        let (mut c, _) = RawClient::login(addr, APP_USER, APP_PASSWORD, APP_DB);
        let mut batch = Vec::new();
        for i in 0..50 {
            batch.extend(parse("", &format!("SELECT {i}")));
            batch.extend(bind(""));
            batch.extend(execute());
        }
        batch.extend(sync());
        c.send(&batch);
        let msgs = c.until_ready();
        let rows: Vec<String> = msgs.iter().filter_map(Msg::first_value).collect();
        assert_eq!(rows, (0..50).map(|i| i.to_string()).collect::<Vec<_>>());
        assert_eq!(msgs.last().unwrap().body, b"I");

        // Twenty Sync-delimited batches in one write: twenty ReadyForQuery, in order.
        let mut batch = Vec::new();
        for i in 0..20 {
            batch.extend(parse("", &format!("SELECT {i}")));
            batch.extend(bind(""));
            batch.extend(execute());
            batch.extend(sync());
        }
        c.send(&batch);
        for i in 0..20 {
            let msgs = c.until_ready();
            assert_eq!(tags(&msgs), "12DCZ", "batch {i}");
            assert_eq!(msgs[2].first_value().unwrap(), i.to_string());
        }
    })
    .await
    .unwrap();
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_statement_simple_query() {
    let proxy = proxy_pool_of_one().await;
    let addr = proxy.local_addr();
    tokio::task::spawn_blocking(move || {
        let (mut c, _) = RawClient::login(addr, APP_USER, APP_PASSWORD, APP_DB);
        c.send(&query("SELECT 1; SELECT 2; SELECT 3"));
        let msgs = c.until_ready();
        assert_eq!(tags(&msgs), "TDCTDCTDCZ");
        let rows: Vec<String> = msgs.iter().filter_map(Msg::first_value).collect();
        assert_eq!(rows, ["1", "2", "3"]);
        // An error in the middle stops the rest, as PostgreSQL does.
        c.send(&query("SELECT 1; SELECT 1/0; SELECT 3"));
        let msgs = c.until_ready();
        assert_eq!(tags(&msgs), "TDCEZ");
        assert_eq!(msgs[3].sqlstate().as_deref(), Some("22012"));
        // An empty query.
        c.send(&query(""));
        assert_eq!(tags(&c.until_ready()), "IZ");
    })
    .await
    .unwrap();
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_in_the_middle_of_a_pipeline_skips_to_sync_and_the_next_batch_works() {
    let proxy = proxy_pool_of_one().await;
    let addr = proxy.local_addr();
    tokio::task::spawn_blocking(move || {
        let (mut c, _) = RawClient::login(addr, APP_USER, APP_PASSWORD, APP_DB);
        let mut batch = Vec::new();
        batch.extend(parse("", "SELECT 1"));
        batch.extend(bind(""));
        batch.extend(execute());
        batch.extend(parse("", "SELECT * FROM no_such_table"));
        batch.extend(bind(""));
        batch.extend(execute());
        batch.extend(parse("", "SELECT 3"));
        batch.extend(bind(""));
        batch.extend(execute());
        batch.extend(sync());
        batch.extend(parse("", "SELECT 4"));
        batch.extend(bind(""));
        batch.extend(execute());
        batch.extend(sync());
        c.send(&batch);
        let first = c.until_ready();
        assert_eq!(
            tags(&first),
            "12DCEZ",
            "results up to the error, then ReadyForQuery"
        );
        assert_eq!(first[4].sqlstate().as_deref(), Some("42P01"));
        assert_eq!(first.last().unwrap().body, b"I");
        let second = c.until_ready();
        assert_eq!(tags(&second), "12DCZ");
        assert_eq!(second[2].first_value().as_deref(), Some("4"));
    })
    .await
    .unwrap();
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn function_call_notice_and_parameter_status_pass_through() {
    let proxy = proxy_pool_of_one().await;
    let addr = proxy.local_addr();
    tokio::task::spawn_blocking(move || {
        let (mut c, _) = RawClient::login(addr, APP_USER, APP_PASSWORD, APP_DB);
        c.send(&query("SELECT 'int4abs'::regproc::oid"));
        let oid: u32 = c.until_ready()[1].first_value().unwrap().parse().unwrap();
        // FunctionCall int4abs(-42): one text-format argument, text result.
        let mut body = oid.to_be_bytes().to_vec();
        body.extend_from_slice(&1i16.to_be_bytes());
        body.extend_from_slice(&0i16.to_be_bytes());
        body.extend_from_slice(&1i16.to_be_bytes());
        body.extend_from_slice(&3i32.to_be_bytes());
        body.extend_from_slice(b"-42");
        body.extend_from_slice(&0i16.to_be_bytes());
        c.send(&frame(b'F', &body));
        let msgs = c.until_ready();
        assert_eq!(tags(&msgs), "VZ");
        assert_eq!(&msgs[0].body[4..], b"42");

        c.send(&query("DO $$ BEGIN RAISE NOTICE 'hello from plpgsql'; END $$"));
        let msgs = c.until_ready();
        assert_eq!(tags(&msgs), "NCZ");
        assert_eq!(msgs[0].message().as_deref(), Some("hello from plpgsql"));

        c.send(&query("SET application_name = 'relay-test'"));
        let msgs = c.until_ready();
        assert_eq!(tags(&msgs), "CSZ");
        assert!(msgs[1].body.starts_with(b"application_name\0relay-test\0"));
    })
    .await
    .unwrap();
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_changed_by_one_client_never_reach_another() {
    let proxy = proxy_pool_of_one().await;
    let addr = proxy.local_addr();
    tokio::task::spawn_blocking(move || {
        let (mut a, _) = RawClient::login(addr, APP_USER, APP_PASSWORD, APP_DB);
        let (mut b, _) = RawClient::login(addr, APP_USER, APP_PASSWORD, APP_DB);
        a.send(&query("SET TimeZone = 'Asia/Tokyo'"));
        a.until_ready();
        for _ in 0..20 {
            b.send(&query("SHOW TimeZone"));
            let tz = b.until_ready()[1].first_value().unwrap();
            assert_ne!(tz, "Asia/Tokyo", "a's setting leaked into b");
            a.send(&query("SHOW TimeZone"));
            assert_eq!(a.until_ready()[1].first_value().as_deref(), Some("Asia/Tokyo"));
        }
    })
    .await
    .unwrap();
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_in_and_out_with_tokio_postgres() {
    let proxy = proxy_pool_of_one().await;
    let addr = proxy.local_addr();
    let client = connect(addr, APP_USER, APP_PASSWORD, APP_DB).await;
    client
        .batch_execute("DROP TABLE IF EXISTS copy_small; CREATE TABLE copy_small (id int, note text)")
        .await
        .unwrap();
    use futures_util::SinkExt;
    let sink = client.copy_in("COPY copy_small FROM STDIN").await.unwrap();
    futures_util::pin_mut!(sink);
    for i in 0..1000 {
        sink.send(bytes::Bytes::from(format!("{i}\trow {i}\n")))
            .await
            .unwrap();
    }
    let n = sink.finish().await.unwrap();
    assert_eq!(n, 1000);
    use futures_util::TryStreamExt;
    let out: Vec<bytes::Bytes> = client
        .copy_out("COPY (SELECT * FROM copy_small ORDER BY id) TO STDOUT")
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let text: String = out
        .iter()
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .collect();
    assert_eq!(text.lines().count(), 1000);
    assert!(text.starts_with("0\trow 0\n"));
    proxy.shutdown().await;
}
