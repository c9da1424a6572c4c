//! The SHOW tables. Those PgBouncer has keep PgBouncer 1.25's column names, order and types
//! (`tests/pgbouncer_compat.rs` compares them with the real PgBouncer), so pgbouncer_exporter
//! and scripts written for PgBouncer keep working; NODES, ROUTES and PREPARED are tidepool's own.

mod config;
mod network;
mod ours;
mod sockets;
mod stats;

use super::command::Show;
use crate::app::Shared;
use crate::client::registry::{ClientEntry, ClientState};
use crate::pool::{PoolKey, ServerState};
use crate::protocol::{backend_msg, ErrorFields, Severity, SqlState};
use bytes::BytesMut;
use config::config;
use ours::{nodes, prepared, routes};
use stats::Kind;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

const TEXT: u32 = 25;
const INT4: u32 = 23;
const INT8: u32 = 20;
/// PgBouncer sends its 64-bit counters as `numeric`.
const NUMERIC: u32 = 1700;

/// A result set: column names with type OIDs, rows of text values (None = NULL).
pub struct Table {
    pub columns: Vec<(String, u32)>,
    pub rows: Vec<Vec<Option<String>>>,
}

impl Table {
    fn new(columns: &[(&str, u32)]) -> Table {
        Table::with_owned(columns.iter().map(|(n, t)| (n.to_string(), *t)).collect())
    }

    fn with_owned(columns: Vec<(String, u32)>) -> Table {
        Table {
            columns,
            rows: Vec::new(),
        }
    }

    fn push(&mut self, row: Vec<Option<String>>) {
        debug_assert_eq!(row.len(), self.columns.len());
        self.rows.push(row);
    }

    /// RowDescription, DataRows, CommandComplete `SHOW`.
    pub fn write_to(&self, out: &mut BytesMut) {
        let columns: Vec<(&str, u32)> = self.columns.iter().map(|(n, t)| (n.as_str(), *t)).collect();
        backend_msg::row_description(out, &columns);
        for row in &self.rows {
            let values: Vec<Option<&str>> = row.iter().map(|v| v.as_deref()).collect();
            backend_msg::data_row(out, &values);
        }
        backend_msg::command_complete(out, "SHOW");
    }
}

fn s(v: impl ToString) -> Option<String> {
    Some(v.to_string())
}

/// `2024-05-01 12:00:00 UTC`, computed without a time-zone database.
fn timestamp(at: SystemTime) -> Option<String> {
    let secs = at.duration_since(SystemTime::UNIX_EPOCH).ok()?.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    Some(format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    ))
}

/// Answers `SHOW what`: a table, except HELP, which PgBouncer answers with a NOTICE and no
/// rows (psql prints it; scripts see an empty result), and so does tidepool.
pub fn write(shared: &Shared, what: Show, out: &mut BytesMut) {
    match what {
        Show::Help => {
            help().write_to(out);
            backend_msg::command_complete(out, "SHOW");
        }
        _ => table(shared, what).write_to(out),
    }
}

/// Builds the table for `what` (HELP: none, see [`write`]).
pub fn table(shared: &Shared, what: Show) -> Table {
    match what {
        Show::Help => Table::new(&[]),
        Show::Pools => pools(shared),
        Show::Clients => sockets::clients(shared),
        Show::Servers => sockets::servers(shared),
        Show::Sockets => sockets::sockets(shared, false),
        Show::ActiveSockets => sockets::sockets(shared, true),
        Show::Databases => databases(shared),
        Show::Users => users(shared),
        Show::Peers => network::peers(shared),
        Show::PeerPools => network::peer_pools(shared),
        Show::DnsHosts => network::dns_hosts(),
        Show::DnsZones => network::dns_zones(),
        Show::Stats => stats::stats(shared, Kind::Both),
        Show::StatsTotals => stats::stats(shared, Kind::Totals),
        Show::StatsAverages => stats::stats(shared, Kind::Averages),
        Show::Totals => stats::totals(shared),
        Show::Config => config(shared),
        Show::Lists => lists(shared),
        Show::Version => {
            let mut t = Table::new(&[("version", TEXT)]);
            t.push(vec![s(format!("tidepool {}", env!("CARGO_PKG_VERSION")))]);
            t
        }
        Show::Mem => mem(shared),
        Show::State => state(shared),
        Show::Nodes => nodes(shared),
        Show::Routes => routes(shared),
        Show::Prepared => prepared(shared),
    }
}

