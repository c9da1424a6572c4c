//! SHOW CLIENTS, SERVERS, SOCKETS and ACTIVE_SOCKETS: one row per connection, PgBouncer
//! 1.25's columns (SOCKETS adds its buffer positions).

use super::{s, timestamp, Table, INT4, TEXT};
use crate::app::Shared;
use crate::client::registry::ClientState;
use crate::pool::ServerState;

/// Columns shared by SHOW CLIENTS and SHOW SERVERS.
const SOCKET_COLUMNS: &[(&str, u32)] = &[
    ("type", TEXT),
    ("user", TEXT),
    ("database", TEXT),
    ("replication", TEXT),
    ("state", TEXT),
    ("addr", TEXT),
    ("port", INT4),
    ("local_addr", TEXT),
    ("local_port", INT4),
    ("connect_time", TEXT),
    ("request_time", TEXT),
    ("wait", INT4),
    ("wait_us", INT4),
    ("close_needed", INT4),
    ("ptr", TEXT),
    ("link", TEXT),
    ("remote_pid", INT4),
    ("tls", TEXT),
    ("application_name", TEXT),
    ("prepared_statements", INT4),
    ("id", INT4),
];

/// What SHOW SOCKETS adds: PgBouncer's I/O buffer positions.
const BUFFER_COLUMNS: &[&str] = &[
    "recv_pos",
    "pkt_pos",
    "pkt_remain",
    "send_pos",
    "send_remain",
    "pkt_avail",
    "send_avail",
];

/// SHOW CLIENTS. `remote_pid` is 0: PgBouncer fills it only for Unix-socket clients, and
/// tidepool listens on TCP only. `close_needed` is unused for clients (as in PgBouncer).
/// `prepared_statements` is 0 for now: the client's statement names live in its session, which
/// the registry does not see.
pub fn clients(shared: &Shared) -> Table {
    let mut t = Table::new(SOCKET_COLUMNS);
    client_rows(shared, &mut t, false);
    t
}

/// SHOW SERVERS. `wait` / `wait_us` are unused for servers (as in PgBouncer);
/// `prepared_statements` is 0 for now (each backend's statement cache lives in its connection).
pub fn servers(shared: &Shared) -> Table {
    let mut t = Table::new(SOCKET_COLUMNS);
    server_rows(shared, &mut t, false);
    t
}

/// SHOW SOCKETS (every client and server) or ACTIVE_SOCKETS (those with a request under
/// way). The buffer columns are 0: tidepool reads whole frames into a growing buffer per
/// connection and forwards server bytes as they come, so it has none of PgBouncer's fixed
/// packet buffers to report positions in.
pub fn sockets(shared: &Shared, active_only: bool) -> Table {
    let mut columns = SOCKET_COLUMNS.to_vec();
    columns.extend(BUFFER_COLUMNS.iter().map(|c| (*c, INT4)));
    let mut t = Table::new(&columns);
    client_rows(shared, &mut t, active_only);
    server_rows(shared, &mut t, active_only);
    let width = t.columns.len();
    for row in &mut t.rows {
        row.resize(width, s(0));
    }
    t
}

fn client_rows(shared: &Shared, t: &mut Table, active_only: bool) {
    for c in shared.sessions.all() {
        let state = c.state();
        if active_only && !matches!(state, ClientState::Active | ClientState::Waiting) {
            continue;
        }
        let waited = shared.sessions.waited(&c);
        let connected = timestamp(c.connected_at);
        t.rows.push(vec![
            s("C"),
            s(&c.user),
            s(&c.database),
            s("none"),
            s(state.as_str()),
            s(c.addr.ip()),
            s(c.addr.port()),
            c.local_addr.map(|a| a.ip().to_string()),
            c.local_addr.map(|a| a.port().to_string()),
            connected.clone(),
            connected,
            s(waited.as_secs()),
            s(waited.subsec_micros()),
            s(0),
            s(format!("c{}", c.id)),
            c.server().map(|id| format!("s{id}")),
            s(0),
            s(if c.tls { "TLS" } else { "" }),
            s(&c.application_name),
            s(0),
            s(c.id),
        ]);
    }
}

fn server_rows(shared: &Shared, t: &mut Table, active_only: bool) {
    for server in shared.pools.servers.all() {
        let state = server.state();
        if active_only && state != ServerState::Active {
            continue;
        }
        let (host, port) = match server.pool.node.rsplit_once(':') {
            Some((host, port)) => (host.trim_matches(|c| c == '[' || c == ']'), port),
            None => (&*server.pool.node, ""),
        };
        let connected = timestamp(server.connected_at);
        t.rows.push(vec![
            s("S"),
            s(&server.user),
            s(&server.pool.database),
            s("none"),
            s(state.as_str()),
            s(host),
            s(port),
            server.local_addr.map(|a| a.ip().to_string()),
            server.local_addr.map(|a| a.port().to_string()),
            connected.clone(),
            connected,
            s(0),
            s(0),
            s(server.close_needed() as u8),
            s(format!("s{}", server.id)),
            server
                .client()
                .filter(|_| state == ServerState::Active)
                .map(|id| format!("c{id}")),
            s(server.pid),
            s(""),
            s(""),
            s(0),
            s(server.id),
        ]);
    }
}
