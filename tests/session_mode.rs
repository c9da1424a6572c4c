//! Session mode must be indistinguishable from a direct connection: real backend pid, every
//! startup parameter applied, RESET returning to the client's own startup values, reported
//! parameters as PostgreSQL reports them, pg_terminate_backend ending the session.

mod common;

use common::wire::{query, startup_packet, Msg, RawClient};
use common::*;
use tidepool::config::Config;

async fn session_proxy() -> tidepool::app::Proxy {
    let toml = base_config_toml(tokio::task::block_in_place(pg))
        .replace("pool_mode = \"transaction\"", "pool_mode = \"session\"")
        .replace("[proxy]\n", "[proxy]\nmax_message_size = \"64kB\"\n");
    start_proxy(Config::from_toml(&toml).unwrap()).await
}

/// Logs in with extra startup parameters.
fn login_with(addr: std::net::SocketAddr, params: &[(&str, &str)]) -> (RawClient, Vec<Msg>) {
    // RawClient::login sends only user and database; do the same exchange with more params.
    let mut all = vec![("user", APP_USER), ("database", APP_DB)];
    all.extend_from_slice(params);
    let mut c = RawClient::connect(addr);
    c.send(&startup_packet(&all));
    common::wire::finish_login(&mut c, APP_USER, APP_PASSWORD)
}

fn parameter(welcome: &[Msg], name: &str) -> Option<String> {
    welcome.iter().filter(|m| m.tag == b'S').find_map(|m| {
        let mut parts = m.body.split(|&b| b == 0);
        let n = parts.next()?;
        let v = parts.next()?;
        (n == name.as_bytes()).then(|| String::from_utf8_lossy(v).into_owned())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_key_data_carries_the_real_backend_pid() {
    let proxy = session_proxy().await;
    let addr = proxy.local_addr();
    tokio::task::spawn_blocking(move || {
        let (mut c, welcome) = RawClient::login(addr, APP_USER, APP_PASSWORD, APP_DB);
        let key = welcome.iter().find(|m| m.tag == b'K').expect("BackendKeyData");
        let pid = i32::from_be_bytes(key.body[..4].try_into().unwrap());
        assert_eq!(c.value("SELECT pg_backend_pid()"), pid.to_string());
    })
    .await
    .unwrap();
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_parameters_apply_and_reset_returns_to_them() {
    let proxy = session_proxy().await;
    let addr = proxy.local_addr();
    tokio::task::spawn_blocking(move || {
        let (mut c, welcome) = login_with(
            addr,
            &[
                ("application_name", "from-startup"),
                ("options", "-c statement_timeout=1234 --work-mem=5MB"),
                ("client_min_messages", "warning"),
                ("client_encoding", "latin1"),
                ("DateStyle", "German"),
            ],
        );
        assert_eq!(
            parameter(&welcome, "application_name").as_deref(),
            Some("from-startup")
        );
        assert_eq!(parameter(&welcome, "client_encoding").as_deref(), Some("LATIN1"));
        assert_eq!(parameter(&welcome, "DateStyle").as_deref(), Some("German, DMY"));
        assert_eq!(c.value("SHOW statement_timeout"), "1234ms");
        assert_eq!(c.value("SHOW work_mem"), "5MB");
        assert_eq!(c.value("SHOW client_min_messages"), "warning");

        c.send(&query(
            "SET statement_timeout = '9s'; SET application_name = 'changed'",
        ));
        c.until_ready();
        c.send(&query("RESET statement_timeout"));
        c.until_ready();
        assert_eq!(c.value("SHOW statement_timeout"), "1234ms");
        c.send(&query("RESET ALL"));
        c.until_ready();
        assert_eq!(c.value("SHOW application_name"), "from-startup");
        assert_eq!(c.value("SHOW work_mem"), "5MB");
    })
    .await
    .unwrap();
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_startup_parameter_is_refused_like_postgres_does() {
    let proxy = session_proxy().await;
    let addr = proxy.local_addr();
    tokio::task::spawn_blocking(move || {
        let mut c = RawClient::connect(addr);
        c.send(&startup_packet(&[
            ("user", APP_USER),
            ("database", APP_DB),
            ("no_such_setting", "1"),
        ]));
        let err = common::wire::finish_login_expecting_error(&mut c, APP_USER, APP_PASSWORD);
        assert_eq!(err.severity().as_deref(), Some("FATAL"));
        assert_eq!(err.sqlstate().as_deref(), Some("42704"));
        assert!(err.message().unwrap().contains("no_such_setting"), "{err:?}");
    })
    .await
    .unwrap();
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_terminate_backend_ends_the_session_as_it_would_directly() {
    let proxy = session_proxy().await;
    let addr = proxy.local_addr();
    tokio::task::spawn_blocking(move || {
        let (mut c, _) = RawClient::login(addr, APP_USER, APP_PASSWORD, APP_DB);
        let pid = c.value("SELECT pg_backend_pid()");
        pg().psql("postgres", &format!("SELECT pg_terminate_backend({pid})"))
            .unwrap();
        let mut last = None;
        while let Some(m) = c.recv() {
            last = Some(m);
        }
        let last = last.expect("a FATAL before the close");
        assert_eq!(last.severity().as_deref(), Some("FATAL"));
        assert_eq!(last.sqlstate().as_deref(), Some("57P01"));
    })
    .await
    .unwrap();
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_message_mid_session_is_08p01() {
    let proxy = session_proxy().await;
    let addr = proxy.local_addr();
    tokio::task::spawn_blocking(move || {
        let (mut c, _) = RawClient::login(addr, APP_USER, APP_PASSWORD, APP_DB);
        assert_eq!(c.value("SELECT 1"), "1");
        c.send(&common::wire::frame(b'Q', &vec![b'x'; 100_000]));
        let mut last = None;
        while let Some(m) = c.recv() {
            last = Some(m);
        }
        assert_eq!(last.and_then(|m| m.sqlstate()).as_deref(), Some("08P01"));
    })
    .await
    .unwrap();
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_reach_a_listening_session_with_the_sender_pid() {
    let proxy = session_proxy().await;
    let addr = proxy.local_addr();
    tokio::task::spawn_blocking(move || {
        let (mut listener, _) = RawClient::login(addr, APP_USER, APP_PASSWORD, APP_DB);
        listener.send(&query("LISTEN jobs"));
        listener.until_ready();
        let (mut sender, _) = RawClient::login(addr, APP_USER, APP_PASSWORD, APP_DB);
        let sender_pid = sender.value("SELECT pg_backend_pid()");
        sender.send(&query("NOTIFY jobs, 'payload-1'"));
        sender.until_ready();
        let note = listener.recv().expect("a NotificationResponse");
        assert_eq!(note.tag, b'A');
        let pid = i32::from_be_bytes(note.body[..4].try_into().unwrap());
        assert_eq!(pid.to_string(), sender_pid, "the sender's real pid");
        assert_eq!(&note.body[4..], b"jobs\0payload-1\0");
    })
    .await
    .unwrap();
    proxy.shutdown().await;
}