/// The console's commands, one per line in the DETAIL of a "Console usage" NOTICE, as
/// PgBouncer answers HELP.
fn help() -> ErrorFields {
    let shows: Vec<String> = Show::names().map(|n| n.to_ascii_uppercase()).collect();
    let mut text = format!("\n\tSHOW {}", shows.join("|"));
    for command in [
        "PAUSE [db]",
        "RESUME [db]",
        "SUSPEND",
        "DISABLE db",
        "ENABLE db",
        "RECONNECT [db]",
        "KILL [db]",
        "KILL_CLIENT id",
        "WAIT_CLOSE [db]",
        "RELOAD",
        "SHUTDOWN (fast: close clients once no request of theirs runs)",
        "SHUTDOWN WAIT_FOR_SERVERS (graceful: close clients between transactions, like SIGINT)",
        "SHUTDOWN WAIT_FOR_CLIENTS (stop accepting; exit once every client has left, like SIGTERM)",
        "SET key = value",
    ] {
        text.push_str("\n\t");
        text.push_str(command);
    }
    ErrorFields {
        severity: Severity::Notice,
        code: SqlState::new("00000"),
        message: "Console usage".into(),
        detail: Some(text),
        hint: None,
    }
}

/// Clients that use pools (console logins excluded).
fn pool_clients(shared: &Shared) -> Vec<std::sync::Arc<ClientEntry>> {
    let mut all = shared.sessions.all();
    all.retain(|c| !super::is_console(&c.database));
    all
}

/// SHOW POOLS: one row per (database, user), summed over nodes, as PgBouncer has one pool per
/// (database, user).
///
/// Cancel columns: each forwarded cancel request has a connection of its own to PostgreSQL,
/// so `sv_active_cancel` (that connection) always equals `cl_active_cancel_req` (the request
/// it carries). `sv_being_canceled` is always 0: PgBouncer holds a server back from its idle
/// list while a cancel aimed at it is in flight; tidepool does not (a backend returns to the
/// pool when its client's transaction ends), so no server is ever in that state.
fn pools(shared: &Shared) -> Table {
    #[derive(Default)]
    struct Row {
        cl_active: usize,
        cl_waiting: usize,
        cl_active_cancel_req: usize,
        cl_waiting_cancel_req: usize,
        sv_active: usize,
        sv_idle: usize,
        sv_used: usize,
        sv_tested: usize,
        sv_login: usize,
        maxwait: Duration,
        mode: &'static str,
    }
    let mut rows: BTreeMap<(String, String), Row> = BTreeMap::new();
    let mut tested: std::collections::HashMap<PoolKey, usize> = Default::default();
    for server in shared.pools.servers.all() {
        if server.state() == ServerState::Tested {
            *tested.entry(server.pool.clone()).or_default() += 1;
        }
    }
    for pool in shared.pools.all() {
        let sv_tested = tested.get(&pool.key).copied().unwrap_or(0);
        let row = rows
            .entry((pool.key.database.clone(), pool.key.user.clone()))
            .or_default();
        // Read one after the other, not atomically: the sums are kept from going negative.
        let (open, idle, _) = pool.counts();
        let login = pool.stats.connecting.load(Ordering::Relaxed);
        let used = pool.idle_needing_check().min(idle);
        row.sv_idle += idle - used;
        row.sv_used += used;
        row.sv_login += login;
        row.sv_tested += sv_tested;
        row.sv_active += open
            .saturating_sub(idle)
            .saturating_sub(login)
            .saturating_sub(sv_tested);
        let cancels = &pool.stats.cancels;
        row.cl_waiting_cancel_req += cancels.waiting.load(Ordering::Relaxed);
        row.cl_active_cancel_req += cancels.active.load(Ordering::Relaxed);
        row.mode = pool.settings().mode.as_str();
    }
    for client in pool_clients(shared) {
        let row = rows
            .entry((client.database.clone(), client.user.clone()))
            .or_default();
        match client.state() {
            ClientState::Waiting => {
                row.cl_waiting += 1;
                row.maxwait = row.maxwait.max(shared.sessions.waited(&client));
            }
            _ => row.cl_active += 1,
        }
    }
    let snapshot = shared.snapshot();
    let mut t = Table::new(&[
        ("database", TEXT),
        ("user", TEXT),
        ("cl_active", INT4),
        ("cl_waiting", INT4),
        ("cl_active_cancel_req", INT4),
        ("cl_waiting_cancel_req", INT4),
        ("sv_active", INT4),
        ("sv_active_cancel", INT4),
        ("sv_being_canceled", INT4),
        ("sv_idle", INT4),
        ("sv_used", INT4),
        ("sv_tested", INT4),
        ("sv_login", INT4),
        ("maxwait", INT4),
        ("maxwait_us", INT4),
        ("pool_mode", TEXT),
        ("load_balance_hosts", TEXT),
    ]);
    for ((database, user), row) in rows {
        let mode = if row.mode.is_empty() {
            snapshot.config.pool_mode_for(&database).as_str()
        } else {
            row.mode
        };
        t.push(vec![
            s(&database),
            s(&user),
            s(row.cl_active),
            s(row.cl_waiting),
            s(row.cl_active_cancel_req),
            s(row.cl_waiting_cancel_req),
            s(row.sv_active),
            s(row.cl_active_cancel_req),
            s(0),
            s(row.sv_idle),
            s(row.sv_used),
            s(row.sv_tested),
            s(row.sv_login),
            s(row.maxwait.as_secs()),
            s(row.maxwait.subsec_micros()),
            s(mode),
            // PgBouncer's multi-host `host=` strings; tidepool balances over [[nodes]].
            None,
        ]);
    }
    t
}

