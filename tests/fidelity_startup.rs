//! Issue 15, items 1 and 2: what a client sees for bad bytes before its startup packet and for
//! a wrong message in the middle of authentication, byte for byte the same through tidepool as
//! on a direct connection to PostgreSQL (the same steps are run against both in each test).

mod common;

use common::wire::{frame, startup_packet, Msg, RawClient};
use common::*;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use std::net::SocketAddr;
use tidepool::config::Config;

/// What a client observes: the messages received until the server closed the connection.
/// Errors are reduced to severity, SQLSTATE and message (PostgreSQL adds file and line).
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Auth(i32),
    Error(String, String, String),
    Other(u8),
}

fn seen(m: &Msg) -> Seen {
    match m.tag {
        b'R' => Seen::Auth(i32::from_be_bytes(m.body[..4].try_into().unwrap())),
        b'E' => Seen::Error(
            m.severity().unwrap_or_default(),
            m.sqlstate().unwrap_or_default(),
            m.message().unwrap_or_default(),
        ),
        other => Seen::Other(other),
    }
}

fn until_closed(c: &mut RawClient) -> Vec<Seen> {
    let mut out = Vec::new();
    while let Some(m) = c.recv() {
        out.push(seen(&m));
    }
    out
}

async fn proxy() -> tidepool::app::Proxy {
    let toml = base_config_toml(tokio::task::block_in_place(pg)).replace(
        "[[users]]\n",
        &format!(
            "[[users]]\nname = \"{MD5_USER}\"\npassword = \"{MD5_PASSWORD}\"\nauth_method = \"md5\"\n\n[[users]]\n"
        ),
    );
    start_proxy(Config::from_toml(&toml).unwrap()).await
}

/// Sends `bytes` as the first thing on a new connection; returns what came back.
fn first_bytes(addr: SocketAddr, bytes: &[u8]) -> Vec<Seen> {
    let mut c = RawClient::connect(addr);
    c.send(bytes);
    until_closed(&mut c)
}

