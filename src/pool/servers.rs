//! The list of open backend connections, for SHOW SERVERS and the metrics: each connection
//! registers once when it is opened and leaves when it is dropped; its state is an atomic that
//! checkout and release update, so the data path takes no lock.

use super::control::DbControl;
use super::PoolKey;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// What a backend connection is doing (PgBouncer's server states, the subset tidepool has).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ServerState {
    /// In the pool, ready for a client.
    Idle = 0,
    /// Checked out by a client.
    Active = 1,
    /// Running `server_check_query` before serving, or being cleaned after its client left
    /// (rollback, `server_reset_query`).
    Tested = 2,
}

impl ServerState {
    pub fn as_str(self) -> &'static str {
        match self {
            ServerState::Idle => "idle",
            ServerState::Active => "active",
            ServerState::Tested => "tested",
        }
    }
}

/// One open backend connection as the console sees it.
#[derive(Debug)]
pub struct ServerEntry {
    pub id: u64,
    pub pool: PoolKey,
    /// Backend login user.
    pub user: String,
    pub pid: i32,
    pub local_addr: Option<SocketAddr>,
    pub connected_at: SystemTime,
    state: AtomicU8,
    /// Id of the client using it; 0 for none.
    client: AtomicU64,
    /// The database's reconnect epoch when this connection was opened.
    epoch: u64,
    control: Arc<DbControl>,
}

impl ServerEntry {
    pub fn state(&self) -> ServerState {
        match self.state.load(Ordering::Relaxed) {
            1 => ServerState::Active,
            2 => ServerState::Tested,
            _ => ServerState::Idle,
        }
    }

    pub fn client(&self) -> Option<u64> {
        Some(self.client.load(Ordering::Relaxed)).filter(|&id| id != 0)
    }

    /// RECONNECT or KILL happened since this connection was opened.
    pub fn close_needed(&self) -> bool {
        self.epoch < self.control.epoch()
    }
}

/// All open backend connections of the process.
#[derive(Debug, Default)]
pub struct ServerRegistry {
    map: Mutex<HashMap<u64, Arc<ServerEntry>>>,
}

/// A connection's place in the registry; dropping it (with the connection) deregisters.
#[derive(Debug)]
pub struct ServerTicket {
    entry: Arc<ServerEntry>,
    registry: Arc<ServerRegistry>,
    /// Its places under `max_db_connections` / `max_user_connections`, freed with it.
    _permits: Vec<super::CapPermit>,
}

/// What a new entry is made of.
pub(crate) struct NewServer<'a> {
    pub permits: Vec<super::CapPermit>,
    pub id: u64,
    pub pool: &'a PoolKey,
    pub user: &'a str,
    pub pid: i32,
    pub local_addr: Option<SocketAddr>,
    pub control: &'a Arc<DbControl>,
}

impl ServerRegistry {
    pub(crate) fn register(self: &Arc<Self>, new: NewServer<'_>) -> ServerTicket {
        let entry = Arc::new(ServerEntry {
            id: new.id,
            pool: new.pool.clone(),
            user: new.user.to_string(),
            pid: new.pid,
            local_addr: new.local_addr,
            connected_at: SystemTime::now(),
            state: AtomicU8::new(ServerState::Idle as u8),
            client: AtomicU64::new(0),
            epoch: new.control.epoch(),
            control: new.control.clone(),
        });
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.insert(entry.id, entry.clone());
        ServerTicket {
            entry,
            registry: self.clone(),
            _permits: new.permits,
        }
    }

    /// Every open connection, in id order.
    pub fn all(&self) -> Vec<Arc<ServerEntry>> {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let mut all: Vec<_> = map.values().cloned().collect();
        all.sort_by_key(|e| e.id);
        all
    }
}

impl ServerTicket {
    pub fn entry(&self) -> &ServerEntry {
        &self.entry
    }

    pub fn set_state(&self, state: ServerState) {
        self.entry.state.store(state as u8, Ordering::Relaxed);
    }

    /// Records which client uses the connection (0: none).
    pub fn link(&self, client: u64) {
        self.entry.client.store(client, Ordering::Relaxed);
    }
}

impl Drop for ServerTicket {
    fn drop(&mut self) {
        let mut map = self.registry.map.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(&self.entry.id);
    }
}