/// SHOW DATABASES: each configured database, and each one `*` serves now, with the address of
/// its cluster's first node.
fn databases(shared: &Shared) -> Table {
    let snapshot = shared.snapshot();
    let config = &snapshot.config;
    let mut t = Table::new(&[
        ("name", TEXT),
        ("host", TEXT),
        ("port", INT4),
        ("database", TEXT),
        ("force_user", TEXT),
        ("pool_size", INT4),
        ("min_pool_size", INT4),
        ("reserve_pool_size", INT4),
        ("server_lifetime", INT4),
        ("pool_mode", TEXT),
        ("load_balance_hosts", TEXT),
        ("max_connections", INT4),
        ("current_connections", INT4),
        ("max_client_connections", INT4),
        ("current_client_connections", INT4),
        ("paused", INT4),
        ("disabled", INT4),
    ]);
    let legacy = config.proxy.show_legacy_columns;
    if legacy {
        // PgBouncer before 1.25 called reserve_pool_size so; old exporters read it.
        t.columns.push(("reserve_pool".into(), INT4));
    }
    let pools = shared.pools.all();
    let clients = pool_clients(shared);
    let configured = (config.databases.keys()).filter(|name| *name != crate::config::WILDCARD_DATABASE);
    let auto = shared.pools.auto.names();
    for name in configured.chain(auto.iter()) {
        let Some(db) = config.database(name) else {
            continue;
        };
        let node = snapshot.nodes_for(name).and_then(|nodes| nodes.first());
        let control = shared.pools.controls.get(name);
        let current: usize = pools
            .iter()
            .filter(|p| &p.key.database == name)
            .map(|p| p.counts().0)
            .sum();
        let current_clients = clients.iter().filter(|c| &c.database == name).count();
        let mut row = vec![
            s(name),
            node.map(|n| n.host.clone()),
            node.map(|n| n.port.to_string()),
            config.server_dbname(name),
            db.user.clone(),
            s(db.pool_size.unwrap_or(config.pool.default_pool_size)),
            s(config.pool.min_pool_size),
            s(config.pool.reserve_pool_size),
            s(config.pool.server_lifetime.0.as_secs()),
            s(config.pool_mode_for(name).as_str()),
            None,
            s(db.max_db_connections.unwrap_or(config.pool.max_db_connections)),
            s(current),
            s(0),
            s(current_clients),
            s(shared.pools.controls.paused(&control) as u8),
            s(control.is_disabled() as u8),
        ];
        if legacy {
            row.push(s(config.pool.reserve_pool_size));
        }
        t.push(row);
    }
    t
}

