//! LISTEN/NOTIFY in transaction mode without pinning: the pool's listener connection fans
//! notifications out to every client listening on the channel, while the clients share one
//! backend for everything else.

mod common;

use common::wire::{bind, execute, frame, parse, query, sync, Msg, RawClient};
use common::*;
use std::time::Duration;
use tidepool::config::Config;

async fn proxy_pool_of_one() -> tidepool::app::Proxy {
    let toml = base_config_toml(tokio::task::block_in_place(pg))
        .replace("default_pool_size = 10", "default_pool_size = 1");
    start_proxy(Config::from_toml(&toml).unwrap()).await
}

fn tags(msgs: &[Msg]) -> String {
    msgs.iter().map(|m| m.tag as char).collect()
}

/// Channel and payload of a NotificationResponse.
fn notification(m: &Msg) -> (String, String) {
    assert_eq!(m.tag, b'A', "{m:?}");
    let mut parts = m.body[4..].split(|&b| b == 0);
    let channel = String::from_utf8_lossy(parts.next().unwrap()).into_owned();
    let payload = String::from_utf8_lossy(parts.next().unwrap()).into_owned();
    (channel, payload)
}

fn run(c: &mut RawClient, sql: &str) -> Vec<Msg> {
    c.send(&query(sql));
    c.until_ready()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_fan_out_to_listeners_sharing_one_backend() {
    let proxy = proxy_pool_of_one().await;
    let addr = proxy.local_addr();
    let notifier = connect(addr, APP_USER, APP_PASSWORD, APP_DB).await;
    let (mut l1, mut l2, mut l3, mut ext) = tokio::task::spawn_blocking(move || {
        let login = || RawClient::login(addr, APP_USER, APP_PASSWORD, APP_DB).0;
        let (mut l1, mut l2, mut l3, mut ext) = (login(), login(), login(), login());
        assert_eq!(tags(&run(&mut l1, "LISTEN jobs")), "CZ");
        assert_eq!(tags(&run(&mut l2, "listen Jobs; LISTEN \"Other\"")), "CCZ");
        assert_eq!(tags(&run(&mut l3, "LISTEN \"Other\"")), "CZ");
        // The extended-protocol shape psycopg sends for one statement.
        let mut msg = parse("", "LISTEN ext");
        msg.extend(bind(""));
        msg.extend(frame(b'D', b"P\0"));
        msg.extend(execute());
        msg.extend(sync());
        ext.send(&msg);
        assert_eq!(tags(&ext.until_ready()), "12nCZ");
        (l1, l2, l3, ext)
    })
    .await
    .unwrap();
    // Nobody is pinned: the only backend serves the notifier at once.
    tokio::time::timeout(
        Duration::from_secs(10),
        notifier.batch_execute("NOTIFY jobs, 'hello'; NOTIFY \"Other\", 'o1'; NOTIFY ext, 'e1'"),
    )
    .await
    .expect("the listeners hold no backend")
    .unwrap();
    assert_eq!(
        proxy
            .shared()
            .stats
            .pinned_clients
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    let (mut l1, mut l2, mut l3, ext) = tokio::task::spawn_blocking(move || {
        // Delivered to idle clients, without a request of theirs.
        assert_eq!(notification(&l1.recv().unwrap()), ("jobs".into(), "hello".into()));
        assert_eq!(notification(&l2.recv().unwrap()), ("jobs".into(), "hello".into()));
        assert_eq!(notification(&l2.recv().unwrap()), ("Other".into(), "o1".into()));
        assert_eq!(notification(&l3.recv().unwrap()), ("Other".into(), "o1".into()));
        assert_eq!(notification(&ext.recv().unwrap()), ("ext".into(), "e1".into()));
        // UNLISTEN: l1 leaves jobs, l2 stays.
        assert_eq!(tags(&run(&mut l1, "UNLISTEN jobs")), "CZ");
        (l1, l2, l3, ext)
    })
    .await
    .unwrap();
    notifier
        .batch_execute("NOTIFY jobs, 'second'; NOTIFY \"Other\", 'o2'")
        .await
        .unwrap();
    let (mut l1, l2, l3) = tokio::task::spawn_blocking(move || {
        assert_eq!(
            notification(&l2.recv().unwrap()),
            ("jobs".into(), "second".into())
        );
        assert_eq!(notification(&l2.recv().unwrap()), ("Other".into(), "o2".into()));
        assert_eq!(notification(&l3.recv().unwrap()), ("Other".into(), "o2".into()));
        // Both were handed out at once, so l1 would have had it by now.
        assert_eq!(tags(&run(&mut l1, "SELECT 1")), "TDCZ", "l1 no longer listens");
        // UNLISTEN * and DISCARD ALL drop everything.
        assert_eq!(tags(&run(&mut l2, "UNLISTEN *")), "CZ");
        assert_eq!(tags(&run(&mut l3, "DISCARD ALL")), "CZ");
        drop(ext);
        (l1, l2, l3)
    })
    .await
    .unwrap();
    notifier
        .batch_execute("NOTIFY jobs, 'third'; NOTIFY \"Other\", 'o3'")
        .await
        .unwrap();
    // A new channel after the others left: the listener LISTENs again.
    let (l1, l2, l3) = tokio::task::spawn_blocking(move || {
        assert_eq!(tags(&run(&mut l1, "LISTEN late")), "CZ");
        (l1, l2, l3)
    })
    .await
    .unwrap();
    notifier.batch_execute("NOTIFY late, 'l'").await.unwrap();
    tokio::task::spawn_blocking(move || {
        let (mut l1, mut l2, mut l3) = (l1, l2, l3);
        assert_eq!(notification(&l1.recv().unwrap()), ("late".into(), "l".into()));
        // 'third' and 'o3' were handed out before 'late': nobody got them.
        assert_eq!(tags(&run(&mut l2, "SELECT 1")), "TDCZ");
        assert_eq!(tags(&run(&mut l3, "SELECT 1")), "TDCZ");
    })
    .await
    .unwrap();
    proxy.shutdown().await;
}

/// Server sessions whose last statement was tidepool's LISTEN on this test's channel (other
/// tests run in parallel).
async fn listener_sessions(admin: &tokio_postgres::Client) -> i64 {
    let row = admin
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE query = 'LISTEN \"reconnect_me\"'",
            &[],
        )
        .await
        .unwrap();
    row.get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listener_reconnects_and_goes_away_with_its_last_client() {
    let proxy = proxy_pool_of_one().await;
    let addr = proxy.local_addr();
    let pg_addr = std::net::SocketAddr::from(([127, 0, 0, 1], tokio::task::block_in_place(pg).port));
    let admin = connect(pg_addr, APP_USER, APP_PASSWORD, APP_DB).await;
    let notifier = connect(addr, APP_USER, APP_PASSWORD, APP_DB).await;
    let mut l = tokio::task::spawn_blocking(move || {
        let (mut l, _) = RawClient::login(addr, APP_USER, APP_PASSWORD, APP_DB);
        assert_eq!(tags(&run(&mut l, "LISTEN reconnect_me")), "CZ");
        l
    })
    .await
    .unwrap();
    assert_eq!(listener_sessions(&admin).await, 1);
    admin
        .batch_execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE query = 'LISTEN \"reconnect_me\"'",
        )
        .await
        .unwrap();
    // Notifications sent while the listener is away are lost; keep notifying until one arrives.
    let mut delivered = false;
    for i in 0..100 {
        notifier
            .batch_execute(&format!("NOTIFY reconnect_me, '{i}'"))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let (client, msgs) = tokio::task::spawn_blocking(move || {
            let msgs = run(&mut l, "SELECT 1");
            (l, msgs)
        })
        .await
        .unwrap();
        l = client;
        if let Some(m) = msgs.iter().find(|m| m.tag == b'A') {
            assert_eq!(notification(m).0, "reconnect_me");
            delivered = true;
            break;
        }
    }
    assert!(delivered, "the listener came back");
    // The last client leaves: the listener connection closes.
    drop(l);
    let mut left = 1;
    for _ in 0..100 {
        left = listener_sessions(&admin).await;
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(left, 0, "the listener connection was closed");
    proxy.shutdown().await;
}

/// The pid in BackendKeyData, from a login's welcome messages.
fn key_pid(welcome: &[Msg]) -> i32 {
    let key = welcome.iter().find(|m| m.tag == b'K').expect("BackendKeyData");
    i32::from_be_bytes(key.body[..4].try_into().unwrap())
}

/// NOTIFYs `channel` and returns the pid of the first notification received on it.
fn notify_and_receive(c: &mut RawClient, channel: &str, payload: &str) -> i32 {
    let mut msgs = run(c, &format!("NOTIFY {channel}, '{payload}'"));
    // Through tidepool the notification may come after the ReadyForQuery.
    loop {
        if let Some(m) = msgs.iter().find(|m| m.tag == b'A') {
            assert_eq!(notification(m), (channel.to_string(), payload.to_string()));
            return i32::from_be_bytes(m.body[..4].try_into().unwrap());
        }
        msgs = vec![c.recv().expect("a notification")];
    }
}

/// Issue 15, item 4: a client's own notifications carry the pid of its BackendKeyData, as on a
/// direct connection (drivers tell their own notifications apart by it); another client's carry
/// that client's pid, and a session outside tidepool keeps its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_notifications_carry_the_clients_own_pid_in_both_modes() {
    let direct = tokio::task::block_in_place(pg).addr();
    for mode in ["transaction", "session"] {
        let toml = base_config_toml(tokio::task::block_in_place(pg))
            .replace("pool_mode = \"transaction\"", &format!("pool_mode = \"{mode}\""))
            .replace("default_pool_size = 10", "default_pool_size = 2");
        let proxy = start_proxy(Config::from_toml(&toml).unwrap()).await;
        let addr = proxy.local_addr();
        tokio::task::spawn_blocking(move || {
            for target in [direct, addr] {
                let (mut c, welcome) = RawClient::login(target, APP_USER, APP_PASSWORD, APP_DB);
                let own = key_pid(&welcome);
                run(&mut c, "LISTEN own_pid");
                assert_eq!(
                    notify_and_receive(&mut c, "own_pid", "mine"),
                    own,
                    "{mode} {target}"
                );
                // Another client of the same kind: its pid, not ours.
                let (mut other, welcome) = RawClient::login(target, APP_USER, APP_PASSWORD, APP_DB);
                let other_pid = key_pid(&welcome);
                assert_ne!(other_pid, own);
                run(&mut other, "NOTIFY own_pid, 'theirs'");
                let m = c.recv().expect("the other client's notification");
                assert_eq!(notification(&m).1, "theirs");
                assert_eq!(
                    i32::from_be_bytes(m.body[..4].try_into().unwrap()),
                    other_pid,
                    "{mode}"
                );
                // And ours again, after the other client used a backend.
                assert_eq!(
                    notify_and_receive(&mut c, "own_pid", "again"),
                    own,
                    "{mode} {target}"
                );
            }
        })
        .await
        .unwrap();
        proxy.shutdown().await;
    }
}

/// Item 4 for a client pinned by a LISTEN inside a transaction block: its notifications come
/// through its own backend, and still carry its own pid, as on a direct connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pinned_listeners_own_notifications_carry_its_pid() {
    let direct = tokio::task::block_in_place(pg).addr();
    let proxy = proxy_pool_of_one().await;
    let addr = proxy.local_addr();
    tokio::task::spawn_blocking(move || {
        for target in [direct, addr] {
            let (mut c, welcome) = RawClient::login(target, APP_USER, APP_PASSWORD, APP_DB);
            let own = key_pid(&welcome);
            assert_eq!(tags(&run(&mut c, "BEGIN; LISTEN pinned_pid; COMMIT")), "CCCZ");
            assert_eq!(notify_and_receive(&mut c, "pinned_pid", "mine"), own, "{target}");
            assert_eq!(notify_and_receive(&mut c, "pinned_pid", "again"), own, "{target}");
        }
    })
    .await
    .unwrap();
    proxy.shutdown().await;
}

