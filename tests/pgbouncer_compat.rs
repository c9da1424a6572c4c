//! tidepool's admin console against the real PgBouncer 1.25, both in front of the same
//! PostgreSQL: for every SHOW PgBouncer has, tidepool answers with the same column names, in
//! the same order, with the same type OIDs (RowDescription), or answers the same way without a
//! result set (HELP); the SHOWs tidepool leaves out are listed here with the reason.

mod common;

use common::console::{admin_config, ADMIN};
use common::pgbouncer::{free_port, Home, PgBouncer};
use common::wire::{query, Msg, RawClient};
use common::*;
use std::net::SocketAddr;

/// PgBouncer SHOWs tidepool does not answer, and why.
const LEFT_OUT: &[(&str, &str)] = &[
    (
        "FDS",
        "file descriptors handed over in PgBouncer's deprecated online restart (-R); tidepool hands a port over with SO_REUSEPORT instead",
    ),
];

/// What a SHOW answered: its columns (name, type OID), or `None` without a RowDescription.
type Description = Option<Vec<(String, u32)>>;

/// Parses a RowDescription body into (name, type OID) pairs.
fn columns(msg: &Msg) -> Vec<(String, u32)> {
    let body = &msg.body;
    let count = u16::from_be_bytes([body[0], body[1]]) as usize;
    let mut at = 2;
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let end = at + body[at..].iter().position(|&b| b == 0).expect("a column name");
        let name = String::from_utf8_lossy(&body[at..end]).into_owned();
        // After the name: table OID (4), column number (2), then the type OID (4).
        let oid_at = end + 1 + 6;
        let oid = u32::from_be_bytes(body[oid_at..oid_at + 4].try_into().unwrap());
        out.push((name, oid));
        // Type OID, size (2), modifier (4), format (2).
        at = oid_at + 4 + 2 + 4 + 2;
    }
    out
}

/// Runs `SHOW what` on a console; panics on an ErrorResponse.
fn describe(console: &mut RawClient, what: &str) -> (Description, Vec<Msg>) {
    console.send(&query(&format!("SHOW {what}")));
    let answer = console.until_ready();
    if let Some(error) = answer.iter().find(|m| m.tag == b'E') {
        panic!("SHOW {what}: {:?}", error.message());
    }
    let description = answer.iter().find(|m| m.tag == b'T').map(columns);
    (description, answer)
}

/// The SHOW subjects PgBouncer's HELP lists (`SHOW A|B|C` lines of its DETAIL).
fn pgbouncer_shows(console: &mut RawClient) -> Vec<String> {
    let (_, answer) = describe(console, "HELP");
    let notice = answer.iter().find(|m| m.tag == b'N').expect("HELP is a NOTICE");
    let text = notice.field(b'D').unwrap_or_default() + &notice.message().unwrap_or_default();
    text.lines()
        .filter_map(|line| line.trim().strip_prefix("SHOW "))
        .flat_map(|list| list.split('|').map(str::to_string).collect::<Vec<_>>())
        .collect()
}

fn start_pgbouncer(home: &Home) -> PgBouncer {
    let port = free_port();
    home.write("userlist.txt", &format!("\"{APP_USER}\" \"{APP_PASSWORD}\"\n"));
    let ini = format!(
        "[databases]\n{APP_DB} = host=127.0.0.1 port={pg_port} dbname={APP_DB}\n\n\
         [pgbouncer]\n{settings}auth_type = scram-sha-256\nauth_file = {home}/userlist.txt\n\
         admin_users = {APP_USER}\npool_mode = transaction\n",
        pg_port = pg().port,
        settings = home.settings(port),
        home = home.path().display(),
    );
    let ini = home.write("pgbouncer.ini", &ini);
    PgBouncer::start(home, &ini, port)
}

/// One query through the pooler, so that pools, servers and stats have rows.
fn traffic(addr: SocketAddr) {
    let (mut app, _) = RawClient::login(addr, APP_USER, APP_PASSWORD, APP_DB);
    assert_eq!(app.value("SELECT 40 + 2"), "42");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_show_has_pgbouncer_1_25_columns_and_types() {
    let home = Home::new();
    let bouncer = start_pgbouncer(&home);
    let proxy = start_proxy(admin_config()).await;
    let tidepool_addr = proxy.local_addr();

    let mismatches = tokio::task::spawn_blocking(move || {
        traffic(bouncer.addr);
        traffic(tidepool_addr);
        let (mut theirs, _) = RawClient::login(bouncer.addr, APP_USER, APP_PASSWORD, "pgbouncer");
        let (mut ours, _) = RawClient::login(tidepool_addr, ADMIN.0, ADMIN.1, "pgbouncer");
        assert!(
            theirs.value("SHOW VERSION").starts_with("PgBouncer 1.25"),
            "compare against PgBouncer 1.25"
        );

        let shows = pgbouncer_shows(&mut theirs);
        assert!(shows.len() >= 20, "PgBouncer's HELP lists its SHOWs: {shows:?}");
        let mut mismatches = Vec::new();
        let mut compared = 0;
        for what in &shows {
            if LEFT_OUT.iter().any(|(name, _)| name == what) {
                continue;
            }
            let (expected, _) = describe(&mut theirs, what);
            let (actual, _) = describe(&mut ours, what);
            compared += 1;
            if expected != actual {
                mismatches.push(format!(
                    "SHOW {what}:\n  PgBouncer: {expected:?}\n  tidepool:  {actual:?}"
                ));
            }
        }
        assert!(compared >= 18, "compared {compared} SHOWs of {shows:?}");
        // The list of what is left out stays true: PgBouncer still has each of them.
        for (name, _) in LEFT_OUT {
            assert!(
                shows.iter().any(|s| s == name),
                "PgBouncer has no SHOW {name} any more"
            );
        }
        drop(bouncer);
        mismatches
    })
    .await
    .unwrap();
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}