/// Every byte received after sending `bytes`, until the server closes.
fn raw_answer(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    use std::io::Read;
    let mut c = RawClient::connect(addr);
    c.send(bytes);
    let mut out = Vec::new();
    let _ = c.stream.read_to_end(&mut out);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_startup_packets_are_closed_silently_as_postgres_does() {
    let proxy = proxy().await;
    let tidepool = proxy.local_addr();
    let direct = tokio::task::block_in_place(pg).addr();
    tokio::task::spawn_blocking(move || {
        let mut huge = 10_005u32.to_be_bytes().to_vec();
        huge.extend_from_slice(&[0, 3, 0, 0]);
        let cases: Vec<(&str, Vec<u8>)> = vec![
            // node-postgres' connect() then end() before the socket is up: a Terminate.
            ("Terminate", vec![b'X', 0, 0, 0, 4]),
            ("length 4", vec![0, 0, 0, 4]),
            ("length 7", vec![0, 0, 0, 7, 0, 3, 0]),
            ("length over the limit", huge),
        ];
        for (what, bytes) in &cases {
            let expected = first_bytes(direct, bytes);
            assert_eq!(expected, vec![], "{what}: PostgreSQL answers nothing");
            assert_eq!(first_bytes(tidepool, bytes), expected, "{what}");
        }

        // A second SSLRequest (after 'N') is taken for protocol 1234.5679, in both.
        let ssl_request = [0, 0, 0, 8, 4, 210, 22, 47];
        let answer = |addr| {
            let mut c = RawClient::connect(addr);
            c.send(&ssl_request);
            let first = c.recv_byte();
            c.send(&ssl_request);
            (first, until_closed(&mut c))
        };
        let expected = answer(direct);
        assert_eq!(expected.0, Some(b'N'));
        assert!(
            matches!(&expected.1[..], [Seen::Error(_, code, _)] if code == "0A000"),
            "{expected:?}"
        );
        assert_eq!(answer(tidepool), expected);

        // Protocol 2.0 is refused in protocol 2.0's own error format (no length word), which
        // is what libpq reads for it.
        let mut v2 = startup_packet(&[("user", APP_USER)]);
        v2[4..8].copy_from_slice(&0x0002_0000u32.to_be_bytes());
        let expected = raw_answer(direct, &v2);
        assert_eq!(
            String::from_utf8_lossy(&expected),
            "EFATAL:  unsupported frontend protocol 2.0: server supports 3.0 to 3.0\n\0"
        );
        assert_eq!(
            String::from_utf8_lossy(&raw_answer(tidepool, &v2)),
            String::from_utf8_lossy(&expected)
        );
    })
    .await
    .unwrap();
    proxy.shutdown().await;
}

/// Starts a login as `user` and returns the first authentication request's code.
fn start_login(addr: SocketAddr, user: &str) -> (RawClient, i32) {
    let mut c = RawClient::connect(addr);
    c.send(&startup_packet(&[("user", user), ("database", APP_DB)]));
    let m = c.recv().expect("an authentication request");
    match seen(&m) {
        Seen::Auth(code) => (c, code),
        other => panic!("{other:?}"),
    }
}

/// A second StartupMessage instead of the answer: refused at once with PostgreSQL's FATAL, and
/// nothing sent after it (no AuthenticationOk, no query run) whatever the client adds.
fn startup_instead_of_answer(c: &mut RawClient) -> Vec<Seen> {
    let mut bytes = startup_packet(&[("user", APP_USER), ("database", APP_DB), ("search_path", "evil")]);
    // What a client pushing its luck would pipeline behind it.
    bytes.extend(frame(b'p', b"SCRAM-SHA-256\0\0\0\0\x00"));
    bytes.extend(common::wire::query("SELECT 1"));
    c.send(&bytes);
    until_closed(c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_startup_message_during_authentication_gets_postgres_fatal_at_once() {
    let proxy = proxy().await;
    let tidepool = proxy.local_addr();
    let direct = tokio::task::block_in_place(pg).addr();
    tokio::task::spawn_blocking(move || {
        let sasl_refusal = vec![Seen::Error(
            "FATAL".into(),
            "08P01".into(),
            "expected SASL response, got message type 0".into(),
        )];
        // Right after AuthenticationSASL.
        for addr in [direct, tidepool] {
            let (mut c, code) = start_login(addr, APP_USER);
            assert_eq!(code, 10, "{addr}: AuthenticationSASL");
            assert_eq!(startup_instead_of_answer(&mut c), sasl_refusal, "{addr}");
        }
        // Mid-SCRAM: after SASLContinue, where the client's proof is due.
        for addr in [direct, tidepool] {
            let (mut c, _) = start_login(addr, APP_USER);
            let scram = ScramSha256::new(APP_PASSWORD.as_bytes(), ChannelBinding::unsupported());
            let mut body = b"SCRAM-SHA-256\0".to_vec();
            body.extend_from_slice(&(scram.message().len() as i32).to_be_bytes());
            body.extend_from_slice(scram.message());
            c.send(&frame(b'p', &body));
            assert_eq!(seen(&c.recv().unwrap()), Seen::Auth(11), "{addr}: SASLContinue");
            assert_eq!(startup_instead_of_answer(&mut c), sasl_refusal, "{addr}");
        }
        // md5: the password step names itself.
        let md5_refusal = vec![Seen::Error(
            "FATAL".into(),
            "08P01".into(),
            "expected password response, got message type 0".into(),
        )];
        for addr in [direct, tidepool] {
            let (mut c, code) = start_login(addr, MD5_USER);
            assert_eq!(code, 5, "{addr}: AuthenticationMD5Password");
            assert_eq!(startup_instead_of_answer(&mut c), md5_refusal, "{addr}");
        }
        // The proxy still logs clients in.
        let (mut c, _) = RawClient::login(tidepool, APP_USER, APP_PASSWORD, APP_DB);
        assert_eq!(c.value("SELECT 1"), "1");
    })
    .await
    .unwrap();
    proxy.shutdown().await;
}