/// Item 4 when the notifying backend moves on at once: the client's transaction NOTIFYs and
/// commits on the pool's only backend while another client is queued for it, so that backend
/// already serves the other client when the notification reaches the listener. It still
/// carries the notifying client's pid, as on a direct connection. Both pool modes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_notifications_keep_their_pid_when_the_backend_serves_another_client_next() {
    let direct = tokio::task::block_in_place(pg).addr();
    for (mode, size) in [("transaction", 1), ("session", 2)] {
        let toml = base_config_toml(tokio::task::block_in_place(pg))
            .replace("pool_mode = \"transaction\"", &format!("pool_mode = \"{mode}\""))
            .replace("default_pool_size = 10", &format!("default_pool_size = {size}"));
        let proxy = start_proxy(Config::from_toml(&toml).unwrap()).await;
        let addr = proxy.local_addr();
        tokio::task::spawn_blocking(move || {
            for target in [direct, addr] {
                let tag = format!("{mode} {target}");
                let (mut a, welcome) = RawClient::login(target, APP_USER, APP_PASSWORD, APP_DB);
                let own = key_pid(&welcome);
                let (mut b, _) = RawClient::login(target, APP_USER, APP_PASSWORD, APP_DB);
                run(&mut a, "LISTEN moved_on");
                for round in 0..5 {
                    assert_eq!(tags(&run(&mut a, "BEGIN")), "CZ");
                    // Queued for the backend a holds (transaction mode, a pool of one).
                    b.send(&query("SELECT pg_sleep(0.05)"));
                    std::thread::sleep(Duration::from_millis(20));
                    let mut msgs = run(&mut a, &format!("NOTIFY moved_on, 'r{round}'; COMMIT"));
                    let m = loop {
                        if let Some(m) = msgs.iter().find(|m| m.tag == b'A') {
                            break m.clone();
                        }
                        msgs = vec![a.recv().expect("a notification")];
                    };
                    assert_eq!(notification(&m), ("moved_on".to_string(), format!("r{round}")));
                    let pid = i32::from_be_bytes(m.body[..4].try_into().unwrap());
                    assert_eq!(pid, own, "{tag} round {round}");
                    assert_eq!(tags(&b.until_ready()), "TDCZ", "{tag}");
                }
            }
        })
        .await
        .unwrap();
        proxy.shutdown().await;
    }
}