/// SHOW USERS; `max_user_connections` is the user's cap (0 = none), `max_user_client_connections`
/// is 0 (no such setting). `pool_size` and `reserve_pool_size` are text, as in PgBouncer, empty
/// when the user does not set them.
fn users(shared: &Shared) -> Table {
    let snapshot = shared.snapshot();
    let mut t = Table::new(&[
        ("name", TEXT),
        ("pool_size", TEXT),
        ("reserve_pool_size", TEXT),
        ("pool_mode", TEXT),
        ("max_user_connections", INT4),
        ("current_connections", INT4),
        ("max_user_client_connections", INT4),
        ("current_client_connections", INT4),
    ]);
    let clients = pool_clients(shared);
    let pools = shared.pools.all();
    for user in &snapshot.config.users {
        let current: usize = pools
            .iter()
            .filter(|p| p.key.user == user.name)
            .map(|p| p.counts().0)
            .sum();
        t.push(vec![
            s(&user.name),
            s(user.pool_size.map(|n| n.to_string()).unwrap_or_default()),
            s(""),
            None,
            s(user
                .max_user_connections
                .unwrap_or(snapshot.config.pool.max_user_connections)),
            s(current),
            s(0),
            s(clients.iter().filter(|c| c.user == user.name).count()),
        ]);
    }
    t
}

/// SHOW LISTS. Legitimately 0 in tidepool: `free_clients` / `free_servers` (no cache of freed
/// items, see SHOW MEM) and the `dns_*` lists (names are resolved by the system resolver at
/// each connect, with no cache of tidepool's own).
fn lists(shared: &Shared) -> Table {
    let snapshot = shared.snapshot();
    let clients = shared.sessions.all().len();
    // Accepted but not logged in (startup, authentication) or a cancel request.
    let login_clients = shared.clients.connections().saturating_sub(clients);
    let servers = shared.pools.servers.all().len();
    let mut t = Table::new(&[("list", TEXT), ("items", INT4)]);
    for (list, items) in [
        ("databases", snapshot.config.databases.len()),
        ("users", snapshot.config.users.len()),
        ("peers", snapshot.config.peers.instances.len()),
        ("pools", shared.pools.all().len()),
        ("peer_pools", snapshot.config.peers.instances.len()),
        ("free_clients", 0),
        ("used_clients", clients),
        ("login_clients", login_clients),
        ("free_servers", 0),
        ("used_servers", servers),
        ("dns_names", 0),
        ("dns_zones", 0),
        ("dns_queries", 0),
        ("dns_pending", 0),
    ] {
        t.push(vec![s(list), s(items)]);
    }
    t
}

/// SHOW MEM, PgBouncer's columns in bytes: `size` is what one item takes (the struct, plus the
/// buffers it always has), `memtotal` = size × (used + free). tidepool keeps no cache of freed
/// items (a closed connection's memory goes back to the allocator), so `free` is 0. What grows
/// with traffic (client buffers, statement texts, result caches) is not part of `size`.
fn mem(shared: &Shared) -> Table {
    use std::mem::size_of;
    let mut t = Table::new(&[
        ("name", TEXT),
        ("size", INT4),
        ("used", INT4),
        ("free", INT4),
        ("memtotal", INT4),
    ]);
    let server_size = size_of::<crate::backend::BackendConn>()
        + size_of::<crate::pool::ServerEntry>()
        + crate::backend::READ_BUFFER;
    for (name, size, used) in [
        (
            "clients",
            crate::client::client_size(),
            shared.sessions.all().len(),
        ),
        ("servers", server_size, shared.pools.servers.all().len()),
        ("pools", size_of::<crate::pool::Pool>(), shared.pools.all().len()),
        (
            "prepared_statements",
            size_of::<crate::client::features::statements::Statement>(),
            shared.statements.len(),
        ),
    ] {
        let free = 0;
        t.push(vec![s(name), s(size), s(used), s(free), s(size * (used + free))]);
    }
    t
}

fn state(shared: &Shared) -> Table {
    let controls = &shared.pools.controls;
    let suspended = controls.suspended.load(Ordering::Acquire);
    let paused = controls.global.is_paused() && !suspended;
    let yes = |b: bool| s(if b { "yes" } else { "no" });
    let mut t = Table::new(&[("key", TEXT), ("value", TEXT)]);
    t.push(vec![s("active"), yes(!paused && !suspended)]);
    t.push(vec![s("paused"), yes(paused)]);
    t.push(vec![s("suspended"), yes(suspended)]);
    t.push(vec![s("shutting_down"), yes(shared.shutdown.is_triggered())]);
    t
}

#[cfg(test)]
mod tests;
