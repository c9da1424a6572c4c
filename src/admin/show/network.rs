//! SHOW PEERS (the `[peers]` instances cancel requests are forwarded to), PEER_POOLS (those
//! requests in flight) and DNS_HOSTS / DNS_ZONES, with PgBouncer 1.25's columns.

use super::{s, Table, INT4, INT8, TEXT};
use crate::app::Shared;
use std::sync::atomic::Ordering;

/// SHOW PEERS: one row per `[peers.instances]` entry. `pool_size` is 0: each forwarded cancel
/// opens a connection of its own, with no pool to size.
pub fn peers(shared: &Shared) -> Table {
    let snapshot = shared.snapshot();
    let mut t = Table::new(&[
        ("peer_id", INT4),
        ("host", TEXT),
        ("port", INT4),
        ("pool_size", INT4),
    ]);
    for (id, address) in &snapshot.config.peers.instances {
        // Validated as "host:port" when the configuration was loaded.
        let (host, port) = address.rsplit_once(':').unwrap_or((address, ""));
        t.push(vec![
            s(id),
            s(host.trim_matches(|c| c == '[' || c == ']')),
            s(port),
            s(0),
        ]);
    }
    t
}

/// SHOW PEER_POOLS: per peer, the cancel requests being forwarded to it. Each travels on a
/// connection of its own: `sv_login` / `cl_waiting_cancel_req` count those being opened,
/// `sv_active_cancel` / `cl_active_cancel_req` those sent and not yet closed by the peer.
pub fn peer_pools(shared: &Shared) -> Table {
    let snapshot = shared.snapshot();
    let mut t = Table::new(&[
        ("peer_id", INT4),
        ("cl_active_cancel_req", INT4),
        ("cl_waiting_cancel_req", INT4),
        ("sv_active_cancel", INT4),
        ("sv_login", INT4),
    ]);
    for id in snapshot.config.peers.instances.keys() {
        // Validated as 1 to 255 when the configuration was loaded.
        let Ok(n) = id.parse::<u8>() else { continue };
        let counts = shared.stats.peer_cancels.of(n);
        let active = counts.active.load(Ordering::Relaxed);
        let waiting = counts.waiting.load(Ordering::Relaxed);
        t.push(vec![s(id), s(active), s(waiting), s(active), s(waiting)]);
    }
    t
}

/// SHOW DNS_HOSTS: no rows. tidepool keeps no DNS cache of its own (the system resolver is
/// asked at each connect), so there is nothing cached to list.
pub fn dns_hosts() -> Table {
    Table::new(&[("hostname", TEXT), ("ttl", INT8), ("addrs", TEXT)])
}

/// SHOW DNS_ZONES: no rows, for the same reason as DNS_HOSTS.
pub fn dns_zones() -> Table {
    Table::new(&[("zonename", TEXT), ("serial", INT8), ("count", INT4)])
}
